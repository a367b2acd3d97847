/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's control socket: the client that forwards a command, and the server that runs it. */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "tools/takeover.h"
#include "util/log.h"
#include "util/sock.h"
#include "util/thread.h"

#define PROTO_MAGIC "STRATA01"
#define MAX_ARGS    4096
#define MAX_ARG_LEN 65536

/* ---------------------------------------------------------------- framing */

static int send_u32(int fd, uint32_t v)
{
	return util_sock_write_all(fd, &v, sizeof(v));
}

static int send_frame(int fd, char type, const void *data, uint32_t len)
{
	char hdr[5];

	hdr[0] = type;
	memcpy(hdr + 1, &len, 4);
	if (util_sock_write_all(fd, hdr, sizeof(hdr)) < 0)
		return -1;
	return len ? util_sock_write_all(fd, data, len) : 0;
}

/* ---------------------------------------------------------------- client side */

/* The global options of c as arguments (at most 14 of them, then "--") into fwd; quota (32
 * bytes) holds the --quota value. Returns how many. */
static int global_args(const struct cli *c, const char **fwd, char *quota)
{
	int n = 0;

	fwd[n++] = "--store";
	fwd[n++] = c->store_dir;
	fwd[n++] = "--hosts-dir";
	fwd[n++] = c->hosts_dir;
	if (c->config) {
		fwd[n++] = "--config";
		fwd[n++] = c->config;
	}
	if (c->strict_cache)
		fwd[n++] = "--strict-cache";
	if (c->quota) {
		snprintf(quota, 32, "%llu", (unsigned long long)c->quota);
		fwd[n++] = "--quota";
		fwd[n++] = quota;
	}
	if (c->json)
		fwd[n++] = "--json";
	for (int i = 0; i < c->verbose && i < 3; i++)
		fwd[n++] = "-v";
	fwd[n++] = "--";
	return n;
}

int ctl_forward(struct cli *c, int argc, char **argv)
{
	const char *fwd[16 + MAX_ARGS];
	char quota[32];
	int n = 0, fd, code = 1;
	uint32_t flags = (c->tty ? 1u : 0u);

	fd = util_sock_connect(c->store_dir, CLI_SOCK_NAME);
	if (fd < 0)
		return -1;
	if (argc > MAX_ARGS) {
		close(fd);
		c->cmd = argv[0];
		return cli_usage(c, "too many arguments");
	}
	n = global_args(c, fwd, quota);
	for (int i = 0; i < argc; i++)
		fwd[n++] = argv[i];

	if (util_sock_write_all(fd, PROTO_MAGIC, 8) < 0 || send_u32(fd, flags) < 0 ||
	    send_u32(fd, (uint32_t)n) < 0)
		goto lost;
	for (int i = 0; i < n; i++) {
		uint32_t len = (uint32_t)strlen(fwd[i]);

		if (send_u32(fd, len) < 0 || util_sock_write_all(fd, fwd[i], len) < 0)
			goto lost;
	}
	for (;;) {
		char hdr[5];
		uint32_t len;
		char buf[65536];

		if (util_sock_read_all(fd, hdr, sizeof(hdr)) < 0)
			goto lost;
		memcpy(&len, hdr + 1, 4);
		if (hdr[0] == 'x') {
			int32_t v;

			if (len != 4 || util_sock_read_all(fd, &v, 4) < 0)
				goto lost;
			code = v;
			break;
		}
		while (len > 0) {
			uint32_t k = len < sizeof(buf) ? len : (uint32_t)sizeof(buf);

			if (util_sock_read_all(fd, buf, k) < 0)
				goto lost;
			fwrite(buf, 1, k, hdr[0] == 'e' ? stderr : stdout);
			len -= k;
		}
		fflush(hdr[0] == 'e' ? stderr : stdout);
	}
	close(fd);
	return code;
lost:
	close(fd);
	c->cmd = argv[0];
	return cli_fail(c, "lost the connection to the daemon of store %s", c->store_dir);
}

/* ---------------------------------------------------------------- server side */

struct ctl {
	struct store *store;
	struct fetch_client *fetch;
	struct quota *evictor;
	cli_cmd_fn dispatch; /* runs a command by name (main.c's table) */
	int lfd;
	int stop_pipe[2];
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t idle;
	int active;		   /* protected by mu */
	atomic_int cancel;	   /* set at shutdown; long commands poll it through struct cli */
	struct fs *fs;		   /* the mount this daemon serves */
	struct takeover *takeover; /* the old daemon's side of a takeover of fs */
};

struct conn {
	struct ctl *srv;
	int fd;
};

struct frame_cookie {
	int fd;
	char type;
};

static ssize_t cookie_write(void *cookie, const char *buf, size_t len)
{
	struct frame_cookie *fc = cookie;

	if (send_frame(fc->fd, fc->type, buf, (uint32_t)len) < 0)
		return -1;
	return (ssize_t)len;
}

/* Runs the command in argv (global options, "--", the command; rest has argc + 1 slots) with c's
 * streams, in this daemon. Returns the exit code. */
static int run_command(struct ctl *srv, struct cli *c, int argc, char **argv, char **rest)
{
	int nrest = 0, code;

	c->store = srv->store;
	c->fetch = srv->fetch;
	c->fs = srv->fs;
	c->evictor = srv->evictor;
	c->in_daemon = 1;
	c->cancel = &srv->cancel;
	c->dispatch = srv->dispatch;
	code = cli_parse_globals(c, argc, argv, rest, &nrest);
	if (code == 0)
		code = cli_apply_config(c);
	if (code == 0) {
		if (nrest == 0)
			code = cli_usage(c, "no command");
		else /* refuses the commands that must run in the CLI process (mount, umount) */
			code = srv->dispatch(c, nrest, rest);
	}
	return code;
}

static int serve_request(struct ctl *srv, int fd)
{
	struct frame_cookie oc = { fd, 'o' }, ec = { fd, 'e' };
	cookie_io_functions_t io = { .write = cookie_write };
	char magic[8];
	uint32_t flags, argc;
	char **argv = NULL, **rest = NULL;
	struct cli c;
	int code = 1;
	int32_t v;

	if (util_sock_read_all(fd, magic, 8) < 0)
		return -1;
	if (memcmp(magic, TAKEOVER_MAGIC, 8) == 0)
		return takeover_serve(srv->takeover, fd);
	if (memcmp(magic, PROTO_MAGIC, 8) != 0 || util_sock_read_all(fd, &flags, 4) < 0 ||
	    util_sock_read_all(fd, &argc, 4) < 0 || argc > MAX_ARGS + 16)
		return -1;
	argv = calloc(argc + 1, sizeof(*argv));
	rest = calloc(argc + 1, sizeof(*rest));
	if (!argv || !rest)
		goto out;
	for (uint32_t i = 0; i < argc; i++) {
		uint32_t len;

		if (util_sock_read_all(fd, &len, 4) < 0 || len > MAX_ARG_LEN)
			goto out;
		argv[i] = malloc(len + 1);
		if (!argv[i] || util_sock_read_all(fd, argv[i], len) < 0)
			goto out;
		argv[i][len] = '\0';
	}
	memset(&c, 0, sizeof(c));
	c.out = fopencookie(&oc, "w", io);
	c.err = fopencookie(&ec, "w", io);
	if (!c.out || !c.err)
		goto streams;
	c.tty = flags & 1;
	code = run_command(srv, &c, (int)argc, argv, rest);
streams:
	cli_config_free(&c);
	if (c.out)
		fclose(c.out);
	if (c.err)
		fclose(c.err);
	v = code;
	send_frame(fd, 'x', &v, 4);
out:
	for (uint32_t i = 0; argv && i < argc; i++)
		free(argv[i]);
	free(argv);
	free(rest);
	return 0;
}

static void *conn_main(void *arg)
{
	struct conn *cn = arg;
	struct ctl *srv = cn->srv;

	serve_request(srv, cn->fd);
	close(cn->fd);
	free(cn);
	pthread_mutex_lock(&srv->mu);
	if (--srv->active == 0)
		pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->mu);
	return NULL;
}

static void *server_main(void *arg)
{
	struct ctl *srv = arg;

	for (;;) {
		struct conn *cn;
		pthread_t t;
		pthread_attr_t attr;
		int fd = util_sock_accept(srv->lfd, srv->stop_pipe[0], "control socket");

		if (fd < 0)
			break;
		cn = malloc(sizeof(*cn));
		if (!cn) {
			close(fd);
			continue;
		}
		cn->srv = srv;
		cn->fd = fd;
		pthread_mutex_lock(&srv->mu);
		srv->active++;
		pthread_mutex_unlock(&srv->mu);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, conn_main, cn) != 0) {
			close(fd);
			free(cn);
			pthread_mutex_lock(&srv->mu);
			srv->active--;
			pthread_mutex_unlock(&srv->mu);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

int ctl_start(struct store *store, struct fetch_client *fc, struct fs *f, struct quota *evictor,
	      int drain_ms, cli_cmd_fn dispatch, struct ctl **out)
{
	struct ctl *srv = calloc(1, sizeof(*srv));
	int rc;

	*out = NULL;
	if (!srv)
		return -ENOMEM;
	srv->store = store;
	srv->fetch = fc;
	srv->fs = f;
	srv->evictor = evictor;
	srv->dispatch = dispatch;
	pthread_mutex_init(&srv->mu, NULL);
	pthread_cond_init(&srv->idle, NULL);
	rc = takeover_new(f, store, drain_ms, &srv->takeover);
	if (rc < 0)
		goto fail;
	srv->lfd = util_sock_listen(store_dir(store), CLI_SOCK_NAME, "store", "control socket");
	if (srv->lfd < 0) {
		rc = srv->lfd;
		goto fail;
	}
	if (pipe2(srv->stop_pipe, O_CLOEXEC) < 0) {
		close(srv->lfd);
		rc = strata_err(errno, "pipe: %s", strerror(errno));
		goto fail;
	}
	/* Worker threads leave signals to the FUSE loop's thread. */
	rc = util_thread_start(&srv->thread, server_main, srv);
	if (rc != 0) {
		close(srv->lfd);
		close(srv->stop_pipe[0]);
		close(srv->stop_pipe[1]);
		rc = strata_err(rc, "cannot start the control thread");
		goto fail;
	}
	*out = srv;
	return 0;
fail:
	takeover_free(srv->takeover);
	pthread_mutex_destroy(&srv->mu);
	pthread_cond_destroy(&srv->idle);
	free(srv);
	return rc;
}

int ctl_stop(struct ctl *srv)
{
	struct timespec until;
	int handed_over;

	if (!srv)
		return 0;
	atomic_store(&srv->cancel, 1);
	if (write(srv->stop_pipe[1], "x", 1) < 0)
		strata_log(LOG_WARNING, "control socket: stop: %s", strerror(errno));
	pthread_join(srv->thread, NULL);
	close(srv->lfd);
	util_sock_unlink(store_dir(srv->store), CLI_SOCK_NAME);
	/* Let running commands see cancel and finish before the store closes under them. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 60;
	pthread_mutex_lock(&srv->mu);
	while (srv->active > 0) {
		if (pthread_cond_timedwait(&srv->idle, &srv->mu, &until) == ETIMEDOUT) {
			strata_log(LOG_ERR, "control socket: %d command(s) still running at exit",
				   srv->active);
			pthread_mutex_unlock(&srv->mu);
			_exit(1); /* closing the store under them would be worse */
		}
	}
	pthread_mutex_unlock(&srv->mu);
	close(srv->stop_pipe[0]);
	close(srv->stop_pipe[1]);
	handed_over = takeover_handed_over(srv->takeover);
	takeover_free(srv->takeover);
	pthread_mutex_destroy(&srv->mu);
	pthread_cond_destroy(&srv->idle);
	free(srv);
	return handed_over;
}

void ctl_cancel(struct ctl *srv)
{
	if (srv)
		atomic_store(&srv->cancel, 1);
}

int ctl_pull(struct ctl *srv, const struct cli *dc, const char *ref)
{
	return ctl_run_ref(srv, dc, "pull", NULL, ref);
}

int ctl_run_ref(struct ctl *srv, const struct cli *dc, const char *cmd, const char *opt,
		const char *ref)
{
	const char *argv[20];
	char *rest[21];
	char quota[32];
	char *msg = NULL;
	size_t len = 0;
	struct cli c;
	int n, code = 1;

	n = global_args(dc, argv, quota);
	argv[n++] = cmd;
	if (opt)
		argv[n++] = opt;
	argv[n++] = ref;
	argv[n] = NULL;
	memset(&c, 0, sizeof(c));
	c.out = fopen("/dev/null", "w");
	c.err = open_memstream(&msg, &len);
	if (c.out && c.err)
		code = run_command(srv, &c, n, (char **)argv, rest);
	cli_config_free(&c);
	if (c.out)
		fclose(c.out);
	if (c.err)
		fclose(c.err);
	if (code != 0) {
		size_t end = msg ? strcspn(msg, "\n") : 0;

		strata_err(ENOENT, "%.*s", (int)end, end ? msg : "failed");
	}
	free(msg);
	return code == 0 ? 0 : -ENOENT;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon: mount, takeover and umount, and the control socket through which other commands
 * reach it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fetch/registry.h"
#include "fs/fs.h"
#include "store/store.h"
#include "tools/metrics.h"
#include "tools/quota.h"
#include "util/log.h"
#include "util/thread.h"

#define SOCK_NAME "strata.sock"
#define PROTO_MAGIC "STRATA01"
#define HANDOVER_MAGIC "STRATAHO"
#define HANDOVER_STATE_MAX (4u << 20) /* the open-file table: 12 bytes per open file */
#define HANDOVER_ACK_MS 30000
#define MAX_ARGS 4096
#define MAX_ARG_LEN 65536
#define UMOUNT_WAIT_MS 30000

/* ---------------------------------------------------------------- socket paths */

/* Fills addr for <dir>/strata.sock. Paths too long for sun_path go through /proc/self/fd. */
static int sock_addr(const char *dir, struct sockaddr_un *addr, int *dirfd)
{
	*dirfd = -1;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(dir) + sizeof(SOCK_NAME) + 1 < sizeof(addr->sun_path)) {
		snprintf(addr->sun_path, sizeof(addr->sun_path), "%s/%s", dir, SOCK_NAME);
		return 0;
	}
	*dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*dirfd < 0)
		return -errno;
	snprintf(addr->sun_path, sizeof(addr->sun_path), "/proc/self/fd/%d/%s", *dirfd, SOCK_NAME);
	return 0;
}

int cli_connect(const char *store_dir)
{
	struct sockaddr_un addr;
	int dirfd, fd, rc, e;

	rc = sock_addr(store_dir, &addr, &dirfd);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		e = errno;
		close(fd);
		fd = -1;
		errno = e;
	}
	e = errno;
	if (dirfd >= 0)
		close(dirfd);
	errno = e;
	return fd;
}

int cli_listen(const char *store_dir)
{
	struct sockaddr_un addr;
	int dirfd, fd, rc;

	rc = sock_addr(store_dir, &addr, &dirfd);
	if (rc < 0)
		return strata_err(-rc, "cannot open store %s: %s", store_dir, strerror(-rc));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = strata_err(errno, "socket: %s", strerror(errno));
		goto out;
	}
	unlink(addr.sun_path); /* we hold the store lock: any socket left is stale */
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(addr.sun_path, 0600) < 0 ||
	    listen(fd, 64) < 0) {
		rc = strata_err(errno, "control socket %s/%s: %s", store_dir, SOCK_NAME, strerror(errno));
		close(fd);
		goto out;
	}
	rc = fd;
out:
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}

static void sock_unlink(const char *store_dir)
{
	struct sockaddr_un addr;
	int dirfd;

	if (sock_addr(store_dir, &addr, &dirfd) == 0)
		unlink(addr.sun_path);
	if (dirfd >= 0)
		close(dirfd);
}

/* ---------------------------------------------------------------- framing */

int cli_accept(int lfd, int stop_fd, const char *what)
{
	struct pollfd pfd[2] = { { lfd, POLLIN, 0 }, { stop_fd, POLLIN, 0 } };

	for (;;) {
		int fd;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			strata_log(LOG_ERR, "%s: poll: %s", what, strerror(errno));
			return -1;
		}
		if (pfd[1].revents)
			return -1;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
	}
}

int cli_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_u32(int fd, uint32_t v)
{
	return cli_write_all(fd, &v, sizeof(v));
}

static int send_frame(int fd, char type, const void *data, uint32_t len)
{
	char hdr[5];

	hdr[0] = type;
	memcpy(hdr + 1, &len, 4);
	if (cli_write_all(fd, hdr, sizeof(hdr)) < 0)
		return -1;
	return len ? cli_write_all(fd, data, len) : 0;
}

/* ---------------------------------------------------------------- client side */

int cli_forward(struct cli *c, int argc, char **argv)
{
	const char *fwd[16 + MAX_ARGS];
	char quota[32];
	int n = 0, fd, code = 1;
	uint32_t flags = (c->tty ? 1u : 0u);

	fd = cli_connect(c->store_dir);
	if (fd < 0)
		return -1;
	if (argc > MAX_ARGS) {
		close(fd);
		c->cmd = argv[0];
		return cli_usage(c, "too many arguments");
	}
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
		snprintf(quota, sizeof(quota), "%llu", (unsigned long long)c->quota);
		fwd[n++] = "--quota";
		fwd[n++] = quota;
	}
	if (c->json)
		fwd[n++] = "--json";
	for (int i = 0; i < c->verbose && i < 3; i++)
		fwd[n++] = "-v";
	fwd[n++] = "--";
	for (int i = 0; i < argc; i++)
		fwd[n++] = argv[i];

	if (cli_write_all(fd, PROTO_MAGIC, 8) < 0 || send_u32(fd, flags) < 0 || send_u32(fd, (uint32_t)n) < 0)
		goto lost;
	for (int i = 0; i < n; i++) {
		uint32_t len = (uint32_t)strlen(fwd[i]);

		if (send_u32(fd, len) < 0 || cli_write_all(fd, fwd[i], len) < 0)
			goto lost;
	}
	for (;;) {
		char hdr[5];
		uint32_t len;
		char buf[65536];

		if (read_all(fd, hdr, sizeof(hdr)) < 0)
			goto lost;
		memcpy(&len, hdr + 1, 4);
		if (hdr[0] == 'x') {
			int32_t v;

			if (len != 4 || read_all(fd, &v, 4) < 0)
				goto lost;
			code = v;
			break;
		}
		while (len > 0) {
			uint32_t k = len < sizeof(buf) ? len : (uint32_t)sizeof(buf);

			if (read_all(fd, buf, k) < 0)
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

struct server {
	struct store *store;
	struct fetch_client *fetch;
	struct quota *evictor;
	int lfd;
	int stop_pipe[2];
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t idle;
	int active;          /* protected by mu */
	atomic_int cancel;   /* set at shutdown; long commands poll it */
	struct fs *fs;       /* the mount this daemon serves */
	int drain_ms;        /* a handover waits this long for requests being processed */
	pthread_mutex_t ho_mu;   /* one handover at a time */
	volatile int handed_over; /* the mount went to a new daemon: exit without unmounting */
};

struct conn {
	struct server *srv;
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

static int handover_serve(struct server *srv, int fd);

static int serve_request(struct server *srv, int fd)
{
	struct frame_cookie oc = { fd, 'o' }, ec = { fd, 'e' };
	cookie_io_functions_t io = { .write = cookie_write };
	char magic[8];
	uint32_t flags, argc;
	char **argv = NULL, **rest = NULL;
	struct cli c;
	int nrest = 0, code = 1;
	int32_t v;

	if (read_all(fd, magic, 8) < 0)
		return -1;
	if (memcmp(magic, HANDOVER_MAGIC, 8) == 0)
		return handover_serve(srv, fd);
	if (memcmp(magic, PROTO_MAGIC, 8) != 0 || read_all(fd, &flags, 4) < 0 ||
	    read_all(fd, &argc, 4) < 0 || argc > MAX_ARGS + 16)
		return -1;
	argv = calloc(argc + 1, sizeof(*argv));
	rest = calloc(argc + 1, sizeof(*rest));
	if (!argv || !rest)
		goto out;
	for (uint32_t i = 0; i < argc; i++) {
		uint32_t len;

		if (read_all(fd, &len, 4) < 0 || len > MAX_ARG_LEN)
			goto out;
		argv[i] = malloc(len + 1);
		if (!argv[i] || read_all(fd, argv[i], len) < 0)
			goto out;
		argv[i][len] = '\0';
	}
	memset(&c, 0, sizeof(c));
	c.out = fopencookie(&oc, "w", io);
	c.err = fopencookie(&ec, "w", io);
	if (!c.out || !c.err)
		goto streams;
	c.tty = flags & 1;
	c.store = srv->store;
	c.fetch = srv->fetch;
	c.fs = srv->fs;
	c.evictor = srv->evictor;
	c.in_daemon = 1;
	c.cancel = &srv->cancel;
	code = cli_parse_globals(&c, (int)argc, argv, rest, &nrest);
	if (code == 0)
		code = cli_apply_config(&c);
	if (code == 0) {
		if (nrest == 0) {
			code = cli_usage(&c, "no command");
		} else if (cli_is_local(rest[0])) {
			c.cmd = rest[0];
			code = cli_fail(&c, "cannot run '%s' through the daemon", rest[0]);
		} else {
			code = cli_run(&c, nrest, rest);
		}
	}
streams:
	free(c.config_hosts_dir);
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
	struct server *srv = cn->srv;

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
	struct server *srv = arg;

	for (;;) {
		struct conn *cn;
		pthread_t t;
		pthread_attr_t attr;
		int fd = cli_accept(srv->lfd, srv->stop_pipe[0], "control socket");

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

static int server_start(struct server *srv, struct store *store, struct fetch_client *fc,
			struct fs *f, int drain_ms, struct quota *evictor)
{
	int rc;

	memset(srv, 0, sizeof(*srv));
	srv->store = store;
	srv->fetch = fc;
	srv->fs = f;
	srv->drain_ms = drain_ms;
	srv->evictor = evictor;
	pthread_mutex_init(&srv->ho_mu, NULL);
	pthread_mutex_init(&srv->mu, NULL);
	pthread_cond_init(&srv->idle, NULL);
	srv->lfd = cli_listen(store_dir(store));
	if (srv->lfd < 0)
		return srv->lfd;
	if (pipe2(srv->stop_pipe, O_CLOEXEC) < 0) {
		close(srv->lfd);
		return strata_err(errno, "pipe: %s", strerror(errno));
	}
	/* Worker threads leave signals to the FUSE loop's thread. */
	rc = util_thread_start(&srv->thread, server_main, srv);
	if (rc != 0) {
		close(srv->lfd);
		close(srv->stop_pipe[0]);
		close(srv->stop_pipe[1]);
		return strata_err(rc, "cannot start the control thread");
	}
	return 0;
}

static void server_stop(struct server *srv)
{
	struct timespec until;

	atomic_store(&srv->cancel, 1);
	if (write(srv->stop_pipe[1], "x", 1) < 0)
		strata_log(LOG_WARNING, "control socket: stop: %s", strerror(errno));
	pthread_join(srv->thread, NULL);
	close(srv->lfd);
	sock_unlink(store_dir(srv->store));
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
}

/* ---------------------------------------------------------------- handover */

/*
 * strata mount --takeover: the new daemon connects and sends HANDOVER_MAGIC, u32 length, the
 * mountpoint. The old daemon pauses its FUSE workers (fs_pause), then answers with one frame:
 * 'h' + u32 length + the fs state, with the /dev/fuse descriptor attached (SCM_RIGHTS), or
 * 'e' + u32 length + an error message. The new daemon checks the state and confirms with one byte
 * 'k'; only then is the mount the new daemon's: the old one exits without unmounting. Until the
 * confirmation, any failure leaves the old daemon serving.
 */

static int send_ho_frame(int sock, char type, const void *data, uint32_t len, int fuse_fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	char hdr[5];
	struct iovec iov = { hdr, sizeof(hdr) };
	struct msghdr mh;
	ssize_t n;

	hdr[0] = type;
	memcpy(hdr + 1, &len, 4);
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fuse_fd >= 0) {
		struct cmsghdr *ch;

		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		ch = CMSG_FIRSTHDR(&mh);
		ch->cmsg_level = SOL_SOCKET;
		ch->cmsg_type = SCM_RIGHTS;
		ch->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(ch), &fuse_fd, sizeof(int));
	}
	do {
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(hdr))
		return -1;
	return len ? cli_write_all(sock, data, len) : 0;
}

static void __attribute__((format(printf, 2, 3))) ho_refuse(int sock, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	strata_log(LOG_WARNING, "takeover refused: %s", msg);
	send_ho_frame(sock, 'e', msg, (uint32_t)strlen(msg), -1);
}

/* The old daemon's side. Returns 0 (the outcome went to the peer), -1 on a malformed request. */
static int handover_serve(struct server *srv, int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char mnt[PATH_MAX], ack = 0;
	char *state = NULL;
	uint32_t len;
	int fuse_fd, rc;
	ssize_t n;

	if (read_all(fd, &len, 4) < 0 || len == 0 || len >= sizeof(mnt) || read_all(fd, mnt, len) < 0)
		return -1;
	mnt[len] = '\0';
	if (!srv->fs) {
		ho_refuse(fd, "the daemon of store %s serves no mount", store_dir(srv->store));
		return 0;
	}
	if (strcmp(mnt, fs_mountpoint(srv->fs)) != 0) {
		ho_refuse(fd, "the daemon of store %s serves %s, not %s", store_dir(srv->store),
			  fs_mountpoint(srv->fs), mnt);
		return 0;
	}
	if (pthread_mutex_trylock(&srv->ho_mu) != 0) {
		ho_refuse(fd, "another takeover of %s is under way", mnt);
		return 0;
	}
	if (srv->handed_over) {
		ho_refuse(fd, "%s was already handed over", mnt);
		goto out;
	}
	state = malloc(HANDOVER_STATE_MAX);
	if (!state) {
		ho_refuse(fd, "out of memory");
		goto out;
	}
	strata_log(LOG_NOTICE, "takeover of %s: pausing FUSE requests", mnt);
	rc = fs_pause(srv->fs, srv->drain_ms);
	if (rc < 0) {
		ho_refuse(fd, "%s; not handing %s over", strata_errmsg(rc), mnt);
		goto resume;
	}
	n = fs_handover_state(srv->fs, &fuse_fd, state, HANDOVER_STATE_MAX);
	if (n < 0) {
		ho_refuse(fd, "%s", strata_errmsg((int)n));
		goto resume;
	}
	if (send_ho_frame(fd, 'h', state, (uint32_t)n, fuse_fd) < 0) {
		strata_log(LOG_ERR, "takeover of %s: the new daemon went away; serving on", mnt);
		goto resume;
	}
	if (poll(&p, 1, HANDOVER_ACK_MS) != 1 || read_all(fd, &ack, 1) < 0 || ack != 'k') {
		strata_log(LOG_ERR, "takeover of %s: the new daemon did not confirm; serving on", mnt);
		goto resume;
	}
	srv->handed_over = 1;
	fs_handed_over(srv->fs);
	strata_log(LOG_NOTICE, "handed %s over to the new daemon; exiting without unmounting", mnt);
	goto out;
resume:
	fs_resume(srv->fs);
out:
	pthread_mutex_unlock(&srv->ho_mu);
	free(state);
	return 0;
}

/*
 * The new daemon's side: takes mnt (absolute) over from the daemon of store_dir. Returns 0 with
 * *fuse_fd and *state (malloc'd, *len bytes) after confirming, or negative errno with strata_err
 * set (then nothing changed: the old daemon serves on). wait_s bounds the wait for the answer.
 */
static int takeover_receive(const char *store_dir, const char *mnt, long wait_s, int *fuse_fd,
			    char **state, uint32_t *len)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct timeval tv = { wait_s, 0 };
	char hdr[5], smnt[PATH_MAX];
	struct iovec iov = { hdr, sizeof(hdr) };
	struct msghdr mh;
	struct cmsghdr *ch;
	uint32_t l = (uint32_t)strlen(mnt);
	char *buf = NULL;
	int fd, rfd = -1, rc;
	ssize_t n;

	*fuse_fd = -1;
	*state = NULL;
	fd = cli_connect(store_dir);
	if (fd < 0)
		return strata_err(ESRCH, "no daemon serves store %s: nothing to take over", store_dir);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (cli_write_all(fd, HANDOVER_MAGIC, 8) < 0 || send_u32(fd, l) < 0 || cli_write_all(fd, mnt, l) < 0)
		goto lost;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.buf;
	mh.msg_controllen = sizeof(cm.buf);
	do {
		n = recvmsg(fd, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	for (ch = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; ch; ch = CMSG_NXTHDR(&mh, ch)) {
		if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS &&
		    ch->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&rfd, CMSG_DATA(ch), sizeof(int));
	}
	if (n != (ssize_t)sizeof(hdr) || (mh.msg_flags & MSG_CTRUNC))
		goto lost;
	memcpy(&l, hdr + 1, 4);
	if ((hdr[0] != 'e' && hdr[0] != 'h') || l > HANDOVER_STATE_MAX)
		goto lost;
	buf = malloc(l + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	if (read_all(fd, buf, l) < 0)
		goto lost;
	buf[l] = '\0';
	if (hdr[0] == 'e') {
		rc = strata_err(EPERM, "%s", buf);
		goto out;
	}
	if (rfd < 0) {
		rc = strata_err(EPROTO, "the daemon of store %s sent no /dev/fuse descriptor", store_dir);
		goto out;
	}
	rc = fs_handover_check(buf, l, smnt, sizeof(smnt));
	if (rc < 0)
		goto out;
	if (strcmp(smnt, mnt) != 0) {
		rc = strata_err(EPROTO, "the daemon of store %s handed over %s, not %s", store_dir, smnt,
				mnt);
		goto out;
	}
	if (cli_write_all(fd, "k", 1) < 0)
		goto lost;
	*fuse_fd = rfd;
	rfd = -1;
	*state = buf;
	buf = NULL;
	*len = l;
	rc = 0;
	goto out;
lost:
	rc = strata_err(EPROTO, "the daemon of store %s did not hand %s over (it exited, or its strata "
			"has no takeover); it serves on if it is still running", store_dir, mnt);
out:
	if (rfd >= 0)
		close(rfd);
	free(buf);
	close(fd);
	return rc;
}

/* store_open, waiting up to timeout_ms while another process (the daemon handing over) holds it. */
static int store_open_wait(const char *dir, const struct store_opts *so, long timeout_ms,
			   struct store **out)
{
	for (long waited = 0;; waited += 10) {
		int rc = store_open(dir, so, out);

		if (rc != -EBUSY || waited >= timeout_ms)
			return rc;
		usleep(10 * 1000); /* reads are paused meanwhile: poll often */
	}
}

/* ---------------------------------------------------------------- mount */

/* Reports the daemon's start-up result to the waiting parent (msg NULL = success). */
static void report(int fd, const char *msg)
{
	if (fd < 0)
		return;
	if (msg && write(fd, msg, strlen(msg)) < 0)
		strata_log(LOG_ERR, "%s", msg);
	close(fd);
}

static void detach_stdio(const char *store)
{
	char path[PATH_MAX];
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
	}
	snprintf(path, sizeof(path), "%s/strata.log", store);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd >= 0) {
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
}

#define DEFAULT_READ_TIMEOUT_S 30L
/* A takeover waits this long (plus the read timeout) for the old daemon to release the store: it
 * lets its running commands finish (server_stop) and its background fetches stop. */
#define TAKEOVER_STORE_WAIT_MS 90000L

/* Serves the store on mnt until unmounted. read_timeout_s bounds each fetch of a FUSE read (across
 * hosts, retries and Retry-After waits); past it the read fails with EIO. With takeover, the mount
 * is taken over from the daemon serving it (see handover above) instead of mounted. */
static int run_daemon(struct cli *c, const char *mnt, int debug, int background, int status_fd,
		      long read_timeout_s, int takeover)
{
	struct store *store = NULL;
	struct fetch_client *fc = NULL;
	struct fetch_opts fopts;
	struct fs *f = NULL;
	struct quota *evictor = NULL;
	struct metrics *metrics = NULL;
	struct server srv;
	struct fs_opts fo;
	struct store_opts so = { .block_cache_bytes = c->block_cache };
	char source[PATH_MAX + 16], msg[2048], real[PATH_MAX];
	char *state = NULL;
	uint32_t slen = 0;
	int rc, started = 0, fuse_fd = -1;

	/* Before the takeover: the less the new daemon does after it, the shorter reads pause. */
	memset(&fopts, 0, sizeof(fopts));
	fopts.platform_os = "linux";
	fopts.platform_arch = fetch_host_arch();
	fopts.hosts_dir = c->hosts_dir;
	fopts.strict_cache = c->strict_cache;
	fopts.read_timeout_ms = read_timeout_s * 1000;
	rc = fetch_client_new(&fopts, &fc);
	if (rc < 0)
		goto fail;
	if (takeover) {
		if (!realpath(mnt, real))
			snprintf(real, sizeof(real), "%s", mnt);
		rc = takeover_receive(c->store_dir, real, read_timeout_s + 60, &fuse_fd, &state, &slen);
		if (rc < 0)
			goto fail;
		rc = store_open_wait(c->store_dir, &so, TAKEOVER_STORE_WAIT_MS + read_timeout_s * 1000,
				     &store);
	} else {
		rc = store_open(c->store_dir, &so, &store);
	}
	if (rc < 0)
		goto fail;
	memset(&fo, 0, sizeof(fo));
	fo.fetch = fc;
	fo.background = background;
	fo.read_timeout_ms = (int)(read_timeout_s * 1000);
	fo.index_cache_bytes = c->index_cache;
	fo.chunk_cache_bytes = c->chunk_cache;
	fo.mountpoint = mnt;
	fo.debug = debug;
	snprintf(source, sizeof(source), "strata:%s", store_dir(store));
	fo.source = source;
	if (takeover) {
		rc = fs_adopt(store, &fo, fuse_fd, state, slen, &f);
		fuse_fd = -1; /* the fs's now, closed on failure too */
	} else {
		rc = fs_mount(store, &fo, &f);
	}
	if (rc < 0)
		goto fail;
	if (c->quota) {
		rc = quota_start(store, f, c->quota, c->low_water, &evictor);
		if (rc < 0)
			goto fail;
	}
	if (c->metrics) {
		rc = metrics_start(c->metrics, store, fc, evictor, &metrics);
		if (rc < 0)
			goto fail;
	}
	rc = server_start(&srv, store, fc, f, (int)(read_timeout_s * 1000 + 10000), evictor);
	if (rc < 0)
		goto fail;
	started = 1;
	if (takeover)
		strata_log(LOG_NOTICE, "took over %s: serving store %s", fs_mountpoint(f),
			   store_dir(store));
	else
		strata_log(LOG_NOTICE, "serving store %s on %s", store_dir(store), mnt);
	if (status_fd >= 0) {
		report(status_fd, NULL);
		status_fd = -1;
		if (!debug)
			detach_stdio(store_dir(store));
	}
	free(state);
	state = NULL;
	rc = fs_run(f);
	metrics_stop(metrics);
	quota_stop(evictor);
	server_stop(&srv);
	fs_free(f);
	fetch_client_free(fc);
	store_close(store);
	if (srv.handed_over) {
		strata_log(LOG_NOTICE, "handed %s over; the mount stays", mnt);
		return 0;
	}
	if (rc < 0) {
		strata_log(LOG_ERR, "session ended: %s", strata_errmsg(rc));
		return 1;
	}
	strata_log(LOG_NOTICE, "unmounted %s", mnt);
	return 0;
fail:
	if (started)
		server_stop(&srv);
	metrics_stop(metrics);
	quota_stop(evictor);
	fs_free(f);
	fetch_client_free(fc);
	store_close(store);
	if (state) {
		/* Past the confirmation: the old daemon is gone, and so will the mount be with us. */
		snprintf(msg, sizeof(msg), "took %s over, but: %s. The mount is now disconnected: run "
			 "'strata umount %s' and mount again", real, strata_errmsg(rc), real);
		strata_log(LOG_CRIT, "%s", msg);
		if (fuse_fd >= 0)
			close(fuse_fd);
		free(state);
	} else {
		snprintf(msg, sizeof(msg), "%s", strata_errmsg(rc));
	}
	if (status_fd >= 0) {
		report(status_fd, msg);
		return 1;
	}
	return cli_fail(c, "%s", msg);
}

/* The cache cap flag arg is ("--index-cache", "--chunk-cache=64M", ...), or NULL. */
static const char *cache_flag(const char *arg)
{
	static const char *const flags[] = { "--index-cache", "--chunk-cache", "--block-cache" };

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		size_t n = strlen(flags[i]);

		if (strncmp(arg, flags[i], n) == 0 && (arg[n] == '\0' || arg[n] == '='))
			return flags[i];
	}
	return NULL;
}

int cmd_mount(struct cli *c, int argc, char **argv)
{
	const char *mnt = NULL;
	int foreground = 0, debug = 0, background = 0, takeover = 0;
	long read_timeout_s = c->read_timeout_s > 0 ? c->read_timeout_s : DEFAULT_READ_TIMEOUT_S;
	int pfd[2];
	pid_t pid;
	char msg[2048];
	ssize_t n;
	int status;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--foreground") == 0)
			foreground = 1;
		else if (strcmp(argv[i], "--debug") == 0)
			debug = foreground = 1;
		else if (strcmp(argv[i], "--background") == 0)
			background = 1;
		else if (strcmp(argv[i], "--takeover") == 0)
			takeover = 1;
		else if (strcmp(argv[i], "--metrics") == 0 || strncmp(argv[i], "--metrics=", 10) == 0) {
			c->metrics = argv[i][9] == '=' ? argv[i] + 10 : i + 1 < argc ? argv[++i] : "";
			if (!*c->metrics)
				return cli_usage(c, "--metrics needs HOST:PORT or unix:PATH");
		}
		else if (strcmp(argv[i], "--read-timeout") == 0 ||
			 strncmp(argv[i], "--read-timeout=", 15) == 0) {
			const char *v = argv[i][14] == '=' ? argv[i] + 15 : i + 1 < argc ? argv[++i] : "";
			char *end;

			errno = 0;
			read_timeout_s = strtol(v, &end, 10);
			if (!*v || *end || errno || read_timeout_s <= 0 || read_timeout_s > 86400)
				return cli_usage(c, "--read-timeout needs a number of seconds (1-86400)");
		} else if (cache_flag(argv[i])) {
			const char *name = cache_flag(argv[i]);
			size_t nl = strlen(name);
			const char *v = argv[i][nl] == '=' ? argv[i] + nl + 1 : i + 1 < argc ? argv[++i] : "";
			uint64_t bytes;

			if (cli_parse_size(v, &bytes) < 0 || bytes == 0)
				return cli_usage(c, "%s needs a size greater than 0 (e.g. 32M)", name);
			*(name[2] == 'i' ? &c->index_cache : name[2] == 'c' ? &c->chunk_cache :
					   &c->block_cache) = bytes;
		} else if (argv[i][0] == '-')
			return cli_usage(c, "unknown option %s", argv[i]);
		else if (mnt)
			return cli_usage(c, "mount takes one mountpoint");
		else
			mnt = argv[i];
	}
	if (!mnt)
		return cli_usage(c, "mount needs a mountpoint");
	if (foreground)
		return run_daemon(c, mnt, debug, background, -1, read_timeout_s, takeover);

	/* Fork before the store opens: RocksDB's threads do not survive fork. */
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cli_fail(c, "pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return cli_fail(c, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		setsid();
		if (fork() > 0)
			_exit(0);
		_exit(run_daemon(c, mnt, 0, background, pfd[1], read_timeout_s, takeover));
	}
	close(pfd[1]);
	waitpid(pid, &status, 0);
	n = read(pfd[0], msg, sizeof(msg) - 1);
	close(pfd[0]);
	if (n > 0) {
		msg[n] = '\0';
		return cli_fail(c, "%s", msg);
	}
	if (n < 0)
		return cli_fail(c, "daemon start-up: %s", strerror(errno));
	/* EOF without a message: success, or the daemon died before saying anything. */
	if (!fs_is_fuse_mount(mnt, NULL, 0)) {
		char real[PATH_MAX];

		if (!realpath(mnt, real) || fs_is_fuse_mount(real, NULL, 0) <= 0)
			return cli_fail(c, "the daemon exited during start-up (see %s/strata.log)",
					c->store_dir);
	}
	return 0;
}

/* ---------------------------------------------------------------- umount */

/* Waits until nobody holds <store>/lock. Returns 0, or -ETIMEDOUT. */
static int wait_store_released(const char *store, int timeout_ms)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/lock", store);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
			close(fd);
			return 0;
		}
		usleep(50 * 1000);
	}
	close(fd);
	return -ETIMEDOUT;
}

int cmd_umount(struct cli *c, int argc, char **argv)
{
	char real[PATH_MAX], type[64], source[PATH_MAX + 16];
	const char *mnt;
	int rc;

	if (argc != 2 || argv[1][0] == '-')
		return cli_usage(c, "umount takes one mountpoint");
	mnt = argv[1];
	if (!realpath(mnt, real)) {
		if (errno != ENOTCONN)
			return cli_fail(c, "%s: %s", mnt, strerror(errno));
		snprintf(real, sizeof(real), "%s", mnt);
	}
	rc = fs_mount_info(real, type, sizeof(type), source, sizeof(source));
	if (rc <= 0)
		return cli_fail(c, "%s is not mounted", real);
	if (strcmp(type, "fuse.strata") != 0)
		return cli_fail(c, "%s is a %s mount, not strata", real, type);
	if (umount2(real, 0) < 0) {
		int e = errno;

		if (e == EBUSY)
			return cli_fail(c, "%s is busy (open files, or mounts stacked on it)", real);
		if (e == EPERM) {
			pid_t pid = fork();
			int status = 0;

			if (pid == 0) {
				execlp("fusermount3", "fusermount3", "-u", real, (char *)NULL);
				_exit(127);
			}
			if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
			    WEXITSTATUS(status) != 0)
				return cli_fail(c, "cannot unmount %s: %s", real, strerror(e));
		} else {
			return cli_fail(c, "cannot unmount %s: %s", real, strerror(e));
		}
	}
	if (strncmp(source, "strata:", 7) == 0 &&
	    wait_store_released(source + 7, UMOUNT_WAIT_MS) < 0)
		return cli_fail(c, "unmounted %s, but its daemon still holds store %s after %d s", real,
				source + 7, UMOUNT_WAIT_MS / 1000);
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* strata mount and umount: the daemon that serves a store on a mountpoint, started and stopped. */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cmd.h"
#include "fetch/registry.h"
#include "fs/fs.h"
#include "store/store.h"
#include "tools/ctl.h"
#include "tools/metrics.h"
#include "tools/notify.h"
#include "tools/quota.h"
#include "tools/snapshotter.h"
#include "tools/takeover.h"
#include "util/log.h"
#include "util/thread.h"

#define UMOUNT_WAIT_MS 30000

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
 * lets its running commands finish (ctl_stop) and its background fetches stop. */
#define TAKEOVER_STORE_WAIT_MS 90000L

/* A daemon being started and run: what run_daemon's phases share. */
struct daemon {
	struct cli *c;
	const char *mnt;
	int debug, background, takeover;
	int status_fd; /* the waiting parent's pipe, or -1 */
	long read_timeout_s;
	struct store *store;
	struct fetch_client *fc;
	struct fs *f;
	struct quota *evictor;
	struct metrics *metrics;
	struct ctl *ctl;
	struct snapshotter *snap;
	char real[PATH_MAX]; /* mnt resolved (takeover) */
	char *state;	     /* the handed-over fs state, until the fs runs */
	uint32_t slen;
	int fuse_fd;	/* the handed-over /dev/fuse, until the fs took it */
	pthread_t boot; /* the config's images and pins (boot_main) */
	int boot_started;
};

/* Before the takeover, the registry client (the less the new daemon does after it, the shorter
 * reads pause); then the mount from the old daemon (takeover), and the store. */
static int daemon_open(struct daemon *d)
{
	struct cli *c = d->c;
	struct fetch_opts fopts;
	struct store_opts so = { .block_cache_bytes = c->block_cache };
	int rc;

	memset(&fopts, 0, sizeof(fopts));
	fopts.platform_os = "linux";
	fopts.platform_arch = fetch_host_arch();
	fopts.hosts_dir = c->hosts_dir;
	fopts.strict_cache = c->strict_cache;
	fopts.read_timeout_ms = d->read_timeout_s * 1000;
	fopts.low_speed_timeout_s = c->low_speed_s;
	fopts.download_base_s = c->download_base_s;
	fopts.download_min_rate = c->download_min_rate;
	rc = fetch_client_new(&fopts, &d->fc);
	if (rc < 0)
		return rc;
	if (!d->takeover)
		return store_open(c->store_dir, &so, &d->store);
	if (!realpath(d->mnt, d->real))
		snprintf(d->real, sizeof(d->real), "%s", d->mnt);
	rc = takeover_receive(c->store_dir, d->real, d->read_timeout_s + 60, &d->fuse_fd, &d->state,
			      &d->slen);
	if (rc < 0)
		return rc;
	return takeover_store_open(c->store_dir, &so,
				   TAKEOVER_STORE_WAIT_MS + d->read_timeout_s * 1000, &d->store);
}

/* Mounts the fs on mnt, or adopts the handed-over mount. */
static int daemon_mount(struct daemon *d)
{
	struct fs_opts fo;
	char source[PATH_MAX + 16];
	int rc;

	memset(&fo, 0, sizeof(fo));
	fo.fetch = d->fc;
	fo.background = d->background;
	fo.read_timeout_ms = (int)(d->read_timeout_s * 1000);
	fo.index_cache_bytes = d->c->index_cache;
	fo.chunk_cache_bytes = d->c->chunk_cache;
	fo.mountpoint = d->mnt;
	fo.debug = d->debug;
	fo.allow_other = d->c->allow_other;
	snprintf(source, sizeof(source), "strata:%s", store_dir(d->store));
	fo.source = source;
	if (!d->takeover)
		return fs_mount(d->store, &fo, &d->f);
	rc = fs_adopt(d->store, &fo, d->fuse_fd, d->state, d->slen, &d->f);
	d->fuse_fd = -1; /* the fs's now, closed on failure too */
	return rc;
}

/* MNT/store's resolver: a reference podman asks for that the store lacks is pulled here. */
static int daemon_resolve(void *ctx, const char *ref)
{
	struct daemon *d = ctx;

	return ctl_pull(d->ctl, d->c, ref);
}

/* The quota evictor, the metrics endpoint and the control socket (and MNT/store's resolver). */
static int daemon_start(struct daemon *d)
{
	struct cli *c = d->c;
	int rc;

	if (c->quota) {
		rc = quota_start(d->store, d->f, c->quota, c->low_water, &d->evictor);
		if (rc < 0)
			return rc;
	}
	if (c->metrics) {
		rc = metrics_start(c->metrics, d->store, d->fc, d->evictor, &d->metrics);
		if (rc < 0)
			return rc;
	}
	rc = ctl_start(d->store, d->fc, d->f, d->evictor, (int)(d->read_timeout_s * 1000 + 10000),
		       c->dispatch, &d->ctl);
	if (rc == 0)
		fs_set_resolver(d->f, daemon_resolve, d);
	if (rc == 0 && c->snapshotter_socket) {
		/* a pull for the snapshotter runs as a forwarded command does: the daemon's parts */
		c->store = d->store;
		c->fetch = d->fc;
		c->fs = d->f;
		c->evictor = d->evictor;
		c->in_daemon = 1;
		rc = snapshotter_start(c->snapshotter_socket, c, d->mnt, &d->snap);
	}
	return rc;
}

/* Tells a service manager (systemd Type=notify) that the mount is served, by this process (after
 * a takeover, the manager follows the new daemon when NotifyAccess allows it). */
static void notify_ready(struct daemon *d)
{
	char state[128];

	snprintf(state, sizeof(state), "READY=1\nMAINPID=%ld\nSTATUS=serving %s", (long)getpid(),
		 d->mnt);
	if (tools_notify(state) < 0)
		strata_log(LOG_WARNING, "readiness notification: %s", strata_errmsg(EIO));
}

/* Pulls the config's images and pulls and pins its pins, through the daemon as forwarded commands
 * would (a failure is logged and the others go on), then tells the service manager the daemon is
 * ready: a unit ordered after strata finds them. */
static void *boot_main(void *arg)
{
	struct daemon *d = arg;

	for (size_t i = 0; i < d->c->nimages; i++) {
		if (ctl_run_ref(d->ctl, d->c, "pull", NULL, d->c->images[i]) < 0)
			strata_log(LOG_ERR, "images: %s: %s", d->c->images[i], strata_errmsg(EIO));
	}
	for (size_t i = 0; i < d->c->npins; i++) {
		/* built here from the whole blobs, which a pin fetches anyway (a pull that left
		 * the layers pending to the daemon's stream would make the pin fail) */
		if (ctl_run_ref(d->ctl, d->c, "pull", "--index=build", d->c->pins[i]) < 0 ||
		    ctl_run_ref(d->ctl, d->c, "pin", NULL, d->c->pins[i]) < 0)
			strata_log(LOG_ERR, "pin: %s: %s", d->c->pins[i], strata_errmsg(EIO));
	}
	strata_log(LOG_NOTICE, "configured images pulled (%zu), pinned (%zu)", d->c->nimages,
		   d->c->npins);
	notify_ready(d);
	return NULL;
}

/* Tells the parent, serves until unmounted (or handed over), stops. Returns the exit code. */
static int daemon_serve(struct daemon *d)
{
	int rc, handed_over;

	if (d->takeover)
		strata_log(LOG_NOTICE, "took over %s: serving store %s", fs_mountpoint(d->f),
			   store_dir(d->store));
	else
		strata_log(LOG_NOTICE, "serving store %s on %s", store_dir(d->store), d->mnt);
	if (d->status_fd >= 0) {
		report(d->status_fd, NULL);
		d->status_fd = -1;
		if (!d->debug)
			detach_stdio(store_dir(d->store));
	}
	free(d->state);
	d->state = NULL;
	if (d->c->nimages || d->c->npins) {
		int err = util_thread_start(&d->boot, boot_main, d);

		d->boot_started = err == 0;
		if (err) {
			strata_log(LOG_ERR, "cannot start pulling the configured images: %s",
				   strerror(err));
			notify_ready(d);
		}
	} else {
		notify_ready(d);
	}
	rc = fs_run(d->f);
	if (d->boot_started) { /* its commands see the cancel flag */
		ctl_cancel(d->ctl);
		pthread_join(d->boot, NULL);
	}
	snapshotter_stop(d->snap);
	if (tools_notify("STOPPING=1") < 0)
		strata_log(LOG_WARNING, "%s", strata_errmsg(EIO));
	metrics_stop(d->metrics);
	quota_stop(d->evictor);
	handed_over = ctl_stop(d->ctl);
	fs_free(d->f);
	fetch_client_free(d->fc);
	store_close(d->store);
	if (handed_over) {
		strata_log(LOG_NOTICE, "handed %s over; the mount stays", d->mnt);
		return 0;
	}
	if (rc < 0) {
		strata_log(LOG_ERR, "session ended: %s", strata_errmsg(rc));
		return 1;
	}
	strata_log(LOG_NOTICE, "unmounted %s", d->mnt);
	return 0;
}

/* Undoes what started and reports rc to the parent (or prints it). Returns the exit code. */
static int daemon_fail(struct daemon *d, int rc)
{
	char msg[2048];

	snapshotter_stop(d->snap);
	ctl_stop(d->ctl);
	metrics_stop(d->metrics);
	quota_stop(d->evictor);
	fs_free(d->f);
	fetch_client_free(d->fc);
	store_close(d->store);
	if (d->state) {
		/* Past the confirmation: the old daemon is gone, and so will the mount be with us. */
		snprintf(msg, sizeof(msg),
			 "took %s over, but: %s. The mount is now disconnected: run "
			 "'strata umount %s' and mount again",
			 d->real, strata_errmsg(rc), d->real);
		strata_log(LOG_CRIT, "%s", msg);
		if (d->fuse_fd >= 0)
			close(d->fuse_fd);
		free(d->state);
	} else {
		snprintf(msg, sizeof(msg), "%s", strata_errmsg(rc));
	}
	if (d->status_fd >= 0) {
		report(d->status_fd, msg);
		return 1;
	}
	return cli_fail(d->c, "%s", msg);
}

/* Serves the store on mnt until unmounted. read_timeout_s bounds each fetch of a FUSE read (across
 * hosts, retries and Retry-After waits); past it the read fails with EIO. With takeover, the mount
 * is taken over from the daemon serving it (tools/takeover.c) instead of mounted. status_fd (or
 * -1) gets the start-up result. Returns the exit code. */
static int run_daemon(struct cli *c, const char *mnt, int debug, int background, int status_fd,
		      long read_timeout_s, int takeover)
{
	struct daemon d;
	int rc;

	memset(&d, 0, sizeof(d));
	d.c = c;
	d.mnt = mnt;
	d.debug = debug;
	d.background = background;
	d.takeover = takeover;
	d.status_fd = status_fd;
	d.read_timeout_s = read_timeout_s;
	d.fuse_fd = -1;
	rc = daemon_open(&d);
	if (rc == 0)
		rc = daemon_mount(&d);
	if (rc == 0)
		rc = daemon_start(&d);
	if (rc < 0)
		return daemon_fail(&d, rc);
	return daemon_serve(&d);
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
		else if (strcmp(argv[i], "--allow-other") == 0)
			c->allow_other = 1;
		else if (strcmp(argv[i], "--snapshotter-socket") == 0 ||
			 strncmp(argv[i], "--snapshotter-socket=", 21) == 0) {
			c->snapshotter_socket = argv[i][20] == '=' ? argv[i] + 21 :
						i + 1 < argc	   ? argv[++i] :
								     "";
			if (c->snapshotter_socket[0] != '/')
				return cli_usage(c, "--snapshotter-socket needs an absolute path");
		} else if (strcmp(argv[i], "--metrics") == 0 ||
			   strncmp(argv[i], "--metrics=", 10) == 0) {
			c->metrics = argv[i][9] == '=' ? argv[i] + 10 :
				     i + 1 < argc      ? argv[++i] :
							 "";
			if (!*c->metrics)
				return cli_usage(c, "--metrics needs HOST:PORT or unix:PATH");
		} else if (strcmp(argv[i], "--read-timeout") == 0 ||
			   strncmp(argv[i], "--read-timeout=", 15) == 0) {
			const char *v = argv[i][14] == '=' ? argv[i] + 15 :
					i + 1 < argc	   ? argv[++i] :
							     "";
			char *end;

			errno = 0;
			read_timeout_s = strtol(v, &end, 10);
			if (!*v || *end || errno || read_timeout_s <= 0 || read_timeout_s > 86400)
				return cli_usage(
					c, "--read-timeout needs a number of seconds (1-86400)");
		} else if (cache_flag(argv[i])) {
			const char *name = cache_flag(argv[i]);
			size_t nl = strlen(name);
			const char *v = argv[i][nl] == '=' ? argv[i] + nl + 1 :
					i + 1 < argc	   ? argv[++i] :
							     "";
			uint64_t bytes;

			if (cli_parse_size(v, &bytes) < 0 || bytes == 0)
				return cli_usage(c, "%s needs a size greater than 0 (e.g. 32M)",
						 name);
			*(name[2] == 'i' ? &c->index_cache :
			  name[2] == 'c' ? &c->chunk_cache :
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
			return cli_fail(c, "%s is busy (open files, or mounts stacked on it)",
					real);
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
		return cli_fail(c, "unmounted %s, but its daemon still holds store %s after %d s",
				real, source + 7, UMOUNT_WAIT_MS / 1000);
	return 0;
}

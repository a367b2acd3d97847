/* SPDX-License-Identifier: Apache-2.0 */
/* strata mount and umount: starting the daemon that serves a store on a mountpoint, and stopping it. */
#include <errno.h>
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
#include "tools/quota.h"
#include "tools/takeover.h"
#include "util/log.h"

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
 * lets its running commands finish (server_stop) and its background fetches stop. */
#define TAKEOVER_STORE_WAIT_MS 90000L

/* Serves the store on mnt until unmounted. read_timeout_s bounds each fetch of a FUSE read (across
 * hosts, retries and Retry-After waits); past it the read fails with EIO. With takeover, the mount
 * is taken over from the daemon serving it (tools/takeover.c) instead of mounted. */
static int run_daemon(struct cli *c, const char *mnt, int debug, int background, int status_fd,
		      long read_timeout_s, int takeover)
{
	struct store *store = NULL;
	struct fetch_client *fc = NULL;
	struct fetch_opts fopts;
	struct fs *f = NULL;
	struct quota *evictor = NULL;
	struct metrics *metrics = NULL;
	struct ctl *ctl = NULL;
	struct fs_opts fo;
	struct store_opts so = { .block_cache_bytes = c->block_cache };
	char source[PATH_MAX + 16], msg[2048], real[PATH_MAX];
	char *state = NULL;
	uint32_t slen = 0;
	int rc, handed_over, fuse_fd = -1;

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
		rc = takeover_store_open(c->store_dir, &so, TAKEOVER_STORE_WAIT_MS + read_timeout_s * 1000,
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
	rc = ctl_start(store, fc, f, evictor, (int)(read_timeout_s * 1000 + 10000), c->dispatch,
		       &ctl);
	if (rc < 0)
		goto fail;
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
	handed_over = ctl_stop(ctl);
	fs_free(f);
	fetch_client_free(fc);
	store_close(store);
	if (handed_over) {
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
	ctl_stop(ctl);
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

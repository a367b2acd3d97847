/* SPDX-License-Identifier: Apache-2.0 */
/* The FUSE session: creating, mounting, serving and freeing a mount; its table of open files. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_i.h"
#include "als_i.h"
#include "rootfs_i.h"
#include "index/layer.h"
#include "store/store.h"
#include "stream.h"
#include "util/log.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define lsan_disable() __lsan_disable()
#define lsan_enable()  __lsan_enable()
#else
#define lsan_disable() ((void)0)
#define lsan_enable()  ((void)0)
#endif

/* ---------------------------------------------------------------- mount */

/* Undoes the octal escapes of /proc/self/mountinfo fields in place. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/* The "major:minor" of the mount on path (the last line of /proc/self/mountinfo for it) into dev.
 * Returns 1 when found, 0 when not, or negative errno. */
static int mount_dev(const char *path, char *dev, size_t cap)
{
	FILE *mi = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	int found = 0;

	if (!mi)
		return -errno;
	while (fgets(line, sizeof(line), mi)) {
		char *fields[5] = { 0 }, *save = NULL, *tok;
		int n = 0;

		for (tok = strtok_r(line, " ", &save); tok && n < 5;
		     tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape(fields[4]);
		if (strcmp(fields[4], path) == 0) {
			snprintf(dev, cap, "%s", fields[2]);
			found = 1;
		}
	}
	fclose(mi);
	return found;
}

void fs_mount_readahead(struct fs *f)
{
	char dev[64], path[128];
	FILE *ra;

	if (mount_dev(f->mountpoint, dev, sizeof(dev)) <= 0 || strchr(dev, '/'))
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	ra = fopen(path, "we");
	if (!ra) {
		strata_log(LOG_DEBUG, "cannot raise the readahead of %s: %s: %s", f->mountpoint,
			   path, strerror(errno));
		return;
	}
	fprintf(ra, "%u\n", FS_READAHEAD_BYTES >> 10);
	if (fclose(ra) != 0)
		strata_log(LOG_DEBUG, "cannot raise the readahead of %s: %s: %s", f->mountpoint,
			   path, strerror(errno));
}

int fs_is_fuse_mount(const char *path, char *type, size_t cap)
{
	return fs_mount_info(path, type, cap, NULL, 0);
}

int fs_mount_info(const char *path, char *type, size_t cap, char *source, size_t scap)
{
	FILE *mi = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	int found = 0;

	if (!mi)
		return -errno;
	/* The last matching line is the mount on top. */
	while (fgets(line, sizeof(line), mi)) {
		char *fields[10] = { 0 }, *sep, *save = NULL, *tok;
		int n = 0;

		sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		for (tok = strtok_r(line, " ", &save); tok && n < 10;
		     tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape(fields[4]);
		if (strcmp(fields[4], path) != 0)
			continue;
		tok = strtok_r(sep + 3, " ", &save);
		found = tok && strncmp(tok, "fuse", 4) == 0;
		if (found && type)
			snprintf(type, cap, "%s", tok);
		tok = strtok_r(NULL, " ", &save);
		if (found && source && tok) {
			unescape(tok);
			snprintf(source, scap, "%s", tok);
		}
	}
	fclose(mi);
	return found;
}

/* Allocates the fs for mountpoint real (absolute) and creates its session, unmounted. Returns 0 and
 * *out, or negative errno (everything freed). */
int fs_session_create(struct store *store, const struct fs_opts *opts, const char *real,
		      struct fs **out)
{
	char mopts[PATH_MAX + 128];
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fs *f;
	int rc;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->io.wake = -1;
	clock_gettime(CLOCK_REALTIME, &f->start);
	rc = fs_engine_init(&f->eng, store, opts->fetch, opts->chunk_cache_bytes,
			    opts->index_cache_bytes);
	fs_index_stats_cap(f->eng.layers_max);
	f->bg_wanted = opts->background;
	f->read_timeout_ms = opts->read_timeout_ms;
	pthread_mutex_init(&f->dh_mu, NULL);
	if (getrandom(&f->dh_next, sizeof(f->dh_next), 0) != sizeof(f->dh_next))
		f->dh_next = ((uint64_t)getpid() << 40) ^ (uint64_t)f->start.tv_nsec;
	f->dh_next = (f->dh_next >> 1) | 1; /* counts up without wrapping to 0 */
	pthread_mutex_init(&f->open_mu, NULL);
	f->max_threads = opts->max_threads ? opts->max_threads : FS_MAX_THREADS_DEFAULT;
	f->mountpoint = strdup(real);
	f->source = strdup(opts->source ? opts->source : "strata");
	if (rc == 0)
		rc = fs_rootfs_create(&f->rootfs);
	if (rc == 0)
		rc = fs_als_create(&f->als);
	if (rc < 0 || !f->mountpoint || !f->source) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = fs_io_init(f);
	if (rc < 0) {
		rc = strata_err(-rc, "FUSE io set-up: %s", strerror(-rc));
		goto fail;
	}
	{
		/* fuse_opt takes backslash escapes: protect ',' and '\\' in the source. */
		const char *src = f->source;
		size_t o = 0;

		/* Without allow_other the kernel lets only the mounting user in: every layer of
		 * every image stays private to root. overlayfs still works on top, since it reads
		 * its lower layers with the credentials of whoever mounted the overlay. */
		o = (size_t)snprintf(mopts, sizeof(mopts),
				     "ro,%sdefault_permissions,subtype=strata,fsname=",
				     opts->allow_other ? "allow_other," : "");
		for (; *src && o + 3 < sizeof(mopts); src++) {
			if (*src == ',' || *src == '\\')
				mopts[o++] = '\\';
			mopts[o++] = *src;
		}
		mopts[o] = '\0';
	}
	if (fuse_opt_add_arg(&args, "strata") < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, mopts) < 0 ||
	    (opts->debug && fuse_opt_add_arg(&args, "-d") < 0)) {
		rc = -ENOMEM;
		goto fail;
	}
	f->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), f);
	if (!f->se) {
		rc = strata_err(EIO, "cannot create the FUSE session");
		goto fail;
	}
	fuse_opt_free_args(&args);
	*out = f;
	return 0;
fail:
	fuse_opt_free_args(&args);
	fs_free(f);
	return rc;
}

int fs_mount(struct store *store, const struct fs_opts *opts, struct fs **out)
{
	struct fs *f;
	char real[PATH_MAX], type[64];
	struct stat st;
	int rc;

	*out = NULL;
	if (stat(opts->mountpoint, &st) < 0) {
		if (errno == ENOTCONN)
			return strata_err(ENOTCONN,
					  "%s is a disconnected FUSE mount (run 'strata umount %s')",
					  opts->mountpoint, opts->mountpoint);
		return strata_err(errno, "mountpoint %s: %s", opts->mountpoint, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return strata_err(ENOTDIR, "mountpoint %s is not a directory", opts->mountpoint);
	if (!realpath(opts->mountpoint, real))
		return strata_err(errno, "mountpoint %s: %s", opts->mountpoint, strerror(errno));
	rc = fs_is_fuse_mount(real, type, sizeof(type));
	if (rc > 0)
		return strata_err(EBUSY, "%s is already mounted (%s)", real, type);

	rc = fs_session_create(store, opts, real, &f);
	if (rc < 0)
		return rc;
	/* libfuse keeps a copy of the mountpoint that only fuse_session_unmount frees: after a
	 * handover that is never called (it would unmount), so LeakSanitizer is told to expect it. */
	lsan_disable();
	rc = fuse_session_mount(f->se, f->mountpoint);
	lsan_enable();
	if (rc != 0) {
		rc = strata_err(EIO, "cannot mount on %s (is /dev/fuse available?)", f->mountpoint);
		goto fail;
	}
	f->mounted = 1;
	/* The same descriptor, read through io_read so that a handover can stop the workers. */
	rc = fs_io_attach(f, fuse_session_fd(f->se));
	if (rc < 0)
		goto fail;
	*out = f;
	return 0;
fail:
	fs_free(f);
	return rc;
}

int fs_run(struct fs *f)
{
	struct fuse_loop_config *cfg;
	int rc;

	if (f->bg_wanted && f->eng.fetch)
		fs_bg_start(&f->eng);

	if (f->eng.fetch && !f->eng.w_started)
		fs_writer_start(&f->eng);
	if (f->eng.fetch && !f->streamer) {
		rc = fs_streamer_start(f->eng.store, f->eng.fetch, FS_STREAM_WORKERS_DEFAULT,
				       f->read_timeout_ms, &f->streamer);
		if (rc < 0)
			strata_log(LOG_ERR, "%s", strata_errmsg(rc));
	}
	if (fuse_set_signal_handlers(f->se) != 0)
		return strata_err(EIO, "cannot install signal handlers");
	f->signals_set = 1;
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(cfg, f->max_threads);
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	/* Cloned descriptors would be read outside io_read, and a handover would not stop them. */
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	rc = fuse_session_loop_mt(f->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc < 0 ? rc : 0;
}

void fs_stop(struct fs *f)
{
	(void)f;
	/* The loop only notices an exit flag after a request; a signal wakes it at once. */
	kill(getpid(), SIGTERM);
}

void fs_free(struct fs *f)
{
	if (!f)
		return;
	fs_bg_stop(&f->eng);
	fs_streamer_stop(f->streamer);
	fs_writer_stop(&f->eng); /* writes what is queued: before the caller closes the store */
	if (f->se) {
		if (f->signals_set)
			fuse_remove_signal_handlers(f->se);
		/* Handed over: the mount lives on in the new process. */
		if (f->mounted && !f->io.handed_over)
			fuse_session_unmount(f->se);
		else if (f->adopted && !f->io.handed_over)
			fs_adopted_unmount(f);
		fuse_session_destroy(f->se);
	}
	fs_dir_handles_free(f);
	fs_rootfs_free(f->rootfs);
	fs_als_free(f->als);
	pthread_mutex_destroy(&f->dh_mu);
	fs_io_destroy(&f->io);
	free(f->source);
	fs_engine_fini(&f->eng); /* no request runs any more: nothing holds a reference */
	pthread_mutex_destroy(&f->open_mu);
	free(f->opens);
	free(f->mountpoint);
	free(f);
}

const char *fs_mountpoint(const struct fs *f)
{
	return f->mountpoint;
}

struct fs_engine *fs_engine_of(struct fs *f)
{
	return &f->eng;
}

/* ---------------------------------------------------------------- open files */

/* Adds delta (+1 open, -1 release) to ino's open count. Returns 0 or -ENOMEM. */
int fs_open_count(struct fs *f, fuse_ino_t ino, int delta)
{
	size_t i;

	pthread_mutex_lock(&f->open_mu);
	for (i = 0; i < f->nopens && f->opens[i].ino != ino; i++)
		;
	if (i == f->nopens) {
		if (delta < 0) {
			pthread_mutex_unlock(&f->open_mu);
			return 0;
		}
		if (f->nopens == f->capopens) {
			size_t cap = f->capopens ? f->capopens * 2 : 64;
			struct open_ino *n = realloc(f->opens, cap * sizeof(*n));

			if (!n) {
				pthread_mutex_unlock(&f->open_mu);
				return -ENOMEM;
			}
			f->opens = n;
			f->capopens = cap;
		}
		f->opens[f->nopens].ino = ino;
		f->opens[f->nopens++].count = 0;
	}
	if (delta > 0)
		f->opens[i].count++;
	else if (--f->opens[i].count == 0)
		f->opens[i] = f->opens[--f->nopens];
	pthread_mutex_unlock(&f->open_mu);
	return 0;
}

void fs_open_lock(struct fs *f)
{
	pthread_mutex_lock(&f->open_mu);
}

void fs_open_unlock(struct fs *f)
{
	pthread_mutex_unlock(&f->open_mu);
}

/* fs_open_chunks() for one open inode of layer l (referenced). */
static int open_ino_chunks(struct fs_layer *l, uint32_t node,
			   int (*fn)(void *ctx, const uint8_t digest[32]), void *ctx)
{
	const struct index_inode *in = index_layer_inode(l->idx, node);
	int rc;

	for (uint32_t ci = 0; ci < in->count; ci++) {
		rc = fn(ctx, index_layer_chunk(l->idx, in->first + ci)->digest);
		if (rc)
			return rc;
	}
	/* the windows its spans may start from: all of the layer's, they are small */
	for (uint32_t k = 0; k < index_layer_ncheckpoints(l->idx); k++) {
		const struct index_checkpoint *cp = index_layer_checkpoint(l->idx, k);

		if (cp->wlen == 0)
			continue;
		rc = fn(ctx, cp->window);
		if (rc)
			return rc;
	}
	return 0;
}

int fs_open_chunks(struct fs *f, int (*fn)(void *ctx, const uint8_t digest[32]), void *ctx)
{
	int rc = 0;

	for (size_t i = 0; i < f->nopens && rc == 0; i++) {
		struct fs_layer *l;
		uint32_t node;

		/* Loaded again if the index cache unloaded it (takes layers_lock, never open_mu). A
		 * layer gone from the store has nothing to keep. */
		if (fs_layer_of(&f->eng, f->opens[i].ino, &l, &node) < 0) {
			strata_err_clear();
			continue;
		}
		rc = open_ino_chunks(l, node, fn, ctx);
		fs_layer_put(&f->eng, l);
	}
	return rc;
}

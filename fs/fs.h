/* SPDX-License-Identifier: Apache-2.0 */
/* The strata FUSE filesystem: read-only views of the layers in a store. */
#ifndef STRATA_FS_FS_H
#define STRATA_FS_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"

struct store;
struct fetch_client;
struct fs;

#define FS_MAX_THREADS_DEFAULT 16 /* FUSE worker threads at most */

struct fs_opts {
	const char *mountpoint;
	const char *source;	    /* mount source shown in /proc/mounts; NULL = "strata" */
	int debug;		    /* libfuse request tracing */
	unsigned max_threads;	    /* 0 = FS_MAX_THREADS_DEFAULT */
	uint64_t chunk_cache_bytes; /* decoded-chunk cache; 0 = FS_CHUNK_CACHE_DEFAULT (engine.h) */
	uint64_t index_cache_bytes; /* decoded layer indexes kept loaded; 0 = FS_INDEX_CACHE_DEFAULT
				       (engine.h) */
	struct fetch_client
		*fetch;	     /* fetches missing chunks (borrowed); NULL: misses fail with EIO */
	int background;	     /* fetch every missing chunk at low priority while serving */
	int read_timeout_ms; /* how long a lookup of a streaming layer waits without
				       progress; 0 = FS_STREAM_STALL_MS_DEFAULT (stream.h) */
	int allow_other;     /* mount with allow_other: other users may read the mount (as far as
				file modes allow); 0: only the mounting user (and overlayfs mounts it
				makes, which read lower layers with its credentials) */
};

/*
 * Checks the mountpoint (exists, is a directory, is not already a FUSE mount), creates the session
 * and mounts it. store is borrowed and must outlive the fs. Returns 0 and *out, or negative errno
 * with strata_err set ("mountpoint X does not exist", "X is already mounted (fuse.strata)").
 */
int fs_mount(struct store *store, const struct fs_opts *opts, struct fs **out);

/* Serves requests until the filesystem is unmounted or fs_stop() is called. Installs SIGINT/SIGTERM/
 * SIGHUP handlers that stop the loop. Returns 0 or negative errno. */
int fs_run(struct fs *f);

/* Background completion (--background) fetches only while the store (its directory on disk) is
 * smaller than bytes (0 = no bound): the quota sets its low-water mark, so that completion never
 * fetches what eviction would remove again. */
void fs_background_limit(struct fs *f, uint64_t bytes);

/*
 * Resolves and registers image ref (a normalized reference) as `strata pull REF` does inside the
 * daemon, for a lookup of MNT/store/<base64 ref> that names an image the store does not have.
 * Called on FUSE threads, one call at a time. Returns 0 or negative errno with strata_err set.
 */
typedef int (*fs_resolve_fn)(void *ctx, const char *ref);

/* Sets the resolver of MNT/store (none: unknown references are ENOENT). Call before requests
 * arrive, or at least before the first lookup of store/. ctx is borrowed. */
void fs_set_resolver(struct fs *f, fs_resolve_fn fn, void *ctx);

/* Asks a running fs_run to return (async-signal-safe is not guaranteed; call from a thread). */
void fs_stop(struct fs *f);

/* Unmounts (if still mounted) and frees (NULL ok). */
void fs_free(struct fs *f);

/* The absolute path the fs is mounted on. Borrowed, valid until fs_free. */
const char *fs_mountpoint(const struct fs *f);

/*
 * Handing the mount over to a new process (daemon restart or upgrade) without unmounting.
 *
 * Old process: fs_pause() stops reading new requests from /dev/fuse and waits until every request
 * already read has been answered; fs_handover_state() then gives the /dev/fuse descriptor and the
 * state a new process needs; once the new process has both, fs_handed_over() makes fs_run return
 * without unmounting (fs_free then leaves the mount alone). If the handover fails before that,
 * fs_resume() serves on: requests only waited. Requests the kernel queued meanwhile stay queued
 * for whoever reads next.
 *
 * New process: fs_adopt() serves the received descriptor in place of fs_mount().
 */

/* Stops reading requests and waits up to timeout_ms for those being processed. Returns 0, or
 * -ETIMEDOUT (still paused: call fs_resume). Thread-safe; not from a FUSE request thread. */
int fs_pause(struct fs *f, int timeout_ms);

/* Reads requests again after fs_pause. */
void fs_resume(struct fs *f);

/* After fs_pause: *fd is the /dev/fuse descriptor (borrowed) and buf receives the state (the kernel's
 * FUSE_INIT request, the mountpoint, the source). Returns its length, -ENOSPC when cap is too small,
 * -EAGAIN when the kernel's INIT has not been seen yet (strata_err set). */
ssize_t fs_handover_state(struct fs *f, int *fd, void *buf, size_t cap);

/* Validates a received state; fills mnt (cap bytes) with its mountpoint. Returns 0 or -EINVAL
 * with strata_err set. */
int fs_handover_check(const void *state, size_t len, char *mnt, size_t cap);

/* The state was delivered: fs_run returns (after fs_pause, no request is in flight) and fs_free
 * will not unmount. */
void fs_handed_over(struct fs *f);

/*
 * Serves the /dev/fuse descriptor fd of a mount handed over by another process, described by state
 * (from fs_handover_state). fd is owned by the fs from the call on (closed on failure too). The
 * kernel's INIT is replayed to libfuse so that the session starts initialised; nothing is sent to
 * the kernel for it. opts->mountpoint is ignored (the state's is used). On fs_free after a signal,
 * the fs detaches the mount itself (umount2 MNT_DETACH as root, else fusermount3 -u -z).
 * Returns 0 and *out, or negative errno with strata_err set.
 */
int fs_adopt(struct store *store, const struct fs_opts *opts, int fd, const void *state, size_t len,
	     struct fs **out);
/* Read counters of the filesystem this process serves (a process serves at most one; all zero
 * elsewhere). Each chunk a FUSE read needs counts once: from the decoded-chunk cache, from the
 * store, or fetched (the reader waited for a registry span, its own or one it shared). fetch_us is
 * a histogram of those waits in microseconds (failed fetches included), FS_LAT_BUCKETS fixed
 * buckets: 4 per power of two (see fs_latency_bucket_us). Updated with relaxed atomics: a
 * snapshot may be off by the reads in progress. */
#define FS_LAT_BUCKETS 128
struct fs_read_stats {
	uint64_t cache_hits, store_hits, fetched, failed;
	uint64_t fetch_us[FS_LAT_BUCKETS];
};

void fs_read_stats_get(struct fs_read_stats *out);

/* The decoded layer-index cache of the filesystem this process serves: bytes and layers loaded
 * now, the cap on bytes (exceeded only by layers requests are using), layers loaded and unloaded
 * since the start. A snapshot of relaxed atomics. */
struct fs_index_stats {
	uint64_t bytes, layers, cap, loads, unloads;
};

void fs_index_stats_get(struct fs_index_stats *out);

/* The largest latency (microseconds) that falls into bucket i of fs_read_stats.fetch_us. */
uint64_t fs_latency_bucket_us(unsigned i);

/* The q-quantile (0 < q <= 1) of the fetch waits in s, as the upper bound of the bucket that holds
 * it (at most 25% above the true value); 0 when there was no fetch. */
uint64_t fs_latency_quantile_us(const struct fs_read_stats *s, double q);

/* Checks whether path is a mountpoint of a FUSE filesystem. Returns 1 with its fstype in type (cap
 * bytes), 0 when it is not, negative errno on error. */
int fs_is_fuse_mount(const char *path, char *type, size_t cap);

/* Like fs_is_fuse_mount, also returning the mount source (e.g. "strata:/var/lib/strata"). */
int fs_mount_info(const char *path, char *type, size_t cap, char *source, size_t scap);

/* ---- open files, for quota eviction (via tools/quota.c); a pin's fetch is in engine.h */

/* Takes and drops the lock op_open and release take to count open files: while it is held no
 * file can be opened, so a set of chunks to delete can be checked against fs_open_chunks() and
 * deleted before any new open sees them. Hold it briefly: opens wait. */
void fs_open_lock(struct fs *f);
void fs_open_unlock(struct fs *f);

/* With fs_open_lock held: calls fn for the digest of every chunk of every file open on the mount,
 * and every checkpoint window of their layers (duplicates possible). Stops when fn returns
 * non-zero and returns that; returns 0 otherwise. */
int fs_open_chunks(struct fs *f, int (*fn)(void *ctx, const uint8_t digest[32]), void *ctx);

#endif

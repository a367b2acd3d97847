/* SPDX-License-Identifier: Apache-2.0 */
/* The strata FUSE filesystem: read-only views of the layers in a store. */
#ifndef STRATA_FS_FS_H
#define STRATA_FS_FS_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct fetch_client;
struct fs;

struct fs_opts {
	const char *mountpoint;
	const char *source;         /* mount source shown in /proc/mounts; NULL = "strata" */
	int debug;                  /* libfuse request tracing */
	unsigned max_threads;       /* 0 = 16 */
	uint64_t chunk_cache_bytes; /* decoded-chunk cache; 0 = 64 MiB */
	struct fetch_client *fetch; /* fetches missing chunks (borrowed); NULL: misses fail with EIO */
	int background;             /* fetch every missing chunk at low priority while serving */
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

/* Asks a running fs_run to return (async-signal-safe is not guaranteed; call from a thread). */
void fs_stop(struct fs *f);

/* Unmounts (if still mounted) and frees (NULL ok). */
void fs_free(struct fs *f);

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

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Quota eviction (shared by the daemon's background evictor and `strata gc`) and pins. */
#ifndef STRATA_TOOLS_QUOTA_H
#define STRATA_TOOLS_QUOTA_H

#include <stdatomic.h>
#include <stdint.h>

struct store;
struct fs;
struct quota;

/*
 * The store's size is the bytes allocated under the store directory (store_get_stats' disk_bytes:
 * chunk blob and SST files, the other column families, WAL, manifests, logs), what `du` shows.
 * When it is above quota, quota_evict() deletes chunks until it is at most low_water percent of
 * the quota:
 *   kept       = every chunk and window of the layers of pinned images, and (with fs) every chunk
 *                of a file open on the mount and the windows of its layer;
 *   candidates = the other layers, least recently used first (store_layer_atime; never used = 0);
 * a candidate's chunks that are not kept are deleted, layer after layer (each in index order),
 * until the stored bytes deleted cover the excess, so the last layer may lose only some; then the chunk column family is compacted (so the space really
 * returns), the directory is measured again, and eviction goes on with the next layers while it
 * is still above the low-water mark. A chunk a more recently used unpinned layer shares is
 * evicted with the older layer (it is fetched again when read). Layer records and images stay:
 * evicted chunks are fetched again on demand.
 */

/* What one quota_evict() call did. */
struct quota_result {
	uint64_t quota, target;            /* the bound and the low-water mark, bytes */
	uint64_t disk_before, disk_after;  /* the store directory's size, bytes */
	uint64_t chunks, bytes, layers;    /* evicted chunks, their stored bytes, layers touched */
	int over;                          /* the store was above the quota: eviction ran */
};

#define QUOTA_LOW_WATER_DEFAULT 90

/*
 * Runs the policy above once (quota 0 = none: nothing to do). low_water is a percentage (0 =
 * default 90). fs (NULL when no mount) protects open files: each batch of deletions is checked
 * against fs_open_chunks() and deleted with fs_open_lock held, so a file opened during a pass
 * keeps every chunk that was stored when it was opened. cancel (may be NULL) stops it between
 * batches. Calls are serialized process-wide. Adds to the store counters "evictions",
 * "evicted_chunks", "evicted_bytes". Returns 0 (res filled) or negative errno (strata_err set;
 * -ECANCELED, -EBADMSG when a candidate or pinned layer's index does not decode: nothing more is
 * deleted then).
 */
int quota_evict(struct store *s, struct fs *fs, uint64_t quota, unsigned low_water,
		atomic_int *cancel, struct quota_result *res);

/* Starts the background evictor of a daemon: a thread that checks the store's size every second
 * and runs quota_evict() when it is above quota (never in a FUSE thread). store and fs are
 * borrowed and must outlive quota_stop(). Returns 0 and *out, or negative errno. */
int quota_start(struct store *s, struct fs *fs, uint64_t quota, unsigned low_water,
		struct quota **out);

/* The evictor's quota (bytes) and low-water percentage. */
uint64_t quota_bytes(const struct quota *q);
unsigned quota_low_water(const struct quota *q);

/* Stops and joins the evictor (waits for a pass under way to finish its batch); NULL ok. */
void quota_stop(struct quota *q);

#endif

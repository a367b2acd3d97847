/* SPDX-License-Identifier: Apache-2.0 */
/* Store maintenance policies as a library: quota eviction, gc and fsck (store/evict.c, gc.c,
 * fsck.c; what they share in maint.c). */
#ifndef STRATA_STORE_MAINT_H
#define STRATA_STORE_MAINT_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct index_layer;

/* How the caller follows and stops a long pass. Every member may be NULL (no hooks at all: pass
 * NULL for the struct). The callbacks run on the caller's thread, with ctx. */
struct store_maint_hooks {
	void *ctx;
	/* non-zero: stop at the next check with -ECANCELED (eviction checks between batches) */
	int (*cancelled)(void *ctx);
	/* gc and fsck: called every 4096 chunks of the chunk pass with the count so far (done 0),
	 * and once after that pass (done 1, also when it failed) */
	void (*progress)(void *ctx, uint64_t chunks, int done);
	/* fsck: one problem found, one line (borrowed for the call) */
	void (*problem)(void *ctx, const char *msg);
	/* fsck --repair: what was done about a problem, one line (borrowed for the call) */
	void (*repaired)(void *ctx, const char *msg);
};

/* What eviction needs from a mounted filesystem, without knowing it: its open-file table
 * (fs_open_lock, fs_open_unlock, fs_open_chunks in fs/fs.h), each called with ctx. */
struct store_open_files {
	void *ctx;
	void (*lock)(void *ctx);
	void (*unlock)(void *ctx);
	int (*chunks)(void *ctx, int (*fn)(void *arg, const uint8_t digest[32]), void *arg);
};

/* Decodes layer digest's index from the store. Returns 0 and *out (free with index_layer_free),
 * -ENOENT when there is no such layer, -EBADMSG (strata_err set) when its record or index does not
 * decode, or another negative errno. Thread-safe. */
int store_layer_load_index(struct store *s, const char *digest, struct index_layer **out);

/* ---- quota eviction (store/evict.c)
 *
 * The store's size is the bytes allocated under the store directory (store_get_stats' disk_bytes:
 * chunk blob and SST files, the other column families, WAL, manifests, logs), what `du` shows.
 * When it is above quota, store_evict() deletes chunks until it is at most low_water percent of
 * the quota:
 *   kept       = every chunk and window of the layers of pinned images, and (with open files)
 *                every chunk of a file open on the mount and the windows of its layer;
 *   candidates = the other layers, least recently used first (store_layer_atime; never used = 0);
 * a candidate's chunks that are not kept are deleted, layer after layer (each in index order),
 * until the stored bytes deleted cover the excess, so the last layer may lose only some; then the
 * chunk column family is compacted (so the space really returns), the directory is measured
 * again, and eviction goes on with the next layers while it is still above the low-water mark. A
 * chunk a more recently used unpinned layer shares is evicted with the older layer (it is fetched
 * again when read). Layer records and images stay: evicted chunks are fetched again on demand.
 */

/* What one store_evict() call did. */
struct store_evict_result {
	uint64_t quota, target;		  /* the bound and the low-water mark, bytes */
	uint64_t disk_before, disk_after; /* the store directory's size, bytes */
	uint64_t chunks, bytes, layers;	  /* evicted chunks, their stored bytes, layers touched */
	int over;			  /* the store was above the quota: eviction ran */
};

#define STORE_EVICT_LOW_WATER_DEFAULT 90

/*
 * Runs the policy above once (quota 0 = none: nothing to do). low_water is a percentage (0 or
 * over 100 = default 90). open (NULL when no mount) protects open files: each batch of deletions
 * is checked against open->chunks and deleted with open->lock held, so a file opened during a pass
 * keeps every chunk that was stored when it was opened. hooks->cancelled (hooks may be NULL) stops
 * it between batches. Calls are serialized process-wide. Adds to the store counters "evictions",
 * "evicted_chunks", "evicted_bytes". Returns 0 (res filled) or negative errno (strata_err set;
 * -ECANCELED, -EBADMSG when a candidate or pinned layer's index does not decode: nothing more is
 * deleted then).
 */
int store_evict(struct store *s, const struct store_open_files *open, uint64_t quota,
		unsigned low_water, const struct store_maint_hooks *hooks,
		struct store_evict_result *res);

/* Waits until an eviction pass under way (which chose its kept set already) has ended. A pin
 * calls it after store_pin_put, so that what it then fetches is kept. */
void store_evict_wait_idle(void);

/* The store's size as the quota counts it: what the directory takes on disk (the WAL holds the
 * chunks of the memtables). */
uint64_t store_evict_disk_bytes(struct store *s);

/* low_water percent of quota (0 or over 100 = STORE_EVICT_LOW_WATER_DEFAULT), without overflow. */
uint64_t store_evict_target(uint64_t quota, unsigned low_water);

/* ---- gc (store/gc.c) */

/* What one store_gc() call did. */
struct store_gc_result {
	uint64_t chunks, chunk_bytes; /* chunks no kept layer references: deleted; stored bytes */
	uint64_t layers_kept;	      /* layers an image lists */
	char **freed_layers;	      /* layer and pending records deleted, in order (owned) */
	size_t nfreed_layers;
	char bad[STORE_DIGEST_LEN]; /* on -EBADMSG: the image or layer that does not decode */
};

/*
 * Deletes what no image needs: layer records no image lists, pending layers no image names, and
 * the chunks no kept layer's index (chunks and windows) references; then compacts the chunks.
 * Holds the store's layers lock for writing while it decides and deletes layers (layer keys, then
 * images, then chunks: a layer a concurrent pull writes after the first pass is never deleted; at
 * worst some of its chunks are, and fetched again when read). An unreadable image record or a kept
 * layer that does not decode stops it before anything is deleted: -EBADMSG with res->bad set.
 * Returns 0 (res filled; free it with store_gc_result_free) or negative errno (-ECANCELED, -ENOMEM,
 * -EIO; res is freed then).
 */
int store_gc(struct store *s, const struct store_maint_hooks *hooks, struct store_gc_result *res);

/* Frees what res owns (the freed layer list; NULL and 0 after; res->bad stays). */
void store_gc_result_free(struct store_gc_result *res);

/* ---- fsck (store/fsck.c) */

/* What one store_fsck() call found. */
struct store_fsck_result {
	uint64_t chunks;  /* chunks checked */
	uint64_t bad;	  /* chunks whose bytes do not match their digest */
	uint64_t orphans; /* chunks no layer references (gc removes them) */
	uint64_t remote;  /* referenced chunks not stored yet (fetched when read) */
	uint64_t layers, images;
	uint64_t snapshots;	     /* snapshotter records checked */
	uint64_t problems, repaired; /* hooks->problem and hooks->repaired calls */
};

/*
 * Verifies the store: every layer record decodes, names its own digest and has its seq entry;
 * every chunk's bytes hash to its digest; every image's layers exist (or are pending); every
 * snapshot record parses, its parent exists and a local snapshot has its directory. Each
 * problem goes to hooks->problem. With repair, corrupt chunks are deleted (fetched again when
 * read), undecodable layer records and snapshot records, and images whose layers are missing are
 * removed, each reported
 * to hooks->repaired. Returns 0 (res filled; problems found are not an error) or negative errno
 * (-ECANCELED, -ENOMEM, -EIO with strata_err set).
 */
int store_fsck(struct store *s, int repair, const struct store_maint_hooks *hooks,
	       struct store_fsck_result *res);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The read engine's insides (struct fs_engine and its parts), shared by the files of fs/. */
#ifndef STRATA_FS_ENGINE_I_H
#define STRATA_FS_ENGINE_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"
#include "store/store.h"

struct fetch_ref;
struct index_layer;
struct index_inode;
struct index_checkpoint;
struct store_layer;
struct inflight;
struct wchunk;

/* ---- decoded chunk cache (chunkcache.c) */

struct cchunk {
	uint8_t digest[32];
	size_t len;
	int refs;		    /* protected by cache.mu */
	struct cchunk *hnext;	    /* hash chain; protected by cache.mu */
	struct cchunk *prev, *next; /* LRU list, most recent first; protected by cache.mu */
	uint8_t data[];
};

/* A chunk one reader is loading from the store; others that miss it wait for it. */
struct cache_load {
	uint8_t digest[32];
	struct cache_load *next; /* protected by cache.mu */
};

struct chunk_cache {
	pthread_mutex_t mu;
	pthread_cond_t load_cv;	  /* a load finished */
	struct cache_load *loads; /* protected by mu */
	struct cchunk **buckets;
	size_t nbuckets;
	struct cchunk lru; /* sentinel */
	uint64_t bytes, cap;
};

/* Sets up c for cap bytes. Returns 0 or -ENOMEM; fs_cache_destroy undoes it in either case. */
int fs_cache_init(struct chunk_cache *c, uint64_t cap);

/* Returns the entry for digest d, referenced (give it back with fs_cache_put), or NULL. */
struct cchunk *fs_cache_get(struct chunk_cache *c, const uint8_t d[32]);

/* Returns the entry for digest d referenced (as fs_cache_get), or NULL with *load set: the caller
 * now loads d (one store read for all readers of a chunk) and must call fs_cache_load_done(c,
 * *load) whether or not it succeeded; meanwhile other callers for d wait here. */
struct cchunk *fs_cache_get_or_load(struct chunk_cache *c, const uint8_t d[32],
				    struct cache_load *load);

/* Ends a load begun by fs_cache_get_or_load (after inserting what it loaded, if anything) and wakes
 * its waiters (who find the entry, or load it themselves). */
void fs_cache_load_done(struct chunk_cache *c, struct cache_load *load);

/* Inserts n (malloc'd; consumed in every case) and returns it referenced once for the caller; when
 * an equal entry exists, returns that one referenced instead and frees n. */
struct cchunk *fs_cache_insert(struct chunk_cache *c, struct cchunk *n);

/* Gives back a reference from fs_cache_get/fs_cache_insert; the entry may be evicted then. */
void fs_cache_put(struct chunk_cache *c, struct cchunk *e);

/* Frees every entry (none may be referenced) and the cache's own memory. */
void fs_cache_destroy(struct chunk_cache *c);

/* ---- the engine (engine.c) */

/*
 * The read engine: the layer cache, the decoded-chunk cache, the chunk writer, the spans being
 * fetched and the background completion of one store. A mount embeds one (struct fs); a pin
 * without a mount makes its own (fs_engine_create).
 */
struct fs_engine {
	struct store *store;
	struct fetch_client *fetch;
	pthread_rwlock_t layers_lock;
	struct fs_layer **layers; /* loaded layers, indexed by seq; protected by layers_lock */
	size_t layers_cap;	  /* protected by layers_lock */
	_Atomic uint64_t
		layers_bytes; /* fs_layer.bytes of the loaded layers; written under layers_lock
				     (write side), read atomically */
	uint64_t layers_max;  /* the cap on layers_bytes */
	_Atomic uint64_t layer_tick;   /* use clock for the LRU choice */
	_Atomic int64_t layer_trimmed; /* second of the last malloc_trim after unloads */
	struct chunk_cache cache;
	pthread_mutex_t inflight_mu;
	pthread_cond_t inflight_cv;
	struct inflight *inflight; /* spans being fetched (read.c); protected by inflight_mu */
	int foreground;		   /* reader fetches under way; protected by inflight_mu */
	pthread_t bg_thread;
	int bg_started;
	atomic_int bg_stop;
	_Atomic uint64_t bg_limit; /* store size background completion stays under; 0 = none */
	pthread_mutex_t w_mu;	   /* the chunk writer's queue */
	pthread_cond_t w_cv, w_idle;
	struct wchunk *w_head, *w_tail; /* verified chunks to store, oldest first (writer.c);
					   protected by w_mu */
	uint64_t w_bytes;		/* protected by w_mu */
	int w_stop;			/* protected by w_mu */
	int w_started;
	pthread_t w_thread;
	atomic_int store_full; /* chunk writes fail for lack of space */
};

/* Sets up a zeroed eng for store; starts no thread. chunk_cache_bytes and index_cache_bytes as for
 * fs_engine_create. Returns 0 or -ENOMEM; fs_engine_fini undoes it in either case. */
int fs_engine_init(struct fs_engine *eng, struct store *store, struct fetch_client *fc,
		   uint64_t chunk_cache_bytes, uint64_t index_cache_bytes);

/* Stops eng's threads (the writer writes what is queued first), unloads its layers and frees what
 * fs_engine_init set up. No layer reference may be left. */
void fs_engine_fini(struct fs_engine *eng);

/* ---- layers (layers.c) */

/*
 * Decoded layer indexes are a cache: a layer is loaded (decoded from the store) on demand and, once
 * the decoded indexes pass the cap (fs_opts.index_cache_bytes), the least recently used layers
 * that no request is using are unloaded. Its inode numbers stay valid: they carry the layer's
 * store seq, from which fs_layer_of() loads it again.
 *
 * Every struct fs_layer * is a reference: layer_get_seq(), fs_layer_load(), layer_load_wait()
 * (ops.c) and fs_layer_of() return one, and its user gives it back with fs_layer_put() when done
 * (a FUSE handler before or right after it replies; nothing keeps one past its request).
 * References are taken only under layers_lock (read side) and a layer is unloaded only under the
 * write side with no reference on it, so a referenced layer is never freed; fs_layer_put() is a
 * lock-free atomic decrement that trims the cache only while it is over its cap. Open files do not
 * pin their layer: a read of an unloaded layer loads it again.
 */
struct fs_layer {
	struct index_layer *idx;
	uint32_t seq;
	char digest[STORE_DIGEST_LEN];
	struct fetch_ref *src;		/* where missing bytes come from; NULL: nowhere */
	char windows[STORE_DIGEST_LEN]; /* index artifact windows blob, or "" */
	atomic_int warned;		/* a fetch failure was logged (log once per layer) */
	atomic_int quarantined;		/* its index does not match its blob: reads fail (EIO) */
	atomic_int verified;	  /* its record is STORE_PROV_VERIFIED (checked against its blob) */
	_Atomic uint64_t touched; /* last access second passed to the store */
	atomic_int refs;	  /* references (taken under layers_lock) */
	_Atomic uint64_t used;	  /* fs_engine.layer_tick at the last reference */
	size_t bytes;		  /* memory held: the decoded index and this struct */
	struct fs_layer *gone;	  /* unloaded, to be freed; layer_trim()'s own list */
};

/* Loads the layer with this digest from the store (or returns the loaded one). Returns 0 and *out
 * referenced (fs_layer_put), or negative errno (-ENOENT: no such layer in the store). */
int fs_layer_load(struct fs_engine *eng, const char *digest, struct fs_layer **out);

/*
 * Checks layer l, whose chunks are local or about to be, against its blob (fs/verify.c): a record
 * not built here from its blob (an index artifact's, an eStargz TOC's, a legacy one) is compared
 * with the index the verifying builder makes from the whole blob (its digest checked by the
 * download; its chunks go to the store) and its diff_id with the record's. A match marks the
 * record verified; a mismatch quarantines the layer (store record and counter, one log line, its
 * reads fail with EIO). Returns 0 (verified, now or before), -EIO when quarantined, -ESTALE when
 * the record was replaced meanwhile, or another negative errno (the blob could not be fetched:
 * nothing is concluded). Thread-safe; downloads the whole blob.
 */
int fs_layer_verify(struct fs_engine *eng, struct fs_layer *l);

/* Gives back a reference (NULL ok); l may be unloaded from then on. Lock-free unless it trims. */
void fs_layer_put(struct fs_engine *eng, struct fs_layer *l);

/*
 * Inode numbers: 1 is the mount root, 2 is layers/ (fs_i.h). A layer entry is (seq << 32) |
 * index-inode, where seq is the store's stable number for the layer (>= 1), so inode numbers are
 * derivable from the store alone and stay the same for the mount's life (and across daemon
 * restarts).
 *
 * fs_layer_of finds the layer of inode ino, loading it by seq when it is not loaded. Returns 0 with
 * *out referenced (fs_layer_put) and *node the inode's number in the layer's index; -ENOENT for
 * an inode of no layer, -ESTALE for a layer removed from the store (or removed and stored again).
 */
int fs_layer_of(struct fs_engine *eng, uint64_t ino, struct fs_layer **out, uint32_t *node);

/* The inode number of node in layer l. */
uint64_t fs_layer_ino(const struct fs_layer *l, uint32_t node);

/* Tells the store that l was used now (for the quota's LRU); at most once a second per layer. */
void fs_layer_touch(struct fs_engine *eng, struct fs_layer *l);

/* Unloads every layer at teardown: no reference may be left. */
void fs_layers_unload_all(struct fs_engine *eng);

/* Sets the cap fs_index_stats_get reports (the cap of the mount's engine). */
void fs_index_stats_cap(uint64_t cap);

/* The digests of the store's layers at one moment: what opendir of layers/ lists, and what the
 * background completion walks. */
struct digest_list {
	size_t n;
	char (*names)[STORE_DIGEST_LEN];
};

/* store_layer_list/store_pending_list callbacks adding each layer's digest to the struct
 * digest_list ctx (fs_collect_new_layer_cb: unless it is listed already). Return 0 or -ENOMEM. */
int fs_collect_layer_cb(void *ctx, const struct store_layer *sl);
int fs_collect_new_layer_cb(void *ctx, const struct store_layer *sl);

/* ---- chunk writer (writer.c) */

/* Queues a verified chunk (copied) for the writer thread. Returns 1 when queued, 0 when the
 * caller must store it itself (no writer, queue full, no memory, or fs_writer_sync set). */
int fs_writer_queue(struct fs_engine *eng, const uint8_t digest[32], const uint8_t *data,
		    size_t len);

/* Copies a queued (fetched, not yet written) chunk into buf. Returns its length, -ENOENT when it is
 * not queued, -ENOBUFS when cap is too small. */
ssize_t fs_writer_get(struct fs_engine *eng, const uint8_t digest[32], void *buf, size_t cap);

/* Waits until every queued chunk has been written (or failed). */
void fs_writer_drain(struct fs_engine *eng);

/* Starts the writer thread (on failure, logs it: reads then store their chunks themselves). */
void fs_writer_start(struct fs_engine *eng);

/* Stops the writer after it wrote everything queued, and joins it. Idempotent. */
void fs_writer_stop(struct fs_engine *eng);

/* Set (1) on a thread that must see its chunks stored when a fetch returns (a pin): its chunks are
 * not queued. Cleared with 0. Thread-local. */
void fs_writer_sync(int on);

/* 1 when the chunk is in the store, after the writer wrote it if it was queued; 0 when not;
 * negative errno. */
int fs_stored_now(struct fs_engine *eng, const uint8_t digest[32]);

/* 1 when the chunk is stored or queued to be, 0 when not, negative errno. */
int fs_chunk_local(struct fs_engine *eng, const uint8_t digest[32]);

/* Notes whether chunk writes fail for lack of space (eng->store_full), logging each change once. */
void fs_store_full(struct fs_engine *eng, int full);

/* ---- read path (read.c) */

/* Fetches the span holding chunk ci of file ino (of layer l, referenced by the caller), verifies
 * it and stores its chunks, unless a fetch under way brings it: then waits for that one. Bounded
 * by the calling read's deadline (fetch_read_begin). Returns 0 (the chunk is local, or was handed
 * over in the chunk cache when the store is full) or negative errno with strata_err set. */
int fs_fetch_shared(struct fs_engine *eng, struct fs_layer *l, const struct index_inode *ino,
		    uint32_t ci);

/* Gets the window of checkpoint cp into window (INDEX_ZRAN_WINDOW bytes): from the store, else
 * from the layer's index artifact (verified; stored unless the store is full). Returns 0 or
 * negative errno. */
int fs_get_window(struct fs_engine *eng, struct fs_layer *l, const struct index_checkpoint *cp,
		  uint8_t *window);

/* ---- read counters (stats.c) */

/* What a chunk a FUSE read needed came from, for fs_read_stats (fetched: fs_stats_fetched). */
enum fs_read_outcome { FS_READ_CACHE_HIT, FS_READ_STORE_HIT, FS_READ_FAILED };

/* Counts one chunk of a read (relaxed atomics). */
void fs_stats_count(enum fs_read_outcome what);

/* The monotonic clock in microseconds, for fs_stats_fetched. */
uint64_t fs_stats_now_us(void);

/* Counts one chunk a read waited for a fetch for, since t0_us (fs_stats_now_us). */
void fs_stats_fetched(uint64_t t0_us);

/* ---- background completion (background.c) */

/* Starts the thread that fetches every missing chunk of every layer while readers are idle
 * (fs_opts.background); on failure, logs it. */
void fs_bg_start(struct fs_engine *eng);

/* Stops the background completion thread, if it runs, and joins it. Idempotent. */
void fs_bg_stop(struct fs_engine *eng);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The read engine: layer indexes, decoded chunks and span fetches of one store, with or without a
 * mount. */
#ifndef STRATA_FS_ENGINE_H
#define STRATA_FS_ENGINE_H

#include <stdatomic.h>
#include <stdint.h>

struct store;
struct fetch_client;
struct fs;
struct fs_engine;

#define FS_CHUNK_CACHE_DEFAULT (32ull << 20) /* decoded chunks kept in memory */
#define FS_INDEX_CACHE_DEFAULT (32ull << 20) /* decoded layer indexes kept loaded */
#define FS_PIN_CHUNK_CACHE     (16ull << 20) /* enough for a pin: its chunks only pass through */

/*
 * Makes a read engine of store (borrowed; must outlive it) fetching missing bytes through fc
 * (borrowed; NULL: a missing chunk fails with EIO). chunk_cache_bytes caps the decoded-chunk cache
 * (0 = FS_CHUNK_CACHE_DEFAULT), index_cache_bytes the decoded layer indexes (0 =
 * FS_INDEX_CACHE_DEFAULT). It starts no thread: a fetch stores its chunks on the calling thread.
 * Returns 0 and *out (free with fs_engine_free), or -ENOMEM.
 */
int fs_engine_create(struct store *store, struct fetch_client *fc, uint64_t chunk_cache_bytes,
		     uint64_t index_cache_bytes, struct fs_engine **out);

/* Frees an engine made by fs_engine_create (NULL ok); no call on it may be running. Never pass a
 * mount's engine (fs_engine_of): fs_free frees that one. */
void fs_engine_free(struct fs_engine *e);

/* The read engine of a mounted fs (borrowed, valid until fs_free): fetches through it share the
 * mount's caches, chunk writer and spans in flight with the readers. */
struct fs_engine *fs_engine_of(struct fs *f);

/*
 * Fetches and stores every missing chunk and checkpoint window of layer digest (for a pin), through
 * e's fetch path (shared with the mount's readers when e is a mount's). progress (may be NULL) is
 * called with bytes of file content done and the total. Stops with -ECANCELED when *cancel (may be
 * NULL) becomes set. Returns 0 when every chunk is in the store, or negative errno with strata_err
 * set (-ENOSPC when the store is full, -EIO when the registry fails or the layer has no source).
 * Thread-safe: pins and readers may use one engine at once.
 */
int fs_fetch_layer(struct fs_engine *e, const char *digest,
		   void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
		   atomic_int *cancel);

#endif

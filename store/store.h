/* SPDX-License-Identifier: Apache-2.0 */
/* The strata store: one RocksDB per store directory holding chunks, layer indexes and images
 * (store/db.c, chunks.c, layers.c, meta.c). */
#ifndef STRATA_STORE_STORE_H
#define STRATA_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* 2: chunk values carry a CRC-32C (store_i.h); a version-1 store is upgraded when opened (its
 * chunks stay readable), and older strata refuse a version-2 store. */
#define STORE_FORMAT_VERSION 2
#define STORE_DIGEST_LEN     72 /* "sha256:" + 64 hex + NUL */

struct store;

struct store_opts {
	uint64_t block_cache_bytes; /* 0 = 32 MiB */
	int read_only_ok;	    /* reserved */
};

/*
 * Opens (creating if missing) the store in dir: takes an exclusive lock on <dir>/lock, opens the
 * RocksDB in <dir>/db, and checks the format version. opts may be NULL.
 * Returns 0 and *out (close with store_close), or negative errno with strata_err set:
 * -EBUSY "store DIR is in use by another strata process (pid N)", -EPROTO "store DIR has format
 * version N; this strata supports version M", -EIO with RocksDB's message.
 */
int store_open(const char *dir, const struct store_opts *opts, struct store **out);

/* Flushes and closes (NULL ok). Releases the lock. */
void store_close(struct store *s);

/* The directory the store was opened at. Borrowed. */
const char *store_dir(const struct store *s);

/* ---- chunks (content-addressed by the sha256 of their uncompressed bytes). Thread-safe. */

/* Chunk writes stop while the store's filesystem has less than this free (RocksDB's room to flush
 * and compact): store_chunk_put then returns -ENOSPC without writing. */
#define STORE_SPACE_RESERVE (48ull << 20)

/* Stores a chunk unless present. digest must be sha256(data); asserted in debug builds.
 * Returns 1 if it was written, 0 if it existed, negative errno on error: -ENOSPC (strata_err set,
 * not logged) when fewer than STORE_SPACE_RESERVE bytes would be left free, or RocksDB reports a
 * full disk; writes resume by themselves when space is freed. */
int store_chunk_put(struct store *s, const uint8_t digest[32], const void *data, size_t len);

/* Reads a chunk into buf (cap bytes) and checks it: its stored CRC-32C (computed when it entered
 * the store, from bytes verified against the digest), or for a chunk stored before CRCs its sha256.
 * Returns its length, -ENOENT when absent, -EBADMSG when the stored bytes do not match (logged),
 * -ENOBUFS when cap is too small, or -EIO. */
ssize_t store_chunk_get(struct store *s, const uint8_t digest[32], void *buf, size_t cap);

/* 1 when present, 0 when not, negative errno on error. */
int store_chunk_has(struct store *s, const uint8_t digest[32]);

/* Deletes n chunks (absent ones are fine) in one write batch. A deleted chunk that is still
 * referenced is fetched again when read. digests is borrowed. Thread-safe. Returns 0 or negative
 * errno. */
int store_chunk_del(struct store *s, const uint8_t (*digests)[32], size_t n);

/* Calls fn for every stored chunk in digest order with its stored (encoded) size and, when verify
 * is set, the result of verifying it (otherwise 0): 0 when its bytes decode and hash to its key,
 * -EBADMSG when they do not (also for a key that is not 32 bytes long, even without verify: digest
 * then holds its first bytes, zero-padded). A bad chunk never stops the scan. digest is borrowed
 * for the call. Stops early when fn returns non-zero and returns that; returns 0 when all were
 * visited, or negative errno (-ENOMEM, -EIO). Reads a consistent snapshot; thread-safe. */
int store_chunk_scan(struct store *s, int verify,
		     int (*fn)(void *ctx, const uint8_t digest[32], size_t stored_len,
			       int verified),
		     void *ctx);

/* Stored (encoded) size of a chunk: its value length in the chunks column family, which is what
 * deleting it gives back after a compaction. Returns the size, -ENOENT when absent, or -EIO. */
ssize_t store_chunk_stored_len(struct store *s, const uint8_t digest[32]);

/* Compacts the chunks column family (and garbage-collects its blob files) so deleted chunks give
 * their space back. Blocks until done; thread-safe. Returns 0 or negative errno. */
int store_chunk_compact(struct store *s);

/* ---- layers */

/* Where a layer record's index came from, weakest first after LEGACY (DESIGN.md "Trust"). A
 * record serves an image only when it is VERIFIED or that image's own source vouches for the same
 * index bytes (tools/pull.c). */
enum store_prov {
	STORE_PROV_LEGACY = 0,	 /* written before provenance was recorded: trusted least */
	STORE_PROV_ARTIFACT = 1, /* an index artifact: prov_digest = its manifest digest */
	STORE_PROV_TOC = 2,	 /* an eStargz TOC the layer descriptor's annotation names:
				    prov_digest = the TOC digest */
	STORE_PROV_VERIFIED = 3, /* built here from the streamed blob: blob digest and diff_id
				    checked */
};

/* "legacy", "artifact", "toc", "verified". */
const char *store_prov_name(enum store_prov p);

#define STORE_WHY_LEN 256

struct store_layer {
	char digest[STORE_DIGEST_LEN];	/* compressed blob digest: the key */
	char diff_id[STORE_DIGEST_LEN]; /* sha256 of the uncompressed tar */
	char media_type[128];
	uint64_t size;	   /* compressed blob size */
	uint64_t tar_size; /* uncompressed size */
	uint32_t seq;	   /* stable per-store number, assigned on first put; never 0 */
	uint32_t chunk_size;
	char source[512];		/* repository to fetch missing bytes from: "domain/path" */
	char windows[STORE_DIGEST_LEN]; /* an index artifact's windows blob in source, or "" */
	enum store_prov prov;
	char prov_digest[STORE_DIGEST_LEN];  /* ARTIFACT: manifest digest; TOC: TOC digest; or "" */
	char signer[STORE_DIGEST_LEN];	     /* ARTIFACT: fingerprint of the key that signed it */
	char index_digest[STORE_DIGEST_LEN]; /* sha256 of the encoded index (set by the store) */
	char quarantine[STORE_WHY_LEN];	     /* why the layer is quarantined, or "" */
};

/*
 * Stores a layer record with its encoded index, provenance as info says (info->quarantine is
 * ignored: a put clears a quarantine). info->index_digest is set to sha256(index). When a record of
 * the digest exists with the same index bytes its seq is kept; otherwise (new, or other index bytes)
 * the next seq is assigned and the old one dropped, so inodes of an old index go stale and never
 * point into a new tree. info->seq is updated. Deletes a pending record of the digest in the same
 * write, which is synced. Returns 0 or negative errno.
 */
int store_layer_put(struct store *s, struct store_layer *info, const void *index, size_t len);

/* Reads a layer. index/len may be NULL (info only); otherwise *index is malloc'd (caller frees).
 * Records written before provenance existed read as STORE_PROV_LEGACY (index_digest computed).
 * Returns 0, -ENOENT, -EBADMSG (corrupt record) or -EIO. */
int store_layer_get(struct store *s, const char *digest, struct store_layer *info, void **index,
		    size_t *len);

/* Finds the digest of the layer with this seq. Returns 0, -ENOENT or -EIO. */
int store_layer_by_seq(struct store *s, uint32_t seq, char digest[STORE_DIGEST_LEN]);

/* Calls fn for every layer in digest order; stops early when fn returns non-zero and returns that.
 * Returns 0 when all were visited, or negative errno. */
int store_layer_list(struct store *s, int (*fn)(void *ctx, const struct store_layer *l), void *ctx);

/* Calls fn for the key of every layer record, also records that do not parse (store_layer_get
 * then returns -EBADMSG for them). key is borrowed for the call. Stops early as store_layer_list
 * does. Returns 0 when all were visited, or negative errno. */
int store_layer_keys(struct store *s, int (*fn)(void *ctx, const char *key), void *ctx);

/* Deletes a layer record (not its chunks) and its seq entry; a record that does not parse is
 * deleted without one. Returns 0 (also when absent) or negative errno. */
int store_layer_del(struct store *s, const char *digest);

/*
 * The record of digest, still with seq, has been checked against its whole blob and matched:
 * marks it STORE_PROV_VERIFIED keeping its index bytes and seq; diff_id and tar_size (from the
 * blob) replace the recorded ones. Synced. Returns 0, -ESTALE when the record is gone or has
 * another seq now (replaced meanwhile), or negative errno.
 */
int store_layer_set_verified(struct store *s, const char *digest, uint32_t seq, const char *diff_id,
			     uint64_t tar_size);

/*
 * The record of digest, still with seq, does not match its blob: marks it quarantined with the
 * reason why (truncated to STORE_WHY_LEN), keeping seq and index; the counter
 * "quarantined_layers" counts quarantined records (a delete or a put of the record takes it off).
 * Synced. Returns 0 (also when already quarantined), -ESTALE as store_layer_set_verified, or
 * negative errno.
 */
int store_layer_quarantine(struct store *s, const char *digest, uint32_t seq, const char *why);

/* A number that changes whenever a layer record is put, deleted, replaced, verified or
 * quarantined by this process (pending writes that delete a record included): a cache of decoded
 * layers revalidates its entries when it moved. Thread-safe, lock-free. */
uint64_t store_layers_generation(struct store *s);

/* Pulls hold the layers lock for reading while they make layers and their image visible, gc for
 * writing while it decides which layers no image needs and deletes them: a layer written by a pull
 * is never deleted before its image record exists. A pthread rwlock of the handle (not taken by
 * the store's own functions); unlock what you locked. */
void store_layers_rdlock(struct store *s);
void store_layers_wrlock(struct store *s);
void store_layers_unlock(struct store *s);

/* ---- pending layers (store/pending.c): registered by pulls, their index not built yet (a daemon
 * streams them). A pending record holds the layer's info (digest, chunk_size, and the first
 * claim's media_type, size, diff_id and source) and the claims of every image that registered it:
 * what each image's manifest and config say of the blob. None is trusted: the stream verifies the
 * blob against its digest and checks each claim. A digest has a layer record or a pending record,
 * never both. */

#define STORE_PENDING_MAX_CLAIMS 32

struct store_claim {
	char image[512];  /* the image reference that registered the layer */
	char source[512]; /* its repository, "domain/path" */
	char media_type[128];
	uint64_t size;
	char diff_id[STORE_DIGEST_LEN]; /* its config's diff_id, or "" */
};

/*
 * Registers a pending layer for image: adds the claim {image, info->source, info->media_type,
 * info->size, info->diff_id} to the pending record of info->digest (replacing that image's earlier
 * claim; past STORE_PENDING_MAX_CLAIMS the oldest goes), creating the record from info when there
 * is none. A layer record of the digest is deleted in the same write (its seq too: its inodes go
 * stale): the stream replaces it. Synced. Wakes store_pending_wait. Returns 0 or negative errno.
 */
int store_pending_put(struct store *s, const struct store_layer *info, const char *image);

/* Reads a pending layer's info (info may be NULL). Returns 0, -ENOENT, -EBADMSG or -EIO. */
int store_pending_get(struct store *s, const char *digest, struct store_layer *info);

/* Reads a pending layer's claims, oldest first: *out is malloc'd (caller frees), *n of them
 * (records written before claims existed give one claim from their info, image ""). Returns 0,
 * -ENOENT, -EBADMSG or -EIO. */
int store_pending_claims(struct store *s, const char *digest, struct store_claim **out, size_t *n);

/* Deletes a pending record. Returns 0 (also when absent) or negative errno. */
int store_pending_del(struct store *s, const char *digest);

/* Calls fn for every pending layer in digest order; stops early as store_layer_list does. */
int store_pending_list(struct store *s, int (*fn)(void *ctx, const struct store_layer *l),
		       void *ctx);

/* Wakes store_pending_wait as a pending-record write would, writing nothing. */
void store_pending_notify(struct store *s);

/* Returns the number of pending-record writes so far in this process; when it equals seen, waits
 * up to timeout_ms for the next one first. Thread-safe. */
uint64_t store_pending_wait(struct store *s, uint64_t seen, int timeout_ms);

/* ---- images: normalized reference -> JSON record (the caller defines the JSON) */

/* Stores (replacing) the record for ref. Synced. Returns 0 or negative errno. */
int store_image_put(struct store *s, const char *ref, const char *json);

/* Returns 0 and a malloc'd NUL-terminated *json, -ENOENT, or -EIO. */
int store_image_get(struct store *s, const char *ref, char **json);

/* Returns 0 (also when absent) or negative errno. */
int store_image_del(struct store *s, const char *ref);

/* Calls fn for every image in reference order; stops early as store_layer_list does. */
int store_image_list(struct store *s, int (*fn)(void *ctx, const char *ref, const char *json),
		     void *ctx);

/* ---- meta: pins, per-layer last access, store-wide counters (the meta column family) */

/* Pins the image ref (a normalized reference): quota eviction never touches its layers' chunks.
 * Synced. Returns 0 or negative errno. */
int store_pin_put(struct store *s, const char *ref);

/* Unpins ref. Returns 0 (also when it was not pinned) or negative errno. */
int store_pin_del(struct store *s, const char *ref);

/* 1 when ref is pinned, 0 when not, negative errno on error. */
int store_pin_has(struct store *s, const char *ref);

/* Calls fn for every pinned reference in order (ref borrowed for the call); stops early as
 * store_layer_list does. Returns 0 when all were visited, or negative errno. */
int store_pin_list(struct store *s, int (*fn)(void *ctx, const char *ref), void *ctx);

/* Records that the layer was used at time now (seconds since the epoch). Cheap and thread-safe:
 * the time is kept in memory and written to the meta column family at most once a minute per
 * layer (and at store_close), so a crash loses at most a minute of access times. Returns 0 or
 * negative errno (-ENOMEM; a failed write is logged once and retried at the next touch). */
int store_layer_touch(struct store *s, const char *digest, uint64_t now);

/* The layer's last access time (seconds), the newest of memory and store; 0 when it was never
 * touched. Thread-safe. Returns 0 or negative errno (-EIO). */
int store_layer_atime(struct store *s, const char *digest, uint64_t *when);

/* Adds delta to the persistent counter name (e.g. "evicted_chunks"). Serialized internally;
 * written without sync (a crash may lose the last additions). Returns 0 or negative errno. */
int store_counter_add(struct store *s, const char *name, uint64_t delta);

/* Reads counter name (0 when never written). Returns 0 or negative errno. */
int store_counter_get(struct store *s, const char *name, uint64_t *value);

/* ---- snapshots (store/snapshots.c): the containerd snapshotter's records, key -> JSON (snap/
 * defines the JSON), in their own column family; each snapshot's directories live under
 * <store>/STORE_SNAP_DIR/<id>/. Thread-safe; writes are synced. */

#define STORE_SNAP_DIR "snapshots"

/* Returns 0 and a malloc'd NUL-terminated *json, -ENOENT, or -EIO. */
int store_snap_get(struct store *s, const char *key, char **json);

/* Stores (replacing) the record of key. Returns 0 or negative errno. */
int store_snap_put(struct store *s, const char *key, const char *json);

/* Deletes from's record and stores to's in one write (a commit). Returns 0 or negative errno. */
int store_snap_rename(struct store *s, const char *from, const char *to, const char *json);

/* Deletes key's record. Returns 0 (also when absent) or negative errno. */
int store_snap_del(struct store *s, const char *key);

/* Calls fn for every record in key order (both borrowed for the call); stops early when fn returns
 * non-zero and returns that. Returns 0 when all were visited, or negative errno. */
int store_snap_list(struct store *s, int (*fn)(void *ctx, const char *key, const char *json),
		    void *ctx);

/* Allocates the next snapshot id (1, 2, ...; never reused). Returns 0 or negative errno. */
int store_snap_next_id(struct store *s, uint64_t *id);

/* "<store>/snapshots/<id>" into buf (cap bytes; id 0: "<store>/snapshots"). Returns 0, or
 * -ENAMETOOLONG. */
int store_snap_dir(const struct store *s, uint64_t id, char *buf, size_t cap);

/* ---- statistics */

struct store_stats {
	uint64_t chunks;	 /* estimated number of chunks */
	uint64_t chunk_bytes;	 /* estimated live bytes on disk for chunks (incl. blob files) */
	uint64_t disk_bytes;	 /* bytes allocated under the store directory (WAL included) */
	uint64_t memtable_bytes; /* chunk bytes in memtables (also in the WAL, so in disk_bytes) */
};

int store_get_stats(struct store *s, struct store_stats *st);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The store's private parts: the handle, its column families and key layout, shared helpers. */
#ifndef STRATA_STORE_STORE_I_H
#define STRATA_STORE_STORE_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <rocksdb/c.h>

#include "store.h"

enum { CF_DEFAULT, CF_CHUNKS, CF_LAYERS, CF_IMAGES, CF_META, CF_SNAPSHOTS, CF_COUNT };

/* A chunk value is one codec byte and the payload. RAW and ZSTD (format 1) are checked with
 * sha256 on every read; RAW_CRC and ZSTD_CRC (format 2) carry the CRC-32C of their payload (4
 * bytes, little endian, after the codec byte), computed when the chunk entered the store from
 * bytes checked against its sha256: a read checks the CRC; fsck and scans check the sha256. */
enum { CODEC_RAW = 0, CODEC_ZSTD = 1, CODEC_RAW_CRC = 2, CODEC_ZSTD_CRC = 3 };
#define CODEC_CRC_HEADER 5 /* codec byte + CRC-32C */

#define KEY_FORMAT	   "format"
#define KEY_NEXT_SEQ	   "next_seq"
#define SEQ_PREFIX	   "seq/"
#define PENDING_PREFIX	   "pending/"
#define PIN_PREFIX	   "pin/"
#define ATIME_PREFIX	   "atime/"
#define COUNTER_PREFIX	   "counter/"
#define QUARANTINE_COUNTER "quarantined_layers"
#define ATIME_WRITE_EVERY  60 /* seconds between writes of one layer's access time */

/* A layer's access time as last touched and as last written to the meta column family. */
struct atime {
	char digest[STORE_DIGEST_LEN];
	uint64_t mem, written;
};

struct store {
	char *dir;
	int lock_fd;
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_options_t *cf_opts[CF_COUNT];
	rocksdb_block_based_table_options_t *table;
	rocksdb_cache_t *cache;
	rocksdb_column_family_handle_t *cf[CF_COUNT];
	rocksdb_readoptions_t *ro;
	rocksdb_readoptions_t *ro_chunk; /* chunk reads: no RocksDB checksums (the CRC-32C is ours) */
	rocksdb_writeoptions_t *wo;	 /* WAL, unsynced: chunks (refetched if lost) */
	rocksdb_writeoptions_t *wo_sync; /* WAL, synced: records that acknowledge work */
	pthread_mutex_t seq_mutex;	 /* serializes layer and pending record changes */
	_Atomic uint64_t layers_gen;	 /* store_layers_generation() */
	pthread_rwlock_t layers_lock;	 /* store_layers_rdlock/wrlock: pulls vs gc */
	pthread_mutex_t pending_mu;
	pthread_cond_t pending_cv;
	uint64_t pending_gen;	    /* pending-record writes; protected by pending_mu */
	pthread_mutex_t meta_mutex; /* serializes counter updates; guards atimes */
	struct atime *atimes;	    /* protected by meta_mutex */
	size_t natimes, capatimes;  /* protected by meta_mutex */
	int atime_warned;	    /* protected by meta_mutex */
};

/* db.c: converts a RocksDB error string (freed here) to -EIO with the message kept (strata_err
 * set, logged), or -ENOSPC (set, not logged). what says what failed. */
int store_db_error(char *err, const char *what);

/* db.c: iterates column family cf, calling fn(ctx, key, klen, val, vlen) until it returns non-zero
 * (then returns that). Returns 0 when all were visited, or negative errno. */
int store_iterate(struct store *s, int cf,
		  int (*fn)(void *ctx, const char *k, size_t kl, const char *v, size_t vl),
		  void *ctx);

/* ---- layer records shared by layers.c and pending.c (with seq_mutex held where it says) */

/* The JSON header of a layer or pending record for info; claims (borrowed, may be NULL) is added
 * as "claims". Returns a malloc'd string or NULL. */
char *store_layer_json(const struct store_layer *info, json_t *claims);

/* Parses a record value (u32 LE header length, JSON header, encoded index). info, index and claims
 * may be NULL; *index (malloc'd, *len bytes) is the encoded index; *claims (new reference, or NULL
 * when the record has none) its "claims". Returns 0, -EBADMSG or -ENOMEM. */
int store_layer_parse(const char *val, size_t vlen, struct store_layer *info, void **index,
		      size_t *len, json_t **claims);

/* Builds a record value: the header json and len bytes of index. Returns a malloc'd buffer (*vlen
 * bytes) or NULL. */
char *store_layer_value(const char *json, const void *index, size_t len, size_t *vlen);

/* With seq_mutex held: adds to wb the deletion of digest's layer record, its seq entry (when it
 * names digest), its access time and, for a quarantined record, one off the quarantine counter.
 * old (may be NULL) receives the record's info. Returns 1 when there was a record, 0 when none, or
 * negative errno (a record that does not parse is deleted, returns 1 with old zeroed). */
int store_layer_stage_delete(struct store *s, rocksdb_writebatch_t *wb, const char *digest,
			     struct store_layer *old);

/* With seq_mutex held: adds delta (may be negative) to the quarantine counter in wb, reading its
 * current value. Returns 0 or negative errno. */
int store_quarantine_count_stage(struct store *s, rocksdb_writebatch_t *wb, int64_t delta);

/* A layer record changed: moves store_layers_generation(). */
void store_layers_changed(struct store *s);

/* meta.c: writes every access time not written yet (at close). */
void store_atime_flush(struct store *s);

/* meta.c: adds the deletion of digest's access time to wb and forgets its in-memory one. */
void store_atime_forget(struct store *s, rocksdb_writebatch_t *wb, const char *digest);

#endif

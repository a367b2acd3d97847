/* SPDX-License-Identifier: Apache-2.0 */
/* The RocksDB-backed store: column families for chunks, layers, images and metadata. */
#include "store.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <rocksdb/c.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "util/log.h"
#include "util/sha256.h"
#include "util/thread.h"

enum { CF_DEFAULT, CF_CHUNKS, CF_LAYERS, CF_IMAGES, CF_META, CF_COUNT };
static const char *const cf_names[CF_COUNT] = { "default", "chunks", "layers", "images", "meta" };

enum { CODEC_RAW = 0, CODEC_ZSTD = 1 };

#define KEY_FORMAT "format"
#define KEY_NEXT_SEQ "next_seq"
#define SEQ_PREFIX "seq/"
#define PENDING_PREFIX "pending/"
#define PIN_PREFIX "pin/"
#define ATIME_PREFIX "atime/"
#define COUNTER_PREFIX "counter/"
#define ATIME_WRITE_EVERY 60 /* seconds between writes of one layer's access time */

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
	rocksdb_writeoptions_t *wo;      /* WAL, unsynced: chunks (refetched if lost) */
	rocksdb_writeoptions_t *wo_sync; /* WAL, synced: records that acknowledge work */
	pthread_mutex_t seq_mutex;       /* serializes seq assignment in store_layer_put */
	pthread_mutex_t pending_mu;
	pthread_cond_t pending_cv;
	uint64_t pending_gen;            /* pending-record writes; protected by pending_mu */
	pthread_mutex_t meta_mutex;      /* serializes counter updates; guards atimes */
	struct atime *atimes;            /* protected by meta_mutex */
	size_t natimes, capatimes;       /* protected by meta_mutex */
	int atime_warned;                /* protected by meta_mutex */
};

static void atime_flush(struct store *s);

/* Converts a RocksDB error string (freed here) to -EIO with the message kept, or -ENOSPC. */
static int db_error(char *err, const char *what)
{
	const char *msg = err ? err : "unknown error";
	int rc = EIO;

	if (strstr(msg, "No space left") || strstr(msg, "NoSpace"))
		rc = ENOSPC;
	strata_err(rc, "%s: %s", what, msg);
	if (rc != ENOSPC) /* a full disk is reported once, by whoever handles it */
		strata_log(LOG_ERR, "store: %s: %s", what, msg);
	rocksdb_free(err);
	return -rc;
}

static int take_lock(struct store *s)
{
	char path[4096], pid[32];
	int n;

	snprintf(path, sizeof(path), "%s/lock", s->dir);
	s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s->lock_fd < 0)
		return strata_err(errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		n = (int)pread(s->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		close(s->lock_fd);
		s->lock_fd = -1;
		if (e == EWOULDBLOCK)
			return strata_err(EBUSY, "store %s is in use by another strata process%s%s%s",
					  s->dir, *pid ? " (pid " : "", pid, *pid ? ")" : "");
		return strata_err(e, "cannot lock %s: %s", path, strerror(e));
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, pid, (size_t)n, 0) != n)
		strata_log(LOG_WARNING, "cannot record pid in %s: %s", path, strerror(errno));
	return 0;
}

static int check_format(struct store *s)
{
	char *err = NULL;
	size_t len = 0;
	char *val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], KEY_FORMAT, strlen(KEY_FORMAT), &len,
				   &err);
	char buf[32];
	int rc = 0;

	if (err)
		return db_error(err, "read format version");
	if (!val) {
		int n = snprintf(buf, sizeof(buf), "%d", STORE_FORMAT_VERSION);

		rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], KEY_FORMAT, strlen(KEY_FORMAT), buf,
			       (size_t)n, &err);
		return err ? db_error(err, "write format version") : 0;
	}
	snprintf(buf, sizeof(buf), "%.*s", (int)(len < 31 ? len : 31), val);
	if (atoi(buf) != STORE_FORMAT_VERSION)
		rc = strata_err(EPROTO, "store %s has format version %s; this strata supports version %d",
				s->dir, buf, STORE_FORMAT_VERSION);
	rocksdb_free(val);
	return rc;
}

int store_open(const char *dir, const struct store_opts *opts, struct store **out)
{
	struct store *s;
	char path[4096];
	char *err = NULL;
	const rocksdb_options_t *cfo[CF_COUNT];
	uint64_t cache = opts && opts->block_cache_bytes ? opts->block_cache_bytes : 32ull << 20;
	int rc;

	*out = NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return strata_err(errno, "cannot create store %s: %s", dir, strerror(errno));
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	pthread_mutex_init(&s->seq_mutex, NULL);
	pthread_mutex_init(&s->pending_mu, NULL);
	pthread_cond_init(&s->pending_cv, NULL);
	pthread_mutex_init(&s->meta_mutex, NULL);
	s->dir = strdup(dir);
	if (!s->dir) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = take_lock(s);
	if (rc < 0)
		goto fail;

	s->cache = rocksdb_cache_create_lru(cache);
	s->table = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_block_cache(s->table, s->cache);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(s->table, 1);
	rocksdb_block_based_options_set_filter_policy(s->table,
						      rocksdb_filterpolicy_create_bloom(10));
	s->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(s->opts, 1);
	rocksdb_options_set_create_missing_column_families(s->opts, 1);
	rocksdb_options_set_keep_log_file_num(s->opts, 2);
	rocksdb_options_set_max_log_file_size(s->opts, 1 << 20);
	rocksdb_options_set_info_log_level(s->opts, 2 /* WARN */);
	rocksdb_options_set_max_open_files(s->opts, 256);
	/* Chunks go through the WAL; a log is deleted only once every column family flushed past
	 * it, and the small ones (meta, images) rarely fill a memtable: past this size RocksDB
	 * flushes them, so the WAL stays bounded (and visible to the quota). */
	rocksdb_options_set_max_total_wal_size(s->opts, 64u << 20);
	rocksdb_options_increase_parallelism(s->opts, 2);
	/* No preallocation (the WAL would take 1.1 write buffers, ~70 MiB, from the start): the
	 * directory's size is what the store holds, which is what the quota bounds. */
	{
		rocksdb_options_t *o = rocksdb_options_create();

		rocksdb_get_options_from_string(s->opts, "allow_fallocate=false", o, &err);
		if (err) {
			strata_log(LOG_WARNING, "store: cannot turn preallocation off: %s", err);
			rocksdb_free(err);
			err = NULL;
			rocksdb_options_destroy(o);
		} else {
			rocksdb_options_destroy(s->opts);
			s->opts = o;
		}
	}
	for (int i = 0; i < CF_COUNT; i++) {
		s->cf_opts[i] = rocksdb_options_create_copy(s->opts);
		rocksdb_options_set_block_based_table_factory(s->cf_opts[i], s->table);
		if (i == CF_CHUNKS) {
			/* Chunk values are already zstd-compressed: keep them out of the LSM tree. */
			rocksdb_options_set_enable_blob_files(s->cf_opts[i], 1);
			rocksdb_options_set_min_blob_size(s->cf_opts[i], 1024);
			rocksdb_options_set_enable_blob_gc(s->cf_opts[i], 1);
			rocksdb_options_set_compression(s->cf_opts[i], rocksdb_no_compression);
			rocksdb_options_set_blob_compression_type(s->cf_opts[i], rocksdb_no_compression);
			/* Bound what the quota cannot see on disk yet, and what a restart replays from
			 * the WAL (RocksDB's default is 64 MiB). */
			rocksdb_options_set_write_buffer_size(s->cf_opts[i], 16u << 20);
		} else {
			rocksdb_options_set_compression(s->cf_opts[i], rocksdb_lz4_compression);
		}
		cfo[i] = s->cf_opts[i];
	}
	snprintf(path, sizeof(path), "%s/db", dir);
	s->db = rocksdb_open_column_families(s->opts, path, CF_COUNT, cf_names, cfo, s->cf, &err);
	if (err) {
		rc = db_error(err, "cannot open store database");
		strata_err_prefix(-rc, "store %s", dir);
		goto fail;
	}
	s->ro = rocksdb_readoptions_create();
	s->wo = rocksdb_writeoptions_create();
	/* Chunks go through the WAL unsynced: a killed process (kill -9, OOM) keeps every chunk it
	 * stored, a power loss may lose the last ones (content-addressed: fetched again). Without the
	 * WAL a kill lost every chunk since the last memtable flush (up to 64 MiB of fetched data;
	 * tests/integration/test_crash.py). Records that acknowledge work go through wo_sync. */
	s->wo_sync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(s->wo_sync, 1);
	rc = check_format(s);
	if (rc < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	store_close(s);
	return rc;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->db) {
		char *err = NULL;
		rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();

		atime_flush(s);
		rocksdb_flushoptions_set_wait(fo, 1);
		/* Every column family, chunks included (they are in the WAL too): after a clean close
		 * the next open has no log to replay (a replay holds memtables full of chunks and layer
		 * records: 80 MiB peak measured after a pull of 20 images). */
		for (int i = 0; i < CF_COUNT; i++) {
			if (!s->cf[i])
				continue;
			err = NULL;
			rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
			if (err) {
				strata_log(LOG_WARNING, "store %s: flush at close: %s (the log is "
					   "replayed at the next open)", s->dir, err);
				rocksdb_free(err);
			}
		}
		rocksdb_flushoptions_destroy(fo);
		for (int i = 0; i < CF_COUNT; i++) {
			if (s->cf[i])
				rocksdb_column_family_handle_destroy(s->cf[i]);
		}
		rocksdb_close(s->db);
	}
	if (s->ro)
		rocksdb_readoptions_destroy(s->ro);
	if (s->wo)
		rocksdb_writeoptions_destroy(s->wo);
	if (s->wo_sync)
		rocksdb_writeoptions_destroy(s->wo_sync);
	for (int i = 0; i < CF_COUNT; i++) {
		if (s->cf_opts[i])
			rocksdb_options_destroy(s->cf_opts[i]);
	}
	if (s->opts)
		rocksdb_options_destroy(s->opts);
	if (s->table)
		rocksdb_block_based_options_destroy(s->table);
	if (s->cache)
		rocksdb_cache_destroy(s->cache);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	pthread_mutex_destroy(&s->seq_mutex);
	pthread_mutex_destroy(&s->pending_mu);
	pthread_cond_destroy(&s->pending_cv);
	pthread_mutex_destroy(&s->meta_mutex);
	free(s->atimes);
	free(s->dir);
	free(s);
}

const char *store_dir(const struct store *s)
{
	return s->dir;
}

/* ---------------------------------------------------------------- chunks */

int store_chunk_has(struct store *s, const uint8_t digest[32])
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v =
		rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_CHUNKS], (const char *)digest, 32, &err);

	if (err)
		return db_error(err, "chunk lookup");
	if (!v)
		return 0;
	rocksdb_pinnableslice_destroy(v);
	return 1;
}

/* Whether the store's filesystem keeps STORE_SPACE_RESERVE free after len more bytes. RocksDB
 * needs that room to flush memtables and compact; a flush that fails for lack of space puts it in
 * a hard error state that a running process does not reliably leave (chunks written without WAL
 * meanwhile can be lost), so chunk writes stop before that. */
static int space_left(struct store *s, size_t len)
{
	struct statvfs sv;

	if (fstatvfs(s->lock_fd, &sv) < 0)
		return 1;
	return (uint64_t)sv.f_bavail * sv.f_frsize >= STORE_SPACE_RESERVE + len;
}

int store_chunk_put(struct store *s, const uint8_t digest[32], const void *data, size_t len)
{
	size_t cap = ZSTD_compressBound(len) + 1;
	char *val;
	size_t vlen;
	char *err = NULL;
	int rc;

#ifndef NDEBUG
	{
		uint8_t check[32];

		util_sha256(data, len, check);
		assert(memcmp(check, digest, 32) == 0);
	}
#endif
	rc = store_chunk_has(s, digest);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	if (!space_left(s, len))
		return strata_err(ENOSPC, "store %s is full (less than %llu MiB free)", s->dir,
				  (unsigned long long)(STORE_SPACE_RESERVE >> 20));
	val = malloc(cap);
	if (!val)
		return -ENOMEM;
	vlen = ZSTD_compress(val + 1, cap - 1, data, len, 1);
	if (!ZSTD_isError(vlen) && vlen < len) {
		val[0] = CODEC_ZSTD;
		vlen += 1;
	} else {
		val[0] = CODEC_RAW;
		memcpy(val + 1, data, len);
		vlen = len + 1;
	}
	rocksdb_put_cf(s->db, s->wo, s->cf[CF_CHUNKS], (const char *)digest, 32, val, vlen, &err);
	free(val);
	if (err)
		return db_error(err, "chunk write");
	return 1;
}

ssize_t store_chunk_get(struct store *s, const uint8_t digest[32], void *buf, size_t cap)
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v =
		rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_CHUNKS], (const char *)digest, 32, &err);
	const char *val;
	size_t vlen, n;
	uint8_t check[32];
	char hex[UTIL_DIGEST_STR_LEN];
	ssize_t rc;

	if (err)
		return db_error(err, "chunk read");
	if (!v)
		return -ENOENT;
	val = rocksdb_pinnableslice_value(v, &vlen);
	if (vlen < 1) {
		rc = -EBADMSG;
		goto corrupt;
	}
	if (val[0] == CODEC_RAW) {
		n = vlen - 1;
		if (n > cap) {
			rc = -ENOBUFS;
			goto out;
		}
		memcpy(buf, val + 1, n);
	} else if (val[0] == CODEC_ZSTD) {
		n = ZSTD_decompress(buf, cap, val + 1, vlen - 1);
		if (ZSTD_isError(n)) {
			rc = ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -ENOBUFS : -EBADMSG;
			if (rc == -ENOBUFS)
				goto out;
			goto corrupt;
		}
	} else {
		rc = -EBADMSG;
		goto corrupt;
	}
	util_sha256(buf, n, check);
	if (memcmp(check, digest, 32) != 0) {
		rc = -EBADMSG;
		goto corrupt;
	}
	rc = (ssize_t)n;
	goto out;
corrupt:
	util_digest_format(digest, hex);
	strata_err(EBADMSG, "stored chunk %s is corrupt", hex);
	strata_log(LOG_ERR, "store: stored chunk %s is corrupt (digest mismatch)", hex);
out:
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

int store_chunk_del(struct store *s, const uint8_t (*digests)[32], size_t n)
{
	rocksdb_writebatch_t *wb;
	char *err = NULL;

	if (n == 0)
		return 0;
	wb = rocksdb_writebatch_create();
	for (size_t i = 0; i < n; i++)
		rocksdb_writebatch_delete_cf(wb, s->cf[CF_CHUNKS], (const char *)digests[i], 32);
	rocksdb_write(s->db, s->wo, wb, &err);
	rocksdb_writebatch_destroy(wb);
	return err ? db_error(err, "chunk delete") : 0;
}

/* Verifies one stored chunk value against its key, using *buf (grown as needed) for the
 * decompressed bytes. Returns 0, -EBADMSG or -ENOMEM. */
static int verify_chunk(const uint8_t digest[32], const char *val, size_t vlen, void **buf,
			size_t *cap)
{
	uint8_t check[32];
	unsigned long long n;
	size_t got;

	if (vlen < 1)
		return -EBADMSG;
	if (val[0] == CODEC_RAW) {
		util_sha256(val + 1, vlen - 1, check);
		return memcmp(check, digest, 32) == 0 ? 0 : -EBADMSG;
	}
	if (val[0] != CODEC_ZSTD)
		return -EBADMSG;
	n = ZSTD_getFrameContentSize(val + 1, vlen - 1);
	if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > (1ull << 30))
		return -EBADMSG;
	if (n > *cap || !*buf) {
		void *nb = realloc(*buf, n ? (size_t)n : 1);

		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = n ? (size_t)n : 1;
	}
	got = ZSTD_decompress(*buf, *cap, val + 1, vlen - 1);
	if (ZSTD_isError(got) || got != n)
		return -EBADMSG;
	util_sha256(*buf, got, check);
	return memcmp(check, digest, 32) == 0 ? 0 : -EBADMSG;
}

int store_chunk_scan(struct store *s, int verify,
		     int (*fn)(void *ctx, const uint8_t digest[32], size_t stored_len, int verified),
		     void *ctx)
{
	const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(s->db);
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it;
	void *buf = NULL;
	size_t cap = 0;
	char *err = NULL;
	int rc = 0;

	rocksdb_readoptions_set_snapshot(ro, snap);
	rocksdb_readoptions_set_fill_cache(ro, 0);
	it = rocksdb_create_iterator_cf(s->db, ro, s->cf[CF_CHUNKS]);
	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);
		uint8_t digest[32] = { 0 };
		int ok;

		memcpy(digest, k, kl < 32 ? kl : 32);
		ok = kl != 32 ? -EBADMSG : verify ? verify_chunk(digest, v, vl, &buf, &cap) : 0;
		if (ok == -ENOMEM) {
			rc = -ENOMEM;
			break;
		}
		rc = fn(ctx, digest, vl, ok);
		if (rc)
			break;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	rocksdb_release_snapshot(s->db, snap);
	free(buf);
	if (err)
		return db_error(err, "chunk scan");
	return rc;
}

int store_chunk_compact(struct store *s)
{
	static const char *const key[] = { "blob_garbage_collection_age_cutoff" };
	static const char *const full[] = { "1.0" }, *const dflt[] = { "0.25" };
	char *err = NULL;

	/* Chunks go through the WAL: flush every column family first, so that the log files that
	 * still hold deleted chunks are obsolete and deleted too. */
	{
		rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();

		rocksdb_flushoptions_set_wait(fo, 1);
		for (int i = 0; i < CF_COUNT; i++) {
			rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
			if (err) {
				strata_log(LOG_WARNING, "store: flush before compaction: %s", err);
				rocksdb_free(err);
				err = NULL;
			}
		}
		rocksdb_flushoptions_destroy(fo);
	}
	/* Relocate every blob file's live values during this compaction, not just the oldest
	 * quarter, so the space of deleted chunks is returned now. */
	rocksdb_set_options_cf(s->db, s->cf[CF_CHUNKS], 1, key, full, &err);
	if (err) {
		strata_log(LOG_WARNING, "store: cannot widen blob GC for compaction: %s", err);
		rocksdb_free(err);
		err = NULL;
	}
	{
		rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();

		/* kForce: rewrite the bottommost files too; they hold the references to the blob
		 * files that an automatic compaction (with the default cutoff) left behind */
		rocksdb_compactoptions_set_bottommost_level_compaction(co, 2);
		rocksdb_compact_range_cf_opt(s->db, s->cf[CF_CHUNKS], co, NULL, 0, NULL, 0);
		rocksdb_compactoptions_destroy(co);
	}
	rocksdb_set_options_cf(s->db, s->cf[CF_CHUNKS], 1, key, dflt, &err);
	if (err)
		return db_error(err, "restore blob GC options");
	return 0;
}

/* ---------------------------------------------------------------- layers */

/* Layer record: u32 LE length of the JSON header, the JSON header, then the encoded index. */
static char *layer_json(const struct store_layer *l)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s}", "digest", l->digest,
			      "diff_id", l->diff_id, "media_type", l->media_type, "size",
			      (json_int_t)l->size, "tar_size", (json_int_t)l->tar_size, "seq",
			      (json_int_t)l->seq, "chunk_size", (json_int_t)l->chunk_size, "source",
			      l->source, "windows", l->windows);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int parse_layer(const char *val, size_t vlen, struct store_layer *info, void **index,
		       size_t *len)
{
	uint32_t jlen;
	json_t *o;
	json_error_t jerr;
	const char *digest = NULL, *diff_id = NULL, *mt = NULL, *source = NULL, *windows = NULL;
	json_int_t size = 0, tar_size = 0, seq = 0, cs = 0;

	if (vlen < 4)
		return strata_err(EBADMSG, "corrupt layer record");
	memcpy(&jlen, val, 4);
	if (jlen > vlen - 4)
		return strata_err(EBADMSG, "corrupt layer record");
	o = json_loadb(val + 4, jlen, 0, &jerr);
	if (!o || json_unpack(o, "{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "digest", &digest, "diff_id",
			      &diff_id, "media_type", &mt, "size", &size, "tar_size", &tar_size,
			      "seq", &seq, "chunk_size", &cs) < 0 ||
	    json_unpack(o, "{s?s, s?s}", "source", &source, "windows", &windows) < 0) {
		json_decref(o);
		return strata_err(EBADMSG, "corrupt layer record");
	}
	if (info) {
		memset(info, 0, sizeof(*info));
		copy_str(info->digest, sizeof(info->digest), digest);
		copy_str(info->diff_id, sizeof(info->diff_id), diff_id);
		copy_str(info->media_type, sizeof(info->media_type), mt);
		info->size = (uint64_t)size;
		info->tar_size = (uint64_t)tar_size;
		info->seq = (uint32_t)seq;
		info->chunk_size = (uint32_t)cs;
		copy_str(info->source, sizeof(info->source), source);
		copy_str(info->windows, sizeof(info->windows), windows);
	}
	json_decref(o);
	if (index) {
		size_t n = vlen - 4 - jlen;

		*index = malloc(n ? n : 1);
		if (!*index)
			return -ENOMEM;
		memcpy(*index, val + 4 + jlen, n);
		*len = n;
	}
	return 0;
}

int store_layer_get(struct store *s, const char *digest, struct store_layer *info, void **index,
		    size_t *len)
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_LAYERS], digest,
							   strlen(digest), &err);
	const char *val;
	size_t vlen;
	int rc;

	if (err)
		return db_error(err, "layer read");
	if (!v)
		return strata_err(ENOENT, "layer %s is not in the store", digest);
	val = rocksdb_pinnableslice_value(v, &vlen);
	rc = parse_layer(val, vlen, info, index, len);
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

static void seq_key(uint32_t seq, char key[8])
{
	memcpy(key, SEQ_PREFIX, 4);
	key[4] = (char)(seq >> 24);
	key[5] = (char)(seq >> 16);
	key[6] = (char)(seq >> 8);
	key[7] = (char)seq;
}

int store_layer_put(struct store *s, struct store_layer *info, const void *index, size_t len)
{
	struct store_layer old;
	char *err = NULL, *json = NULL, *val = NULL, *next = NULL;
	rocksdb_writebatch_t *wb = NULL;
	size_t nlen = 0, jlen;
	uint32_t seq, u32;
	char key[8];
	int rc;

	pthread_mutex_lock(&s->seq_mutex);
	rc = store_layer_get(s, info->digest, &old, NULL, NULL);
	if (rc == 0) {
		seq = old.seq;
	} else if (rc == -ENOENT) {
		next = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], KEY_NEXT_SEQ, strlen(KEY_NEXT_SEQ),
				      &nlen, &err);
		if (err) {
			rc = db_error(err, "read layer sequence");
			goto out;
		}
		seq = 1;
		if (next && nlen == 4)
			memcpy(&seq, next, 4);
	} else {
		goto out;
	}
	strata_err_clear();
	info->seq = seq;
	json = layer_json(info);
	if (!json) {
		rc = -ENOMEM;
		goto out;
	}
	jlen = strlen(json);
	val = malloc(4 + jlen + len);
	if (!val) {
		rc = -ENOMEM;
		goto out;
	}
	u32 = (uint32_t)jlen;
	memcpy(val, &u32, 4);
	memcpy(val + 4, json, jlen);
	memcpy(val + 4 + jlen, index, len);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, s->cf[CF_LAYERS], info->digest, strlen(info->digest), val,
				  4 + jlen + len);
	{
		char pkey[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN];
		int n = snprintf(pkey, sizeof(pkey), PENDING_PREFIX "%s", info->digest);

		rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], pkey, (size_t)n);
	}
	if (rc == -ENOENT) {
		u32 = seq + 1;
		seq_key(seq, key);
		rocksdb_writebatch_put_cf(wb, s->cf[CF_META], key, sizeof(key), info->digest,
					  strlen(info->digest));
		rocksdb_writebatch_put_cf(wb, s->cf[CF_META], KEY_NEXT_SEQ, strlen(KEY_NEXT_SEQ),
					  (const char *)&u32, 4);
	}
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rc = err ? db_error(err, "layer write") : 0;
out:
	pthread_mutex_unlock(&s->seq_mutex);
	if (wb)
		rocksdb_writebatch_destroy(wb);
	if (next)
		rocksdb_free(next);
	free(json);
	free(val);
	return rc;
}

int store_layer_by_seq(struct store *s, uint32_t seq, char digest[STORE_DIGEST_LEN])
{
	char key[8], *err = NULL;
	size_t len = 0;
	char *val;

	seq_key(seq, key);
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, sizeof(key), &len, &err);
	if (err)
		return db_error(err, "layer sequence read");
	if (!val)
		return -ENOENT;
	snprintf(digest, STORE_DIGEST_LEN, "%.*s", (int)len, val);
	rocksdb_free(val);
	return 0;
}

int store_layer_del(struct store *s, const char *digest)
{
	struct store_layer info;
	rocksdb_writebatch_t *wb;
	char key[8], *err = NULL;
	int rc = store_layer_get(s, digest, &info, NULL, NULL);

	if (rc == -ENOENT)
		return 0;
	if (rc < 0 && rc != -EBADMSG)
		return rc;
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, s->cf[CF_LAYERS], digest, strlen(digest));
	{
		char akey[sizeof(ATIME_PREFIX) + STORE_DIGEST_LEN];
		int n = snprintf(akey, sizeof(akey), ATIME_PREFIX "%s", digest);

		rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], akey, (size_t)n);
		pthread_mutex_lock(&s->meta_mutex);
		for (size_t i = 0; i < s->natimes; i++) {
			if (strcmp(s->atimes[i].digest, digest) == 0) {
				s->atimes[i] = s->atimes[--s->natimes];
				break;
			}
		}
		pthread_mutex_unlock(&s->meta_mutex);
	}
	if (rc == 0) {
		char other[STORE_DIGEST_LEN];

		/* Only drop the seq entry when it points back at this layer. */
		if (store_layer_by_seq(s, info.seq, other) == 0 && strcmp(other, digest) == 0) {
			seq_key(info.seq, key);
			rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], key, sizeof(key));
		}
	}
	strata_err_clear();
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rocksdb_writebatch_destroy(wb);
	return err ? db_error(err, "layer delete") : 0;
}

/* Iterates a column family, calling fn(ctx, key, klen, val, vlen) until it returns non-zero. */
static int iterate(struct store *s, int cf,
		   int (*fn)(void *ctx, const char *k, size_t kl, const char *v, size_t vl), void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[cf]);
	char *err = NULL;
	int rc = 0;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		rc = fn(ctx, k, kl, v, vl);
		if (rc)
			break;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err)
		return db_error(err, "iterate");
	return rc;
}

struct layer_iter {
	int (*fn)(void *ctx, const struct store_layer *l);
	void *ctx;
};

static int layer_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct layer_iter *li = ctx;
	struct store_layer info;

	(void)k;
	(void)kl;
	if (parse_layer(v, vl, &info, NULL, NULL) < 0) {
		strata_log(LOG_WARNING, "store: skipping corrupt layer record %.*s", (int)kl, k);
		return 0;
	}
	return li->fn(li->ctx, &info);
}

int store_layer_list(struct store *s, int (*fn)(void *ctx, const struct store_layer *l), void *ctx)
{
	struct layer_iter li = { fn, ctx };

	return iterate(s, CF_LAYERS, layer_iter_cb, &li);
}

struct key_iter {
	int (*fn)(void *ctx, const char *key);
	void *ctx;
};

static int key_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct key_iter *ki = ctx;
	char *key = strndup(k, kl);
	int rc = -ENOMEM;

	(void)v;
	(void)vl;
	if (key)
		rc = ki->fn(ki->ctx, key);
	free(key);
	return rc;
}

int store_layer_keys(struct store *s, int (*fn)(void *ctx, const char *key), void *ctx)
{
	struct key_iter ki = { fn, ctx };

	return iterate(s, CF_LAYERS, key_iter_cb, &ki);
}

/* ---------------------------------------------------------------- pending layers */

void store_pending_notify(struct store *s)
{
	pthread_mutex_lock(&s->pending_mu);
	s->pending_gen++;
	pthread_cond_broadcast(&s->pending_cv);
	pthread_mutex_unlock(&s->pending_mu);
}

static int pending_key(const char *digest, char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN])
{
	return snprintf(key, sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN, PENDING_PREFIX "%s", digest);
}

int store_pending_put(struct store *s, const struct store_layer *info)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *json, *val;
	int klen = pending_key(info->digest, key);
	size_t jlen;
	uint32_t u32;

	json = layer_json(info);
	if (!json)
		return -ENOMEM;
	jlen = strlen(json);
	val = malloc(4 + jlen);
	if (!val) {
		free(json);
		return -ENOMEM;
	}
	u32 = (uint32_t)jlen;
	memcpy(val, &u32, 4);
	memcpy(val + 4, json, jlen);
	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)klen, val, 4 + jlen, &err);
	free(json);
	free(val);
	if (err)
		return db_error(err, "pending layer write");
	store_pending_notify(s);
	return 0;
}

int store_pending_get(struct store *s, const char *digest, struct store_layer *info)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *val;
	int klen = pending_key(digest, key);
	size_t len = 0;
	int rc;

	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)klen, &len, &err);
	if (err)
		return db_error(err, "pending layer read");
	if (!val)
		return -ENOENT;
	rc = parse_layer(val, len, info, NULL, NULL);
	rocksdb_free(val);
	return rc;
}

int store_pending_del(struct store *s, const char *digest)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL;
	int klen = pending_key(digest, key);

	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)klen, &err);
	if (err)
		return db_error(err, "pending layer delete");
	store_pending_notify(s);
	return 0;
}

int store_pending_list(struct store *s, int (*fn)(void *ctx, const struct store_layer *l),
		       void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_META]);
	const size_t plen = strlen(PENDING_PREFIX);
	char *err = NULL;
	int rc = 0;

	for (rocksdb_iter_seek(it, PENDING_PREFIX, plen); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		struct store_layer info;
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < plen || memcmp(k, PENDING_PREFIX, plen) != 0)
			break;
		if (parse_layer(v, vl, &info, NULL, NULL) < 0) {
			strata_log(LOG_WARNING, "store: skipping corrupt pending record %.*s", (int)kl, k);
			continue;
		}
		rc = fn(ctx, &info);
		if (rc)
			break;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err)
		return db_error(err, "pending layer list");
	return rc;
}

uint64_t store_pending_wait(struct store *s, uint64_t seen, int timeout_ms)
{
	struct timespec until;
	uint64_t gen;

	util_deadline_in(&until, timeout_ms);
	pthread_mutex_lock(&s->pending_mu);
	while (s->pending_gen == seen) {
		if (pthread_cond_timedwait(&s->pending_cv, &s->pending_mu, &until) == ETIMEDOUT)
			break;
	}
	gen = s->pending_gen;
	pthread_mutex_unlock(&s->pending_mu);
	return gen;
}

/* ---------------------------------------------------------------- images */

int store_image_put(struct store *s, const char *ref, const char *json)
{
	char *err = NULL;

	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_IMAGES], ref, strlen(ref), json, strlen(json),
		       &err);
	return err ? db_error(err, "image write") : 0;
}

int store_image_get(struct store *s, const char *ref, char **json)
{
	char *err = NULL;
	size_t len = 0;
	char *val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_IMAGES], ref, strlen(ref), &len, &err);

	if (err)
		return db_error(err, "image read");
	if (!val)
		return -ENOENT;
	*json = strndup(val, len);
	rocksdb_free(val);
	return *json ? 0 : -ENOMEM;
}

int store_image_del(struct store *s, const char *ref)
{
	char *err = NULL;

	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_IMAGES], ref, strlen(ref), &err);
	return err ? db_error(err, "image delete") : 0;
}

struct image_iter {
	int (*fn)(void *ctx, const char *ref, const char *json);
	void *ctx;
};

static int image_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct image_iter *ii = ctx;
	char *ref = strndup(k, kl), *json = strndup(v, vl);
	int rc = -ENOMEM;

	if (ref && json)
		rc = ii->fn(ii->ctx, ref, json);
	free(ref);
	free(json);
	return rc;
}

int store_image_list(struct store *s, int (*fn)(void *ctx, const char *ref, const char *json),
		     void *ctx)
{
	struct image_iter ii = { fn, ctx };

	return iterate(s, CF_IMAGES, image_iter_cb, &ii);
}

/* ---------------------------------------------------------------- meta */

ssize_t store_chunk_stored_len(struct store *s, const uint8_t digest[32])
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v =
		rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_CHUNKS], (const char *)digest, 32, &err);
	size_t vlen = 0;

	if (err)
		return db_error(err, "chunk lookup");
	if (!v)
		return -ENOENT;
	rocksdb_pinnableslice_value(v, &vlen);
	rocksdb_pinnableslice_destroy(v);
	return (ssize_t)vlen;
}

/* Builds "<prefix><name>" in key (cap bytes). Returns its length, or -ENAMETOOLONG. */
static int meta_key(char *key, size_t cap, const char *prefix, const char *name)
{
	int n = snprintf(key, cap, "%s%s", prefix, name);

	if (n < 0 || (size_t)n >= cap)
		return strata_err(ENAMETOOLONG, "name too long: %.64s...", name);
	return n;
}

int store_pin_put(struct store *s, const char *ref)
{
	char key[4096], *err = NULL;
	int n = meta_key(key, sizeof(key), PIN_PREFIX, ref);

	if (n < 0)
		return n;
	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)n, "", 0, &err);
	return err ? db_error(err, "pin write") : 0;
}

int store_pin_del(struct store *s, const char *ref)
{
	char key[4096], *err = NULL;
	int n = meta_key(key, sizeof(key), PIN_PREFIX, ref);

	if (n < 0)
		return n;
	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)n, &err);
	return err ? db_error(err, "pin delete") : 0;
}

int store_pin_has(struct store *s, const char *ref)
{
	char key[4096], *err = NULL;
	int n = meta_key(key, sizeof(key), PIN_PREFIX, ref);
	rocksdb_pinnableslice_t *v;

	if (n < 0)
		return n;
	v = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)n, &err);
	if (err)
		return db_error(err, "pin read");
	if (!v)
		return 0;
	rocksdb_pinnableslice_destroy(v);
	return 1;
}

int store_pin_list(struct store *s, int (*fn)(void *ctx, const char *ref), void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_META]);
	size_t plen = strlen(PIN_PREFIX);
	char *err = NULL;
	int rc = 0;

	for (rocksdb_iter_seek(it, PIN_PREFIX, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);
		char *ref;

		if (kl < plen || memcmp(k, PIN_PREFIX, plen) != 0)
			break;
		ref = strndup(k + plen, kl - plen);
		if (!ref) {
			rc = -ENOMEM;
			break;
		}
		rc = fn(ctx, ref);
		free(ref);
		if (rc)
			break;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err)
		return db_error(err, "pin list");
	return rc;
}

/* Writes one access time. Caller holds meta_mutex. */
static int atime_write(struct store *s, struct atime *a)
{
	char key[sizeof(ATIME_PREFIX) + STORE_DIGEST_LEN], val[8], *err = NULL;
	int n = snprintf(key, sizeof(key), ATIME_PREFIX "%s", a->digest);

	for (int i = 0; i < 8; i++)
		val[i] = (char)(a->mem >> (8 * i));
	rocksdb_put_cf(s->db, s->wo, s->cf[CF_META], key, (size_t)n, val, 8, &err);
	if (err) {
		int rc = db_error(err, "access time write");

		if (rc != -ENOSPC && !s->atime_warned++)
			strata_log(LOG_WARNING, "store: cannot record layer access times: %s",
				   strata_errmsg(rc));
		return rc;
	}
	s->atime_warned = 0;
	a->written = a->mem;
	return 0;
}

/* Writes every access time not written yet (at close). */
static void atime_flush(struct store *s)
{
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (s->atimes[i].mem != s->atimes[i].written)
			atime_write(s, &s->atimes[i]);
	}
	pthread_mutex_unlock(&s->meta_mutex);
}

int store_layer_touch(struct store *s, const char *digest, uint64_t now)
{
	struct atime *a = NULL;
	int rc = 0;

	if (strlen(digest) >= STORE_DIGEST_LEN)
		return -EINVAL;
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (strcmp(s->atimes[i].digest, digest) == 0) {
			a = &s->atimes[i];
			break;
		}
	}
	if (!a) {
		if (s->natimes == s->capatimes) {
			size_t cap = s->capatimes ? s->capatimes * 2 : 64;
			struct atime *na = realloc(s->atimes, cap * sizeof(*na));

			if (!na) {
				pthread_mutex_unlock(&s->meta_mutex);
				return -ENOMEM;
			}
			s->atimes = na;
			s->capatimes = cap;
		}
		a = &s->atimes[s->natimes++];
		memset(a, 0, sizeof(*a));
		snprintf(a->digest, sizeof(a->digest), "%s", digest);
	}
	if (now > a->mem)
		a->mem = now;
	if (a->mem >= a->written + ATIME_WRITE_EVERY)
		rc = atime_write(s, a);
	pthread_mutex_unlock(&s->meta_mutex);
	return rc;
}

int store_layer_atime(struct store *s, const char *digest, uint64_t *when)
{
	char key[sizeof(ATIME_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *val;
	size_t len = 0;
	uint64_t mem = 0, disk = 0;
	int n;

	if (strlen(digest) >= STORE_DIGEST_LEN)
		return -EINVAL;
	n = snprintf(key, sizeof(key), ATIME_PREFIX "%s", digest);
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (strcmp(s->atimes[i].digest, digest) == 0) {
			mem = s->atimes[i].mem;
			break;
		}
	}
	pthread_mutex_unlock(&s->meta_mutex);
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)n, &len, &err);
	if (err)
		return db_error(err, "access time read");
	if (val && len == 8) {
		for (int i = 0; i < 8; i++)
			disk |= (uint64_t)(uint8_t)val[i] << (8 * i);
	}
	if (val)
		rocksdb_free(val);
	*when = mem > disk ? mem : disk;
	return 0;
}

int store_counter_add(struct store *s, const char *name, uint64_t delta)
{
	char key[256], buf[8];
	uint64_t v;
	int n = meta_key(key, sizeof(key), COUNTER_PREFIX, name), rc;
	char *err = NULL;

	if (n < 0)
		return n;
	pthread_mutex_lock(&s->meta_mutex);
	rc = store_counter_get(s, name, &v);
	if (rc == 0) {
		v += delta;
		for (int i = 0; i < 8; i++)
			buf[i] = (char)(v >> (8 * i));
		rocksdb_put_cf(s->db, s->wo, s->cf[CF_META], key, (size_t)n, buf, 8, &err);
		if (err)
			rc = db_error(err, "counter write");
	}
	pthread_mutex_unlock(&s->meta_mutex);
	return rc;
}

int store_counter_get(struct store *s, const char *name, uint64_t *value)
{
	char key[256], *err = NULL, *val;
	size_t len = 0;
	int n = meta_key(key, sizeof(key), COUNTER_PREFIX, name);

	if (n < 0)
		return n;
	*value = 0;
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)n, &len, &err);
	if (err)
		return db_error(err, "counter read");
	if (val && len == 8) {
		for (int i = 0; i < 8; i++)
			*value |= (uint64_t)(uint8_t)val[i] << (8 * i);
	}
	if (val)
		rocksdb_free(val);
	return 0;
}

/* ---------------------------------------------------------------- stats */

static uint64_t prop(struct store *s, int cf, const char *name)
{
	uint64_t v = 0;

	if (rocksdb_property_int_cf(s->db, s->cf[cf], name, &v) != 0)
		return 0;
	return v;
}

/* Bytes allocated on disk under path (SST and blob files, the WAL, manifests, temporaries). */
static uint64_t dir_bytes(const char *path, int depth)
{
	DIR *d = opendir(path);
	struct dirent *e;
	uint64_t total = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char sub[4096];
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		if (lstat(sub, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < 4)
			total += dir_bytes(sub, depth + 1);
		else if (S_ISREG(st.st_mode))
			total += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return total;
}

int store_get_stats(struct store *s, struct store_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->chunks = prop(s, CF_CHUNKS, "rocksdb.estimate-num-keys");
	st->chunk_bytes = prop(s, CF_CHUNKS, "rocksdb.total-blob-file-size") +
			  prop(s, CF_CHUNKS, "rocksdb.total-sst-files-size") +
			  prop(s, CF_CHUNKS, "rocksdb.cur-size-all-mem-tables");
	st->disk_bytes = dir_bytes(s->dir, 0);
	st->memtable_bytes = prop(s, CF_CHUNKS, "rocksdb.cur-size-all-mem-tables");
	return 0;
}

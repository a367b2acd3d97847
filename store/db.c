/* SPDX-License-Identifier: Apache-2.0 */
/* The store database: opening RocksDB with its options and column families, closing, statistics. */
#include "store_i.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

static const char *const cf_names[CF_COUNT] = { "default", "chunks", "layers",
						"images",  "meta",   "snapshots" };

int store_db_error(char *err, const char *what)
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
			return strata_err(EBUSY,
					  "store %s is in use by another strata process%s%s%s",
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
	char *val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], KEY_FORMAT, strlen(KEY_FORMAT),
				   &len, &err);
	char buf[32];
	int rc = 0;

	if (err)
		return store_db_error(err, "read format version");
	if (!val) {
		int n = snprintf(buf, sizeof(buf), "%d", STORE_FORMAT_VERSION);

		rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], KEY_FORMAT, strlen(KEY_FORMAT),
			       buf, (size_t)n, &err);
		return err ? store_db_error(err, "write format version") : 0;
	}
	snprintf(buf, sizeof(buf), "%.*s", (int)(len < 31 ? len : 31), val);
	rocksdb_free(val);
	if (atoi(buf) == 1 && strcmp(buf, "1") == 0) {
		/* Version 1 differs only in chunks without a CRC, which stay readable: upgrade, so an
		 * older strata does not take the new chunk values for corrupt ones. */
		int n = snprintf(buf, sizeof(buf), "%d", STORE_FORMAT_VERSION);

		rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], KEY_FORMAT, strlen(KEY_FORMAT),
			       buf, (size_t)n, &err);
		return err ? store_db_error(err, "write format version") : 0;
	}
	if (atoi(buf) != STORE_FORMAT_VERSION)
		rc = strata_err(EPROTO,
				"store %s has format version %s; this strata supports versions 1 "
				"and %d",
				s->dir, buf, STORE_FORMAT_VERSION);
	return rc;
}

/* The database-wide options: block cache, bloom filters, bounded logs and WAL. */
static void set_db_options(struct store *s, uint64_t cache)
{
	char *err = NULL;

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
}

/* Each column family's options (a copy of the database's); chunks get blob files. */
static void set_cf_options(struct store *s, const rocksdb_options_t *cfo[CF_COUNT])
{
	for (int i = 0; i < CF_COUNT; i++) {
		s->cf_opts[i] = rocksdb_options_create_copy(s->opts);
		rocksdb_options_set_block_based_table_factory(s->cf_opts[i], s->table);
		if (i == CF_CHUNKS) {
			/* Chunk values are already zstd-compressed: keep them out of the LSM tree. */
			rocksdb_options_set_enable_blob_files(s->cf_opts[i], 1);
			rocksdb_options_set_min_blob_size(s->cf_opts[i], 1024);
			rocksdb_options_set_enable_blob_gc(s->cf_opts[i], 1);
			rocksdb_options_set_compression(s->cf_opts[i], rocksdb_no_compression);
			rocksdb_options_set_blob_compression_type(s->cf_opts[i],
								  rocksdb_no_compression);
			/* Bound what the quota cannot see on disk yet, and what a restart replays from
			 * the WAL (RocksDB's default is 64 MiB). */
			rocksdb_options_set_write_buffer_size(s->cf_opts[i], 16u << 20);
		} else {
			rocksdb_options_set_compression(s->cf_opts[i], rocksdb_lz4_compression);
		}
		cfo[i] = s->cf_opts[i];
	}
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
	pthread_rwlock_init(&s->layers_lock, NULL);
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

	set_db_options(s, cache);
	set_cf_options(s, cfo);
	snprintf(path, sizeof(path), "%s/db", dir);
	s->db = rocksdb_open_column_families(s->opts, path, CF_COUNT, cf_names, cfo, s->cf, &err);
	if (err) {
		rc = store_db_error(err, "cannot open store database");
		strata_err_prefix(-rc, "store %s", dir);
		goto fail;
	}
	s->ro = rocksdb_readoptions_create();
	/* A chunk read checks the CRC-32C in the value (or, for a version-1 value, its sha256):
	 * RocksDB's own checksums of the same bytes (its blob CRC, in software in Debian's build)
	 * would only check them twice. fsck re-verifies every chunk with sha256. */
	s->ro_chunk = rocksdb_readoptions_create();
	rocksdb_readoptions_set_verify_checksums(s->ro_chunk, 0);
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

		store_atime_flush(s);
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
				strata_log(LOG_WARNING,
					   "store %s: flush at close: %s (the log is "
					   "replayed at the next open)",
					   s->dir, err);
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
	if (s->ro_chunk)
		rocksdb_readoptions_destroy(s->ro_chunk);
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
	pthread_rwlock_destroy(&s->layers_lock);
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

int store_iterate(struct store *s, int cf,
		  int (*fn)(void *ctx, const char *k, size_t kl, const char *v, size_t vl),
		  void *ctx)
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
		return store_db_error(err, "iterate");
	return rc;
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
		if (depth == 0 && !strcmp(e->d_name, STORE_SNAP_DIR))
			continue; /* containers' writable layers: not the store's to bound */
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

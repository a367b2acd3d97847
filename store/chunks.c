/* SPDX-License-Identifier: Apache-2.0 */
/* Chunks: content-addressed by the sha256 of their uncompressed bytes, stored zstd or raw. */
#include "store_i.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "util/crc32c.h"
#include "util/log.h"
#include "util/sha256.h"

int store_chunk_has(struct store *s, const uint8_t digest[32])
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_CHUNKS],
							   (const char *)digest, 32, &err);

	if (err)
		return store_db_error(err, "chunk lookup");
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
	size_t cap = ZSTD_compressBound(len) + CODEC_CRC_HEADER;
	char *val;
	uint32_t crc;
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
	vlen = ZSTD_compress(val + CODEC_CRC_HEADER, cap - CODEC_CRC_HEADER, data, len, 1);
	if (!ZSTD_isError(vlen) && vlen < len) {
		val[0] = CODEC_ZSTD_CRC;
	} else {
		val[0] = CODEC_RAW_CRC;
		memcpy(val + CODEC_CRC_HEADER, data, len);
		vlen = len;
	}
	/* data was checked against digest by whoever hands it over (fetch, stream, build, repair);
	 * the CRC of what is written stands for that check from now on */
	crc = util_crc32c(0, val + CODEC_CRC_HEADER, vlen);
	val[1] = (char)(crc & 0xff);
	val[2] = (char)((crc >> 8) & 0xff);
	val[3] = (char)((crc >> 16) & 0xff);
	val[4] = (char)(crc >> 24);
	vlen += CODEC_CRC_HEADER;
	rocksdb_put_cf(s->db, s->wo, s->cf[CF_CHUNKS], (const char *)digest, 32, val, vlen, &err);
	free(val);
	if (err)
		return store_db_error(err, "chunk write");
	return 1;
}

/* The CRC-32C a version-2 chunk value carries; 0 and *payload, *plen set when val is one with a
 * matching CRC, -EBADMSG when its CRC does not match or it is too short. */
static int crc_payload(const char *val, size_t vlen, const char **payload, size_t *plen)
{
	const uint8_t *h = (const uint8_t *)val;
	uint32_t want;

	if (vlen < CODEC_CRC_HEADER)
		return -EBADMSG;
	want = (uint32_t)h[1] | (uint32_t)h[2] << 8 | (uint32_t)h[3] << 16 | (uint32_t)h[4] << 24;
	*payload = val + CODEC_CRC_HEADER;
	*plen = vlen - CODEC_CRC_HEADER;
	return util_crc32c(0, *payload, *plen) == want ? 0 : -EBADMSG;
}

/* Decodes a chunk value into buf (cap bytes): -ENOBUFS when it does not fit, -EBADMSG when it does
 * not decode, else its length and *checked = 1 when its CRC was checked (else the caller must
 * check the digest). */
static ssize_t decode_value(const char *val, size_t vlen, void *buf, size_t cap, int *checked)
{
	const char *p;
	size_t plen, n;
	int zstd;

	*checked = 0;
	if (vlen < 1)
		return -EBADMSG;
	switch (val[0]) {
	case CODEC_RAW:
	case CODEC_ZSTD:
		p = val + 1;
		plen = vlen - 1;
		zstd = val[0] == CODEC_ZSTD;
		break;
	case CODEC_RAW_CRC:
	case CODEC_ZSTD_CRC:
		if (crc_payload(val, vlen, &p, &plen) < 0)
			return -EBADMSG;
		*checked = 1;
		zstd = val[0] == CODEC_ZSTD_CRC;
		break;
	default:
		return -EBADMSG;
	}
	if (!zstd) {
		if (plen > cap)
			return -ENOBUFS;
		memcpy(buf, p, plen);
		return (ssize_t)plen;
	}
	n = ZSTD_decompress(buf, cap, p, plen);
	if (ZSTD_isError(n))
		return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -ENOBUFS : -EBADMSG;
	return (ssize_t)n;
}

ssize_t store_chunk_get(struct store *s, const uint8_t digest[32], void *buf, size_t cap)
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v = rocksdb_get_pinned_cf(s->db, s->ro_chunk, s->cf[CF_CHUNKS],
							   (const char *)digest, 32, &err);
	const char *val;
	size_t vlen;
	uint8_t check[32];
	char hex[UTIL_DIGEST_STR_LEN];
	ssize_t rc;
	int checked;

	if (err)
		return store_db_error(err, "chunk read");
	if (!v)
		return -ENOENT;
	val = rocksdb_pinnableslice_value(v, &vlen);
	rc = decode_value(val, vlen, buf, cap, &checked);
	if (rc == -ENOBUFS)
		goto out;
	if (rc >= 0 && !checked) {
		util_sha256(buf, (size_t)rc, check);
		if (memcmp(check, digest, 32) != 0)
			rc = -EBADMSG;
	}
	if (rc >= 0)
		goto out;
	util_digest_format(digest, hex);
	strata_err(EBADMSG, "stored chunk %s is corrupt", hex);
	strata_log(LOG_ERR, "store: stored chunk %s is corrupt (%s)", hex,
		   checked || (vlen >= 1 && (val[0] == CODEC_RAW_CRC || val[0] == CODEC_ZSTD_CRC)) ?
			   "CRC or encoding mismatch" :
			   "digest mismatch");
	rc = -EBADMSG;
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
	return err ? store_db_error(err, "chunk delete") : 0;
}

/* Verifies one stored chunk value against its key, using *buf (grown as needed) for the
 * decompressed bytes: its CRC when it has one, and always its sha256. Returns 0, -EBADMSG or
 * -ENOMEM. */
static int verify_chunk(const uint8_t digest[32], const char *val, size_t vlen, void **buf,
			size_t *cap)
{
	uint8_t check[32];
	unsigned long long n;
	const char *p;
	size_t plen;
	ssize_t got;
	int checked;

	if (vlen < 1)
		return -EBADMSG;
	if (val[0] == CODEC_RAW_CRC || val[0] == CODEC_ZSTD_CRC) {
		if (crc_payload(val, vlen, &p, &plen) < 0)
			return -EBADMSG;
	} else {
		p = val + 1;
		plen = vlen - 1;
	}
	if (val[0] == CODEC_RAW || val[0] == CODEC_RAW_CRC) {
		util_sha256(p, plen, check);
		return memcmp(check, digest, 32) == 0 ? 0 : -EBADMSG;
	}
	if (val[0] != CODEC_ZSTD && val[0] != CODEC_ZSTD_CRC)
		return -EBADMSG;
	n = ZSTD_getFrameContentSize(p, plen);
	if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > (1ull << 30))
		return -EBADMSG;
	if (n > *cap || !*buf) {
		void *nb = realloc(*buf, n ? (size_t)n : 1);

		if (!nb)
			return -ENOMEM;
		*buf = nb;
		*cap = n ? (size_t)n : 1;
	}
	got = decode_value(val, vlen, *buf, *cap, &checked);
	if (got < 0 || (unsigned long long)got != n)
		return -EBADMSG;
	util_sha256(*buf, (size_t)got, check);
	return memcmp(check, digest, 32) == 0 ? 0 : -EBADMSG;
}

int store_chunk_scan(struct store *s, int verify,
		     int (*fn)(void *ctx, const uint8_t digest[32], size_t stored_len,
			       int verified),
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
	/* RocksDB's blob CRC would end the scan at the first rotten value ("Corruption: Blob CRC
	 * mismatch"), and fsck could not report it: each value is checked here instead. */
	rocksdb_readoptions_set_verify_checksums(ro, 0);
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
		return store_db_error(err, "chunk scan");
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
		return store_db_error(err, "restore blob GC options");
	return 0;
}

ssize_t store_chunk_stored_len(struct store *s, const uint8_t digest[32])
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_CHUNKS],
							   (const char *)digest, 32, &err);
	size_t vlen = 0;

	if (err)
		return store_db_error(err, "chunk lookup");
	if (!v)
		return -ENOENT;
	rocksdb_pinnableslice_value(v, &vlen);
	rocksdb_pinnableslice_destroy(v);
	return (ssize_t)vlen;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the RocksDB store (chunks, layers, images, locking, the format version) and its
 * maintenance policies (gc, fsck, quota eviction). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "index/layer.h"
#include "memsrc.h"
#include "store/maint.h"
#include "store/store.h"
#include "tarw.h"
#include "tmpdir.h"
#include "util/crc32c.h"
#include "util/log.h"
#include "util/sha256.h"

/* Every test gets a new store directory: tmpdir_path (tmpdir_setup, tmpdir_teardown). */

static void test_chunks(void **state)
{
	struct store *s;
	uint8_t d[32], d2[32], buf[8192];
	char text[5000], random_bytes[3000];

	(void)state;
	memset(text, 'z', sizeof(text));
	for (size_t i = 0; i < sizeof(random_bytes); i++)
		random_bytes[i] = (char)(rand() & 0xff);
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	util_sha256(text, sizeof(text), d);
	util_sha256(random_bytes, sizeof(random_bytes), d2);
	assert_int_equal(store_chunk_has(s, d), 0);
	assert_int_equal(store_chunk_get(s, d, buf, sizeof(buf)), -ENOENT);
	assert_int_equal(store_chunk_put(s, d, text, sizeof(text)), 1);
	assert_int_equal(store_chunk_put(s, d, text, sizeof(text)), 0); /* dedup */
	assert_int_equal(store_chunk_put(s, d2, random_bytes, sizeof(random_bytes)), 1);
	assert_int_equal(store_chunk_has(s, d), 1);
	assert_int_equal(store_chunk_get(s, d, buf, sizeof(buf)), sizeof(text));
	assert_memory_equal(buf, text, sizeof(text));
	assert_int_equal(store_chunk_get(s, d2, buf, sizeof(buf)), sizeof(random_bytes));
	assert_memory_equal(buf, random_bytes, sizeof(random_bytes));
	assert_int_equal(store_chunk_get(s, d, buf, 10), -ENOBUFS);
	store_close(s);

	/* survives a reopen */
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_chunk_get(s, d2, buf, sizeof(buf)), sizeof(random_bytes));
	store_close(s);
}

static int count_layers(void *ctx, const struct store_layer *l)
{
	(void)l;
	(*(int *)ctx)++;
	return 0;
}

static int count_images(void *ctx, const char *ref, const char *json)
{
	assert_non_null(ref);
	assert_non_null(json);
	(*(int *)ctx)++;
	return 0;
}

static void test_layers_images(void **state)
{
	struct store *s;
	struct store_layer a, b, got;
	char digest[STORE_DIGEST_LEN];
	void *idx;
	size_t len;
	char *json;
	int n = 0;

	(void)state;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	snprintf(a.digest, sizeof(a.digest), "sha256:%064d", 1);
	snprintf(b.digest, sizeof(b.digest), "sha256:%064d", 2);
	snprintf(a.media_type, sizeof(a.media_type), "application/vnd.oci.image.layer.v1.tar");
	a.size = 10;
	a.tar_size = 20;
	a.chunk_size = 4096;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_layer_get(s, a.digest, &got, NULL, NULL), -ENOENT);
	assert_int_equal(store_layer_put(s, &a, "INDEX", 5), 0);
	assert_int_equal(store_layer_put(s, &b, "I2", 2), 0);
	assert_true(a.seq >= 1);
	assert_int_not_equal(a.seq, b.seq);
	{
		uint32_t seq = a.seq;

		/* putting again keeps the seq */
		assert_int_equal(store_layer_put(s, &a, "INDEX", 5), 0);
		assert_int_equal(a.seq, seq);
	}
	assert_int_equal(store_layer_get(s, a.digest, &got, &idx, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(idx, "INDEX", 5);
	free(idx);
	assert_string_equal(got.media_type, a.media_type);
	assert_int_equal(got.size, 10);
	assert_int_equal(got.tar_size, 20);
	assert_int_equal(got.seq, a.seq);
	assert_int_equal(store_layer_by_seq(s, b.seq, digest), 0);
	assert_string_equal(digest, b.digest);
	assert_int_equal(store_layer_list(s, count_layers, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(store_layer_del(s, b.digest), 0);
	assert_int_equal(store_layer_by_seq(s, b.seq, digest), -ENOENT);

	assert_int_equal(store_image_put(s, "example.com/a:1", "{\"x\":1}"), 0);
	assert_int_equal(store_image_get(s, "example.com/a:1", &json), 0);
	assert_string_equal(json, "{\"x\":1}");
	free(json);
	n = 0;
	assert_int_equal(store_image_list(s, count_images, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_image_del(s, "example.com/a:1"), 0);
	assert_int_equal(store_image_get(s, "example.com/a:1", &json), -ENOENT);
	store_close(s);

	/* seq numbers are never reused after a reopen */
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	b.seq = 0;
	assert_int_equal(store_layer_put(s, &b, "I2", 2), 0);
	assert_true(b.seq > a.seq);
	store_close(s);
}

static void test_lock(void **state)
{
	struct store *s, *s2 = NULL;
	char pid[32];

	(void)state;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_open(tmpdir_path, NULL, &s2), -EBUSY);
	assert_null(s2);
	snprintf(pid, sizeof(pid), "pid %d", (int)getpid());
	assert_non_null(strstr(strata_errmsg(EBUSY), "in use by another strata process"));
	assert_non_null(strstr(strata_errmsg(EBUSY), pid));
	store_close(s);
	assert_int_equal(store_open(tmpdir_path, NULL, &s2), 0);
	store_close(s2);
}

/* Writes key -> val into column family cfi (1 chunks, 2 layers, 4 meta, 5 snapshots) of the
 * closed store directly. */
static void raw_put(int cfi, const void *key, size_t klen, const void *val, size_t vlen)
{
	const char *names[] = { "default", "chunks", "layers", "images", "meta", "snapshots" };
	rocksdb_options_t *o = rocksdb_options_create();
	const rocksdb_options_t *cfo[6] = { o, o, o, o, o, o };
	rocksdb_column_family_handle_t *cf[6];
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	char path[PATH_MAX + 8], *err = NULL;
	rocksdb_t *db;

	snprintf(path, sizeof(path), "%s/db", tmpdir_path);
	db = rocksdb_open_column_families(o, path, 6, names, cfo, cf, &err);
	assert_null(err);
	rocksdb_put_cf(db, wo, cf[cfi], key, klen, val, vlen, &err);
	assert_null(err);
	for (int i = 0; i < 6; i++)
		rocksdb_column_family_handle_destroy(cf[i]);
	rocksdb_close(db);
	rocksdb_writeoptions_destroy(wo);
	rocksdb_options_destroy(o);
}

/* A record as strata wrote it before provenance existed (the JSON header without its keys),
 * written into the closed store. */
static void put_legacy_record(const char *digest, const char *index)
{
	char json[512], val[600];
	uint32_t jlen;

	jlen = (uint32_t)snprintf(json, sizeof(json),
				  "{\"digest\":\"%s\",\"diff_id\":\"\",\"media_type\":\"x\","
				  "\"size\":1,\"tar_size\":2,\"seq\":7,\"chunk_size\":4096,"
				  "\"source\":\"r/x\",\"windows\":\"\"}",
				  digest);
	memcpy(val, &jlen, 4);
	memcpy(val + 4, json, jlen);
	memcpy(val + 4 + jlen, index, strlen(index));
	raw_put(2, digest, strlen(digest), val, 4 + jlen + strlen(index));
}

static void test_layer_provenance(void **state)
{
	struct store *s;
	struct store_layer a, got;
	struct store_claim *claims;
	char digest[STORE_DIGEST_LEN], d[STORE_DIGEST_LEN];
	uint8_t md[32];
	uint64_t q = 0, gen;
	uint32_t seq;
	size_t n;

	(void)state;
	memset(&a, 0, sizeof(a));
	snprintf(a.digest, sizeof(a.digest), "sha256:%064d", 1);
	a.prov = STORE_PROV_ARTIFACT;
	snprintf(a.prov_digest, sizeof(a.prov_digest), "sha256:%064d", 9);
	snprintf(a.source, sizeof(a.source), "example.com/evil");
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	gen = store_layers_generation(s);
	assert_int_equal(store_layer_put(s, &a, "INDEX", 5), 0);
	assert_true(store_layers_generation(s) != gen);
	util_sha256("INDEX", 5, md);
	util_digest_format(md, d);
	assert_string_equal(a.index_digest, d);
	assert_int_equal(store_layer_get(s, a.digest, &got, NULL, NULL), 0);
	assert_int_equal(got.prov, STORE_PROV_ARTIFACT);
	assert_string_equal(got.prov_digest, a.prov_digest);
	assert_string_equal(got.index_digest, d);
	assert_string_equal(store_prov_name(got.prov), "artifact");

	/* the same index bytes keep the seq; other bytes replace the record under a new seq, so
	 * that inodes of the old index go stale */
	seq = a.seq;
	assert_int_equal(store_layer_put(s, &a, "INDEX", 5), 0);
	assert_int_equal(a.seq, seq);
	a.prov = STORE_PROV_VERIFIED;
	a.prov_digest[0] = '\0';
	assert_int_equal(store_layer_put(s, &a, "OTHER", 5), 0);
	assert_true(a.seq > seq);
	assert_int_equal(store_layer_by_seq(s, seq, digest), -ENOENT);
	assert_int_equal(store_layer_by_seq(s, a.seq, digest), 0);
	assert_string_equal(digest, a.digest);
	assert_int_equal(store_layer_get(s, a.digest, &got, NULL, NULL), 0);
	assert_int_equal(got.prov, STORE_PROV_VERIFIED);

	/* quarantine: counted once, kept seq, cleared by a put (new seq) */
	assert_int_equal(store_layer_quarantine(s, a.digest, a.seq + 1, "x"), -ESTALE);
	assert_int_equal(store_layer_quarantine(s, a.digest, a.seq, "diff_id mismatch"), 0);
	assert_int_equal(store_layer_quarantine(s, a.digest, a.seq, "again"), 0);
	assert_int_equal(store_counter_get(s, "quarantined_layers", &q), 0);
	assert_int_equal(q, 1);
	assert_int_equal(store_layer_get(s, a.digest, &got, NULL, NULL), 0);
	assert_string_equal(got.quarantine, "diff_id mismatch");
	assert_int_equal(got.seq, a.seq);
	assert_int_equal(store_layer_set_verified(s, a.digest, a.seq, "", 1), -EIO);
	seq = a.seq;
	assert_int_equal(store_layer_put(s, &a, "OTHER", 5), 0);
	assert_true(a.seq != seq);
	assert_int_equal(store_counter_get(s, "quarantined_layers", &q), 0);
	assert_int_equal(q, 0);
	assert_int_equal(store_layer_get(s, a.digest, &got, NULL, NULL), 0);
	assert_string_equal(got.quarantine, "");

	/* a record from before provenance reads as legacy, its index digest computed */
	store_close(s);
	snprintf(digest, sizeof(digest), "sha256:%064d", 3);
	put_legacy_record(digest, "OLD");
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_layer_get(s, digest, &got, NULL, NULL), 0);
	assert_int_equal(got.prov, STORE_PROV_LEGACY);
	util_sha256("OLD", 3, md);
	util_digest_format(md, d);
	assert_string_equal(got.index_digest, d);

	/* pending claims: one per image, every image's kept, the layer record replaced */
	{
		struct store_layer p;

		memset(&p, 0, sizeof(p));
		snprintf(p.digest, sizeof(p.digest), "%s", a.digest);
		snprintf(p.source, sizeof(p.source), "example.com/evil");
		snprintf(p.diff_id, sizeof(p.diff_id), "sha256:%064d", 6);
		assert_int_equal(store_pending_put(s, &p, "example.com/evil:1"), 0);
		assert_int_equal(store_layer_get(s, a.digest, NULL, NULL, NULL), -ENOENT);
		snprintf(p.source, sizeof(p.source), "example.com/app");
		snprintf(p.diff_id, sizeof(p.diff_id), "sha256:%064d", 5);
		assert_int_equal(store_pending_put(s, &p, "example.com/app:1"), 0);
		assert_int_equal(store_pending_put(s, &p, "example.com/app:1"), 0);
		assert_int_equal(store_pending_claims(s, a.digest, &claims, &n), 0);
		assert_int_equal(n, 2);
		assert_string_equal(claims[0].image, "example.com/evil:1");
		assert_string_equal(claims[1].image, "example.com/app:1");
		assert_string_equal(claims[1].source, "example.com/app");
		assert_string_equal(claims[1].diff_id, p.diff_id);
		free(claims);
		assert_int_equal(store_pending_get(s, a.digest, &p), 0);
		assert_string_equal(p.source, "example.com/evil"); /* the record: the first claim */
	}
	store_close(s);
}

static void test_format_version(void **state)
{
	struct store *s = NULL;

	(void)state;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	store_close(s);
	raw_put(4, "format", 6, "99", 2);

	s = NULL;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), -EPROTO);
	assert_null(s);
	assert_non_null(strstr(strata_errmsg(EPROTO), "format version 99"));
	assert_non_null(strstr(strata_errmsg(EPROTO), "supports versions 1 and 2"));
}

struct scan_seen {
	int n, bad, bad_is_d3, bad_is_d4;
	size_t bytes;
	uint8_t d3[32], d4[32];
};

static int scan_cb(void *ctx, const uint8_t digest[32], size_t stored_len, int verified)
{
	struct scan_seen *ss = ctx;

	ss->n++;
	ss->bytes += stored_len;
	assert_true(verified == 0 || verified == -EBADMSG);
	if (verified < 0) {
		ss->bad++;
		ss->bad_is_d3 += memcmp(digest, ss->d3, 32) == 0;
		ss->bad_is_d4 += memcmp(digest, ss->d4, 32) == 0;
	}
	return 0;
}

static int stop_cb(void *ctx, const uint8_t digest[32], size_t stored_len, int verified)
{
	(void)digest;
	(void)stored_len;
	(void)verified;
	return ++*(int *)ctx == 2 ? 42 : 0;
}

static int key_cb(void *ctx, const char *key)
{
	if (strcmp(key, "sha256:bad") == 0)
		++*(int *)ctx;
	return 0;
}

static void test_chunk_scan_del(void **state)
{
	struct store *s;
	struct scan_seen ss = { 0 };
	uint8_t d1[32], d2[32], dels[2][32], buf[8192];
	char text[5000], noise[3000], wrong[600];
	uint8_t zbad[64];
	int n = 0;

	(void)state;
	memset(text, 'q', sizeof(text));
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (char)(rand() & 0xff);
	memset(wrong, 'w', sizeof(wrong));
	util_sha256(text, sizeof(text), d1);
	util_sha256(noise, sizeof(noise), d2);
	util_sha256("three", 5, ss.d3);
	util_sha256("four", 4, ss.d4);
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_chunk_scan(s, 1, scan_cb, &ss), 0);
	assert_int_equal(ss.n, 0);
	assert_int_equal(store_chunk_put(s, d1, text, sizeof(text)), 1);   /* zstd */
	assert_int_equal(store_chunk_put(s, d2, noise, sizeof(noise)), 1); /* raw */
	store_close(s);

	/* d3: raw codec with bytes of another content; d4: zstd codec with garbage. */
	wrong[0] = 0;
	raw_put(1, ss.d3, 32, wrong, sizeof(wrong));
	memset(zbad, 0xab, sizeof(zbad));
	zbad[0] = 1;
	raw_put(1, ss.d4, 32, zbad, sizeof(zbad));
	raw_put(2, "sha256:bad", 10, "\xff\xff", 2);

	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_chunk_scan(s, 1, scan_cb, &ss), 0);
	assert_int_equal(ss.n, 4); /* a bad chunk does not stop the scan */
	assert_int_equal(ss.bad, 2);
	assert_int_equal(ss.bad_is_d3, 1);
	assert_int_equal(ss.bad_is_d4, 1);
	assert_true(ss.bytes > sizeof(noise));
	assert_int_equal(store_chunk_get(s, ss.d3, buf, sizeof(buf)), -EBADMSG);

	memset(&ss.n, 0, sizeof(int) * 4);
	assert_int_equal(store_chunk_scan(s, 0, scan_cb, &ss), 0); /* no verification */
	assert_int_equal(ss.n, 4);
	assert_int_equal(ss.bad, 0);
	assert_int_equal(store_chunk_scan(s, 1, stop_cb, &n), 42);
	assert_int_equal(n, 2);

	memcpy(dels[0], ss.d3, 32);
	memcpy(dels[1], ss.d4, 32);
	assert_int_equal(store_chunk_del(s, dels, 2), 0);
	assert_int_equal(store_chunk_del(s, dels, 2), 0); /* absent is fine */
	assert_int_equal(store_chunk_del(s, dels, 0), 0);
	assert_int_equal(store_chunk_has(s, ss.d3), 0);
	assert_int_equal(store_chunk_compact(s), 0);
	memset(&ss.n, 0, sizeof(int) * 4);
	ss.bytes = 0;
	assert_int_equal(store_chunk_scan(s, 1, scan_cb, &ss), 0);
	assert_int_equal(ss.n, 2);
	assert_int_equal(ss.bad, 0);
	assert_int_equal(store_chunk_get(s, d1, buf, sizeof(buf)), sizeof(text));
	assert_int_equal(store_chunk_get(s, d2, buf, sizeof(buf)), sizeof(noise));

	/* A layer record that does not parse is listed by key, and can be deleted. */
	n = 0;
	assert_int_equal(store_layer_keys(s, key_cb, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(store_layer_get(s, "sha256:bad", NULL, NULL, NULL), -EBADMSG);
	assert_int_equal(store_layer_del(s, "sha256:bad"), 0);
	assert_int_equal(store_layer_get(s, "sha256:bad", NULL, NULL, NULL), -ENOENT);
	n = 0;
	assert_int_equal(store_layer_keys(s, key_cb, &n), 0);
	assert_int_equal(n, 0);
	store_close(s);
}

/* Version-2 chunk values carry a CRC-32C of their payload: a read checks it (not the sha256), so
 * a payload byte changed on disk fails the read with -EBADMSG, and fsck's scan (sha256) finds it;
 * a version-1 value (no CRC) is still read and checked with its sha256. A version-1 store is
 * upgraded when opened. */
static void test_chunk_crc(void **state)
{
	struct store *s;
	struct scan_seen ss = { 0 };
	uint8_t d1[32], d2[32], buf[4096];
	char data[3000], val[3000 + 5], old[3000 + 1];
	uint32_t crc;

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(rand() & 0xff);
	util_sha256(data, sizeof(data), d1);
	data[0] ^= 1;
	util_sha256(data, sizeof(data), d2);
	data[0] ^= 1;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	store_close(s);

	/* d1: raw with CRC, one payload bit flipped after the CRC was taken (bit rot at rest) */
	val[0] = 2;
	memcpy(val + 5, data, sizeof(data));
	crc = util_crc32c(0, data, sizeof(data));
	memcpy(val + 1, &crc, 4); /* little endian on the hosts this runs on */
	val[5 + 100] ^= 0x10;
	raw_put(1, d1, 32, val, sizeof(val));
	/* d2: version 1 (raw, no CRC), right bytes */
	old[0] = 0;
	memcpy(old + 1, data, sizeof(data));
	old[1] ^= 1;
	raw_put(1, d2, 32, old, sizeof(old));
	raw_put(4, "format", 6, "1", 1);

	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_chunk_get(s, d1, buf, sizeof(buf)), -EBADMSG);
	assert_non_null(strstr(strata_errmsg(EBADMSG), "is corrupt"));
	assert_int_equal(store_chunk_get(s, d2, buf, sizeof(buf)), sizeof(data));
	memcpy(ss.d3, d1, 32);
	assert_int_equal(store_chunk_scan(s, 1, scan_cb, &ss), 0);
	assert_int_equal(ss.n, 2);
	assert_int_equal(ss.bad, 1);
	assert_int_equal(ss.bad_is_d3, 1);
	/* the CRC right again: the payload is still not the digest's, which only the scan sees */
	store_close(s);
	crc = util_crc32c(0, val + 5, sizeof(data));
	memcpy(val + 1, &crc, 4);
	raw_put(1, d1, 32, val, sizeof(val));
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	memset(&ss.n, 0, sizeof(int) * 4);
	assert_int_equal(store_chunk_scan(s, 1, scan_cb, &ss), 0);
	assert_int_equal(ss.bad, 1);
	assert_int_equal(ss.bad_is_d3, 1);
	/* a chunk written now carries a CRC and reads back */
	assert_int_equal(store_chunk_del(s, &d1, 1), 0);
	assert_int_equal(store_chunk_put(s, d1, data, sizeof(data)), 1);
	assert_int_equal(store_chunk_get(s, d1, buf, sizeof(buf)), sizeof(data));
	assert_memory_equal(buf, data, sizeof(data));
	store_close(s);
}

static int pin_cb(void *ctx, const char *ref)
{
	char *all = ctx;

	strcat(all, ref);
	strcat(all, ";");
	return 0;
}

/* Pins, access times and counters survive a reopen; an access time is written at most once a
 * minute but always read back newest; deleting a layer drops its access time. */
static void test_meta(void **state)
{
	struct store *s;
	struct store_layer info;
	uint8_t d[32], idx[4] = { 1, 2, 3, 4 };
	char all[512] = "", text[3000];
	uint64_t v;

	(void)state;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_pin_has(s, "r/a:1"), 0);
	assert_int_equal(store_pin_put(s, "r/b:1"), 0);
	assert_int_equal(store_pin_put(s, "r/a:1"), 0);
	assert_int_equal(store_pin_put(s, "r/a:1"), 0);
	assert_int_equal(store_pin_has(s, "r/a:1"), 1);
	/* an image record under the same name is not a pin */
	assert_int_equal(store_image_put(s, "r/c:1", "{}"), 0);
	assert_int_equal(store_pin_list(s, pin_cb, all), 0);
	assert_string_equal(all, "r/a:1;r/b:1;");
	assert_int_equal(store_pin_del(s, "r/b:1"), 0);
	assert_int_equal(store_pin_del(s, "r/zzz"), 0);

	assert_int_equal(store_layer_atime(s, "sha256:l1", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(store_layer_touch(s, "sha256:l1", 1000), 0);
	assert_int_equal(store_layer_touch(s, "sha256:l1", 1010), 0); /* memory only */
	assert_int_equal(store_layer_touch(s, "sha256:l1", 900), 0);  /* never goes back */
	assert_int_equal(store_layer_atime(s, "sha256:l1", &v), 0);
	assert_int_equal(v, 1010);
	assert_int_equal(store_layer_touch(s, "sha256:l2", 5), 0);

	assert_int_equal(store_counter_get(s, "evicted_chunks", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(store_counter_add(s, "evicted_chunks", 3), 0);
	assert_int_equal(store_counter_add(s, "evicted_chunks", 4), 0);
	assert_int_equal(store_counter_get(s, "evicted_chunks", &v), 0);
	assert_int_equal(v, 7);

	memset(text, 'q', sizeof(text));
	util_sha256(text, sizeof(text), d);
	assert_int_equal(store_chunk_stored_len(s, d), -ENOENT);
	assert_int_equal(store_chunk_put(s, d, text, sizeof(text)), 1);
	assert_true(store_chunk_stored_len(s, d) > 0);
	assert_true(store_chunk_stored_len(s, d) < (ssize_t)sizeof(text)); /* compressed */
	store_close(s);

	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	all[0] = '\0';
	assert_int_equal(store_pin_list(s, pin_cb, all), 0);
	assert_string_equal(all, "r/a:1;");
	assert_int_equal(store_layer_atime(s, "sha256:l1", &v), 0);
	assert_int_equal(v, 1010); /* flushed at close */
	assert_int_equal(store_counter_get(s, "evicted_chunks", &v), 0);
	assert_int_equal(v, 7);

	memset(&info, 0, sizeof(info));
	snprintf(info.digest, sizeof(info.digest), "sha256:l2");
	assert_int_equal(store_layer_put(s, &info, idx, sizeof(idx)), 0);
	assert_int_equal(store_layer_atime(s, "sha256:l2", &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(store_layer_del(s, "sha256:l2"), 0);
	assert_int_equal(store_layer_atime(s, "sha256:l2", &v), 0);
	assert_int_equal(v, 0);
	store_close(s);
}

/* ---------------------------------------------------------------- maintenance policies */

#define LAYER_A "sha256:aaaa"
#define LAYER_B "sha256:bbbb"
#define LAYER_P "sha256:pppp"

static int put_chunk_cb(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	int rc = store_chunk_put(ctx, digest, data, len);

	return rc < 0 ? rc : 0;
}

/* Stores layer digest holding two 3000-byte files (one chunk each): name1 of byte c1, name2 of
 * byte c2; their chunks go to the store. */
static void put_layer(struct store *s, const char *digest, const char *name1, char c1,
		      const char *name2, char c2)
{
	struct bytebuf t = { 0 };
	struct memsrc m;
	struct index_layer *l = NULL;
	struct store_layer info;
	char data[3000];
	void *enc;
	size_t len;

	memset(data, c1, sizeof(data));
	tarw_file(&t, name1, data, sizeof(data));
	memset(data, c2, sizeof(data));
	tarw_file(&t, name2, data, sizeof(data));
	tarw_end(&t);
	assert_int_equal(index_layer_build(memsrc_open(&m, t.p, t.len, 0), INDEX_MIN_CHUNK_SIZE,
					   put_chunk_cb, s, &l),
			 0);
	assert_int_equal(index_layer_nchunks(l), 2);
	assert_int_equal(index_layer_encode(l, &enc, &len), 0);
	memset(&info, 0, sizeof(info));
	snprintf(info.digest, sizeof(info.digest), "%s", digest);
	assert_int_equal(store_layer_put(s, &info, enc, len), 0);
	free(enc);
	index_layer_free(l);
	bytebuf_free(&t);
}

static void put_image(struct store *s, const char *ref, const char *layer)
{
	char json[256];

	snprintf(json, sizeof(json), "{\"layers\":[{\"digest\":\"%s\"}]}", layer);
	assert_int_equal(store_image_put(s, ref, json), 0);
}

/* The digest of a 3000-byte chunk of byte c. */
static void chunk_of(char c, uint8_t d[32])
{
	char data[3000];

	memset(data, c, sizeof(data));
	util_sha256(data, sizeof(data), d);
}

struct calls {
	int progress_done, problems, repaired, stop, lock, unlock;
	uint8_t open[32]; /* the chunk of the one "open file" */
	char last[1024];
};

static int cancelled_cb(void *ctx)
{
	return ((struct calls *)ctx)->stop;
}

static void progress_cb(void *ctx, uint64_t chunks, int done)
{
	(void)chunks;
	((struct calls *)ctx)->progress_done += done;
}

static void problem_cb(void *ctx, const char *msg)
{
	struct calls *k = ctx;

	k->problems++;
	snprintf(k->last, sizeof(k->last), "%s", msg);
}

static void repaired_cb(void *ctx, const char *msg)
{
	struct calls *k = ctx;

	k->repaired++;
	snprintf(k->last, sizeof(k->last), "%s", msg);
}

static void lock_cb(void *ctx)
{
	((struct calls *)ctx)->lock++;
}

static void unlock_cb(void *ctx)
{
	((struct calls *)ctx)->unlock++;
}

static int open_chunks_cb(void *ctx, int (*fn)(void *arg, const uint8_t digest[32]), void *arg)
{
	return fn(arg, ((struct calls *)ctx)->open);
}

/* Two layers share a chunk ('s'); an image lists layer A only; one orphan chunk; one pending
 * layer no image names. */
static void put_maint_fixture(struct store *s)
{
	struct store_layer p;
	uint8_t d[32];
	char orphan[100];

	put_layer(s, LAYER_A, "a", 'a', "shared", 's');
	put_layer(s, LAYER_B, "b", 'b', "shared", 's');
	put_image(s, "r/one:1", LAYER_A);
	memset(orphan, 'o', sizeof(orphan));
	util_sha256(orphan, sizeof(orphan), d);
	assert_int_equal(store_chunk_put(s, d, orphan, sizeof(orphan)), 1);
	memset(&p, 0, sizeof(p));
	snprintf(p.digest, sizeof(p.digest), "%s", LAYER_P);
	assert_int_equal(store_pending_put(s, &p, "example.com/p:1"), 0);
}

static void test_fsck_gc(void **state)
{
	struct calls k = { 0 };
	struct store_maint_hooks h = { &k, cancelled_cb, progress_cb, problem_cb, repaired_cb };
	struct store_fsck_result f;
	struct store_gc_result g;
	struct store *s;
	uint8_t da[32], db[32], ds[32];

	(void)state;
	chunk_of('a', da);
	chunk_of('b', db);
	chunk_of('s', ds);
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	put_maint_fixture(s);

	assert_int_equal(store_fsck(s, 0, &h, &f), 0);
	assert_int_equal(f.chunks, 4);
	assert_int_equal(f.bad, 0);
	assert_int_equal(f.orphans, 1);
	assert_int_equal(f.remote, 0);
	assert_int_equal(f.layers, 2);
	assert_int_equal(f.images, 1);
	assert_int_equal(f.problems, 0);
	assert_int_equal(k.progress_done, 1);

	/* A stop request deletes nothing. */
	k.stop = 1;
	assert_int_equal(store_gc(s, &h, &g), -ECANCELED);
	assert_int_equal(g.nfreed_layers, 0);
	assert_int_equal(store_layer_get(s, LAYER_B, NULL, NULL, NULL), 0);
	k.stop = 0;

	/* Layer B, the pending layer, B's own chunk and the orphan go; the shared chunk stays. */
	k.progress_done = 0;
	assert_int_equal(store_gc(s, &h, &g), 0);
	assert_int_equal(g.chunks, 2);
	assert_true(g.chunk_bytes > 0);
	assert_int_equal(g.layers_kept, 1);
	assert_int_equal(g.nfreed_layers, 2);
	assert_string_equal(g.freed_layers[0], LAYER_B);
	assert_string_equal(g.freed_layers[1], LAYER_P);
	assert_int_equal(k.progress_done, 1);
	store_gc_result_free(&g);
	assert_null(g.freed_layers);
	assert_int_equal(store_layer_get(s, LAYER_B, NULL, NULL, NULL), -ENOENT);
	assert_int_equal(store_pending_get(s, LAYER_P, NULL), -ENOENT);
	assert_int_equal(store_chunk_has(s, db), 0);
	assert_int_equal(store_chunk_has(s, da), 1);
	assert_int_equal(store_chunk_has(s, ds), 1);

	/* An image whose layer is missing is a problem; --repair removes it. */
	put_image(s, "r/two:1", LAYER_B);
	assert_int_equal(store_fsck(s, 0, &h, &f), 0);
	assert_int_equal(f.problems, 1);
	assert_int_equal(k.problems, 1);
	assert_string_equal(k.last, "image r/two:1: layer " LAYER_B " is missing");
	assert_int_equal(store_fsck(s, 1, &h, &f), 0);
	assert_int_equal(f.repaired, 1);
	assert_string_equal(k.last, "removed image r/two:1 (pull it again)");
	assert_int_equal(store_fsck(s, 0, NULL, &f), 0);
	assert_int_equal(f.problems, 0);

	/* A kept layer that does not decode stops gc before it deletes anything. */
	{
		struct store_layer bad;

		memset(&bad, 0, sizeof(bad));
		snprintf(bad.digest, sizeof(bad.digest), "%s", LAYER_B);
		assert_int_equal(store_layer_put(s, &bad, "XX", 2), 0);
		put_image(s, "r/two:1", LAYER_B);
		assert_int_equal(store_gc(s, NULL, &g), -EBADMSG);
		assert_string_equal(g.bad, LAYER_B);
		assert_int_equal(store_chunk_has(s, da), 1);
	}
	store_close(s);
}

static void test_evict(void **state)
{
	struct calls k = { 0 };
	struct store_maint_hooks h = { &k, cancelled_cb, NULL, NULL, NULL };
	struct store_open_files open = { &k, lock_cb, unlock_cb, open_chunks_cb };
	struct store_evict_result r;
	struct store *s;
	uint8_t da[32], db[32], ds[32];
	uint64_t v;

	(void)state;
	chunk_of('a', da);
	chunk_of('b', db);
	chunk_of('s', ds);
	assert_int_equal(store_evict_target(1000, 0), 900);
	assert_int_equal(store_evict_target(1000, 50), 500);
	assert_int_equal(store_evict_target(UINT64_MAX, 100), UINT64_MAX);
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	put_maint_fixture(s);
	put_image(s, "r/two:1", LAYER_B);
	assert_int_equal(store_pin_put(s, "r/one:1"), 0);

	/* Under the quota: nothing to do. */
	assert_int_equal(store_evict(s, NULL, UINT64_MAX / 2, 0, &h, &r), 0);
	assert_int_equal(r.over, 0);
	assert_int_equal(store_evict(s, NULL, 0, 0, &h, &r), 0);
	assert_int_equal(r.over, 0);

	/* Over it: only layer B's own chunk is a candidate (A is pinned and shares 's'); while a
	 * file holding it is open it stays. */
	memcpy(k.open, db, 32);
	assert_int_equal(store_evict(s, &open, 1, 0, &h, &r), 0);
	assert_int_equal(r.over, 1);
	assert_int_equal(r.quota, 1);
	assert_int_equal(r.chunks, 0);
	assert_true(k.lock >= 1);
	assert_int_equal(k.lock, k.unlock);
	assert_int_equal(store_chunk_has(s, db), 1);

	memset(k.open, 0, 32);
	assert_int_equal(store_evict(s, &open, 1, 0, &h, &r), 0);
	assert_int_equal(r.chunks, 1);
	assert_int_equal(r.layers, 1);
	assert_true(r.bytes > 0);
	assert_int_equal(store_chunk_has(s, db), 0);
	assert_int_equal(store_chunk_has(s, da), 1);
	assert_int_equal(store_chunk_has(s, ds), 1);
	assert_int_equal(store_layer_get(s, LAYER_B, NULL, NULL, NULL), 0); /* records stay */
	assert_int_equal(store_counter_get(s, "evictions", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(store_counter_get(s, "evicted_chunks", &v), 0);
	assert_int_equal(v, 1);
	store_evict_wait_idle(); /* no pass under way: returns at once */
	store_close(s);
}

static int snap_cb(void *ctx, const char *key, const char *json)
{
	strcat(ctx, key);
	strcat(ctx, "=");
	strcat(ctx, json);
	strcat(ctx, ";");
	return 0;
}

static void snap_problem(void *ctx, const char *msg)
{
	strcat(ctx, msg);
	strcat(ctx, ";");
}

/* Snapshot records: ids never reused, a commit is one write, fsck finds a missing parent, a
 * missing directory and an unreadable record (and --repair removes only that one). */
static void test_snapshots(void **state)
{
	struct store *s;
	struct store_fsck_result res;
	char all[1024] = "", probs[2048] = "", dir[4096], *json = NULL;
	struct store_maint_hooks h = { .ctx = probs, .problem = snap_problem };
	uint64_t a, b;

	(void)state;
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_snap_next_id(s, &a), 0);
	assert_int_equal(store_snap_next_id(s, &b), 0);
	assert_int_equal(a, 1);
	assert_int_equal(b, 2);
	assert_int_equal(store_snap_get(s, "ns/1/x", &json), -ENOENT);
	assert_int_equal(store_snap_put(s, "ns/1/x",
					"{\"id\":1,\"kind\":\"active\",\"parent\":\"\"}"),
			 0);
	assert_int_equal(store_snap_rename(s, "ns/1/x", "c1",
					   "{\"id\":1,\"kind\":\"committed\",\"parent\":\"\"}"),
			 0);
	assert_int_equal(store_snap_get(s, "ns/1/x", &json), -ENOENT);
	assert_int_equal(store_snap_get(s, "c1", &json), 0);
	assert_non_null(strstr(json, "committed"));
	free(json);
	assert_int_equal(store_snap_put(s, "a2",
					"{\"id\":2,\"kind\":\"active\",\"parent\":\"gone\"}"),
			 0);
	assert_int_equal(store_snap_put(s, "bad", "not json"), 0);
	assert_int_equal(store_snap_list(s, snap_cb, all), 0);
	assert_non_null(strstr(all, "a2="));
	assert_non_null(strstr(all, "c1="));
	assert_null(strstr(all, "next_id"));
	assert_int_equal(store_snap_dir(s, 0, dir, sizeof(dir)), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(store_snap_dir(s, 1, dir, sizeof(dir) - 4), 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	strcat(dir, "/fs");
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(store_fsck(s, 0, &h, &res), 0);
	assert_int_equal(res.snapshots, 3);
	assert_int_equal(res.problems, 3);
	assert_non_null(strstr(probs, "snapshot a2: parent gone is missing"));
	assert_non_null(strstr(probs, "snapshot a2: directory"));
	assert_non_null(strstr(probs, "snapshot bad: unreadable record"));
	assert_int_equal(store_fsck(s, 1, NULL, &res), 0);
	assert_int_equal(res.repaired, 1);
	assert_int_equal(store_snap_get(s, "bad", &json), -ENOENT);
	/* ids survive a reopen */
	store_close(s);
	assert_int_equal(store_open(tmpdir_path, NULL, &s), 0);
	assert_int_equal(store_snap_next_id(s, &a), 0);
	assert_int_equal(a, 3);
	assert_int_equal(store_snap_del(s, "a2"), 0);
	assert_int_equal(store_snap_del(s, "a2"), 0);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chunks, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_layers_images, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_layer_provenance, tmpdir_setup,
						tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_lock, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_format_version, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_chunk_scan_del, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_chunk_crc, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_meta, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_fsck_gc, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_evict, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_snapshots, tmpdir_setup, tmpdir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

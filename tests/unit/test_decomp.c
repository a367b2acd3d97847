/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for streaming gzip/zstd/none decompression: round trips, framing, corruption, truncation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "gzipw.h"
#include "index/decomp.h"
#include "index/reader.h"
#include "memsrc.h"
#include "util/log.h"

/* ---- helpers ---- */

static struct bytebuf zstd_of(const void *data, size_t len, int level, int checksum)
{
	struct bytebuf out = { 0 };
	ZSTD_CCtx *c = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(len), n;

	assert_non_null(c);
	out.p = malloc(cap);
	assert_non_null(out.p);
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level)));
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum)));
	n = ZSTD_compress2(c, out.p, cap, data, len);
	assert_false(ZSTD_isError(n));
	out.len = n;
	out.cap = cap;
	ZSTD_freeCCtx(c);
	return out;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)xorshift64(&seed);
}

static void fill_text(uint8_t *p, size_t n)
{
	static const char words[] = "the quick brown fox jumps over the lazy dog; layer ";
	size_t i = 0;

	for (unsigned k = 0; i < n; k++) {
		int w = snprintf((char *)p + i, n - i, "%s%u\n", words + (k % 7), k % 1000);

		i += (size_t)w < n - i ? (size_t)w : n - i;
	}
}

/* Decompresses comp (compression c) and checks it yields want, at several chunk and step sizes. */
static void roundtrip(enum index_compression c, const struct bytebuf *comp, const uint8_t *want,
		      size_t want_len, uint64_t want_consumed)
{
	static const size_t chunks[] = { 0, 1, 7, 4096, 200000 };
	static const size_t steps[] = { 1, 13, 4096, 300000 };

	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		for (size_t j = 0; j < sizeof(steps) / sizeof(steps[0]); j++) {
			struct memsrc m;
			struct index_decomp *d = NULL;
			struct bytebuf out;
			ssize_t rc;

			/* byte-at-a-time both ways is slow on big inputs and adds nothing */
			if (chunks[i] == 1 && steps[j] == 1 && comp->len > 100000)
				continue;
			assert_int_equal(index_decomp_new(c,
							  memsrc_open(&m, comp->p, comp->len,
								      chunks[i]),
							  &d),
					 0);
			out = reader_drain(index_decomp_reader(d), steps[j], 0, &rc);
			if (rc != 0)
				fprintf(stderr, "%s: %s\n", index_compression_name(c),
					strata_errmsg((int)-rc));
			assert_int_equal(rc, 0);
			assert_int_equal(out.len, want_len);
			if (want_len)
				assert_memory_equal(out.p, want, want_len);
			assert_int_equal(index_decomp_consumed(d), want_consumed);
			{
				uint8_t b[4];

				assert_int_equal(index_decomp_read(d, b, sizeof(b)),
						 0); /* stays at end */
			}
			free(out.p);
			index_decomp_free(d);
		}
	}
}

static ssize_t decode_all(enum index_compression c, const struct bytebuf *comp, size_t chunk,
			  struct bytebuf *out)
{
	struct memsrc m;
	struct index_decomp *d = NULL;
	ssize_t rc;

	assert_int_equal(index_decomp_new(c, memsrc_open(&m, comp->p, comp->len, chunk), &d), 0);
	*out = reader_drain(index_decomp_reader(d), 65536, 0, &rc);
	if (rc < 0) {
		uint8_t b[4];

		assert_int_equal(index_decomp_read(d, b, sizeof(b)), rc); /* errors are sticky */
	}
	index_decomp_free(d);
	return rc;
}

static void expect_msg(int err, const char *part)
{
	const char *msg = strata_errmsg(err);

	if (!strstr(msg, part)) {
		fprintf(stderr, "message '%s' lacks '%s'\n", msg, part);
		fail();
	}
}

#define RANDOM_LEN (300 * 1024)
#define TEXT_LEN   (1536 * 1024)

/* ---- tests ---- */

static void test_detect_and_names(void **state)
{
	static const uint8_t gz[] = { 0x1f, 0x8b, 0x08, 0x00 };
	static const uint8_t zs[] = { 0x28, 0xb5, 0x2f, 0xfd, 0x00 };
	static const uint8_t tar[] = "hello.txt\0\0\0";

	(void)state;
	assert_int_equal(index_compression_detect(gz, sizeof(gz)), INDEX_COMP_GZIP);
	assert_int_equal(index_compression_detect(gz, 2), INDEX_COMP_GZIP);
	assert_int_equal(index_compression_detect(gz, 1), INDEX_COMP_NONE);
	assert_int_equal(index_compression_detect(zs, sizeof(zs)), INDEX_COMP_ZSTD);
	assert_int_equal(index_compression_detect(zs, 4), INDEX_COMP_ZSTD);
	assert_int_equal(index_compression_detect(zs, 3), INDEX_COMP_NONE);
	assert_int_equal(index_compression_detect(tar, sizeof(tar)), INDEX_COMP_NONE);
	assert_int_equal(index_compression_detect(NULL, 0), INDEX_COMP_NONE);
	assert_string_equal(index_compression_name(INDEX_COMP_NONE), "none");
	assert_string_equal(index_compression_name(INDEX_COMP_GZIP), "gzip");
	assert_string_equal(index_compression_name(INDEX_COMP_ZSTD), "zstd");
	{
		struct bytebuf g = gzip_of("x", 1, 6);
		struct bytebuf z = zstd_of("x", 1, 3, 0);

		assert_int_equal(index_compression_detect(g.p, g.len), INDEX_COMP_GZIP);
		assert_int_equal(index_compression_detect(z.p, z.len), INDEX_COMP_ZSTD);
		free(g.p);
		free(z.p);
	}
}

static void test_gzip_roundtrip(void **state)
{
	uint8_t *rnd = malloc(RANDOM_LEN), *txt = malloc(TEXT_LEN);
	struct bytebuf g;

	(void)state;
	assert_non_null(rnd);
	assert_non_null(txt);
	fill_random(rnd, RANDOM_LEN, 0x1234567);
	fill_text(txt, TEXT_LEN);

	g = gzip_of(rnd, RANDOM_LEN, 6);
	roundtrip(INDEX_COMP_GZIP, &g, rnd, RANDOM_LEN, g.len);
	free(g.p);

	g = gzip_of(txt, TEXT_LEN, 9);
	assert_true(g.len < TEXT_LEN / 4);
	roundtrip(INDEX_COMP_GZIP, &g, txt, TEXT_LEN, g.len);
	free(g.p);

	g = gzip_of("", 0, 6); /* one empty member */
	roundtrip(INDEX_COMP_GZIP, &g, NULL, 0, g.len);
	free(g.p);
	free(rnd);
	free(txt);
}

static void test_gzip_members_and_padding(void **state)
{
	struct bytebuf a = gzip_of("hello ", 6, 6), b = gzip_of("", 0, 1),
		       c = gzip_of("world", 5, 9);
	struct bytebuf all = { 0 }, out;
	uint8_t zeros[1000] = { 0 };

	(void)state;
	bytebuf_put(&all, a.p, a.len);
	bytebuf_put(&all, b.p, b.len); /* an empty member in between */
	bytebuf_put(&all, c.p, c.len);
	roundtrip(INDEX_COMP_GZIP, &all, (const uint8_t *)"hello world", 11, all.len);

	/* trailing zero padding is ignored (and consumed) */
	bytebuf_put(&all, zeros, sizeof(zeros));
	roundtrip(INDEX_COMP_GZIP, &all, (const uint8_t *)"hello world", 11, all.len);

	/* but not data after the padding */
	bytebuf_put(&all, "x", 1);
	assert_int_equal(decode_all(INDEX_COMP_GZIP, &all, 0, &out), -EBADMSG);
	expect_msg(EBADMSG, "corrupt gzip stream: ");
	free(out.p);

	/* nor garbage right after a member */
	all.len = a.len;
	bytebuf_put(&all, "garbage!", 8);
	assert_int_equal(decode_all(INDEX_COMP_GZIP, &all, 0, &out), -EBADMSG);
	expect_msg(EBADMSG, "corrupt gzip stream: ");
	free(out.p);

	free(a.p);
	free(b.p);
	free(c.p);
	free(all.p);
}

static void test_gzip_consumed_at_member_boundary(void **state)
{
	struct bytebuf a = gzip_of("first", 5, 6), b = gzip_of("second", 6, 6), all = { 0 };
	struct memsrc m;
	struct index_decomp *d = NULL;
	uint8_t out[64];
	ssize_t n;

	(void)state;
	bytebuf_put(&all, a.p, a.len);
	bytebuf_put(&all, b.p, b.len);
	assert_int_equal(index_decomp_new(INDEX_COMP_GZIP, memsrc_open(&m, all.p, all.len, 0), &d),
			 0);
	n = index_decomp_read(d, out, sizeof(out));
	/* a read stops at the end of a member: consumed is exactly that member's length */
	assert_int_equal(n, 5);
	assert_memory_equal(out, "first", 5);
	assert_int_equal(index_decomp_consumed(d), a.len);
	assert_true(m.pos > a.len); /* although more was read into the buffer */
	n = index_decomp_read(d, out, sizeof(out));
	assert_int_equal(n, 6);
	assert_int_equal(index_decomp_read(d, out, sizeof(out)), 0);
	assert_int_equal(index_decomp_consumed(d), all.len);
	index_decomp_free(d);
	free(a.p);
	free(b.p);
	free(all.p);
}

static void test_zstd_roundtrip(void **state)
{
	uint8_t *rnd = malloc(RANDOM_LEN), *txt = malloc(TEXT_LEN);
	struct bytebuf z;

	(void)state;
	assert_non_null(rnd);
	assert_non_null(txt);
	fill_random(rnd, RANDOM_LEN, 0xabcdef);
	fill_text(txt, TEXT_LEN);

	z = zstd_of(rnd, RANDOM_LEN, 3, 0);
	roundtrip(INDEX_COMP_ZSTD, &z, rnd, RANDOM_LEN, z.len);
	free(z.p);

	z = zstd_of(txt, TEXT_LEN, 19, 1);
	assert_true(z.len < TEXT_LEN / 4);
	roundtrip(INDEX_COMP_ZSTD, &z, txt, TEXT_LEN, z.len);
	free(z.p);

	/* the one-shot API too */
	z.cap = ZSTD_compressBound(TEXT_LEN);
	z.p = malloc(z.cap);
	assert_non_null(z.p);
	z.len = ZSTD_compress(z.p, ZSTD_compressBound(TEXT_LEN), txt, TEXT_LEN, 1);
	assert_false(ZSTD_isError(z.len));
	roundtrip(INDEX_COMP_ZSTD, &z, txt, TEXT_LEN, z.len);
	free(z.p);

	z = zstd_of("", 0, 3, 0);
	roundtrip(INDEX_COMP_ZSTD, &z, NULL, 0, z.len);
	free(z.p);
	free(rnd);
	free(txt);
}

static void test_zstd_frames_and_skippable(void **state)
{
	struct bytebuf a = zstd_of("frame one, ", 11, 3, 1), b = zstd_of("frame two", 9, 3, 0);
	struct bytebuf all = { 0 }, out;
	/* skippable frame: magic 0x184D2A5? little-endian, 4-byte size, payload */
	static const uint8_t skip1[] = {
		0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 'm', 'e', 't', 'a', '!'
	};
	static const uint8_t skip2[] = { 0x5f, 0x2a, 0x4d, 0x18, 0, 0, 0, 0 };

	(void)state;
	bytebuf_put(&all, skip2, sizeof(skip2));
	bytebuf_put(&all, a.p, a.len);
	bytebuf_put(&all, skip1, sizeof(skip1));
	bytebuf_put(&all, b.p, b.len);
	bytebuf_put(&all, skip1, sizeof(skip1));
	roundtrip(INDEX_COMP_ZSTD, &all, (const uint8_t *)"frame one, frame two", 20, all.len);

	/* truncated inside the trailing skippable frame */
	all.len -= 2;
	assert_int_equal(decode_all(INDEX_COMP_ZSTD, &all, 3, &out), -EPIPE);
	expect_msg(EPIPE, "truncated zstd stream");
	assert_int_equal(out.len, 20);
	free(out.p);

	free(a.p);
	free(b.p);
	free(all.p);
}

static void test_corrupt(void **state)
{
	uint8_t *txt = malloc(TEXT_LEN);
	struct bytebuf g, z, out;
	ssize_t rc;

	(void)state;
	assert_non_null(txt);
	fill_text(txt, TEXT_LEN);

	g = gzip_of(txt, TEXT_LEN, 6);
	for (size_t i = g.len / 2; i < g.len / 2 + 16; i++)
		g.p[i] ^= 0x5a;
	rc = decode_all(INDEX_COMP_GZIP, &g, 0, &out);
	assert_int_equal(rc, -EBADMSG);
	expect_msg(EBADMSG, "corrupt gzip stream: ");
	free(out.p);

	/* a bad header */
	g.p[2] = 0x07; /* compression method must be 8 */
	rc = decode_all(INDEX_COMP_GZIP, &g, 0, &out);
	assert_int_equal(rc, -EBADMSG);
	expect_msg(EBADMSG, "corrupt gzip stream: unknown compression method");
	free(out.p);
	free(g.p);

	/* a bad CRC in the trailer */
	g = gzip_of("some data", 9, 6);
	g.p[g.len - 8] ^= 1;
	rc = decode_all(INDEX_COMP_GZIP, &g, 0, &out);
	assert_int_equal(rc, -EBADMSG);
	expect_msg(EBADMSG, "incorrect data check");
	free(out.p);
	free(g.p);

	/* not gzip at all */
	g.p = NULL;
	g.len = 0;
	g.cap = 0;
	bytebuf_put(&g, "plain text, no gzip", 19);
	assert_int_equal(decode_all(INDEX_COMP_GZIP, &g, 0, &out), -EBADMSG);
	free(out.p);
	free(g.p);

	z = zstd_of(txt, TEXT_LEN, 3, 1);
	for (size_t i = z.len / 2; i < z.len / 2 + 16; i++)
		z.p[i] ^= 0x5a;
	rc = decode_all(INDEX_COMP_ZSTD, &z, 0, &out);
	assert_int_equal(rc, -EBADMSG);
	expect_msg(EBADMSG, "corrupt zstd stream: ");
	free(out.p);
	free(z.p);

	/* garbage after a complete frame */
	z = zstd_of("abc", 3, 3, 0);
	bytebuf_put(&z, "junkjunk", 8);
	assert_int_equal(decode_all(INDEX_COMP_ZSTD, &z, 0, &out), -EBADMSG);
	expect_msg(EBADMSG, "corrupt zstd stream: ");
	free(out.p);
	free(z.p);
	free(txt);
}

static void test_truncated(void **state)
{
	uint8_t *txt = malloc(TEXT_LEN);
	struct bytebuf g, z, out, empty = { 0 };
	static const size_t chunks[] = { 0, 1, 1000 };

	(void)state;
	assert_non_null(txt);
	fill_text(txt, TEXT_LEN);
	g = gzip_of(txt, TEXT_LEN, 6);
	z = zstd_of(txt, TEXT_LEN, 3, 0);

	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		size_t full = g.len;
		size_t cuts[] = { full / 2, full - 4, full - 1, 10, 3 };

		for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
			g.len = cuts[k];
			assert_int_equal(decode_all(INDEX_COMP_GZIP, &g, chunks[c], &out), -EPIPE);
			expect_msg(EPIPE, "truncated gzip stream");
			assert_true(out.len <= TEXT_LEN);
			if (out.len)
				assert_memory_equal(out.p, txt, out.len);
			free(out.p);
		}
		g.len = full;

		full = z.len;
		{
			size_t zcuts[] = { full / 2, full - 1, 5, 2 };

			for (size_t k = 0; k < sizeof(zcuts) / sizeof(zcuts[0]); k++) {
				z.len = zcuts[k];
				assert_int_equal(decode_all(INDEX_COMP_ZSTD, &z, chunks[c], &out),
						 -EPIPE);
				expect_msg(EPIPE, "truncated zstd stream");
				if (out.len)
					assert_memory_equal(out.p, txt, out.len);
				free(out.p);
			}
		}
		z.len = full;
	}

	/* an empty input is a truncated stream, except with no compression */
	assert_int_equal(decode_all(INDEX_COMP_GZIP, &empty, 0, &out), -EPIPE);
	expect_msg(EPIPE, "truncated gzip stream");
	free(out.p);
	assert_int_equal(decode_all(INDEX_COMP_ZSTD, &empty, 0, &out), -EPIPE);
	expect_msg(EPIPE, "truncated zstd stream");
	free(out.p);
	assert_int_equal(decode_all(INDEX_COMP_NONE, &empty, 0, &out), 0);
	assert_int_equal(out.len, 0);
	free(out.p);

	free(g.p);
	free(z.p);
	free(txt);
}

static void test_none_passthrough(void **state)
{
	uint8_t data[10000];
	struct bytebuf b = { data, sizeof(data), sizeof(data) };

	(void)state;
	fill_random(data, sizeof(data), 99);
	roundtrip(INDEX_COMP_NONE, &b, data, sizeof(data), sizeof(data));
}

static void test_source_error_and_reader(void **state)
{
	uint8_t *txt = malloc(TEXT_LEN), *out = malloc(TEXT_LEN);
	struct bytebuf g;
	struct memsrc m;
	struct index_decomp *d = NULL;
	struct index_reader r;
	ssize_t n;
	uint8_t b[16];

	(void)state;
	assert_non_null(txt);
	assert_non_null(out);
	fill_text(txt, TEXT_LEN);
	g = gzip_of(txt, TEXT_LEN, 6);

	/* the reader adapter with index_reader_full */
	assert_int_equal(index_decomp_new(INDEX_COMP_GZIP, memsrc_open(&m, g.p, g.len, 777), &d),
			 0);
	r = index_decomp_reader(d);
	assert_int_equal(index_reader_full(r, out, TEXT_LEN), TEXT_LEN);
	assert_memory_equal(out, txt, TEXT_LEN);
	assert_int_equal(index_reader_full(r, b, sizeof(b)), 0);
	assert_int_equal(index_decomp_consumed(d), g.len);
	index_decomp_free(d);

	/* a source error comes back unchanged, with its message */
	for (int c = 0; c < 3; c++) {
		enum index_compression comp = (enum index_compression)c;
		struct bytebuf z = { 0 };
		const struct bytebuf *src = &g;

		if (comp == INDEX_COMP_ZSTD) {
			z = zstd_of(txt, TEXT_LEN, 1, 0);
			src = &z;
		} else if (comp == INDEX_COMP_NONE) {
			z.p = txt;
			z.len = TEXT_LEN;
			src = &z;
		}
		assert_int_equal(index_decomp_new(comp, memsrc_open(&m, src->p, src->len, 1000),
						  &d),
				 0);
		m.fail_at = 5000;
		do {
			n = index_decomp_read(d, out, 4096);
		} while (n > 0);
		assert_int_equal(n, -EIO);
		expect_msg(EIO, "mock read error");
		assert_int_equal(index_decomp_read(d, out, 1), -EIO);
		assert_true(index_decomp_consumed(d) <= 5000);
		index_decomp_free(d);
		if (comp == INDEX_COMP_ZSTD)
			free(z.p);
	}

	index_decomp_free(NULL);
	free(g.p);
	free(txt);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_detect_and_names),
		cmocka_unit_test(test_gzip_roundtrip),
		cmocka_unit_test(test_gzip_members_and_padding),
		cmocka_unit_test(test_gzip_consumed_at_member_boundary),
		cmocka_unit_test(test_zstd_roundtrip),
		cmocka_unit_test(test_zstd_frames_and_skippable),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_none_passthrough),
		cmocka_unit_test(test_source_error_and_reader),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for zran gzip random access: checkpoints, windows, extraction, members and errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "gzipw.h"
#include "index/reader.h"
#include "memsrc.h"
#include "index/zran.h"
#include "util/log.h"
#include "util/sha256.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)

/* ---- helpers ---- */

static uint8_t *fill_random(size_t n, uint64_t seed)
{
	uint8_t *p = malloc(n ? n : 1);

	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(xorshift64(&seed) >> 24);
	return p;
}

/* Text made of random words from a random 2048-word vocabulary: compresses about 3x. */
static uint8_t *fill_words(size_t n, uint64_t seed)
{
	static char vocab[2048][12];
	uint8_t *p = malloc(n ? n : 1);
	size_t i = 0;

	assert_non_null(p);
	for (size_t w = 0; w < 2048; w++) {
		size_t wl = 2 + xorshift64(&seed) % 9;

		for (size_t k = 0; k < wl; k++)
			vocab[w][k] = (char)('a' + xorshift64(&seed) % 26);
		vocab[w][wl] = 0;
	}
	while (i < n) {
		uint64_t r = xorshift64(&seed);
		const char *w = vocab[r % 2048];
		size_t wl = strlen(w);

		for (size_t k = 0; k < wl && i < n; k++)
			p[i++] = (uint8_t)w[k];
		if (i < n)
			p[i++] = (r >> 20) % 13 == 0 ? '\n' : ' ';
	}
	return p;
}

/* Reads everything from z with read sizes 1..step. Returns the output; *rc gets the final result. */
static struct bytebuf drain(struct index_zran *z, size_t step, ssize_t *rc)
{
	return reader_drain(index_zran_reader(z), step, 12345 + step, rc);
}

/* Indexes gz fully (source chunks 1..chunk, read steps 1..step) and checks the output is want. */
static struct index_zran *index_of(const struct bytebuf *gz, const uint8_t *want, size_t want_len,
				   uint64_t span, size_t chunk, size_t step, struct memsrc *m)
{
	struct index_zran *z = NULL;
	struct bytebuf out;
	ssize_t rc;

	assert_int_equal(index_zran_new(memsrc_open_varied(m, gz->p, gz->len, chunk), span, &z), 0);
	out = drain(z, step, &rc);
	if (rc != 0)
		fprintf(stderr, "zran: %s\n", strata_errmsg((int)-rc));
	assert_int_equal(rc, 0);
	assert_int_equal(out.len, want_len);
	if (want_len)
		assert_memory_equal(out.p, want, want_len);
	assert_int_equal(index_zran_consumed(z), gz->len);
	{
		uint8_t b[4];

		assert_int_equal(index_zran_read(z, b, sizeof(b)), 0); /* stays at the end */
	}
	free(out.p);
	return z;
}

/* Start of the compressed bytes extract needs for checkpoint cp. */
static size_t comp_start(const struct index_zran_cp *cp)
{
	return (size_t)cp->coff - (cp->bits ? 1 : 0);
}

/*
 * Checks the checkpoint invariants: strictly increasing offsets, the span rule, MEMBER checkpoints
 * at the member starts (uoffs in starts[0..nstarts)), windows equal to the data before them and
 * 32 KiB long except within 32 KiB of a member start. Returns the number of BLOCK checkpoints.
 */
static size_t check_cps(const struct index_zran *z, const uint8_t *in, uint64_t span,
			const uint64_t *starts, size_t nstarts)
{
	size_t n = index_zran_count(z), blocks = 0;

	assert_true(n >= 1);
	assert_int_equal(index_zran_cp(z, 0)->kind, INDEX_ZRAN_MEMBER);
	assert_int_equal(index_zran_cp(z, 0)->uoff, 0);
	assert_int_equal(index_zran_cp(z, 0)->coff, 0);
	for (size_t i = 0; i < n; i++) {
		const struct index_zran_cp *cp = index_zran_cp(z, i);
		const uint8_t *w = index_zran_window(z, i);

		if (i > 0) {
			const struct index_zran_cp *prev = index_zran_cp(z, i - 1);

			assert_true(cp->uoff > prev->uoff);
			assert_true(cp->coff > prev->coff);
			if (cp->kind == INDEX_ZRAN_BLOCK)
				assert_true(cp->coff - prev->coff >= span ||
					    cp->uoff - prev->uoff >= 4 * span);
		}
		if (cp->kind == INDEX_ZRAN_MEMBER) {
			int found = 0;

			assert_int_equal(cp->bits, 0);
			assert_int_equal(cp->wlen, 0);
			assert_null(w);
			for (size_t k = 0; k < nstarts; k++)
				found |= starts[k] == cp->uoff;
			assert_true(found);
		} else {
			uint64_t mstart = 0, expect;

			assert_int_equal(cp->kind, INDEX_ZRAN_BLOCK);
			assert_true(cp->bits <= 7);
			blocks++;
			for (size_t k = 0; k < nstarts; k++)
				if (starts[k] < cp->uoff)
					mstart = starts[k];
			expect = cp->uoff - mstart < INDEX_ZRAN_WINDOW ? cp->uoff - mstart :
									 INDEX_ZRAN_WINDOW;
			assert_int_equal(cp->wlen, expect);
			assert_non_null(w);
			assert_memory_equal(w, in + cp->uoff - cp->wlen, cp->wlen);
		}
	}
	return blocks;
}

/* Extracts in[off, off+len) from checkpoint i with comp cut at clen. Returns extract's result. */
static int extract_at(const struct index_zran *z, size_t i, const struct bytebuf *gz, size_t clen,
		      uint64_t skip, uint8_t *out, size_t len)
{
	const struct index_zran_cp *cp = index_zran_cp(z, i);
	size_t start = comp_start(cp);

	assert_true(start + clen <= gz->len);
	return index_zran_extract(cp, index_zran_window(z, i), gz->p + start, clen, skip, out, len);
}

/*
 * For every checkpoint and `pairs` random (skip, len) pairs: extract with comp running to the end
 * of the blob, and with comp cut at the next checkpoint at or past the range's end (a single range
 * request); both must return exactly the input.
 */
static void check_extract(const struct index_zran *z, const struct bytebuf *gz, const uint8_t *in,
			  size_t in_len, size_t pairs, uint64_t max_skip, size_t max_len,
			  uint64_t seed)
{
	size_t n = index_zran_count(z);
	uint8_t *out = malloc(max_len + 1);

	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		const struct index_zran_cp *cp = index_zran_cp(z, i);
		size_t start = comp_start(cp);

		for (size_t k = 0; k < pairs; k++) {
			uint64_t skip = k == 0 ? 0 : xorshift64(&seed) % (max_skip + 1);
			size_t len = 1 + xorshift64(&seed) % max_len, clen = gz->len - start;
			uint64_t end;

			if (cp->uoff >= in_len)
				break;
			if (cp->uoff + skip >= in_len)
				skip = in_len - cp->uoff - 1;
			if (cp->uoff + skip + len > in_len)
				len = in_len - cp->uoff - skip;
			end = cp->uoff + skip + len;
			memset(out, 0xa5, len);
			assert_int_equal(extract_at(z, i, gz, clen, skip, out, len), 0);
			assert_memory_equal(out, in + cp->uoff + skip, len);

			/* cut at the first checkpoint at or past the end: bytes [start, coff) suffice */
			for (size_t j = i + 1; j < n; j++) {
				if (index_zran_cp(z, j)->uoff >= end) {
					clen = (size_t)index_zran_cp(z, j)->coff - start;
					break;
				}
			}
			memset(out, 0xa5, len);
			assert_int_equal(extract_at(z, i, gz, clen, skip, out, len), 0);
			assert_memory_equal(out, in + cp->uoff + skip, len);
		}
	}
	free(out);
}

struct stats {
	size_t count, blocks;
	uint64_t window_bytes;
};

static struct stats stats_of(const struct index_zran *z)
{
	struct stats s = { 0 };

	s.count = index_zran_count(z);
	for (size_t i = 0; i < s.count; i++) {
		if (index_zran_cp(z, i)->kind == INDEX_ZRAN_BLOCK)
			s.blocks++;
		s.window_bytes += index_zran_cp(z, i)->wlen;
	}
	return s;
}

/* ---- tests ---- */

static void test_compressible(void **state)
{
	size_t len = 8 * MiB;
	uint8_t *in = fill_words(len, 1);
	struct bytebuf gz = gzip_of(in, len, 6);
	uint64_t starts[] = { 0 };
	struct index_zran *z, *z1;
	struct memsrc m;
	struct stats s, s1;

	(void)state;
	assert_true(gz.len < len / 2);
	z = index_of(&gz, in, len, 64 * KiB, 70000, 300000, &m);
	s = stats_of(z);
	assert_int_equal(check_cps(z, in, 64 * KiB, starts, 1), s.blocks);
	assert_true(s.blocks >= gz.len / (128 * KiB)); /* many: about one per 64 KiB compressed */
	{
		size_t primed = 0; /* checkpoints mid-byte: extraction goes through inflatePrime */

		for (size_t i = 0; i < s.count; i++)
			primed += index_zran_cp(z, i)->bits != 0;
		assert_true(primed > 0);
	}
	check_extract(z, &gz, in, len, 4, 300 * KiB, 200 * KiB, 7);

	/* the same blob at the default span (0 = 1 MiB) */
	z1 = index_of(&gz, in, len, 0, 0, 1 * MiB, &m);
	s1 = stats_of(z1);
	assert_int_equal(check_cps(z1, in, 1 * MiB, starts, 1), s1.blocks);
	assert_true(s1.blocks >= 1 && s1.blocks < s.blocks);
	check_extract(z1, &gz, in, len, 2, 2 * MiB, 64 * KiB, 8);
	print_message("8 MiB text -> %zu compressed: span 64 KiB: %zu checkpoints (%zu block), %llu "
		      "window bytes; span 1 MiB: %zu checkpoints (%zu block), %llu window bytes\n",
		      gz.len, s.count, s.blocks, (unsigned long long)s.window_bytes, s1.count,
		      s1.blocks, (unsigned long long)s1.window_bytes);
	index_zran_free(z1);
	index_zran_free(z);
	free(gz.p);
	free(in);
}

static void test_incompressible(void **state)
{
	size_t len = 4 * MiB, stored_aligned = 0;
	uint8_t *in = fill_random(len, 2);
	struct bytebuf gz = gzip_of(in, len, 6);
	uint64_t starts[] = { 0 };
	struct index_zran *z;
	struct memsrc m;
	size_t blocks;

	(void)state;
	assert_true(gz.len > len); /* stored blocks */
	z = index_of(&gz, in, len, 64 * KiB, 200000, 100000, &m);
	blocks = check_cps(z, in, 64 * KiB, starts, 1);
	assert_true(blocks >= len / (64 * KiB) - 2);
	for (size_t i = 0; i < index_zran_count(z); i++)
		stored_aligned += index_zran_cp(z, i)->bits == 0;
	assert_true(stored_aligned > 0);
	check_extract(z, &gz, in, len, 3, 200 * KiB, 100 * KiB, 9);
	index_zran_free(z);

	/* the same through the index_reader adapter */
	{
		uint8_t *got = malloc(len + 1);
		struct index_zran *zr = NULL;

		assert_non_null(got);
		assert_int_equal(index_zran_new(memsrc_open_varied(&m, gz.p, gz.len, 0), 64 * KiB,
						&zr),
				 0);
		assert_int_equal(index_reader_full(index_zran_reader(zr), got, len + 1),
				 (ssize_t)len);
		assert_memory_equal(got, in, len);
		assert_int_equal(index_zran_count(zr), blocks + 1);
		index_zran_free(zr);
		free(got);
	}
	free(gz.p);
	free(in);
}

static void test_zeros(void **state)
{
	size_t len = 32 * MiB + 5;
	uint8_t *in = calloc(len, 1);
	struct bytebuf gz;
	uint64_t starts[] = { 0 };
	struct index_zran *z;
	struct memsrc m;
	size_t blocks;

	(void)state;
	assert_non_null(in);
	in[10 * MiB] = 'x';
	in[20 * MiB + 3] = 'y';
	memcpy(in + len - 5, "tail!", 5);
	gz = gzip_of(in, len, 6);
	assert_true(gz.len < 1 * MiB); /* so only the 4 * span uncompressed rule can fire */
	z = index_of(&gz, in, len, 1 * MiB, 0, 4 * MiB, &m);
	blocks = check_cps(z, in, 1 * MiB, starts, 1);
	assert_true(blocks >= 4);
	for (size_t i = 1; i < index_zran_count(z); i++)
		assert_true(index_zran_cp(z, i)->uoff - index_zran_cp(z, i - 1)->uoff >= 4 * MiB);
	check_extract(z, &gz, in, len, 3, 6 * MiB, 1 * MiB, 10);
	index_zran_free(z);
	free(gz.p);
	free(in);
}

/* Concatenation of members of data split at cuts; returns the blob and the member start coffs. */
static struct bytebuf members_of(const uint8_t *in, const size_t *sizes, size_t n, size_t *coffs)
{
	struct bytebuf all = { 0 };
	size_t off = 0;

	for (size_t i = 0; i < n; i++) {
		struct bytebuf g = gzip_of(in + off, sizes[i], 6);

		coffs[i] = all.len;
		bytebuf_put(&all, g.p, g.len);
		off += sizes[i];
		free(g.p);
	}
	return all;
}

static void test_members(void **state)
{
	static const size_t sizes[] = { 0, 100 * KiB, 3 * MiB };
	static const uint8_t zeros[512];
	size_t len = sizes[1] + sizes[2], coffs[3];
	uint8_t *in = fill_words(len, 3);
	struct bytebuf gz = members_of(in, sizes, 3, coffs);
	uint64_t starts[] = { 0, 0, sizes[1] };
	uint8_t *out = malloc(200 * KiB);
	struct index_zran *z;
	struct memsrc m;
	size_t member2 = 0, cross = 0;

	(void)state;
	assert_non_null(out);
	z = index_of(&gz, in, len, 16 * KiB, 5000, 70000, &m);
	check_cps(z, in, 16 * KiB, starts, 3);
	/* the empty first member keeps cp 0 at 0/0; the second member, also at uoff 0, adds none */
	assert_int_equal(index_zran_cp(z, 0)->coff, 0);
	for (size_t i = 0; i < index_zran_count(z); i++) {
		const struct index_zran_cp *cp = index_zran_cp(z, i);

		assert_int_not_equal(cp->coff, coffs[1]);
		if (cp->kind == INDEX_ZRAN_MEMBER && cp->coff == coffs[2]) {
			assert_int_equal(cp->uoff, sizes[1]);
			member2 = i;
		}
		if (cp->uoff < sizes[1])
			cross = i; /* the last checkpoint inside the 100 KiB member */
	}
	assert_true(member2 > 0);
	check_extract(z, &gz, in, len, 3, 150 * KiB, 150 * KiB, 11);

	/* ranges across member boundaries: from cp 0 over the empty member, and over the 2nd end */
	assert_int_equal(extract_at(z, 0, &gz, gz.len, 0, out, 200 * KiB), 0);
	assert_memory_equal(out, in, 200 * KiB);
	{
		uint64_t cu = index_zran_cp(z, cross)->uoff;
		uint64_t from = cu > sizes[1] - 5000 ? cu : sizes[1] - 5000;

		assert_int_equal(extract_at(z, cross, &gz,
					    gz.len - comp_start(index_zran_cp(z, cross)), from - cu,
					    out, 10000),
				 0);
		assert_memory_equal(out, in + from, 10000);
		/* cut right at the next member's first byte: its header is not needed for the range */
		memset(out, 0, sizes[1] - cu);
		assert_int_equal(extract_at(z, cross, &gz,
					    coffs[2] - comp_start(index_zran_cp(z, cross)), 0, out,
					    sizes[1] - cu),
				 0);
		assert_memory_equal(out, in + cu, sizes[1] - cu);
	}
	/* past the end of the stream */
	assert_int_equal(extract_at(z, member2, &gz, gz.len - coffs[2], sizes[2] - 10, out, 20),
			 -EPIPE);
	index_zran_free(z);

	/* byte-at-a-time source: headers and trailers split everywhere */
	{
		struct bytebuf small = { 0 };
		size_t small_sizes[] = { 3000, 0, 5000 };
		size_t small_coffs[3];
		uint64_t small_starts[] = { 0, 3000, 3000 };

		small = members_of(in, small_sizes, 3, small_coffs);
		z = index_of(&small, in, 8000, 1 * KiB, 1, 7, &m);
		check_cps(z, in, 1 * KiB, small_starts, 3);
		check_extract(z, &small, in, 8000, 3, 4000, 6000, 12);
		index_zran_free(z);
		free(small.p);
	}

	/* trailing zero padding is fine; anything else is not */
	{
		struct bytebuf padded = { 0 };
		struct index_zran *zp = NULL;
		struct bytebuf got;
		ssize_t rc;

		bytebuf_put(&padded, gz.p, gz.len);
		bytebuf_put(&padded, zeros, sizeof(zeros));
		z = index_of(&padded, in, len, 0, 0, 1 * MiB, &m);
		index_zran_free(z);

		bytebuf_put(&padded, "junk", 4);
		assert_int_equal(index_zran_new(memsrc_open_varied(&m, padded.p, padded.len, 0), 0,
						&zp),
				 0);
		got = drain(zp, 1 * MiB, &rc);
		assert_int_equal(rc, -EBADMSG);
		assert_int_equal(got.len, len);
		free(got.p);
		index_zran_free(zp);

		padded.len = gz.len;
		bytebuf_put(&padded, "\x1f\x8b\x08garbage", 10);
		bytebuf_put(&padded, zeros, 64);
		assert_int_equal(index_zran_new(memsrc_open_varied(&m, padded.p, padded.len, 0), 0,
						&zp),
				 0);
		got = drain(zp, 1 * MiB, &rc);
		assert_int_equal(rc, -EBADMSG);
		free(got.p);
		index_zran_free(zp);

		padded.len = gz.len;
		bytebuf_put(&padded, "garbage", 7);
		assert_int_equal(index_zran_new(memsrc_open_varied(&m, padded.p, padded.len, 0), 0,
						&zp),
				 0);
		got = drain(zp, 1 * MiB, &rc);
		assert_int_equal(rc, -EBADMSG);
		free(got.p);
		index_zran_free(zp);
		free(padded.p);
	}
	free(out);
	free(gz.p);
	free(in);
}

/* Reads gz (cut at cut bytes) to the end; returns the final result. Checks the output so far against
 * in unless in is NULL (corrupt input may decode to wrong bytes before the CRC catches it). */
static ssize_t read_result(const uint8_t *gzp, size_t cut, const uint8_t *in, size_t chunk)
{
	struct index_zran *z = NULL;
	struct memsrc m;
	struct bytebuf got;
	ssize_t rc;
	uint8_t b[8];

	assert_int_equal(index_zran_new(memsrc_open_varied(&m, gzp, cut, chunk), 4 * KiB, &z), 0);
	got = drain(z, 50000, &rc);
	if (in && got.len)
		assert_memory_equal(got.p, in, got.len);
	if (rc < 0)
		assert_int_equal(index_zran_read(z, b, sizeof(b)), rc); /* sticky */
	free(got.p);
	index_zran_free(z);
	return rc;
}

/*
 * Feeds the bytes from checkpoint i's start to the end of gz to a streamed decoder in pieces of
 * varying sizes (1 byte up to piece), with output room varying likewise (1 byte up to room), and
 * checks that it yields in[cp->uoff, in_len) exactly, then reports the end of the stream (1) at the
 * zero padding when there is some. Returns the number of feed calls.
 */
static size_t check_streamed(const struct index_zran *z, size_t i, const struct bytebuf *gz,
			     size_t padding, const uint8_t *in, size_t in_len, size_t piece,
			     size_t room, uint64_t seed)
{
	const struct index_zran_cp *cp = index_zran_cp(z, i);
	const uint8_t *p = gz->p + comp_start(cp);
	size_t left = gz->len - comp_start(cp), got = 0, calls = 0;
	uint8_t *out = malloc(in_len - cp->uoff + 1);
	struct index_zran_dec *d;
	int rc = 0;

	assert_non_null(out);
	assert_int_equal(index_zran_dec_new(cp, index_zran_window(z, i), &d), 0);
	while (left > 0 || rc == 0) {
		size_t n = 1 + xorshift64(&seed) % piece, cap = 1 + xorshift64(&seed) % room;
		size_t made, before;

		if (n > left)
			n = left;
		if (cap > in_len - cp->uoff + 1 - got)
			cap = in_len - cp->uoff + 1 - got;
		before = n;
		rc = index_zran_dec_feed(d, &p, &n, out + got, cap, &made);
		calls++;
		assert_true(rc == 0 || rc == 1);
		left -= before - n;
		got += made;
		if (rc == 1)
			break;
		if (left == 0 && made == 0)
			break; /* all input used, no output left */
	}
	assert_int_equal(got, in_len - cp->uoff);
	assert_memory_equal(out, in + cp->uoff, got);
	assert_int_equal(rc, padding ? 1 : 0);
	assert_int_equal(left, padding); /* the padding stays unread */
	index_zran_dec_free(d);
	free(out);
	return calls;
}

/* The streamed decoder (what a span read uses) gives what one-shot extraction gives, whatever the
 * pieces the network delivers and the room the caller has, across members, with zero padding at
 * the end; corrupt bytes are an error, not a stall. */
static void test_streamed(void **state)
{
	static const size_t sizes[] = { 0, 100 * KiB, 3 * MiB };
	size_t len = sizes[1] + sizes[2], coffs[3];
	uint8_t *in = fill_words(len, 21);
	struct bytebuf gz = members_of(in, sizes, 3, coffs);
	struct index_zran *z;
	struct index_zran_dec *d;
	struct memsrc m;
	uint64_t seed = 99;
	uint8_t out[4096];
	size_t n, made;
	const uint8_t *p;
	int rc;

	(void)state;
	z = index_of(&gz, in, len, 16 * KiB, 5000, 70000, &m);
	for (size_t i = 0; i < index_zran_count(z); i += 7) {
		check_streamed(z, i, &gz, 0, in, len, 1 + xorshift64(&seed) % 70000,
			       1 + xorshift64(&seed) % 70000, i);
		if (i % 21 == 0) /* byte by byte */
			check_streamed(z, i, &gz, 0, in, len, 1, 1 + xorshift64(&seed) % 300, i);
	}
	/* zero padding after the last member: the decoder reports the end and leaves it */
	gz.p = realloc(gz.p, gz.len + 512);
	assert_non_null(gz.p);
	memset(gz.p + gz.len, 0, 512);
	gz.len += 512;
	check_streamed(z, 0, &gz, 512, in, len, 50000, 90000, 5);
	check_streamed(z, index_zran_count(z) - 1, &gz, 512, in, len, 3, 5000, 6);

	/* a bad member header, and a reserved deflate block type, are errors, never a decoder
	 * waiting for input */
	for (int bad = 0; bad < 2; bad++) {
		size_t at = bad == 0 ? coffs[2] : coffs[2] + 10; /* a 10-byte header: no FNAME */
		uint8_t keep = gz.p[at];

		gz.p[at] = bad == 0 ? 0x1e : 0x07; /* magic; BFINAL with BTYPE 11 */
		assert_int_equal(index_zran_dec_new(index_zran_cp(z, 0), NULL, &d), 0);
		p = gz.p;
		n = gz.len;
		do {
			size_t before = n;

			rc = index_zran_dec_feed(d, &p, &n, out,
						 1 + xorshift64(&seed) % sizeof(out), &made);
			assert_true(rc < 0 || (rc == 0 && (made > 0 || n < before)));
		} while (rc == 0 && n > 0);
		assert_int_equal(rc, -EBADMSG);
		index_zran_dec_free(d);
		gz.p[at] = keep;
	}
	index_zran_free(z);
	free(gz.p);
	free(in);
}

static void test_errors(void **state)
{
	size_t len = 300 * KiB;
	uint8_t *in = fill_words(len, 4);
	struct bytebuf gz = gzip_of(in, len, 6);
	static const size_t cuts[] = { 0, 1, 5, 10, 11, 100, 50000 };
	struct index_zran *z = NULL;
	uint8_t *out = malloc(len);
	struct memsrc m;
	uint8_t bad[1];

	(void)state;
	assert_non_null(out);
	/* truncation anywhere, including empty input, is -EPIPE */
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		assert_int_equal(read_result(gz.p, cuts[i], in, 0), -EPIPE);
	assert_int_equal(read_result(gz.p, gz.len / 2, in, 333), -EPIPE);
	assert_int_equal(read_result(gz.p, gz.len - 8, in, 0), -EPIPE);
	assert_int_equal(read_result(gz.p, gz.len - 3, in, 1), -EPIPE);
	assert_int_equal(read_result(gz.p, gz.len, in, 1000), 0);
	assert_int_equal(read_result(gz.p, 0, in, 0), -EPIPE);
	assert_non_null(strstr(strata_errmsg(EPIPE), "truncated gzip stream"));

	/* corruption: deflate data, CRC, ISIZE, magic, flags */
	gz.p[gz.len / 2] ^= 0x10;
	assert_int_equal(read_result(gz.p, gz.len, NULL, 0), -EBADMSG);
	gz.p[gz.len / 2] ^= 0x10;
	gz.p[gz.len - 8] ^= 1;
	assert_int_equal(read_result(gz.p, gz.len, NULL, 0), -EBADMSG);
	assert_non_null(strstr(strata_errmsg(EBADMSG), "crc mismatch"));
	gz.p[gz.len - 8] ^= 1;
	gz.p[gz.len - 2] ^= 1;
	assert_int_equal(read_result(gz.p, gz.len, NULL, 0), -EBADMSG);
	gz.p[gz.len - 2] ^= 1;
	gz.p[0] ^= 1;
	assert_int_equal(read_result(gz.p, gz.len, NULL, 0), -EBADMSG);
	gz.p[0] ^= 1;
	gz.p[3] |= 0x80;
	assert_int_equal(read_result(gz.p, gz.len, NULL, 0), -EBADMSG);
	gz.p[3] &= 0x7f;

	/* a source error is passed through and sticks */
	assert_int_equal(index_zran_new(memsrc_open_varied(&m, gz.p, gz.len, 4096), 0, &z), 0);
	m.fail_at = 20000;
	{
		struct bytebuf got;
		ssize_t rc;

		got = drain(z, 4096, &rc);
		assert_int_equal(rc, -EIO);
		assert_int_equal(index_zran_read(z, bad, 1), -EIO);
		free(got.p);
	}
	index_zran_free(z);

	/* extraction errors */
	z = index_of(&gz, in, len, 16 * KiB, 0, 65536, &m);
	assert_true(index_zran_count(z) >= 3);
	assert_int_equal(extract_at(z, 0, &gz, gz.len / 2, 0, out, len), -EPIPE);
	assert_int_equal(extract_at(z, 0, &gz, 5, 0, out, 1), -EPIPE);
	assert_int_equal(extract_at(z, 0, &gz, 0, 0, out, 1), -EPIPE);
	assert_int_equal(extract_at(z, 0, &gz, gz.len - 4, 0, out, len),
			 0); /* trailer not needed */
	assert_memory_equal(out, in, len);
	assert_int_equal(extract_at(z, 0, &gz, gz.len, 0, out, 0), 0);
	{
		const struct index_zran_cp *cp = index_zran_cp(z, 1);
		struct index_zran_cp c = *cp;
		uint8_t junk[64];

		assert_int_equal(cp->kind, INDEX_ZRAN_BLOCK);
		assert_int_equal(index_zran_extract(cp, index_zran_window(z, 1),
						    gz.p + comp_start(cp), gz.len - comp_start(cp),
						    len - cp->uoff, out, 1),
				 -EPIPE);
		c.bits = 1;
		assert_int_equal(index_zran_extract(&c, index_zran_window(z, 1), junk, 0, 0, out,
						    1),
				 -EPIPE);
		/* BFINAL 1, BTYPE 11: invalid block type */
		c.bits = 0;
		memset(junk, 0x07, sizeof(junk));
		assert_int_equal(index_zran_extract(&c, index_zran_window(z, 1), junk, sizeof(junk),
						    0, out, 16),
				 -EBADMSG);
		/* a member checkpoint over bytes that are not a gzip header */
		c = *index_zran_cp(z, 0);
		assert_int_equal(index_zran_extract(&c, NULL, junk, sizeof(junk), 0, out, 16),
				 -EBADMSG);
	}
	index_zran_free(z);
	free(out);
	free(gz.p);
	free(in);
}

static void test_windows(void **state)
{
	/* two incompressible members with a forced block boundary 10 KiB in: short windows there */
	size_t len = 400 * KiB, short_in_second = 0, full = 0;
	uint8_t *in = fill_random(len, 5);
	struct bytebuf a = { 0 };
	uint64_t starts[] = { 0, 200 * KiB };
	struct index_zran *z;
	struct memsrc m;

	(void)state;
	gzip_append(&a, in, 200 * KiB, 6, 10 * KiB);
	gzip_append(&a, in + 200 * KiB, 200 * KiB, 6, 10 * KiB);
	z = index_of(&a, in, len, 4 * KiB, 3000, 20000, &m);
	check_cps(z, in, 4 * KiB, starts, 2);
	for (size_t i = 0; i < index_zran_count(z); i++) {
		const struct index_zran_cp *cp = index_zran_cp(z, i);

		if (cp->kind != INDEX_ZRAN_BLOCK) {
			assert_null(index_zran_window(z, i));
			continue;
		}
		if (cp->wlen == INDEX_ZRAN_WINDOW)
			full++;
		else if (cp->uoff > 200 * KiB)
			short_in_second++;
	}
	assert_true(short_in_second >= 1);
	assert_true(full >= 4);
	check_extract(z, &a, in, len, 3, 50 * KiB, 50 * KiB, 13);
	index_zran_free(z);
	free(a.p);
	free(in);
}

/* What a window sink saw: windows in order, and how many were in memory when each arrived. */
struct sink_log {
	size_t n;
	uint8_t digest[64][32];
	uint32_t len[64];
	size_t held_max; /* windows still held by z (not yet handed on) at any call */
	const struct index_zran *z;
	int fail_at; /* call number that returns -EIO, or -1 */
};

static int log_window(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	struct sink_log *l = ctx;
	uint8_t d[32];
	size_t held = 0;

	if ((int)l->n == l->fail_at)
		return -EIO;
	assert_true(l->n < 64);
	util_sha256(data, len, d);
	assert_memory_equal(d, digest, 32);
	memcpy(l->digest[l->n], digest, 32);
	l->len[l->n] = (uint32_t)len;
	for (size_t i = 0; i < index_zran_count(l->z); i++)
		held += index_zran_window(l->z, i) != NULL;
	if (held > l->held_max)
		l->held_max = held;
	l->n++;
	return 0;
}

/* With a sink, windows leave memory as their checkpoints become final (one held at a time, not
 * one per 4 MiB of a gzip bomb), in stream order, with the same bytes as without a sink; a sink
 * error fails the read that recorded the next checkpoint. */
static void test_window_sink(void **state)
{
	size_t len = 600 * KiB;
	uint8_t *in = fill_random(len, 9);
	struct bytebuf a = { 0 }, out;
	struct index_zran *keep, *z;
	struct sink_log l = { .fail_at = -1 };
	struct memsrc m, m2;
	size_t blocks = 0;
	ssize_t rc;

	(void)state;
	gzip_append(&a, in, len, 6, 10 * KiB);
	keep = index_of(&a, in, len, 16 * KiB, 3000, 20000, &m);
	assert_int_equal(index_zran_new(memsrc_open_varied(&m2, a.p, a.len, 3000), 16 * KiB, &z),
			 0);
	l.z = z;
	index_zran_set_window_sink(z, log_window, &l);
	out = drain(z, 20000, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(out.len, len);
	assert_int_equal(index_zran_finish(z), 0);
	assert_int_equal(index_zran_count(z), index_zran_count(keep));
	for (size_t i = 0; i < index_zran_count(z); i++) {
		const struct index_zran_cp *cp = index_zran_cp(keep, i);
		uint8_t d[32];

		assert_null(index_zran_window(z, i));
		if (cp->kind != INDEX_ZRAN_BLOCK)
			continue;
		util_sha256(index_zran_window(keep, i), cp->wlen, d);
		assert_true(blocks < l.n);
		assert_memory_equal(l.digest[blocks], d, 32);
		assert_memory_equal(index_zran_window_digest(z, i), d, 32);
		assert_int_equal(l.len[blocks], cp->wlen);
		blocks++;
	}
	assert_true(blocks >= 8);
	assert_int_equal(l.n, blocks);
	assert_true(l.held_max <= 1);
	index_zran_free(z);
	free(out.p);

	/* the sink's error ends the stream */
	memset(&l, 0, sizeof(l));
	l.fail_at = 3;
	assert_int_equal(index_zran_new(memsrc_open_varied(&m2, a.p, a.len, 3000), 16 * KiB, &z),
			 0);
	l.z = z;
	index_zran_set_window_sink(z, log_window, &l);
	out = drain(z, 20000, &rc);
	assert_int_equal(rc, -EIO);
	index_zran_free(z);
	free(out.p);
	index_zran_free(keep);
	free(a.p);
	free(in);
}

/* Runs cmd (a shell command) with stdout captured. Returns 0 or -1. */
static int run_capture(const char *cmd, struct bytebuf *out)
{
	uint8_t tmp[65536];
	FILE *f = popen(cmd, "r");
	size_t n;

	if (!f)
		return -1;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		bytebuf_put(out, tmp, n);
	return pclose(f) == 0 ? 0 : -1;
}

/* Indexes a blob made by an external compressor: `tool path` writes it to stdout. */
static void check_tool(const char *tool, const char *path, const uint8_t *in, size_t len, int fname)
{
	char cmd[512];
	struct bytebuf gz = { 0 };
	uint64_t starts[] = { 0 };
	struct index_zran *z;
	struct memsrc m;

	snprintf(cmd, sizeof(cmd), "%s %s", tool, path);
	assert_int_equal(run_capture(cmd, &gz), 0);
	assert_true(gz.len > 18);
	assert_true(gz.p[0] == 0x1f && gz.p[1] == 0x8b);
	if (fname)
		assert_true(gz.p[3] & 0x08);
	z = index_of(&gz, in, len, 64 * KiB, 100000, 200000, &m);
	if (fname) /* one member */
		check_cps(z, in, 64 * KiB, starts, 1);
	assert_true(index_zran_count(z) >= 3);
	check_extract(z, &gz, in, len, 2, 200 * KiB, 100 * KiB, 14);
	index_zran_free(z);
	free(gz.p);
}

static void test_cli_tools(void **state)
{
	size_t len = 2 * MiB;
	uint8_t *in = fill_words(len, 6);
	uint8_t *rnd_part = fill_random(512 * KiB, 7);
	char path[] = "/tmp/strata-test-zran-XXXXXX";
	int fd;

	(void)state;
	memcpy(in + 1 * MiB, rnd_part, 512 * KiB);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, in, len), (ssize_t)len);
	close(fd);
	check_tool("gzip -c -6", path, in, len, 1);
	if (system("command -v pigz >/dev/null 2>&1") == 0)
		check_tool("pigz -c -b 128 -p 4", path, in, len, 1);
	else
		print_message("pigz not installed: pigz case skipped\n");
	unlink(path);
	free(rnd_part);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compressible), cmocka_unit_test(test_incompressible),
		cmocka_unit_test(test_zeros),	     cmocka_unit_test(test_members),
		cmocka_unit_test(test_errors),	     cmocka_unit_test(test_streamed),
		cmocka_unit_test(test_windows),	     cmocka_unit_test(test_window_sink),
		cmocka_unit_test(test_cli_tools),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

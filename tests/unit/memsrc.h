/* SPDX-License-Identifier: Apache-2.0 */
/* In-memory index_readers for unit tests: a source of bytes (short reads, injected errors), and a
 * drain of any reader into a buffer. */
#ifndef STRATA_TESTS_MEMSRC_H
#define STRATA_TESTS_MEMSRC_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "bytebuf.h"
#include "index/reader.h"
#include "util/log.h"

/* xorshift64: the next value of the state *s (never 0 when it starts non-zero). */
static inline uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* The bytes p[0..len) served by reads; memsrc_open fills it. A test may set fail_at afterwards. */
struct memsrc {
	const uint8_t *p;
	size_t len, pos;
	size_t chunk;	/* > 0: a read returns at most chunk bytes (0: as many as asked) */
	uint64_t seed;	/* != 0 (with chunk): a read returns 1..chunk bytes drawn from this */
	size_t fail_at; /* > 0: reads fail with -EIO ("mock read error") once pos reaches this */
};

static inline ssize_t memsrc_read(void *ctx, void *buf, size_t len)
{
	struct memsrc *m = ctx;
	size_t n = m->len - m->pos;

	if (m->fail_at > 0 && m->pos >= m->fail_at)
		return strata_err(EIO, "mock read error");
	if (n > len)
		n = len;
	if (m->chunk) {
		size_t c = m->seed ? 1 + xorshift64(&m->seed) % m->chunk : m->chunk;

		if (n > c)
			n = c;
	}
	if (n)
		memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

/* A reader of p[0..len) (borrowed: it must outlive the reader) whose reads return at most chunk
 * bytes each (0: all that is asked). m is the reader's state; it needs no freeing. */
static inline struct index_reader memsrc_open(struct memsrc *m, const void *p, size_t len,
					      size_t chunk)
{
	struct index_reader r = { memsrc_read, m };

	memset(m, 0, sizeof(*m));
	m->p = p;
	m->len = len;
	m->chunk = chunk;
	return r;
}

/* As memsrc_open, but each read returns 1..chunk bytes, chosen by a PRNG seeded from len and
 * chunk (the same sizes on every run). */
static inline struct index_reader memsrc_open_varied(struct memsrc *m, const void *p, size_t len,
						     size_t chunk)
{
	struct index_reader r = memsrc_open(m, p, len, chunk);

	m->seed = 0x9e3779b97f4a7c15ull ^ len ^ chunk;
	return r;
}

/* Reads r to its end (or an error) into a new buffer (the caller frees it), asking step bytes
 * a read (seed 0) or 1..step bytes drawn from the state seed. *rc gets the last read's return:
 * 0 at a clean end, else the negative errno. */
static inline struct bytebuf reader_drain(struct index_reader r, size_t step, uint64_t seed,
					  ssize_t *rc)
{
	struct bytebuf out = { 0 };
	uint8_t *tmp = malloc(step);

	assert_non_null(tmp);
	for (;;) {
		size_t want = seed ? 1 + xorshift64(&seed) % step : step;
		ssize_t n = r.read(r.ctx, tmp, want);

		if (n <= 0) {
			*rc = n;
			break;
		}
		assert_true((size_t)n <= want);
		bytebuf_put(&out, tmp, (size_t)n);
	}
	free(tmp);
	return out;
}

#endif

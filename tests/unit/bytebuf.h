/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer for unit tests, for archives, compressed streams and outputs in memory. */
#ifndef STRATA_TESTS_BYTEBUF_H
#define STRATA_TESTS_BYTEBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

/* Zero-initialize ({ 0 }); p is malloc'd, freed by bytebuf_free. One spare byte always follows
 * the len bytes, so that p[len] may be set to NUL. */
struct bytebuf {
	uint8_t *p;
	size_t len, cap;
};

/* Appends n bytes of d (d may be NULL when n is 0: then only room is made). Fails the test when
 * memory runs out. */
static inline void bytebuf_put(struct bytebuf *b, const void *d, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap < 64 ? 64 : b->cap;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = realloc(b->p, cap);
		assert_non_null(b->p);
		b->cap = cap;
	}
	if (n && d)
		memcpy(b->p + b->len, d, n);
	b->len += n;
}

/* Appends n zero bytes. */
static inline void bytebuf_zeros(struct bytebuf *b, size_t n)
{
	static const uint8_t z[512];

	while (n > 0) {
		size_t k = n < sizeof(z) ? n : sizeof(z);

		bytebuf_put(b, z, k);
		n -= k;
	}
}

static inline void bytebuf_free(struct bytebuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* n bytes of a fixed pseudo-random pattern (an LCG seeded with seed). */
static inline void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

#endif

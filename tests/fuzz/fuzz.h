/* SPDX-License-Identifier: Apache-2.0 */
/* What every fuzz target shares: the libFuzzer entry point and an in-memory reader over its input. */
#ifndef STRATA_TESTS_FUZZ_FUZZ_H
#define STRATA_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "index/reader.h"

/* Each target defines it; libFuzzer (or standalone.c) calls it once per input. Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A reader over a borrowed buffer, handing out at most step bytes per call (0 = all). */
struct fuzz_mem {
	const uint8_t *p;
	size_t len, pos, step;
};

static inline ssize_t fuzz_mem_read(void *ctx, void *buf, size_t len)
{
	struct fuzz_mem *m = ctx;
	size_t n = m->len - m->pos;

	if (n > len)
		n = len;
	if (m->step && n > m->step)
		n = m->step;
	memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static inline struct index_reader fuzz_mem_reader(struct fuzz_mem *m, const uint8_t *p, size_t len,
						  size_t step)
{
	m->p = p;
	m->len = len;
	m->pos = 0;
	m->step = step;
	return (struct index_reader){ fuzz_mem_read, m };
}

struct index_layer;

/* Asks l what the read path asks: every chunk's span, every name of every directory. */
void fuzz_query_layer(const struct index_layer *l);

/* mkseeds.py: with FUZZ_DUMP_INDEX=DIR in the environment, writes the encoded index there (the
 * seeds of the layer_decode target); does nothing otherwise. */
void fuzz_dump_index(const void *enc, size_t len);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* A gzip writer for unit tests: one gzip member of some bytes, made with zlib. */
#ifndef STRATA_TESTS_GZIPW_H
#define STRATA_TESTS_GZIPW_H

#include <zlib.h>

#include "bytebuf.h"

/* Appends one gzip member of data[0..len) at zlib level to out. sync_at > 0 (and < len) forces
 * a deflate block boundary (Z_SYNC_FLUSH) after the first sync_at bytes. */
static inline void gzip_append(struct bytebuf *out, const void *data, size_t len, int level,
			       size_t sync_at)
{
	z_stream z;
	uint8_t chunk[65536];
	size_t fed = 0;
	int rc;

	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
			 Z_OK);
	z.next_in = (Bytef *)(uintptr_t)data;
	do {
		size_t part = len - fed;
		int flush = Z_FINISH;

		if (sync_at > fed && sync_at < len) {
			part = sync_at - fed;
			flush = Z_SYNC_FLUSH;
		}
		z.avail_in = (uInt)part;
		do {
			z.next_out = chunk;
			z.avail_out = sizeof(chunk);
			rc = deflate(&z, flush);
			assert_true(rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR);
			bytebuf_put(out, chunk, sizeof(chunk) - z.avail_out);
		} while (flush == Z_FINISH ? rc != Z_STREAM_END : z.avail_out == 0);
		fed += part;
	} while (rc != Z_STREAM_END);
	deflateEnd(&z);
}

/* One gzip member of data[0..len) at zlib level, in a new buffer (the caller frees it). */
static inline struct bytebuf gzip_of(const void *data, size_t len, int level)
{
	struct bytebuf out = { 0 };

	gzip_append(&out, data, len, level, 0);
	return out;
}

#endif

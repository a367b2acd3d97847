/* SPDX-License-Identifier: Apache-2.0 */
/* Streaming decompression of layer blobs: gzip (multi-member), zstd (multi-frame) or none. */
#ifndef STRATA_INDEX_DECOMP_H
#define STRATA_INDEX_DECOMP_H

#include <stddef.h>
#include <stdint.h>

#include "reader.h"

enum index_compression {
	INDEX_COMP_NONE = 0,
	INDEX_COMP_GZIP = 1,
	INDEX_COMP_ZSTD = 2,
};

/* "none", "gzip" or "zstd". */
const char *index_compression_name(enum index_compression c);

/* Maps an OCI or Docker layer media type (tar, tar+gzip, tar+zstd, nondistributable and foreign
 * forms) to its compression. Returns 0, or -ENOTSUP for anything else (also NULL). */
int index_compression_of_media_type(const char *media_type, enum index_compression *out);

/* Guesses the compression from the first bytes of a blob (gzip 1f 8b, zstd 28 b5 2f fd, else none). */
enum index_compression index_compression_detect(const uint8_t *buf, size_t len);

struct index_decomp;

/*
 * Creates a decompressor that reads compressed bytes from src (borrowed; must outlive it).
 * Returns 0 and *out, or -ENOMEM.
 */
int index_decomp_new(enum index_compression c, struct index_reader src, struct index_decomp **out);

/*
 * Reads decompressed bytes. Returns >0 bytes, 0 at the clean end of the compressed stream, or a
 * negative errno with strata_err set: -EBADMSG for corrupt data ("corrupt gzip stream: <zlib msg>"),
 * -EPIPE when the stream ends inside a member/frame ("truncated gzip stream"), or the source's error.
 * For gzip, concatenated members are one stream (eStargz relies on this); trailing zero bytes after
 * the last member are ignored. For zstd, concatenated frames and skippable frames are handled.
 */
ssize_t index_decomp_read(struct index_decomp *d, void *buf, size_t len);

/* A reader over the decompressor (ctx = d). */
struct index_reader index_decomp_reader(struct index_decomp *d);

/* Compressed bytes consumed from src so far. */
uint64_t index_decomp_consumed(const struct index_decomp *d);

/* Called (zstd only) each time a frame ends, with the compressed and uncompressed offsets just
 * past it: where the next frame, if any, starts. Lets an index checkpoint frame starts. */
typedef void (*index_frame_fn)(void *ctx, uint64_t coff, uint64_t uoff);
void index_decomp_on_frame(struct index_decomp *d, index_frame_fn fn, void *ctx);

/* Frees d (NULL ok). Does not touch src. */
void index_decomp_free(struct index_decomp *d);

#endif

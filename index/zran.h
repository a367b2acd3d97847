/* SPDX-License-Identifier: Apache-2.0 */
/* Random access into gzip streams: zran-style checkpoints recorded while inflating, and
 * extraction of an uncompressed range from a checkpoint and the compressed bytes after it. */
#ifndef STRATA_INDEX_ZRAN_H
#define STRATA_INDEX_ZRAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "reader.h"

#define INDEX_ZRAN_WINDOW 32768u

enum index_zran_kind {
	INDEX_ZRAN_MEMBER = 0, /* a gzip member header starts at coff (bits 0, no window) */
	INDEX_ZRAN_BLOCK = 1,  /* a deflate block starts at bit `bits` of byte coff - 1 (bits 1..7)
				  or at byte coff (bits 0); needs the 32 KiB window before it */
};

/* One checkpoint. uoff/coff are offsets in the uncompressed and compressed streams. */
struct index_zran_cp {
	uint64_t uoff;
	uint64_t coff;
	uint8_t bits;  /* BLOCK: number of bits of byte coff-1 that belong to the block (0..7) */
	uint8_t kind;  /* enum index_zran_kind */
	uint32_t wlen; /* BLOCK: window length (< 32 KiB only near the stream start), else 0 */
};

struct index_zran;

/*
 * Creates a gzip inflater over src (borrowed) that records checkpoints as it goes: one at the start
 * of every gzip member, and one at a deflate block boundary whenever at least `span` compressed bytes
 * (or 4 * span uncompressed bytes) have passed since the previous checkpoint. span 0 = 1 MiB.
 * Returns 0 and *out, or -ENOMEM.
 */
int index_zran_new(struct index_reader src, uint64_t span, struct index_zran **out);

/* Reads uncompressed bytes; same contract as index_decomp_read (0 at the clean end of the last
 * member, -EBADMSG corrupt, -EPIPE truncated, trailing zero padding tolerated). */
ssize_t index_zran_read(struct index_zran *z, void *buf, size_t len);

/* A reader over z (ctx = z). */
struct index_reader index_zran_reader(struct index_zran *z);

/* Checkpoints recorded so far, in stream order; cp->uoff strictly increasing. The pointer is valid
 * until the next index_zran_read. Window i (wlen bytes) is what index_zran_window returns. */
size_t index_zran_count(const struct index_zran *z);
const struct index_zran_cp *index_zran_cp(const struct index_zran *z, size_t i);
const uint8_t *index_zran_window(const struct index_zran *z, size_t i); /* NULL once handed on */

/* Receives a final checkpoint's window (len bytes) and its sha256; a negative errno fails the read
 * that recorded the next checkpoint (or index_zran_finish). */
typedef int (*index_zran_window_fn)(void *ctx, const uint8_t digest[32], const void *data,
				    size_t len);

/*
 * With a sink, each window is handed to fn once its checkpoint is final (a checkpoint at a later
 * offset was recorded) and freed, so memory holds one window however long the stream; without
 * one (the default) every window stays readable through index_zran_window. Set before reading.
 */
void index_zran_set_window_sink(struct index_zran *z, index_zran_window_fn fn, void *ctx);

/* At the end of the stream: makes every checkpoint final (hashing, and handing its window to the
 * sink). Returns 0 or the sink's negative errno. */
int index_zran_finish(struct index_zran *z);

/* The sha256 of window i (BLOCK checkpoints), valid once it is final: i below the count at the last
 * index_zran_finish. */
const uint8_t *index_zran_window_digest(const struct index_zran *z, size_t i);

/* Total compressed bytes consumed so far (the blob size once the stream has ended). */
uint64_t index_zran_consumed(const struct index_zran *z);

void index_zran_free(struct index_zran *z);

struct index_zran_dec;

/*
 * A gzip decoder starting at checkpoint cp, fed the compressed bytes from cp->coff - (cp->bits ? 1
 * : 0) on as they arrive; window (cp->wlen bytes, NULL for MEMBER) is borrowed for this call only.
 * Returns 0 and *out (free with index_zran_dec_free), -EINVAL for an invalid checkpoint, -ENOMEM;
 * strata_err set.
 */
int index_zran_dec_new(const struct index_zran_cp *cp, const uint8_t *window,
		       struct index_zran_dec **out);

/*
 * Decodes the next compressed bytes: consumes from *in (advancing *in, lowering *in_len) and writes
 * the next uncompressed bytes (from cp->uoff on, across member boundaries) to out, at most cap, their
 * count in *made. Returns 0 when it stopped because the input ran out (*in_len == 0: call again
 * with more, or with none to collect output that did not fit) or out is full (*made == cap), 1 when
 * the gzip stream ended (zero padding follows: *in holds no more data), -EBADMSG for corrupt data,
 * -ENOMEM; strata_err set. Memory stays bounded (zlib's state) whatever the stream's length.
 */
int index_zran_dec_feed(struct index_zran_dec *d, const uint8_t **in, size_t *in_len, uint8_t *out,
			size_t cap, size_t *made);

/* Frees d; NULL is accepted. */
void index_zran_dec_free(struct index_zran_dec *d);

/*
 * Inflates from checkpoint cp: comp holds the compressed bytes starting at cp->coff - (cp->bits ? 1 : 0)
 * (clen of them; the caller fetched them with a range request), window the cp->wlen bytes recorded
 * for cp (NULL for MEMBER). Skips `skip` uncompressed bytes, then writes exactly len bytes to out,
 * continuing across member boundaries when the range spans them.
 * Returns 0, -EPIPE when comp ends before len bytes were produced, -EBADMSG for corrupt data, or
 * -ENOMEM. Thread-safe (no shared state).
 */
int index_zran_extract(const struct index_zran_cp *cp, const uint8_t *window, const uint8_t *comp,
		       size_t clen, uint64_t skip, void *out, size_t len);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* gzip extraction from a zran checkpoint: a decoder fed the compressed bytes as they arrive (so a
 * span is never held whole), and the one-shot extraction of a range from a buffer. */
#include "zran.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "util/log.h"
#include "zran_i.h"

#define SCRATCH_SIZE (32 * 1024)

/* Where the decoder is in the gzip stream. */
enum dstate {
	D_PRIME,   /* a BLOCK checkpoint with bits: the first byte's high bits start the block */
	D_HEADER,  /* inside a member header */
	D_DEFLATE, /* inside a member's deflate data */
	D_TRAILER, /* inside a member's CRC32 + ISIZE trailer (not checked: decoding started
		    * mid-member; the caller checks digests) */
	D_BETWEEN, /* a member just ended: a member or zero padding follows */
};

struct index_zran_dec {
	z_stream s; /* raw inflate */
	enum dstate st;
	struct index_gzhdr h;
	uint8_t bits;  /* D_PRIME */
	unsigned tlen; /* D_TRAILER: bytes seen */
};

int index_zran_dec_new(const struct index_zran_cp *cp, const uint8_t *window,
		       struct index_zran_dec **out)
{
	struct index_zran_dec *d;

	*out = NULL;
	if (cp->kind == INDEX_ZRAN_MEMBER && (cp->bits || cp->wlen))
		return strata_err(EINVAL, "gzip extract: member checkpoint with bits or window");
	if (cp->kind != INDEX_ZRAN_MEMBER &&
	    (cp->kind != INDEX_ZRAN_BLOCK || cp->bits > 7 || cp->wlen > INDEX_ZRAN_WINDOW ||
	     (cp->wlen && !window)))
		return strata_err(EINVAL, "gzip extract: invalid checkpoint");
	d = calloc(1, sizeof(*d));
	if (!d)
		return strata_err(ENOMEM, "out of memory creating gzip decoder");
	if (inflateInit2(&d->s, -MAX_WBITS) != Z_OK) {
		free(d);
		return strata_err(ENOMEM, "out of memory creating gzip decoder");
	}
	if (cp->wlen && inflateSetDictionary(&d->s, window, cp->wlen) != Z_OK) {
		index_zran_dec_free(d);
		return strata_err(EINVAL, "gzip extract: inflateSetDictionary failed");
	}
	d->bits = cp->bits;
	if (cp->kind == INDEX_ZRAN_MEMBER) {
		d->st = D_HEADER;
		index_gzhdr_init(&d->h);
	} else {
		d->st = cp->bits ? D_PRIME : D_DEFLATE;
	}
	*out = d;
	return 0;
}

/* One inflate() call of the D_DEFLATE state. Returns 0 (the caller loops), 2 when it needs more
 * input or room, or negative errno. */
static int inflate_some(struct index_zran_dec *d, const uint8_t **in, size_t *in_len, uint8_t *out,
			size_t cap, size_t *made)
{
	size_t in_avail, room;
	int zrc;

	if (*made == cap)
		return 2;
	d->s.next_in = (Bytef *)(uintptr_t)*in;
	d->s.avail_in = *in_len > UINT_MAX ? UINT_MAX : (uInt)*in_len;
	d->s.next_out = out + *made;
	d->s.avail_out = cap - *made > UINT_MAX ? UINT_MAX : (uInt)(cap - *made);
	in_avail = d->s.avail_in;
	room = d->s.avail_out;
	zrc = inflate(&d->s, Z_NO_FLUSH);
	*in += in_avail - d->s.avail_in;
	*in_len -= in_avail - d->s.avail_in;
	*made += room - d->s.avail_out;
	if (zrc == Z_STREAM_END) {
		d->st = D_TRAILER;
		d->tlen = 0;
		return 0;
	}
	if (zrc == Z_BUF_ERROR) /* no progress: all input used, or a corrupt stream */
		return *in_len == 0 ? 2 :
				      strata_err(EBADMSG, "corrupt gzip stream: decoder stalled");
	if (zrc != Z_OK)
		return index_zlib_error(&d->s, zrc);
	if (in_avail == d->s.avail_in && room == d->s.avail_out)
		return *in_len == 0 ? 2 :
				      strata_err(EBADMSG, "corrupt gzip stream: decoder stalled");
	return 0;
}

int index_zran_dec_feed(struct index_zran_dec *d, const uint8_t **in, size_t *in_len, uint8_t *out,
			size_t cap, size_t *made)
{
	ssize_t n;
	size_t take;
	int rc;

	*made = 0;
	for (;;) {
		switch (d->st) {
		case D_PRIME:
			if (*in_len == 0)
				return 0;
			if (inflatePrime(&d->s, d->bits, (*in)[0] >> (8 - d->bits)) != Z_OK)
				return strata_err(EINVAL, "gzip extract: inflatePrime failed");
			(*in)++;
			(*in_len)--;
			d->st = D_DEFLATE;
			break;
		case D_HEADER:
			if (*in_len == 0)
				return 0;
			n = index_gzhdr_feed(&d->h, *in, *in_len);
			if (n < 0)
				return (int)n;
			*in += n;
			*in_len -= (size_t)n;
			if (d->h.step == H_DONE) {
				if (inflateReset(&d->s) != Z_OK)
					return strata_err(EINVAL,
							  "gzip extract: inflateReset failed");
				d->st = D_DEFLATE;
			}
			break;
		case D_DEFLATE:
			rc = inflate_some(d, in, in_len, out, cap, made);
			if (rc != 0)
				return rc == 2 ? 0 : rc;
			break;
		case D_TRAILER:
			take = 8 - d->tlen < *in_len ? 8 - d->tlen : *in_len;
			*in += take;
			*in_len -= take;
			d->tlen += (unsigned)take;
			if (d->tlen < 8)
				return 0;
			d->st = D_BETWEEN;
			break;
		case D_BETWEEN:
			if (*in_len == 0)
				return 0;
			if ((*in)[0] == 0)
				return 1; /* zero padding: no member follows */
			index_gzhdr_init(&d->h);
			d->st = D_HEADER;
			break;
		}
	}
}

void index_zran_dec_free(struct index_zran_dec *d)
{
	if (!d)
		return;
	inflateEnd(&d->s);
	free(d);
}

int index_zran_extract(const struct index_zran_cp *cp, const uint8_t *window, const uint8_t *comp,
		       size_t clen, uint64_t skip, void *out, size_t len)
{
	struct index_zran_dec *d;
	uint8_t *scratch = NULL;
	size_t made = 0;
	int rc;

	assert(cp && (comp || clen == 0) && (out || len == 0));
	rc = index_zran_dec_new(cp, window, &d);
	if (rc < 0)
		return rc;
	if (skip > 0) {
		scratch = malloc(SCRATCH_SIZE);
		if (!scratch) {
			rc = strata_err(ENOMEM, "out of memory extracting from gzip");
			goto out;
		}
	}
	while (made < len) {
		uint8_t *dst = skip > 0 ? scratch : (uint8_t *)out + made;
		size_t want = skip > 0 ? (skip < SCRATCH_SIZE ? (size_t)skip : SCRATCH_SIZE) :
					 len - made;
		size_t got;

		rc = index_zran_dec_feed(d, &comp, &clen, dst, want, &got);
		if (rc < 0)
			goto out;
		if (skip > 0)
			skip -= got;
		else
			made += got;
		if (rc == 1) {
			rc = strata_err(EPIPE,
					"gzip extract: the range extends past the gzip stream");
			goto out;
		}
		if (got == 0) { /* the decoder needs input and there is none */
			rc = strata_err(EPIPE,
					"gzip extract: compressed data ends before the range");
			goto out;
		}
	}
	rc = 0;
out:
	index_zran_dec_free(d);
	free(scratch);
	return rc;
}

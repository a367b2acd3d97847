/* SPDX-License-Identifier: Apache-2.0 */
/* zran-style gzip random access: a multi-member gzip inflater that records member and deflate-block
 * checkpoints with their 32 KiB windows (extraction from one is zran_extract.c). */
#include "zran.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "util/log.h"
#include "util/sha256.h"
#include "zran_i.h"

#define IN_BUF_SIZE  (64 * 1024)
#define DEFAULT_SPAN (1024 * 1024)

/* gzip header flags (RFC 1952) */
#define GZ_FHCRC     0x02
#define GZ_FEXTRA    0x04
#define GZ_FNAME     0x08
#define GZ_FCOMMENT  0x10
#define GZ_FRESERVED 0xe0

/* Where the streaming inflater is in the gzip stream. */
enum zstate {
	ZS_HEADER,  /* inside a member header */
	ZS_DEFLATE, /* inside a member's deflate data */
	ZS_TRAILER, /* inside a member's CRC32 + ISIZE trailer */
	ZS_BETWEEN, /* a member just ended: next byte starts a member or padding, or the input ends */
	ZS_PADDING, /* only zero bytes may follow */
};

struct index_zran {
	struct index_reader src; /* borrowed */
	uint64_t span;		 /* compressed bytes between checkpoints */
	uint64_t uspan;		 /* uncompressed bytes between checkpoints (4 * span) */

	uint8_t *in;	       /* compressed input buffer, IN_BUF_SIZE */
	size_t in_pos, in_len; /* unconsumed input is in[in_pos, in_len) */
	bool src_eof;
	bool done; /* clean end reached: read() returns 0 from now on */
	int err;   /* sticky negative errno after a failure, else 0 */

	z_stream zs; /* raw inflate (windowBits -15); members are framed here */
	bool zs_init;
	enum zstate st;
	struct index_gzhdr hdr;
	uint64_t hdr_coff; /* compressed offset of the current member's first header byte */
	uint8_t trailer[8];
	unsigned tlen;
	uint32_t crc;	     /* running CRC-32 of the current member's output */
	uint64_t member_out; /* uncompressed bytes produced by the current member */

	uint64_t consumed; /* compressed bytes consumed (header, deflate, trailer, padding) */
	uint64_t produced; /* uncompressed bytes produced */

	struct index_zran_cp *cps; /* ncp checkpoints, capacity cap */
	uint8_t **windows;	   /* windows[i]: cps[i].wlen bytes, NULL for MEMBER or handed on */
	uint8_t (*wdig)[32];	   /* wdig[i]: sha256 of window i, once final (i < nfinal) */
	size_t ncp, cap;
	size_t nfinal;		   /* checkpoints [0, nfinal) can no longer be replaced */
	index_zran_window_fn sink; /* NULL: windows stay in memory until index_zran_free */
	void *sink_ctx;
};

/* ---- gzip member header parser (shared by the streaming reader and extract) ---- */

void index_gzhdr_init(struct index_gzhdr *h)
{
	memset(h, 0, sizeof(*h));
	h->step = H_FIXED;
	h->crc = (uint32_t)crc32(0, Z_NULL, 0);
}

/* Moves to the first header part after `from` that the flags say is present. */
static void hdr_next(struct index_gzhdr *h, enum hdr_step from)
{
	h->n = 0;
	switch (from) {
	case H_FIXED:
		if (h->flg & GZ_FEXTRA) {
			h->step = H_XLEN;
			return;
		}
		/* fallthrough */
	case H_XLEN:
	case H_EXTRA:
		if (h->flg & GZ_FNAME) {
			h->step = H_NAME;
			return;
		}
		/* fallthrough */
	case H_NAME:
		if (h->flg & GZ_FCOMMENT) {
			h->step = H_COMMENT;
			return;
		}
		/* fallthrough */
	case H_COMMENT:
		if (h->flg & GZ_FHCRC) {
			h->step = H_HCRC;
			return;
		}
		/* fallthrough */
	case H_HCRC:
	case H_DONE:
		h->step = H_DONE;
		return;
	}
}

/*
 * Feeds header bytes p[0..len) to h and stops at the end of the header. Returns the number of bytes
 * consumed (h->step == H_DONE once the header is complete), or -EBADMSG with strata_err set.
 */
ssize_t index_gzhdr_feed(struct index_gzhdr *h, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len && h->step != H_DONE; i++) {
		uint8_t c = p[i];

		if (h->step != H_HCRC && (h->step == H_FIXED || (h->flg & GZ_FHCRC)))
			h->crc = (uint32_t)crc32(h->crc, &c, 1);
		switch (h->step) {
		case H_FIXED:
			if ((h->n == 0 && c != 0x1f) || (h->n == 1 && c != 0x8b))
				return strata_err(EBADMSG,
						  "corrupt gzip stream: incorrect header check");
			if (h->n == 2 && c != Z_DEFLATED)
				return strata_err(
					EBADMSG,
					"corrupt gzip stream: unknown compression method %u", c);
			if (h->n == 3) {
				if (c & GZ_FRESERVED)
					return strata_err(
						EBADMSG,
						"corrupt gzip stream: unknown header flags set");
				h->flg = c;
			}
			if (++h->n == 10)
				hdr_next(h, H_FIXED);
			break;
		case H_XLEN:
			h->xlen |= (uint32_t)c << (8 * h->n);
			if (++h->n == 2) {
				h->n = 0;
				h->step = H_EXTRA;
				if (h->xlen == 0)
					hdr_next(h, H_EXTRA);
			}
			break;
		case H_EXTRA:
			if (++h->n == h->xlen)
				hdr_next(h, H_EXTRA);
			break;
		case H_NAME:
		case H_COMMENT:
			if (c == 0)
				hdr_next(h, h->step);
			break;
		case H_HCRC:
			h->hcrc |= (uint16_t)(c << (8 * h->n));
			if (++h->n == 2) {
				if (h->hcrc != (h->crc & 0xffff))
					return strata_err(
						EBADMSG,
						"corrupt gzip stream: header crc mismatch");
				hdr_next(h, H_HCRC);
			}
			break;
		case H_DONE:
			break;
		}
	}
	return (ssize_t)i;
}

uint32_t index_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Converts a failed inflate() return into a negative errno with the message set. */
int index_zlib_error(const z_stream *s, int zrc)
{
	if (zrc == Z_MEM_ERROR)
		return strata_err(ENOMEM, "out of memory in gzip decoder");
	return strata_err(EBADMSG, "corrupt gzip stream: %s", s->msg ? s->msg : zError(zrc));
}

/* ---- streaming inflater with checkpoints ---- */

int index_zran_new(struct index_reader src, uint64_t span, struct index_zran **out)
{
	struct index_zran *z;
	int rc = 0;

	assert(src.read && out);
	*out = NULL;
	z = calloc(1, sizeof(*z));
	if (!z) {
		rc = -ENOMEM;
		goto out;
	}
	z->src = src;
	z->span = span ? span : DEFAULT_SPAN;
	z->uspan = z->span > UINT64_MAX / 4 ? UINT64_MAX : 4 * z->span;
	z->in = malloc(IN_BUF_SIZE);
	if (!z->in) {
		rc = -ENOMEM;
		goto out;
	}
	if (inflateInit2(&z->zs, -MAX_WBITS) != Z_OK) {
		rc = -ENOMEM;
		goto out;
	}
	z->zs_init = true;
	z->st = ZS_HEADER;
	index_gzhdr_init(&z->hdr);
	*out = z;
	z = NULL;
out:
	if (rc < 0)
		strata_err(-rc, "out of memory creating gzip index reader");
	index_zran_free(z);
	return rc;
}

/* Checkpoints before `upto` are final (a later uoff follows them): each window is hashed and, with
 * a sink, handed to it and freed, so that at most the last window stays in memory. Returns 0 or the
 * sink's negative errno. */
static int finalize(struct index_zran *z, size_t upto)
{
	for (; z->nfinal < upto; z->nfinal++) {
		size_t i = z->nfinal;
		int rc;

		if (!z->windows[i])
			continue;
		util_sha256(z->windows[i], z->cps[i].wlen, z->wdig[i]);
		if (!z->sink)
			continue;
		rc = z->sink(z->sink_ctx, z->wdig[i], z->windows[i], z->cps[i].wlen);
		if (rc < 0)
			return rc;
		free(z->windows[i]);
		z->windows[i] = NULL;
	}
	return 0;
}

/*
 * Appends a checkpoint; window (wlen bytes, malloc'd) is taken over, also on failure. The previous
 * checkpoint is replaced when it has the same uoff and is a BLOCK (a member start needs no window);
 * a MEMBER after a MEMBER at the same uoff (empty member) is dropped, so cps[0] stays at 0/0.
 * The checkpoints before the new one become final (see finalize).
 * Returns 0, -ENOMEM or the window sink's negative errno.
 */
static int add_cp(struct index_zran *z, const struct index_zran_cp *cp, uint8_t *window)
{
	int rc;

	if (z->ncp > 0 && z->cps[z->ncp - 1].uoff == cp->uoff) {
		if (z->cps[z->ncp - 1].kind == INDEX_ZRAN_MEMBER || cp->kind == INDEX_ZRAN_BLOCK) {
			free(window);
			return 0;
		}
		z->ncp--;
		free(z->windows[z->ncp]);
		z->windows[z->ncp] = NULL;
	}
	assert(z->ncp == 0 || z->cps[z->ncp - 1].uoff < cp->uoff);
	rc = finalize(z, z->ncp);
	if (rc < 0) {
		free(window);
		return rc;
	}
	if (z->ncp == z->cap) {
		size_t cap = z->cap ? 2 * z->cap : 16;
		struct index_zran_cp *cps = realloc(z->cps, cap * sizeof(*cps));
		uint8_t **windows;
		uint8_t(*wdig)[32];

		if (!cps) {
			free(window);
			return strata_err(ENOMEM, "out of memory recording a gzip checkpoint");
		}
		z->cps = cps;
		windows = realloc(z->windows, cap * sizeof(*windows));
		if (!windows) {
			free(window);
			return strata_err(ENOMEM, "out of memory recording a gzip checkpoint");
		}
		z->windows = windows;
		wdig = realloc(z->wdig, cap * sizeof(*wdig));
		if (!wdig) {
			free(window);
			return strata_err(ENOMEM, "out of memory recording a gzip checkpoint");
		}
		z->wdig = wdig;
		z->cap = cap;
	}
	z->cps[z->ncp] = *cp;
	z->windows[z->ncp] = window;
	z->ncp++;
	return 0;
}

/* Records a BLOCK checkpoint at the current position (a deflate block boundary inside a member, not
 * its last) when span compressed or 4 * span uncompressed bytes passed since the previous one.
 * Returns 0 or -ENOMEM. */
static int maybe_block_cp(struct index_zran *z)
{
	const struct index_zran_cp *last;
	struct index_zran_cp cp = { 0 };
	uint8_t *window;
	uInt wlen = 0;
	int bits = z->zs.data_type & 7;

	assert(z->ncp > 0); /* the member's own checkpoint at least */
	last = &z->cps[z->ncp - 1];
	if (z->produced == last->uoff)
		return 0;
	if (z->consumed - last->coff < z->span && z->produced - last->uoff < z->uspan)
		return 0;
	/* raw inflate's window holds the last min(32 KiB, member_out) bytes of this member only:
	 * inflateReset() at each member start empties it */
	if (inflateGetDictionary(&z->zs, Z_NULL, &wlen) != Z_OK)
		return strata_err(EINVAL, "gzip index: cannot read the inflate window");
	assert(wlen > 0 && wlen <= INDEX_ZRAN_WINDOW);
	assert(wlen == (z->member_out < INDEX_ZRAN_WINDOW ? z->member_out : INDEX_ZRAN_WINDOW));
	window = malloc(wlen);
	if (!window)
		return strata_err(ENOMEM, "out of memory recording a gzip checkpoint");
	if (inflateGetDictionary(&z->zs, window, &wlen) != Z_OK) {
		free(window);
		return strata_err(EINVAL, "gzip index: cannot read the inflate window");
	}
	cp.uoff = z->produced;
	cp.coff =
		z->consumed; /* the next unread byte; `bits` bits of the byte before belong here */
	cp.bits = (uint8_t)bits;
	cp.kind = INDEX_ZRAN_BLOCK;
	cp.wlen = wlen;
	return add_cp(z, &cp, window);
}

/* Refills the input buffer when it is empty. Returns 0 (src_eof set at the end) or negative errno. */
static int fill(struct index_zran *z)
{
	ssize_t n;

	if (z->in_pos < z->in_len || z->src_eof)
		return 0;
	z->in_pos = 0;
	z->in_len = 0;
	n = z->src.read(z->src.ctx, z->in, IN_BUF_SIZE);
	if (n < 0)
		return (int)n;
	if (n == 0)
		z->src_eof = true;
	z->in_len = (size_t)n;
	return 0;
}

/* Consumes n bytes of input. */
static void take(struct index_zran *z, size_t n)
{
	z->in_pos += n;
	z->consumed += n;
}

/* Parses header bytes; at the header's end records the MEMBER checkpoint and starts inflating.
 * Returns 0 or negative errno. */
static int step_header(struct index_zran *z)
{
	struct index_zran_cp cp = { 0 };
	ssize_t n = index_gzhdr_feed(&z->hdr, z->in + z->in_pos, z->in_len - z->in_pos);

	if (n < 0)
		return (int)n;
	take(z, (size_t)n);
	if (z->hdr.step != H_DONE)
		return 0;
	if (inflateReset(&z->zs) != Z_OK)
		return strata_err(EINVAL, "gzip index: inflateReset failed");
	z->crc = (uint32_t)crc32(0, Z_NULL, 0);
	z->member_out = 0;
	z->st = ZS_DEFLATE;
	cp.uoff = z->produced;
	cp.coff = z->hdr_coff;
	cp.kind = INDEX_ZRAN_MEMBER;
	return add_cp(z, &cp, NULL);
}

/* Inflates into buf[0..len) up to the next deflate block boundary. Returns bytes produced (>= 0),
 * or negative errno; a member end moves to ZS_TRAILER. */
static ssize_t step_deflate(struct index_zran *z, uint8_t *buf, size_t len)
{
	size_t in_avail = z->in_len - z->in_pos, used, made;
	int zrc, rc;

	z->zs.next_in = z->in + z->in_pos;
	z->zs.avail_in = (uInt)in_avail;
	z->zs.next_out = buf;
	z->zs.avail_out = len > UINT_MAX ? UINT_MAX : (uInt)len;
	made = z->zs.avail_out;
	zrc = inflate(&z->zs, Z_BLOCK);
	used = in_avail - z->zs.avail_in;
	made -= z->zs.avail_out;
	take(z, used);
	if (made) {
		z->crc = (uint32_t)crc32(z->crc, buf, (uInt)made);
		z->member_out += made;
		z->produced += made;
	}
	switch (zrc) {
	case Z_STREAM_END:
		z->st = ZS_TRAILER;
		z->tlen = 0;
		return (ssize_t)made;
	case Z_OK:
		break;
	case Z_BUF_ERROR: /* no progress possible: needs input */
		if (z->in_pos == z->in_len && z->src_eof)
			return strata_err(EPIPE, "truncated gzip stream");
		return (ssize_t)made;
	default:
		return index_zlib_error(&z->zs, zrc);
	}
	/* 128: stopped right after a block's end code; 64: that block was the member's last */
	if ((z->zs.data_type & 128) && !(z->zs.data_type & 64)) {
		rc = maybe_block_cp(z);
		if (rc < 0)
			return rc;
	}
	if (used == 0 && made == 0 && z->in_pos == z->in_len && z->src_eof)
		return strata_err(EPIPE, "truncated gzip stream");
	return (ssize_t)made;
}

/* Collects the 8-byte trailer and checks it against the member's output. Returns 0 or -EBADMSG. */
static int step_trailer(struct index_zran *z)
{
	size_t n = z->in_len - z->in_pos;

	if (n > sizeof(z->trailer) - z->tlen)
		n = sizeof(z->trailer) - z->tlen;
	memcpy(z->trailer + z->tlen, z->in + z->in_pos, n);
	z->tlen += (unsigned)n;
	take(z, n);
	if (z->tlen < sizeof(z->trailer))
		return 0;
	if (index_get_le32(z->trailer) != z->crc)
		return strata_err(EBADMSG, "corrupt gzip stream: crc mismatch");
	if (index_get_le32(z->trailer + 4) != (uint32_t)z->member_out)
		return strata_err(EBADMSG, "corrupt gzip stream: length mismatch");
	z->st = ZS_BETWEEN;
	return 0;
}

static ssize_t zran_read(struct index_zran *z, uint8_t *buf, size_t len)
{
	size_t produced = 0;
	ssize_t n;
	int rc;

	while (produced < len) {
		rc = fill(z);
		if (rc < 0)
			return rc;
		if (z->in_pos == z->in_len && z->src_eof) {
			if (z->st == ZS_BETWEEN || z->st == ZS_PADDING) {
				z->done = true;
				break;
			}
			if (z->st != ZS_DEFLATE) { /* inflate may still hold output; let it say */
				if (produced > 0)
					break;
				return strata_err(EPIPE, "truncated gzip stream");
			}
		}
		switch (z->st) {
		case ZS_HEADER:
			rc = step_header(z);
			if (rc < 0)
				return rc;
			break;
		case ZS_DEFLATE:
			n = step_deflate(z, buf + produced, len - produced);
			if (n < 0) {
				if (n == -EPIPE && produced > 0)
					return (ssize_t)
						produced; /* the error repeats on the next call */
				return n;
			}
			produced += (size_t)n;
			break;
		case ZS_TRAILER:
			rc = step_trailer(z);
			if (rc < 0)
				return rc;
			/* stop at the member boundary, so consumed() is exact there (eStargz) */
			if (z->st == ZS_BETWEEN && produced > 0)
				return (ssize_t)produced;
			break;
		case ZS_BETWEEN:
			if (z->in[z->in_pos] == 0) {
				z->st = ZS_PADDING;
			} else {
				z->st = ZS_HEADER;
				z->hdr_coff = z->consumed;
				index_gzhdr_init(&z->hdr);
			}
			break;
		case ZS_PADDING:
			while (z->in_pos < z->in_len) {
				if (z->in[z->in_pos] != 0)
					return strata_err(EBADMSG,
							  "corrupt gzip stream: data after "
							  "trailing zero padding");
				take(z, 1);
			}
			break;
		}
	}
	return (ssize_t)produced;
}

ssize_t index_zran_read(struct index_zran *z, void *buf, size_t len)
{
	ssize_t n;

	assert(z && (buf || len == 0));
	if (z->err)
		return z->err;
	if (z->done || len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	n = zran_read(z, buf, len);
	if (n < 0)
		z->err = (int)n;
	return n;
}

static ssize_t zran_reader_read(void *ctx, void *buf, size_t len)
{
	return index_zran_read(ctx, buf, len);
}

struct index_reader index_zran_reader(struct index_zran *z)
{
	struct index_reader r = { zran_reader_read, z };

	return r;
}

size_t index_zran_count(const struct index_zran *z)
{
	return z->ncp;
}

const struct index_zran_cp *index_zran_cp(const struct index_zran *z, size_t i)
{
	assert(i < z->ncp);
	return &z->cps[i];
}

const uint8_t *index_zran_window(const struct index_zran *z, size_t i)
{
	assert(i < z->ncp);
	return z->windows[i];
}

void index_zran_set_window_sink(struct index_zran *z, index_zran_window_fn fn, void *ctx)
{
	z->sink = fn;
	z->sink_ctx = ctx;
}

int index_zran_finish(struct index_zran *z)
{
	return finalize(z, z->ncp);
}

const uint8_t *index_zran_window_digest(const struct index_zran *z, size_t i)
{
	assert(i < z->nfinal);
	return z->wdig[i];
}

uint64_t index_zran_consumed(const struct index_zran *z)
{
	return z->consumed;
}

void index_zran_free(struct index_zran *z)
{
	if (!z)
		return;
	if (z->zs_init)
		inflateEnd(&z->zs);
	for (size_t i = 0; i < z->ncp; i++)
		free(z->windows[i]);
	free(z->windows);
	free(z->wdig);
	free(z->cps);
	free(z->in);
	free(z);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Queries a decoded layer index: inodes, lookups, chunk order; plans and decodes span reads. */
#include "layer.h"
#include "layer_i.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zstd.h>

#include "zran.h"
#include "util/log.h"

/* ---------------------------------------------------------------- queries */

size_t index_layer_mem_size(const struct index_layer *l)
{
	return sizeof(*l) + l->mem_len +
	       (size_t)(l->hdr->nchunks ? l->hdr->nchunks : 1) * sizeof(*l->by_offset);
}

uint32_t index_layer_ninodes(const struct index_layer *l)
{
	return l->hdr->ninodes;
}

const struct index_inode *index_layer_inode(const struct index_layer *l, uint32_t ino)
{
	assert(ino < l->hdr->ninodes);
	return &l->inodes[ino];
}

const struct index_dirent *index_layer_dirent(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->ndirents);
	return &l->dirents[i];
}

const struct index_chunk *index_layer_chunk(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->nchunks);
	return &l->chunks[i];
}

const struct index_xattr *index_layer_xattr(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->nxattrs);
	return &l->xattrs[i];
}

uint32_t index_layer_nchunks(const struct index_layer *l)
{
	return l->hdr->nchunks;
}

const char *index_layer_str(const struct index_layer *l, uint32_t off)
{
	assert(off <= l->hdr->strtab_len);
	return l->strtab + off;
}

uint32_t index_layer_chunk_size(const struct index_layer *l)
{
	return l->hdr->chunk_size;
}

const uint8_t *index_layer_diff_id(const struct index_layer *l)
{
	return l->hdr->diff_id;
}

uint64_t index_layer_tar_size(const struct index_layer *l)
{
	return l->hdr->tar_size;
}

uint64_t index_layer_content_size(const struct index_layer *l)
{
	return l->hdr->content_size;
}

int64_t index_layer_lookup(const struct index_layer *l, uint32_t dir, const char *name, size_t len)
{
	const struct index_inode *d = index_layer_inode(l, dir);
	uint32_t lo = 0, hi;

	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	hi = d->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct index_dirent *e = &l->dirents[d->first + mid];
		size_t m = e->name_len < len ? e->name_len : len;
		int c = memcmp(l->strtab + e->name_off, name, m);

		if (c == 0)
			c = (e->name_len > len) - (e->name_len < len);
		if (c == 0)
			return e->ino;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

uint64_t index_layer_file_extents(const struct index_layer *l, const struct index_inode *in,
				  const struct index_extent **ext, uint32_t *n)
{
	uint32_t ino, lo = 0, hi = l->hdr->nsparse;

	assert(in >= l->inodes && in < l->inodes + l->hdr->ninodes && S_ISREG(in->mode));
	*ext = NULL;
	*n = 0;
	if (!(in->flags & INDEX_INODE_SPARSE))
		return in->size;
	ino = (uint32_t)(in - l->inodes);
	while (lo < hi) { /* the decoder checked: one record per sparse file, sorted by ino */
		uint32_t mid = lo + (hi - lo) / 2;

		if (l->sparse[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	assert(lo < l->hdr->nsparse && l->sparse[lo].ino == ino);
	*n = l->sparse[lo].count;
	*ext = *n ? &l->extents[l->sparse[lo].first] : NULL;
	return l->sparse[lo].data_size;
}

uint32_t index_layer_extent_find(const struct index_extent *ext, uint32_t n, uint64_t off)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (ext[mid].offset + ext[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ---------------------------------------------------------------- random access */

enum index_blob index_layer_blob_kind(const struct index_layer *l)
{
	return (enum index_blob)l->hdr->blob_kind;
}

uint64_t index_layer_blob_size(const struct index_layer *l)
{
	return l->hdr->blob_size;
}

uint32_t index_layer_ncheckpoints(const struct index_layer *l)
{
	return l->hdr->ncheckpoints;
}

const struct index_checkpoint *index_layer_checkpoint(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->ncheckpoints);
	return &l->cps[i];
}

uint32_t index_layer_chunk_by_offset(const struct index_layer *l, uint32_t k)
{
	assert(k < l->hdr->nchunks);
	return l->by_offset[k];
}

uint32_t index_layer_chunk_rank(const struct index_layer *l, uint64_t uoff)
{
	uint32_t lo = 0, hi = l->hdr->nchunks;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (l->chunks[l->by_offset[mid]].offset < uoff)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int index_layer_span(const struct index_layer *l, uint64_t uoff, uint64_t uend,
		     struct index_span *s)
{
	uint32_t n = l->hdr->ncheckpoints, lo = 0, hi = n;
	const struct index_checkpoint *cp;

	if (uoff >= uend)
		return strata_err(EINVAL, "empty or reversed tar range [%llu, %llu)",
				  (unsigned long long)uoff, (unsigned long long)uend);
	switch (l->hdr->blob_kind) {
	case INDEX_BLOB_TAR:
		s->cp = UINT32_MAX;
		s->cstart = s->ustart = uoff;
		s->cend = s->uend = uend;
		return 0;
	case INDEX_BLOB_GZIP:
	case INDEX_BLOB_ZSTD:
		break;
	default:
		return strata_err(ENOTSUP, "layer index has no random-access information");
	}
	/* last checkpoint at or before uoff (the first one is at 0) */
	while (lo + 1 < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (l->cps[mid].uoff <= uoff)
			lo = mid;
		else
			hi = mid;
	}
	cp = &l->cps[lo];
	s->cp = lo;
	s->cstart = cp->coff - (cp->bits ? 1 : 0);
	s->ustart = cp->uoff;
	/* the first checkpoint at or after uend bounds what must be fetched */
	s->cend = l->hdr->blob_size;
	s->uend = l->hdr->tar_size;
	for (uint32_t i = lo + 1; i < n; i++) {
		if (l->cps[i].uoff >= uend) {
			uint64_t end = l->cps[i].coff +
				       (l->cps[i].kind == INDEX_CP_ZSTD_FRAME ? 0 : 1);

			if (end < s->cend)
				s->cend = end;
			s->uend = l->cps[i].uoff;
			break;
		}
	}
	return 0;
}

/* Decodes [skip, skip + len) of the zstd frames in comp. */
static int zstd_extract(const uint8_t *comp, size_t clen, uint64_t skip, uint8_t *out, size_t len)
{
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	ZSTD_inBuffer in = { comp, clen, 0 };
	uint8_t *scratch = malloc(ZSTD_DStreamOutSize());
	size_t got = 0;
	int rc = 0;

	if (!dc || !scratch) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < len) {
		ZSTD_outBuffer ob = { scratch, ZSTD_DStreamOutSize(), 0 };
		size_t r;
		size_t pos = 0;

		if (in.pos == in.size) {
			rc = strata_err(EPIPE, "truncated zstd span");
			goto out;
		}
		r = ZSTD_decompressStream(dc, &ob, &in);
		if (ZSTD_isError(r)) {
			rc = strata_err(EBADMSG, "corrupt zstd stream: %s", ZSTD_getErrorName(r));
			goto out;
		}
		if (skip) {
			pos = ob.pos < skip ? ob.pos : (size_t)skip;
			skip -= pos;
		}
		if (ob.pos > pos) {
			size_t k = ob.pos - pos < len - got ? ob.pos - pos : len - got;

			memcpy(out + got, scratch + pos, k);
			got += k;
		}
	}
out:
	free(scratch);
	ZSTD_freeDCtx(dc);
	return rc;
}

int index_layer_extract(const struct index_layer *l, const struct index_span *s,
			const uint8_t *window, const uint8_t *comp, size_t clen, uint64_t uoff,
			void *out, size_t len)
{
	const struct index_checkpoint *cp;
	struct index_zran_cp zc;

	if (uoff < s->ustart)
		return strata_err(EINVAL, "tar offset %llu is before its span at %llu",
				  (unsigned long long)uoff, (unsigned long long)s->ustart);
	if (s->cp == UINT32_MAX) {
		uint64_t at = uoff - s->cstart;

		if (at > clen || len > clen - at)
			return strata_err(EPIPE, "span too short");
		memcpy(out, comp + at, len);
		return 0;
	}
	cp = index_layer_checkpoint(l, s->cp);
	if (cp->kind == INDEX_CP_ZSTD_FRAME)
		return zstd_extract(comp, clen, uoff - cp->uoff, out, len);
	zc.uoff = cp->uoff;
	zc.coff = cp->coff;
	zc.bits = cp->bits;
	zc.kind = cp->kind;
	zc.wlen = cp->wlen;
	return index_zran_extract(&zc, window, comp, clen, uoff - cp->uoff, out, len);
}

/* ---------------------------------------------------------------- streaming decode of a span */

struct index_span_dec {
	enum index_blob kind; /* TAR (identity), GZIP or ZSTD */
	struct index_zran_dec *gz;
	ZSTD_DCtx *zd;
};

int index_span_dec_new(const struct index_layer *l, const struct index_span *s,
		       const uint8_t *window, struct index_span_dec **out)
{
	const struct index_checkpoint *cp;
	struct index_span_dec *d;
	struct index_zran_cp zc;
	int rc = 0;

	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	if (s->cp == UINT32_MAX) {
		d->kind = INDEX_BLOB_TAR;
		*out = d;
		return 0;
	}
	cp = index_layer_checkpoint(l, s->cp);
	if (cp->kind == INDEX_CP_ZSTD_FRAME) {
		d->kind = INDEX_BLOB_ZSTD;
		d->zd = ZSTD_createDCtx();
		if (!d->zd)
			rc = strata_err(ENOMEM, "out of memory creating zstd decoder");
	} else {
		d->kind = INDEX_BLOB_GZIP;
		zc.uoff = cp->uoff;
		zc.coff = cp->coff;
		zc.bits = cp->bits;
		zc.kind = cp->kind;
		zc.wlen = cp->wlen;
		rc = index_zran_dec_new(&zc, window, &d->gz);
	}
	if (rc < 0) {
		index_span_dec_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* index_span_dec_feed() of zstd frames: ZSTD_decompressStream until the input is used and nothing
 * more comes out, or out is full. */
static int zstd_feed(ZSTD_DCtx *zd, const uint8_t **in, size_t *in_len, uint8_t *out, size_t cap,
		     size_t *made)
{
	ZSTD_inBuffer ib = { *in, *in_len, 0 };
	ZSTD_outBuffer ob = { out, cap, 0 };
	int rc = 0;

	while (ob.pos < ob.size) {
		size_t ip = ib.pos, op = ob.pos;
		size_t r = ZSTD_decompressStream(zd, &ob, &ib);

		if (ZSTD_isError(r)) {
			rc = strata_err(EBADMSG, "corrupt zstd stream: %s", ZSTD_getErrorName(r));
			break;
		}
		if (ib.pos == ip && ob.pos == op)
			break; /* needs input (zstd always progresses when it has input and room) */
	}
	*in += ib.pos;
	*in_len -= ib.pos;
	*made = ob.pos;
	return rc;
}

int index_span_dec_feed(struct index_span_dec *d, const uint8_t **in, size_t *in_len, uint8_t *out,
			size_t cap, size_t *made)
{
	size_t n;

	*made = 0;
	switch (d->kind) {
	case INDEX_BLOB_GZIP:
		return index_zran_dec_feed(d->gz, in, in_len, out, cap, made);
	case INDEX_BLOB_ZSTD:
		return zstd_feed(d->zd, in, in_len, out, cap, made);
	default:
		n = *in_len < cap ? *in_len : cap;
		memcpy(out, *in, n);
		*in += n;
		*in_len -= n;
		*made = n;
		return 0;
	}
}

void index_span_dec_free(struct index_span_dec *d)
{
	if (!d)
		return;
	index_zran_dec_free(d->gz);
	ZSTD_freeDCtx(d->zd);
	free(d);
}

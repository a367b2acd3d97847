/* SPDX-License-Identifier: Apache-2.0 */
/* GNU sparse files in every form GNU tar and libarchive write (old GNU 'S' headers, PAX 0.0, 0.1
 * and 1.0): maps collected entry by entry, bounded, checked against the member; the members read
 * from the stream (extension blocks, 1.0 maps). */
#include "tar_i.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"

#define OLDGNU_ENTRY  24 /* offset[12], numbytes[12] */
#define V1_MAX_DIGITS 20
/* old GNU headers: the map in the header, its extension flag and the real size */
#define H_GNU_SPARSE	  386 /* four entries */
#define H_GNU_ISEXTENDED  482
#define H_GNU_REALSIZE	  483
#define GNU_SPARSE_IN_HDR 4
#define GNU_SPARSE_IN_EXT 21 /* per extension block, whose isextended byte is at 504 */

void index_tar_sparse_reset(struct index_tar_sparse *s)
{
	free(s->name);
	free(s->map);
	memset(s, 0, sizeof(*s));
}

int index_tar_sparse_add(struct index_tar_sparse *s, uint64_t off, uint64_t len)
{
	if (s->n >= INDEX_TAR_MAX_SPARSE)
		return strata_err(EFBIG, "sparse map has more than %u entries",
				  INDEX_TAR_MAX_SPARSE);
	if (util_grow((void **)&s->map, &s->cap, s->n + 1, sizeof(*s->map)) < 0)
		return -ENOMEM;
	s->map[s->n].offset = off;
	s->map[s->n].len = len;
	s->n++;
	return 0;
}

/* Parses a decimal number spanning all of [p, p + len). Returns 0 or -1. */
static int dec(const char *p, size_t len, uint64_t *v)
{
	uint64_t x = 0;

	if (len == 0 || len > V1_MAX_DIGITS)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		if (x > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
			return -1;
		x = x * 10 + (uint64_t)(p[i] - '0');
	}
	*v = x;
	return 0;
}

static bool key_is(const char *key, size_t klen, const char *lit)
{
	return strlen(lit) == klen && memcmp(key, lit, klen) == 0;
}

/* GNU.sparse.map (0.1): "off,len,off,len...", replacing any earlier map. */
static int pax_map(struct index_tar_sparse *s, const char *val, size_t vlen)
{
	size_t pos = 0;
	bool have_off = false;
	uint64_t off = 0;

	s->n = 0;
	s->half = false;
	if (vlen == 0)
		return 0;
	while (pos <= vlen) {
		size_t end = pos;
		uint64_t v;
		int rc;

		while (end < vlen && val[end] != ',')
			end++;
		if (dec(val + pos, end - pos, &v) < 0)
			return -1;
		if (have_off) {
			rc = index_tar_sparse_add(s, off, v);
			if (rc < 0)
				return rc;
		} else {
			off = v;
		}
		have_off = !have_off;
		pos = end + 1;
	}
	return have_off ? -1 : 0; /* an offset without its length */
}

int index_tar_sparse_pax(struct index_tar_sparse *s, const char *key, size_t klen, const char *val,
			 size_t vlen)
{
	uint64_t v;

	s->any = true;
	if (key_is(key, klen, "name")) {
		char *n = vlen ? index_tar_dup_field(val, vlen) : NULL;

		if (vlen && !n)
			return -ENOMEM;
		free(s->name);
		s->name = n;
		return 0;
	}
	if (key_is(key, klen, "map"))
		return pax_map(s, val, vlen);
	if (!key_is(key, klen, "major") && !key_is(key, klen, "minor") &&
	    !key_is(key, klen, "realsize") && !key_is(key, klen, "size") &&
	    !key_is(key, klen, "numblocks") && !key_is(key, klen, "offset") &&
	    !key_is(key, klen, "numbytes"))
		return 0; /* unknown GNU.sparse.* keys: as GNU tar, ignored */
	if (dec(val, vlen, &v) < 0)
		return -1;
	if (key_is(key, klen, "major")) {
		s->major = v;
		s->has_major = true;
	} else if (key_is(key, klen, "minor")) {
		s->minor = v;
		s->has_minor = true;
	} else if (key_is(key, klen, "realsize") || key_is(key, klen, "size")) {
		s->realsize = v;
		s->has_realsize = true;
	} else if (key_is(key, klen, "numblocks")) {
		s->numblocks = v;
		s->has_numblocks = true;
	} else if (key_is(key, klen, "offset")) {
		if (s->half)
			return -1; /* two offsets in a row */
		s->half = true;
		s->half_off = v;
	} else { /* numbytes */
		if (!s->half)
			return -1; /* a length without its offset */
		s->half = false;
		return index_tar_sparse_add(s, s->half_off, v);
	}
	return 0;
}

int index_tar_sparse_oldgnu(struct index_tar_sparse *s, const uint8_t *p, size_t n, bool *ended)
{
	s->any = true;
	for (size_t i = 0; i < n; i++, p += OLDGNU_ENTRY) {
		int64_t off, len;
		int rc;

		if (p[12] == '\0') {
			*ended = true;
			continue;
		}
		if (*ended)
			return -1;
		if (index_tar_parse_num(p, 12, &off) < 0 ||
		    index_tar_parse_num(p + 12, 12, &len) < 0 || off < 0 || len < 0)
			return -1;
		rc = index_tar_sparse_add(s, (uint64_t)off, (uint64_t)len);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* One number of a 1.0 map is complete: the count, or an offset or length. */
static int v1_number(struct index_tar_sparse *s, struct index_tar_sparse_v1 *p)
{
	uint64_t v = p->cur;

	p->cur = 0;
	p->digits = 0;
	if (!p->have_count) {
		if (v > INDEX_TAR_MAX_SPARSE)
			return strata_err(EFBIG, "sparse map has %" PRIu64 " entries, more than %u",
					  v, INDEX_TAR_MAX_SPARSE);
		p->have_count = true;
		p->count = v;
		return 0;
	}
	if (p->numbers++ % 2 == 0) {
		p->pend_off = v;
		return 0;
	}
	return index_tar_sparse_add(s, p->pend_off, v);
}

ssize_t index_tar_sparse_v1_feed(struct index_tar_sparse *s, struct index_tar_sparse_v1 *p,
				 const uint8_t *buf, size_t len)
{
	s->any = true;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = buf[i];
		int rc;

		if (p->have_count && p->numbers == 2 * p->count)
			return (ssize_t)i;
		if (c == '\n') {
			if (p->digits == 0)
				return -1;
			rc = v1_number(s, p);
			if (rc < 0)
				return rc;
			continue;
		}
		if (c < '0' || c > '9' || p->digits >= V1_MAX_DIGITS ||
		    p->cur > (UINT64_MAX - (uint64_t)(c - '0')) / 10)
			return -1;
		p->cur = p->cur * 10 + (uint64_t)(c - '0');
		p->digits++;
	}
	if (p->have_count && p->numbers == 2 * p->count)
		return (ssize_t)(len ? len : 1);
	return 0;
}

__attribute__((format(printf, 4, 5))) static int bad_map(const char *path, uint64_t hdr_off,
							 int err, const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return strata_err(err, "sparse file %s at offset %" PRIu64 ": %s", path, hdr_off, what);
}

int index_tar_sparse_finish(struct index_tar_sparse *s, uint64_t realsize, uint64_t data_size,
			    const char *path, uint64_t hdr_off)
{
	uint64_t end = 0, sum = 0;
	size_t o = 0;

	if (realsize > INDEX_TAR_MAX_SPARSE_SIZE)
		return bad_map(path, hdr_off, EFBIG,
			       "real size %" PRIu64 " is more than %llu bytes", realsize,
			       (unsigned long long)INDEX_TAR_MAX_SPARSE_SIZE);
	if (s->half)
		return bad_map(path, hdr_off, EINVAL, "map entry %zu has an offset and no length",
			       s->n);
	if (s->has_numblocks && s->numblocks != s->n)
		return bad_map(path, hdr_off, EINVAL,
			       "numblocks says %" PRIu64 " map entries, there are %zu",
			       s->numblocks, s->n);
	for (size_t i = 0; i < s->n; i++) {
		const struct index_tar_extent x = s->map[i];

		if (x.offset > realsize || x.len > realsize - x.offset)
			return bad_map(path, hdr_off, EINVAL,
				       "map entry %zu [%" PRIu64 ", +%" PRIu64
				       ") lies outside its real size %" PRIu64,
				       i, x.offset, x.len, realsize);
		if (x.offset < end)
			return bad_map(path, hdr_off, EINVAL,
				       "map entry %zu at %" PRIu64
				       " overlaps or precedes the one ending at %" PRIu64,
				       i, x.offset, end);
		sum += x.len; /* no overflow: the entries are disjoint and inside realsize */
		if (x.len == 0)
			continue;
		end = x.offset + x.len;
		if (o > 0 && s->map[o - 1].offset + s->map[o - 1].len == x.offset)
			s->map[o - 1].len += x.len;
		else
			s->map[o++] = x;
	}
	if (sum != data_size)
		return bad_map(path, hdr_off, EINVAL,
			       "its map covers %" PRIu64
			       " bytes of data, the archive holds %" PRIu64,
			       sum, data_size);
	s->n = o;
	return 0;
}

/* ---- sparse members in the stream ---- */

/* Reads a PAX 1.0 sparse map from the start of the member's data (archive bytes: size) into sp.
 * Returns the bytes of blocks it took, or negative errno (strata_err set). */
static int64_t read_v1_map(struct index_tar *t, struct index_tar_sparse *sp, uint64_t size,
			   const char *path, uint64_t hdr_off)
{
	struct index_tar_sparse_v1 p = { 0 };
	uint8_t blk[BLOCK];
	uint64_t used = 0;

	for (;;) {
		ssize_t n;

		if (size - used < BLOCK)
			return strata_err(EINVAL,
					  "sparse file %s at offset %" PRIu64
					  ": its map runs past the member's %" PRIu64 " bytes",
					  path, hdr_off, size);
		n = index_tar_get_full(t, blk, BLOCK);
		if (n < 0)
			return n;
		if (n < BLOCK)
			return index_tar_truncated(t);
		used += BLOCK;
		n = index_tar_sparse_v1_feed(sp, &p, blk, BLOCK);
		if (n == -1)
			return strata_err(EINVAL,
					  "sparse file %s at offset %" PRIu64 ": malformed map",
					  path, hdr_off);
		if (n < 0)
			return strata_err_prefix(-(int)n, "sparse file %s at offset %" PRIu64, path,
						 hdr_off);
		if (n > 0)
			return (int64_t)used;
	}
}

/* Reads an old GNU sparse map: the header's entries, then its extension blocks. Sets *realsize.
 * Returns 0 or negative errno (strata_err set). */
static int read_oldgnu_map(struct index_tar *t, struct index_tar_sparse *sp, const uint8_t *b,
			   uint64_t hdr_off, uint64_t *realsize)
{
	uint8_t blk[BLOCK];
	bool ended = false, ext = b[H_GNU_ISEXTENDED] != 0;
	uint64_t blocks = 0;
	int rc;

	if (index_tar_parse_unum(b + H_GNU_REALSIZE, 12, INT64_MAX, realsize) < 0)
		return index_tar_bad_field(hdr_off, "sparse realsize");
	rc = index_tar_sparse_oldgnu(sp, b + H_GNU_SPARSE, GNU_SPARSE_IN_HDR, &ended);
	while (rc == 0 && ext) {
		ssize_t n;

		if (++blocks > INDEX_TAR_MAX_SPARSE / GNU_SPARSE_IN_EXT + 1)
			return strata_err(
				EFBIG,
				"tar member at offset %" PRIu64
				": more sparse extension headers than a map of %u entries needs",
				hdr_off, INDEX_TAR_MAX_SPARSE);
		n = index_tar_get_full(t, blk, BLOCK);
		if (n < 0)
			return (int)n;
		if (n < BLOCK)
			return index_tar_truncated(t);
		rc = index_tar_sparse_oldgnu(sp, blk, GNU_SPARSE_IN_EXT, &ended);
		ext = blk[GNU_SPARSE_IN_EXT * 24] != 0;
	}
	if (rc == -1)
		return index_tar_bad_field(hdr_off, "sparse map");
	if (rc < 0)
		return strata_err_prefix(-rc, "tar member at offset %" PRIu64, hdr_off);
	return 0;
}

int index_tar_sparse_member(struct index_tar *t, const uint8_t *b, uint64_t hdr_off, bool gnu)
{
	struct index_tar_entry *e = &t->ent;
	struct index_tar_sparse *sp = &t->ext.sp;
	uint64_t size, realsize = 0, data_size;
	int rc;

	if (t->ext.has_size)
		size = t->ext.size;
	else if (index_tar_parse_unum(b + H_SIZE, 12, INT64_MAX, &size) < 0)
		return index_tar_bad_field(hdr_off, "size");
	data_size = size;
	if (!sp->any) { /* old GNU */
		if (!gnu)
			return strata_err(EINVAL,
					  "sparse file %s at offset %" PRIu64
					  ": a type 'S' member without a GNU header",
					  e->path, hdr_off);
		rc = read_oldgnu_map(t, sp, b, hdr_off, &realsize);
		if (rc < 0)
			return rc;
	} else if (b[H_TYPE] == 'S') {
		return strata_err(EINVAL,
				  "sparse file %s at offset %" PRIu64
				  ": both an old GNU and a PAX sparse map",
				  e->path, hdr_off);
	} else {
		if (sp->has_major && (sp->major > 1 || (sp->major == 1 && sp->minor != 0))) {
			t->remain = 0;
			t->skip = size + index_tar_padding(size);
			return strata_err(ENOTSUP,
					  "sparse file %s: GNU sparse format %" PRIu64 ".%" PRIu64
					  " is not supported",
					  e->path, sp->major, sp->minor);
		}
		if (!sp->has_realsize)
			return strata_err(EINVAL,
					  "sparse file %s at offset %" PRIu64
					  ": no real size given",
					  e->path, hdr_off);
		realsize = sp->realsize;
		if (sp->has_major && sp->major == 1) {
			int64_t used;

			if (sp->n || sp->half)
				return strata_err(EINVAL,
						  "sparse file %s at offset %" PRIu64
						  ": a 1.0 member with a 0.x map",
						  e->path, hdr_off);
			used = read_v1_map(t, sp, size, e->path, hdr_off);
			if (used < 0)
				return (int)used;
			data_size = size - (uint64_t)used;
		}
	}
	rc = index_tar_sparse_finish(sp, realsize, data_size, e->path, hdr_off);
	if (rc < 0)
		return rc;
	e->data_offset = t->off;
	e->size = realsize;
	e->data_size = data_size;
	e->sparse = true;
	e->extents = sp->map;
	e->nextents = sp->n;
	sp->map = NULL;
	sp->n = sp->cap = 0;
	t->remain = data_size;
	t->skip = index_tar_padding(size);
	t->have_entry = true;
	return 1;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* GNU sparse file maps in every form GNU tar and libarchive write (old GNU 'S' headers, PAX 0.0,
 * 0.1 and 1.0): collected entry by entry, bounded, then checked against the member. */
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

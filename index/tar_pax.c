/* SPDX-License-Identifier: Apache-2.0 */
/* Parses PAX extended header records: path, linkpath, size, ids, mtime, device numbers, SCHILY and
 * LIBARCHIVE xattrs, and GNU sparse markers, for the tar member that follows. */
#include "tar_i.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

/* Parses a decimal unsigned value spanning all of [s, s+len). Returns 0 or -1. */
static int parse_dec(const char *s, size_t len, uint64_t max, uint64_t *v)
{
	uint64_t x = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (x > (UINT64_MAX - 9) / 10)
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	if (x > max)
		return -1;
	*v = x;
	return 0;
}

/* Parses "[-]sec[.frac]" into seconds and non-negative nanoseconds (-1.5 -> -2 s + 500000000 ns). */
static int parse_time(const char *s, size_t len, int64_t *sec, uint32_t *nsec)
{
	bool neg = false;
	size_t dot;
	uint64_t whole, frac = 0;

	if (len > 0 && s[0] == '-') {
		neg = true;
		s++;
		len--;
	}
	for (dot = 0; dot < len && s[dot] != '.'; dot++)
		;
	if (parse_dec(s, dot, INT64_MAX - 1, &whole) < 0)
		return -1;
	if (dot < len) {
		size_t i;

		for (i = dot + 1; i < len; i++) {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			if (i - dot <= 9)
				frac = frac * 10 + (uint64_t)(s[i] - '0');
		}
		for (i = len - dot - 1; i < 9; i++)
			frac *= 10;
	}
	if (!neg) {
		*sec = (int64_t)whole;
		*nsec = (uint32_t)frac;
	} else if (frac == 0) {
		*sec = -(int64_t)whole;
		*nsec = 0;
	} else {
		*sec = -(int64_t)whole - 1;
		*nsec = (uint32_t)(1000000000u - frac);
	}
	return 0;
}

/* Decodes %XX escapes into a new NUL-terminated string. Returns it, or NULL with *bad set for a
 * malformed escape and clear for ENOMEM. */
static char *url_decode(const char *s, size_t len, bool *bad)
{
	char *out = malloc(len + 1);
	size_t o = 0;

	*bad = false;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '%') {
			int hi = i + 2 < len ? util_hexval(s[i + 1]) : -1;
			int lo = i + 2 < len ? util_hexval(s[i + 2]) : -1;

			if (hi < 0 || lo < 0) {
				*bad = true;
				free(out);
				return NULL;
			}
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

/* Adds an xattr (duplicates are merged once the member's headers are read, by
 * index_tar_xattrs_dedup); takes ownership of name and value on success and on failure. Returns 0
 * or -ENOMEM. */
static int ext_add_xattr(struct index_tar_ext *x, char *name, uint8_t *value, size_t len)
{
	if (x->nxattrs == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 4;
		struct index_tar_xattr *n = realloc(x->xattrs, cap * sizeof(*n));

		if (!n) {
			free(name);
			free(value);
			return -ENOMEM;
		}
		x->xattrs = n;
		x->cap = cap;
	}
	x->xattrs[x->nxattrs].name = name;
	x->xattrs[x->nxattrs].value = value;
	x->xattrs[x->nxattrs].len = len;
	x->nxattrs++;
	return 0;
}

static int cmp_xattr_at(const void *a, const void *b, void *arg)
{
	const struct index_tar_xattr *xs = arg;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	int c = strcmp(xs[i].name, xs[j].name);

	return c ? c : (i > j) - (i < j);
}

int index_tar_xattrs_dedup(struct index_tar_ext *x)
{
	size_t *ord, n = x->nxattrs, o = 0;
	bool *drop;

	if (n < 2)
		return 0;
	ord = malloc(n * sizeof(*ord));
	drop = calloc(n, sizeof(*drop));
	if (!ord || !drop) {
		free(ord);
		free(drop);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		ord[i] = i;
	qsort_r(ord, n, sizeof(*ord), cmp_xattr_at, x->xattrs);
	/* in each run of one name (by position), the first keeps the last's value */
	for (size_t r = 0; r < n;) {
		size_t e = r + 1;

		while (e < n && strcmp(x->xattrs[ord[r]].name, x->xattrs[ord[e]].name) == 0)
			e++;
		if (e - r > 1) {
			struct index_tar_xattr *keep = &x->xattrs[ord[r]],
					       *last = &x->xattrs[ord[e - 1]];

			free(keep->value);
			keep->value = last->value;
			keep->len = last->len;
			last->value = NULL;
			for (size_t k = r + 1; k < e; k++)
				drop[ord[k]] = true;
		}
		r = e;
	}
	for (size_t i = 0; i < n; i++) {
		if (drop[i]) {
			free(x->xattrs[i].name);
			free(x->xattrs[i].value);
		} else {
			x->xattrs[o++] = x->xattrs[i];
		}
	}
	x->nxattrs = o;
	free(ord);
	free(drop);
	return 0;
}

static bool key_is(const char *key, size_t klen, const char *lit)
{
	return strlen(lit) == klen && memcmp(key, lit, klen) == 0;
}

static bool key_has_prefix(const char *key, size_t klen, const char *lit)
{
	size_t n = strlen(lit);

	return klen >= n && memcmp(key, lit, n) == 0;
}

/* Replaces *dst with a copy of val (NULL when val is empty: POSIX "unset"). Returns 0 or -ENOMEM. */
static int set_str(char **dst, const char *val, size_t vlen)
{
	char *s = NULL;

	if (vlen > 0) {
		s = index_tar_dup_field(val, vlen);
		if (!s)
			return -ENOMEM;
	}
	free(*dst);
	*dst = s;
	return 0;
}

/* Sets a decimal PAX number (an empty value unsets it). Returns 0 or -1 when malformed. */
static int set_num(bool *has, uint64_t *dst, uint64_t max, const char *val, size_t vlen)
{
	if (vlen == 0) {
		*has = false;
		return 0;
	}
	if (parse_dec(val, vlen, max, dst) < 0)
		return -1;
	*has = true;
	return 0;
}

static int set_num32(bool *has, uint32_t *dst, const char *val, size_t vlen)
{
	uint64_t v;

	if (set_num(has, &v, UINT32_MAX, val, vlen) < 0)
		return -1;
	if (*has)
		*dst = (uint32_t)v;
	return 0;
}

/* Applies one PAX record. Returns 0, -1 for a malformed value, -EFBIG (strata_err set) for a sparse
 * map past its bound, or -ENOMEM. */
static int pax_record(struct index_tar_ext *x, const char *key, size_t klen, const char *val,
		      size_t vlen)
{
	int rc;

	if (key_is(key, klen, "path"))
		return set_str(&x->path, val, vlen);
	if (key_is(key, klen, "linkpath"))
		return set_str(&x->linkpath, val, vlen);
	if (key_is(key, klen, "size"))
		return set_num(&x->has_size, &x->size, INT64_MAX, val, vlen);
	if (key_is(key, klen, "uid"))
		return set_num32(&x->has_uid, &x->uid, val, vlen);
	if (key_is(key, klen, "gid"))
		return set_num32(&x->has_gid, &x->gid, val, vlen);
	if (key_is(key, klen, "SCHILY.devmajor"))
		return set_num32(&x->has_devmajor, &x->devmajor, val, vlen);
	if (key_is(key, klen, "SCHILY.devminor"))
		return set_num32(&x->has_devminor, &x->devminor, val, vlen);
	if (key_is(key, klen, "mtime")) {
		if (vlen == 0) {
			x->has_mtime = false;
			return 0;
		}
		if (parse_time(val, vlen, &x->mtime_sec, &x->mtime_nsec) < 0)
			return -1;
		x->has_mtime = true;
		return 0;
	}
	if (key_has_prefix(key, klen, "SCHILY.xattr.")) {
		size_t p = strlen("SCHILY.xattr.");
		char *name = index_tar_dup_field(key + p, klen - p);
		uint8_t *value = malloc(vlen ? vlen : 1);

		if (!name || !value) {
			free(name);
			free(value);
			return -ENOMEM;
		}
		memcpy(value, val, vlen);
		if (name[0] == '\0') {
			free(name);
			free(value);
			return -1;
		}
		return ext_add_xattr(x, name, value, vlen);
	}
	if (key_has_prefix(key, klen, "LIBARCHIVE.xattr.")) {
		size_t p = strlen("LIBARCHIVE.xattr.");
		uint8_t *value = NULL;
		size_t len = 0;
		bool bad;
		char *name = url_decode(key + p, klen - p, &bad);

		if (!name)
			return bad ? -1 : -ENOMEM;
		if (name[0] == '\0') {
			free(name);
			return -1;
		}
		rc = util_base64_decode(val, vlen, &value, &len);
		if (rc < 0) {
			free(name);
			return rc == -ENOMEM ? rc : -1;
		}
		return ext_add_xattr(x, name, value, len);
	}
	if (key_has_prefix(key, klen, "GNU.sparse.")) {
		size_t p = strlen("GNU.sparse.");

		return index_tar_sparse_pax(&x->sp, key + p, klen - p, val, vlen);
	}
	/* atime, ctime, uname, gname, comment, charset, hdrcharset and unknown keys are ignored */
	return 0;
}

/* Parses PAX records "<len> <key>=<value>\n" from data. Returns 0 or negative errno (strata_err set). */
int index_tar_pax_parse(struct index_tar_ext *x, const char *data, size_t size, uint64_t hdr_off)
{
	size_t pos = 0;

	while (pos < size) {
		size_t i = pos, rec_len = 0, key, eq, end;
		int rc;

		if (data[pos] == '\0') {
			/* tolerate NUL padding after the last record */
			while (pos < size && data[pos] == '\0')
				pos++;
			if (pos == size)
				break;
			goto bad;
		}
		while (i < size && data[i] >= '0' && data[i] <= '9') {
			if (rec_len > size)
				goto bad;
			rec_len = rec_len * 10 + (size_t)(data[i] - '0');
			i++;
		}
		if (i == pos || i >= size || data[i] != ' ' || rec_len > size - pos ||
		    rec_len <= i + 1 - pos)
			goto bad;
		end = pos + rec_len; /* one past the '\n' */
		if (data[end - 1] != '\n')
			goto bad;
		key = i + 1;
		for (eq = key; eq < end - 1 && data[eq] != '='; eq++)
			;
		if (eq == end - 1 || eq == key)
			goto bad;
		rc = pax_record(x, data + key, eq - key, data + eq + 1, end - 1 - (eq + 1));
		if (rc == -ENOMEM)
			return strata_err(ENOMEM, "out of memory parsing pax header");
		if (rc == -EFBIG)
			return strata_err_prefix(EFBIG, "pax header at offset %" PRIu64, hdr_off);
		if (rc < 0)
			goto bad;
		pos = end;
	}
	return 0;
bad:
	return strata_err(EINVAL, "invalid pax header at offset %" PRIu64, hdr_off);
}

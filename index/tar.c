/* SPDX-License-Identifier: Apache-2.0 */
/* A streaming tar reader for ustar, v7, GNU and PAX archives: header blocks, extension headers,
 * members and their content, with path cleaning (PAX records are parsed in tar_pax.c). */
#include "tar.h"
#include "tar_i.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define READ_BUF_SIZE (64 * 1024)

static void xattrs_free(struct index_tar_xattr *x, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(x[i].name);
		free(x[i].value);
	}
	free(x);
}

static void ext_reset(struct index_tar_ext *x)
{
	free(x->path);
	free(x->linkpath);
	free(x->gnu_name);
	free(x->gnu_link);
	index_tar_sparse_reset(&x->sp);
	xattrs_free(x->xattrs, x->nxattrs);
	memset(x, 0, sizeof(*x));
}

static void entry_reset(struct index_tar *t)
{
	free(t->ent.path);
	free(t->ent.linkname);
	xattrs_free(t->ent.xattrs, t->ent.nxattrs);
	free((void *)t->ent.extents); /* the reader owns it (tar.h) */
	memset(&t->ent, 0, sizeof(t->ent));
	t->have_entry = false;
}

int index_tar_open(struct index_reader src, struct index_tar **out)
{
	struct index_tar *t;

	assert(src.read);
	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return strata_err(ENOMEM, "out of memory opening tar reader");
	t->buf = malloc(READ_BUF_SIZE);
	if (!t->buf) {
		free(t);
		return strata_err(ENOMEM, "out of memory opening tar reader");
	}
	t->src = src;
	*out = t;
	return 0;
}

void index_tar_free(struct index_tar *t)
{
	if (!t)
		return;
	entry_reset(t);
	ext_reset(&t->ext);
	free(t->buf);
	free(t);
}

uint64_t index_tar_offset(const struct index_tar *t)
{
	return t->off;
}

/* ---- buffered input ---- */

/* Copies up to len buffered bytes (refilling once if empty). Returns count, 0 at EOF, or errno. */
static ssize_t get(struct index_tar *t, void *dst, size_t len)
{
	size_t n;

	assert(t->pos <= t->len);
	if (t->pos == t->len) {
		ssize_t r = t->src.read(t->src.ctx, t->buf, READ_BUF_SIZE);

		if (r <= 0)
			return r;
		if ((size_t)r > READ_BUF_SIZE)
			return strata_err(EIO, "tar source returned %zd bytes for a %d-byte read",
					  r, READ_BUF_SIZE);
		t->pos = 0;
		t->len = (size_t)r;
	}
	n = t->len - t->pos;
	if (n > len)
		n = len;
	if (dst)
		memcpy(dst, t->buf + t->pos, n);
	t->pos += n;
	t->off += n;
	return (ssize_t)n;
}

int index_tar_truncated(struct index_tar *t)
{
	return strata_err(EPIPE, "truncated tar archive at offset %" PRIu64, t->off);
}

/* Reads len bytes (dst NULL: skips them). Returns the count (less than len only at EOF) or errno. */
ssize_t index_tar_get_full(struct index_tar *t, void *dst, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = get(t, dst ? (uint8_t *)dst + got : NULL, len - got);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Skips n bytes. Returns 0, -EPIPE at EOF, or the source's error. */
static int skip_bytes(struct index_tar *t, uint64_t n)
{
	while (n > 0) {
		ssize_t r = get(t, NULL, n > SSIZE_MAX ? SSIZE_MAX : (size_t)n);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return index_tar_truncated(t);
		n -= (uint64_t)r;
	}
	return 0;
}

/* ---- header fields ---- */

/*
 * Parses a numeric header field: octal (leading spaces allowed, ended by NUL, space or the field end;
 * an empty field is 0) or GNU base-256 (high bit of the first byte set; two's complement when the
 * 0x40 bit is also set). Returns 0 and *v, or -1 when malformed or out of int64 range.
 */
int index_tar_parse_num(const uint8_t *f, size_t len, int64_t *v)
{
	uint64_t x = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		uint8_t inv = (f[0] & 0x40) ? 0xff : 0;

		for (i = 0; i < len; i++) {
			uint8_t c = f[i] ^ inv;

			if (i == 0)
				c &= 0x7f;
			if (x >> 56)
				return -1;
			x = x << 8 | c;
		}
		if (x >> 63)
			return -1;
		*v = inv ? -(int64_t)x - 1 : (int64_t)x;
		return 0;
	}
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (x >> 60)
			return -1;
		x = x << 3 | (uint64_t)(f[i] - '0');
	}
	if (i < len && f[i] != '\0' && f[i] != ' ')
		return -1;
	if (x >> 63)
		return -1;
	*v = (int64_t)x;
	return 0;
}

/* Like parse_num, but the value must lie in [0, max]. */
int index_tar_parse_unum(const uint8_t *f, size_t len, uint64_t max, uint64_t *v)
{
	int64_t s;

	if (index_tar_parse_num(f, len, &s) < 0 || s < 0 || (uint64_t)s > max)
		return -1;
	*v = (uint64_t)s;
	return 0;
}

static bool is_zero_block(const uint8_t *b)
{
	for (size_t i = 0; i < BLOCK; i++)
		if (b[i])
			return false;
	return true;
}

/* Accepts the unsigned sum (POSIX) or the signed-char sum (some historic tars). */
static bool checksum_ok(const uint8_t *b)
{
	uint64_t want;
	int64_t usum = 0, ssum = 0;

	if (index_tar_parse_unum(b + H_CHKSUM, 8, UINT32_MAX, &want) < 0)
		return false;
	for (size_t i = 0; i < BLOCK; i++) {
		uint8_t c = (i >= H_CHKSUM && i < H_CHKSUM + 8) ? ' ' : b[i];

		usum += c;
		ssum += (signed char)c;
	}
	return (int64_t)want == usum || (int64_t)want == ssum;
}

/* Returns a cleaned copy of a path (see tar.h), or NULL on ENOMEM. */
static char *clean_path(const char *in)
{
	size_t o = 0;
	char *out = malloc(strlen(in) + 1);

	if (!out)
		return NULL;
	while (*in) {
		const char *s = in;
		size_t n;

		while (*in && *in != '/')
			in++;
		n = (size_t)(in - s);
		if (*in)
			in++;
		if (n == 0 || (n == 1 && s[0] == '.'))
			continue;
		if (n == 2 && s[0] == '.' && s[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
			continue;
		}
		if (o > 0)
			out[o++] = '/';
		memcpy(out + o, s, n);
		o += n;
	}
	out[o] = '\0';
	return out;
}

/* ---- members ---- */

/* Reads the content of an extension header (size bytes + padding) into a new NUL-terminated buffer.
 * Returns 0 or negative errno (strata_err set); *out is NULL on failure. */
static int read_ext_data(struct index_tar *t, uint64_t size, char **out)
{
	char *data;
	ssize_t n;

	*out = NULL;
	if (size > INDEX_TAR_MAX_EXT)
		return strata_err(EINVAL,
				  "tar header too large: %llu bytes of extension data at offset "
				  "%" PRIu64 ", the limit is %u",
				  (unsigned long long)size, t->off, INDEX_TAR_MAX_EXT);
	data = malloc((size_t)size + 1);
	if (!data)
		return strata_err(ENOMEM, "out of memory reading tar header");
	n = index_tar_get_full(t, data, (size_t)size);
	if (n < 0) {
		free(data);
		return (int)n;
	}
	if ((uint64_t)n < size) {
		free(data);
		return index_tar_truncated(t);
	}
	data[size] = '\0';
	n = skip_bytes(t, index_tar_padding(size));
	if (n < 0) {
		free(data);
		return (int)n;
	}
	*out = data;
	return 0;
}

/* GNU 'L'/'K' data: a name with trailing NULs. Replaces *dst. Returns 0 or negative errno. */
static int read_gnu_name(struct index_tar *t, uint64_t size, char **dst)
{
	char *data;
	int rc = read_ext_data(t, size, &data);

	if (rc < 0)
		return rc;
	free(*dst);
	*dst = data; /* NUL-terminated at size; embedded trailing NULs end the string */
	return 0;
}

int index_tar_bad_field(uint64_t hdr_off, const char *what)
{
	return strata_err(EINVAL, "invalid tar header at offset %" PRIu64 ": bad %s field", hdr_off,
			  what);
}

static int type_of(uint8_t flag, enum index_tar_type *type)
{
	switch (flag) {
	case '0':
	case '\0':
	case '7':
		*type = INDEX_TAR_REG;
		return 0;
	case '1':
		*type = INDEX_TAR_HARDLINK;
		return 0;
	case '2':
		*type = INDEX_TAR_SYMLINK;
		return 0;
	case '3':
		*type = INDEX_TAR_CHAR;
		return 0;
	case '4':
		*type = INDEX_TAR_BLOCK;
		return 0;
	case '5':
	case 'D': /* GNU dumpdir: a directory followed by a listing we skip */
		*type = INDEX_TAR_DIR;
		return 0;
	case '6':
		*type = INDEX_TAR_FIFO;
		return 0;
	default:
		return -1;
	}
}

/* The member's raw path: PAX > GNU long name > ustar prefix/name. A joined ustar path is malloc'd
 * in *joined. Returns NULL on ENOMEM. */
static const char *member_path(const struct index_tar_ext *x, const uint8_t *b, bool posix,
			       char **joined)
{
	size_t nlen, plen = 0;

	if (x->sp.name)
		return x->sp
			.name; /* GNU sparse 0.1 and 1.0 name the member "./GNUSparseFile.N/..." */
	if (x->path)
		return x->path;
	if (x->gnu_name)
		return x->gnu_name;
	nlen = strnlen((const char *)b + H_NAME, H_NAME_LEN);
	if (posix) {
		size_t pmax = memcmp(b + H_STAR_MAGIC, "tar\0", 4) == 0 ? H_STAR_PREFIX_LEN :
									  H_PREFIX_LEN;

		plen = strnlen((const char *)b + H_PREFIX, pmax);
	}
	*joined = malloc(plen + 1 + nlen + 1);
	if (!*joined)
		return NULL;
	memcpy(*joined, b + H_PREFIX, plen);
	if (plen)
		(*joined)[plen++] = '/';
	memcpy(*joined + plen, b + H_NAME, nlen);
	(*joined)[plen + nlen] = '\0';
	return *joined;
}

/* Sets e->linkname from the link target: PAX > GNU long link > header. Returns 0 or -ENOMEM. */
static int member_link(struct index_tar_entry *e, const struct index_tar_ext *x, const uint8_t *b)
{
	const char *lraw = x->linkpath ? x->linkpath : x->gnu_link;
	char *lbuf = NULL;

	if (!lraw) {
		lbuf = index_tar_dup_field(b + H_LINK, H_LINK_LEN);
		if (!lbuf)
			return -ENOMEM;
		lraw = lbuf;
	}
	e->linkname = e->type == INDEX_TAR_HARDLINK ? clean_path(lraw) : strdup(lraw);
	free(lbuf);
	return e->linkname ? 0 : -ENOMEM;
}

/* Sets mode, owner, mtime and device numbers, each from the extensions or else the header (whose
 * device fields only ustar and GNU headers have). Returns 0 or -EINVAL naming the bad field. */
static int member_attrs(struct index_tar_entry *e, const struct index_tar_ext *x, const uint8_t *b,
			uint64_t hdr_off, bool ustar)
{
	uint64_t u;
	int64_t s;

	if (index_tar_parse_unum(b + H_MODE, 8, UINT32_MAX, &u) < 0)
		return index_tar_bad_field(hdr_off, "mode");
	e->mode = (uint32_t)u & 07777;
	if (x->has_uid)
		e->uid = x->uid;
	else if (index_tar_parse_unum(b + H_UID, 8, UINT32_MAX, &u) == 0)
		e->uid = (uint32_t)u;
	else
		return index_tar_bad_field(hdr_off, "uid");
	if (x->has_gid)
		e->gid = x->gid;
	else if (index_tar_parse_unum(b + H_GID, 8, UINT32_MAX, &u) == 0)
		e->gid = (uint32_t)u;
	else
		return index_tar_bad_field(hdr_off, "gid");
	if (x->has_mtime) {
		e->mtime_sec = x->mtime_sec;
		e->mtime_nsec = x->mtime_nsec;
	} else if (index_tar_parse_num(b + H_MTIME, 12, &s) == 0) {
		e->mtime_sec = s;
	} else {
		return index_tar_bad_field(hdr_off, "mtime");
	}
	if (e->type == INDEX_TAR_CHAR || e->type == INDEX_TAR_BLOCK) {
		uint64_t maj = 0, min = 0;

		if (!x->has_devmajor && ustar &&
		    index_tar_parse_unum(b + H_DEVMAJOR, 8, UINT32_MAX, &maj) < 0)
			return index_tar_bad_field(hdr_off, "devmajor");
		if (!x->has_devminor && ustar &&
		    index_tar_parse_unum(b + H_DEVMINOR, 8, UINT32_MAX, &min) < 0)
			return index_tar_bad_field(hdr_off, "devminor");
		e->devmajor = x->has_devmajor ? x->devmajor : (uint32_t)maj;
		e->devminor = x->has_devminor ? x->devminor : (uint32_t)min;
	}
	return 0;
}

/*
 * Sets where the member's content ends: like GNU tar, every type but a directory may carry content
 * (skipped unless the member is a regular file). rc is make_entry's result so far: 1 for an entry,
 * which becomes current, or -ENOTSUP for a member to skip. Returns rc, or -EINVAL for a bad size.
 */
static int member_size(struct index_tar *t, const uint8_t *b, uint64_t hdr_off, int rc)
{
	uint64_t size;

	if (t->ext.has_size) {
		size = t->ext.size;
	} else if (index_tar_parse_unum(b + H_SIZE, 12, INT64_MAX, &size) < 0) {
		return index_tar_bad_field(hdr_off, "size");
	}
	if (b[H_TYPE] == '5')
		size = 0;
	if (rc == 1 && t->ent.type == INDEX_TAR_REG) {
		t->ent.size = size;
		t->ent.data_size = size;
		t->remain = size;
		t->skip = index_tar_padding(size);
	} else {
		t->remain = 0;
		t->skip = size + index_tar_padding(size);
	}
	if (rc == 1)
		t->have_entry = true;
	return rc;
}

/* Builds t->ent from a member header block b and the pending extensions. Sets t->remain, t->skip.
 * Returns 1, or negative errno (strata_err set). The entry is left partly filled on failure. */
static int make_entry(struct index_tar *t, const uint8_t *b, uint64_t hdr_off, uint64_t first_off)
{
	struct index_tar_entry *e = &t->ent;
	struct index_tar_ext *x = &t->ext;
	uint8_t flag = b[H_TYPE];
	bool posix = memcmp(b + H_MAGIC, "ustar\0", 6) == 0;
	bool gnu = memcmp(b + H_MAGIC, "ustar  \0", 8) == 0;
	const char *raw;
	char *joined = NULL;
	int rc = 1;

	e->header_offset = first_off;
	e->data_offset = t->off;

	raw = member_path(x, b, posix, &joined);
	if (!raw)
		goto nomem;
	if (type_of(flag, &e->type) < 0 && flag != 'S') {
		e->path = clean_path(raw);
		rc = strata_err(ENOTSUP, "tar member %s has unsupported type '%c'",
				e->path ? e->path : raw, flag >= 0x20 && flag < 0x7f ? flag : '?');
		goto skip_member;
	}
	/* old tars mark directories with a trailing slash on a regular-file entry */
	if (flag == '\0' && raw[0] && raw[strlen(raw) - 1] == '/')
		e->type = INDEX_TAR_DIR;
	e->path = clean_path(raw);
	if (!e->path)
		goto nomem;
	if (flag == 'S')
		e->type = INDEX_TAR_REG;
	if (x->sp.any && e->type != INDEX_TAR_REG) {
		rc = strata_err(EINVAL,
				"tar member %s at offset %" PRIu64
				" has a sparse map but is not a regular file",
				e->path, hdr_off);
		goto out;
	}
	if ((e->type == INDEX_TAR_HARDLINK || e->type == INDEX_TAR_SYMLINK) &&
	    member_link(e, x, b) < 0)
		goto nomem;
	rc = member_attrs(e, x, b, hdr_off, posix || gnu);
	if (rc < 0)
		goto out;
	rc = 1;

	/* xattrs move from the pending extensions to the entry, duplicates merged */
	if (index_tar_xattrs_dedup(x) < 0)
		goto nomem;
	e->xattrs = x->xattrs;
	e->nxattrs = x->nxattrs;
	x->xattrs = NULL;
	x->nxattrs = x->cap = 0;
	e->data_size = 0;
	if (flag == 'S' || x->sp.any) {
		rc = index_tar_sparse_member(t, b, hdr_off, gnu);
		goto out;
	}

skip_member:
	rc = member_size(t, b, hdr_off, rc);
	goto out;
nomem:
	rc = strata_err(ENOMEM, "out of memory reading tar header");
out:
	free(joined);
	return rc;
}

int index_tar_next(struct index_tar *t, const struct index_tar_entry **e)
{
	uint8_t b[BLOCK];
	uint64_t first_off;
	int rc;

	assert(t && e);
	*e = NULL;
	if (t->err)
		return t->err;
	if (t->done)
		return 0;
	rc = skip_bytes(t, t->remain + t->skip);
	if (rc < 0)
		goto fail;
	t->remain = 0;
	t->skip = 0;
	entry_reset(t);
	ext_reset(&t->ext);

	first_off = t->off;
	for (;;) {
		uint64_t hdr_off = t->off;
		ssize_t n = index_tar_get_full(t, b, BLOCK);
		uint64_t size;
		char *data;

		if (n < 0) {
			rc = (int)n;
			goto fail;
		}
		if (n == 0 && !t->ext.any) {
			t->done = true;
			return 0;
		}
		if (n < BLOCK) {
			rc = index_tar_truncated(t);
			goto fail;
		}
		if (is_zero_block(b)) {
			if (t->ext.any) {
				rc = strata_err(EINVAL,
						"tar extension header at offset %" PRIu64
						" is not followed by a member",
						first_off);
				goto fail;
			}
			t->done = true;
			return 0;
		}
		if (!checksum_ok(b)) {
			rc = strata_err(EINVAL,
					"not a tar archive: bad header checksum at offset %" PRIu64,
					hdr_off);
			goto fail;
		}
		if (b[H_TYPE] != 'x' && b[H_TYPE] != 'g' && b[H_TYPE] != 'L' && b[H_TYPE] != 'K') {
			rc = make_entry(t, b, hdr_off, first_off);
			if (rc < 0 && rc != -ENOTSUP)
				goto fail;
			if (rc < 0)
				return rc; /* t->skip covers the member: the caller may go on */
			*e = &t->ent;
			return 1;
		}
		if (index_tar_parse_unum(b + H_SIZE, 12, INT64_MAX, &size) < 0) {
			rc = index_tar_bad_field(hdr_off, "size");
			goto fail;
		}
		if (b[H_TYPE] == 'g') {
			/* global headers are validated and otherwise ignored; they belong to no member */
			struct index_tar_ext g = { 0 };

			rc = read_ext_data(t, size, &data);
			if (rc < 0)
				goto fail;
			rc = index_tar_pax_parse(&g, data, (size_t)size, hdr_off);
			ext_reset(&g);
			free(data);
			if (rc < 0)
				goto fail;
			if (!t->ext.any)
				first_off = t->off;
			continue;
		}
		if (size > INDEX_TAR_MAX_EXT || t->ext.bytes + size > INDEX_TAR_MAX_EXT) {
			rc = strata_err(EINVAL,
					"tar header too large: the extension headers at offset "
					"%" PRIu64 " hold more than %u bytes for one member",
					first_off, INDEX_TAR_MAX_EXT);
			goto fail;
		}
		t->ext.bytes += size;
		t->ext.any = true;
		switch (b[H_TYPE]) {
		case 'x':
			rc = read_ext_data(t, size, &data);
			if (rc < 0)
				goto fail;
			rc = index_tar_pax_parse(&t->ext, data, (size_t)size, hdr_off);
			free(data);
			if (rc < 0)
				goto fail;
			break;
		case 'L':
			rc = read_gnu_name(t, size, &t->ext.gnu_name);
			if (rc < 0)
				goto fail;
			break;
		default: /* 'K' */
			rc = read_gnu_name(t, size, &t->ext.gnu_link);
			if (rc < 0)
				goto fail;
			break;
		}
	}
fail:
	t->err = rc;
	return rc;
}

ssize_t index_tar_read(struct index_tar *t, void *buf, size_t len)
{
	ssize_t n;

	assert(t && (buf || len == 0));
	if (t->err)
		return t->err;
	if (!t->have_entry || t->remain == 0 || len == 0)
		return 0;
	if (len > t->remain)
		len = (size_t)t->remain;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	n = get(t, buf, len);
	if (n == 0)
		n = index_tar_truncated(t);
	if (n < 0) {
		t->err = (int)n;
		return n;
	}
	t->remain -= (uint64_t)n;
	return n;
}

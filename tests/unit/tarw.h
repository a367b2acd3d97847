/* SPDX-License-Identifier: Apache-2.0 */
/* An in-memory tar writer for unit tests: ustar, GNU and v7 headers, PAX records, long names. */
#ifndef STRATA_TESTS_TARW_H
#define STRATA_TESTS_TARW_H

#include <stdio.h>

#include "bytebuf.h"

enum tarw_fmt { TARW_USTAR, TARW_GNU, TARW_V7 };

/* One header's fields; zero ones take the defaults (mode 0100644, ustar, uid/gid/mtime 0). */
struct tarw_hdr {
	const char *name;   /* up to 100 bytes (no NUL at 100) */
	const char *prefix; /* ustar only, up to 155 bytes */
	const char *link;
	char type;
	uint32_t mode;
	uint64_t uid, gid, size;
	int64_t mtime;
	uint32_t major, minor;
	enum tarw_fmt fmt;
};

/* Writes v as a NUL-terminated octal field of len bytes (len - 1 digits; v must fit). */
static inline void tarw_octal(uint8_t *f, size_t len, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*llo", (int)(len - 1), (unsigned long long)v);
	assert_int_equal(strlen(tmp), len - 1);
	memcpy(f, tmp, len); /* includes the NUL */
}

/* Sets the checksum field of the 512-byte header b. */
static inline void tarw_checksum(uint8_t *b)
{
	unsigned sum = 0;
	char tmp[8];

	memset(b + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += b[i];
	snprintf(tmp, sizeof(tmp), "%06o", sum);
	memcpy(b + 148, tmp, 7); /* six digits, NUL, and the space stays */
}

/* Fills the 512-byte header b from h (checksum included). */
static inline void tarw_make_header(uint8_t *b, const struct tarw_hdr *h)
{
	memset(b, 0, 512);
	strncpy((char *)b, h->name, 100);
	tarw_octal(b + 100, 8, h->mode ? h->mode : 0100644);
	tarw_octal(b + 108, 8, h->uid);
	tarw_octal(b + 116, 8, h->gid);
	tarw_octal(b + 124, 12, h->size);
	tarw_octal(b + 136, 12, (uint64_t)h->mtime);
	b[156] = (uint8_t)h->type;
	if (h->link)
		strncpy((char *)b + 157, h->link, 100);
	if (h->fmt == TARW_USTAR) {
		memcpy(b + 257,
		       "ustar\0"
		       "00",
		       8);
		strcpy((char *)b + 265, "root");
		strcpy((char *)b + 297, "root");
		tarw_octal(b + 329, 8, h->major);
		tarw_octal(b + 337, 8, h->minor);
		if (h->prefix)
			strncpy((char *)b + 345, h->prefix, 155);
	} else if (h->fmt == TARW_GNU) {
		memcpy(b + 257, "ustar  \0", 8);
		tarw_octal(b + 329, 8, h->major);
		tarw_octal(b + 337, 8, h->minor);
	}
	tarw_checksum(b);
}

/* Zeros up to the next 512-byte boundary. */
static inline void tarw_pad(struct bytebuf *a)
{
	bytebuf_zeros(a, (512 - a->len % 512) % 512);
}

/* The end-of-archive marker: two zero blocks. */
static inline void tarw_end(struct bytebuf *a)
{
	bytebuf_zeros(a, 1024);
}

static inline void tarw_put_header(struct bytebuf *a, const struct tarw_hdr *h)
{
	uint8_t b[512];

	tarw_make_header(b, h);
	bytebuf_put(a, b, sizeof(b));
}

/* Header, h->size bytes of data, padding. */
static inline void tarw_put_file(struct bytebuf *a, const struct tarw_hdr *h, const void *data)
{
	tarw_put_header(a, h);
	bytebuf_put(a, data, h->size);
	tarw_pad(a);
}

/* PAX records ("len key=value\n"), collected for one 'x' or 'g' header. Zero-initialize. */
struct tarw_pax {
	char buf[8192];
	size_t len;
};

static inline void tarw_pax_add(struct tarw_pax *p, const char *key, const void *val, size_t vlen)
{
	size_t base = strlen(key) + vlen + 3; /* ' ', '=', '\n' */
	size_t total = base + 1;
	char digits[24];
	int n;

	/* the length field counts its own digits */
	while ((size_t)snprintf(digits, sizeof(digits), "%zu", total) + base != total)
		total++;
	assert_true(p->len + total <= sizeof(p->buf));
	n = snprintf(p->buf + p->len, sizeof(p->buf) - p->len, "%zu %s=", total, key);
	p->len += (size_t)n;
	memcpy(p->buf + p->len, val, vlen);
	p->len += vlen;
	p->buf[p->len++] = '\n';
}

static inline void tarw_pax_adds(struct tarw_pax *p, const char *key, const char *val)
{
	tarw_pax_add(p, key, val, strlen(val));
}

/* A PAX header of type ('x' or 'g') holding p's records. */
static inline void tarw_put_pax(struct bytebuf *a, char type, const struct tarw_pax *p)
{
	struct tarw_hdr h = { .name = "./PaxHeaders/x", .type = type, .size = p->len };

	tarw_put_file(a, &h, p->buf);
}

/* A GNU long name ('L') or long link ('K') member for the next header. */
static inline void tarw_put_gnu_long(struct bytebuf *a, char type, const char *name)
{
	struct tarw_hdr h = {
		.name = "././@LongLink", .type = type, .size = strlen(name) + 1, .fmt = TARW_GNU
	};

	tarw_put_file(a, &h, name); /* with its NUL */
}

/* ---- shorthands ---- */

/* A ustar header owned by root; name must fit in 100 bytes. */
static inline void tarw_header(struct bytebuf *a, const char *name, char type, unsigned mode,
			       uint64_t size, const char *link, unsigned long mtime)
{
	struct tarw_hdr h = { .name = name,
			      .type = type,
			      .mode = mode,
			      .size = size,
			      .link = link,
			      .mtime = (int64_t)mtime };

	tarw_put_header(a, &h);
}

/* A PAX 'x' header carrying one key=value record (value of vlen bytes). */
static inline void tarw_pax(struct bytebuf *a, const char *key, const void *val, size_t vlen)
{
	struct tarw_pax p = { .len = 0 };

	tarw_pax_add(&p, key, val, vlen);
	tarw_put_pax(a, 'x', &p);
}

/* A regular file, mode 0644, with its data and padding. */
static inline void tarw_file(struct bytebuf *a, const char *name, const void *data, size_t size)
{
	struct tarw_hdr h = {
		.name = name, .type = '0', .mode = 0644, .size = size, .mtime = 1700000000
	};

	tarw_put_file(a, &h, data);
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal in-memory ustar/PAX writer for unit tests, plus a memory index_reader. */
#ifndef STRATA_TESTS_TARW_H
#define STRATA_TESTS_TARW_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "index/reader.h"

struct tarw {
	uint8_t *buf;
	size_t len, cap;
};

static inline void tarw_put(struct tarw *t, const void *p, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2 + 4096;
		t->buf = realloc(t->buf, t->cap);
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
}

static inline void tarw_pad(struct tarw *t)
{
	static const uint8_t zero[512];

	if (t->len % 512)
		tarw_put(t, zero, 512 - t->len % 512);
}

/* Writes one ustar header; name must fit in 100 bytes. */
static inline void tarw_header(struct tarw *t, const char *name, char type, unsigned mode,
			       uint64_t size, const char *link, unsigned long mtime)
{
	uint8_t h[512];
	unsigned sum = 0;

	memset(h, 0, sizeof(h));
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", mode);
	snprintf((char *)h + 108, 8, "%07o", 0);
	snprintf((char *)h + 116, 8, "%07o", 0);
	snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
	snprintf((char *)h + 136, 12, "%011lo", mtime);
	h[156] = (uint8_t)type;
	if (link)
		snprintf((char *)h + 157, 100, "%s", link);
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	tarw_put(t, h, 512);
}

/* A PAX 'x' header carrying key=value records (value of vlen bytes). */
static inline void tarw_pax(struct tarw *t, const char *key, const void *val, size_t vlen)
{
	char rec[4096];
	size_t base = strlen(key) + vlen + 3, len = base;
	int n;

	/* the length field counts its own digits */
	for (;;) {
		size_t digits = (size_t)snprintf(NULL, 0, "%zu", len);

		if (base + digits == len)
			break;
		len = base + digits;
	}
	n = snprintf(rec, sizeof(rec), "%zu %s=", len, key);
	memcpy(rec + n, val, vlen);
	rec[n + vlen] = '\n';
	tarw_header(t, "PaxHeaders/x", 'x', 0644, len, NULL, 0);
	tarw_put(t, rec, len);
	tarw_pad(t);
}

static inline void tarw_file(struct tarw *t, const char *name, const void *data, size_t size)
{
	tarw_header(t, name, '0', 0644, size, NULL, 1700000000);
	tarw_put(t, data, size);
	tarw_pad(t);
}

static inline void tarw_end(struct tarw *t)
{
	static const uint8_t zero[1024];

	tarw_put(t, zero, sizeof(zero));
}

struct memsrc {
	const uint8_t *p;
	size_t len, pos;
};

static inline ssize_t memsrc_read(void *ctx, void *buf, size_t len)
{
	struct memsrc *m = ctx;
	size_t n = m->len - m->pos < len ? m->len - m->pos : len;

	memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static inline struct index_reader memsrc_reader(struct memsrc *m)
{
	struct index_reader r = { memsrc_read, m };

	return r;
}

#endif

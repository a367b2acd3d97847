/* SPDX-License-Identifier: Apache-2.0 */
/* Test helpers that read a tar archive through index_tar and check what it yields. */
#ifndef STRATA_TESTS_TARQ_H
#define STRATA_TESTS_TARQ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytebuf.h"
#include "index/tar.h"
#include "memsrc.h"
#include "util/log.h"

/* The read sizes of the in-memory source that the archive tests try (0: whole reads). */
static const size_t tar_chunks[] = { 0, 1, 7, 511, 513, 100000 };
#define NCHUNKS (sizeof(tar_chunks) / sizeof(tar_chunks[0]))

/* index_tar_open of the archive a, read through m in pieces of chunk bytes. */
static inline struct index_tar *open_mem(struct memsrc *m, const struct bytebuf *a, size_t chunk)
{
	struct index_tar *t = NULL;

	assert_int_equal(index_tar_open(memsrc_open(m, a->p, a->len, chunk), &t), 0);
	assert_non_null(t);
	return t;
}

/* The next entry, which must be there. */
static inline const struct index_tar_entry *next_ok(struct index_tar *t)
{
	const struct index_tar_entry *e = NULL;
	int rc = index_tar_next(t, &e);

	if (rc != 1)
		fprintf(stderr, "index_tar_next: %d %s\n", rc, strata_errmsg(-rc));
	assert_int_equal(rc, 1);
	assert_non_null(e);
	return e;
}

/* The end of the archive, which stays the end. */
static inline void expect_end(struct index_tar *t)
{
	const struct index_tar_entry *e = (const void *)1;

	assert_int_equal(index_tar_next(t, &e), 0);
	assert_null(e);
	assert_int_equal(index_tar_next(t, &e), 0); /* and it stays at the end */
}

/* index_tar_next fails with -err and a message containing msg_part (unless NULL). */
static inline void expect_err(struct index_tar *t, int err, const char *msg_part)
{
	const struct index_tar_entry *e = NULL;
	int rc = index_tar_next(t, &e);

	assert_int_equal(rc, -err);
	if (msg_part && !strstr(strata_errmsg(err), msg_part)) {
		fprintf(stderr, "message '%s' lacks '%s'\n", strata_errmsg(err), msg_part);
		fail();
	}
}

/* Reads the rest of the current member in pieces of `step` bytes. Returns a malloc'd copy. */
static inline uint8_t *read_all(struct index_tar *t, size_t step, size_t *len)
{
	uint8_t *out = NULL;
	size_t n = 0;

	for (;;) {
		uint8_t *buf = malloc(step);
		ssize_t r;

		assert_non_null(buf);
		r = index_tar_read(t, buf, step);
		assert_true(r >= 0);
		if (r == 0) {
			free(buf);
			break;
		}
		out = realloc(out, n + (size_t)r + 1);
		assert_non_null(out);
		memcpy(out + n, buf, (size_t)r);
		n += (size_t)r;
		free(buf);
	}
	*len = n;
	return out;
}

/* Reads the rest of the current member and compares it with want. */
static inline void expect_content(struct index_tar *t, const void *want, size_t want_len)
{
	size_t len;
	uint8_t *got = read_all(t, 3, &len);

	assert_int_equal(len, want_len);
	assert_memory_equal(got, want, len);
	free(got);
}

#endif

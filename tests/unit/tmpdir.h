/* SPDX-License-Identifier: Apache-2.0 */
/* Temporary directories for unit tests: made under $TMPDIR (or /tmp), filled, removed whole. */
#ifndef STRATA_TESTS_TMPDIR_H
#define STRATA_TESTS_TMPDIR_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Makes a new directory $TMPDIR/strata-NAME-XXXXXX (/tmp without TMPDIR); its path goes to
 * dir[size]. 0, or -1 with errno set. */
static inline int tmpdir_make(char *dir, size_t size, const char *name)
{
	const char *base = getenv("TMPDIR");

	if ((size_t)snprintf(dir, size, "%s/strata-%s-XXXXXX", base ? base : "/tmp", name) >=
	    size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return mkdtemp(dir) ? 0 : -1;
}

static inline int tmpdir_rm_entry(const char *path, const struct stat *st, int flag,
				  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes dir and everything below it (symlinks are removed, not followed). 0 or -1. */
static inline int tmpdir_remove(const char *dir)
{
	return nftw(dir, tmpdir_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The directory of tmpdir_setup, for suites that share one temporary directory. */
static char tmpdir_path[PATH_MAX];

/* A cmocka setup (per group or per test): makes tmpdir_path, named after the test program. */
static inline int tmpdir_setup(void **state)
{
	(void)state;
	return tmpdir_make(tmpdir_path, sizeof(tmpdir_path), program_invocation_short_name);
}

/* The cmocka teardown that goes with tmpdir_setup: removes tmpdir_path and all below it. */
static inline int tmpdir_teardown(void **state)
{
	(void)state;
	return tmpdir_remove(tmpdir_path);
}

/* Writes len bytes of data to the file dir/name (created or truncated); fails the test on an
 * error. */
static inline void tmpdir_write(const char *dir, const char *name, const void *data, size_t len)
{
	char path[4096];
	FILE *f;

	assert_true((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) < sizeof(path));
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Writes the string text (without its NUL) to the file dir/name. */
static inline void tmpdir_write_text(const char *dir, const char *name, const char *text)
{
	tmpdir_write(dir, name, text, strlen(text));
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the streaming tar reader: archives GNU tar made (posix, gnu; plain, gzip). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "index/decomp.h"
#include "index/reader.h"
#include "tarq.h"
#include "tmpdir.h"
#include "util/log.h"
struct want {
	const char *path;
	enum index_tar_type type;
	uint64_t size;
	const uint8_t *data;
	bool seen;
};

static void check_real(const char *archive, struct want *w, size_t nw, bool gz, bool want_xattr,
		       const struct stat *top)
{
	int fd = open(archive, O_RDONLY);
	struct index_decomp *d = NULL;
	struct index_reader r;
	struct index_tar *t = NULL;
	const struct index_tar_entry *e;
	int rc, nhard = 0;
	bool xattr_seen = false;

	assert_true(fd >= 0);
	r = index_reader_fd(fd);
	if (gz) {
		assert_int_equal(index_decomp_new(INDEX_COMP_GZIP, r, &d), 0);
		r = index_decomp_reader(d);
	}
	assert_int_equal(index_tar_open(r, &t), 0);
	for (size_t i = 0; i < nw; i++)
		w[i].seen = false;
	while ((rc = index_tar_next(t, &e)) == 1) {
		size_t i;

		for (i = 0; i < nw; i++)
			if (strcmp(w[i].path, e->path) == 0)
				break;
		if (i == nw) {
			fprintf(stderr, "unexpected member '%s'\n", e->path);
			fail();
		}
		assert_false(w[i].seen);
		w[i].seen = true;
		if (e->type == INDEX_TAR_HARDLINK) {
			/* top.txt and hard are the same inode: whichever comes second links */
			nhard++;
			assert_true(strcmp(e->linkname, "top.txt") == 0 ||
				    strcmp(e->linkname, "hard") == 0);
			assert_true(w[i].type == INDEX_TAR_REG);
			continue;
		}
		assert_int_equal(e->type, w[i].type);
		assert_int_equal(e->size, w[i].size);
		if (strcmp(e->path, "link") == 0)
			assert_string_equal(e->linkname, "top.txt");
		if (strcmp(e->path, "top.txt") == 0 || strcmp(e->path, "hard") == 0) {
			assert_int_equal(e->mtime_sec, top->st_mtim.tv_sec);
			assert_int_equal(e->mode, 0640);
			if (want_xattr) {
				for (size_t k = 0; k < e->nxattrs; k++)
					if (strcmp(e->xattrs[k].name, "user.foo") == 0 &&
					    e->xattrs[k].len == 3 &&
					    memcmp(e->xattrs[k].value, "bar", 3) == 0)
						xattr_seen = true;
			}
		}
		if (w[i].data) {
			size_t len;
			uint8_t *got = read_all(t, 4093, &len);

			assert_int_equal(len, w[i].size);
			assert_memory_equal(got, w[i].data, len);
			free(got);
		}
	}
	if (rc != 0)
		fprintf(stderr, "index_tar_next: %s\n", strata_errmsg(-rc));
	assert_int_equal(rc, 0);
	for (size_t i = 0; i < nw; i++) {
		if (!w[i].seen)
			fprintf(stderr, "missing member '%s'\n", w[i].path);
		assert_true(w[i].seen);
	}
	assert_int_equal(nhard, 1);
	if (want_xattr)
		assert_true(xattr_seen);
	index_tar_free(t);
	index_decomp_free(d);
	close(fd);
}

static int run(const char *cmd)
{
	int rc = system(cmd);

	if (rc != 0)
		fprintf(stderr, "'%s' failed: %d\n", cmd, rc);
	return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}

static void test_real_gnu_tar(void **state)
{
	char dir[256], src[300], path[512], cmd[1024], archive[320];
	static uint8_t nested[70000];
	char longname[141];
	struct stat top;
	bool have_xattr;
	struct want w[] = {
		{ "", INDEX_TAR_DIR, 0, NULL, false },
		{ "top.txt", INDEX_TAR_REG, 6, (const uint8_t *)"hello\n", false },
		{ "hard", INDEX_TAR_REG, 6, (const uint8_t *)"hello\n", false },
		{ "empty", INDEX_TAR_REG, 0, NULL, false },
		{ "link", INDEX_TAR_SYMLINK, 0, NULL, false },
		{ "fifo", INDEX_TAR_FIFO, 0, NULL, false },
		{ "sub", INDEX_TAR_DIR, 0, NULL, false },
		{ "sub/nested.bin", INDEX_TAR_REG, sizeof(nested), nested, false },
		{ NULL, INDEX_TAR_REG, 5, (const uint8_t *)"long\n", false },
	};
	static const char *formats[] = { "posix", "gnu" };
	char longpath[160];

	(void)state;
	if (access("/bin/tar", X_OK) != 0 && access("/usr/bin/tar", X_OK) != 0)
		skip();
	assert_int_equal(tmpdir_make(dir, sizeof(dir), "test-tar"), 0);
	snprintf(src, sizeof(src), "%s/src", dir);
	assert_int_equal(mkdir(src, 0755), 0);

	tmpdir_write(src, "top.txt", "hello\n", 6);
	snprintf(path, sizeof(path), "%s/top.txt", src);
	assert_int_equal(chmod(path, 0640), 0);
	have_xattr = setxattr(path, "user.foo", "bar", 3, 0) == 0;
	assert_int_equal(stat(path, &top), 0);
	snprintf(cmd, sizeof(cmd), "%s/hard", src);
	assert_int_equal(link(path, cmd), 0);
	tmpdir_write(src, "empty", "", 0);
	snprintf(path, sizeof(path), "%s/link", src);
	assert_int_equal(symlink("top.txt", path), 0);
	snprintf(path, sizeof(path), "%s/fifo", src);
	assert_int_equal(mkfifo(path, 0600), 0);
	snprintf(path, sizeof(path), "%s/sub", src);
	assert_int_equal(mkdir(path, 0700), 0);
	fill_pattern(nested, sizeof(nested), 5);
	tmpdir_write(src, "sub/nested.bin", nested, sizeof(nested));
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	snprintf(longpath, sizeof(longpath), "sub/%s", longname);
	w[8].path = longpath;
	tmpdir_write(src, longpath, "long\n", 5);

	for (size_t f = 0; f < 2; f++) {
		for (int gz = 0; gz < 2; gz++) {
			snprintf(archive, sizeof(archive), "%s/out-%s.tar%s", dir, formats[f],
				 gz ? ".gz" : "");
			snprintf(cmd, sizeof(cmd), "tar --format=%s %s %s -C '%s' -cf '%s' .",
				 formats[f], f == 0 ? "--xattrs" : "", gz ? "-z" : "", src,
				 archive);
			assert_int_equal(run(cmd), 0);
			check_real(archive, w, sizeof(w) / sizeof(w[0]), gz, f == 0 && have_xattr,
				   &top);
		}
	}

	assert_int_equal(tmpdir_remove(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_gnu_tar),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

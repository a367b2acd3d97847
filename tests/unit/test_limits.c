/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the bounds on what a layer may hold (layer.h's INDEX_MAX_*, the tar reader's
 * extension header limit): each violation is one error naming the member and the limit, found
 * without recursion or quadratic work, and a layer just inside every bound still indexes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "index/layer.h"
#include "index/layer_i.h"
#include "index/tar.h"
#include "layerq.h"
#include "memsrc.h"
#include "tarw.h"
#include "util/log.h"

#define CS 4096u

/* Appends one PAX record "len key=value\n" (value of vlen bytes) to a. */
static void pax_record(struct bytebuf *a, const char *key, const void *val, size_t vlen)
{
	size_t base = strlen(key) + vlen + 3, total = base + 1;
	char digits[24];
	int n;

	while ((size_t)snprintf(digits, sizeof(digits), "%zu", total) + base != total)
		total++;
	n = snprintf(digits, sizeof(digits), "%zu ", total);
	bytebuf_put(a, digits, (size_t)n);
	bytebuf_put(a, key, strlen(key));
	bytebuf_put(a, "=", 1);
	bytebuf_put(a, val, vlen);
	bytebuf_put(a, "\n", 1);
}

/* A PAX 'x' header holding the records in recs, then an empty regular file name. */
static void pax_then_file(struct bytebuf *a, const struct bytebuf *recs, const char *name)
{
	struct tarw_hdr h = { .name = "./PaxHeaders/x", .type = 'x', .size = recs->len };

	tarw_put_file(a, &h, recs->p);
	tarw_file(a, name, "", 0);
}

/* Builds the tar in t; returns the result, the index (if any) in *out. */
static int build(const struct bytebuf *t, struct index_layer **out)
{
	struct memsrc m;

	*out = NULL;
	return index_layer_build(memsrc_open(&m, t->p, t->len, 0), CS, NULL, NULL, out);
}

static void expect_fail(const struct bytebuf *t, int err, const char *needle)
{
	struct index_layer *l;

	assert_int_equal(build(t, &l), -err);
	assert_null(l);
	if (!strstr(strata_errmsg(-err), needle))
		fail_msg("error '%s' does not say '%s'", strata_errmsg(-err), needle);
}

/* A path of n components "a/a/.../f". */
static char *deep(size_t n)
{
	char *p = malloc(2 * n + 2);

	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		memcpy(p + 2 * i, "a/", 2);
	strcpy(p + 2 * n, "f");
	return p;
}

/* Finding 3: a 250,000-component PAX path overflowed the stack of a recursive directory maker. */
static void test_deep_path(void **state)
{
	struct bytebuf t = { 0 }, r = { 0 };
	char *p = deep(250000);

	(void)state;
	pax_record(&r, "path", p, strlen(p));
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	expect_fail(&t, ENAMETOOLONG, "path of 500001 bytes exceeds 4095 bytes");
	free(p);
	free(t.p);
	free(r.p);
}

/* The deepest path allowed (2047 directories) indexes, and replacing its top directory by a file
 * unmaps the whole chain without recursion. */
static void test_deepest_allowed(void **state)
{
	struct bytebuf t = { 0 }, r = { 0 };
	char *p = deep(2047);
	struct index_layer *l;

	(void)state;
	assert_int_equal(strlen(p), 4095);
	pax_record(&r, "path", p, strlen(p));
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	assert_int_equal(build(&t, &l), 0);
	assert_int_equal(index_layer_ninodes(l), 2049);
	index_layer_free(l);

	t.len = 0;
	pax_then_file(&t, &r, "f");
	tarw_file(&t, "a", "x", 1);		     /* a directory chain replaced by a file */
	tarw_header(&t, "a", '5', 0755, 0, NULL, 0); /* a directory again, empty */
	r.len = 0;
	pax_record(&r, "path", p, strlen(p));
	pax_then_file(&t, &r, "f"); /* and made again */
	tarw_end(&t);
	assert_int_equal(build(&t, &l), 0);
	assert_true(walk(l, "a/a/a") >= 0);
	index_layer_free(l);
	free(p);
	free(t.p);
	free(r.p);
}

static void test_long_name(void **state)
{
	struct bytebuf t = { 0 }, r = { 0 };
	char name[400];

	(void)state;
	memcpy(name, "d/", 2);
	memset(name + 2, 'n', 300);
	name[302] = '\0';
	pax_record(&r, "path", name, strlen(name));
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	expect_fail(&t, ENAMETOOLONG, "a name of 300 bytes in its path exceeds 255 bytes");

	/* a symlink target beyond PATH_MAX */
	t.len = r.len = 0;
	{
		char *target = malloc(5000);

		assert_non_null(target);
		memset(target, 't', 4999);
		target[4999] = '\0';
		r.len = 0;
		pax_record(&r, "linkpath", target, 4999);
		free(target);
	}
	{
		struct tarw_hdr x = { .name = "./PaxHeaders/x", .type = 'x', .size = r.len };
		struct tarw_hdr s = { .name = "sym", .type = '2', .mode = 0777 };

		tarw_put_file(&t, &x, r.p);
		tarw_put_header(&t, &s);
	}
	tarw_end(&t);
	expect_fail(&t, ENAMETOOLONG, "link target of 4999 bytes exceeds 4095");
	free(t.p);
	free(r.p);
}

/* Finding 5: 16 MiB PAX xattrs were held in memory member after member. */
static void test_xattr_sizes(void **state)
{
	struct bytebuf t = { 0 }, r = { 0 };
	size_t big = (16u << 20) - 4096;
	char *v = malloc(big);
	char name[300];

	(void)state;
	assert_non_null(v);
	memset(v, 'A', big);
	pax_record(&r, "SCHILY.xattr.user.bomb", v, big);
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	expect_fail(&t, EINVAL, "hold more than 1048576 bytes for one member");

	t.len = r.len = 0;
	pax_record(&r, "SCHILY.xattr.user.big", v, INDEX_MAX_XATTR_VALUE + 1);
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	expect_fail(&t, E2BIG, "xattr user.big has a value of 65537 bytes, more than 65536");

	t.len = r.len = 0;
	pax_record(&r, "SCHILY.xattr.user.ok", v, INDEX_MAX_XATTR_VALUE);
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	{
		struct index_layer *l;
		uint32_t len = 0;

		assert_int_equal(build(&t, &l), 0);
		assert_non_null(xattr(l, (uint32_t)walk(l, "f"), "user.ok", &len));
		assert_int_equal(len, INDEX_MAX_XATTR_VALUE);
		index_layer_free(l);
	}

	t.len = r.len = 0;
	memcpy(name, "SCHILY.xattr.user.", 18);
	memset(name + 18, 'k', 260);
	name[278] = '\0';
	pax_record(&r, name, "v", 1);
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	expect_fail(&t, E2BIG, "an xattr name of 265 bytes exceeds 255 bytes");
	free(v);
	free(t.p);
	free(r.p);
}

/* Many xattrs: duplicates (SCHILY and LIBARCHIVE forms of each) merge in O(n log n), the last value
 * winning at the first one's place; a names list beyond 64 KiB is refused. */
static void test_xattr_many(void **state)
{
	struct bytebuf t = { 0 }, r = { 0 };
	struct index_layer *l;
	char key[64];
	struct timespec a, b;
	uint32_t len = 0;
	const char *val;

	(void)state;
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "SCHILY.xattr.user.k%05d", i);
		pax_record(&r, key, "old", 3);
	}
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "LIBARCHIVE.xattr.user.k%05d", i);
		pax_record(&r, key, "bmV3", 4); /* "new" */
	}
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(build(&t, &l), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_true(b.tv_sec - a.tv_sec < 5);
	assert_int_equal(index_layer_inode(l, (uint32_t)walk(l, "f"))->nxattrs, 5000);
	val = xattr(l, (uint32_t)walk(l, "f"), "user.k04321", &len);
	assert_non_null(val);
	assert_int_equal(len, 3);
	assert_memory_equal(val, "new", 3);
	assert_memory_equal(
		index_layer_str(l, index_layer_xattr(l, index_layer_inode(l, (uint32_t)walk(l, "f"))
								->xattr_first)
					   ->name_off),
		"user.k00000", 11);
	index_layer_free(l);

	/* 7000 names of 12 bytes: 84,000 bytes of names list */
	t.len = r.len = 0;
	for (int i = 0; i < 7000; i++) {
		snprintf(key, sizeof(key), "SCHILY.xattr.user.k%05d", i);
		pax_record(&r, key, "v", 1);
	}
	pax_then_file(&t, &r, "f");
	tarw_end(&t);
	expect_fail(&t, E2BIG, "its 7000 xattr names take 84000 bytes, more than 65536");
	free(t.p);
	free(r.p);
}

/* A builder fed entries directly (as an eStargz TOC does). */
static int add(struct index_builder *ib, const char *path, enum index_tar_type type)
{
	struct index_tar_entry e = { .path = (char *)path, .type = type, .mode = 0644 };

	return index_builder_add(ib, &e, NULL, 0);
}

static void test_entry_cap(void **state)
{
	struct index_builder *ib;
	char path[64];
	int rc = 0;
	uint32_t i;

	(void)state;
	assert_int_equal(index_builder_new(CS, &ib), 0);
	/* 400 implicit directories and 399,600 files: exactly the cap */
	for (i = 0; i < INDEX_MAX_ENTRIES - 400 && rc == 0; i++) {
		snprintf(path, sizeof(path), "d%03u/f%u", i % 400, i);
		rc = add(ib, path, INDEX_TAR_REG);
	}
	assert_int_equal(rc, 0);
	rc = add(ib, "one-more", INDEX_TAR_FIFO);
	assert_int_equal(rc, -EFBIG);
	assert_string_equal(strata_errmsg(rc),
			    "layer member 'one-more': the layer has more than 400000 entries");
	index_builder_free(ib);
}

static void test_layer_totals(void **state)
{
	struct index_builder *ib;
	char *path = malloc(4096);
	struct index_tar_xattr x = { .name = (char *)"user.v", .len = 60000 };
	int rc = 0, i;

	(void)state;
	assert_non_null(path);
	/* 15 directories of 250 bytes, then a 93-byte name: 3858-byte paths */
	for (i = 0; i < 15; i++) {
		memset(path + 251 * i, 'd', 250);
		path[251 * i + 250] = '/';
	}
	assert_int_equal(index_builder_new(CS, &ib), 0);
	for (i = 0; rc == 0; i++) {
		snprintf(path + 251 * 15, 100, "%093d", i);
		rc = add(ib, path, INDEX_TAR_REG);
	}
	assert_int_equal(rc, -EFBIG);
	assert_non_null(
		strstr(strata_errmsg(rc), "the layer's paths add up to more than 33554432 bytes"));
	assert_true(i > 8000 && i < 8800);
	index_builder_free(ib);

	x.value = calloc(1, x.len);
	assert_non_null(x.value);
	assert_int_equal(index_builder_new(CS, &ib), 0);
	rc = 0;
	for (i = 0; rc == 0; i++) {
		struct index_tar_entry e = {
			.path = path, .type = INDEX_TAR_REG, .xattrs = &x, .nxattrs = 1
		};

		snprintf(path, 32, "f%d", i);
		rc = index_builder_add(ib, &e, NULL, 0);
	}
	assert_int_equal(rc, -EFBIG);
	assert_non_null(
		strstr(strata_errmsg(rc), "the layer's xattrs take more than 16777216 bytes"));
	assert_int_equal(i, (16 << 20) / (60000 + 6 + 32) + 1);
	index_builder_free(ib);
	free(x.value);
	free(path);
}

/* A source that returns more than it was asked for is an error, not an assert. */
static ssize_t liar_read(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	memset(buf, 0, len);
	return (ssize_t)len + 1;
}

static void test_source_overrun(void **state)
{
	struct index_tar *t;
	const struct index_tar_entry *e;

	(void)state;
	assert_int_equal(index_tar_open((struct index_reader){ liar_read, NULL }, &t), 0);
	assert_int_equal(index_tar_next(t, &e), -EIO);
	index_tar_free(t);
}

/* A one-file index laid out by hand (as a hostile artifact could encode it): root with "f", whose
 * size, chunks and checkpoints the test sets. Returns index_layer_pack's result. */
static int pack_one(uint64_t size, const struct index_chunk *chunks, size_t nchunks,
		    const struct index_checkpoint *cps, size_t ncps, uint64_t tar_size)
{
	static const uint8_t diff_id[32];
	struct index_inode in[2] = {
		{ .mode = S_IFDIR | 0755, .nlink = 2, .count = 1 },
		{ .mode = S_IFREG | 0644, .nlink = 1, .size = size, .count = (uint32_t)nchunks }
	};
	struct index_dirent d = { .name_off = 0, .name_len = 1, .ino = 1 };
	struct index_layer_sections sec = { .chunk_size = CS,
					    .diff_id = diff_id,
					    .tar_size = tar_size,
					    .blob_kind = ncps ? INDEX_BLOB_GZIP : INDEX_BLOB_TAR,
					    .blob_size = 1 << 20,
					    .inodes = in,
					    .ninodes = 2,
					    .dirents = &d,
					    .ndirents = 1,
					    .chunks = chunks,
					    .nchunks = nchunks,
					    .cps = cps,
					    .ncps = ncps,
					    .strtab = "f",
					    .strtab_len = 1 };
	struct index_layer *l = NULL;
	int rc = index_layer_pack(&sec, &l);

	index_layer_free(l);
	return rc;
}

/* Values from outside (an index artifact, a stored record) that the span planner relies on are
 * checked when the index is decoded; what used to be asserts are errors. */
static void test_index_validation(void **state)
{
	struct index_chunk c[2] = { { .offset = 512, .size = CS },
				    { .offset = 512 + CS, .size = 100 } };
	struct index_checkpoint cp[2] = { { .uoff = 0, .coff = 0 }, { .uoff = 4096, .coff = 900 } };

	(void)state;
	assert_int_equal(pack_one(CS + 100, c, 2, NULL, 0, 1 << 20), 0);
	/* a file's chunks out of order, or overlapping */
	c[1].offset = 0;
	assert_int_equal(pack_one(CS + 100, c, 2, NULL, 0, 1 << 20), -EBADMSG);
	assert_string_equal(strata_errmsg(-EBADMSG),
			    "corrupt layer index: file chunks out of order");
	c[1].offset = 512 + CS - 1;
	assert_int_equal(pack_one(CS + 100, c, 2, NULL, 0, 1 << 20), -EBADMSG);
	/* beyond the tar stream */
	c[1].offset = 1 << 20;
	assert_int_equal(pack_one(CS + 100, c, 2, NULL, 0, 1 << 20), -EBADMSG);
	assert_string_equal(strata_errmsg(-EBADMSG),
			    "corrupt layer index: chunk outside the tar stream");
	c[1].offset = UINT64_MAX - 50;
	assert_int_equal(pack_one(CS + 100, c, 2, NULL, 0, UINT64_MAX), -EBADMSG);
	c[1].offset = 512 + CS;
	/* a size near 2^64 wrapped the chunk-count check: 0 chunks for 2^64 - 1 bytes passed */
	assert_int_equal(pack_one(UINT64_MAX, c, 0, NULL, 0, 1 << 20), -EBADMSG);
	assert_string_equal(strata_errmsg(-EBADMSG),
			    "corrupt layer index: file chunks out of range");
	/* checkpoints: in order in both coordinates, inside the tar */
	assert_int_equal(pack_one(CS + 100, c, 2, cp, 2, 1 << 20), 0);
	cp[1].coff = 0;
	assert_int_equal(pack_one(CS + 100, c, 2, cp, 2, 1 << 20), 0); /* equal coff: allowed */
	cp[0].coff = 10;
	cp[0].bits = 0;
	assert_int_equal(pack_one(CS + 100, c, 2, cp, 2, 1 << 20), -EBADMSG);
	assert_string_equal(strata_errmsg(-EBADMSG), "corrupt layer index: invalid checkpoint");
	cp[0].coff = 0;
	cp[1].uoff = (1 << 20) + 1;
	assert_int_equal(pack_one(CS + 100, c, 2, cp, 2, 1 << 20), -EBADMSG);
}

/* The span planner and extractor return errors for ranges a caller got wrong. */
static void test_span_errors(void **state)
{
	struct bytebuf t = { 0 };
	struct index_layer *l;
	struct index_span sp = { .cp = UINT32_MAX, .ustart = 1024 };
	uint8_t out[8];

	(void)state;
	tarw_file(&t, "f", "hello", 5);
	tarw_end(&t);
	assert_int_equal(build(&t, &l), 0);
	assert_int_equal(index_layer_span(l, 10, 10, &sp), -EINVAL);
	assert_int_equal(index_layer_span(l, 10, 5, &sp), -EINVAL);
	sp = (struct index_span){ .cp = UINT32_MAX, .cstart = 1024, .ustart = 1024 };
	assert_int_equal(index_layer_extract(l, &sp, NULL, (const uint8_t *)"x", 1, 0, out, 1),
			 -EINVAL);
	index_layer_free(l);
	free(t.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deep_path),	 cmocka_unit_test(test_deepest_allowed),
		cmocka_unit_test(test_long_name),	 cmocka_unit_test(test_xattr_sizes),
		cmocka_unit_test(test_xattr_many),	 cmocka_unit_test(test_entry_cap),
		cmocka_unit_test(test_layer_totals),	 cmocka_unit_test(test_source_overrun),
		cmocka_unit_test(test_index_validation), cmocka_unit_test(test_span_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

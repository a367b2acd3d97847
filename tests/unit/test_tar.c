/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the streaming tar reader: the formats of archives built in memory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tarq.h"
#include "tarw.h"
#include "util/log.h"
static void test_regular_and_empty(void **state)
{
	struct bytebuf a = { 0 };
	uint8_t data[1000];
	struct tarw_hdr f = { .name = "hello.txt",
			      .type = '0',
			      .mode = 0100644,
			      .uid = 1000,
			      .gid = 100,
			      .size = sizeof(data),
			      .mtime = 1234567890 };
	struct tarw_hdr z = {
		.name = "empty", .type = '\0', .mode = 0104755, .size = 0, .mtime = 1
	};

	(void)state;
	fill_pattern(data, sizeof(data), 1);
	tarw_put_file(&a, &f, data);
	tarw_put_file(&a, &z, NULL);
	tarw_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		static const size_t steps[] = { 1, 7, 13, 512, 4096 };
		struct memsrc m;
		struct index_tar *t = open_mem(&m, &a, tar_chunks[c]);
		const struct index_tar_entry *e = next_ok(t);
		size_t len;
		uint8_t *got;

		assert_string_equal(e->path, "hello.txt");
		assert_null(e->linkname);
		assert_int_equal(e->type, INDEX_TAR_REG);
		assert_int_equal(e->mode, 0644);
		assert_int_equal(e->uid, 1000);
		assert_int_equal(e->gid, 100);
		assert_int_equal(e->mtime_sec, 1234567890);
		assert_int_equal(e->mtime_nsec, 0);
		assert_int_equal(e->size, 1000);
		assert_int_equal(e->nxattrs, 0);
		assert_int_equal(e->header_offset, 0);
		assert_int_equal(e->data_offset, 512);
		assert_int_equal(index_tar_offset(t), 512);
		got = read_all(t, steps[c % 5], &len);
		assert_int_equal(len, sizeof(data));
		assert_memory_equal(got, data, sizeof(data));
		free(got);
		assert_int_equal(index_tar_offset(t), 1512);

		e = next_ok(t);
		assert_string_equal(e->path, "empty");
		assert_int_equal(e->type, INDEX_TAR_REG);
		assert_int_equal(e->mode, 04755);
		assert_int_equal(e->size, 0);
		assert_int_equal(e->header_offset, 1536);
		assert_int_equal(e->data_offset, 2048);
		{
			char b[4];

			assert_int_equal(index_tar_read(t, b, sizeof(b)), 0);
		}
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

static void test_special_types(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_hdr dir = { .name = "dir/", .type = '5', .mode = 040755, .mtime = 10 };
	struct tarw_hdr sym = {
		.name = "dir/link", .type = '2', .mode = 0120777, .link = "../target/./x"
	};
	struct tarw_hdr hard = {
		.name = "dir/hard", .type = '1', .link = "./dir//file", .size = 10
	};
	struct tarw_hdr chr = {
		.name = "dev/null", .type = '3', .mode = 020666, .major = 1, .minor = 3
	};
	struct tarw_hdr blk = {
		.name = "dev/sda", .type = '4', .mode = 060660, .major = 8, .minor = 16
	};
	struct tarw_hdr fifo = { .name = "fifo", .type = '6', .mode = 010600 };
	struct tarw_hdr cont = { .name = "contig", .type = '7', .size = 3 };
	struct tarw_hdr after = { .name = "after", .type = '0', .size = 2 };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	char b[8];

	(void)state;
	tarw_put_file(&a, &dir, NULL);
	tarw_put_file(&a, &sym, NULL);
	tarw_put_file(&a, &hard, "0123456789"); /* a non-zero hard-link size: content is skipped */
	tarw_put_file(&a, &chr, NULL);
	tarw_put_file(&a, &blk, NULL);
	tarw_put_file(&a, &fifo, NULL);
	tarw_put_file(&a, &cont, "abc");
	tarw_put_file(&a, &after, "ok");
	tarw_end(&a);

	t = open_mem(&m, &a, 0);
	e = next_ok(t);
	assert_string_equal(e->path, "dir");
	assert_int_equal(e->type, INDEX_TAR_DIR);
	assert_int_equal(e->mode, 0755);
	assert_int_equal(e->size, 0);
	assert_int_equal(e->mtime_sec, 10);

	e = next_ok(t);
	assert_string_equal(e->path, "dir/link");
	assert_int_equal(e->type, INDEX_TAR_SYMLINK);
	assert_string_equal(e->linkname, "../target/./x");
	assert_int_equal(e->mode, 0777);

	e = next_ok(t);
	assert_string_equal(e->path, "dir/hard");
	assert_int_equal(e->type, INDEX_TAR_HARDLINK);
	assert_string_equal(e->linkname, "dir/file");
	assert_int_equal(e->size, 0);
	assert_int_equal(index_tar_read(t, b, sizeof(b)), 0);

	e = next_ok(t);
	assert_string_equal(e->path, "dev/null");
	assert_int_equal(e->type, INDEX_TAR_CHAR);
	assert_int_equal(e->devmajor, 1);
	assert_int_equal(e->devminor, 3);
	assert_int_equal(e->mode, 0666);

	e = next_ok(t);
	assert_string_equal(e->path, "dev/sda");
	assert_int_equal(e->type, INDEX_TAR_BLOCK);
	assert_int_equal(e->devmajor, 8);
	assert_int_equal(e->devminor, 16);

	e = next_ok(t);
	assert_string_equal(e->path, "fifo");
	assert_int_equal(e->type, INDEX_TAR_FIFO);
	assert_int_equal(e->mode, 0600);
	assert_int_equal(e->devmajor, 0);

	e = next_ok(t);
	assert_string_equal(e->path, "contig");
	assert_int_equal(e->type, INDEX_TAR_REG);
	assert_int_equal(e->size, 3);

	e = next_ok(t); /* "contig" content skipped unread */
	assert_string_equal(e->path, "after");
	assert_int_equal(index_tar_read(t, b, sizeof(b)), 2);
	assert_memory_equal(b, "ok", 2);
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

static void test_ustar_prefix_and_v7(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_hdr p = { .name = "file.txt", .prefix = "a/very/long/prefix", .type = '0' };
	struct tarw_hdr v7 = { .name = "old/file", .type = '\0', .fmt = TARW_V7, .uid = 5 };
	struct tarw_hdr v7dir = { .name = "old/dir/", .type = '\0', .fmt = TARW_V7 };
	struct tarw_hdr gnu = { .name = "gnu/file", .type = '0', .fmt = TARW_GNU };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	uint8_t hb[512];

	(void)state;
	tarw_put_file(&a, &p, NULL);
	tarw_put_file(&a, &v7, NULL);
	tarw_put_file(&a, &v7dir, NULL);
	/* a GNU header with junk where ustar keeps the prefix (GNU keeps atime there) */
	tarw_make_header(hb, &gnu);
	memcpy(hb + 345, "12345670123", 11);
	tarw_checksum(hb);
	bytebuf_put(&a, hb, sizeof(hb));
	tarw_end(&a);

	t = open_mem(&m, &a, 3);
	e = next_ok(t);
	assert_string_equal(e->path, "a/very/long/prefix/file.txt");
	e = next_ok(t);
	assert_string_equal(e->path, "old/file");
	assert_int_equal(e->type, INDEX_TAR_REG);
	assert_int_equal(e->uid, 5);
	e = next_ok(t);
	assert_string_equal(e->path, "old/dir");
	assert_int_equal(e->type, INDEX_TAR_DIR);
	e = next_ok(t);
	assert_string_equal(e->path, "gnu/file");
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

static void test_gnu_long_names(void **state)
{
	struct bytebuf a = { 0 };
	char longname[151], hugename[701], longlink[201];
	struct tarw_hdr f = { .name = "trunc", .type = '0', .size = 4, .fmt = TARW_GNU };
	struct tarw_hdr s = { .name = "trunc2", .type = '2', .link = "short", .fmt = TARW_GNU };
	struct tarw_hdr h = { .name = "trunc3", .type = '1', .link = "short", .fmt = TARW_GNU };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	size_t off2;

	(void)state;
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	memcpy(longname, "dir/", 4);
	memset(hugename, 'h', sizeof(hugename) - 1);
	hugename[sizeof(hugename) - 1] = '\0';
	memset(longlink, 'l', sizeof(longlink) - 1);
	longlink[sizeof(longlink) - 1] = '\0';
	longlink[50] = '/';

	tarw_put_gnu_long(&a, 'L', longname);
	tarw_put_file(&a, &f, "data");
	off2 = a.len;
	tarw_put_gnu_long(&a, 'L', hugename); /* longer than one block */
	tarw_put_gnu_long(&a, 'K', longlink);
	tarw_put_file(&a, &s, NULL);
	tarw_put_gnu_long(&a, 'K', "/./x/../hard/target");
	tarw_put_file(&a, &h, NULL);
	tarw_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		t = open_mem(&m, &a, tar_chunks[c]);
		e = next_ok(t);
		assert_string_equal(e->path, longname);
		assert_int_equal(e->header_offset, 0);
		assert_int_equal(e->data_offset, 1024 + 512);
		assert_int_equal(e->size, 4);
		expect_content(t, "data", 4);

		e = next_ok(t);
		assert_string_equal(e->path, hugename);
		assert_int_equal(e->type, INDEX_TAR_SYMLINK);
		assert_string_equal(e->linkname, longlink);
		assert_int_equal(e->header_offset, off2);
		assert_int_equal(e->data_offset, off2 + 512 + 1024 + 512 + 512 + 512);

		e = next_ok(t);
		assert_string_equal(e->path, "trunc3");
		assert_string_equal(e->linkname, "hard/target");
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

static void test_pax(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_pax g = { 0 }, p1 = { 0 }, p2 = { 0 }, p3 = { 0 }, p4 = { 0 };
	char longpath[301];
	static const uint8_t cap[] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
				       0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 };
	struct tarw_hdr f1 = {
		.name = "truncated-name", .type = '0', .size = 0, .uid = 1, .gid = 2, .mtime = 99
	};
	struct tarw_hdr f2 = { .name = "five", .type = '0', .mtime = 99 };
	struct tarw_hdr f3 = { .name = "neg", .type = '0', .mtime = 99 };
	struct tarw_hdr f4 = { .name = "sym", .type = '2', .link = "short" };
	struct tarw_hdr f5 = { .name = "dev", .type = '3', .major = 1, .minor = 1 };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	size_t off1, off2;

	(void)state;
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	longpath[100] = '/';

	tarw_pax_adds(&g, "comment", "a global header");
	tarw_pax_adds(&g, "path", "ignored/global");
	tarw_put_pax(&a, 'g', &g);
	off1 = a.len;

	tarw_pax_adds(&p1, "path", longpath);
	tarw_pax_adds(&p1, "uid", "70000");
	tarw_pax_adds(&p1, "gid", "4000000000");
	tarw_pax_adds(&p1, "mtime", "1700000000.123456789");
	tarw_pax_adds(&p1, "atime", "1.5");
	tarw_pax_adds(&p1, "ctime", "2.5");
	tarw_pax_adds(&p1, "uname", "someone");
	tarw_pax_adds(&p1, "gname", "group");
	tarw_pax_adds(&p1, "comment", "hello");
	tarw_pax_adds(&p1, "charset", "ISO-IR 10646 2000 UTF-8");
	tarw_pax_adds(&p1, "hdrcharset", "ISO-IR 10646 2000 UTF-8");
	tarw_pax_adds(&p1, "SCHILY.xattr.user.foo", "bar");
	tarw_pax_add(&p1, "SCHILY.xattr.security.capability", cap, sizeof(cap));
	tarw_pax_add(&p1, "SCHILY.xattr.user.nl", "a\nb=c\0d", 7);
	tarw_pax_adds(&p1, "SCHILY.xattr.user.empty", "");
	tarw_pax_adds(&p1, "LIBARCHIVE.xattr.user.%41b", "aGVsbG8"); /* "user.Ab" = "hello" */
	tarw_pax_adds(&p1, "SCHILY.xattr.user.dup", "one");
	tarw_pax_adds(&p1, "LIBARCHIVE.xattr.user.dup", "dHdvIQ=="); /* "two!" replaces "one" */
	tarw_pax_adds(&p1, "size", "5");
	tarw_put_pax(&a, 'x', &p1);
	tarw_put_file(&a,
		      &(struct tarw_hdr){ .name = f1.name,
					  .type = '0',
					  .size = 0,
					  .uid = 1,
					  .gid = 2,
					  .mtime = 99 },
		      NULL);
	bytebuf_put(&a, "12345", 5); /* the pax size wins over the header's 0 */
	tarw_pad(&a);

	off2 = a.len;
	tarw_pax_adds(&p2, "mtime", "5.5");
	tarw_put_pax(&a, 'x', &p2);
	tarw_put_file(&a, &f2, NULL);

	tarw_pax_adds(&p3, "mtime", "-1.5");
	tarw_put_pax(&a, 'x', &p3);
	tarw_put_file(&a, &f3, NULL);

	tarw_pax_adds(&p4, "linkpath", "/a/very/../long/./target");
	tarw_put_pax(&a, 'x', &p4);
	tarw_put_file(&a, &f4, NULL);

	{
		struct tarw_pax p5 = { 0 };

		tarw_pax_adds(&p5, "SCHILY.devmajor", "259");
		tarw_pax_adds(&p5, "SCHILY.devminor", "1048575");
		tarw_put_pax(&a, 'x', &p5);
		tarw_put_file(&a, &f5, NULL);
	}
	tarw_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		t = open_mem(&m, &a, tar_chunks[c]);
		e = next_ok(t);
		assert_string_equal(e->path, longpath);
		assert_int_equal(e->uid, 70000);
		assert_int_equal(e->gid, 4000000000u);
		assert_int_equal(e->mtime_sec, 1700000000);
		assert_int_equal(e->mtime_nsec, 123456789);
		assert_int_equal(e->size, 5);
		assert_int_equal(e->header_offset, off1);
		assert_int_equal(e->data_offset, off1 + 512 + 1024 + 512);
		assert_int_equal(e->nxattrs, 6);
		assert_string_equal(e->xattrs[0].name, "user.foo");
		assert_int_equal(e->xattrs[0].len, 3);
		assert_memory_equal(e->xattrs[0].value, "bar", 3);
		assert_string_equal(e->xattrs[1].name, "security.capability");
		assert_int_equal(e->xattrs[1].len, sizeof(cap));
		assert_memory_equal(e->xattrs[1].value, cap, sizeof(cap));
		assert_string_equal(e->xattrs[2].name, "user.nl");
		assert_int_equal(e->xattrs[2].len, 7);
		assert_memory_equal(e->xattrs[2].value, "a\nb=c\0d", 7);
		assert_string_equal(e->xattrs[3].name, "user.empty");
		assert_int_equal(e->xattrs[3].len, 0);
		assert_string_equal(e->xattrs[4].name, "user.Ab");
		assert_int_equal(e->xattrs[4].len, 5);
		assert_memory_equal(e->xattrs[4].value, "hello", 5);
		assert_string_equal(e->xattrs[5].name, "user.dup");
		assert_int_equal(e->xattrs[5].len, 4);
		assert_memory_equal(e->xattrs[5].value, "two!", 4);
		expect_content(t, "12345", 5);

		e = next_ok(t);
		assert_string_equal(e->path, "five");
		assert_int_equal(e->mtime_sec, 5);
		assert_int_equal(e->mtime_nsec, 500000000);
		assert_int_equal(e->uid, 0); /* pax values do not leak into the next member */
		assert_int_equal(e->nxattrs, 0);
		assert_int_equal(e->header_offset, off2);

		e = next_ok(t);
		assert_string_equal(e->path, "neg");
		assert_int_equal(e->mtime_sec, -2);
		assert_int_equal(e->mtime_nsec, 500000000);

		e = next_ok(t);
		assert_string_equal(e->path, "sym");
		assert_string_equal(e->linkname, "/a/very/../long/./target"); /* verbatim */

		e = next_ok(t);
		assert_string_equal(e->path, "dev");
		assert_int_equal(e->devmajor, 259);
		assert_int_equal(e->devminor, 1048575);
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

static void test_base256(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_hdr f = { .name = "big", .type = '0' };
	uint8_t b[512];
	uint8_t data[600];
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	size_t len;
	uint8_t *got;
	int64_t mt = -86400;

	(void)state;
	fill_pattern(data, sizeof(data), 7);
	tarw_make_header(b, &f);
	/* uid 3000000000 and gid 2097152 (over the 7-digit octal limit) in base-256 */
	memcpy(b + 108, (const uint8_t[]){ 0x80, 0, 0, 0, 0xb2, 0xd0, 0x5e, 0x00 }, 8);
	memcpy(b + 116, (const uint8_t[]){ 0x80, 0, 0, 0, 0x00, 0x20, 0x00, 0x00 }, 8);
	/* size 600 in base-256 */
	memcpy(b + 124, (const uint8_t[]){ 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x58 }, 12);
	/* mtime -86400: 12-byte two's complement */
	for (int i = 0; i < 12; i++)
		b[136 + i] = i < 4 ? 0xff : (uint8_t)((uint64_t)mt >> (8 * (11 - i)));
	tarw_checksum(b);
	bytebuf_put(&a, b, sizeof(b));
	bytebuf_put(&a, data, sizeof(data));
	tarw_pad(&a);
	tarw_end(&a);

	t = open_mem(&m, &a, 0);
	e = next_ok(t);
	assert_int_equal(e->uid, 3000000000u);
	assert_int_equal(e->gid, 2097152);
	assert_int_equal(e->size, 600);
	assert_int_equal(e->mtime_sec, -86400);
	got = read_all(t, 100, &len);
	assert_int_equal(len, 600);
	assert_memory_equal(got, data, 600);
	free(got);
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

static void test_names(void **state)
{
	static const struct {
		const char *raw;
		char type;
		const char *clean;
	} cases[] = {
		{ "dossier/résumé-日本.txt", '0', "dossier/résumé-日本.txt" },
		{ "./a/../b//c/", '5', "b/c" },
		{ "../../etc/x", '0', "etc/x" },
		{ "/abs//path/./f", '0', "abs/path/f" },
		{ "./", '5', "" },
		{ ".", '5', "" },
		{ "a/b/../../..", '5', "" },
		{ "..foo/.bar/...", '0', "..foo/.bar/..." },
	};
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tarw_hdr h = { .name = cases[i].raw, .type = cases[i].type };

		tarw_put_file(&a, &h, NULL);
	}
	tarw_end(&a);
	t = open_mem(&m, &a, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct index_tar_entry *e = next_ok(t);

		assert_string_equal(e->path, cases[i].clean);
	}
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

static void test_skip_unread(void **state)
{
	struct bytebuf a = { 0 };
	uint8_t d1[5000], d2[70000], d3[3];
	struct tarw_hdr h1 = { .name = "one", .type = '0', .size = sizeof(d1) };
	struct tarw_hdr h2 = { .name = "two", .type = '0', .size = sizeof(d2) };
	struct tarw_hdr h3 = { .name = "three", .type = '0', .size = sizeof(d3) };

	(void)state;
	fill_pattern(d1, sizeof(d1), 1);
	fill_pattern(d2, sizeof(d2), 2);
	fill_pattern(d3, sizeof(d3), 3);
	tarw_put_file(&a, &h1, d1);
	tarw_put_file(&a, &h2, d2);
	tarw_put_file(&a, &h3, d3);
	tarw_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		struct memsrc m;
		struct index_tar *t = open_mem(&m, &a, tar_chunks[c]);
		const struct index_tar_entry *e = next_ok(t);
		uint8_t b[100];
		size_t len;
		uint8_t *got;

		assert_string_equal(e->path, "one");
		assert_int_equal(index_tar_read(t, b, 10) > 0, 1); /* partial read */
		e = next_ok(t);
		assert_string_equal(e->path, "two"); /* not read at all */
		assert_int_equal(e->data_offset, 512 + 5120 + 512);
		e = next_ok(t);
		assert_string_equal(e->path, "three");
		got = read_all(t, 2, &len);
		assert_int_equal(len, 3);
		assert_memory_equal(got, d3, 3);
		free(got);
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_regular_and_empty),
		cmocka_unit_test(test_special_types),
		cmocka_unit_test(test_ustar_prefix_and_v7),
		cmocka_unit_test(test_gnu_long_names),
		cmocka_unit_test(test_pax),
		cmocka_unit_test(test_base256),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_skip_unread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

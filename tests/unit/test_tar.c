/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the streaming tar reader: archives built in memory, and real GNU tar output. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
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
#include "index/tar.h"
#include "util/log.h"

/* ---- archive builder ---- */

struct abuf {
	uint8_t *p;
	size_t len, cap;
};

static void ab_put(struct abuf *a, const void *d, size_t n)
{
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;

		while (cap < a->len + n)
			cap *= 2;
		a->p = realloc(a->p, cap);
		assert_non_null(a->p);
		a->cap = cap;
	}
	if (n)
		memcpy(a->p + a->len, d, n);
	a->len += n;
}

static void ab_zeros(struct abuf *a, size_t n)
{
	static const uint8_t z[512];

	while (n > 0) {
		size_t k = n < sizeof(z) ? n : sizeof(z);

		ab_put(a, z, k);
		n -= k;
	}
}

static void ab_pad(struct abuf *a)
{
	ab_zeros(a, (512 - a->len % 512) % 512);
}

static void ab_end(struct abuf *a)
{
	ab_zeros(a, 1024);
}

enum fmt { FMT_USTAR, FMT_GNU, FMT_V7 };

struct hspec {
	const char *name;
	const char *prefix;
	const char *link;
	char type;
	uint32_t mode;
	uint64_t uid, gid, size;
	int64_t mtime;
	uint32_t major, minor;
	enum fmt fmt;
};

static void octal(uint8_t *f, size_t len, uint64_t v)
{
	char tmp[32];

	snprintf(tmp, sizeof(tmp), "%0*llo", (int)(len - 1), (unsigned long long)v);
	assert_int_equal(strlen(tmp), len - 1);
	memcpy(f, tmp, len); /* includes the NUL */
}

static void set_checksum(uint8_t *b)
{
	unsigned sum = 0;
	char tmp[8];

	memset(b + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += b[i];
	snprintf(tmp, sizeof(tmp), "%06o", sum);
	memcpy(b + 148, tmp, 7); /* six digits, NUL, and the space stays */
}

static void make_header(uint8_t *b, const struct hspec *h)
{
	memset(b, 0, 512);
	strncpy((char *)b, h->name, 100);
	octal(b + 100, 8, h->mode ? h->mode : 0100644);
	octal(b + 108, 8, h->uid);
	octal(b + 116, 8, h->gid);
	octal(b + 124, 12, h->size);
	octal(b + 136, 12, (uint64_t)h->mtime);
	b[156] = (uint8_t)h->type;
	if (h->link)
		strncpy((char *)b + 157, h->link, 100);
	if (h->fmt == FMT_USTAR) {
		memcpy(b + 257, "ustar\0" "00", 8);
		strcpy((char *)b + 265, "root");
		strcpy((char *)b + 297, "root");
		octal(b + 329, 8, h->major);
		octal(b + 337, 8, h->minor);
		if (h->prefix)
			strncpy((char *)b + 345, h->prefix, 155);
	} else if (h->fmt == FMT_GNU) {
		memcpy(b + 257, "ustar  \0", 8);
		octal(b + 329, 8, h->major);
		octal(b + 337, 8, h->minor);
	}
	set_checksum(b);
}

static void put_header(struct abuf *a, const struct hspec *h)
{
	uint8_t b[512];

	make_header(b, h);
	ab_put(a, b, sizeof(b));
}

/* Header, h->size bytes of data, padding. */
static void put_file(struct abuf *a, const struct hspec *h, const void *data)
{
	put_header(a, h);
	ab_put(a, data, h->size);
	ab_pad(a);
}

struct pax {
	char buf[8192];
	size_t len;
};

static void pax_add(struct pax *p, const char *key, const void *val, size_t vlen)
{
	size_t base = strlen(key) + vlen + 3; /* ' ', '=', '\n' */
	size_t total = base + 1;
	char digits[24];
	int n;

	while ((size_t)snprintf(digits, sizeof(digits), "%zu", total) + base != total)
		total++;
	assert_true(p->len + total <= sizeof(p->buf));
	n = snprintf(p->buf + p->len, sizeof(p->buf) - p->len, "%zu %s=", total, key);
	p->len += (size_t)n;
	memcpy(p->buf + p->len, val, vlen);
	p->len += vlen;
	p->buf[p->len++] = '\n';
}

static void pax_adds(struct pax *p, const char *key, const char *val)
{
	pax_add(p, key, val, strlen(val));
}

static void put_pax(struct abuf *a, char type, const struct pax *p)
{
	struct hspec h = { .name = "./PaxHeaders/x", .type = type, .size = p->len };

	put_file(a, &h, p->buf);
}

static void put_gnu_long(struct abuf *a, char type, const char *name)
{
	struct hspec h = { .name = "././@LongLink", .type = type, .size = strlen(name) + 1,
			   .fmt = FMT_GNU };

	put_file(a, &h, name); /* with its NUL */
}

/* ---- memory reader ---- */

struct mem {
	const uint8_t *p;
	size_t len, pos, chunk;
};

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct mem *m = ctx;
	size_t n = m->len - m->pos;

	if (n > len)
		n = len;
	if (m->chunk && n > m->chunk)
		n = m->chunk;
	if (n)
		memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static struct index_reader mem_reader(struct mem *m, const void *p, size_t len, size_t chunk)
{
	struct index_reader r = { mem_read, m };

	m->p = p;
	m->len = len;
	m->pos = 0;
	m->chunk = chunk;
	return r;
}

static const size_t chunks[] = { 0, 1, 7, 511, 513, 100000 };
#define NCHUNKS (sizeof(chunks) / sizeof(chunks[0]))

static struct index_tar *open_mem(struct mem *m, const struct abuf *a, size_t chunk)
{
	struct index_tar *t = NULL;

	assert_int_equal(index_tar_open(mem_reader(m, a->p, a->len, chunk), &t), 0);
	assert_non_null(t);
	return t;
}

static const struct index_tar_entry *next_ok(struct index_tar *t)
{
	const struct index_tar_entry *e = NULL;
	int rc = index_tar_next(t, &e);

	if (rc != 1)
		fprintf(stderr, "index_tar_next: %d %s\n", rc, strata_errmsg(-rc));
	assert_int_equal(rc, 1);
	assert_non_null(e);
	return e;
}

static void expect_end(struct index_tar *t)
{
	const struct index_tar_entry *e = (const void *)1;

	assert_int_equal(index_tar_next(t, &e), 0);
	assert_null(e);
	assert_int_equal(index_tar_next(t, &e), 0); /* and it stays at the end */
}

static void expect_err(struct index_tar *t, int err, const char *msg_part)
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
static uint8_t *read_all(struct index_tar *t, size_t step, size_t *len)
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
static void expect_content(struct index_tar *t, const void *want, size_t want_len)
{
	size_t len;
	uint8_t *got = read_all(t, 3, &len);

	assert_int_equal(len, want_len);
	assert_memory_equal(got, want, len);
	free(got);
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

/* ---- tests ---- */

static void test_regular_and_empty(void **state)
{
	struct abuf a = { 0 };
	uint8_t data[1000];
	struct hspec f = { .name = "hello.txt", .type = '0', .mode = 0100644, .uid = 1000, .gid = 100,
			   .size = sizeof(data), .mtime = 1234567890 };
	struct hspec z = { .name = "empty", .type = '\0', .mode = 0104755, .size = 0, .mtime = 1 };

	(void)state;
	fill_pattern(data, sizeof(data), 1);
	put_file(&a, &f, data);
	put_file(&a, &z, NULL);
	ab_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		static const size_t steps[] = { 1, 7, 13, 512, 4096 };
		struct mem m;
		struct index_tar *t = open_mem(&m, &a, chunks[c]);
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
	struct abuf a = { 0 };
	struct hspec dir = { .name = "dir/", .type = '5', .mode = 040755, .mtime = 10 };
	struct hspec sym = { .name = "dir/link", .type = '2', .mode = 0120777, .link = "../target/./x" };
	struct hspec hard = { .name = "dir/hard", .type = '1', .link = "./dir//file", .size = 10 };
	struct hspec chr = { .name = "dev/null", .type = '3', .mode = 020666, .major = 1, .minor = 3 };
	struct hspec blk = { .name = "dev/sda", .type = '4', .mode = 060660, .major = 8, .minor = 16 };
	struct hspec fifo = { .name = "fifo", .type = '6', .mode = 010600 };
	struct hspec cont = { .name = "contig", .type = '7', .size = 3 };
	struct hspec after = { .name = "after", .type = '0', .size = 2 };
	struct mem m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	char b[8];

	(void)state;
	put_file(&a, &dir, NULL);
	put_file(&a, &sym, NULL);
	put_file(&a, &hard, "0123456789"); /* a non-zero hard-link size: content is skipped */
	put_file(&a, &chr, NULL);
	put_file(&a, &blk, NULL);
	put_file(&a, &fifo, NULL);
	put_file(&a, &cont, "abc");
	put_file(&a, &after, "ok");
	ab_end(&a);

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
	struct abuf a = { 0 };
	struct hspec p = { .name = "file.txt", .prefix = "a/very/long/prefix", .type = '0' };
	struct hspec v7 = { .name = "old/file", .type = '\0', .fmt = FMT_V7, .uid = 5 };
	struct hspec v7dir = { .name = "old/dir/", .type = '\0', .fmt = FMT_V7 };
	struct hspec gnu = { .name = "gnu/file", .type = '0', .fmt = FMT_GNU };
	struct mem m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	uint8_t hb[512];

	(void)state;
	put_file(&a, &p, NULL);
	put_file(&a, &v7, NULL);
	put_file(&a, &v7dir, NULL);
	/* a GNU header with junk where ustar keeps the prefix (GNU keeps atime there) */
	make_header(hb, &gnu);
	memcpy(hb + 345, "12345670123", 11);
	set_checksum(hb);
	ab_put(&a, hb, sizeof(hb));
	ab_end(&a);

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
	struct abuf a = { 0 };
	char longname[151], hugename[701], longlink[201];
	struct hspec f = { .name = "trunc", .type = '0', .size = 4, .fmt = FMT_GNU };
	struct hspec s = { .name = "trunc2", .type = '2', .link = "short", .fmt = FMT_GNU };
	struct hspec h = { .name = "trunc3", .type = '1', .link = "short", .fmt = FMT_GNU };
	struct mem m;
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

	put_gnu_long(&a, 'L', longname);
	put_file(&a, &f, "data");
	off2 = a.len;
	put_gnu_long(&a, 'L', hugename); /* longer than one block */
	put_gnu_long(&a, 'K', longlink);
	put_file(&a, &s, NULL);
	put_gnu_long(&a, 'K', "/./x/../hard/target");
	put_file(&a, &h, NULL);
	ab_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		t = open_mem(&m, &a, chunks[c]);
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
	struct abuf a = { 0 };
	struct pax g = { 0 }, p1 = { 0 }, p2 = { 0 }, p3 = { 0 }, p4 = { 0 };
	char longpath[301];
	static const uint8_t cap[] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00,
				       0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
				       0x00, 0x00, 0x00, 0x00 };
	struct hspec f1 = { .name = "truncated-name", .type = '0', .size = 0, .uid = 1, .gid = 2,
			    .mtime = 99 };
	struct hspec f2 = { .name = "five", .type = '0', .mtime = 99 };
	struct hspec f3 = { .name = "neg", .type = '0', .mtime = 99 };
	struct hspec f4 = { .name = "sym", .type = '2', .link = "short" };
	struct hspec f5 = { .name = "dev", .type = '3', .major = 1, .minor = 1 };
	struct mem m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	size_t off1, off2;

	(void)state;
	memset(longpath, 'p', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	longpath[100] = '/';

	pax_adds(&g, "comment", "a global header");
	pax_adds(&g, "path", "ignored/global");
	put_pax(&a, 'g', &g);
	off1 = a.len;

	pax_adds(&p1, "path", longpath);
	pax_adds(&p1, "uid", "70000");
	pax_adds(&p1, "gid", "4000000000");
	pax_adds(&p1, "mtime", "1700000000.123456789");
	pax_adds(&p1, "atime", "1.5");
	pax_adds(&p1, "ctime", "2.5");
	pax_adds(&p1, "uname", "someone");
	pax_adds(&p1, "gname", "group");
	pax_adds(&p1, "comment", "hello");
	pax_adds(&p1, "charset", "ISO-IR 10646 2000 UTF-8");
	pax_adds(&p1, "hdrcharset", "ISO-IR 10646 2000 UTF-8");
	pax_adds(&p1, "SCHILY.xattr.user.foo", "bar");
	pax_add(&p1, "SCHILY.xattr.security.capability", cap, sizeof(cap));
	pax_add(&p1, "SCHILY.xattr.user.nl", "a\nb=c\0d", 7);
	pax_adds(&p1, "SCHILY.xattr.user.empty", "");
	pax_adds(&p1, "LIBARCHIVE.xattr.user.%41b", "aGVsbG8"); /* "user.Ab" = "hello" */
	pax_adds(&p1, "SCHILY.xattr.user.dup", "one");
	pax_adds(&p1, "LIBARCHIVE.xattr.user.dup", "dHdvIQ=="); /* "two!" replaces "one" */
	pax_adds(&p1, "size", "5");
	put_pax(&a, 'x', &p1);
	put_file(&a, &(struct hspec){ .name = f1.name, .type = '0', .size = 0, .uid = 1, .gid = 2,
				      .mtime = 99 }, NULL);
	ab_put(&a, "12345", 5); /* the pax size wins over the header's 0 */
	ab_pad(&a);

	off2 = a.len;
	pax_adds(&p2, "mtime", "5.5");
	put_pax(&a, 'x', &p2);
	put_file(&a, &f2, NULL);

	pax_adds(&p3, "mtime", "-1.5");
	put_pax(&a, 'x', &p3);
	put_file(&a, &f3, NULL);

	pax_adds(&p4, "linkpath", "/a/very/../long/./target");
	put_pax(&a, 'x', &p4);
	put_file(&a, &f4, NULL);

	{
		struct pax p5 = { 0 };

		pax_adds(&p5, "SCHILY.devmajor", "259");
		pax_adds(&p5, "SCHILY.devminor", "1048575");
		put_pax(&a, 'x', &p5);
		put_file(&a, &f5, NULL);
	}
	ab_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		t = open_mem(&m, &a, chunks[c]);
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
	struct abuf a = { 0 };
	struct hspec f = { .name = "big", .type = '0' };
	uint8_t b[512];
	uint8_t data[600];
	struct mem m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	size_t len;
	uint8_t *got;
	int64_t mt = -86400;

	(void)state;
	fill_pattern(data, sizeof(data), 7);
	make_header(b, &f);
	/* uid 3000000000 and gid 2097152 (over the 7-digit octal limit) in base-256 */
	memcpy(b + 108, (const uint8_t[]){ 0x80, 0, 0, 0, 0xb2, 0xd0, 0x5e, 0x00 }, 8);
	memcpy(b + 116, (const uint8_t[]){ 0x80, 0, 0, 0, 0x00, 0x20, 0x00, 0x00 }, 8);
	/* size 600 in base-256 */
	memcpy(b + 124, (const uint8_t[]){ 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x58 }, 12);
	/* mtime -86400: 12-byte two's complement */
	for (int i = 0; i < 12; i++)
		b[136 + i] = i < 4 ? 0xff : (uint8_t)((uint64_t)mt >> (8 * (11 - i)));
	set_checksum(b);
	ab_put(&a, b, sizeof(b));
	ab_put(&a, data, sizeof(data));
	ab_pad(&a);
	ab_end(&a);

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
	struct abuf a = { 0 };
	struct mem m;
	struct index_tar *t;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hspec h = { .name = cases[i].raw, .type = cases[i].type };

		put_file(&a, &h, NULL);
	}
	ab_end(&a);
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
	struct abuf a = { 0 };
	uint8_t d1[5000], d2[70000], d3[3];
	struct hspec h1 = { .name = "one", .type = '0', .size = sizeof(d1) };
	struct hspec h2 = { .name = "two", .type = '0', .size = sizeof(d2) };
	struct hspec h3 = { .name = "three", .type = '0', .size = sizeof(d3) };

	(void)state;
	fill_pattern(d1, sizeof(d1), 1);
	fill_pattern(d2, sizeof(d2), 2);
	fill_pattern(d3, sizeof(d3), 3);
	put_file(&a, &h1, d1);
	put_file(&a, &h2, d2);
	put_file(&a, &h3, d3);
	ab_end(&a);

	for (size_t c = 0; c < NCHUNKS; c++) {
		struct mem m;
		struct index_tar *t = open_mem(&m, &a, chunks[c]);
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

static void test_bad_checksum(void **state)
{
	struct abuf a = { 0 };
	struct hspec h = { .name = "f", .type = '0', .size = 1 };
	struct mem m;
	struct index_tar *t;
	uint8_t b[512];
	const struct index_tar_entry *e;
	char msg[128];

	(void)state;
	/* first block */
	make_header(b, &h);
	b[0] ^= 1;
	ab_put(&a, b, sizeof(b));
	ab_zeros(&a, 512 + 1024);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "not a tar archive: bad header checksum at offset 0");
	assert_int_equal(index_tar_next(t, &e), -EINVAL); /* sticky */
	index_tar_free(t);

	/* a later block */
	a.len = 0;
	put_file(&a, &h, "x");
	make_header(b, &h);
	memcpy(b + 148, "0000001", 7);
	ab_put(&a, b, sizeof(b));
	ab_end(&a);
	t = open_mem(&m, &a, 0);
	e = next_ok(t);
	assert_string_equal(e->path, "f");
	expect_err(t, EINVAL, "bad header checksum at offset 1024");
	index_tar_free(t);

	/* a signed-char checksum (historic tars) is accepted */
	a.len = 0;
	h.name = "\xe9t\xe9";
	make_header(b, &h);
	{
		int sum = 0;

		memset(b + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += (signed char)b[i];
		snprintf(msg, sizeof(msg), "%06o", sum);
		memcpy(b + 148, msg, 7);
	}
	ab_put(&a, b, sizeof(b));
	ab_put(&a, "y", 1);
	ab_pad(&a);
	ab_end(&a);
	t = open_mem(&m, &a, 0);
	e = next_ok(t);
	assert_string_equal(e->path, "\xe9t\xe9");
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

static void test_not_tar(void **state)
{
	uint8_t junk[4096];
	struct abuf a = { 0 };
	struct mem m;
	struct index_tar *t;

	(void)state;
	fill_pattern(junk, sizeof(junk), 42);
	ab_put(&a, junk, sizeof(junk));
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "not a tar archive");
	index_tar_free(t);

	/* text that is not a tar either */
	a.len = 0;
	for (int i = 0; i < 100; i++)
		ab_put(&a, "hello world, not a tar\n", 23);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "offset 0");
	index_tar_free(t);
	free(a.p);
}

static void test_truncated(void **state)
{
	struct abuf a = { 0 };
	uint8_t data[1000];
	struct hspec h = { .name = "f", .type = '0', .size = sizeof(data) };
	struct hspec h2 = { .name = "g", .type = '0' };
	struct pax p = { 0 };
	struct mem m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	uint8_t b[2000];
	ssize_t n;
	size_t full;

	(void)state;
	fill_pattern(data, sizeof(data), 9);
	put_file(&a, &h, data);
	put_file(&a, &h2, NULL);
	full = a.len;

	/* in the content */
	a.len = 512 + 300;
	t = open_mem(&m, &a, 0);
	e = next_ok(t);
	assert_int_equal(e->size, 1000);
	n = index_tar_read(t, b, sizeof(b));
	assert_int_equal(n, 300);
	n = index_tar_read(t, b, sizeof(b));
	assert_int_equal(n, -EPIPE);
	assert_non_null(strstr(strata_errmsg(EPIPE), "truncated tar archive at offset 812"));
	assert_int_equal(index_tar_next(t, &e), -EPIPE);
	index_tar_free(t);

	/* in the content, skipped without reading */
	t = open_mem(&m, &a, 0);
	next_ok(t);
	expect_err(t, EPIPE, "truncated tar archive");
	index_tar_free(t);

	/* in the padding */
	a.len = 512 + 1000 + 5;
	t = open_mem(&m, &a, 0);
	next_ok(t);
	n = index_tar_read(t, b, sizeof(b));
	assert_int_equal(n, 1000);
	assert_int_equal(index_tar_read(t, b, sizeof(b)), 0);
	expect_err(t, EPIPE, "truncated tar archive at offset 1517");
	index_tar_free(t);

	/* in a header */
	a.len = 1536 + 100;
	t = open_mem(&m, &a, 0);
	next_ok(t);
	expect_err(t, EPIPE, "truncated tar archive");
	index_tar_free(t);

	/* clean EOF at a header boundary, no zero blocks: the end */
	a.len = full;
	t = open_mem(&m, &a, 1);
	assert_string_equal(next_ok(t)->path, "f");
	assert_string_equal(next_ok(t)->path, "g");
	expect_end(t);
	index_tar_free(t);

	/* a single zero block is the end too */
	ab_zeros(&a, 512);
	t = open_mem(&m, &a, 0);
	next_ok(t);
	next_ok(t);
	expect_end(t);
	assert_int_equal(index_tar_offset(t), full + 512);
	index_tar_free(t);

	/* EOF after a pax header, before its member */
	a.len = 0;
	pax_adds(&p, "path", "x");
	put_pax(&a, 'x', &p);
	t = open_mem(&m, &a, 0);
	expect_err(t, EPIPE, "truncated tar archive");
	index_tar_free(t);

	/* a pax header followed by the end-of-archive block */
	ab_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "not followed by a member");
	index_tar_free(t);

	/* a lone global pax header is not a member prefix: EOF after it is a clean end */
	a.len = 0;
	put_pax(&a, 'g', &p);
	t = open_mem(&m, &a, 0);
	expect_end(t);
	index_tar_free(t);

	/* empty input: an empty archive */
	a.len = 0;
	t = open_mem(&m, &a, 0);
	expect_end(t);
	index_tar_free(t);
	index_tar_free(NULL);
	free(a.p);
}

static void test_sparse_and_unsupported(void **state)
{
	struct abuf a = { 0 };
	struct hspec s = { .name = "sparse1", .type = 'S', .size = 512, .fmt = FMT_GNU };
	struct hspec f = { .name = "sparse2", .type = '0', .size = 3 };
	struct hspec v = { .name = "vol", .type = 'V', .size = 0 };
	struct hspec ok = { .name = "ok", .type = '0', .size = 2 };
	struct pax p = { 0 };
	uint8_t blk[512] = { 0 };
	struct mem m;
	struct index_tar *t;

	(void)state;
	put_file(&a, &s, blk);
	pax_adds(&p, "GNU.sparse.major", "1");
	pax_adds(&p, "GNU.sparse.minor", "0");
	pax_adds(&p, "GNU.sparse.name", "sparse2");
	put_pax(&a, 'x', &p);
	put_file(&a, &f, "abc");
	put_file(&a, &v, NULL);
	put_file(&a, &ok, "ok");
	ab_end(&a);

	t = open_mem(&m, &a, 0);
	expect_err(t, ENOTSUP, "sparse file sparse1 is not supported");
	expect_err(t, ENOTSUP, "sparse file sparse2 is not supported");
	expect_err(t, ENOTSUP, "unsupported type 'V'");
	assert_string_equal(next_ok(t)->path, "ok"); /* the stream goes on after -ENOTSUP */
	expect_end(t);
	index_tar_free(t);

	/* old GNU sparse with extension blocks: the stream cannot be resumed */
	a.len = 0;
	{
		uint8_t b[512];

		make_header(b, &s);
		b[482] = 1; /* isextended */
		set_checksum(b);
		ab_put(&a, b, sizeof(b));
		ab_zeros(&a, 512 + 512 + 1024);
	}
	t = open_mem(&m, &a, 0);
	expect_err(t, ENOTSUP, "sparse file sparse1 is not supported");
	expect_err(t, ENOTSUP, NULL);
	index_tar_free(t);
	free(a.p);
}

static void test_limits_and_bad_fields(void **state)
{
	struct abuf a = { 0 };
	struct hspec h = { .name = "./PaxHeaders/x", .type = 'x', .size = 17u << 20 };
	struct hspec f = { .name = "f", .type = '0' };
	struct pax p = { 0 };
	uint8_t b[512];
	struct mem m;
	struct index_tar *t;

	(void)state;
	put_header(&a, &h);
	ab_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "tar header too large");
	index_tar_free(t);

	/* malformed pax record */
	a.len = 0;
	memcpy(p.buf, "99 path=x\n", 10);
	p.len = 10;
	put_pax(&a, 'x', &p);
	put_file(&a, &f, NULL);
	ab_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "invalid pax header at offset 0");
	index_tar_free(t);

	/* non-octal size field */
	a.len = 0;
	make_header(b, &f);
	memcpy(b + 124, "00000000x00", 11);
	set_checksum(b);
	ab_put(&a, b, sizeof(b));
	ab_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "bad size field");
	index_tar_free(t);
	free(a.p);
}

/* ---- real GNU tar ---- */

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

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
			assert_true(strcmp(e->linkname, "top.txt") == 0 || strcmp(e->linkname, "hard") == 0);
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
	char tmpl[] = "/tmp/strata-test-tar-XXXXXX";
	char *dir, src[128], path[512], cmd[1024], archive[128];
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
	dir = mkdtemp(tmpl);
	assert_non_null(dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	assert_int_equal(mkdir(src, 0755), 0);

	snprintf(path, sizeof(path), "%s/top.txt", src);
	write_file(path, "hello\n", 6);
	assert_int_equal(chmod(path, 0640), 0);
	have_xattr = setxattr(path, "user.foo", "bar", 3, 0) == 0;
	assert_int_equal(stat(path, &top), 0);
	snprintf(cmd, sizeof(cmd), "%s/hard", src);
	assert_int_equal(link(path, cmd), 0);
	snprintf(path, sizeof(path), "%s/empty", src);
	write_file(path, "", 0);
	snprintf(path, sizeof(path), "%s/link", src);
	assert_int_equal(symlink("top.txt", path), 0);
	snprintf(path, sizeof(path), "%s/fifo", src);
	assert_int_equal(mkfifo(path, 0600), 0);
	snprintf(path, sizeof(path), "%s/sub", src);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/nested.bin", src);
	fill_pattern(nested, sizeof(nested), 5);
	write_file(path, nested, sizeof(nested));
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	snprintf(longpath, sizeof(longpath), "sub/%s", longname);
	w[8].path = longpath;
	snprintf(path, sizeof(path), "%s/%s", src, longpath);
	write_file(path, "long\n", 5);

	for (size_t f = 0; f < 2; f++) {
		for (int gz = 0; gz < 2; gz++) {
			snprintf(archive, sizeof(archive), "%s/out-%s.tar%s", dir, formats[f],
				 gz ? ".gz" : "");
			snprintf(cmd, sizeof(cmd), "tar --format=%s %s %s -C '%s' -cf '%s' .", formats[f],
				 f == 0 ? "--xattrs" : "", gz ? "-z" : "", src, archive);
			assert_int_equal(run(cmd), 0);
			check_real(archive, w, sizeof(w) / sizeof(w[0]), gz, f == 0 && have_xattr, &top);
		}
	}

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(run(cmd), 0);
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
		cmocka_unit_test(test_bad_checksum),
		cmocka_unit_test(test_not_tar),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_sparse_and_unsupported),
		cmocka_unit_test(test_limits_and_bad_fields),
		cmocka_unit_test(test_real_gnu_tar),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

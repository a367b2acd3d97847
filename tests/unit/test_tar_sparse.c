/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for GNU sparse files: the archives GNU tar writes in every sparse format, read back
 * byte for byte; hostile maps in each form; the layer index's sparse sections. */
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
#include <unistd.h>

#include <zstd.h>

#include "index/compare.h"
#include "index/layer.h"
#include "index/reader.h"
#include "layerq.h"
#include "tarq.h"
#include "tarw.h"
#include "tmpdir.h"
#include "util/log.h"

#define CS 4096u

/* ---------------------------------------------------------------- helpers */

/* The file a sparse member describes: its data placed at its extents, zeros elsewhere. */
static uint8_t *expand(struct index_tar *t, const struct index_tar_entry *e)
{
	size_t dlen = 0;
	uint8_t *data = read_all(t, 4096, &dlen);
	uint8_t *out = calloc(1, e->size ? e->size : 1);
	uint64_t pos = 0;

	assert_non_null(out);
	assert_int_equal(dlen, e->data_size);
	for (size_t i = 0; i < e->nextents; i++) {
		assert_true(e->extents[i].len > 0);
		if (i > 0)
			assert_true(e->extents[i].offset >
				    e->extents[i - 1].offset + e->extents[i - 1].len);
		memcpy(out + e->extents[i].offset, data + pos, e->extents[i].len);
		pos += e->extents[i].len;
	}
	assert_int_equal(pos, dlen);
	free(data);
	return out;
}

/* An old GNU 'S' header for name: entries (off, len) pairs, realsize, isextended. */
static void put_oldgnu(struct bytebuf *a, const char *name, const uint64_t *ent, size_t n,
		       uint64_t realsize, uint64_t size, int ext)
{
	struct tarw_hdr h = { .name = name, .type = 'S', .size = size, .fmt = TARW_GNU };
	uint8_t b[512];

	tarw_make_header(b, &h);
	for (size_t i = 0; i < n && i < 4; i++) {
		tarw_octal(b + 386 + i * 24, 12, ent[2 * i]);
		tarw_octal(b + 386 + i * 24 + 12, 12, ent[2 * i + 1]);
	}
	b[482] = (uint8_t)ext;
	tarw_octal(b + 483, 12, realsize);
	tarw_checksum(b);
	bytebuf_put(a, b, sizeof(b));
}

/* A GNU extension block of up to 21 entries. */
static void put_oldgnu_ext(struct bytebuf *a, const uint64_t *ent, size_t n, int ext)
{
	uint8_t b[512] = { 0 };

	for (size_t i = 0; i < n && i < 21; i++) {
		tarw_octal(b + i * 24, 12, ent[2 * i]);
		tarw_octal(b + i * 24 + 12, 12, ent[2 * i + 1]);
	}
	b[504] = (uint8_t)ext;
	bytebuf_put(a, b, sizeof(b));
}

static void put_data(struct bytebuf *a, size_t n, uint8_t fill)
{
	uint8_t *d = malloc(n ? n : 1);

	assert_non_null(d);
	memset(d, fill, n);
	bytebuf_put(a, d, n);
	tarw_pad(a);
	free(d);
}

/* A PAX 'x' header of records "k=v" given as pairs, then a '0' member name with size bytes. */
static void put_pax_member(struct bytebuf *a, const char *name, uint64_t size, const char **kv,
			   char type)
{
	struct tarw_pax p = { .len = 0 };
	struct tarw_hdr h = { .name = name, .type = type ? type : '0', .size = size };

	for (size_t i = 0; kv[i]; i += 2)
		tarw_pax_adds(&p, kv[i], kv[i + 1]);
	tarw_put_pax(a, 'x', &p);
	tarw_put_header(a, &h);
}

static struct index_tar *open_all(struct memsrc *m, struct bytebuf *a)
{
	return open_mem(m, a, 0);
}

/* ---------------------------------------------------------------- formats by hand */

static void check_two_extents(struct index_tar *t, const char *path)
{
	const struct index_tar_entry *e = next_ok(t);
	uint8_t *f;

	assert_string_equal(e->path, path);
	assert_true(e->sparse);
	assert_int_equal(e->type, INDEX_TAR_REG);
	assert_int_equal(e->size, 10000);
	assert_int_equal(e->data_size, 1024);
	assert_int_equal(e->nextents, 2);
	assert_int_equal(e->extents[0].offset, 512);
	assert_int_equal(e->extents[1].offset, 9000);
	f = expand(t, e);
	assert_int_equal(f[0], 0);
	assert_int_equal(f[511], 0);
	assert_int_equal(f[512], 'd');
	assert_int_equal(f[1023], 'd');
	assert_int_equal(f[1024], 0);
	assert_int_equal(f[9000], 'd');
	assert_int_equal(f[9511], 'd');
	assert_int_equal(f[9512], 0);
	free(f);
}

static void test_formats_by_hand(void **state)
{
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;
	const uint64_t ent[] = { 512, 512, 9000, 512, 10000, 0 };
	const char *v00[] = { "GNU.sparse.size",
			      "10000",
			      "GNU.sparse.numblocks",
			      "3",
			      "GNU.sparse.offset",
			      "512",
			      "GNU.sparse.numbytes",
			      "512",
			      "GNU.sparse.offset",
			      "9000",
			      "GNU.sparse.numbytes",
			      "512",
			      "GNU.sparse.offset",
			      "10000",
			      "GNU.sparse.numbytes",
			      "0",
			      NULL };
	const char *v01[] = { "GNU.sparse.size",
			      "10000",
			      "GNU.sparse.numblocks",
			      "3",
			      "GNU.sparse.name",
			      "dir/v01",
			      "GNU.sparse.map",
			      "512,512,9000,512,10000,0",
			      NULL };
	const char *v10[] = { "GNU.sparse.major",
			      "1",
			      "GNU.sparse.minor",
			      "0",
			      "GNU.sparse.name",
			      "dir/v10",
			      "GNU.sparse.realsize",
			      "10000",
			      NULL };
	const char map10[] = "3\n512\n512\n9000\n512\n10000\n0\n";

	(void)state;
	put_oldgnu(&a, "dir/gnu", ent, 3, 10000, 1024, 0);
	put_data(&a, 1024, 'd');
	put_pax_member(&a, "dir/v00", 1024, v00, 0);
	put_data(&a, 1024, 'd');
	put_pax_member(&a, "dir/GNUSparseFile.1/v01", 1024, v01, 0);
	put_data(&a, 1024, 'd');
	put_pax_member(&a, "dir/GNUSparseFile.1/v10", 512 + 1024, v10, 0);
	bytebuf_put(&a, map10, strlen(map10));
	tarw_pad(&a);
	put_data(&a, 1024, 'd');
	tarw_file(&a, "after", "ok", 2);
	tarw_end(&a);
	for (size_t c = 0; c < NCHUNKS; c++) {
		t = open_mem(&m, &a, tar_chunks[c]);
		check_two_extents(t, "dir/gnu");
		check_two_extents(t, "dir/v00");
		check_two_extents(t, "dir/v01");
		check_two_extents(t, "dir/v10");
		assert_string_equal(next_ok(t)->path, "after");
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

/* Old GNU extension blocks and a 1.0 map longer than a block: 100 extents. */
static void test_long_maps(void **state)
{
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	uint64_t ent[2 * 101];
	char map[8192];
	size_t ml = 0;
	const char *v10[] = { "GNU.sparse.major",
			      "1",
			      "GNU.sparse.minor",
			      "0",
			      "GNU.sparse.name",
			      "v10",
			      "GNU.sparse.realsize",
			      "409700",
			      NULL };

	(void)state;
	for (int i = 0; i < 100; i++) {
		ent[2 * i] = (uint64_t)i * 4096 + 100;
		ent[2 * i + 1] = 512;
	}
	ent[200] = 409700;
	ent[201] = 0;
	put_oldgnu(&a, "gnu", ent, 101, 409700, 51200, 1);
	for (size_t k = 4; k < 101; k += 21)
		put_oldgnu_ext(&a, ent + 2 * k, 101 - k < 21 ? 101 - k : 21, k + 21 < 101);
	put_data(&a, 51200, 'g');
	ml += (size_t)snprintf(map + ml, sizeof(map) - ml, "101\n");
	for (int i = 0; i < 101; i++)
		ml += (size_t)snprintf(map + ml, sizeof(map) - ml, "%llu\n%llu\n",
				       (unsigned long long)ent[2 * i],
				       (unsigned long long)ent[2 * i + 1]);
	assert_true(ml > 512);
	put_pax_member(&a, "x/GNUSparseFile.7/v10", ((ml + 511) / 512) * 512 + 51200, v10, 0);
	bytebuf_put(&a, map, ml);
	tarw_pad(&a);
	put_data(&a, 51200, 'v');
	tarw_end(&a);
	for (size_t c = 0; c < NCHUNKS; c++) {
		t = open_mem(&m, &a, tar_chunks[c]);
		for (int k = 0; k < 2; k++) {
			uint8_t *f;

			e = next_ok(t);
			assert_string_equal(e->path, k ? "v10" : "gnu");
			assert_int_equal(e->nextents, 100);
			assert_int_equal(e->size, 409700);
			f = expand(t, e);
			assert_int_equal(f[99 * 4096 + 100], k ? 'v' : 'g');
			assert_int_equal(f[99 * 4096 + 99], 0);
			free(f);
		}
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

/* Touching entries merge; zero-length ones go; an all-hole file has no extents. */
static void test_normalize(void **state)
{
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	const char *touch[] = { "GNU.sparse.size", "5000", "GNU.sparse.map",
				"0,0,100,100,200,100,300,0", NULL };
	const char *hole[] = { "GNU.sparse.size", "1048576", "GNU.sparse.map", "1048576,0", NULL };

	(void)state;
	put_pax_member(&a, "touch", 200, touch, 0);
	put_data(&a, 200, 't');
	put_pax_member(&a, "hole", 0, hole, 0);
	tarw_end(&a);
	t = open_all(&m, &a);
	e = next_ok(t);
	assert_int_equal(e->nextents, 1);
	assert_int_equal(e->extents[0].offset, 100);
	assert_int_equal(e->extents[0].len, 200);
	e = next_ok(t);
	assert_true(e->sparse);
	assert_int_equal(e->nextents, 0);
	assert_int_equal(e->size, 1048576);
	assert_int_equal(e->data_size, 0);
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

/* ---------------------------------------------------------------- hostile maps */

/* One PAX sparse member with records kv and size bytes of data must fail with err / msg. */
static void pax_fails(const char **kv, uint64_t size, const char *prefix, int err, const char *msg)
{
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;

	put_pax_member(&a, "f", size + (prefix ? 512 : 0), kv, 0);
	if (prefix) {
		bytebuf_put(&a, prefix, strlen(prefix));
		tarw_pad(&a);
	}
	put_data(&a, size, 'x');
	tarw_end(&a);
	t = open_all(&m, &a);
	expect_err(t, err, msg);
	index_tar_free(t);
	free(a.p);
}

static void test_hostile_pax(void **state)
{
	const char *nooff[] = { "GNU.sparse.size", "10", "GNU.sparse.numbytes", "5", NULL };
	const char *twooff[] = {
		"GNU.sparse.size", "10", "GNU.sparse.offset", "1", "GNU.sparse.offset", "2", NULL
	};
	const char *halfoff[] = { "GNU.sparse.size", "10", "GNU.sparse.offset", "1", NULL };
	const char *odd[] = { "GNU.sparse.size", "10", "GNU.sparse.map", "1,2,3", NULL };
	const char *alpha[] = { "GNU.sparse.size", "10", "GNU.sparse.map", "1,x", NULL };
	const char *empty[] = { "GNU.sparse.size", "10", "GNU.sparse.map", "1,,2", NULL };
	const char *big[] = { "GNU.sparse.size", "10", "GNU.sparse.map", "1,18446744073709551616",
			      NULL };
	const char *overlap[] = { "GNU.sparse.size", "100", "GNU.sparse.map", "10,20,20,5", NULL };
	const char *unsorted[] = { "GNU.sparse.size", "100", "GNU.sparse.map", "50,5,10,5", NULL };
	const char *outside[] = { "GNU.sparse.size", "100", "GNU.sparse.map", "90,20", NULL };
	const char *wrap[] = { "GNU.sparse.size", "100", "GNU.sparse.map", "18446744073709551615,5",
			       NULL };
	const char *huge[] = { "GNU.sparse.size", "2251799813685248", "GNU.sparse.map", "0,5",
			       NULL };
	const char *sum[] = { "GNU.sparse.size", "100", "GNU.sparse.map", "0,5,50,5", NULL };
	const char *nblocks[] = {
		"GNU.sparse.size", "100", "GNU.sparse.numblocks", "3", "GNU.sparse.map",
		"0,5,50,5",	   NULL
	};
	const char *noreal[] = { "GNU.sparse.map", "0,10", NULL };
	const char *v1[] = {
		"GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.realsize", "100", NULL
	};
	const char *v1mixed[] = { "GNU.sparse.major",
				  "1",
				  "GNU.sparse.realsize",
				  "100",
				  "GNU.sparse.map",
				  "0,10",
				  NULL };

	(void)state;
	pax_fails(nooff, 10, NULL, EINVAL, "invalid pax header");
	pax_fails(twooff, 10, NULL, EINVAL, "invalid pax header");
	pax_fails(halfoff, 10, NULL, EINVAL, "has an offset and no length");
	pax_fails(odd, 10, NULL, EINVAL, "invalid pax header");
	pax_fails(alpha, 10, NULL, EINVAL, "invalid pax header");
	pax_fails(empty, 10, NULL, EINVAL, "invalid pax header");
	pax_fails(big, 10, NULL, EINVAL, "invalid pax header");
	pax_fails(overlap, 25, NULL, EINVAL, "overlaps or precedes");
	pax_fails(unsorted, 10, NULL, EINVAL, "overlaps or precedes");
	pax_fails(outside, 20, NULL, EINVAL, "outside its real size 100");
	pax_fails(wrap, 5, NULL, EINVAL, "outside its real size");
	pax_fails(huge, 5, NULL, EFBIG, "is more than");
	pax_fails(sum, 11, NULL, EINVAL, "covers 10 bytes of data, the archive holds 11");
	pax_fails(nblocks, 10, NULL, EINVAL, "numblocks says 3");
	pax_fails(noreal, 10, NULL, EINVAL, "no real size");
	pax_fails(v1mixed, 10, NULL, EINVAL, "1.0 member with a 0.x map");
	/* 1.0 maps */
	pax_fails(v1, 10, "1\n0\n", EINVAL, "malformed map");	 /* ends early */
	pax_fails(v1, 10, "1\n0\nx\n", EINVAL, "malformed map"); /* not a digit */
	pax_fails(v1, 10, "1\n\n10\n", EINVAL, "malformed map"); /* empty number */
	pax_fails(v1, 10, "1\n0\n123456789012345678901\n", EINVAL, "malformed map");
	pax_fails(v1, 10, "999999999\n", EFBIG, "entries, more than");
	pax_fails(v1, 10, "1\n95\n10\n", EINVAL, "outside its real size");
	{
		/* a map with no end inside the member */
		struct bytebuf a = { 0 };
		struct memsrc m;
		struct index_tar *t;
		char digits[600];

		memset(digits, '1', sizeof(digits));
		put_pax_member(&a, "f", 512, v1, 0);
		bytebuf_put(&a, "5\n", 2);
		bytebuf_put(&a, digits, 510);
		tarw_end(&a);
		t = open_all(&m, &a);
		expect_err(t, EINVAL, "malformed map");
		index_tar_free(t);
		free(a.p);
		a = (struct bytebuf){ 0 };
		put_pax_member(&a, "f", 512, v1, 0);
		bytebuf_put(&a, "1000\n", 5);
		for (int i = 0; i < 253; i++)
			bytebuf_put(&a, "1\n", 2);
		bytebuf_put(&a, "1", 1);
		tarw_end(&a);
		t = open_all(&m, &a);
		expect_err(t, EINVAL, "runs past the member");
		index_tar_free(t);
		free(a.p);
	}
}

static void test_hostile_oldgnu(void **state)
{
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;
	const uint64_t ent[] = { 0, 512, 0, 0 };
	uint8_t b[512];
	struct tarw_hdr dir = { .name = "d", .type = '5', .fmt = TARW_GNU };

	(void)state;
	/* an endless chain of empty extension blocks */
	put_oldgnu(&a, "s", ent, 1, 1000, 512, 1);
	for (int i = 0; i < 12500; i++)
		put_oldgnu_ext(&a, NULL, 0, 1);
	t = open_all(&m, &a);
	expect_err(t, EFBIG, "more sparse extension headers");
	index_tar_free(t);
	/* a truncated chain */
	a.len = 0;
	put_oldgnu(&a, "s", ent, 1, 1000, 512, 1);
	put_oldgnu_ext(&a, NULL, 0, 1);
	t = open_all(&m, &a);
	expect_err(t, EPIPE, "truncated");
	index_tar_free(t);
	/* an entry after the end of the map */
	a.len = 0;
	tarw_make_header(b, &(struct tarw_hdr){
				    .name = "s", .type = 'S', .size = 512, .fmt = TARW_GNU });
	tarw_octal(b + 386, 12, 0);
	tarw_octal(b + 398, 12, 512);
	tarw_octal(b + 434, 12, 600);
	tarw_octal(b + 446, 12, 10);
	tarw_octal(b + 483, 12, 1000);
	tarw_checksum(b);
	bytebuf_put(&a, b, 512);
	put_data(&a, 512, 's');
	tarw_end(&a);
	t = open_all(&m, &a);
	expect_err(t, EINVAL, "bad sparse map field");
	index_tar_free(t);
	/* a bad number */
	a.len = 0;
	put_oldgnu(&a, "s", ent, 1, 1000, 512, 0);
	memcpy(a.p + 386, "9zzz", 4);
	tarw_checksum(a.p);
	put_data(&a, 512, 's');
	tarw_end(&a);
	t = open_all(&m, &a);
	expect_err(t, EINVAL, "bad sparse map field");
	index_tar_free(t);
	/* 'S' without a GNU header */
	a.len = 0;
	tarw_put_header(&a, &(struct tarw_hdr){ .name = "s", .type = 'S', .size = 0 });
	tarw_end(&a);
	t = open_all(&m, &a);
	expect_err(t, EINVAL, "without a GNU header");
	index_tar_free(t);
	/* sparse records on a directory */
	a.len = 0;
	{
		const char *kv[] = { "GNU.sparse.size", "10", "GNU.sparse.map", "0,0", NULL };

		put_pax_member(&a, "d", 0, kv, '5');
		tarw_end(&a);
		t = open_all(&m, &a);
		expect_err(t, EINVAL, "not a regular file");
		index_tar_free(t);
	}
	/* another sparse version is skipped, the stream goes on */
	a.len = 0;
	{
		const char *kv[] = { "GNU.sparse.major", "2", "GNU.sparse.minor", "0", NULL };

		put_pax_member(&a, "v2", 100, kv, 0);
		put_data(&a, 100, 'x');
		tarw_put_header(&a, &dir);
		tarw_end(&a);
		t = open_all(&m, &a);
		expect_err(t, ENOTSUP, "GNU sparse format 2.0 is not supported");
		assert_string_equal(next_ok(t)->path, "d");
		expect_end(t);
		index_tar_free(t);
	}
	free(a.p);
}

/* ---------------------------------------------------------------- GNU tar's own archives */

/* Writes a file with data at the given (offset, len) pieces and size bytes in all. */
static void make_sparse(const char *dir, const char *name, const uint64_t *ent, size_t n,
			uint64_t size, uint8_t **content)
{
	char path[4096];
	int fd;
	uint8_t *c = calloc(1, size ? size : 1);

	assert_non_null(c);
	snprintf(path, sizeof(path), "%s/src/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	for (size_t i = 0; i < n; i++) {
		for (uint64_t k = 0; k < ent[2 * i + 1]; k++)
			c[ent[2 * i] + k] = (uint8_t)(1 + (ent[2 * i] + k) % 251);
		assert_int_equal(pwrite(fd, c + ent[2 * i], ent[2 * i + 1], (off_t)ent[2 * i]),
				 (ssize_t)ent[2 * i + 1]);
	}
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
	*content = c;
}

struct real_file {
	const char *name;
	uint64_t size;
	uint8_t *content;
	bool seen;
};

static void check_archive(const char *archive, struct real_file *rf, size_t nrf, bool build)
{
	int fd = open(archive, O_RDONLY);
	struct index_tar *t = NULL;
	const struct index_tar_entry *e;
	int rc, nsparse = 0;

	assert_true(fd >= 0);
	assert_int_equal(index_tar_open(index_reader_fd(fd), &t), 0);
	for (size_t i = 0; i < nrf; i++)
		rf[i].seen = false;
	while ((rc = index_tar_next(t, &e)) == 1) {
		uint8_t *f;
		size_t i;

		if (e->type != INDEX_TAR_REG)
			continue;
		for (i = 0; i < nrf; i++)
			if (strcmp(strrchr(e->path, '/') ? strrchr(e->path, '/') + 1 : e->path,
				   rf[i].name) == 0)
				break;
		assert_true(i < nrf);
		rf[i].seen = true;
		assert_int_equal(e->size, rf[i].size);
		nsparse += e->sparse;
		if (!e->sparse) {
			size_t len;
			uint8_t *d = read_all(t, 1000, &len);

			assert_int_equal(len, rf[i].size);
			assert_memory_equal(d, rf[i].content, len);
			free(d);
			continue;
		}
		assert_true(e->data_size < e->size || e->size == 0);
		f = expand(t, e);
		assert_memory_equal(f, rf[i].content, e->size);
		free(f);
	}
	assert_int_equal(rc, 0);
	assert_true(nsparse >= 3);
	for (size_t i = 0; i < nrf; i++)
		assert_true(rf[i].seen);
	index_tar_free(t);
	close(fd);
	if (build) {
		struct index_layer *l = NULL, *d = NULL;
		void *enc = NULL;
		size_t len = 0;
		char why[256];

		fd = open(archive, O_RDONLY);
		assert_int_equal(index_layer_build(index_reader_fd(fd), CS, NULL, NULL, &l), 0);
		close(fd);
		assert_int_equal(index_layer_encode(l, &enc, &len), 0);
		assert_int_equal(index_layer_decode(enc, len, &d), 0);
		assert_int_equal(index_layer_compare(l, d, INDEX_CMP_EXACT, why, sizeof(why)), 1);
		index_layer_free(d);
		free(enc);
		index_layer_free(l);
	}
}

static void test_gnu_tar_archives(void **state)
{
	const char *dir = tmpdir_path;

	(void)state;
	char cmd[8192], archive[4096];
	uint64_t many[2 * 60], head[] = { 0, 8192 }, tail[] = { 1 << 20, 4096 };
	struct real_file rf[] = {
		{ "many", 60 * 65536 + 100000, NULL, false },
		{ "allhole", 1 << 20, NULL, false },
		{ "head", 3 << 20, NULL, false },
		{ "tail", (1 << 20) + 4096, NULL, false },
		{ "plain", 5000, NULL, false },
	};
	static const char *const modes[] = {
		"--format=gnu --sparse",
		"--format=posix --sparse --sparse-version=0.0",
		"--format=posix --sparse --sparse-version=0.1",
		"--format=posix --sparse --sparse-version=1.0",
	};
	uint64_t plain[] = { 0, 5000 };

	for (int i = 0; i < 60; i++) {
		many[2 * i] = (uint64_t)i * 65536 + 8192;
		many[2 * i + 1] = 4096 + (uint64_t)i * 7;
	}
	snprintf(cmd, sizeof(cmd), "%s/src", dir);
	assert_int_equal(mkdir(cmd, 0755), 0);
	make_sparse(dir, "many", many, 60, rf[0].size, &rf[0].content);
	make_sparse(dir, "allhole", NULL, 0, rf[1].size, &rf[1].content);
	make_sparse(dir, "head", head, 1, rf[2].size, &rf[2].content);
	make_sparse(dir, "tail", tail, 1, rf[3].size, &rf[3].content);
	make_sparse(dir, "plain", plain, 1, rf[4].size, &rf[4].content);
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		snprintf(archive, sizeof(archive), "%s/a%zu.tar", dir, m);
		snprintf(cmd, sizeof(cmd), "tar -C %s/src %s -cf %s . 2>/dev/null", dir, modes[m],
			 archive);
		if (m == 0 && system("tar --version >/dev/null 2>&1") != 0)
			skip();
		assert_int_equal(system(cmd), 0);
		check_archive(archive, rf, sizeof(rf) / sizeof(rf[0]), true);
	}
	for (size_t i = 0; i < sizeof(rf) / sizeof(rf[0]); i++)
		free(rf[i].content);
}

/* ---------------------------------------------------------------- the index */

static int keep_chunk(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	struct bytebuf *all = ctx;

	(void)digest;
	bytebuf_put(all, data, len);
	return 0;
}

/* A layer of one sparse file and one plain file, built; the raw index in *raw. */
static struct index_layer *sparse_layer(struct bytebuf *data, uint8_t **raw, size_t *rawlen)
{
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_layer *l = NULL;
	const char *kv[] = { "GNU.sparse.size", "100000", "GNU.sparse.map",
			     "4096,5000,50000,10000,100000,0", NULL };
	void *enc;
	size_t len;

	put_pax_member(&a, "sp", 15000, kv, 0);
	put_data(&a, 15000, 'q');
	tarw_file(&a, "plain", "hello", 5);
	tarw_end(&a);
	assert_int_equal(index_layer_build(memsrc_open(&m, a.p, a.len, 0), CS, keep_chunk, data,
					   &l),
			 0);
	assert_int_equal(index_layer_encode(l, &enc, &len), 0);
	*rawlen = ZSTD_getFrameContentSize(enc, len);
	*raw = malloc(*rawlen);
	assert_int_equal(ZSTD_decompress(*raw, *rawlen, enc, len), *rawlen);
	free(enc);
	free(a.p);
	return l;
}

static int decode_raw(const uint8_t *raw, size_t len, struct index_layer **out)
{
	size_t cap = ZSTD_compressBound(len);
	void *enc = malloc(cap);
	size_t n = ZSTD_compress(enc, cap, raw, len, 1);
	int rc;

	assert_false(ZSTD_isError(n));
	rc = index_layer_decode(enc, n, out);
	free(enc);
	return rc;
}

static void test_index(void **state)
{
	struct bytebuf data = { 0 };
	struct index_layer *l, *d = NULL;
	const struct index_inode *in;
	const struct index_extent *x;
	uint8_t *raw;
	size_t rawlen;
	uint32_t n, version;
	int64_t ino;

	(void)state;
	l = sparse_layer(&data, &raw, &rawlen);
	memcpy(&version, raw + 8, 4);
	assert_int_equal(version, INDEX_FORMAT_VERSION_SPARSE);
	ino = walk(l, "sp");
	assert_true(ino > 0);
	in = index_layer_inode(l, (uint32_t)ino);
	assert_int_equal(in->size, 100000);
	assert_true(in->flags & INDEX_INODE_SPARSE);
	assert_int_equal(index_layer_file_extents(l, in, &x, &n), 15000);
	assert_int_equal(n, 2);
	assert_int_equal(x[0].offset, 4096);
	assert_int_equal(x[0].len, 5000);
	assert_int_equal(x[0].data_off, 0);
	assert_int_equal(x[1].offset, 50000);
	assert_int_equal(x[1].data_off, 5000);
	assert_int_equal(in->count, 4); /* 15000 data bytes in 4 KiB chunks: no chunk of holes */
	assert_int_equal(data.len, 15000 + 5);
	assert_int_equal(index_layer_extent_find(x, n, 0), 0);
	assert_int_equal(index_layer_extent_find(x, n, 9096), 1);
	assert_int_equal(index_layer_extent_find(x, n, 60000), 2);
	assert_int_equal(index_layer_content_size(l), 15005);
	in = index_layer_inode(l, (uint32_t)walk(l, "plain"));
	assert_int_equal(index_layer_file_extents(l, in, &x, &n), 5);
	assert_null(x);
	assert_int_equal(n, 0);
	assert_int_equal(decode_raw(raw, rawlen, &d), 0);
	index_layer_free(d);
	free(raw);
	index_layer_free(l);
	free(data.p);

	/* without a sparse file: version 2, as before */
	{
		struct bytebuf a = { 0 };
		struct memsrc m;
		void *enc;
		size_t len;
		uint8_t hdr[16];

		tarw_file(&a, "plain", "hello", 5);
		tarw_end(&a);
		assert_int_equal(index_layer_build(memsrc_open(&m, a.p, a.len, 0), CS, NULL, NULL,
						   &l),
				 0);
		assert_int_equal(index_layer_encode(l, &enc, &len), 0);
		{
			size_t rl = ZSTD_getFrameContentSize(enc, len);
			uint8_t *r = malloc(rl);

			assert_int_equal(ZSTD_decompress(r, rl, enc, len), rl);
			memcpy(hdr, r, sizeof(hdr));
			free(r);
		}
		memcpy(&version, hdr + 8, 4);
		assert_int_equal(version, INDEX_FORMAT_VERSION);
		assert_int_equal(index_layer_decode(enc, len, &d), 0);
		index_layer_free(d);
		free(enc);
		index_layer_free(l);
		free(a.p);
	}
}

/* Offsets in the raw version 3 index: header fields and the sparse sections. */
struct raw_at {
	size_t sparse, extents, ninodes, nsparse;
};

static struct raw_at raw_layout(const uint8_t *raw)
{
	uint32_t ninodes, ndirents, nchunks, nxattrs, ncps;
	struct raw_at at;

	memcpy(&ninodes, raw + 16, 4);
	memcpy(&ndirents, raw + 20, 4);
	memcpy(&nchunks, raw + 24, 4);
	memcpy(&nxattrs, raw + 28, 4);
	memcpy(&ncps, raw + 88, 4);
	at.ninodes = ninodes;
	at.nsparse = 104;
	at.sparse = 112 + ninodes * sizeof(struct index_inode) +
		    ndirents * sizeof(struct index_dirent) + nchunks * sizeof(struct index_chunk) +
		    nxattrs * sizeof(struct index_xattr) + ncps * sizeof(struct index_checkpoint);
	at.extents = at.sparse + 24;
	return at;
}

static void corrupt_fails(size_t off, const void *val, size_t len, const char *msg)
{
	struct bytebuf data = { 0 };
	struct index_layer *l, *d = (void *)1;
	uint8_t *raw;
	size_t rawlen;

	l = sparse_layer(&data, &raw, &rawlen);
	memcpy(raw + off, val, len);
	assert_int_equal(decode_raw(raw, rawlen, &d), -EBADMSG);
	assert_null(d);
	if (!strstr(strata_errmsg(EBADMSG), msg)) {
		fprintf(stderr, "'%s' lacks '%s'\n", strata_errmsg(EBADMSG), msg);
		fail();
	}
	free(raw);
	index_layer_free(l);
	free(data.p);
}

static void test_index_hostile(void **state)
{
	struct bytebuf data = { 0 };
	struct index_layer *l;
	uint8_t *raw;
	size_t rawlen;
	struct raw_at at;
	uint64_t v64;
	uint32_t v32;

	(void)state;
	l = sparse_layer(&data, &raw, &rawlen);
	at = raw_layout(raw);
	free(raw);
	index_layer_free(l);
	free(data.p);
	/* extent 0: offset, len, data_off; record: ino, first, count, pad, data_size */
	v64 = 48000;
	corrupt_fails(at.extents, &v64, 8, "sparse extent invalid"); /* overlaps extent 1 */
	v64 = 99999;
	corrupt_fails(at.extents + 24, &v64, 8, "sparse extent invalid"); /* past the size */
	v64 = 0;
	corrupt_fails(at.extents + 8, &v64, 8, "sparse extent invalid"); /* empty */
	v64 = 1;
	corrupt_fails(at.extents + 16, &v64, 8, "sparse extent invalid"); /* data_off */
	v64 = 15001;
	corrupt_fails(at.sparse + 16, &v64, 8, "do not add up");
	v32 = 0;
	corrupt_fails(at.sparse, &v32, 4, "not sparse"); /* the root */
	v32 = 1000;
	corrupt_fails(at.sparse, &v32, 4, "out of order");
	v32 = 3;
	corrupt_fails(at.sparse + 8, &v32, 4, "out of range");
	v32 = 1;
	corrupt_fails(at.sparse + 4, &v32, 4, "out of range");
	v32 = 2;
	corrupt_fails(at.nsparse, &v32, 4, "sizes do not add up");
	v32 = INDEX_MAX_EXTENTS + 1;
	corrupt_fails(at.nsparse + 4, &v32, 4, "sizes do not add up");
	v32 = 2; /* the plain file marked sparse too */
	for (size_t ino = 1; ino < at.ninodes; ino++) {
		size_t flags = 112 + ino * sizeof(struct index_inode) + 28;

		data = (struct bytebuf){ 0 };
		l = sparse_layer(&data, &raw, &rawlen);
		memcpy(&v32, raw + flags, 4);
		free(raw);
		index_layer_free(l);
		free(data.p);
		if (v32 & INDEX_INODE_SPARSE)
			continue;
		v32 |= INDEX_INODE_SPARSE;
		corrupt_fails(flags, &v32, 4, "do not match their records");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_formats_by_hand),
		cmocka_unit_test(test_long_maps),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_hostile_pax),
		cmocka_unit_test(test_hostile_oldgnu),
		cmocka_unit_test_setup_teardown(test_gnu_tar_archives, tmpdir_setup,
						tmpdir_teardown),
		cmocka_unit_test(test_index),
		cmocka_unit_test(test_index_hostile),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

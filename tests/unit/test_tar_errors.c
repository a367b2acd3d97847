/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the streaming tar reader: damaged, truncated and unsupported archives. */
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
static void test_bad_checksum(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_hdr h = { .name = "f", .type = '0', .size = 1 };
	struct memsrc m;
	struct index_tar *t;
	uint8_t b[512];
	const struct index_tar_entry *e;
	char msg[128];

	(void)state;
	/* first block */
	tarw_make_header(b, &h);
	b[0] ^= 1;
	bytebuf_put(&a, b, sizeof(b));
	bytebuf_zeros(&a, 512 + 1024);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "not a tar archive: bad header checksum at offset 0");
	assert_int_equal(index_tar_next(t, &e), -EINVAL); /* sticky */
	index_tar_free(t);

	/* a later block */
	a.len = 0;
	tarw_put_file(&a, &h, "x");
	tarw_make_header(b, &h);
	memcpy(b + 148, "0000001", 7);
	bytebuf_put(&a, b, sizeof(b));
	tarw_end(&a);
	t = open_mem(&m, &a, 0);
	e = next_ok(t);
	assert_string_equal(e->path, "f");
	expect_err(t, EINVAL, "bad header checksum at offset 1024");
	index_tar_free(t);

	/* a signed-char checksum (historic tars) is accepted */
	a.len = 0;
	h.name = "\xe9t\xe9";
	tarw_make_header(b, &h);
	{
		int sum = 0;

		memset(b + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += (signed char)b[i];
		snprintf(msg, sizeof(msg), "%06o", sum);
		memcpy(b + 148, msg, 7);
	}
	bytebuf_put(&a, b, sizeof(b));
	bytebuf_put(&a, "y", 1);
	tarw_pad(&a);
	tarw_end(&a);
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
	struct bytebuf a = { 0 };
	struct memsrc m;
	struct index_tar *t;

	(void)state;
	fill_pattern(junk, sizeof(junk), 42);
	bytebuf_put(&a, junk, sizeof(junk));
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "not a tar archive");
	index_tar_free(t);

	/* text that is not a tar either */
	a.len = 0;
	for (int i = 0; i < 100; i++)
		bytebuf_put(&a, "hello world, not a tar\n", 23);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "offset 0");
	index_tar_free(t);
	free(a.p);
}

static void test_truncated(void **state)
{
	struct bytebuf a = { 0 };
	uint8_t data[1000];
	struct tarw_hdr h = { .name = "f", .type = '0', .size = sizeof(data) };
	struct tarw_hdr h2 = { .name = "g", .type = '0' };
	struct tarw_pax p = { 0 };
	struct memsrc m;
	struct index_tar *t;
	const struct index_tar_entry *e;
	uint8_t b[2000];
	ssize_t n;
	size_t full;

	(void)state;
	fill_pattern(data, sizeof(data), 9);
	tarw_put_file(&a, &h, data);
	tarw_put_file(&a, &h2, NULL);
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
	bytebuf_zeros(&a, 512);
	t = open_mem(&m, &a, 0);
	next_ok(t);
	next_ok(t);
	expect_end(t);
	assert_int_equal(index_tar_offset(t), full + 512);
	index_tar_free(t);

	/* EOF after a pax header, before its member */
	a.len = 0;
	tarw_pax_adds(&p, "path", "x");
	tarw_put_pax(&a, 'x', &p);
	t = open_mem(&m, &a, 0);
	expect_err(t, EPIPE, "truncated tar archive");
	index_tar_free(t);

	/* a pax header followed by the end-of-archive block */
	tarw_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "not followed by a member");
	index_tar_free(t);

	/* a lone global pax header is not a member prefix: EOF after it is a clean end */
	a.len = 0;
	tarw_put_pax(&a, 'g', &p);
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

/* GNU sparse members are read (test_tar_sparse.c); an unknown type is skipped, the stream goes on */
static void test_unsupported(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_hdr v = { .name = "vol", .type = 'V', .size = 0 };
	struct tarw_hdr ok = { .name = "ok", .type = '0', .size = 2 };
	struct memsrc m;
	struct index_tar *t;

	(void)state;
	tarw_put_file(&a, &v, NULL);
	tarw_put_file(&a, &ok, "ok");
	tarw_end(&a);

	t = open_mem(&m, &a, 0);
	expect_err(t, ENOTSUP, "unsupported type 'V'");
	assert_string_equal(next_ok(t)->path, "ok"); /* the stream goes on after -ENOTSUP */
	expect_end(t);
	index_tar_free(t);
	free(a.p);
}

static void test_limits_and_bad_fields(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_hdr h = { .name = "./PaxHeaders/x", .type = 'x', .size = 17u << 20 };
	struct tarw_hdr f = { .name = "f", .type = '0' };
	struct tarw_pax p = { 0 };
	uint8_t b[512];
	struct memsrc m;
	struct index_tar *t;

	(void)state;
	tarw_put_header(&a, &h);
	tarw_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "tar header too large");
	index_tar_free(t);

	/* malformed pax record */
	a.len = 0;
	memcpy(p.buf, "99 path=x\n", 10);
	p.len = 10;
	tarw_put_pax(&a, 'x', &p);
	tarw_put_file(&a, &f, NULL);
	tarw_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "invalid pax header at offset 0");
	index_tar_free(t);

	/* non-octal size field */
	a.len = 0;
	tarw_make_header(b, &f);
	memcpy(b + 124, "00000000x00", 11);
	tarw_checksum(b);
	bytebuf_put(&a, b, sizeof(b));
	tarw_end(&a);
	t = open_mem(&m, &a, 0);
	expect_err(t, EINVAL, "bad size field");
	index_tar_free(t);
	free(a.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_checksum),
		cmocka_unit_test(test_not_tar),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_unsupported),
		cmocka_unit_test(test_limits_and_bad_fields),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fs/stats.c's read counters: the fetch-wait histogram's buckets and quantiles. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "fs/fs.h"
#include "fs/fs_i.h"
#include "index/layer.h"
#include "layerq.h"
#include "memsrc.h"
#include "tarw.h"

/* Buckets 0-7 hold exactly 0-7 us; above, every bucket's upper bound grows by at most 25 %. */
static void test_bucket_bounds(void **state)
{
	(void)state;
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(fs_latency_bucket_us(i), i);
	for (unsigned i = 8; i < FS_LAT_BUCKETS - 1; i++) {
		uint64_t lo = fs_latency_bucket_us(i - 1) + 1, hi = fs_latency_bucket_us(i);

		assert_true(hi >= lo);
		assert_true((double)hi <= 1.25 * (double)lo);
	}
	assert_int_equal(fs_latency_bucket_us(FS_LAT_BUCKETS - 1), UINT64_MAX);
	/* the last bounded bucket is past two hours: no real wait is clamped */
	assert_true(fs_latency_bucket_us(FS_LAT_BUCKETS - 2) > 7200ull * 1000000u);
}

static void test_quantiles(void **state)
{
	struct fs_read_stats s;
	unsigned b1ms = 0, b100ms = 0;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_int_equal(fs_latency_quantile_us(&s, 0.5), 0);
	assert_int_equal(fs_latency_quantile_us(&s, 0.99), 0);
	while (fs_latency_bucket_us(b1ms) < 1000)
		b1ms++;
	while (fs_latency_bucket_us(b100ms) < 100000)
		b100ms++;
	/* 90 waits of about 1 ms, 10 of about 100 ms */
	s.fetch_us[b1ms] = 90;
	s.fetch_us[b100ms] = 10;
	assert_int_equal(fs_latency_quantile_us(&s, 0.5), fs_latency_bucket_us(b1ms));
	assert_int_equal(fs_latency_quantile_us(&s, 0.9), fs_latency_bucket_us(b1ms));
	assert_int_equal(fs_latency_quantile_us(&s, 0.91), fs_latency_bucket_us(b100ms));
	assert_int_equal(fs_latency_quantile_us(&s, 0.99), fs_latency_bucket_us(b100ms));
	assert_int_equal(fs_latency_quantile_us(&s, 1.0), fs_latency_bucket_us(b100ms));
	/* a single wait is every quantile */
	memset(&s, 0, sizeof(s));
	s.fetch_us[3] = 1;
	assert_int_equal(fs_latency_quantile_us(&s, 0.01), 3);
	assert_int_equal(fs_latency_quantile_us(&s, 1.0), 3);
}

/* No filesystem served in this process: every counter is zero. */
static void test_counters_start_at_zero(void **state)
{
	struct fs_read_stats s;

	(void)state;
	memset(&s, 0xff, sizeof(s));
	fs_read_stats_get(&s);
	assert_int_equal(s.cache_hits + s.store_hits + s.fetched + s.failed, 0);
	for (unsigned i = 0; i < FS_LAT_BUCKETS; i++)
		assert_int_equal(s.fetch_us[i], 0);
}

/* The data bytes of the sparse file of sparse_read's layer: what its chunks hold. */
static uint8_t sparse_data[15000];

static int copy_data(void *ctx, uint64_t pos, uint64_t end, char *dst)
{
	int *calls = ctx;

	assert_true(pos < end && end <= sizeof(sparse_data));
	memcpy(dst, sparse_data + pos, end - pos);
	(*calls)++;
	return 0;
}

static int fail_data(void *ctx, uint64_t pos, uint64_t end, char *dst)
{
	(void)ctx, (void)pos, (void)end, (void)dst;
	return -EIO;
}

/* fs_sparse_read of every kind of range (in a hole, in data, across both, the whole file) equals
 * the file: data at [4096, 9096) and [50000, 60000) of 100000 bytes, zeros elsewhere. */
static void test_sparse_read(void **state)
{
	struct bytebuf a = { 0 };
	struct tarw_pax p = { .len = 0 };
	struct tarw_hdr h = { .name = "sp", .type = '0', .size = sizeof(sparse_data) };
	struct index_layer *l = NULL;
	struct memsrc m;
	static uint8_t file[100000];
	static char buf[100000];
	uint64_t seed = 7;
	const struct index_inode *in;

	(void)state;
	for (size_t i = 0; i < sizeof(sparse_data); i++)
		sparse_data[i] = (uint8_t)(1 + i * 7 % 251);
	memset(file, 0, sizeof(file));
	memcpy(file + 4096, sparse_data, 5000);
	memcpy(file + 50000, sparse_data + 5000, 10000);
	tarw_pax_adds(&p, "GNU.sparse.size", "100000");
	tarw_pax_adds(&p, "GNU.sparse.map", "4096,5000,50000,10000");
	tarw_put_pax(&a, 'x', &p);
	tarw_put_file(&a, &h, sparse_data);
	tarw_end(&a);
	assert_int_equal(index_layer_build(memsrc_open(&m, a.p, a.len, 0), 4096, NULL, NULL, &l),
			 0);
	in = index_layer_inode(l, (uint32_t)walk(l, "sp"));
	for (int k = 0; k < 2000; k++) {
		uint64_t off = k == 0 ? 0 : xorshift64(&seed) % sizeof(file);
		uint64_t end = k == 0 ? sizeof(file) :
					off + 1 + xorshift64(&seed) % (sizeof(file) - off);
		int calls = 0;

		memset(buf, 0xee, sizeof(buf));
		assert_int_equal(fs_sparse_read(l, in, off, end, buf, copy_data, &calls), 0);
		assert_memory_equal(buf, file + off, end - off);
		assert_true(calls <= 2);
		if ((off >= 9096 && end <= 50000) || end <= 4096 || off >= 60000)
			assert_int_equal(calls, 0); /* a hole: nothing fetched */
	}
	assert_int_equal(fs_sparse_read(l, in, 0, 5000, buf, fail_data, NULL), -EIO);
	assert_int_equal(fs_sparse_read(l, in, 10000, 20000, buf, fail_data, NULL), 0);
	index_layer_free(l);
	free(a.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_bounds),
		cmocka_unit_test(test_quantiles),
		cmocka_unit_test(test_counters_start_at_zero),
		cmocka_unit_test(test_sparse_read),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

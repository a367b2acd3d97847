/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fs/stats.c's read counters: the fetch-wait histogram's buckets and quantiles. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "fs/fs.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_bounds),
		cmocka_unit_test(test_quantiles),
		cmocka_unit_test(test_counters_start_at_zero),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Read counters: where the chunks reads needed came from, and a histogram of their fetch waits. */
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "engine_i.h"
#include "fs.h"

/* Process-wide (one fs per process), lock-free: relaxed atomic adds from the FUSE threads. */
static struct {
	_Atomic uint64_t cache_hits, store_hits, fetched, failed;
	_Atomic uint64_t fetch_us[FS_LAT_BUCKETS];
} read_stats;

static unsigned latency_bucket(uint64_t us)
{
	unsigned e, b;

	if (us < 8)
		return (unsigned)us;		 /* buckets 0-7: exactly 0-7 us */
	e = 63u - (unsigned)__builtin_clzll(us); /* >= 3 */
	b = 4 * (e - 1) + (unsigned)((us >> (e - 2)) & 3);
	return b < FS_LAT_BUCKETS ? b : FS_LAT_BUCKETS - 1;
}

uint64_t fs_latency_bucket_us(unsigned i)
{
	unsigned e = i / 4 + 1, sub = i % 4;

	if (i < 8)
		return i;
	if (i >= FS_LAT_BUCKETS - 1)
		return UINT64_MAX;
	/* bucket 4(e-1)+sub holds [(4+sub) << (e-2), (5+sub) << (e-2)) */
	return ((uint64_t)(5 + sub) << (e - 2)) - 1;
}

uint64_t fs_latency_quantile_us(const struct fs_read_stats *s, double q)
{
	uint64_t n = 0, seen = 0, rank;

	for (unsigned i = 0; i < FS_LAT_BUCKETS; i++)
		n += s->fetch_us[i];
	if (n == 0)
		return 0;
	rank = (uint64_t)(q * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < FS_LAT_BUCKETS; i++) {
		seen += s->fetch_us[i];
		if (seen >= rank)
			return fs_latency_bucket_us(i);
	}
	return fs_latency_bucket_us(FS_LAT_BUCKETS - 1);
}

void fs_read_stats_get(struct fs_read_stats *out)
{
	out->cache_hits = atomic_load_explicit(&read_stats.cache_hits, memory_order_relaxed);
	out->store_hits = atomic_load_explicit(&read_stats.store_hits, memory_order_relaxed);
	out->fetched = atomic_load_explicit(&read_stats.fetched, memory_order_relaxed);
	out->failed = atomic_load_explicit(&read_stats.failed, memory_order_relaxed);
	for (unsigned i = 0; i < FS_LAT_BUCKETS; i++)
		out->fetch_us[i] = atomic_load_explicit(&read_stats.fetch_us[i],
							memory_order_relaxed);
}

static void count_read(_Atomic uint64_t *counter)
{
	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

uint64_t fs_stats_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void fs_stats_count(enum fs_read_outcome what)
{
	switch (what) {
	case FS_READ_CACHE_HIT:
		count_read(&read_stats.cache_hits);
		break;
	case FS_READ_STORE_HIT:
		count_read(&read_stats.store_hits);
		break;
	case FS_READ_FAILED:
		count_read(&read_stats.failed);
		break;
	}
}

void fs_stats_fetched(uint64_t t0_us)
{
	count_read(&read_stats.fetched);
	count_read(&read_stats.fetch_us[latency_bucket(fs_stats_now_us() - t0_us)]);
}

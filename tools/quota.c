/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's background evictor: a thread applying the store's quota policy (store/maint.h). */
#include "quota.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "fs/fs.h"
#include "store/maint.h"
#include "store/store.h"
#include "util/log.h"
#include "util/thread.h"

struct quota {
	struct store *s;
	struct fs *fs;
	uint64_t quota;
	unsigned low_water;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	_Atomic int stop;	      /* written under mu; read by store_evict between batches */
	struct store_open_files open; /* fs's open-file table */
};

static int stopped(void *ctx)
{
	struct quota *q = ctx;

	return atomic_load(&q->stop);
}

static void open_lock(void *ctx)
{
	fs_open_lock(ctx);
}

static void open_unlock(void *ctx)
{
	fs_open_unlock(ctx);
}

static int open_chunks(void *ctx, int (*fn)(void *arg, const uint8_t digest[32]), void *arg)
{
	return fs_open_chunks(ctx, fn, arg);
}

void quota_open_files(struct fs *fs, struct store_open_files *out)
{
	out->ctx = fs;
	out->lock = open_lock;
	out->unlock = open_unlock;
	out->chunks = open_chunks;
}

static void *evictor_main(void *arg)
{
	struct quota *q = arg;
	struct store_maint_hooks hooks = { q, stopped, NULL, NULL, NULL };
	int failed = 0;

	pthread_mutex_lock(&q->mu);
	while (!atomic_load(&q->stop)) {
		struct timespec until;
		struct store_evict_result r;
		int rc;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		pthread_cond_timedwait(&q->cv, &q->mu, &until);
		if (atomic_load(&q->stop))
			break;
		pthread_mutex_unlock(&q->mu);
		if (store_evict_disk_bytes(q->s) > q->quota) {
			rc = store_evict(q->s, q->fs ? &q->open : NULL, q->quota, q->low_water,
					 &hooks, &r);
			if (rc < 0 && rc != -ECANCELED && !failed++) {
				strata_log(LOG_ERR, "quota: eviction failed: %s",
					   strata_errmsg(rc));
			} else if (rc == 0 && r.over) {
				char b1[32], b2[32], b3[32], b4[32];

				failed = 0;
				strata_log(LOG_NOTICE,
					   "quota: store was %s (quota %s): evicted %llu chunks "
					   "(%s) of %llu layers; now %s",
					   cli_bytes(r.disk_before, b1, sizeof(b1)),
					   cli_bytes(r.quota, b2, sizeof(b2)),
					   (unsigned long long)r.chunks,
					   cli_bytes(r.bytes, b3, sizeof(b3)),
					   (unsigned long long)r.layers,
					   cli_bytes(r.disk_after, b4, sizeof(b4)));
				if (r.disk_after > r.quota && !r.chunks) {
					/* nothing evictable: do not spin on compactions */
					pthread_mutex_lock(&q->mu);
					clock_gettime(CLOCK_REALTIME, &until);
					until.tv_sec += 30;
					while (!atomic_load(&q->stop) &&
					       pthread_cond_timedwait(&q->cv, &q->mu, &until) == 0)
						;
					pthread_mutex_unlock(&q->mu);
				}
			}
		}
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int quota_start(struct store *s, struct fs *fs, uint64_t quota, unsigned low_water,
		struct quota **out)
{
	struct quota *q = calloc(1, sizeof(*q));
	int rc;

	*out = NULL;
	if (!q)
		return -ENOMEM;
	q->s = s;
	q->fs = fs;
	q->quota = quota;
	q->low_water = low_water;
	quota_open_files(fs, &q->open);
	atomic_init(&q->stop, 0);
	{
		/* Completion stays as far under the low-water mark as the mark is under the quota:
		 * a span it fetches past the check must not push the store over the quota. */
		uint64_t lw = store_evict_target(quota, low_water);

		fs_background_limit(fs, lw > quota - lw ? lw - (quota - lw) : lw / 2);
	}
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	rc = util_thread_start(&q->thread, evictor_main, q);
	if (rc != 0) {
		pthread_mutex_destroy(&q->mu);
		pthread_cond_destroy(&q->cv);
		free(q);
		return strata_err(rc, "cannot start the quota evictor thread");
	}
	*out = q;
	return 0;
}

uint64_t quota_bytes(const struct quota *q)
{
	return q->quota;
}

unsigned quota_low_water(const struct quota *q)
{
	return q->low_water ? q->low_water : STORE_EVICT_LOW_WATER_DEFAULT;
}

void quota_stop(struct quota *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	atomic_store(&q->stop, 1);
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}

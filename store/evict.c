/* SPDX-License-Identifier: Apache-2.0 */
/* Quota eviction: the least recently used, unpinned layers' chunks go until the store fits. */
#include "maint_i.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dset_i.h"
#include "index/layer.h"
#include "util/log.h"

#define BATCH	   4096 /* chunks deleted under one open-files lock hold */
#define MAX_ROUNDS 16	/* compactions in one store_evict() call */

static pthread_mutex_t evict_mu = PTHREAD_MUTEX_INITIALIZER; /* one pass at a time */

/* ---------------------------------------------------------------- pinned layers */

struct pins {
	struct store *s;
	json_t *layers; /* object: digest -> true */
	int rc;
};

static int pin_image_cb(void *ctx, const char *ref)
{
	struct pins *p = ctx;
	char *json = NULL;
	json_error_t jerr;
	json_t *o;
	int rc = store_image_get(p->s, ref, &json);

	if (rc == -ENOENT)
		return 0; /* a pin left by a crash between rm's steps keeps nothing */
	if (rc < 0)
		return rc;
	o = json_loads(json, 0, &jerr);
	free(json);
	if (!o)
		return strata_err(EBADMSG, "image %s: unreadable record", ref);
	rc = store_image_layer_set(o, p->layers);
	json_decref(o);
	return rc;
}

/* Fills layers (an object) with the digests of every pinned image's layers. Returns 0 or negative
 * errno. */
static int pinned_layers(struct store *s, json_t *layers)
{
	struct pins p = { s, layers, 0 };

	return store_pin_list(s, pin_image_cb, &p);
}

/* ---------------------------------------------------------------- eviction */

struct cand {
	char digest[STORE_DIGEST_LEN];
	uint64_t atime;
};

struct evict {
	struct store *s;
	const struct store_open_files *open;
	json_t *pinned;
	struct cand *c;
	size_t n, cap;
	int rc;
};

static int cand_cb(void *ctx, const struct store_layer *sl)
{
	struct evict *e = ctx;
	int rc;

	if (json_object_get(e->pinned, sl->digest))
		return 0;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct cand *n = realloc(e->c, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		e->c = n;
		e->cap = cap;
	}
	snprintf(e->c[e->n].digest, STORE_DIGEST_LEN, "%s", sl->digest);
	rc = store_layer_atime(e->s, sl->digest, &e->c[e->n].atime);
	if (rc < 0)
		return rc;
	e->n++;
	return 0;
}

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	if (x->atime != y->atime)
		return x->atime < y->atime ? -1 : 1;
	return strcmp(x->digest, y->digest);
}

static int open_cb(void *ctx, const uint8_t digest[32])
{
	return dset_add(ctx, digest) < 0 ? -ENOMEM : 0;
}

/* Deletes the n digests of batch that are not of an open file, with opens held off. *freed gets
 * the stored bytes of what was deleted. Returns the number deleted or negative errno. */
static int delete_batch(struct evict *e, uint8_t (*batch)[32], const uint64_t *sizes, size_t n,
			uint64_t *freed)
{
	struct dset open = { 0 };
	size_t k = 0;
	int rc = 0;

	*freed = 0;
	if (e->open) {
		e->open->lock(e->open->ctx);
		rc = e->open->chunks(e->open->ctx, open_cb, &open);
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (dset_has(&open, batch[i]))
			continue;
		memmove(batch[k], batch[i], 32);
		*freed += sizes[i];
		k++;
	}
	if (rc == 0)
		rc = store_chunk_del(e->s, (const uint8_t(*)[32])batch, k);
	if (e->open)
		e->open->unlock(e->open->ctx);
	dset_free(&open);
	return rc < 0 ? rc : (int)k;
}

/* Evicts the chunks of candidate layer ci that are neither kept nor gone already, in index order,
 * until want stored bytes are freed. Adds to res. */
static int evict_layer(struct evict *e, size_t ci, const struct dset *kept, struct dset *gone,
		       uint64_t want, const struct store_maint_hooks *hooks,
		       struct store_evict_result *res)
{
	struct index_layer *l = NULL;
	uint8_t(*batch)[32] = malloc(BATCH * sizeof(*batch));
	uint64_t *sizes = malloc(BATCH * sizeof(*sizes));
	uint32_t nchunks, nwin;
	size_t n = 0;
	uint64_t pending = 0, start = res->bytes;
	int rc, touched = 0;

	if (!batch || !sizes) {
		rc = -ENOMEM;
		goto out;
	}
	rc = store_layer_load_index(e->s, e->c[ci].digest, &l);
	if (rc == -ENOENT) { /* removed meanwhile */
		strata_err_clear();
		rc = 0;
		goto out;
	}
	if (rc < 0)
		goto out;
	nchunks = index_layer_nchunks(l);
	nwin = index_layer_ncheckpoints(l);
	for (uint32_t i = 0; i < nchunks + nwin && rc >= 0; i++) {
		const uint8_t *d;
		ssize_t len;
		uint64_t freed;

		if (i < nchunks) {
			d = index_layer_chunk(l, i)->digest;
		} else {
			const struct index_checkpoint *cp = index_layer_checkpoint(l, i - nchunks);

			if (cp->wlen == 0)
				continue;
			d = cp->window;
		}
		if (dset_has(kept, d) || dset_has(gone, d))
			continue;
		if (dset_add(gone, d) < 0) {
			rc = -ENOMEM;
			break;
		}
		len = store_chunk_stored_len(e->s, d);
		if (len == -ENOENT)
			continue;
		if (len < 0) {
			rc = (int)len;
			break;
		}
		memcpy(batch[n], d, 32);
		sizes[n++] = (uint64_t)len;
		pending += (uint64_t)len;
		if (n < BATCH && i + 1 < nchunks + nwin && res->bytes - start + pending < want)
			continue;
		if (maint_cancelled(hooks)) {
			rc = -ECANCELED;
			break;
		}
		rc = delete_batch(e, batch, sizes, n, &freed);
		if (rc > 0) {
			res->chunks += (uint64_t)rc;
			res->bytes += freed;
			touched = 1;
		}
		n = 0;
		pending = 0;
		if (res->bytes - start >= want)
			break;
	}
	if (rc >= 0 && n > 0) {
		uint64_t freed;

		rc = delete_batch(e, batch, sizes, n, &freed);
		if (rc > 0) {
			res->chunks += (uint64_t)rc;
			res->bytes += freed;
			touched = 1;
		}
	}
	if (touched)
		res->layers++;
out:
	index_layer_free(l);
	free(batch);
	free(sizes);
	return rc < 0 ? rc : 0;
}

uint64_t store_evict_disk_bytes(struct store *s)
{
	struct store_stats st;

	store_get_stats(s, &st);
	return st.disk_bytes; /* chunks in memtables are in the WAL on disk too */
}

uint64_t store_evict_target(uint64_t quota, unsigned low_water)
{
	if (!low_water || low_water > 100)
		low_water = STORE_EVICT_LOW_WATER_DEFAULT;
	return quota / 100 * low_water + quota % 100 * low_water / 100;
}

int store_evict(struct store *s, const struct store_open_files *open, uint64_t quota,
		unsigned low_water, const struct store_maint_hooks *hooks,
		struct store_evict_result *res)
{
	struct evict e = { s, open, NULL, NULL, 0, 0, 0 };
	struct dset kept = { 0 }, gone = { 0 };
	const char *key;
	json_t *v;
	size_t next = 0;
	uint64_t disk;
	int rc = 0;

	memset(res, 0, sizeof(*res));
	if (!low_water || low_water > 100)
		low_water = STORE_EVICT_LOW_WATER_DEFAULT;
	res->quota = quota;
	res->target = store_evict_target(quota, low_water);
	pthread_mutex_lock(&evict_mu);
	disk = store_evict_disk_bytes(s);
	res->disk_before = res->disk_after = disk;
	if (!quota || disk <= quota)
		goto out;
	res->over = 1;
	e.pinned = json_object();
	if (!e.pinned) {
		rc = -ENOMEM;
		goto out;
	}
	rc = pinned_layers(s, e.pinned);
	json_object_foreach (e.pinned, key, v) {
		struct index_layer *l = NULL;

		if (rc < 0)
			break;
		rc = store_layer_load_index(s, key, &l);
		if (rc == -ENOENT) { /* a pinned image with a missing layer: fsck reports it */
			strata_err_clear();
			rc = 0;
			continue;
		}
		if (rc == 0)
			rc = dset_add_layer(&kept, l);
		index_layer_free(l);
	}
	if (rc == 0)
		rc = store_layer_list(s, cand_cb, &e);
	if (rc < 0)
		goto out;
	qsort(e.c, e.n, sizeof(*e.c), cand_cmp);
	for (int round = 0; round < MAX_ROUNDS && disk > res->target && next < e.n; round++) {
		uint64_t need = disk - res->target, start = res->bytes;

		while (next < e.n && res->bytes - start < need) {
			rc = evict_layer(&e, next, &kept, &gone, need - (res->bytes - start), hooks,
					 res);
			if (rc == 0 && res->bytes - start < need)
				next++; /* done with it; else it may have more to give */
			if (rc < 0)
				goto compact;
		}
		rc = store_chunk_compact(s);
		if (rc < 0)
			goto out;
		disk = store_evict_disk_bytes(s);
	}
compact:
	if (rc < 0 && res->chunks) {
		int crc = store_chunk_compact(s);

		if (crc < 0)
			strata_log(LOG_WARNING, "quota: compaction: %s", strata_errmsg(crc));
		disk = store_evict_disk_bytes(s);
	}
	res->disk_after = disk;
	if (res->chunks) {
		store_counter_add(s, "evictions", 1);
		store_counter_add(s, "evicted_chunks", res->chunks);
		store_counter_add(s, "evicted_bytes", res->bytes);
	}
out:
	pthread_mutex_unlock(&evict_mu);
	json_decref(e.pinned);
	free(e.c);
	dset_free(&kept);
	dset_free(&gone);
	return rc;
}

void store_evict_wait_idle(void)
{
	pthread_mutex_lock(&evict_mu);
	pthread_mutex_unlock(&evict_mu);
}

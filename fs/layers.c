/* SPDX-License-Identifier: Apache-2.0 */
/* The layer cache: decoded layer indexes loaded on demand, referenced by requests, unloaded LRU
 * over their cap; and the inode numbers derived from the store's layer seqs. */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_i.h"
#include "fs.h"
#include "fetch/ref.h"
#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"

/* The decoded-index cache of the process's fs (one per process), for fs_index_stats_get. */
static struct {
	_Atomic uint64_t bytes, layers, cap, loads, unloads;
} index_stats;

static void layer_destroy(struct fs_layer *l)
{
	index_layer_free(l->idx);
	fetch_ref_free(l->src);
	free(l);
}

/* Takes a reference on l. Caller holds layers_lock (either side). */
static struct fs_layer *layer_ref_locked(struct fs_engine *eng, struct fs_layer *l)
{
	atomic_fetch_add_explicit(&l->refs, 1, memory_order_acquire);
	atomic_store_explicit(&l->used,
			      atomic_fetch_add_explicit(&eng->layer_tick, 1, memory_order_relaxed) +
				      1,
			      memory_order_relaxed);
	return l;
}

/*
 * Unloads the least recently used layers that have no reference until the loaded ones fit the cap
 * (or only referenced ones are left). Takes layers_lock (write side); frees outside it.
 */
static void layer_trim(struct fs_engine *eng)
{
	struct fs_layer *gone = NULL;
	uint64_t n = 0;

	pthread_rwlock_wrlock(&eng->layers_lock);
	while (eng->layers_bytes > eng->layers_max) {
		struct fs_layer *victim = NULL;

		for (size_t i = 0; i < eng->layers_cap; i++) {
			struct fs_layer *l = eng->layers[i];

			/* No reference can be taken meanwhile: that needs the read side. */
			if (l && atomic_load(&l->refs) == 0 && (!victim || l->used < victim->used))
				victim = l;
		}
		if (!victim)
			break;
		eng->layers[victim->seq] = NULL;
		atomic_fetch_sub_explicit(&eng->layers_bytes, victim->bytes, memory_order_relaxed);
		atomic_fetch_sub_explicit(&index_stats.bytes, victim->bytes, memory_order_relaxed);
		atomic_fetch_sub_explicit(&index_stats.layers, 1, memory_order_relaxed);
		victim->gone = gone;
		gone = victim;
		n++;
	}
	pthread_rwlock_unlock(&eng->layers_lock);
	if (n)
		atomic_fetch_add_explicit(&index_stats.unloads, n, memory_order_relaxed);
	while (gone) {
		struct fs_layer *next = gone->gone;

		layer_destroy(gone);
		gone = next;
	}
	if (n) {
		/* A freed index (megabytes) stays in the freeing thread's malloc arena, and every FUSE
		 * thread has one: give it back, at most once a second (bench/store: a cap smaller
		 * than one layer kept 21 MiB more resident without this). */
		int64_t now = (int64_t)time(NULL);

		if (atomic_exchange_explicit(&eng->layer_trimmed, now, memory_order_relaxed) != now)
			malloc_trim(0);
	}
}

/* Gives back a reference from layer_get_seq/layer_load/layer_of (NULL ok). l may be unloaded
 * from then on. */
void fs_layer_put(struct fs_engine *eng, struct fs_layer *l)
{
	if (!l)
		return;
	assert(atomic_load_explicit(&l->refs, memory_order_relaxed) > 0);
	/* (sequentially consistent with layer_load's update: one of the two trims) */
	if (atomic_fetch_sub(&l->refs, 1) == 1 && atomic_load(&eng->layers_bytes) > eng->layers_max)
		layer_trim(eng);
}

/* Returns the loaded layer seq, referenced (layer_put), or NULL when it is not loaded. */
static struct fs_layer *layer_get_seq(struct fs_engine *eng, uint32_t seq)
{
	struct fs_layer *l = NULL;

	pthread_rwlock_rdlock(&eng->layers_lock);
	if (seq < eng->layers_cap && eng->layers[seq])
		l = layer_ref_locked(eng, eng->layers[seq]);
	pthread_rwlock_unlock(&eng->layers_lock);
	return l;
}

/* Returns the loaded layer with this digest, referenced, or NULL. Scans the loaded layers (the
 * cap keeps them few): cheaper than reading the layer's record from the store. */
static struct fs_layer *layer_get_digest(struct fs_engine *eng, const char *digest)
{
	struct fs_layer *l = NULL;

	pthread_rwlock_rdlock(&eng->layers_lock);
	for (size_t i = 0; i < eng->layers_cap; i++) {
		if (eng->layers[i] && strcmp(eng->layers[i]->digest, digest) == 0) {
			l = layer_ref_locked(eng, eng->layers[i]);
			break;
		}
	}
	pthread_rwlock_unlock(&eng->layers_lock);
	return l;
}

/* Loads the layer with this digest from the store (or returns the loaded one). On success *out is
 * referenced: give it back with fs_layer_put(). */
int fs_layer_load(struct fs_engine *eng, const char *digest, struct fs_layer **out)
{
	struct store_layer info;
	struct fs_layer *l;
	void *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	/* Loaded, and its seq still names this digest in the store (a layer removed and stored
	 * again has a new seq): a small read instead of the layer's record. */
	l = layer_get_digest(eng, digest);
	if (l) {
		char now[STORE_DIGEST_LEN];

		if (store_layer_by_seq(eng->store, l->seq, now) == 0 && strcmp(now, digest) == 0) {
			if (atomic_load(&l->quarantined)) {
				fs_layer_put(eng, l);
				return strata_err(EIO, "layer %s is quarantined", digest);
			}
			*out = l;
			return 0;
		}
		fs_layer_put(eng, l);
		strata_err_clear();
	}
	/* Only the record's description first (not its index): is it loaded under its seq? */
	rc = store_layer_get(eng->store, digest, &info, NULL, NULL);
	if (rc < 0)
		return rc;
	if (info.quarantine[0])
		return strata_err(EIO, "layer %s is quarantined: %s", digest, info.quarantine);
	*out = layer_get_seq(eng, info.seq);
	if (*out)
		return 0;
	rc = store_layer_get(eng->store, digest, &info, &buf, &len);
	if (rc < 0)
		return rc;
	l = calloc(1, sizeof(*l));
	if (!l) {
		free(buf);
		return -ENOMEM;
	}
	rc = index_layer_decode(buf, len, &l->idx);
	free(buf);
	if (rc < 0) {
		strata_log(LOG_ERR, "layer %s: %s", digest, strata_errmsg(rc));
		free(l);
		return rc;
	}
	l->seq = info.seq;
	atomic_store(&l->verified, info.prov == STORE_PROV_VERIFIED);
	l->bytes = sizeof(*l) + index_layer_mem_size(l->idx);
	snprintf(l->digest, sizeof(l->digest), "%s", digest);
	snprintf(l->windows, sizeof(l->windows), "%s", info.windows);
	if (info.source[0] && fetch_ref_parse(info.source, &l->src) < 0) {
		strata_log(LOG_WARNING, "layer %s: unusable source '%s': %s", digest, info.source,
			   strata_errmsg(EINVAL));
		l->src = NULL;
	}

	pthread_rwlock_wrlock(&eng->layers_lock);
	if (info.seq >= eng->layers_cap) {
		size_t ncap = eng->layers_cap ? eng->layers_cap : 64;
		struct fs_layer **nl;

		while (ncap <= info.seq)
			ncap *= 2;
		nl = realloc(eng->layers, ncap * sizeof(*nl));
		if (!nl) {
			pthread_rwlock_unlock(&eng->layers_lock);
			layer_destroy(l);
			return -ENOMEM;
		}
		memset(nl + eng->layers_cap, 0, (ncap - eng->layers_cap) * sizeof(*nl));
		eng->layers = nl;
		eng->layers_cap = ncap;
	}
	if (eng->layers[info.seq]) {
		/* another request loaded it meanwhile */
		*out = layer_ref_locked(eng, eng->layers[info.seq]);
		pthread_rwlock_unlock(&eng->layers_lock);
		layer_destroy(l);
		return 0;
	}
	eng->layers[info.seq] = l;
	*out = layer_ref_locked(eng, l);
	atomic_fetch_add(&eng->layers_bytes, l->bytes);
	atomic_fetch_add_explicit(&index_stats.bytes, l->bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&index_stats.layers, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&index_stats.loads, 1, memory_order_relaxed);
	pthread_rwlock_unlock(&eng->layers_lock);
	if (atomic_load(&eng->layers_bytes) > eng->layers_max)
		layer_trim(eng); /* never this one: it is referenced */
	return 0;
}

/* Finds the layer for an inode number, loading it by seq when it is not loaded. On success *out is
 * referenced (layer_put) and *node is the inode's number in the layer's index. */
int fs_layer_of(struct fs_engine *eng, uint64_t ino, struct fs_layer **out, uint32_t *node)
{
	uint32_t seq = (uint32_t)(ino >> 32);
	char digest[STORE_DIGEST_LEN];
	struct fs_layer *l;
	int rc;

	*out = NULL;
	if (seq == 0)
		return -ENOENT;
	l = layer_get_seq(eng, seq);
	if (!l) {
		rc = store_layer_by_seq(eng->store, seq, digest);
		if (rc < 0)
			return rc == -ENOENT ? -ESTALE : rc;
		rc = fs_layer_load(eng, digest, &l);
		if (rc < 0)
			return rc;
	}
	/* (a layer removed and stored again has a new seq: the old numbers are stale) */
	if (l->seq != seq || (uint32_t)ino >= index_layer_ninodes(l->idx)) {
		fs_layer_put(eng, l);
		return -ESTALE;
	}
	if (atomic_load(&l->quarantined)) {
		fs_layer_put(eng, l);
		return strata_err(EIO, "layer %s is quarantined", l->digest);
	}
	*out = l;
	*node = (uint32_t)ino;
	return 0;
}

uint64_t fs_layer_ino(const struct fs_layer *l, uint32_t node)
{
	return ((uint64_t)l->seq << 32) | node;
}

/* Tells the store the layer was used now; at most once a second per layer. */
void fs_layer_touch(struct fs_engine *eng, struct fs_layer *l)
{
	uint64_t now = (uint64_t)time(NULL);

	if (atomic_exchange_explicit(&l->touched, now, memory_order_relaxed) != now)
		store_layer_touch(eng->store, l->digest, now);
}

void fs_layers_unload_all(struct fs_engine *eng)
{
	for (size_t i = 0; i < eng->layers_cap; i++) {
		if (eng->layers[i]) {
			assert(atomic_load(&eng->layers[i]->refs) == 0);
			atomic_fetch_sub_explicit(&index_stats.bytes, eng->layers[i]->bytes,
						  memory_order_relaxed);
			atomic_fetch_sub_explicit(&index_stats.layers, 1, memory_order_relaxed);
			layer_destroy(eng->layers[i]);
		}
	}
	free(eng->layers);
	eng->layers = NULL;
	eng->layers_cap = 0;
}

void fs_index_stats_cap(uint64_t cap)
{
	atomic_store_explicit(&index_stats.cap, cap, memory_order_relaxed);
}

void fs_index_stats_get(struct fs_index_stats *out)
{
	out->bytes = atomic_load_explicit(&index_stats.bytes, memory_order_relaxed);
	out->layers = atomic_load_explicit(&index_stats.layers, memory_order_relaxed);
	out->cap = atomic_load_explicit(&index_stats.cap, memory_order_relaxed);
	out->loads = atomic_load_explicit(&index_stats.loads, memory_order_relaxed);
	out->unloads = atomic_load_explicit(&index_stats.unloads, memory_order_relaxed);
}

int fs_collect_layer_cb(void *ctx, const struct store_layer *sl)
{
	struct digest_list *d = ctx;
	char(*nn)[STORE_DIGEST_LEN] = realloc(d->names, (d->n + 1) * sizeof(*d->names));

	if (!nn)
		return -ENOMEM;
	d->names = nn;
	snprintf(d->names[d->n++], STORE_DIGEST_LEN, "%s", sl->digest);
	return 0;
}

/* fs_collect_layer_cb for a layer not in the list yet. */
int fs_collect_new_layer_cb(void *ctx, const struct store_layer *sl)
{
	struct digest_list *d = ctx;

	for (size_t i = 0; i < d->n; i++) {
		if (strcmp(d->names[i], sl->digest) == 0)
			return 0;
	}
	return fs_collect_layer_cb(ctx, sl);
}

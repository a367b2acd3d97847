/* SPDX-License-Identifier: Apache-2.0 */
/* The decoded-chunk cache: verified chunks by digest, reference-counted, evicted LRU over a cap. */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine_i.h"

static size_t bucket_of(const struct chunk_cache *c, const uint8_t d[32])
{
	uint64_t h;

	memcpy(&h, d, sizeof(h));
	return (size_t)(h % c->nbuckets);
}

int fs_cache_init(struct chunk_cache *c, uint64_t cap)
{
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->load_cv, NULL);
	c->nbuckets = 4096;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	c->lru.prev = c->lru.next = &c->lru;
	c->cap = cap;
	return c->buckets ? 0 : -ENOMEM;
}

static void lru_unlink(struct cchunk *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
}

static void lru_push_front(struct chunk_cache *c, struct cchunk *e)
{
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
}

static void hash_remove(struct chunk_cache *c, struct cchunk *e)
{
	struct cchunk **pp = &c->buckets[bucket_of(c, e->digest)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
}

/* Takes unreferenced entries from the cold end off the cache while over capacity and returns them
 * chained by hnext, for free_trimmed() after mu is released (freeing a 1 MiB chunk is an munmap:
 * not under the lock every read takes). Caller holds mu. */
static struct cchunk *cache_trim(struct chunk_cache *c)
{
	struct cchunk *e = c->lru.prev, *gone = NULL;

	while (c->bytes > c->cap && e != &c->lru) {
		struct cchunk *prev = e->prev;

		if (e->refs == 0) {
			lru_unlink(e);
			hash_remove(c, e);
			c->bytes -= e->len;
			e->hnext = gone;
			gone = e;
		}
		e = prev;
	}
	return gone;
}

static void free_trimmed(struct cchunk *gone)
{
	while (gone) {
		struct cchunk *next = gone->hnext;

		free(gone);
		gone = next;
	}
}

/* The entry for d, referenced and made most recent, or NULL. Caller holds mu. */
static struct cchunk *lookup(struct chunk_cache *c, const uint8_t d[32])
{
	struct cchunk *e;

	for (e = c->buckets[bucket_of(c, d)]; e; e = e->hnext) {
		if (memcmp(e->digest, d, 32) == 0) {
			e->refs++;
			lru_unlink(e);
			lru_push_front(c, e);
			break;
		}
	}
	return e;
}

/* Returns a referenced entry or NULL. Release with cache_put. */
struct cchunk *fs_cache_get(struct chunk_cache *c, const uint8_t d[32])
{
	struct cchunk *e;

	pthread_mutex_lock(&c->mu);
	e = lookup(c, d);
	pthread_mutex_unlock(&c->mu);
	return e;
}

struct cchunk *fs_cache_get_or_load(struct chunk_cache *c, const uint8_t d[32],
				    struct cache_load *load)
{
	struct cchunk *e;
	struct cache_load *l;

	pthread_mutex_lock(&c->mu);
	for (;;) {
		e = lookup(c, d);
		if (e)
			break;
		for (l = c->loads; l && memcmp(l->digest, d, 32) != 0; l = l->next)
			;
		if (!l) {
			memcpy(load->digest, d, 32);
			load->next = c->loads;
			c->loads = load;
			break;
		}
		/* bounded by the loader's store read, which does not wait for anything */
		pthread_cond_wait(&c->load_cv, &c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return e;
}

void fs_cache_load_done(struct chunk_cache *c, struct cache_load *load)
{
	pthread_mutex_lock(&c->mu);
	for (struct cache_load **pp = &c->loads; *pp; pp = &(*pp)->next) {
		if (*pp == load) {
			*pp = load->next;
			break;
		}
	}
	pthread_cond_broadcast(&c->load_cv);
	pthread_mutex_unlock(&c->mu);
}

/* Inserts n (referenced once for the caller) unless an equal entry exists, which is returned
 * referenced instead (n is then freed). */
struct cchunk *fs_cache_insert(struct chunk_cache *c, struct cchunk *n)
{
	struct cchunk *e, *gone;
	size_t b = bucket_of(c, n->digest);

	pthread_mutex_lock(&c->mu);
	for (e = c->buckets[b]; e; e = e->hnext) {
		if (memcmp(e->digest, n->digest, 32) == 0) {
			e->refs++;
			pthread_mutex_unlock(&c->mu);
			free(n);
			return e;
		}
	}
	n->refs = 1;
	n->hnext = c->buckets[b];
	c->buckets[b] = n;
	lru_push_front(c, n);
	c->bytes += n->len;
	gone = cache_trim(c);
	pthread_mutex_unlock(&c->mu);
	free_trimmed(gone);
	return n;
}

void fs_cache_put(struct chunk_cache *c, struct cchunk *e)
{
	struct cchunk *gone = NULL;

	pthread_mutex_lock(&c->mu);
	assert(e->refs > 0);
	e->refs--;
	if (c->bytes > c->cap)
		gone = cache_trim(c);
	pthread_mutex_unlock(&c->mu);
	free_trimmed(gone);
}

void fs_cache_destroy(struct chunk_cache *c)
{
	struct cchunk *e = c->lru.next;

	while (c->buckets && e != &c->lru) {
		struct cchunk *next = e->next;

		free(e);
		e = next;
	}
	free(c->buckets);
	pthread_cond_destroy(&c->load_cv);
	pthread_mutex_destroy(&c->mu);
}

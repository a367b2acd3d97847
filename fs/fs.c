/* SPDX-License-Identifier: Apache-2.0 */
/* FUSE low-level operations serving MNT/layers/sha256:<hex>/ from layer indexes and store chunks. */
#include "fs.h"
#include "engine.h"
#include "stream.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <zstd.h>

#include "fetch/ref.h"
#include "fetch/registry.h"
#include "index/layer.h"
#include "index/zran.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/thread.h"

/*
 * Inode numbers: 1 is the mount root, 2 is layers/. A layer entry is (seq << 32) | index-inode,
 * where seq is the store's stable number for the layer (>= 1), so inode numbers are derivable from
 * the store alone and stay the same for the mount's life (and across daemon restarts).
 */
#define INO_ROOT FUSE_ROOT_ID
#define INO_LAYERS 2
#define LAYERS_NAME "layers"

#define CONTENT_TIMEOUT 86400.0 /* layer content is immutable */
#define MAX_DECODE (16u << 20)   /* decode at most this much of a span beyond what a read needs */
#define MAX_BEHIND (4u << 20)    /* ... and this much before it */
#define READAHEAD_CHUNKS 8       /* a miss fetches this many chunks of the file at most, in one span */
#define READAHEAD_BYTES (8u << 20) /* ... and no more than this many bytes of them */
#define BACK_OVERLAP (64u << 10)  /* spans sharing more than this make a miss take the chunk before */
#define VIEW_TIMEOUT 1.0        /* synthetic directories change as images are pulled */

/* ---------------------------------------------------------------- decoded chunk cache */

struct cchunk {
	uint8_t digest[32];
	size_t len;
	int refs;                    /* protected by cache.mu */
	struct cchunk *hnext;        /* hash chain; protected by cache.mu */
	struct cchunk *prev, *next;  /* LRU list, most recent first; protected by cache.mu */
	uint8_t data[];
};

struct chunk_cache {
	pthread_mutex_t mu;
	struct cchunk **buckets;
	size_t nbuckets;
	struct cchunk lru; /* sentinel */
	uint64_t bytes, cap;
};

static size_t bucket_of(const struct chunk_cache *c, const uint8_t d[32])
{
	uint64_t h;

	memcpy(&h, d, sizeof(h));
	return (size_t)(h % c->nbuckets);
}

static int cache_init(struct chunk_cache *c, uint64_t cap)
{
	pthread_mutex_init(&c->mu, NULL);
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

/* Evicts unreferenced entries from the cold end while over capacity. Caller holds mu. */
static void cache_trim(struct chunk_cache *c)
{
	struct cchunk *e = c->lru.prev;

	while (c->bytes > c->cap && e != &c->lru) {
		struct cchunk *prev = e->prev;

		if (e->refs == 0) {
			lru_unlink(e);
			hash_remove(c, e);
			c->bytes -= e->len;
			free(e);
		}
		e = prev;
	}
}

/* Returns a referenced entry or NULL. Release with cache_put. */
static struct cchunk *cache_get(struct chunk_cache *c, const uint8_t d[32])
{
	struct cchunk *e;

	pthread_mutex_lock(&c->mu);
	for (e = c->buckets[bucket_of(c, d)]; e; e = e->hnext) {
		if (memcmp(e->digest, d, 32) == 0) {
			e->refs++;
			lru_unlink(e);
			lru_push_front(c, e);
			break;
		}
	}
	pthread_mutex_unlock(&c->mu);
	return e;
}

/* Inserts n (referenced once for the caller) unless an equal entry exists, which is returned
 * referenced instead (n is then freed). */
static struct cchunk *cache_insert(struct chunk_cache *c, struct cchunk *n)
{
	struct cchunk *e;
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
	cache_trim(c);
	pthread_mutex_unlock(&c->mu);
	return n;
}

static void cache_put(struct chunk_cache *c, struct cchunk *e)
{
	pthread_mutex_lock(&c->mu);
	assert(e->refs > 0);
	e->refs--;
	if (c->bytes > c->cap)
		cache_trim(c);
	pthread_mutex_unlock(&c->mu);
}

static void cache_destroy(struct chunk_cache *c)
{
	struct cchunk *e = c->lru.next;

	while (c->buckets && e != &c->lru) {
		struct cchunk *next = e->next;

		free(e);
		e = next;
	}
	free(c->buckets);
	pthread_mutex_destroy(&c->mu);
}

/* ---------------------------------------------------------------- layers */

/*
 * Decoded layer indexes are a cache: a layer is loaded (decoded from the store) on demand and, once
 * the decoded indexes pass the cap (fs_opts.index_cache_bytes), the least recently used layers
 * that no request is using are unloaded. Its inode numbers stay valid: they carry the layer's
 * store seq, from which layer_of() loads it again.
 *
 * Every struct fs_layer * is a reference: layer_get_seq(), layer_load(), layer_load_wait() and
 * layer_of() return one, and its user gives it back with layer_put() when done (a FUSE handler
 * before or right after it replies; nothing keeps one past its request). References are taken
 * only under layers_lock (read side) and a layer is unloaded only under the write side with no
 * reference on it, so a referenced layer is never freed; layer_put() is a lock-free atomic
 * decrement that trims the cache only while it is over its cap. Open files do not pin their
 * layer: a read of an unloaded layer loads it again.
 */
struct fs_layer {
	struct index_layer *idx;
	uint32_t seq;
	char digest[STORE_DIGEST_LEN];
	struct fetch_ref *src;             /* where missing bytes come from; NULL: nowhere */
	char windows[STORE_DIGEST_LEN];    /* index artifact windows blob, or "" */
	int warned;                        /* a fetch failure was logged (log once per layer) */
	uint64_t touched;                  /* last access second passed to the store (atomic) */
	int refs;                          /* references (atomic; taken under layers_lock) */
	uint64_t used;                     /* fs.layer_tick at the last reference (atomic) */
	size_t bytes;                      /* memory held: the decoded index and this struct */
	struct fs_layer *gone;             /* unloaded, to be freed; layer_trim()'s own list */
};

/* The decoded-index cache of the process's fs (one per process), for fs_index_stats_get. */
static struct fs_index_stats index_stats;

/* An inode open on the mount, and how many times. */
struct open_ino {
	fuse_ino_t ino;
	unsigned count;
};

/* A span being fetched; readers that need the same span wait for it instead of fetching again. */
struct inflight {
	uint32_t seq;
	uint64_t cstart, cend;
	int done, rc;  /* protected by fs.inflight_mu */
	int refs;      /* protected by fs.inflight_mu */
	struct inflight *next;
};

/* The kernel's FUSE_INIT request as saved for a handover: the header and fuse_init_in (up to 64
 * bytes in 7.36+); more is not expected. */
#define INIT_MAX 256
#define FUSE_OPCODE_INIT 26

/* What the FUSE workers read through (see io_read). */
struct fs_io {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_key_t holding;   /* a worker's: it returned a request and has not asked for the next */
	int key_ok;
	int wake;                /* eventfd, readable while readers must not poll /dev/fuse */
	int paused;              /* no new reads; protected by mu */
	int closing;             /* handed over: readers end the loop; protected by mu */
	int handed_over;         /* protected by mu */
	int busy;                /* requests read and not yet finished; protected by mu */
	uint8_t init[INIT_MAX];  /* the kernel's FUSE_INIT; protected by mu */
	size_t init_len;         /* protected by mu */
	int replay;              /* adopted: the next read returns init; protected by mu */
	int init_wait;           /* a replayed INIT is being processed; protected by mu */
	uint64_t init_unique;
};

/*
 * The read engine: the layer cache, the decoded-chunk cache, the chunk writer, the spans being
 * fetched and the background completion of one store. A mount embeds one (struct fs); a pin
 * without a mount makes its own (fs_engine_create).
 */
struct fs_engine {
	struct store *store;
	struct fetch_client *fetch;
	pthread_rwlock_t layers_lock;
	struct fs_layer **layers; /* loaded layers, indexed by seq; protected by layers_lock */
	size_t layers_cap;        /* protected by layers_lock */
	uint64_t layers_bytes;    /* fs_layer.bytes of the loaded layers; written under layers_lock
				     (write side), read atomically */
	uint64_t layers_max;      /* the cap on layers_bytes */
	uint64_t layer_tick;      /* use clock for the LRU choice (atomic) */
	int64_t layer_trimmed;    /* second of the last malloc_trim after unloads (atomic) */
	struct chunk_cache cache;
	pthread_mutex_t inflight_mu;
	pthread_cond_t inflight_cv;
	struct inflight *inflight; /* protected by inflight_mu */
	int foreground;            /* reader fetches under way; protected by inflight_mu */
	pthread_t bg_thread;
	int bg_started;
	atomic_int bg_stop;
	uint64_t bg_limit;         /* store size background completion stays under; 0 = none (atomic) */
	pthread_mutex_t w_mu;      /* the chunk writer's queue */
	pthread_cond_t w_cv, w_idle;
	struct wchunk *w_head, *w_tail; /* verified chunks to store, oldest first; protected by w_mu */
	uint64_t w_bytes;          /* protected by w_mu */
	int w_stop;                /* protected by w_mu */
	int w_started;
	pthread_t w_thread;
	int store_full;            /* chunk writes fail for lack of space (atomic) */
};

struct fs {
	struct fs_engine eng;
	struct fuse_session *se;
	char *mountpoint;
	int mounted;
	int signals_set;
	unsigned max_threads;
	struct timespec start;
	int bg_wanted;
	struct fs_streamer *streamer; /* streams pending layers; NULL without fetch */
	int read_timeout_ms;
	pthread_mutex_t dh_mu;
	struct dir_handle *dh;     /* handles of layers/; protected by dh_mu */
	uint64_t dh_next;          /* the last handle number given (atomic) */
	struct fs_io io;
	int adopted;               /* serves a mount another process made (fs_adopt) */
	char *source;              /* mount source, for a handover */
	pthread_mutex_t open_mu;   /* held by op_open/op_release briefly, by an eviction batch */
	struct open_ino *opens;    /* files open on the mount; protected by open_mu */
	size_t nopens, capopens;   /* protected by open_mu */
};

static void layer_touch(struct fs_engine *eng, struct fs_layer *l);
static void store_full(struct fs_engine *eng, int full);
static int chunk_local(struct fs_engine *eng, const uint8_t digest[32]);
static int open_count(struct fs *f, fuse_ino_t ino, int delta);
static int engine_init(struct fs_engine *eng, struct store *store, struct fetch_client *fc,
		       uint64_t chunk_cache_bytes, uint64_t index_cache_bytes);
static void engine_fini(struct fs_engine *eng);

static void layer_destroy(struct fs_layer *l)
{
	index_layer_free(l->idx);
	fetch_ref_free(l->src);
	free(l);
}

/* Takes a reference on l. Caller holds layers_lock (either side). */
static struct fs_layer *layer_ref_locked(struct fs_engine *eng, struct fs_layer *l)
{
	__atomic_add_fetch(&l->refs, 1, __ATOMIC_ACQUIRE);
	__atomic_store_n(&l->used, __atomic_add_fetch(&eng->layer_tick, 1, __ATOMIC_RELAXED),
			 __ATOMIC_RELAXED);
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
			if (l && __atomic_load_n(&l->refs, __ATOMIC_SEQ_CST) == 0 &&
			    (!victim || l->used < victim->used))
				victim = l;
		}
		if (!victim)
			break;
		eng->layers[victim->seq] = NULL;
		__atomic_store_n(&eng->layers_bytes, eng->layers_bytes - victim->bytes, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&index_stats.bytes, victim->bytes, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&index_stats.layers, 1, __ATOMIC_RELAXED);
		victim->gone = gone;
		gone = victim;
		n++;
	}
	pthread_rwlock_unlock(&eng->layers_lock);
	if (n)
		__atomic_add_fetch(&index_stats.unloads, n, __ATOMIC_RELAXED);
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

		if (__atomic_exchange_n(&eng->layer_trimmed, now, __ATOMIC_RELAXED) != now)
			malloc_trim(0);
	}
}

/* Gives back a reference from layer_get_seq/layer_load/layer_of (NULL ok). l may be unloaded
 * from then on. */
static void layer_put(struct fs_engine *eng, struct fs_layer *l)
{
	if (!l)
		return;
	assert(__atomic_load_n(&l->refs, __ATOMIC_RELAXED) > 0);
	/* (sequentially consistent with layer_load's update: one of the two trims) */
	if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_SEQ_CST) == 0 &&
	    __atomic_load_n(&eng->layers_bytes, __ATOMIC_SEQ_CST) > eng->layers_max)
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
 * referenced: give it back with layer_put(). */
static int layer_load(struct fs_engine *eng, const char *digest, struct fs_layer **out)
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
			*out = l;
			return 0;
		}
		layer_put(eng, l);
		strata_err_clear();
	}
	/* Only the record's description first (not its index): is it loaded under its seq? */
	rc = store_layer_get(eng->store, digest, &info, NULL, NULL);
	if (rc < 0)
		return rc;
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
	__atomic_store_n(&eng->layers_bytes, eng->layers_bytes + l->bytes, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&index_stats.bytes, l->bytes, __ATOMIC_RELAXED);
	__atomic_add_fetch(&index_stats.layers, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&index_stats.loads, 1, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&eng->layers_lock);
	if (__atomic_load_n(&eng->layers_bytes, __ATOMIC_SEQ_CST) > eng->layers_max)
		layer_trim(eng); /* never this one: it is referenced */
	return 0;
}

/* layer_load(), waiting for a pending layer (recorded by a pull, its blob streaming) to be
 * streamed, verified and indexed: bounded while the stream makes progress. */
static int layer_load_wait(struct fs *f, const char *digest, struct fs_layer **out)
{
	int rc = layer_load(&f->eng, digest, out);

	if (rc == -ENOENT && f->streamer) {
		rc = fs_streamer_wait(f->streamer, digest);
		if (rc == 0)
			rc = layer_load(&f->eng, digest, out);
	}
	return rc;
}

/* Finds the layer for an inode number, loading it by seq when it is not loaded. On success *out is
 * referenced (layer_put) and *node is the inode's number in the layer's index. */
static int layer_of(struct fs_engine *eng, fuse_ino_t ino, struct fs_layer **out, uint32_t *node)
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
		rc = layer_load(eng, digest, &l);
		if (rc < 0)
			return rc;
	}
	/* (a layer removed and stored again has a new seq: the old numbers are stale) */
	if (l->seq != seq || (uint32_t)ino >= index_layer_ninodes(l->idx)) {
		layer_put(eng, l);
		return -ESTALE;
	}
	*out = l;
	*node = (uint32_t)ino;
	return 0;
}

static fuse_ino_t layer_ino(const struct fs_layer *l, uint32_t node)
{
	return ((fuse_ino_t)l->seq << 32) | node;
}

/* ---------------------------------------------------------------- attributes */

static void view_stat(struct fs *f, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
	st->st_blksize = 4096;
	st->st_mtim = f->start;
	st->st_ctim = f->start;
	st->st_atim = f->start;
}

static void node_stat(const struct fs_layer *l, uint32_t node, struct stat *st)
{
	const struct index_inode *in = index_layer_inode(l->idx, node);

	memset(st, 0, sizeof(*st));
	st->st_ino = layer_ino(l, node);
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_size = (off_t)in->size;
	st->st_rdev = in->rdev;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((in->size + 511) / 512);
	st->st_mtim.tv_sec = in->mtime_sec;
	st->st_mtim.tv_nsec = in->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

/* Fills st for any inode. Returns 0 or negative errno. */
static int any_stat(struct fs *f, fuse_ino_t ino, struct stat *st, double *timeout)
{
	struct fs_layer *l;
	uint32_t node;
	int rc;

	if (ino == INO_ROOT || ino == INO_LAYERS) {
		view_stat(f, ino, st);
		if (ino == INO_ROOT)
			st->st_nlink = 3;
		*timeout = VIEW_TIMEOUT;
		return 0;
	}
	rc = layer_of(&f->eng, ino, &l, &node);
	if (rc < 0)
		return rc;
	node_stat(l, node, st);
	layer_put(&f->eng, l);
	*timeout = CONTENT_TIMEOUT;
	return 0;
}

/* ---------------------------------------------------------------- lookup, getattr, readlink */

static int do_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct fs_layer *l = NULL;
	uint32_t node;
	int64_t child;
	int rc;

	memset(e, 0, sizeof(*e));
	if (parent == INO_ROOT) {
		if (strcmp(name, LAYERS_NAME) != 0)
			return -ENOENT;
		e->ino = INO_LAYERS;
		rc = any_stat(f, e->ino, &e->attr, &e->attr_timeout);
		e->entry_timeout = e->attr_timeout;
		return rc;
	}
	if (parent == INO_LAYERS) {
		if (strncmp(name, "sha256:", 7) != 0 || strlen(name) != 71)
			return -ENOENT;
		rc = layer_load_wait(f, name, &l);
		if (rc < 0)
			return rc == -ENOENT ? -ENOENT : rc;
		child = 0;
	} else {
		rc = layer_of(&f->eng, parent, &l, &node);
		if (rc < 0)
			return rc;
		child = index_layer_lookup(l->idx, node, name, strlen(name));
		if (child < 0) {
			layer_put(&f->eng, l);
			return (int)child;
		}
	}
	/* stat through the reference held: the layer is not loaded twice */
	e->ino = layer_ino(l, (uint32_t)child);
	node_stat(l, (uint32_t)child, &e->attr);
	e->attr_timeout = CONTENT_TIMEOUT;
	e->entry_timeout = e->attr_timeout;
	layer_put(&f->eng, l);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *f = fuse_req_userdata(req);
	struct fuse_entry_param e;
	int rc = do_lookup(f, parent, name, &e);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct stat st;
	double timeout;
	int rc = any_stat(f, ino, &st, &timeout);

	(void)fi;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *f = fuse_req_userdata(req);
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node;
	char *target;
	int link;
	int rc = layer_of(&f->eng, ino, &l, &node);

	if (rc < 0) {
		fuse_reply_err(req, ino <= INO_LAYERS ? EINVAL : -rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	link = S_ISLNK(in->mode);
	target = link ? strndup(index_layer_str(l->idx, in->first), in->size) : NULL;
	layer_put(&f->eng, l); /* in is gone from here on */
	if (!link) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!target) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fuse_reply_readlink(req, target);
	free(target);
}

/* ---------------------------------------------------------------- directories */

/* The digests of the store's layers at one moment: what opendir of layers/ lists, and what the
 * background completion walks. */
struct digest_list {
	size_t n;
	char (*names)[STORE_DIGEST_LEN];
};

static int collect_layer_cb(void *ctx, const struct store_layer *sl)
{
	struct digest_list *d = ctx;
	char(*nn)[STORE_DIGEST_LEN] = realloc(d->names, (d->n + 1) * sizeof(*d->names));

	if (!nn)
		return -ENOMEM;
	d->names = nn;
	snprintf(d->names[d->n++], STORE_DIGEST_LEN, "%s", sl->digest);
	return 0;
}

/* collect_layer_cb for a layer not in the list yet. */
static int collect_new_layer_cb(void *ctx, const struct store_layer *sl)
{
	struct digest_list *d = ctx;

	for (size_t i = 0; i < d->n; i++) {
		if (strcmp(d->names[i], sl->digest) == 0)
			return 0;
	}
	return collect_layer_cb(ctx, sl);
}

/*
 * Handles of layers/ name a snapshot of the store's layer list, kept in a table here: fi->fh is a
 * number, never a pointer, so a handle issued by a process that handed the mount over to this one
 * is only a number we do not know. Such a handle gets a fresh snapshot on its first readdir (the
 * list is in the store's order, so offsets keep their meaning) and is forgotten on releasedir.
 */
struct dir_handle {
	uint64_t fh;
	struct digest_list list;
	struct dir_handle *next;
};

/* Returns the handle fh of layers/, creating it (a fresh snapshot) when create is set and this
 * process does not know it. NULL on error (strata_err set) or when absent. The kernel does not
 * release a handle while a readdir on it runs, so the result stays valid for the request. */
static struct dir_handle *dh_get(struct fs *f, uint64_t fh, int create, int *err)
{
	struct dir_handle *h;
	int rc;

	*err = 0;
	pthread_mutex_lock(&f->dh_mu);
	for (h = f->dh; h; h = h->next) {
		if (h->fh == fh)
			break;
	}
	pthread_mutex_unlock(&f->dh_mu);
	if (h || !create)
		return h;
	h = calloc(1, sizeof(*h));
	if (!h) {
		*err = -ENOMEM;
		return NULL;
	}
	h->fh = fh;
	/* Pending layers too (their entries wait until they have streamed), listed first: a layer
	 * that finishes in between (its record and the end of its pending record are one write) is
	 * then in both lists, never in neither. */
	rc = f->streamer ? store_pending_list(f->eng.store, collect_layer_cb, &h->list) : 0;
	if (rc == 0)
		rc = store_layer_list(f->eng.store, collect_new_layer_cb, &h->list);
	if (rc < 0) {
		free(h->list.names);
		free(h);
		*err = rc;
		return NULL;
	}
	pthread_mutex_lock(&f->dh_mu);
	h->next = f->dh;
	f->dh = h;
	pthread_mutex_unlock(&f->dh_mu);
	return h;
}

static void dh_drop(struct fs *f, uint64_t fh)
{
	struct dir_handle *h = NULL;

	pthread_mutex_lock(&f->dh_mu);
	for (struct dir_handle **pp = &f->dh; *pp; pp = &(*pp)->next) {
		if ((*pp)->fh == fh) {
			h = *pp;
			*pp = h->next;
			break;
		}
	}
	pthread_mutex_unlock(&f->dh_mu);
	if (h) {
		free(h->list.names);
		free(h);
	}
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct stat st;
	double t;
	int rc;

	if (ino != INO_ROOT && ino != INO_LAYERS) {
		rc = any_stat(f, ino, &st, &t);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		if (!S_ISDIR(st.st_mode)) {
			fuse_reply_err(req, ENOTDIR);
			return;
		}
		fi->fh = 0;
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
		fuse_reply_open(req, fi);
		return;
	}
	fi->fh = 0;
	if (ino == INO_LAYERS) {
		/* Numbers from a random base: they do not repeat those of the process before us. */
		fi->fh = __atomic_add_fetch(&f->dh_next, 1, __ATOMIC_RELAXED);
		if (!dh_get(f, fi->fh, 1, &rc)) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	fuse_reply_open(req, fi);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	if (ino == INO_LAYERS)
		dh_drop(f, fi->fh); /* unknown (an earlier process's, never read here): nothing */
	fuse_reply_err(req, 0);
}

/*
 * The idx-th entry of directory ino (0 ".", 1 "..", then children). Returns 1 and fills name/child,
 * 0 past the end, negative errno on error. name must hold NAME_MAX + 1 bytes. dl is ino's layer
 * (referenced by the caller) for a directory inside a layer. For an entry of layers/, *cl is set
 * to the child's layer, referenced (layer_put); otherwise it is left NULL.
 */
static int dir_entry(struct fs *f, fuse_ino_t ino, struct digest_list *d, struct fs_layer *dl,
		     uint32_t node, off_t idx, char *name, fuse_ino_t *child, struct fs_layer **cl)
{
	int rc;

	*cl = NULL;
	if (idx < 2) {
		strcpy(name, idx == 0 ? "." : "..");
		*child = ino; /* the kernel does not use the ".." inode number */
		return 1;
	}
	idx -= 2;
	if (ino == INO_ROOT) {
		if (idx > 0)
			return 0;
		strcpy(name, LAYERS_NAME);
		*child = INO_LAYERS;
		return 1;
	}
	if (ino == INO_LAYERS) {
		if (!d || (size_t)idx >= d->n)
			return 0;
		strcpy(name, d->names[idx]);
		rc = layer_load_wait(f, name, cl);
		if (rc < 0)
			return rc;
		*child = layer_ino(*cl, 0);
		return 1;
	}
	{
		const struct index_inode *in = index_layer_inode(dl->idx, node);
		const struct index_dirent *de;

		if ((uint64_t)idx >= in->count)
			return 0;
		de = index_layer_dirent(dl->idx, in->first + (uint32_t)idx);
		if (de->name_len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, index_layer_str(dl->idx, de->name_off), de->name_len);
		name[de->name_len] = '\0';
		*child = layer_ino(dl, de->ino);
	}
	return 1;
}

/* Attributes of a child listed by dir_entry: from the layer it was found through (cl for an entry
 * of layers/, else dl, the directory's), without loading anything. */
static void entry_stat(struct fs *f, fuse_ino_t child, struct fs_layer *dl, struct fs_layer *cl,
		       struct stat *st, double *timeout)
{
	if (child <= INO_LAYERS) {
		any_stat(f, child, st, timeout); /* cannot fail */
		return;
	}
	node_stat(cl ? cl : dl, (uint32_t)child, st);
	*timeout = CONTENT_TIMEOUT;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, int plus)
{
	struct fs *f = fuse_req_userdata(req);
	struct digest_list *d = NULL;
	struct fs_layer *dl = NULL;
	uint32_t node = 0;
	char *buf;
	char name[NAME_MAX + 1];
	size_t used = 0;
	int rc = 0;

	if (ino == INO_LAYERS) {
		struct dir_handle *h = dh_get(f, fi->fh, 1, &rc);

		if (!h) {
			fuse_reply_err(req, -rc);
			return;
		}
		d = &h->list;
	} else if (ino != INO_ROOT) {
		/* one reference for the whole request: every entry is in this layer */
		rc = layer_of(&f->eng, ino, &dl, &node);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	buf = malloc(size);
	if (!buf) {
		layer_put(&f->eng, dl);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (off_t idx = off;; idx++) {
		struct fs_layer *cl;
		fuse_ino_t child;
		size_t need;

		rc = dir_entry(f, ino, d, dl, node, idx, name, &child, &cl);
		if (rc <= 0)
			break;
		if (plus) {
			struct fuse_entry_param e;

			memset(&e, 0, sizeof(e));
			if (idx < 2) {
				e.attr.st_ino = child;
				e.attr.st_mode = S_IFDIR;
			} else {
				e.ino = child;
				entry_stat(f, child, dl, cl, &e.attr, &e.attr_timeout);
				e.entry_timeout = e.attr_timeout;
			}
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, idx + 1);
		} else {
			struct stat st;

			memset(&st, 0, sizeof(st));
			st.st_ino = child;
			if (idx < 2 || child <= INO_LAYERS || (child & 0xffffffffu) == 0) {
				st.st_mode = S_IFDIR;
			} else {
				double t;

				entry_stat(f, child, dl, cl, &st, &t);
			}
			need = fuse_add_direntry(req, buf + used, size - used, name, &st, idx + 1);
		}
		layer_put(&f->eng, cl);
		if (need > size - used) {
			rc = 0;
			break;
		}
		used += need;
	}
	layer_put(&f->eng, dl);
	if (rc < 0 && used == 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}

/* ---------------------------------------------------------------- files */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct fs_layer *l;
	uint32_t node;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (ino <= INO_LAYERS) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	rc = layer_of(&f->eng, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (S_ISDIR(index_layer_inode(l->idx, node)->mode)) {
		layer_put(&f->eng, l);
		fuse_reply_err(req, EISDIR);
		return;
	}
	layer_touch(&f->eng, l);
	layer_put(&f->eng, l);
	rc = open_count(f, ino, 1);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) == -ENOENT) /* interrupted: no release will come */
		open_count(f, ino, -1);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	(void)fi;
	open_count(f, ino, -1);
	fuse_reply_err(req, 0);
}

/* ---------------------------------------------------------------- fetching missing chunks */

/* get_window()'s verifier: the window of checkpoint cp, decompressed into window. */
struct window_check {
	const struct index_checkpoint *cp;
	uint8_t *window;
	const char *hex;
};

/* Returns 0 when raw (the window's bytes in the artifact) decompresses to the window's digest,
 * else -EBADMSG with strata_err set (fetch_blob_range_verify then tries the next host). */
static int window_verify(void *ctx, const void *raw, size_t len)
{
	const struct window_check *wc = ctx;
	uint8_t digest[32];

	if (len == wc->cp->wlen) {
		memcpy(wc->window, raw, len);
	} else {
		size_t d = ZSTD_decompress(wc->window, wc->cp->wlen, raw, len);

		if (ZSTD_isError(d) || d != wc->cp->wlen)
			return strata_err(EBADMSG, "window %s does not decompress", wc->hex);
	}
	util_sha256(wc->window, wc->cp->wlen, digest);
	if (memcmp(digest, wc->cp->window, 32) != 0)
		return strata_err(EBADMSG, "window %s digest mismatch", wc->hex);
	return 0;
}

/* Gets the window of checkpoint cp: from the store, else from the layer's index artifact. */
static int get_window(struct fs_engine *eng, struct fs_layer *l, const struct index_checkpoint *cp,
		      uint8_t *window)
{
	char hex[UTIL_DIGEST_STR_LEN];
	struct window_check wc = { cp, window, hex };
	uint8_t *raw;
	ssize_t n = store_chunk_get(eng->store, cp->window, window, INDEX_ZRAN_WINDOW);
	int rc;

	if (n >= 0)
		return n == cp->wlen ? 0 : strata_err(EBADMSG, "checkpoint window has the wrong size");
	if (n != -ENOENT)
		return (int)n;
	util_digest_format(cp->window, hex);
	if (!l->windows[0] || cp->woff == UINT64_MAX)
		return strata_err(EIO, "checkpoint window %s is missing", hex);
	raw = malloc(cp->wclen ? cp->wclen : 1);
	if (!raw)
		return -ENOMEM;
	rc = fetch_blob_range_verify(eng->fetch, l->src, l->windows, cp->woff, cp->wclen, raw,
				     window_verify, &wc);
	free(raw);
	if (rc < 0)
		return rc;
	rc = store_chunk_put(eng->store, cp->window, window, cp->wlen);
	if (rc == -ENOSPC) { /* the verified window is in the caller's buffer: serve anyway */
		store_full(eng, 1);
		strata_err_clear();
		return 0;
	}
	return rc < 0 ? rc : 0;
}

/* The tar range a miss on chunk ci of file in fetches: the chunk and the next ones of the same
 * file that are not stored yet, up to READAHEAD_CHUNKS, so that a file read in order costs one
 * request per few chunks instead of one per chunk (consecutive chunk spans would share a
 * checkpoint interval each). Called with inflight_mu held; does store lookups only. */
static void miss_range(struct fs_engine *eng, const struct index_layer *idx, const struct index_inode *in,
		       uint32_t ci, uint64_t *uoff, uint64_t *uend)
{
	const struct index_chunk *a = index_layer_chunk(idx, in->first + ci);
	uint32_t last = ci;

	/* Take the previous chunk too when it is missing and its span overlaps this one's much (a
	 * gzip checkpoint interval holding both): concurrent readers of a file arrive in any order.
	 * Not when each chunk has its own gzip member (eStargz): that would only fetch more. */
	if (ci > 0) {
		const struct index_chunk *p = index_layer_chunk(idx, in->first + ci - 1);
		struct index_span ps, cs;

		if (index_layer_span(idx, p->offset, p->offset + p->size, &ps) == 0 &&
		    index_layer_span(idx, a->offset, a->offset + a->size, &cs) == 0 &&
		    ps.cend > cs.cstart + BACK_OVERLAP && chunk_local(eng, p->digest) == 0)
			a = p;
	}
	/* extend over the following chunks that are not stored yet */
	while (last + 1 < in->count && last + 1 < ci + READAHEAD_CHUNKS &&
	       index_layer_chunk(idx, in->first + last + 1)->offset + index_layer_chunk_size(idx) - a->offset <=
		       READAHEAD_BYTES &&
	       chunk_local(eng, index_layer_chunk(idx, in->first + last + 1)->digest) == 0)
		last++;
	*uoff = a->offset;
	*uend = index_layer_chunk(idx, in->first + last)->offset +
		index_layer_chunk(idx, in->first + last)->size;
}

/* fetch_span()'s verifier: decodes a host's compressed bytes into plain and checks the chunks that
 * were asked for, so that a host sending bad bytes is followed by the next host. */
struct span_check {
	const struct fs_layer *l;
	const struct index_span *sp;
	const uint8_t *window;
	uint64_t uoff, need_end, dec_start;
	uint64_t dec_end_max; /* what to decode at most */
	uint64_t dec_end;     /* what was decoded: dec_end_max, or need_end for an eStargz tail */
	uint8_t *plain;
};

/* Returns 0 when comp decodes and every whole chunk inside [uoff, need_end) matches its digest,
 * -EBADMSG (strata_err set) when not, or another negative errno. */
static int span_verify(void *ctx, const void *comp, size_t clen)
{
	struct span_check *sc = ctx;
	const struct index_layer *idx = sc->l->idx;
	char hex[UTIL_DIGEST_STR_LEN];
	int rc;

	sc->dec_end = sc->dec_end_max;
	rc = index_layer_extract(idx, sc->sp, sc->window, comp, clen, sc->dec_start, sc->plain,
				 sc->dec_end - sc->dec_start);
	if (rc == -EPIPE && sc->dec_end > sc->need_end) {
		/* The span ends in data the index does not describe (eStargz member tails): keep what
		 * was asked for. */
		sc->dec_end = sc->need_end;
		rc = index_layer_extract(idx, sc->sp, sc->window, comp, clen, sc->dec_start, sc->plain,
					 sc->dec_end - sc->dec_start);
	}
	if (rc == -EPIPE)
		return strata_err(EBADMSG, "span of %s does not decode", sc->l->digest);
	if (rc < 0)
		return rc;
	for (uint32_t k = index_layer_chunk_rank(idx, sc->uoff); k < index_layer_nchunks(idx); k++) {
		const struct index_chunk *o = index_layer_chunk(idx, index_layer_chunk_by_offset(idx, k));
		uint8_t digest[32];

		if (o->offset + o->size > sc->need_end)
			break;
		if (o->offset < sc->uoff)
			continue;
		util_sha256(sc->plain + (o->offset - sc->dec_start), o->size, digest);
		if (memcmp(digest, o->digest, 32) != 0) {
			util_digest_format(o->digest, hex);
			return strata_err(EBADMSG, "chunk %s from %s does not match its digest", hex,
					  sc->l->digest);
		}
	}
	return 0;
}

/* Notes whether chunk writes fail for lack of space, logging each change once. */
static void store_full(struct fs_engine *eng, int full)
{
	if (__atomic_load_n(&eng->store_full, __ATOMIC_RELAXED) == full)
		return;
	if (__atomic_exchange_n(&eng->store_full, full, __ATOMIC_RELAXED) == full)
		return;
	if (full)
		strata_log(LOG_ERR, "store %s is full: serving without caching", store_dir(eng->store));
	else
		strata_log(LOG_NOTICE, "store %s has space again: caching fetched chunks",
			   store_dir(eng->store));
}

/* ---------------------------------------------------------------- chunk writer */

/*
 * A read stores the chunks a span yields through a queue that one writer thread drains: the zstd
 * compression and RocksDB write of every decoded chunk stay off the read's path. The queue is
 * bounded (WRITE_QUEUE_BYTES; past it chunks are stored on the read's thread) and searched by
 * lookups, so a queued chunk counts as local. fs_free drains it before the store closes.
 */
#define WRITE_QUEUE_BYTES (32u << 20)

struct wchunk {
	struct wchunk *next;
	uint8_t digest[32];
	size_t len;
	uint8_t data[];
};

/* Set on threads that must see their chunks stored when fetch_span returns (pin). */
static _Thread_local int tl_sync_store;

/* Queues a verified chunk for the writer. Returns 1 when queued, 0 when the caller must store it
 * (no writer, queue full, no memory). */
static int writer_queue(struct fs_engine *eng, const uint8_t digest[32], const uint8_t *data, size_t len)
{
	struct wchunk *w;

	if (!eng->w_started || tl_sync_store)
		return 0;
	pthread_mutex_lock(&eng->w_mu);
	if (eng->w_stop || eng->w_bytes + len > WRITE_QUEUE_BYTES) {
		pthread_mutex_unlock(&eng->w_mu);
		return 0;
	}
	pthread_mutex_unlock(&eng->w_mu);
	w = malloc(sizeof(*w) + len);
	if (!w)
		return 0;
	w->next = NULL;
	memcpy(w->digest, digest, 32);
	w->len = len;
	memcpy(w->data, data, len);
	pthread_mutex_lock(&eng->w_mu);
	if (eng->w_tail)
		eng->w_tail->next = w;
	else
		eng->w_head = w;
	eng->w_tail = w;
	eng->w_bytes += len;
	pthread_cond_signal(&eng->w_cv);
	pthread_mutex_unlock(&eng->w_mu);
	return 1;
}

/* Copies a queued chunk into buf. Returns its length, -ENOENT when not queued, -ENOBUFS. */
static ssize_t writer_get(struct fs_engine *eng, const uint8_t digest[32], void *buf, size_t cap)
{
	ssize_t n = -ENOENT;

	if (!eng->w_started)
		return n;
	pthread_mutex_lock(&eng->w_mu);
	for (struct wchunk *w = eng->w_head; w; w = w->next) {
		if (memcmp(w->digest, digest, 32) == 0) {
			n = w->len > cap ? -ENOBUFS : (ssize_t)w->len;
			if (n > 0)
				memcpy(buf, w->data, w->len);
			break;
		}
	}
	pthread_mutex_unlock(&eng->w_mu);
	return n;
}

static int writer_has(struct fs_engine *eng, const uint8_t digest[32])
{
	int found = 0;

	if (!eng->w_started)
		return 0;
	pthread_mutex_lock(&eng->w_mu);
	for (struct wchunk *w = eng->w_head; w && !found; w = w->next)
		found = memcmp(w->digest, digest, 32) == 0;
	pthread_mutex_unlock(&eng->w_mu);
	return found;
}

/* Waits until every queued chunk has been written (or failed). */
static void writer_drain(struct fs_engine *eng)
{
	if (!eng->w_started)
		return;
	pthread_mutex_lock(&eng->w_mu);
	while (eng->w_head)
		pthread_cond_wait(&eng->w_idle, &eng->w_mu);
	pthread_mutex_unlock(&eng->w_mu);
}

static void *writer_main(void *arg)
{
	struct fs_engine *eng = arg;
	int warned = 0;

	pthread_mutex_lock(&eng->w_mu);
	for (;;) {
		struct wchunk *w;
		int put;

		while (!eng->w_head && !eng->w_stop)
			pthread_cond_wait(&eng->w_cv, &eng->w_mu);
		if (!eng->w_head)
			break; /* stopping, and drained */
		w = eng->w_head; /* stays queued (found by lookups) until written */
		pthread_mutex_unlock(&eng->w_mu);
		put = store_chunk_put(eng->store, w->digest, w->data, w->len);
		if (put == -ENOSPC) {
			store_full(eng, 1);
		} else if (put < 0) {
			if (!warned++)
				strata_log(LOG_ERR, "store %s: writing fetched chunks: %s (they are "
					   "fetched again when read)", store_dir(eng->store),
					   strata_errmsg(put));
		} else {
			warned = 0;
			if (put > 0)
				store_full(eng, 0);
		}
		strata_err_clear();
		pthread_mutex_lock(&eng->w_mu);
		eng->w_head = w->next;
		if (!eng->w_head) {
			eng->w_tail = NULL;
			pthread_cond_broadcast(&eng->w_idle);
		}
		eng->w_bytes -= w->len;
		free(w);
	}
	pthread_mutex_unlock(&eng->w_mu);
	return NULL;
}

static void writer_start(struct fs_engine *eng)
{
	eng->w_started = util_thread_start(&eng->w_thread, writer_main, eng) == 0;
	if (!eng->w_started)
		strata_log(LOG_WARNING, "no chunk writer thread: reads store their chunks themselves");
}

/* Stops the writer after it wrote everything queued. */
static void writer_stop(struct fs_engine *eng)
{
	if (!eng->w_started)
		return;
	pthread_mutex_lock(&eng->w_mu);
	eng->w_stop = 1;
	pthread_cond_signal(&eng->w_cv);
	pthread_mutex_unlock(&eng->w_mu);
	pthread_join(eng->w_thread, NULL);
	eng->w_started = 0;
}

/* 1 when the chunk is in the store, after the writer wrote it if it was queued; 0 when not. */
static int stored_now(struct fs_engine *eng, const uint8_t digest[32])
{
	int rc = store_chunk_has(eng->store, digest);

	if (rc == 0 && writer_has(eng, digest)) {
		writer_drain(eng);
		rc = store_chunk_has(eng->store, digest);
	}
	return rc;
}

/* 1 when the chunk is stored or queued to be, 0 when not, negative errno. */
static int chunk_local(struct fs_engine *eng, const uint8_t digest[32])
{
	int rc = store_chunk_has(eng->store, digest);

	return rc == 0 && writer_has(eng, digest) ? 1 : rc;
}

/* Puts a verified chunk into the decoded-chunk cache (unreferenced: it may be trimmed). */
static void cache_verified(struct fs_engine *eng, const struct index_chunk *o, const uint8_t *data)
{
	struct cchunk *e = malloc(sizeof(*e) + o->size);

	if (!e)
		return;
	memcpy(e->digest, o->digest, 32);
	memcpy(e->data, data, o->size);
	e->len = o->size;
	cache_put(&eng->cache, cache_insert(&eng->cache, e));
}

/*
 * Fetches the span holding tar bytes [uoff, need_end) of layer l (which contain chunk c), decodes
 * it, verifies every whole chunk it yields against its digest, and stores those chunks. Only bytes
 * that matched a digest are stored.
 */
static int fetch_span(struct fs_engine *eng, struct fs_layer *l, const struct index_chunk *c, uint64_t uoff,
		      uint64_t need_end)
{
	struct index_span sp;
	struct span_check sc;
	uint8_t *comp = NULL, *plain = NULL, *window = NULL;
	uint64_t dec_start = uoff, dec_end;
	char hex[UTIL_DIGEST_STR_LEN];
	int rc, found_needed = 0;

	rc = index_layer_span(l->idx, uoff, need_end, &sp);
	if (rc < 0)
		return rc;
	/* Decode the span from its start, so the chunks before the wanted ones are stored too (reads
	 * come out of tar order: a program's imports, concurrent readers), but skip what lies more
	 * than MAX_BEHIND before them (a single zstd frame starts at the layer's first byte), and keep
	 * at most MAX_DECODE beyond what was asked for. */
	if (uoff - sp.ustart <= MAX_BEHIND)
		dec_start = sp.ustart;
	dec_end = sp.uend;
	if (dec_end - need_end > MAX_DECODE)
		dec_end = need_end + MAX_DECODE;
	comp = malloc(sp.cend - sp.cstart ? sp.cend - sp.cstart : 1);
	plain = malloc(dec_end - dec_start ? dec_end - dec_start : 1);
	if (!comp || !plain) {
		rc = -ENOMEM;
		goto out;
	}
	if (sp.cp != UINT32_MAX && index_layer_checkpoint(l->idx, sp.cp)->wlen) {
		window = malloc(INDEX_ZRAN_WINDOW);
		if (!window) {
			rc = -ENOMEM;
			goto out;
		}
		rc = get_window(eng, l, index_layer_checkpoint(l->idx, sp.cp), window);
		if (rc < 0)
			goto out;
	}
	sc = (struct span_check){ .l = l, .sp = &sp, .window = window, .uoff = uoff,
				  .need_end = need_end, .dec_start = dec_start, .dec_end_max = dec_end,
				  .plain = plain };
	/* decoded and the wanted chunks checked per host: bad bytes from a mirror go to the next */
	rc = fetch_blob_range_verify(eng->fetch, l->src, l->digest, sp.cstart, sp.cend - sp.cstart,
				     comp, span_verify, &sc);
	if (rc < 0)
		goto out;
	dec_end = sc.dec_end;
	/* Store every whole chunk of the decoded range whose bytes match its digest. The wanted
	 * chunks, [uoff, need_end), were checked by span_verify() on these very bytes. */
	for (uint32_t k = index_layer_chunk_rank(l->idx, dec_start);
	     k < index_layer_nchunks(l->idx); k++) {
		const struct index_chunk *o = index_layer_chunk(l->idx, index_layer_chunk_by_offset(l->idx, k));
		uint8_t digest[32];
		int put;

		if (o->offset + o->size > dec_end)
			break;
		if (o->offset < uoff || o->offset + o->size > need_end) {
			util_sha256(plain + (o->offset - dec_start), o->size, digest);
			if (memcmp(digest, o->digest, 32) != 0) {
				/* beside the read: not stored, fetched again if ever read */
				util_digest_format(o->digest, hex);
				strata_log(LOG_WARNING, "layer %s: chunk %s decoded beside a read does "
					   "not match its digest; not stored", l->digest, hex);
				continue;
			}
		}
		put = writer_queue(eng, o->digest, plain + (o->offset - dec_start), o->size) ? 0 :
		      store_chunk_put(eng->store, o->digest, plain + (o->offset - dec_start), o->size);
		if (put == -ENOSPC) {
			/* Serve the verified bytes without storing them. */
			store_full(eng, 1);
			strata_err_clear();
		} else if (put < 0) {
			rc = put;
			goto out;
		} else if (put > 0) {
			store_full(eng, 0); /* written: there is room again */
		}
		/* The read and its read-ahead get their chunks from the cache: no store read, no
		 * decompression and no second hash of bytes verified a moment ago. */
		if (o->offset >= uoff && o->offset + o->size <= need_end)
			cache_verified(eng, o, plain + (o->offset - dec_start));
		if (o == c)
			found_needed = 1;
	}
	if (!found_needed)
		rc = strata_err(EIO, "span of %s did not yield the chunk at offset %llu", l->digest,
				(unsigned long long)c->offset);
out:
	free(comp);
	free(plain);
	free(window);
	return rc;
}

/* Fetches the span for chunk ci of file ino unless another thread is fetching it already, then
 * waits for that fetch. */
/* Waits (inflight_mu held) until fetch in is done, bounded by the caller's read deadline.
 * Returns 0, or -ETIMEDOUT (strata_err set) when the read's time ran out first. */
static int wait_inflight(struct fs_engine *eng, struct inflight *in)
{
	while (!in->done) {
		int64_t left = fetch_read_remaining_ms();
		struct timespec until;

		if (left < 0) {
			pthread_cond_wait(&eng->inflight_cv, &eng->inflight_mu);
			continue;
		}
		if (left == 0)
			return strata_err(ETIMEDOUT, "read timeout while another read fetched the "
					  "same span");
		util_deadline_in(&until, (long)left);
		pthread_cond_timedwait(&eng->inflight_cv, &eng->inflight_mu, &until);
	}
	return 0;
}

static int fetch_shared(struct fs_engine *eng, struct fs_layer *l, const struct index_inode *ino,
			uint32_t ci)
{
	const struct index_chunk *c = index_layer_chunk(l->idx, ino->first + ci);
	struct index_span need, sp;
	struct inflight *in;
	uint64_t uoff, uend;
	int rc;

	/* Wait for fetches under way whose spans overlap this chunk's own span: they may bring it,
	 * and one that does not still leaves less to fetch. Bounded: each wait is for a fetch that
	 * started before this reader looked. */
	rc = index_layer_span(l->idx, c->offset, c->offset + c->size, &need);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&eng->inflight_mu);
	for (int round = 0; round < 8; round++) {
		for (in = eng->inflight; in; in = in->next) {
			if (in->seq == l->seq && in->cstart < need.cend && need.cstart < in->cend)
				break;
		}
		if (!in)
			break;
		in->refs++;
		rc = wait_inflight(eng, in);
		if (rc == 0)
			rc = in->rc;
		if (--in->refs == 0)
			free(in);
		pthread_mutex_unlock(&eng->inflight_mu);
		if (chunk_local(eng, c->digest) == 1)
			return 0;
		if (rc < 0)
			return rc; /* that fetch failed: do not retry at once on this reader's behalf */
		pthread_mutex_lock(&eng->inflight_mu);
	}
	/* Still holding the lock: no other reader can start an overlapping fetch before ours is
	 * registered. */
	miss_range(eng, l->idx, ino, ci, &uoff, &uend);
	rc = index_layer_span(l->idx, uoff, uend, &sp);
	if (rc < 0) {
		pthread_mutex_unlock(&eng->inflight_mu);
		return rc;
	}
	in = calloc(1, sizeof(*in));
	if (!in) {
		pthread_mutex_unlock(&eng->inflight_mu);
		return -ENOMEM;
	}
	in->seq = l->seq;
	in->cstart = sp.cstart;
	in->cend = sp.cend;
	in->refs = 1;
	in->next = eng->inflight;
	eng->inflight = in;
	pthread_mutex_unlock(&eng->inflight_mu);

	rc = fetch_span(eng, l, c, uoff, uend);

	pthread_mutex_lock(&eng->inflight_mu);
	for (struct inflight **pp = &eng->inflight; *pp; pp = &(*pp)->next) {
		if (*pp == in) {
			*pp = in->next;
			break;
		}
	}
	in->rc = rc;
	in->done = 1;
	pthread_cond_broadcast(&eng->inflight_cv);
	if (--in->refs == 0)
		free(in);
	pthread_mutex_unlock(&eng->inflight_mu);
	return rc;
}

/* ---------------------------------------------------------------- read counters */

/* Process-wide (one fs per process), lock-free: relaxed atomic adds from the FUSE threads. */
static struct fs_read_stats read_stats;

static unsigned latency_bucket(uint64_t us)
{
	unsigned e, b;

	if (us < 8)
		return (unsigned)us; /* buckets 0-7: exactly 0-7 us */
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

void fs_index_stats_get(struct fs_index_stats *out)
{
	out->bytes = __atomic_load_n(&index_stats.bytes, __ATOMIC_RELAXED);
	out->layers = __atomic_load_n(&index_stats.layers, __ATOMIC_RELAXED);
	out->cap = __atomic_load_n(&index_stats.cap, __ATOMIC_RELAXED);
	out->loads = __atomic_load_n(&index_stats.loads, __ATOMIC_RELAXED);
	out->unloads = __atomic_load_n(&index_stats.unloads, __ATOMIC_RELAXED);
}

void fs_read_stats_get(struct fs_read_stats *out)
{
	const uint64_t *src = (const uint64_t *)&read_stats;
	uint64_t *dst = (uint64_t *)out;

	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

static void count_read(uint64_t *counter)
{
	__atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Returns a referenced decoded chunk ci of file ino: cache, then store, then the registry. */
static int chunk_get(struct fs_engine *eng, struct fs_layer *l, const struct index_inode *ino, uint32_t ci,
		     struct cchunk **out)
{
	const struct index_chunk *c = index_layer_chunk(l->idx, ino->first + ci);
	struct cchunk *e = cache_get(&eng->cache, c->digest);
	char hex[UTIL_DIGEST_STR_LEN];
	ssize_t n;

	if (e) {
		count_read(&read_stats.cache_hits);
		*out = e;
		return 0;
	}
	e = malloc(sizeof(*e) + c->size);
	if (!e)
		return -ENOMEM;
	memcpy(e->digest, c->digest, 32);
	n = store_chunk_get(eng->store, c->digest, e->data, c->size);
	if (n == -ENOENT)
		n = writer_get(eng, c->digest, e->data, c->size); /* fetched, not written yet */
	if (n >= 0)
		count_read(&read_stats.store_hits);
	/* Twice at most: a full store hands fetched chunks over in the cache only, which may trim
	 * them before this reader looks. */
	for (int attempt = 0; attempt < 2 && n == -ENOENT && eng->fetch && l->src; attempt++) {
		uint64_t t0 = mono_us();
		struct cchunk *got;

		pthread_mutex_lock(&eng->inflight_mu);
		eng->foreground++;
		pthread_mutex_unlock(&eng->inflight_mu);
		n = fetch_shared(eng, l, ino, ci);
		pthread_mutex_lock(&eng->inflight_mu);
		eng->foreground--;
		pthread_mutex_unlock(&eng->inflight_mu);
		if (n == 0) {
			got = cache_get(&eng->cache, c->digest); /* put there by fetch_span */
			if (got) {
				count_read(&read_stats.fetched);
				count_read(&read_stats.fetch_us[latency_bucket(mono_us() - t0)]);
				free(e);
				*out = got;
				return 0;
			}
			n = store_chunk_get(eng->store, c->digest, e->data, c->size);
			if (n == -ENOENT)
				n = writer_get(eng, c->digest, e->data, c->size);
		}
		count_read(&read_stats.fetched);
		count_read(&read_stats.fetch_us[latency_bucket(mono_us() - t0)]);
		if (n != -ENOENT)
			continue;
		got = cache_get(&eng->cache, c->digest);
		if (got) {
			free(e);
			*out = got;
			return 0;
		}
	}
	if (n < 0)
		count_read(&read_stats.failed);
	if (n >= 0 && (size_t)n != c->size)
		n = strata_err(EBADMSG, "chunk has the wrong size");
	if (n < 0) {
		util_digest_format(c->digest, hex);
		if (!__atomic_exchange_n(&l->warned, 1, __ATOMIC_RELAXED))
			strata_log(LOG_ERR, "read: layer %s chunk %s: %s%s", l->digest, hex,
				   strata_errmsg((int)n),
				   l->src ? "" : " (the layer has no source to fetch from)");
		free(e);
		return n == -ENOMEM ? -ENOMEM : -EIO;
	}
	__atomic_store_n(&l->warned, 0, __ATOMIC_RELAXED);
	e->len = c->size;
	*out = cache_insert(&eng->cache, e);
	return 0;
}

/* ---------------------------------------------------------------- background completion */

/* Sleeps while readers are fetching: the background never competes with a waiting program. */
static void bg_yield(struct fs_engine *eng)
{
	for (;;) {
		int busy;

		pthread_mutex_lock(&eng->inflight_mu);
		busy = eng->foreground > 0;
		pthread_mutex_unlock(&eng->inflight_mu);
		if (!busy && __atomic_load_n(&eng->bg_limit, __ATOMIC_RELAXED)) {
			struct store_stats st;

			/* At the quota's low-water mark: fetch nothing that eviction would undo. */
			if (store_get_stats(eng->store, &st) == 0 &&
			    st.disk_bytes >= eng->bg_limit) {
				for (int t = 0; t < 20 && !atomic_load(&eng->bg_stop); t++)
					usleep(50 * 1000);
				continue;
			}
		}
		if (!busy || atomic_load(&eng->bg_stop))
			return;
		usleep(20 * 1000);
	}
}

/* Completes one layer: every missing chunk, in tar order, a span at a time. */
static int bg_layer(struct fs_engine *eng, struct fs_layer *l)
{
	uint32_t n = index_layer_ninodes(l->idx);
	int failed = 0;

	for (uint32_t i = 0; i < n && !atomic_load(&eng->bg_stop); i++) {
		const struct index_inode *in = index_layer_inode(l->idx, i);

		if (!S_ISREG(in->mode))
			continue;
		for (uint32_t ci = 0; ci < in->count && !atomic_load(&eng->bg_stop); ci++) {
			const struct index_chunk *c = index_layer_chunk(l->idx, in->first + ci);
			int rc;

			if (chunk_local(eng, c->digest) != 0)
				continue;
			bg_yield(eng);
			rc = fetch_shared(eng, l, in, ci);
			if (rc < 0 && !failed++)
				strata_log(LOG_WARNING, "background: layer %s: %s (will retry later)",
					   l->digest, strata_errmsg(rc));
		}
	}
	return failed ? -EIO : 0;
}

static void *bg_main(void *arg)
{
	struct fs_engine *eng = arg;

	/* Passes over every layer until all are complete; new layers are picked up on the next pass. */
	while (!atomic_load(&eng->bg_stop)) {
		struct digest_list b = { 0, NULL };
		int incomplete = 0;

		if (store_layer_list(eng->store, collect_layer_cb, &b) == 0) {
			for (size_t i = 0; i < b.n && !atomic_load(&eng->bg_stop); i++) {
				struct fs_layer *l;

				if (layer_load(eng, b.names[i], &l) < 0)
					continue;
				if (l->src && bg_layer(eng, l) < 0)
					incomplete = 1;
				layer_put(eng, l);
			}
		}
		free(b.names);
		for (int t = 0; t < (incomplete ? 100 : 20) && !atomic_load(&eng->bg_stop); t++)
			usleep(50 * 1000); /* 5 s after a failure, else 1 s between passes */
	}
	return NULL;
}

/* Starts the background completion thread (fs_opts.background). */
static void bg_start(struct fs_engine *eng)
{
	eng->bg_started = util_thread_start(&eng->bg_thread, bg_main, eng) == 0;
	if (!eng->bg_started)
		strata_log(LOG_ERR, "cannot start the background completion thread");
}

/* Stops the background completion thread, if it runs, and waits for it. */
static void bg_stop(struct fs_engine *eng)
{
	if (!eng->bg_started)
		return;
	atomic_store(&eng->bg_stop, 1);
	pthread_join(eng->bg_thread, NULL);
	eng->bg_started = 0;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node, cs;
	uint64_t end, pos;
	char *buf;
	int rc;

	(void)fi;
	rc = layer_of(&f->eng, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	layer_touch(&f->eng, l);
	in = index_layer_inode(l->idx, node);
	if (!S_ISREG(in->mode)) {
		layer_put(&f->eng, l);
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (off < 0 || (uint64_t)off >= in->size || size == 0) {
		layer_put(&f->eng, l);
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	end = (uint64_t)off + size;
	if (end > in->size)
		end = in->size;
	buf = malloc(end - (uint64_t)off);
	if (!buf) {
		layer_put(&f->eng, l);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	cs = index_layer_chunk_size(l->idx);
	fetch_read_begin(f->eng.fetch); /* one read timeout for all the fetches of this read */
	for (pos = (uint64_t)off; pos < end;) {
		uint32_t ci = (uint32_t)(pos / cs);
		uint64_t cstart = (uint64_t)ci * cs;
		uint64_t cend = cstart + cs < end ? cstart + cs : end;
		struct cchunk *e = NULL;

		assert(ci < in->count);
		rc = chunk_get(&f->eng, l, in, ci, &e);
		if (rc < 0)
			break;
		memcpy(buf + (pos - (uint64_t)off), e->data + (pos - cstart), cend - pos);
		cache_put(&f->eng.cache, e);
		pos = cend;
	}
	fetch_read_end();
	layer_put(&f->eng, l); /* buf is a copy */
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, end - (uint64_t)off);
	free(buf);
}

/* ---------------------------------------------------------------- xattrs, statfs */

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *f = fuse_req_userdata(req);
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node;
	size_t nlen = strlen(name);
	int rc;

	if (ino <= INO_LAYERS) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	rc = layer_of(&f->eng, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l->idx, in->xattr_first + i);

		if (x->name_len != nlen || memcmp(index_layer_str(l->idx, x->name_off), name, nlen))
			continue;
		if (size == 0)
			fuse_reply_xattr(req, x->value_len);
		else if (size < x->value_len)
			fuse_reply_err(req, ERANGE);
		else /* from the index itself: put after the reply */
			fuse_reply_buf(req, index_layer_str(l->idx, x->value_off), x->value_len);
		layer_put(&f->eng, l);
		return;
	}
	layer_put(&f->eng, l);
	fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *f = fuse_req_userdata(req);
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node;
	size_t total = 0, pos = 0;
	char *buf;
	int rc;

	if (ino <= INO_LAYERS) {
		if (size == 0)
			fuse_reply_xattr(req, 0);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	rc = layer_of(&f->eng, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	for (uint32_t i = 0; i < in->nxattrs; i++)
		total += index_layer_xattr(l->idx, in->xattr_first + i)->name_len + 1;
	if (size == 0) {
		layer_put(&f->eng, l);
		fuse_reply_xattr(req, total);
		return;
	}
	if (size < total) {
		layer_put(&f->eng, l);
		fuse_reply_err(req, ERANGE);
		return;
	}
	buf = malloc(total ? total : 1);
	if (!buf) {
		layer_put(&f->eng, l);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l->idx, in->xattr_first + i);

		memcpy(buf + pos, index_layer_str(l->idx, x->name_off), x->name_len);
		pos += x->name_len;
		buf[pos++] = '\0';
	}
	layer_put(&f->eng, l);
	fuse_reply_buf(req, buf, total);
	free(buf);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *f = fuse_req_userdata(req);
	struct store_stats ss;
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	store_get_stats(f->eng.store, &ss);
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = (ss.disk_bytes + 4095) / 4096;
	sv.f_files = ss.chunks;
	sv.f_namemax = NAME_MAX;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.release = op_release,
	.read = op_read,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
};

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define lsan_disable() __lsan_disable()
#define lsan_enable() __lsan_enable()
#else
#define lsan_disable() ((void)0)
#define lsan_enable() ((void)0)
#endif

/* ---------------------------------------------------------------- device io */

/*
 * The FUSE workers read /dev/fuse through io_read, so that a handover can stop them cleanly: a
 * request read by a process that then exits is lost and its caller hangs forever. Reads are
 * nonblocking and made under io.mu after checking that the fs is not paused; a worker blocks in
 * poll() (a cancellation point, holding nothing) or on io.cv, never inside read(). A request counts
 * as busy from the read that returns it until its worker asks for the next one (or exits): then
 * it has been answered. libfuse drops a request it read after the session was flagged as exited,
 * so readers end the loop (ENODEV) only once nothing is busy.
 */

struct in_header {  /* struct fuse_in_header of <linux/fuse.h> (not installed with fuse3) */
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};

struct out_header { /* struct fuse_out_header */
	uint32_t len;
	int32_t error;
	uint64_t unique;
};

/* A request is finished. Caller holds io->mu. */
static void io_done_locked(struct fs_io *io)
{
	assert(io->busy > 0);
	if (--io->busy == 0)
		pthread_cond_broadcast(&io->cv);
}

/* A worker thread ends (libfuse retires idle workers after their request). */
static void io_thread_gone(void *arg)
{
	struct fs *f = arg;

	pthread_mutex_lock(&f->io.mu);
	io_done_locked(&f->io);
	pthread_mutex_unlock(&f->io.mu);
}

static void io_wait(struct fs_io *io, int ms)
{
	struct timespec until;

	util_deadline_in(&until, ms);
	pthread_cond_timedwait(&io->cv, &io->mu, &until);
}

static void io_hold(struct fs *f)
{
	f->io.busy++;
	pthread_setspecific(f->io.holding, f);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fs *f = userdata;
	struct fs_io *io = &f->io;
	struct pollfd pfd[2] = { { fd, POLLIN, 0 }, { io->wake, POLLIN, 0 } };
	ssize_t n = -1;
	int cs, e = 0;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	pthread_mutex_lock(&io->mu);
	if (pthread_getspecific(io->holding)) {
		pthread_setspecific(io->holding, NULL);
		io_done_locked(io);
	}
	for (;;) {
		if (fuse_session_exited(f->se)) {
			e = EINTR; /* a signal ends the loop */
			break;
		}
		if (io->closing && io->busy == 0) {
			e = ENODEV;
			break;
		}
		if (io->replay) {
			assert(len >= io->init_len);
			memcpy(buf, io->init, io->init_len);
			n = (ssize_t)io->init_len;
			io->replay = 0;
			io->init_wait = 1;
			io_hold(f);
			break;
		}
		if (io->paused || io->closing || io->init_wait) {
			io_wait(io, 200);
			continue;
		}
		pthread_mutex_unlock(&io->mu);
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			strata_log(LOG_ERR, "poll /dev/fuse: %s", strerror(errno));
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&io->mu);
		if (io->paused || io->closing || io->init_wait || io->replay ||
		    fuse_session_exited(f->se))
			continue;
		n = read(fd, buf, len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ENOENT)
				continue; /* another worker took it; or interrupted: nothing was read */
			e = errno;
			break;
		}
		if (io->init_len == 0 && (size_t)n >= sizeof(struct in_header) && (size_t)n <= INIT_MAX &&
		    ((const struct in_header *)buf)->opcode == FUSE_OPCODE_INIT) {
			memcpy(io->init, buf, (size_t)n);
			io->init_len = (size_t)n;
		}
		io_hold(f);
		break;
	}
	pthread_mutex_unlock(&io->mu);
	pthread_setcancelstate(cs, NULL);
	if (n < 0)
		errno = e;
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fs *f = userdata;
	struct fs_io *io = &f->io;
	const struct out_header *oh = count > 0 ? iov[0].iov_base : NULL;
	ssize_t total = 0;
	int swallow;

	pthread_mutex_lock(&io->mu);
	swallow = io->init_wait && oh && iov[0].iov_len >= sizeof(*oh) &&
		  oh->unique == io->init_unique;
	if (swallow) {
		/* The answer to the replayed INIT: the kernel had its answer from the first process. */
		io->init_wait = 0;
		pthread_cond_broadcast(&io->cv);
	}
	pthread_mutex_unlock(&io->mu);
	if (!swallow)
		return writev(fd, iov, count);
	if (oh->error != 0)
		strata_log(LOG_ERR, "the handed-over FUSE session cannot be resumed: INIT: %s",
			   strerror(-oh->error));
	for (int i = 0; i < count; i++)
		total += (ssize_t)iov[i].iov_len;
	return total;
}

static int io_init(struct fs *f)
{
	struct fs_io *io = &f->io;
	int rc;

	pthread_mutex_init(&io->mu, NULL);
	pthread_cond_init(&io->cv, NULL);
	io->wake = -1;
	rc = pthread_key_create(&io->holding, io_thread_gone);
	if (rc != 0)
		return -rc;
	io->key_ok = 1;
	io->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return io->wake < 0 ? -errno : 0;
}

/* Serves fd through io_read/io_writev. fd becomes the session's (closed by fuse_session_destroy)
 * only on success. */
static int io_attach(struct fs *f, int fd)
{
	static const struct fuse_custom_io ops = { .writev = io_writev, .read = io_read };
	int fl = fcntl(fd, F_GETFL);
	int rc;

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return strata_err(errno, "/dev/fuse: %s", strerror(errno));
	rc = fuse_session_custom_io(f->se, &ops, fd);
	if (rc < 0)
		return strata_err(-rc, "cannot attach the FUSE session to /dev/fuse: %s", strerror(-rc));
	return 0;
}

static void io_destroy(struct fs_io *io)
{
	if (io->wake >= 0)
		close(io->wake);
	if (io->key_ok)
		pthread_key_delete(io->holding);
	pthread_mutex_destroy(&io->mu);
	pthread_cond_destroy(&io->cv);
}

static void io_kick(struct fs_io *io)
{
	uint64_t one = 1;

	if (write(io->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
		strata_log(LOG_WARNING, "wake FUSE workers: %s", strerror(errno));
	pthread_cond_broadcast(&io->cv);
}

int fs_pause(struct fs *f, int timeout_ms)
{
	struct fs_io *io = &f->io;
	struct timespec now, until;
	int rc = 0;

	pthread_mutex_lock(&io->mu);
	io->paused = 1;
	io_kick(io);
	util_deadline_in(&until, timeout_ms);
	while (io->busy > 0 && rc == 0) {
		pthread_cond_timedwait(&io->cv, &io->mu, &until);
		clock_gettime(CLOCK_REALTIME, &now);
		if (io->busy > 0 && (now.tv_sec > until.tv_sec ||
				     (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)))
			rc = strata_err(ETIMEDOUT, "%d request(s) still running after %d s", io->busy,
					timeout_ms / 1000);
	}
	pthread_mutex_unlock(&io->mu);
	return rc;
}

void fs_resume(struct fs *f)
{
	struct fs_io *io = &f->io;
	uint64_t v;

	pthread_mutex_lock(&io->mu);
	io->paused = 0;
	while (read(io->wake, &v, sizeof(v)) > 0)
		;
	pthread_cond_broadcast(&io->cv);
	pthread_mutex_unlock(&io->mu);
}

/* ---------------------------------------------------------------- handover state */

/*
 * The state travels as: "STRATAHS", u32 version (1), then four u32-length-prefixed fields: the
 * kernel's FUSE_INIT request, the mountpoint, the mount source, and the files open on the mount
 * (records of u64 inode, u32 open count: the quota evictor of the new process keeps their chunks
 * too). Host byte order: both ends run on one machine.
 */
#define STATE_MAGIC "STRATAHS"
#define STATE_VERSION 1u
#define OPEN_RECORD 12 /* u64 inode, u32 count */

static int put_field(uint8_t *buf, size_t cap, size_t *o, const void *p, size_t len)
{
	uint32_t l = (uint32_t)len;

	if (*o + 4 + len > cap)
		return -ENOSPC;
	memcpy(buf + *o, &l, 4);
	memcpy(buf + *o + 4, p, len);
	*o += 4 + len;
	return 0;
}

static int get_field(const uint8_t *buf, size_t len, size_t *o, const uint8_t **p, size_t *flen)
{
	uint32_t l;

	if (*o + 4 > len)
		return -EINVAL;
	memcpy(&l, buf + *o, 4);
	if (l > len - *o - 4)
		return -EINVAL;
	*p = buf + *o + 4;
	*flen = l;
	*o += 4 + l;
	return 0;
}

ssize_t fs_handover_state(struct fs *f, int *fd, void *buf, size_t cap)
{
	const char *src = f->source ? f->source : "strata";
	uint32_t version = STATE_VERSION;
	size_t o = 12;
	int rc;

	*fd = fuse_session_fd(f->se);
	if (cap < o)
		return -ENOSPC;
	memcpy(buf, STATE_MAGIC, 8);
	memcpy((uint8_t *)buf + 8, &version, 4);
	pthread_mutex_lock(&f->io.mu);
	if (f->io.init_len == 0)
		rc = strata_err(EAGAIN, "the kernel's INIT request has not been seen yet");
	else
		rc = put_field(buf, cap, &o, f->io.init, f->io.init_len);
	pthread_mutex_unlock(&f->io.mu);
	if (rc == 0)
		rc = put_field(buf, cap, &o, f->mountpoint, strlen(f->mountpoint));
	if (rc == 0)
		rc = put_field(buf, cap, &o, src, strlen(src));
	if (rc == 0) {
		uint32_t l;

		pthread_mutex_lock(&f->open_mu);
		l = (uint32_t)(f->nopens * OPEN_RECORD);
		if (o + 4 + l > cap) {
			rc = strata_err(ENOSPC, "%zu open files do not fit the handover state", f->nopens);
		} else {
			memcpy((uint8_t *)buf + o, &l, 4);
			o += 4;
			for (size_t i = 0; i < f->nopens; i++, o += OPEN_RECORD) {
				uint64_t ino = f->opens[i].ino;
				uint32_t n = f->opens[i].count;

				memcpy((uint8_t *)buf + o, &ino, 8);
				memcpy((uint8_t *)buf + o + 8, &n, 4);
			}
		}
		pthread_mutex_unlock(&f->open_mu);
	}
	return rc < 0 ? rc : (ssize_t)o;
}

/* Parses a state; the strings are copied NUL-terminated into mnt/src (cap bytes each, NULL to
 * skip). */
static int state_parse(const void *state, size_t len, const uint8_t **init, size_t *init_len,
		       char *mnt, char *src, size_t cap, const uint8_t **opens, size_t *opens_len)
{
	const uint8_t *b = state, *p;
	const struct in_header *h;
	uint32_t version;
	size_t o = 12, l;

	if (len < o || memcmp(b, STATE_MAGIC, 8) != 0)
		return strata_err(EINVAL, "not a strata handover state");
	memcpy(&version, b + 8, 4);
	if (version != STATE_VERSION)
		return strata_err(EINVAL, "handover state version %u, this strata reads %u", version,
				  STATE_VERSION);
	if (get_field(b, len, &o, init, init_len) < 0 || *init_len < sizeof(*h) ||
	    *init_len > INIT_MAX)
		return strata_err(EINVAL, "bad INIT in the handover state");
	h = (const struct in_header *)*init;
	if (h->opcode != FUSE_OPCODE_INIT || h->len != *init_len)
		return strata_err(EINVAL, "bad INIT in the handover state");
	if (get_field(b, len, &o, &p, &l) < 0 || l == 0 || l >= cap || p[0] != '/')
		return strata_err(EINVAL, "bad mountpoint in the handover state");
	if (mnt) {
		memcpy(mnt, p, l);
		mnt[l] = '\0';
	}
	if (get_field(b, len, &o, &p, &l) < 0 || l >= cap)
		return strata_err(EINVAL, "bad source in the handover state");
	if (src) {
		memcpy(src, p, l);
		src[l] = '\0';
	}
	if (get_field(b, len, &o, &p, &l) < 0 || l % OPEN_RECORD)
		return strata_err(EINVAL, "bad open-file table in the handover state");
	if (opens) {
		*opens = p;
		*opens_len = l;
	}
	return 0;
}

int fs_handover_check(const void *state, size_t len, char *mnt, size_t cap)
{
	const uint8_t *init;
	size_t init_len;

	return state_parse(state, len, &init, &init_len, mnt, NULL, cap, NULL, NULL);
}

void fs_handed_over(struct fs *f)
{
	pthread_mutex_lock(&f->io.mu);
	f->io.closing = 1;
	f->io.handed_over = 1;
	io_kick(&f->io);
	pthread_mutex_unlock(&f->io.mu);
}

const char *fs_mountpoint(const struct fs *f)
{
	return f->mountpoint;
}

/* ---------------------------------------------------------------- mount */

/* Undoes the octal escapes of /proc/self/mountinfo fields in place. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

int fs_is_fuse_mount(const char *path, char *type, size_t cap)
{
	return fs_mount_info(path, type, cap, NULL, 0);
}

int fs_mount_info(const char *path, char *type, size_t cap, char *source, size_t scap)
{
	FILE *mi = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	int found = 0;

	if (!mi)
		return -errno;
	/* The last matching line is the mount on top. */
	while (fgets(line, sizeof(line), mi)) {
		char *fields[10] = { 0 }, *sep, *save = NULL, *tok;
		int n = 0;

		sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		for (tok = strtok_r(line, " ", &save); tok && n < 10; tok = strtok_r(NULL, " ", &save))
			fields[n++] = tok;
		if (n < 5)
			continue;
		unescape(fields[4]);
		if (strcmp(fields[4], path) != 0)
			continue;
		tok = strtok_r(sep + 3, " ", &save);
		found = tok && strncmp(tok, "fuse", 4) == 0;
		if (found && type)
			snprintf(type, cap, "%s", tok);
		tok = strtok_r(NULL, " ", &save);
		if (found && source && tok) {
			unescape(tok);
			snprintf(source, scap, "%s", tok);
		}
	}
	fclose(mi);
	return found;
}

/* Allocates the fs for mountpoint real (absolute) and creates its session, unmounted. Returns 0 and
 * *out, or negative errno (everything freed). */
static int fs_create(struct store *store, const struct fs_opts *opts, const char *real,
		     struct fs **out)
{
	char mopts[PATH_MAX + 128];
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fs *f;
	int rc;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->io.wake = -1;
	clock_gettime(CLOCK_REALTIME, &f->start);
	rc = engine_init(&f->eng, store, opts->fetch, opts->chunk_cache_bytes, opts->index_cache_bytes);
	__atomic_store_n(&index_stats.cap, f->eng.layers_max, __ATOMIC_RELAXED);
	f->bg_wanted = opts->background;
	f->read_timeout_ms = opts->read_timeout_ms;
	pthread_mutex_init(&f->dh_mu, NULL);
	if (getrandom(&f->dh_next, sizeof(f->dh_next), 0) != sizeof(f->dh_next))
		f->dh_next = ((uint64_t)getpid() << 40) ^ (uint64_t)f->start.tv_nsec;
	f->dh_next = (f->dh_next >> 1) | 1; /* counts up without wrapping to 0 */
	pthread_mutex_init(&f->open_mu, NULL);
	f->max_threads = opts->max_threads ? opts->max_threads : 16;
	f->mountpoint = strdup(real);
	f->source = strdup(opts->source ? opts->source : "strata");
	if (rc < 0 || !f->mountpoint || !f->source) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = io_init(f);
	if (rc < 0) {
		rc = strata_err(-rc, "FUSE io set-up: %s", strerror(-rc));
		goto fail;
	}
	{
		/* fuse_opt takes backslash escapes: protect ',' and '\\' in the source. */
		const char *src = f->source;
		size_t o = 0;

		o = (size_t)snprintf(mopts, sizeof(mopts), "ro,allow_other,default_permissions,subtype=strata,fsname=");
		for (; *src && o + 3 < sizeof(mopts); src++) {
			if (*src == ',' || *src == '\\')
				mopts[o++] = '\\';
			mopts[o++] = *src;
		}
		mopts[o] = '\0';
	}
	if (fuse_opt_add_arg(&args, "strata") < 0 || fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, mopts) < 0 ||
	    (opts->debug && fuse_opt_add_arg(&args, "-d") < 0)) {
		rc = -ENOMEM;
		goto fail;
	}
	f->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), f);
	if (!f->se) {
		rc = strata_err(EIO, "cannot create the FUSE session");
		goto fail;
	}
	fuse_opt_free_args(&args);
	*out = f;
	return 0;
fail:
	fuse_opt_free_args(&args);
	fs_free(f);
	return rc;
}

int fs_mount(struct store *store, const struct fs_opts *opts, struct fs **out)
{
	struct fs *f;
	char real[PATH_MAX], type[64];
	struct stat st;
	int rc;

	*out = NULL;
	if (stat(opts->mountpoint, &st) < 0) {
		if (errno == ENOTCONN)
			return strata_err(ENOTCONN, "%s is a disconnected FUSE mount (run 'strata umount %s')",
					  opts->mountpoint, opts->mountpoint);
		return strata_err(errno, "mountpoint %s: %s", opts->mountpoint, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return strata_err(ENOTDIR, "mountpoint %s is not a directory", opts->mountpoint);
	if (!realpath(opts->mountpoint, real))
		return strata_err(errno, "mountpoint %s: %s", opts->mountpoint, strerror(errno));
	rc = fs_is_fuse_mount(real, type, sizeof(type));
	if (rc > 0)
		return strata_err(EBUSY, "%s is already mounted (%s)", real, type);

	rc = fs_create(store, opts, real, &f);
	if (rc < 0)
		return rc;
	/* libfuse keeps a copy of the mountpoint that only fuse_session_unmount frees: after a
	 * handover that is never called (it would unmount), so LeakSanitizer is told to expect it. */
	lsan_disable();
	rc = fuse_session_mount(f->se, f->mountpoint);
	lsan_enable();
	if (rc != 0) {
		rc = strata_err(EIO, "cannot mount on %s (is /dev/fuse available?)", f->mountpoint);
		goto fail;
	}
	f->mounted = 1;
	/* The same descriptor, read through io_read so that a handover can stop the workers. */
	rc = io_attach(f, fuse_session_fd(f->se));
	if (rc < 0)
		goto fail;
	*out = f;
	return 0;
fail:
	fs_free(f);
	return rc;
}

int fs_adopt(struct store *store, const struct fs_opts *opts, int fd, const void *state, size_t len,
	     struct fs **out)
{
	char mnt[PATH_MAX], src[PATH_MAX + 16];
	const uint8_t *init, *opens = NULL;
	size_t init_len, opens_len = 0;
	struct fs_opts o = *opts;
	struct fs *f = NULL;
	int rc;

	*out = NULL;
	rc = state_parse(state, len, &init, &init_len, mnt, src, sizeof(mnt), &opens, &opens_len);
	if (rc < 0)
		goto fail;
	o.source = src;
	rc = fs_create(store, &o, mnt, &f);
	if (rc < 0)
		goto fail;
	/* Files the old process had open stay open: their releases come to us. */
	for (size_t i = 0; i + OPEN_RECORD <= opens_len && rc == 0; i += OPEN_RECORD) {
		uint64_t ino;
		uint32_t n;

		memcpy(&ino, opens + i, 8);
		memcpy(&n, opens + i + 8, 4);
		while (n-- > 0 && rc == 0)
			rc = open_count(f, ino, 1);
	}
	if (rc < 0)
		goto fail;
	f->adopted = 1;
	memcpy(f->io.init, init, init_len);
	f->io.init_len = init_len;
	f->io.init_unique = ((const struct in_header *)init)->unique;
	f->io.replay = 1;
	rc = io_attach(f, fd);
	if (rc < 0)
		goto fail;
	*out = f;
	return 0;
fail:
	close(fd);
	fs_free(f);
	return rc;
}

/* Detaches the mount this process adopted (it never called fuse_session_mount), unless the kernel
 * already ended it. Only the fuse.strata mount on top of the mountpoint is touched. */
static void adopted_unmount(struct fs *f)
{
	struct pollfd p = { fuse_session_fd(f->se), 0, 0 };
	char type[64];
	pid_t pid;
	int status;

	if (poll(&p, 1, 0) == 1 && (p.revents & POLLERR))
		return; /* unmounted, or the connection was aborted */
	if (fs_is_fuse_mount(f->mountpoint, type, sizeof(type)) <= 0 ||
	    strcmp(type, "fuse.strata") != 0)
		return;
	if (umount2(f->mountpoint, MNT_DETACH) == 0)
		return;
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", f->mountpoint, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		strata_log(LOG_ERR, "cannot unmount %s", f->mountpoint);
}

int fs_run(struct fs *f)
{
	struct fuse_loop_config *cfg;
	int rc;

	if (f->bg_wanted && f->eng.fetch)
		bg_start(&f->eng);

	if (f->eng.fetch && !f->eng.w_started)
		writer_start(&f->eng);
	if (f->eng.fetch && !f->streamer) {
		rc = fs_streamer_start(f->eng.store, f->eng.fetch, 2, f->read_timeout_ms, &f->streamer);
		if (rc < 0)
			strata_log(LOG_ERR, "%s", strata_errmsg(rc));
	}
	if (fuse_set_signal_handlers(f->se) != 0)
		return strata_err(EIO, "cannot install signal handlers");
	f->signals_set = 1;
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(cfg, f->max_threads);
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	/* Cloned descriptors would be read outside io_read, and a handover would not stop them. */
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	rc = fuse_session_loop_mt(f->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc < 0 ? rc : 0;
}

void fs_background_limit(struct fs *f, uint64_t bytes)
{
	if (f)
		__atomic_store_n(&f->eng.bg_limit, bytes, __ATOMIC_RELAXED);
}

void fs_stop(struct fs *f)
{
	(void)f;
	/* The loop only notices an exit flag after a request; a signal wakes it at once. */
	kill(getpid(), SIGTERM);
}

void fs_free(struct fs *f)
{
	if (!f)
		return;
	bg_stop(&f->eng);
	fs_streamer_stop(f->streamer);
	writer_stop(&f->eng); /* writes what is queued: before the caller closes the store */
	if (f->se) {
		if (f->signals_set)
			fuse_remove_signal_handlers(f->se);
		/* Handed over: the mount lives on in the new process. */
		if (f->mounted && !f->io.handed_over)
			fuse_session_unmount(f->se);
		else if (f->adopted && !f->io.handed_over)
			adopted_unmount(f);
		fuse_session_destroy(f->se);
	}
	while (f->dh) {
		struct dir_handle *h = f->dh;

		f->dh = h->next;
		free(h->list.names);
		free(h);
	}
	pthread_mutex_destroy(&f->dh_mu);
	io_destroy(&f->io);
	free(f->source);
	engine_fini(&f->eng); /* no request runs any more: nothing holds a reference */
	pthread_mutex_destroy(&f->open_mu);
	free(f->opens);
	free(f->mountpoint);
	free(f);
}

/* ---------------------------------------------------------------- quota support */

/* Tells the store the layer was used now; at most once a second per layer. */
static void layer_touch(struct fs_engine *eng, struct fs_layer *l)
{
	uint64_t now = (uint64_t)time(NULL);

	if (__atomic_exchange_n(&l->touched, now, __ATOMIC_RELAXED) != now)
		store_layer_touch(eng->store, l->digest, now);
}

/* Adds delta (+1 open, -1 release) to ino's open count. Returns 0 or -ENOMEM. */
static int open_count(struct fs *f, fuse_ino_t ino, int delta)
{
	size_t i;

	pthread_mutex_lock(&f->open_mu);
	for (i = 0; i < f->nopens && f->opens[i].ino != ino; i++)
		;
	if (i == f->nopens) {
		if (delta < 0) {
			pthread_mutex_unlock(&f->open_mu);
			return 0;
		}
		if (f->nopens == f->capopens) {
			size_t cap = f->capopens ? f->capopens * 2 : 64;
			struct open_ino *n = realloc(f->opens, cap * sizeof(*n));

			if (!n) {
				pthread_mutex_unlock(&f->open_mu);
				return -ENOMEM;
			}
			f->opens = n;
			f->capopens = cap;
		}
		f->opens[f->nopens].ino = ino;
		f->opens[f->nopens++].count = 0;
	}
	if (delta > 0)
		f->opens[i].count++;
	else if (--f->opens[i].count == 0)
		f->opens[i] = f->opens[--f->nopens];
	pthread_mutex_unlock(&f->open_mu);
	return 0;
}

void fs_open_lock(struct fs *f)
{
	pthread_mutex_lock(&f->open_mu);
}

void fs_open_unlock(struct fs *f)
{
	pthread_mutex_unlock(&f->open_mu);
}

/* fs_open_chunks() for one open inode of layer l (referenced). */
static int open_ino_chunks(struct fs_layer *l, uint32_t node,
			   int (*fn)(void *ctx, const uint8_t digest[32]), void *ctx)
{
	const struct index_inode *in = index_layer_inode(l->idx, node);
	int rc;

	for (uint32_t ci = 0; ci < in->count; ci++) {
		rc = fn(ctx, index_layer_chunk(l->idx, in->first + ci)->digest);
		if (rc)
			return rc;
	}
	/* the windows its spans may start from: all of the layer's, they are small */
	for (uint32_t k = 0; k < index_layer_ncheckpoints(l->idx); k++) {
		const struct index_checkpoint *cp = index_layer_checkpoint(l->idx, k);

		if (cp->wlen == 0)
			continue;
		rc = fn(ctx, cp->window);
		if (rc)
			return rc;
	}
	return 0;
}

int fs_open_chunks(struct fs *f, int (*fn)(void *ctx, const uint8_t digest[32]), void *ctx)
{
	int rc = 0;

	for (size_t i = 0; i < f->nopens && rc == 0; i++) {
		struct fs_layer *l;
		uint32_t node;

		/* Loaded again if the index cache unloaded it (takes layers_lock, never open_mu). A
		 * layer gone from the store has nothing to keep. */
		if (layer_of(&f->eng, f->opens[i].ino, &l, &node) < 0) {
			strata_err_clear();
			continue;
		}
		rc = open_ino_chunks(l, node, fn, ctx);
		layer_put(&f->eng, l);
	}
	return rc;
}

/* ---------------------------------------------------------------- the read engine */

/* Sets up a zeroed eng for store; starts no thread. Returns 0 or -ENOMEM; engine_fini undoes it
 * in either case. */
static int engine_init(struct fs_engine *eng, struct store *store, struct fetch_client *fc,
		       uint64_t chunk_cache_bytes, uint64_t index_cache_bytes)
{
	eng->store = store;
	eng->fetch = fc;
	pthread_rwlock_init(&eng->layers_lock, NULL);
	eng->layers_max = index_cache_bytes ? index_cache_bytes : FS_INDEX_CACHE_DEFAULT;
	pthread_mutex_init(&eng->inflight_mu, NULL);
	pthread_cond_init(&eng->inflight_cv, NULL);
	pthread_mutex_init(&eng->w_mu, NULL);
	pthread_cond_init(&eng->w_cv, NULL);
	pthread_cond_init(&eng->w_idle, NULL);
	return cache_init(&eng->cache, chunk_cache_bytes ? chunk_cache_bytes : FS_CHUNK_CACHE_DEFAULT);
}

/* Stops eng's threads (the writer writes what is queued first), unloads its layers and frees
 * what engine_init set up. No request may hold a layer reference. */
static void engine_fini(struct fs_engine *eng)
{
	bg_stop(eng);
	writer_stop(eng);
	for (size_t i = 0; i < eng->layers_cap; i++) {
		if (eng->layers[i]) {
			assert(eng->layers[i]->refs == 0);
			__atomic_sub_fetch(&index_stats.bytes, eng->layers[i]->bytes, __ATOMIC_RELAXED);
			__atomic_sub_fetch(&index_stats.layers, 1, __ATOMIC_RELAXED);
			layer_destroy(eng->layers[i]);
		}
	}
	free(eng->layers);
	cache_destroy(&eng->cache);
	pthread_rwlock_destroy(&eng->layers_lock);
	pthread_mutex_destroy(&eng->inflight_mu);
	pthread_cond_destroy(&eng->inflight_cv);
	pthread_mutex_destroy(&eng->w_mu);
	pthread_cond_destroy(&eng->w_cv);
	pthread_cond_destroy(&eng->w_idle);
}

int fs_engine_create(struct store *store, struct fetch_client *fc, uint64_t chunk_cache_bytes,
		     uint64_t index_cache_bytes, struct fs_engine **out)
{
	struct fs_engine *eng = calloc(1, sizeof(*eng));
	int rc;

	*out = NULL;
	if (!eng)
		return -ENOMEM;
	rc = engine_init(eng, store, fc, chunk_cache_bytes, index_cache_bytes);
	if (rc < 0) {
		fs_engine_free(eng);
		return rc;
	}
	*out = eng;
	return 0;
}

void fs_engine_free(struct fs_engine *eng)
{
	if (!eng)
		return;
	engine_fini(eng);
	free(eng);
}

struct fs_engine *fs_engine_of(struct fs *f)
{
	return &f->eng;
}

int fs_fetch_layer(struct fs_engine *eng, const char *digest,
		   void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
		   atomic_int *cancel)
{
	struct fs_layer *l = NULL;
	uint64_t total = 0, done = 0;
	int rc;

	/* A pin checks that each chunk is stored: this thread stores its own chunks, and what the
	 * writer holds for readers is written first. */
	tl_sync_store = 1;
	writer_drain(eng);
	rc = layer_load(eng, digest, &l);
	if (rc < 0)
		goto out;
	for (uint32_t i = 0; i < index_layer_nchunks(l->idx); i++)
		total += index_layer_chunk(l->idx, i)->size;
	if (progress)
		progress(ctx, 0, total);
	for (uint32_t i = 0; i < index_layer_ninodes(l->idx) && rc == 0; i++) {
		const struct index_inode *in = index_layer_inode(l->idx, i);

		if (!S_ISREG(in->mode))
			continue;
		for (uint32_t ci = 0; ci < in->count && rc == 0; ci++) {
			const struct index_chunk *c = index_layer_chunk(l->idx, in->first + ci);

			if (cancel && atomic_load(cancel)) {
				rc = -ECANCELED;
				break;
			}
			rc = stored_now(eng, c->digest);
			if (rc == 0) {
				if (!eng->fetch || !l->src)
					rc = strata_err(EIO, "layer %s has no source to fetch from", digest);
				else
					rc = fetch_shared(eng, l, in, ci);
				if (rc == 0 && stored_now(eng, c->digest) != 1)
					rc = __atomic_load_n(&eng->store_full, __ATOMIC_RELAXED) ?
						     strata_err(ENOSPC, "store %s is full", store_dir(eng->store)) :
						     strata_err(EIO, "a fetched chunk of %s was not stored", digest);
			}
			if (rc > 0)
				rc = 0;
			done += c->size;
			if (progress && rc == 0)
				progress(ctx, done, total);
		}
	}
	/* the checkpoint windows every span needs */
	for (uint32_t k = 0; k < index_layer_ncheckpoints(l->idx) && rc == 0; k++) {
		const struct index_checkpoint *cp = index_layer_checkpoint(l->idx, k);
		uint8_t *w;

		if (cp->wlen == 0 || store_chunk_has(eng->store, cp->window) == 1)
			continue;
		w = malloc(INDEX_ZRAN_WINDOW);
		if (!w) {
			rc = -ENOMEM;
			break;
		}
		rc = l->src && eng->fetch ? get_window(eng, l, cp, w) :
					  strata_err(EIO, "layer %s has no source to fetch from", digest);
		free(w);
		if (rc == 0 && store_chunk_has(eng->store, cp->window) != 1) /* served, not stored */
			rc = strata_err(ENOSPC, "store %s is full", store_dir(eng->store));
	}
out:
	tl_sync_store = 0;
	if (l)
		layer_put(eng, l);
	return rc;
}

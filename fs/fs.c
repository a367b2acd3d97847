/* SPDX-License-Identifier: Apache-2.0 */
/* FUSE low-level operations serving MNT/layers/sha256:<hex>/ from layer indexes and store chunks. */
#include "fs.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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

struct fs_layer {
	struct index_layer *idx;
	uint32_t seq;
	char digest[STORE_DIGEST_LEN];
	struct fetch_ref *src;             /* where missing bytes come from; NULL: nowhere */
	char windows[STORE_DIGEST_LEN];    /* index artifact windows blob, or "" */
	int warned;                        /* a fetch failure was logged (log once per layer) */
};

/* A span being fetched; readers that need the same span wait for it instead of fetching again. */
struct inflight {
	uint32_t seq;
	uint64_t cstart, cend;
	int done, rc;  /* protected by fs.inflight_mu */
	int refs;      /* protected by fs.inflight_mu */
	struct inflight *next;
};

struct fs {
	struct store *store;
	struct fuse_session *se;
	char *mountpoint;
	int mounted;
	int signals_set;
	unsigned max_threads;
	struct timespec start;
	pthread_rwlock_t layers_lock;
	struct fs_layer **layers; /* indexed by seq; protected by layers_lock; entries never freed
				     while mounted */
	size_t layers_cap;        /* protected by layers_lock */
	struct chunk_cache cache;
	struct fetch_client *fetch;
	pthread_mutex_t inflight_mu;
	pthread_cond_t inflight_cv;
	struct inflight *inflight; /* protected by inflight_mu */
	int foreground;            /* reader fetches under way; protected by inflight_mu */
	pthread_t bg_thread;
	int bg_wanted, bg_started;
	volatile int bg_stop;
};

static struct fs_layer *layer_peek(struct fs *f, uint32_t seq)
{
	struct fs_layer *l = NULL;

	pthread_rwlock_rdlock(&f->layers_lock);
	if (seq < f->layers_cap)
		l = f->layers[seq];
	pthread_rwlock_unlock(&f->layers_lock);
	return l;
}

/* Loads the layer with this digest from the store (or returns the loaded one). */
static int layer_load(struct fs *f, const char *digest, struct fs_layer **out)
{
	struct store_layer info;
	struct fs_layer *l;
	void *buf = NULL;
	size_t len = 0;
	int rc;

	rc = store_layer_get(f->store, digest, &info, NULL, NULL);
	if (rc < 0)
		return rc;
	l = layer_peek(f, info.seq);
	if (l) {
		*out = l;
		return 0;
	}
	rc = store_layer_get(f->store, digest, &info, &buf, &len);
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
	snprintf(l->digest, sizeof(l->digest), "%s", digest);
	snprintf(l->windows, sizeof(l->windows), "%s", info.windows);
	if (info.source[0] && fetch_ref_parse(info.source, &l->src) < 0) {
		strata_log(LOG_WARNING, "layer %s: unusable source '%s': %s", digest, info.source,
			   strata_errmsg(EINVAL));
		l->src = NULL;
	}

	pthread_rwlock_wrlock(&f->layers_lock);
	if (info.seq >= f->layers_cap) {
		size_t ncap = f->layers_cap ? f->layers_cap : 64;
		struct fs_layer **nl;

		while (ncap <= info.seq)
			ncap *= 2;
		nl = realloc(f->layers, ncap * sizeof(*nl));
		if (!nl) {
			pthread_rwlock_unlock(&f->layers_lock);
			index_layer_free(l->idx);
			fetch_ref_free(l->src);
			free(l);
			return -ENOMEM;
		}
		memset(nl + f->layers_cap, 0, (ncap - f->layers_cap) * sizeof(*nl));
		f->layers = nl;
		f->layers_cap = ncap;
	}
	if (f->layers[info.seq]) {
		index_layer_free(l->idx);
		fetch_ref_free(l->src);
		free(l);
	} else {
		f->layers[info.seq] = l;
	}
	*out = f->layers[info.seq];
	pthread_rwlock_unlock(&f->layers_lock);
	return 0;
}

/* Finds the layer for an inode number, loading it by seq if this process has not yet. */
static int layer_of(struct fs *f, fuse_ino_t ino, struct fs_layer **out, uint32_t *node)
{
	uint32_t seq = (uint32_t)(ino >> 32);
	char digest[STORE_DIGEST_LEN];
	struct fs_layer *l;
	int rc;

	if (seq == 0)
		return -ENOENT;
	l = layer_peek(f, seq);
	if (!l) {
		rc = store_layer_by_seq(f->store, seq, digest);
		if (rc < 0)
			return rc == -ENOENT ? -ESTALE : rc;
		rc = layer_load(f, digest, &l);
		if (rc < 0)
			return rc;
	}
	if ((uint32_t)ino >= index_layer_ninodes(l->idx))
		return -ESTALE;
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
	rc = layer_of(f, ino, &l, &node);
	if (rc < 0)
		return rc;
	node_stat(l, node, st);
	*timeout = CONTENT_TIMEOUT;
	return 0;
}

/* ---------------------------------------------------------------- lookup, getattr, readlink */

static int do_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct fs_layer *l;
	uint32_t node;
	int64_t child;
	int rc;

	memset(e, 0, sizeof(*e));
	if (parent == INO_ROOT) {
		if (strcmp(name, LAYERS_NAME) != 0)
			return -ENOENT;
		e->ino = INO_LAYERS;
	} else if (parent == INO_LAYERS) {
		if (strncmp(name, "sha256:", 7) != 0 || strlen(name) != 71)
			return -ENOENT;
		rc = layer_load(f, name, &l);
		if (rc < 0)
			return rc == -ENOENT ? -ENOENT : rc;
		e->ino = layer_ino(l, 0);
	} else {
		rc = layer_of(f, parent, &l, &node);
		if (rc < 0)
			return rc;
		child = index_layer_lookup(l->idx, node, name, strlen(name));
		if (child < 0)
			return (int)child;
		e->ino = layer_ino(l, (uint32_t)child);
	}
	rc = any_stat(f, e->ino, &e->attr, &e->attr_timeout);
	e->entry_timeout = e->attr_timeout;
	return rc;
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
	int rc = layer_of(f, ino, &l, &node);

	if (rc < 0) {
		fuse_reply_err(req, ino <= INO_LAYERS ? EINVAL : -rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	if (!S_ISLNK(in->mode)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	target = strndup(index_layer_str(l->idx, in->first), in->size);
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

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct digest_list *d;
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
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (ino == INO_LAYERS) {
		rc = store_layer_list(f->store, collect_layer_cb, d);
		if (rc < 0) {
			free(d->names);
			free(d);
			fuse_reply_err(req, -rc);
			return;
		}
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct digest_list *d = (struct digest_list *)(uintptr_t)fi->fh;

	(void)ino;
	if (d) {
		free(d->names);
		free(d);
	}
	fuse_reply_err(req, 0);
}

/*
 * The idx-th entry of directory ino (0 ".", 1 "..", then children). Returns 1 and fills name/child,
 * 0 past the end, negative errno on error. name must hold NAME_MAX + 1 bytes.
 */
static int dir_entry(struct fs *f, fuse_ino_t ino, struct digest_list *d, off_t idx, char *name,
		     fuse_ino_t *child)
{
	struct fs_layer *l;
	uint32_t node;
	int rc;

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
		rc = layer_load(f, name, &l);
		if (rc < 0)
			return rc;
		*child = layer_ino(l, 0);
		return 1;
	}
	rc = layer_of(f, ino, &l, &node);
	if (rc < 0)
		return rc;
	{
		const struct index_inode *in = index_layer_inode(l->idx, node);
		const struct index_dirent *de;

		if ((uint64_t)idx >= in->count)
			return 0;
		de = index_layer_dirent(l->idx, in->first + (uint32_t)idx);
		if (de->name_len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, index_layer_str(l->idx, de->name_off), de->name_len);
		name[de->name_len] = '\0';
		*child = layer_ino(l, de->ino);
	}
	return 1;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, int plus)
{
	struct fs *f = fuse_req_userdata(req);
	struct digest_list *d = (struct digest_list *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	char name[NAME_MAX + 1];
	size_t used = 0;
	int rc = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (off_t idx = off;; idx++) {
		fuse_ino_t child;
		size_t need;

		rc = dir_entry(f, ino, d, idx, name, &child);
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
				rc = any_stat(f, child, &e.attr, &e.attr_timeout);
				if (rc < 0)
					break;
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

				rc = any_stat(f, child, &st, &t);
				if (rc < 0)
					break;
			}
			need = fuse_add_direntry(req, buf + used, size - used, name, &st, idx + 1);
		}
		if (need > size - used) {
			rc = 0;
			break;
		}
		used += need;
	}
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
	rc = layer_of(f, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (S_ISDIR(index_layer_inode(l->idx, node)->mode)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
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
static int get_window(struct fs *f, struct fs_layer *l, const struct index_checkpoint *cp,
		      uint8_t *window)
{
	char hex[UTIL_DIGEST_STR_LEN];
	struct window_check wc = { cp, window, hex };
	uint8_t *raw;
	ssize_t n = store_chunk_get(f->store, cp->window, window, INDEX_ZRAN_WINDOW);
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
	rc = fetch_blob_range_verify(f->fetch, l->src, l->windows, cp->woff, cp->wclen, raw,
				     window_verify, &wc);
	free(raw);
	if (rc < 0)
		return rc;
	rc = store_chunk_put(f->store, cp->window, window, cp->wlen);
	return rc < 0 ? rc : 0;
}

/* The tar range a miss on chunk ci of file in fetches: the chunk and the next ones of the same
 * file that are not stored yet, up to READAHEAD_CHUNKS, so that a file read in order costs one
 * request per few chunks instead of one per chunk (consecutive chunk spans would share a
 * checkpoint interval each). Called with inflight_mu held; does store lookups only. */
static void miss_range(struct fs *f, const struct index_layer *idx, const struct index_inode *in,
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
		    ps.cend > cs.cstart + BACK_OVERLAP && store_chunk_has(f->store, p->digest) == 0)
			a = p;
	}
	/* extend over the following chunks that are not stored yet */
	while (last + 1 < in->count && last + 1 < ci + READAHEAD_CHUNKS &&
	       index_layer_chunk(idx, in->first + last + 1)->offset + index_layer_chunk_size(idx) - a->offset <=
		       READAHEAD_BYTES &&
	       store_chunk_has(f->store, index_layer_chunk(idx, in->first + last + 1)->digest) == 0)
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

/*
 * Fetches the span holding tar bytes [uoff, need_end) of layer l (which contain chunk c), decodes
 * it, verifies every whole chunk it yields against its digest, and stores those chunks. Only bytes
 * that matched a digest are stored.
 */
static int fetch_span(struct fs *f, struct fs_layer *l, const struct index_chunk *c, uint64_t uoff,
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
		rc = get_window(f, l, index_layer_checkpoint(l->idx, sp.cp), window);
		if (rc < 0)
			goto out;
	}
	sc = (struct span_check){ .l = l, .sp = &sp, .window = window, .uoff = uoff,
				  .need_end = need_end, .dec_start = dec_start, .dec_end_max = dec_end,
				  .plain = plain };
	/* decoded and the wanted chunks checked per host: bad bytes from a mirror go to the next */
	rc = fetch_blob_range_verify(f->fetch, l->src, l->digest, sp.cstart, sp.cend - sp.cstart,
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
		put = store_chunk_put(f->store, o->digest, plain + (o->offset - dec_start), o->size);
		if (put < 0) {
			rc = put;
			goto out;
		}
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
static int fetch_shared(struct fs *f, struct fs_layer *l, const struct index_inode *ino,
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
	pthread_mutex_lock(&f->inflight_mu);
	for (int round = 0; round < 8; round++) {
		for (in = f->inflight; in; in = in->next) {
			if (in->seq == l->seq && in->cstart < need.cend && need.cstart < in->cend)
				break;
		}
		if (!in)
			break;
		in->refs++;
		while (!in->done)
			pthread_cond_wait(&f->inflight_cv, &f->inflight_mu);
		rc = in->rc;
		if (--in->refs == 0)
			free(in);
		pthread_mutex_unlock(&f->inflight_mu);
		if (store_chunk_has(f->store, c->digest) == 1)
			return 0;
		if (rc < 0)
			return rc; /* that fetch failed: do not retry at once on this reader's behalf */
		pthread_mutex_lock(&f->inflight_mu);
	}
	/* Still holding the lock: no other reader can start an overlapping fetch before ours is
	 * registered. */
	miss_range(f, l->idx, ino, ci, &uoff, &uend);
	rc = index_layer_span(l->idx, uoff, uend, &sp);
	if (rc < 0) {
		pthread_mutex_unlock(&f->inflight_mu);
		return rc;
	}
	in = calloc(1, sizeof(*in));
	if (!in) {
		pthread_mutex_unlock(&f->inflight_mu);
		return -ENOMEM;
	}
	in->seq = l->seq;
	in->cstart = sp.cstart;
	in->cend = sp.cend;
	in->refs = 1;
	in->next = f->inflight;
	f->inflight = in;
	pthread_mutex_unlock(&f->inflight_mu);

	rc = fetch_span(f, l, c, uoff, uend);

	pthread_mutex_lock(&f->inflight_mu);
	for (struct inflight **pp = &f->inflight; *pp; pp = &(*pp)->next) {
		if (*pp == in) {
			*pp = in->next;
			break;
		}
	}
	in->rc = rc;
	in->done = 1;
	pthread_cond_broadcast(&f->inflight_cv);
	if (--in->refs == 0)
		free(in);
	pthread_mutex_unlock(&f->inflight_mu);
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
static int chunk_get(struct fs *f, struct fs_layer *l, const struct index_inode *ino, uint32_t ci,
		     struct cchunk **out)
{
	const struct index_chunk *c = index_layer_chunk(l->idx, ino->first + ci);
	struct cchunk *e = cache_get(&f->cache, c->digest);
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
	n = store_chunk_get(f->store, c->digest, e->data, c->size);
	if (n >= 0)
		count_read(&read_stats.store_hits);
	if (n == -ENOENT && f->fetch && l->src) {
		uint64_t t0 = mono_us();

		pthread_mutex_lock(&f->inflight_mu);
		f->foreground++;
		pthread_mutex_unlock(&f->inflight_mu);
		n = fetch_shared(f, l, ino, ci);
		pthread_mutex_lock(&f->inflight_mu);
		f->foreground--;
		pthread_mutex_unlock(&f->inflight_mu);
		if (n == 0)
			n = store_chunk_get(f->store, c->digest, e->data, c->size);
		count_read(&read_stats.fetched);
		count_read(&read_stats.fetch_us[latency_bucket(mono_us() - t0)]);
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
	*out = cache_insert(&f->cache, e);
	return 0;
}

/* ---------------------------------------------------------------- background completion */

/* Sleeps while readers are fetching: the background never competes with a waiting program. */
static void bg_yield(struct fs *f)
{
	for (;;) {
		int busy;

		pthread_mutex_lock(&f->inflight_mu);
		busy = f->foreground > 0;
		pthread_mutex_unlock(&f->inflight_mu);
		if (!busy || f->bg_stop)
			return;
		usleep(20 * 1000);
	}
}

/* Completes one layer: every missing chunk, in tar order, a span at a time. */
static int bg_layer(struct fs *f, struct fs_layer *l)
{
	uint32_t n = index_layer_ninodes(l->idx);
	int failed = 0;

	for (uint32_t i = 0; i < n && !f->bg_stop; i++) {
		const struct index_inode *in = index_layer_inode(l->idx, i);

		if (!S_ISREG(in->mode))
			continue;
		for (uint32_t ci = 0; ci < in->count && !f->bg_stop; ci++) {
			const struct index_chunk *c = index_layer_chunk(l->idx, in->first + ci);
			int rc;

			if (store_chunk_has(f->store, c->digest) != 0)
				continue;
			bg_yield(f);
			rc = fetch_shared(f, l, in, ci);
			if (rc < 0 && !failed++)
				strata_log(LOG_WARNING, "background: layer %s: %s (will retry later)",
					   l->digest, strata_errmsg(rc));
		}
	}
	return failed ? -EIO : 0;
}

static void *bg_main(void *arg)
{
	struct fs *f = arg;

	/* Passes over every layer until all are complete; new layers are picked up on the next pass. */
	while (!f->bg_stop) {
		struct digest_list b = { 0, NULL };
		int incomplete = 0;

		if (store_layer_list(f->store, collect_layer_cb, &b) == 0) {
			for (size_t i = 0; i < b.n && !f->bg_stop; i++) {
				struct fs_layer *l;

				if (layer_load(f, b.names[i], &l) < 0 || !l->src)
					continue;
				if (bg_layer(f, l) < 0)
					incomplete = 1;
			}
		}
		free(b.names);
		for (int t = 0; t < (incomplete ? 100 : 20) && !f->bg_stop; t++)
			usleep(50 * 1000); /* 5 s after a failure, else 1 s between passes */
	}
	return NULL;
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
	rc = layer_of(f, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	if (!S_ISREG(in->mode)) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (off < 0 || (uint64_t)off >= in->size || size == 0) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	end = (uint64_t)off + size;
	if (end > in->size)
		end = in->size;
	buf = malloc(end - (uint64_t)off);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	cs = index_layer_chunk_size(l->idx);
	for (pos = (uint64_t)off; pos < end;) {
		uint32_t ci = (uint32_t)(pos / cs);
		uint64_t cstart = (uint64_t)ci * cs;
		uint64_t cend = cstart + cs < end ? cstart + cs : end;
		struct cchunk *e = NULL;

		assert(ci < in->count);
		rc = chunk_get(f, l, in, ci, &e);
		if (rc < 0)
			break;
		memcpy(buf + (pos - (uint64_t)off), e->data + (pos - cstart), cend - pos);
		cache_put(&f->cache, e);
		pos = cend;
	}
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
	rc = layer_of(f, ino, &l, &node);
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
		else
			fuse_reply_buf(req, index_layer_str(l->idx, x->value_off), x->value_len);
		return;
	}
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
	rc = layer_of(f, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	for (uint32_t i = 0; i < in->nxattrs; i++)
		total += index_layer_xattr(l->idx, in->xattr_first + i)->name_len + 1;
	if (size == 0) {
		fuse_reply_xattr(req, total);
		return;
	}
	if (size < total) {
		fuse_reply_err(req, ERANGE);
		return;
	}
	buf = malloc(total ? total : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l->idx, in->xattr_first + i);

		memcpy(buf + pos, index_layer_str(l->idx, x->name_off), x->name_len);
		pos += x->name_len;
		buf[pos++] = '\0';
	}
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
	store_get_stats(f->store, &ss);
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
	.read = op_read,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
};

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

int fs_mount(struct store *store, const struct fs_opts *opts, struct fs **out)
{
	struct fs *f;
	char real[PATH_MAX], type[64], mopts[PATH_MAX + 128];
	struct stat st;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
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

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	clock_gettime(CLOCK_REALTIME, &f->start);
	pthread_rwlock_init(&f->layers_lock, NULL);
	f->store = store;
	f->fetch = opts->fetch;
	f->bg_wanted = opts->background;
	pthread_mutex_init(&f->inflight_mu, NULL);
	pthread_cond_init(&f->inflight_cv, NULL);
	f->max_threads = opts->max_threads ? opts->max_threads : 16;
	f->mountpoint = strdup(real);
	if (!f->mountpoint ||
	    cache_init(&f->cache, opts->chunk_cache_bytes ? opts->chunk_cache_bytes : 64ull << 20) < 0) {
		rc = -ENOMEM;
		goto fail;
	}
	{
		/* fuse_opt takes backslash escapes: protect ',' and '\\' in the source. */
		const char *src = opts->source ? opts->source : "strata";
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
	if (fuse_session_mount(f->se, f->mountpoint) != 0) {
		rc = strata_err(EIO, "cannot mount on %s (is /dev/fuse available?)", f->mountpoint);
		goto fail;
	}
	f->mounted = 1;
	fuse_opt_free_args(&args);
	*out = f;
	return 0;
fail:
	fuse_opt_free_args(&args);
	fs_free(f);
	return rc;
}

int fs_run(struct fs *f)
{
	struct fuse_loop_config *cfg;
	int rc;

	if (f->bg_wanted && f->fetch) {
		sigset_t all, old;

		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		f->bg_started = pthread_create(&f->bg_thread, NULL, bg_main, f) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!f->bg_started)
			strata_log(LOG_ERR, "cannot start the background completion thread");
	}

	if (fuse_set_signal_handlers(f->se) != 0)
		return strata_err(EIO, "cannot install signal handlers");
	f->signals_set = 1;
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(cfg, f->max_threads);
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	rc = fuse_session_loop_mt(f->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return rc < 0 ? rc : 0;
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
	if (f->bg_started) {
		f->bg_stop = 1;
		pthread_join(f->bg_thread, NULL);
	}
	if (f->se) {
		if (f->signals_set)
			fuse_remove_signal_handlers(f->se);
		if (f->mounted)
			fuse_session_unmount(f->se);
		fuse_session_destroy(f->se);
	}
	for (size_t i = 0; i < f->layers_cap; i++) {
		if (f->layers[i]) {
			index_layer_free(f->layers[i]->idx);
			fetch_ref_free(f->layers[i]->src);
			free(f->layers[i]);
		}
	}
	free(f->layers);
	cache_destroy(&f->cache);
	pthread_rwlock_destroy(&f->layers_lock);
	pthread_mutex_destroy(&f->inflight_mu);
	pthread_cond_destroy(&f->inflight_cv);
	free(f->mountpoint);
	free(f);
}

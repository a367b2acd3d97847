/* SPDX-License-Identifier: Apache-2.0 */
/* The MNT/images/<escaped ref>/rootfs view: every registered image's layers merged by strata
 * itself (merge.c), read-only, its files served from their layers. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fs_i.h"
#include "index/layer.h"
#include "als_i.h"
#include "merge_i.h"
#include "rootfs_i.h"
#include "store/store.h"
#include "util/log.h"

#define OPAQUE_XATTR "trusted.overlay.opaque"
#define SLOT_MASK    0x3fffffffu /* bit 62 is the layer store's (als_i.h) */

/* A registered image as the view knows it: its record when first seen, its merged tree once its
 * rootfs was looked up. Never freed before the mount ends (inode numbers point at it). */
struct rimage {
	uint32_t slot;
	char *ref;
	char manifest[STORE_DIGEST_LEN];
	size_t nlayers;
	char (*digests)[STORE_DIGEST_LEN];
	pthread_mutex_t build_mu;	  /* one merge at a time */
	_Atomic(struct fs_merged *) tree; /* set once, under build_mu */
	struct rimage *next;		  /* protected by fs_rootfs.mu */
};

struct fs_rootfs {
	pthread_mutex_t mu;
	struct rimage *images; /* protected by mu */
};

int fs_rootfs_create(struct fs_rootfs **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	pthread_mutex_init(&(*out)->mu, NULL);
	return 0;
}

static void rimage_free(struct rimage *im)
{
	if (!im)
		return;
	fs_merged_free(atomic_load(&im->tree));
	pthread_mutex_destroy(&im->build_mu);
	free(im->digests);
	free(im->ref);
	free(im);
}

void fs_rootfs_free(struct fs_rootfs *r)
{
	if (!r)
		return;
	while (r->images) {
		struct rimage *im = r->images;

		r->images = im->next;
		rimage_free(im);
	}
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* ---------------------------------------------------------------- names */

int fs_ref_escape(const char *ref, char *out, size_t cap)
{
	size_t n = 0;

	for (const char *p = ref; *p; p++) {
		const char *rep = *p == '/' ? "%2F" : *p == '%' ? "%25" : NULL;
		size_t len = rep ? 3 : 1;

		if (n + len >= cap)
			return -ENAMETOOLONG;
		if (rep)
			memcpy(out + n, rep, 3);
		else
			out[n] = *p;
		n += len;
	}
	if (n >= cap)
		return -ENAMETOOLONG;
	out[n] = '\0';
	return (int)n;
}

int fs_ref_unescape(const char *name, char *out, size_t cap)
{
	size_t n = 0;

	for (const char *p = name; *p; p++) {
		char c = *p;

		if (c == '/')
			return -ENOENT;
		if (c == '%') {
			if (p[1] == '2' && (p[2] == 'F' || p[2] == 'f'))
				c = '/';
			else if (p[1] == '2' && p[2] == '5')
				c = '%';
			else
				return -ENOENT;
			p += 2;
		}
		if (n + 1 >= cap)
			return -ENAMETOOLONG;
		out[n++] = c;
	}
	out[n] = '\0';
	return (int)n;
}

/* The slot of an image: FNV-1a of its reference and manifest digest, 30 bits. */
static uint32_t slot_hash(const char *ref, const char *manifest)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const char *p = ref; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	h = (h ^ '\n') * 0x100000001b3ull;
	for (const char *p = manifest; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	return (uint32_t)(h ^ (h >> 32)) & SLOT_MASK;
}

/* ---------------------------------------------------------------- images */

/* Parses the image record json of ref into a new struct rimage (not yet in the list). Returns 0
 * and *out, or -EBADMSG with strata_err set, -ENOMEM. */
static int rimage_parse(const char *ref, const char *json, struct rimage **out)
{
	json_error_t jerr;
	json_t *o = json_loads(json, 0, &jerr);
	json_t *layers = o ? json_object_get(o, "layers") : NULL;
	const char *manifest = o ? json_string_value(json_object_get(o, "manifest")) : NULL;
	struct rimage *im = NULL;
	int rc = 0;

	*out = NULL;
	if (!json_is_array(layers) || !manifest || strlen(manifest) >= STORE_DIGEST_LEN) {
		rc = strata_err(EBADMSG, "image %s: unreadable record", ref);
		goto out;
	}
	im = calloc(1, sizeof(*im));
	if (!im || !(im->ref = strdup(ref)) ||
	    !(im->digests = calloc(json_array_size(layers) + 1, sizeof(*im->digests)))) {
		rc = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&im->build_mu, NULL);
	snprintf(im->manifest, sizeof(im->manifest), "%s", manifest);
	im->nlayers = json_array_size(layers);
	for (size_t i = 0; i < im->nlayers; i++) {
		const char *d = json_string_value(
			json_object_get(json_array_get(layers, i), "digest"));

		if (!d || strlen(d) >= STORE_DIGEST_LEN) {
			rc = strata_err(EBADMSG, "image %s: unreadable record (layer %zu)", ref, i);
			goto out;
		}
		snprintf(im->digests[i], STORE_DIGEST_LEN, "%s", d);
	}
	im->slot = slot_hash(ref, manifest);
out:
	json_decref(o);
	if (rc < 0 && im) {
		if (im->digests)
			pthread_mutex_destroy(&im->build_mu);
		free(im->digests);
		free(im->ref);
		free(im);
		im = NULL;
	}
	*out = im;
	return rc;
}

/* Adds im to the list, or frees it and returns the equal image already there. A slot taken by
 * another image moves on to the next free one. Caller holds r->mu. */
static struct rimage *rimage_insert(struct fs_rootfs *r, struct rimage *im)
{
	for (;;) {
		struct rimage *o;

		for (o = r->images; o; o = o->next) {
			if (o->slot == im->slot)
				break;
		}
		if (!o)
			break;
		if (strcmp(o->ref, im->ref) == 0 && strcmp(o->manifest, im->manifest) == 0) {
			rimage_free(im);
			return o;
		}
		im->slot = (im->slot + 1) & SLOT_MASK;
	}
	im->next = r->images;
	r->images = im;
	return im;
}

/* The image ref as the store records it now. Returns 0 and *out (the view's), or negative errno
 * (-ENOENT: no such image). */
static int image_by_ref(struct fs *f, const char *ref, struct rimage **out)
{
	struct rimage *im;
	char *json = NULL;
	int rc = store_image_get(f->eng.store, ref, &json);

	*out = NULL;
	if (rc < 0)
		return rc;
	rc = rimage_parse(ref, json, &im);
	free(json);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&f->rootfs->mu);
	*out = rimage_insert(f->rootfs, im);
	pthread_mutex_unlock(&f->rootfs->mu);
	return 0;
}

struct slot_scan {
	struct fs *f;
	uint32_t slot;
	struct rimage *found;
	int rc;
};

static int slot_scan_cb(void *ctx, const char *ref, const char *json)
{
	struct slot_scan *s = ctx;
	struct rimage *im;

	if (rimage_parse(ref, json, &im) < 0) {
		strata_err_clear();
		return 0;
	}
	pthread_mutex_lock(&s->f->rootfs->mu);
	im = rimage_insert(s->f->rootfs, im);
	pthread_mutex_unlock(&s->f->rootfs->mu);
	if (im->slot == s->slot) {
		s->found = im;
		return 1;
	}
	return 0;
}

/* The image in slot: one the view knows, else one of the store's (after a takeover, the kernel
 * holds numbers the process before gave). Returns it or NULL (-ESTALE in *rc). */
static struct rimage *image_by_slot(struct fs *f, uint32_t slot, int *rc)
{
	struct slot_scan s = { f, slot, NULL, 0 };
	struct rimage *im;

	*rc = 0;
	pthread_mutex_lock(&f->rootfs->mu);
	for (im = f->rootfs->images; im; im = im->next) {
		if (im->slot == slot)
			break;
	}
	pthread_mutex_unlock(&f->rootfs->mu);
	if (im)
		return im;
	*rc = store_image_list(f->eng.store, slot_scan_cb, &s);
	if (*rc < 0)
		return NULL;
	if (!s.found)
		*rc = -ESTALE;
	return s.found;
}

/* Merges im's layers (once). Returns 0 and *out (lives as long as the mount), or negative errno
 * with strata_err set. */
static int image_tree(struct fs *f, struct rimage *im, const struct fs_merged **out)
{
	const struct index_layer **idx = NULL;
	struct fs_layer **ls = NULL;
	uint32_t *seqs = NULL;
	struct fs_merged *m;
	size_t got = 0;
	int rc = 0;

	*out = atomic_load(&im->tree);
	if (*out)
		return 0;
	pthread_mutex_lock(&im->build_mu);
	if ((*out = atomic_load(&im->tree)))
		goto out;
	ls = calloc(im->nlayers + 1, sizeof(*ls));
	idx = calloc(im->nlayers + 1, sizeof(*idx));
	seqs = calloc(im->nlayers + 1, sizeof(*seqs));
	if (!ls || !idx || !seqs) {
		rc = -ENOMEM;
		goto out;
	}
	for (; got < im->nlayers; got++) {
		rc = fs_layer_load_wait(f, im->digests[got], &ls[got]);
		if (rc < 0) {
			rc = strata_err_prefix(rc, "image %s: layer %s: ", im->ref,
					       im->digests[got]);
			goto out;
		}
		idx[got] = ls[got]->idx;
		seqs[got] = ls[got]->seq;
	}
	rc = fs_merged_build(idx, seqs, im->nlayers, &m);
	if (rc < 0) {
		rc = strata_err_prefix(rc, "image %s: ", im->ref);
		goto out;
	}
	atomic_store(&im->tree, m);
	*out = m;
out:
	pthread_mutex_unlock(&im->build_mu);
	for (size_t i = 0; i < got; i++)
		fs_layer_put(&f->eng, ls[i]);
	free(ls);
	free(idx);
	free(seqs);
	return rc;
}

/* The image and merged node (UINT32_MAX: the image's own directory) of a view inode other than
 * INO_IMAGES; *m is NULL for the image's directory. Returns 0 or negative errno. */
static int view_node(struct fs *f, fuse_ino_t ino, struct rimage **im, const struct fs_merged **m,
		     uint32_t *node)
{
	uint32_t low = (uint32_t)ino;
	int rc;

	*m = NULL;
	*node = UINT32_MAX;
	*im = image_by_slot(f, (uint32_t)(ino >> 32) & SLOT_MASK, &rc);
	if (!*im)
		return rc;
	if (low == 0)
		return 0;
	rc = image_tree(f, *im, m);
	if (rc < 0)
		return rc;
	if (low - 1 >= (*m)->nnodes)
		return -ESTALE;
	*node = low - 1;
	return 0;
}

/* ---------------------------------------------------------------- attributes */

static void dir_stat(struct fs *f, fuse_ino_t ino, nlink_t nlink, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = nlink;
	st->st_blksize = 4096;
	st->st_mtim = f->start;
	st->st_ctim = f->start;
	st->st_atim = f->start;
}

static fuse_ino_t node_ino(const struct rimage *im, uint32_t node)
{
	return FS_VIEW_BIT | ((uint64_t)im->slot << 32) | (node + 1);
}

/* Attributes of merged node n of im. Returns 0 or negative errno. */
static int merged_stat(struct fs *f, const struct rimage *im, const struct fs_merged *m, uint32_t n,
		       struct stat *st)
{
	const struct fs_mnode *mn = &m->nodes[n];
	struct fs_layer *l;
	uint32_t lnode;
	int rc;

	if (!mn->src) {
		dir_stat(f, node_ino(im, n), mn->nlink, st);
		return 0;
	}
	rc = fs_layer_of(&f->eng, mn->src, &l, &lnode);
	if (rc < 0)
		return rc;
	fs_node_stat(l, lnode, st);
	fs_layer_put(&f->eng, l);
	st->st_ino = node_ino(im, n);
	st->st_nlink = mn->nlink;
	return 0;
}

int fs_view_stat(struct fs *f, fuse_ino_t ino, struct stat *st, double *timeout)
{
	const struct fs_merged *m;
	struct rimage *im;
	uint32_t node;
	int rc;

	if (fs_als_ino(ino))
		return fs_als_stat(f, ino, st, timeout);
	*timeout = FS_VIEW_TIMEOUT;
	if (ino == INO_IMAGES) {
		dir_stat(f, ino, 2, st);
		return 0;
	}
	rc = view_node(f, ino, &im, &m, &node);
	if (rc < 0)
		return rc;
	if (!m) {
		dir_stat(f, ino, 3, st);
		return 0;
	}
	*timeout = FS_CONTENT_TIMEOUT;
	return merged_stat(f, im, m, node, st);
}

int fs_view_src(struct fs *f, fuse_ino_t ino, fuse_ino_t *src, uint32_t *mode)
{
	const struct fs_merged *m;
	struct rimage *im;
	uint32_t node;
	int rc;

	if (fs_als_ino(ino))
		return fs_als_src(f, ino, src, mode);
	*src = 0;
	*mode = S_IFDIR;
	if (ino == INO_IMAGES)
		return 0;
	rc = view_node(f, ino, &im, &m, &node);
	if (rc < 0 || !m)
		return rc;
	*src = m->nodes[node].src;
	*mode = m->nodes[node].mode;
	return 0;
}

/* ---------------------------------------------------------------- lookup */

int fs_view_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	const struct fs_merged *m;
	struct rimage *im;
	uint32_t node;
	int64_t child;
	int rc;

	if (fs_als_ino(parent))
		return fs_als_lookup(f, parent, name, e);
	memset(e, 0, sizeof(*e));
	if (parent == INO_IMAGES) {
		char ref[PATH_MAX];

		if (fs_ref_unescape(name, ref, sizeof(ref)) < 0)
			return -ENOENT;
		rc = image_by_ref(f, ref, &im);
		if (rc < 0)
			return rc;
		e->ino = FS_VIEW_BIT | ((uint64_t)im->slot << 32);
		dir_stat(f, e->ino, 3, &e->attr);
		e->attr_timeout = e->entry_timeout = FS_VIEW_TIMEOUT;
		return 0;
	}
	rc = view_node(f, parent, &im, &m, &node);
	if (rc < 0)
		return rc;
	if (!m) {
		if (strcmp(name, ROOTFS_NAME) != 0)
			return -ENOENT;
		rc = image_tree(f, im, &m);
		if (rc < 0)
			return rc;
		child = 0;
	} else {
		child = fs_merged_lookup(m, node, name, strlen(name));
		if (child < 0)
			return (int)child;
	}
	rc = merged_stat(f, im, m, (uint32_t)child, &e->attr);
	if (rc < 0)
		return rc;
	e->ino = node_ino(im, (uint32_t)child);
	e->attr_timeout = e->entry_timeout = FS_CONTENT_TIMEOUT;
	return 0;
}

/* ---------------------------------------------------------------- readdir */

/* The escaped names of the store's images and their directories' inodes, at one moment. */
struct image_list {
	struct fs *f;
	size_t n, cap;
	char (*names)[NAME_MAX + 1];
	fuse_ino_t *inos;
};

static int image_list_cb(void *ctx, const char *ref, const char *json)
{
	struct image_list *il = ctx;
	struct rimage *im;

	if (il->n == il->cap) {
		size_t ncap = il->cap ? il->cap * 2 : 16;
		void *nn = realloc(il->names, ncap * sizeof(*il->names));

		if (!nn)
			return -ENOMEM;
		il->names = nn;
		nn = realloc(il->inos, ncap * sizeof(*il->inos));
		if (!nn)
			return -ENOMEM;
		il->inos = nn;
		il->cap = ncap;
	}
	/* a reference too long for a name is only not listed */
	if (fs_ref_escape(ref, il->names[il->n], NAME_MAX + 1) < 0)
		return 0;
	if (rimage_parse(ref, json, &im) < 0) {
		strata_log(LOG_WARNING, "%s", strata_errmsg(EBADMSG));
		return 0;
	}
	pthread_mutex_lock(&il->f->rootfs->mu);
	im = rimage_insert(il->f->rootfs, im);
	pthread_mutex_unlock(&il->f->rootfs->mu);
	il->inos[il->n++] = FS_VIEW_BIT | ((uint64_t)im->slot << 32);
	return 0;
}

/* Entry idx (past "." and "..") of view directory ino: 1 and name/child/st, 0 past the end,
 * negative errno. st is filled only when plus is set (and for the kind of entry always). */
static int view_entry(struct fs *f, fuse_ino_t ino, const struct image_list *il,
		      const struct rimage *im, const struct fs_merged *m, uint32_t node, size_t idx,
		      int plus, char *name, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	if (ino == INO_IMAGES) {
		if (idx >= il->n)
			return 0;
		strcpy(name, il->names[idx]);
		dir_stat(f, il->inos[idx], 3, st);
		return 1;
	}
	if (!m) {
		const struct fs_merged *t;
		int rc;

		if (idx > 0)
			return 0;
		strcpy(name, ROOTFS_NAME);
		st->st_ino = node_ino(im, 0);
		st->st_mode = S_IFDIR;
		if (!plus)
			return 1;
		rc = image_tree(f, (struct rimage *)im, &t);
		return rc < 0 ? rc : merged_stat(f, im, t, 0, st) < 0 ? -EIO : 1;
	}
	if (idx >= m->nodes[node].nkids)
		return 0;
	{
		const struct fs_mkid *k = &m->nodes[node].kids[idx];
		int rc;

		memcpy(name, m->names + k->name_off, k->name_len);
		name[k->name_len] = '\0';
		st->st_ino = node_ino(im, k->node);
		st->st_mode = m->nodes[k->node].mode;
		if (!plus)
			return 1;
		rc = merged_stat(f, im, m, k->node, st);
		return rc < 0 ? rc : 1;
	}
}

int fs_dir_fill(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus, double timeout,
		fs_dir_entry_fn fn, void *ctx, char **out, size_t *used)
{
	char name[NAME_MAX + 1];
	char *buf = malloc(size);
	int rc = 0;

	*out = buf;
	*used = 0;
	if (!buf)
		return -ENOMEM;
	for (off_t idx = off;; idx++) {
		struct fuse_entry_param e;
		size_t need;

		memset(&e, 0, sizeof(e));
		if (idx < 2) {
			strcpy(name, idx == 0 ? "." : "..");
			e.attr.st_ino = ino;
			e.attr.st_mode = S_IFDIR;
		} else {
			rc = fn(ctx, (size_t)idx - 2, plus, name, &e.attr);
			if (rc <= 0)
				break;
			rc = 0;
			e.ino = e.attr.st_ino;
			e.attr_timeout = e.entry_timeout = timeout;
		}
		if (plus)
			need = fuse_add_direntry_plus(req, buf + *used, size - *used, name, &e,
						      idx + 1);
		else
			need = fuse_add_direntry(req, buf + *used, size - *used, name, &e.attr,
						 idx + 1);
		if (need > size - *used)
			break;
		*used += need;
	}
	return rc;
}

/* What view_dir_entry lists: images/ (il) or a merged directory (im, m, node). */
struct view_dir {
	struct fs *f;
	fuse_ino_t ino;
	struct image_list il;
	const struct fs_merged *m;
	struct rimage *im;
	uint32_t node;
};

static int view_dir_entry(void *ctx, size_t i, int plus, char *name, struct stat *st)
{
	struct view_dir *v = ctx;

	return view_entry(v->f, v->ino, &v->il, v->im, v->m, v->node, i, plus, name, st);
}

int fs_view_readdir(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off, int plus,
		    char **out, size_t *used)
{
	struct view_dir v = { .f = f, .ino = ino, .il = { .f = f } };
	int rc;

	if (fs_als_ino(ino))
		return fs_als_readdir(req, f, ino, size, off, plus, out, used);
	*out = NULL;
	*used = 0;
	if (ino == INO_IMAGES)
		rc = store_image_list(f->eng.store, image_list_cb, &v.il);
	else
		rc = view_node(f, ino, &v.im, &v.m, &v.node);
	if (rc == 0 && v.m && v.m->nodes[v.node].mode != S_IFDIR)
		rc = -ENOTDIR;
	if (rc == 0)
		rc = fs_dir_fill(req, ino, size, off, plus,
				 ino == INO_IMAGES ? FS_VIEW_TIMEOUT : FS_CONTENT_TIMEOUT,
				 view_dir_entry, &v, out, used);
	free(v.il.names);
	free(v.il.inos);
	return rc;
}

/* Whether xattr name is one the merged view hides (the overlay marker merge.c applied). */
int fs_view_hidden_xattr(const char *name, size_t len)
{
	return len == sizeof(OPAQUE_XATTR) - 1 && memcmp(name, OPAQUE_XATTR, len) == 0;
}

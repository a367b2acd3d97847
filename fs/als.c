/* SPDX-License-Identifier: Apache-2.0 */
/* The podman / CRI-O additional layer store, MNT/store/<base64 ref>/<layer digest>/{diff,info,
 * blob}: lookup-driven (an unknown reference is pulled as `strata pull` does), read-only. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "als_i.h"
#include "als_layer_i.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "fs_i.h"
#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"
#include "util/mem.h"

#define NEG_TTL_S   30	 /* an unresolvable reference answers ENOENT at once for this long */
#define MAX_REF_LEN 1024 /* bytes of a decoded reference */

/* A reference's directory. */
struct aref {
	uint32_t slot;
	char *ref; /* normalized */
	struct aref *next;
};

/* A reference that did not resolve, until when. */
struct neg {
	char *ref;
	time_t until;
	struct neg *next;
};

struct fs_als {
	pthread_mutex_t mu; /* the lists */
	struct aref *refs;
	struct alayer *layers;
	struct neg *negs;
	pthread_mutex_t resolve_mu; /* one resolution at a time */
	fs_resolve_fn resolve;
	void *resolve_ctx;
};

int fs_als_create(struct fs_als **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	pthread_mutex_init(&(*out)->mu, NULL);
	pthread_mutex_init(&(*out)->resolve_mu, NULL);
	return 0;
}

void fs_als_free(struct fs_als *a)
{
	if (!a)
		return;
	while (a->refs) {
		struct aref *r = a->refs;

		a->refs = r->next;
		free(r->ref);
		free(r);
	}
	while (a->layers) {
		struct alayer *l = a->layers;

		a->layers = l->next;
		if (l->blob_fd >= 0)
			close(l->blob_fd);
		pthread_mutex_destroy(&l->mu);
		free(l->info);
		free(l->ref);
		free(l);
	}
	while (a->negs) {
		struct neg *n = a->negs;

		a->negs = n->next;
		free(n->ref);
		free(n);
	}
	pthread_mutex_destroy(&a->resolve_mu);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

void fs_set_resolver(struct fs *f, fs_resolve_fn fn, void *ctx)
{
	f->als->resolve_ctx = ctx;
	f->als->resolve = fn;
}

/* FNV-1a of a and b (b may be NULL), 30 bits. */
static uint32_t slot_of(const char *a, const char *b)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (const char *p = a; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	if (b) {
		h = (h ^ '\n') * 0x100000001b3ull;
		for (const char *p = b; *p; p++)
			h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	}
	return (uint32_t)(h ^ (h >> 32)) & ALS_SLOT_MASK;
}

static fuse_ino_t als_ino(uint32_t slot, uint32_t low)
{
	return FS_VIEW_BIT | FS_ALS_BIT | ((uint64_t)slot << 32) | low;
}

/* ---------------------------------------------------------------- references and layers */

/* The image record of ref: its "layers" array in *layers (a new reference: json_decref). */
static int image_layers(struct fs *f, const char *ref, json_t **layers)
{
	char *json = NULL;
	json_error_t jerr;
	json_t *o;
	int rc = store_image_get(f->eng.store, ref, &json);

	*layers = NULL;
	if (rc < 0)
		return rc;
	o = json_loads(json, 0, &jerr);
	free(json);
	if (o && json_is_array(json_object_get(o, "layers")))
		*layers = json_incref(json_object_get(o, "layers"));
	json_decref(o);
	return *layers ? 0 : strata_err(EBADMSG, "image %s: unreadable record", ref);
}

/* Registers ref's directory (normalized ref). Returns its slot, or negative errno. */
static int64_t aref_add(struct fs_als *a, const char *ref)
{
	uint32_t slot = slot_of(ref, NULL);
	struct aref *r;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		for (r = a->refs; r && r->slot != slot; r = r->next)
			;
		if (!r || strcmp(r->ref, ref) == 0)
			break;
		slot = (slot + 1) & ALS_SLOT_MASK;
	}
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r || !(r->ref = strdup(ref))) {
			free(r);
			pthread_mutex_unlock(&a->mu);
			return -ENOMEM;
		}
		r->slot = slot;
		r->next = a->refs;
		a->refs = r;
	}
	pthread_mutex_unlock(&a->mu);
	return slot;
}

/* Registers layer desc (an element of an image record's "layers") of ref. Returns it. */
static struct alayer *alayer_add(struct fs_als *a, const char *ref, json_t *desc, int *rc)
{
	const char *digest = json_string_value(json_object_get(desc, "digest"));
	const char *diff_id = json_string_value(json_object_get(desc, "diff_id"));
	const char *mt = json_string_value(json_object_get(desc, "media_type"));
	uint32_t slot;
	struct alayer *l;

	*rc = 0;
	if (!digest || strlen(digest) >= STORE_DIGEST_LEN) {
		*rc = strata_err(EBADMSG, "image %s: unreadable record", ref);
		return NULL;
	}
	slot = slot_of(ref, digest);
	pthread_mutex_lock(&a->mu);
	for (;;) {
		for (l = a->layers; l && l->slot != slot; l = l->next)
			;
		if (!l || (strcmp(l->ref, ref) == 0 && strcmp(l->digest, digest) == 0))
			break;
		slot = (slot + 1) & ALS_SLOT_MASK;
	}
	if (!l) {
		l = calloc(1, sizeof(*l));
		if (!l || !(l->ref = strdup(ref))) {
			free(l);
			pthread_mutex_unlock(&a->mu);
			*rc = -ENOMEM;
			return NULL;
		}
		l->slot = slot;
		l->blob_fd = -1;
		pthread_mutex_init(&l->mu, NULL);
		snprintf(l->digest, sizeof(l->digest), "%s", digest);
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", diff_id ? diff_id : "");
		snprintf(l->media_type, sizeof(l->media_type), "%s", mt ? mt : "");
		l->size = (uint64_t)json_integer_value(json_object_get(desc, "size"));
		l->next = a->layers;
		a->layers = l;
	}
	pthread_mutex_unlock(&a->mu);
	return l;
}

/* Registers every image of the store (a takeover: the kernel holds numbers of the process before
 * this one). Returns 0 or negative errno. */
static int scan_cb(void *ctx, const char *ref, const char *json)
{
	struct fs *f = ctx;
	json_error_t jerr;
	json_t *o = json_loads(json, 0, &jerr);
	json_t *layers = o ? json_object_get(o, "layers") : NULL;
	int rc = 0;

	if (json_is_array(layers) && aref_add(f->als, ref) >= 0) {
		for (size_t i = 0; i < json_array_size(layers); i++)
			alayer_add(f->als, ref, json_array_get(layers, i), &rc);
	}
	json_decref(o);
	strata_err_clear();
	return 0;
}

void *fs_als_by_slot(struct fs *f, uint32_t slot, int ref, int *rc)
{
	void *found = NULL;

	*rc = 0;
	for (int pass = 0; pass < 2 && !found; pass++) {
		if (pass == 1) {
			*rc = store_image_list(f->eng.store, scan_cb, f);
			if (*rc < 0)
				return NULL;
		}
		pthread_mutex_lock(&f->als->mu);
		if (ref) {
			struct aref *r;

			for (r = f->als->refs; r && r->slot != slot; r = r->next)
				;
			found = r;
		} else {
			struct alayer *l;

			for (l = f->als->layers; l && l->slot != slot; l = l->next)
				;
			found = l;
		}
		pthread_mutex_unlock(&f->als->mu);
	}
	if (!found)
		*rc = -ESTALE;
	return found;
}

/* Pulls ref (normalized) through the daemon's resolver, unless it failed less than NEG_TTL_S
 * ago. Returns 0 or -ENOENT. */
static int resolve(struct fs *f, const char *ref)
{
	struct fs_als *a = f->als;
	time_t now = time(NULL);
	struct neg *n;
	int rc;

	pthread_mutex_lock(&a->resolve_mu);
	for (n = a->negs; n; n = n->next) {
		if (strcmp(n->ref, ref) == 0 && n->until > now) {
			pthread_mutex_unlock(&a->resolve_mu);
			return -ENOENT;
		}
	}
	rc = a->resolve ? a->resolve(a->resolve_ctx, ref) : -ENOENT;
	if (rc < 0) {
		strata_log(LOG_WARNING, "store/: %s: %s", ref,
			   a->resolve ? strata_errmsg(rc) : "no registry access in this process");
		for (n = a->negs; n && strcmp(n->ref, ref) != 0; n = n->next)
			;
		if (!n && (n = calloc(1, sizeof(*n)))) {
			n->ref = strdup(ref);
			if (n->ref) {
				n->next = a->negs;
				a->negs = n;
			} else {
				free(n);
				n = NULL;
			}
		}
		if (n)
			n->until = time(NULL) + NEG_TTL_S;
		rc = -ENOENT;
	}
	pthread_mutex_unlock(&a->resolve_mu);
	return rc;
}

/* ---------------------------------------------------------------- attributes */

static void synth_stat(struct fs *f, fuse_ino_t ino, mode_t mode, uint64_t size, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_blksize = 4096;
	st->st_mtim = f->start;
	st->st_ctim = f->start;
	st->st_atim = f->start;
}

/* Attributes of node of l's diff/ tree. */
static int diff_stat(struct fs *f, struct alayer *l, uint32_t node, struct stat *st)
{
	struct fs_layer *fl;
	uint32_t lnode;
	uint32_t seq = atomic_load(&l->seq);
	int rc;

	if (!seq) {
		rc = fs_als_layer_of(f, l, &fl);
		if (rc < 0)
			return rc;
		fs_layer_put(&f->eng, fl);
		seq = atomic_load(&l->seq);
	}
	rc = fs_layer_of(&f->eng, ((uint64_t)seq << 32) | node, &fl, &lnode);
	if (rc < 0)
		return rc;
	fs_node_stat(fl, lnode, st);
	fs_layer_put(&f->eng, fl);
	st->st_ino = als_ino(l->slot, ALS_LOW_DIFF + node);
	return 0;
}

int fs_als_stat(struct fs *f, fuse_ino_t ino, struct stat *st, double *timeout)
{
	uint32_t low = (uint32_t)ino, slot = (uint32_t)(ino >> 32) & ALS_SLOT_MASK;
	struct alayer *l;
	int rc;

	*timeout = FS_VIEW_TIMEOUT;
	if (ino == INO_STORE) {
		synth_stat(f, ino, S_IFDIR | 0755, 0, st);
		return 0;
	}
	if (low == ALS_LOW_REF) {
		if (!fs_als_by_slot(f, slot, 1, &rc))
			return rc;
		synth_stat(f, ino, S_IFDIR | 0755, 0, st);
		return 0;
	}
	l = fs_als_by_slot(f, slot, 0, &rc);
	if (!l)
		return rc;
	*timeout = FS_CONTENT_TIMEOUT;
	if (low == 0) {
		synth_stat(f, ino, S_IFDIR | 0555, 0, st);
		return 0;
	}
	if (low == ALS_LOW_INFO) {
		rc = fs_als_make_info(f, l);
		if (rc == 0)
			synth_stat(f, ino, S_IFREG | 0444, l->info_len, st);
		return rc;
	}
	if (low == ALS_LOW_BLOB) {
		synth_stat(f, ino, S_IFREG | 0444, l->size, st);
		return 0;
	}
	if (low < ALS_LOW_DIFF)
		return -ESTALE;
	return diff_stat(f, l, low - ALS_LOW_DIFF, st);
}

int fs_als_src(struct fs *f, fuse_ino_t ino, fuse_ino_t *src, uint32_t *mode)
{
	uint32_t low = (uint32_t)ino;
	struct alayer *l;
	struct stat st;
	int rc;

	*src = 0;
	*mode = S_IFDIR;
	if (ino == INO_STORE || low == ALS_LOW_REF || low == 0)
		return 0;
	if (low < ALS_LOW_DIFF) {
		*mode = S_IFREG;
		return 0;
	}
	l = fs_als_by_slot(f, (uint32_t)(ino >> 32) & ALS_SLOT_MASK, 0, &rc);
	if (!l)
		return rc;
	rc = diff_stat(f, l, low - ALS_LOW_DIFF, &st); /* sets l->seq */
	if (rc < 0)
		return rc;
	*src = ((uint64_t)atomic_load(&l->seq) << 32) | (low - ALS_LOW_DIFF);
	*mode = st.st_mode & S_IFMT;
	return 0;
}

/* ---------------------------------------------------------------- lookup */

/* The reference a name of store/ stands for, normalized into out. Returns 0 or -ENOENT. */
static int name_ref(const char *name, char *out, size_t cap)
{
	struct fetch_ref *r = NULL;
	uint8_t *raw = NULL;
	size_t len = 0;
	char *norm = NULL;
	int rc = -ENOENT;

	if (util_base64_decode(name, strlen(name), &raw, &len) < 0 || len == 0 ||
	    len > MAX_REF_LEN || memchr(raw, '\0', len))
		goto out;
	{
		char *s = strndup((const char *)raw, len);

		if (s && fetch_ref_parse(s, &r) == 0)
			norm = fetch_ref_string(r);
		free(s);
	}
	if (norm && strlen(norm) < cap) {
		strcpy(out, norm);
		rc = 0;
	}
out:
	strata_err_clear();
	fetch_ref_free(r);
	free(norm);
	free(raw);
	return rc;
}

/* The layer digest of ref's image: registered, or -ENOENT (after one more resolution when the
 * record lacks it: the tag may have moved). */
static int find_layer(struct fs *f, const char *ref, const char *digest, struct alayer **out)
{
	*out = NULL;
	for (int pass = 0; pass < 2; pass++) {
		json_t *layers;
		int rc = image_layers(f, ref, &layers);

		if (rc == 0) {
			for (size_t i = 0; i < json_array_size(layers) && !*out; i++) {
				json_t *d = json_array_get(layers, i);
				const char *dg = json_string_value(json_object_get(d, "digest"));

				if (dg && strcmp(dg, digest) == 0)
					*out = alayer_add(f->als, ref, d, &rc);
			}
			json_decref(layers);
			if (*out)
				return 0;
			if (rc < 0)
				return rc;
		} else if (rc != -ENOENT) {
			return rc;
		}
		if (pass == 0 && resolve(f, ref) < 0)
			return -ENOENT;
	}
	return -ENOENT;
}

static int lookup_layer_dir(struct fs *f, struct alayer *l, const char *name,
			    struct fuse_entry_param *e)
{
	fuse_ino_t ino;
	int rc;

	if (strcmp(name, "diff") == 0)
		ino = als_ino(l->slot, ALS_LOW_DIFF);
	else if (strcmp(name, "info") == 0)
		ino = als_ino(l->slot, ALS_LOW_INFO);
	else if (strcmp(name, "blob") == 0)
		ino = als_ino(l->slot, ALS_LOW_BLOB);
	else
		return -ENOENT; /* "use" too: see fs_als_use */
	rc = fs_als_stat(f, ino, &e->attr, &e->attr_timeout);
	e->ino = ino;
	e->entry_timeout = e->attr_timeout;
	return rc;
}

int fs_als_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	uint32_t low = (uint32_t)parent, slot = (uint32_t)(parent >> 32) & ALS_SLOT_MASK;
	struct fs_layer *fl;
	struct alayer *l;
	int64_t child;
	uint32_t lnode;
	int rc;

	memset(e, 0, sizeof(*e));
	if (parent == INO_STORE) {
		char ref[MAX_REF_LEN + 1];
		char *json = NULL;
		int64_t s;

		if (name_ref(name, ref, sizeof(ref)) < 0)
			return -ENOENT;
		rc = store_image_get(f->eng.store, ref, &json);
		free(json);
		if (rc == -ENOENT)
			rc = resolve(f, ref);
		if (rc < 0)
			return rc;
		s = aref_add(f->als, ref);
		if (s < 0)
			return (int)s;
		e->ino = als_ino((uint32_t)s, ALS_LOW_REF);
		synth_stat(f, e->ino, S_IFDIR | 0755, 0, &e->attr);
		e->attr_timeout = e->entry_timeout = FS_VIEW_TIMEOUT;
		return 0;
	}
	if (low == ALS_LOW_REF) {
		struct aref *r = fs_als_by_slot(f, slot, 1, &rc);

		if (!r)
			return rc;
		if (strncmp(name, "sha256:", 7) != 0 || strlen(name) != 71)
			return -ENOENT;
		rc = find_layer(f, r->ref, name, &l);
		if (rc < 0)
			return rc;
		e->ino = als_ino(l->slot, 0);
		synth_stat(f, e->ino, S_IFDIR | 0555, 0, &e->attr);
		e->attr_timeout = e->entry_timeout = FS_CONTENT_TIMEOUT;
		return 0;
	}
	l = fs_als_by_slot(f, slot, 0, &rc);
	if (!l)
		return rc;
	if (low == 0)
		return lookup_layer_dir(f, l, name, e);
	if (low < ALS_LOW_DIFF)
		return -ENOTDIR;
	rc = diff_stat(f, l, low - ALS_LOW_DIFF, &e->attr); /* sets l->seq */
	if (rc < 0)
		return rc;
	rc = fs_layer_of(&f->eng, ((uint64_t)atomic_load(&l->seq) << 32) | (low - ALS_LOW_DIFF),
			 &fl, &lnode);
	if (rc < 0)
		return rc;
	child = index_layer_lookup(fl->idx, lnode, name, strlen(name));
	fs_layer_put(&f->eng, fl);
	if (child < 0)
		return (int)child;
	rc = diff_stat(f, l, (uint32_t)child, &e->attr);
	e->ino = e->attr.st_ino;
	e->attr_timeout = e->entry_timeout = FS_CONTENT_TIMEOUT;
	return rc;
}

/* ---------------------------------------------------------------- readdir */

/* Entry idx (after "." and "..") of store view directory ino into name and st (st_ino and the
 * type; all of it when plus). Returns 1, 0 past the end, or negative errno. */
static int als_entry(struct fs *f, fuse_ino_t ino, struct fs_layer *fl, uint32_t lnode,
		     struct alayer *l, json_t *layers, const char *ref, size_t idx, int plus,
		     char *name, struct stat *st)
{
	static const char *const files[] = { "blob", "diff", "info" };
	static const uint32_t lows[] = { ALS_LOW_BLOB, ALS_LOW_DIFF, ALS_LOW_INFO };
	double t;
	int rc;

	memset(st, 0, sizeof(*st));
	if (ino == INO_STORE)
		return 0; /* lookup-driven: nothing is listed */
	if (layers) {
		const char *dg;
		struct alayer *c;

		if (idx >= json_array_size(layers))
			return 0;
		c = alayer_add(f->als, ref, json_array_get(layers, idx), &rc);
		if (!c)
			return rc;
		dg = json_string_value(json_object_get(json_array_get(layers, idx), "digest"));
		snprintf(name, NAME_MAX + 1, "%s", dg);
		synth_stat(f, als_ino(c->slot, 0), S_IFDIR | 0555, 0, st);
		return 1;
	}
	if (!fl) {
		if (idx >= 3)
			return 0;
		strcpy(name, files[idx]);
		st->st_ino = als_ino(l->slot, lows[idx]);
		st->st_mode = idx == 1 ? S_IFDIR : S_IFREG;
		if (!plus)
			return 1;
		rc = fs_als_stat(f, st->st_ino, st, &t);
		return rc < 0 ? rc : 1;
	}
	{
		const struct index_inode *in = index_layer_inode(fl->idx, lnode);
		const struct index_dirent *de;

		if (idx >= in->count)
			return 0;
		de = index_layer_dirent(fl->idx, in->first + (uint32_t)idx);
		if (de->name_len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, index_layer_str(fl->idx, de->name_off), de->name_len);
		name[de->name_len] = '\0';
		fs_node_stat(fl, de->ino, st);
		st->st_ino = als_ino(l->slot, ALS_LOW_DIFF + de->ino);
		return 1;
	}
}

/* What als_dir_entry lists: MNT/store, a reference's layers, a layer or a diff/ directory. */
struct als_dir {
	struct fs *f;
	fuse_ino_t ino;
	struct fs_layer *fl;
	uint32_t lnode;
	struct alayer *l;
	json_t *layers;
	const char *ref;
};

static int als_dir_entry(void *ctx, size_t i, int plus, char *name, struct stat *st)
{
	struct als_dir *v = ctx;

	return als_entry(v->f, v->ino, v->fl, v->lnode, v->l, v->layers, v->ref, i, plus, name, st);
}

int fs_als_readdir(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off, int plus,
		   char **out, size_t *used)
{
	uint32_t low = (uint32_t)ino, slot = (uint32_t)(ino >> 32) & ALS_SLOT_MASK;
	struct fs_layer *fl = NULL;
	struct alayer *l = NULL;
	struct aref *r = NULL;
	json_t *layers = NULL;
	uint32_t lnode = 0;
	int rc = 0;

	*out = NULL;
	*used = 0;
	if (ino != INO_STORE && low == ALS_LOW_REF) {
		r = fs_als_by_slot(f, slot, 1, &rc);
		if (r)
			rc = image_layers(f, r->ref, &layers);
	} else if (ino != INO_STORE) {
		l = fs_als_by_slot(f, slot, 0, &rc);
		if (l && low >= ALS_LOW_DIFF) {
			struct stat st;

			rc = diff_stat(f, l, low - ALS_LOW_DIFF, &st);
			if (rc == 0 && !S_ISDIR(st.st_mode))
				rc = -ENOTDIR;
			if (rc == 0)
				rc = fs_layer_of(&f->eng,
						 ((uint64_t)atomic_load(&l->seq) << 32) |
							 (low - ALS_LOW_DIFF),
						 &fl, &lnode);
		} else if (l && low != 0) {
			rc = -ENOTDIR;
		}
	}
	if (rc == 0) {
		struct als_dir v = { f, ino, fl, lnode, l, layers, r ? r->ref : NULL };

		rc = fs_dir_fill(req, ino, size, off, plus, FS_CONTENT_TIMEOUT, als_dir_entry, &v,
				 out, used);
	}
	fs_layer_put(&f->eng, fl);
	json_decref(layers);
	return rc;
}

/* ---------------------------------------------------------------- use and release */

int fs_als_use(struct fs *f, fuse_ino_t parent, const char *name)
{
	struct alayer *l;
	int rc;

	if (!fs_als_ino(parent) || parent == INO_STORE || (uint32_t)parent != 0 ||
	    strcmp(name, "use") != 0)
		return -EROFS;
	l = fs_als_by_slot(f, (uint32_t)(parent >> 32) & ALS_SLOT_MASK, 0, &rc);
	if (!l)
		return rc;
	pthread_mutex_lock(&l->mu);
	l->uses++;
	pthread_mutex_unlock(&l->mu);
	return -ENOENT;
}

int fs_als_release(struct fs *f, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	struct alayer *l;
	int rc;

	if (!fs_als_ino(parent) || parent == INO_STORE || (uint32_t)parent != ALS_LOW_REF)
		return -EROFS;
	rc = fs_als_lookup(f, parent, name, &e);
	if (rc < 0)
		return rc;
	l = fs_als_by_slot(f, (uint32_t)(e.ino >> 32) & ALS_SLOT_MASK, 0, &rc);
	if (!l)
		return rc;
	pthread_mutex_lock(&l->mu);
	if (l->uses)
		l->uses--;
	pthread_mutex_unlock(&l->mu);
	return -ENOENT;
}

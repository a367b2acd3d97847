/* SPDX-License-Identifier: Apache-2.0 */
/* gc: deletes layer records no image lists, pending layers no image names, unused chunks. */
#include "maint_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dset_i.h"
#include "index/layer.h"
#include "util/log.h"

struct gc {
	struct store *s;
	const struct store_maint_hooks *h;
	json_t *keep_layers; /* object: layer digest -> true, for every layer an image lists */
	struct dset refs;    /* chunks referenced by a kept layer */
	uint8_t (*del)[32];  /* chunks to delete */
	size_t ndel, capdel;
	uint64_t chunks, chunk_bytes, layers, layers_kept;
	json_t *layer_keys;   /* array: every layer record when gc started */
	json_t *freed_layers; /* array of digests */
	json_t *pending_keys; /* array: every pending layer when gc started */
	char bad_layer[STORE_DIGEST_LEN];
};

static int gc_image_cb(void *ctx, const char *ref, const char *json)
{
	struct gc *g = ctx;
	json_error_t jerr;
	json_t *o = json_loads(json, 0, &jerr);
	int rc;

	if (!o) {
		/* Cannot tell which layers it needs: keep everything. */
		strata_log(LOG_WARNING, "gc: image %s: unreadable record", ref);
		snprintf(g->bad_layer, sizeof(g->bad_layer), "%s", ref);
		return -EBADMSG;
	}
	rc = store_image_layer_set(o, g->keep_layers);
	json_decref(o);
	return rc;
}

static int gc_key_cb(void *ctx, const char *key)
{
	struct gc *g = ctx;

	return json_array_append_new(g->layer_keys, json_string(key)) < 0 ? -ENOMEM : 0;
}

static int gc_pending_cb(void *ctx, const struct store_layer *l)
{
	struct gc *g = ctx;

	return json_array_append_new(g->pending_keys, json_string(l->digest)) < 0 ? -ENOMEM : 0;
}

static int gc_layer(struct gc *g, const char *key)
{
	struct index_layer *l = NULL;
	int rc;

	if (maint_cancelled(g->h))
		return -ECANCELED;
	if (!json_object_get(g->keep_layers, key)) {
		json_array_append_new(g->freed_layers, json_string(key));
		return 0;
	}
	g->layers_kept++;
	rc = store_layer_load_index(g->s, key, &l);
	if (rc == -EBADMSG) {
		/* Its chunks are unknown: deleting any chunk now could lose a kept layer's data. */
		snprintf(g->bad_layer, sizeof(g->bad_layer), "%s", key);
		strata_err_clear();
		return -EBADMSG;
	}
	if (rc == 0)
		rc = dset_add_layer(&g->refs, l);
	index_layer_free(l);
	return rc;
}

static int gc_chunk_cb(void *ctx, const uint8_t digest[32], size_t stored_len, int verified)
{
	struct gc *g = ctx;

	(void)verified;
	if (maint_cancelled(g->h))
		return -ECANCELED;
	if (dset_has(&g->refs, digest))
		return 0;
	if (g->ndel == g->capdel) {
		size_t cap = g->capdel ? g->capdel * 2 : 4096;
		void *n = realloc(g->del, cap * sizeof(*g->del));

		if (!n)
			return -ENOMEM;
		g->del = n;
		g->capdel = cap;
	}
	memcpy(g->del[g->ndel++], digest, 32);
	g->chunks++;
	g->chunk_bytes += stored_len;
	if (g->chunks % MAINT_PROGRESS_EVERY == 0 && g->h && g->h->progress)
		g->h->progress(g->h->ctx, g->chunks, 0);
	return 0;
}

/* The first pass, under the layers lock: which layers and chunks every image keeps. */
static int gc_mark(struct gc *g)
{
	size_t i;
	json_t *d;
	int rc;

	rc = store_layer_keys(g->s, gc_key_cb, g);
	if (rc == 0)
		rc = store_pending_list(g->s, gc_pending_cb, g);
	if (rc == 0)
		rc = store_image_list(g->s, gc_image_cb, g);
	json_array_foreach (g->layer_keys, i, d) {
		if (rc == 0)
			rc = gc_layer(g, json_string_value(d));
	}
	if (rc == 0)
		rc = store_chunk_scan(g->s, 0, gc_chunk_cb, g);
	if (g->h && g->h->progress)
		g->h->progress(g->h->ctx, g->chunks, 1);
	if (rc < 0)
		return rc;
	json_array_foreach (g->pending_keys, i, d) {
		/* A pending layer no image names: nothing to stream any more. */
		if (!json_object_get(g->keep_layers, json_string_value(d)) &&
		    json_array_append(g->freed_layers, d) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Copies the freed layers' digests into res. Returns 0 or -ENOMEM. */
static int gc_freed_list(const struct gc *g, struct store_gc_result *res)
{
	size_t i, n = json_array_size(g->freed_layers);
	json_t *d;

	res->freed_layers = calloc(n ? n : 1, sizeof(*res->freed_layers));
	if (!res->freed_layers)
		return -ENOMEM;
	json_array_foreach (g->freed_layers, i, d) {
		res->freed_layers[i] = strdup(json_string_value(d));
		if (!res->freed_layers[i])
			return -ENOMEM;
		res->nfreed_layers++;
	}
	return 0;
}

int store_gc(struct store *s, const struct store_maint_hooks *hooks, struct store_gc_result *res)
{
	struct gc g = { 0 };
	int locked = 0, rc;

	memset(res, 0, sizeof(*res));
	g.s = s;
	g.h = hooks;
	g.keep_layers = json_object();
	g.layer_keys = json_array();
	g.freed_layers = json_array();
	g.pending_keys = json_array();
	if (!g.keep_layers || !g.layer_keys || !g.freed_layers || !g.pending_keys) {
		rc = -ENOMEM;
		goto out;
	}
	/* Layer keys, then images, then chunks. A layer a concurrent pull writes after the first
	 * pass is never deleted (its image may not be written yet); at worst some of its chunks are
	 * deleted and fetched again when read. */
	store_layers_wrlock(s);
	locked = 1;
	rc = gc_mark(&g);
	if (rc == 0)
		rc = gc_freed_list(&g, res);
	for (size_t i = 0; rc == 0 && i < res->nfreed_layers; i++) {
		rc = store_layer_del(s, res->freed_layers[i]);
		if (rc == 0)
			rc = store_pending_del(s, res->freed_layers[i]);
	}
	if (rc < 0)
		goto out;
	store_layers_unlock(s);
	locked = 0;
	for (size_t off = 0; off < g.ndel; off += 1024) {
		rc = store_chunk_del(s, g.del + off, g.ndel - off < 1024 ? g.ndel - off : 1024);
		if (rc < 0)
			goto out;
	}
	rc = store_chunk_compact(s);
	res->chunks = g.chunks;
	res->chunk_bytes = g.chunk_bytes;
	res->layers_kept = g.layers_kept;
out:
	if (locked)
		store_layers_unlock(s);
	snprintf(res->bad, sizeof(res->bad), "%s", g.bad_layer);
	if (rc < 0)
		store_gc_result_free(res);
	free(g.del);
	dset_free(&g.refs);
	json_decref(g.keep_layers);
	json_decref(g.layer_keys);
	json_decref(g.freed_layers);
	json_decref(g.pending_keys);
	return rc;
}

void store_gc_result_free(struct store_gc_result *res)
{
	for (size_t i = 0; i < res->nfreed_layers; i++)
		free(res->freed_layers[i]);
	free(res->freed_layers);
	res->freed_layers = NULL;
	res->nfreed_layers = 0;
}

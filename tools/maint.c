/* SPDX-License-Identifier: Apache-2.0 */
/* Store maintenance commands: fsck (verify, optionally repair) and gc (drop unreferenced data). */
#include "cli.h"
#include "cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sha256.h"
#include "tools/dset.h"
#include "tools/quota.h"

#define PROGRESS_EVERY 4096

static int cancelled(const struct cli *c)
{
	return c->cancel && *c->cancel;
}

static void progress(struct cli *c, const char *what, uint64_t n, int done)
{
	if (!c->tty || c->json)
		return;
	if (done) {
		fprintf(c->err, "\r\033[K");
	} else {
		fprintf(c->err, "\r%s: %llu chunks", what, (unsigned long long)n);
	}
	fflush(c->err);
}

/* ---------------------------------------------------------------- fsck */

struct fsck {
	struct cli *c;
	int repair;
	struct dset refs;      /* chunks referenced by a layer index or window */
	json_t *problems;      /* array of strings */
	json_t *repaired;      /* array of strings */
	uint64_t chunks, bad, orphans, present_refs, layers, images;
	int err;               /* first fatal error (negative errno) */
};

static void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct fsck *f, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(f->problems, json_string(msg));
	if (!f->c->json) {
		progress(f->c, "", 0, 1);
		fprintf(f->c->out, "problem: %s\n", msg);
	}
}

static void repaired(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void repaired(struct fsck *f, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(f->repaired, json_string(msg));
	if (!f->c->json)
		fprintf(f->c->out, "repaired: %s\n", msg);
}

static int fsck_layer_cb(void *ctx, const char *key)
{
	struct fsck *f = ctx;
	struct store_layer info;
	struct index_layer *l = NULL;
	void *enc = NULL;
	size_t len = 0;
	char other[STORE_DIGEST_LEN];
	int rc;

	if (cancelled(f->c))
		return -ECANCELED;
	rc = store_layer_get(f->c->store, key, &info, &enc, &len);
	if (rc == -ENOENT) { /* removed meanwhile (gc or rm through the daemon) */
		strata_err_clear();
		return 0;
	}
	f->layers++;
	if (rc == -ENOMEM || rc == -EIO)
		return rc;
	if (rc == 0)
		rc = index_layer_decode(enc, len, &l);
	free(enc);
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0) {
		problem(f, "layer %s: record does not decode: %s", key, strata_errmsg(rc));
		strata_err_clear();
		if (f->repair) {
			rc = store_layer_del(f->c->store, key);
			if (rc < 0)
				return rc;
			repaired(f, "removed layer record %s", key);
		}
		return 0;
	}
	if (strcmp(info.digest, key) != 0)
		problem(f, "layer %s: record names digest %s", key, info.digest);
	rc = store_layer_by_seq(f->c->store, info.seq, other);
	if (rc == -ENOENT)
		problem(f, "layer %s: seq %u has no seq map entry", key, info.seq);
	else if (rc < 0)
		goto out;
	else if (strcmp(other, key) != 0)
		problem(f, "layer %s: seq %u maps to %s", key, info.seq, other);
	rc = dset_add_layer(&f->refs, l);
out:
	index_layer_free(l);
	return rc;
}

static int fsck_chunk_cb(void *ctx, const uint8_t digest[32], size_t stored_len, int verified)
{
	struct fsck *f = ctx;
	char hex[UTIL_DIGEST_STR_LEN];
	int rc;

	(void)stored_len;
	if (cancelled(f->c))
		return -ECANCELED;
	f->chunks++;
	if (f->chunks % PROGRESS_EVERY == 0)
		progress(f->c, "fsck", f->chunks, 0);
	if (verified < 0) {
		f->bad++;
		util_digest_format(digest, hex);
		problem(f, "chunk %s: stored bytes do not match the digest", hex);
		if (f->repair) {
			rc = store_chunk_del(f->c->store, (const uint8_t(*)[32])digest, 1);
			if (rc < 0)
				return rc;
			repaired(f, "deleted chunk %s (fetched again when read)", hex);
		}
		return 0;
	}
	if (dset_has(&f->refs, digest))
		f->present_refs++;
	else
		f->orphans++;
	return 0;
}

static int fsck_image_cb(void *ctx, const char *ref, const char *json)
{
	struct fsck *f = ctx;
	json_error_t jerr;
	json_t *o = json_loads(json, 0, &jerr), *layers, *layer;
	size_t i;
	int missing = 0, rc;

	if (cancelled(f->c))
		return -ECANCELED;
	f->images++;
	layers = o ? json_object_get(o, "layers") : NULL;
	if (!json_is_array(layers)) {
		problem(f, "image %s: unreadable record", ref);
		missing = 1;
	}
	json_array_foreach(layers, i, layer) {
		const char *d = json_string_value(json_object_get(layer, "digest"));

		if (!d) {
			problem(f, "image %s: layer %zu has no digest", ref, i);
			missing = 1;
			continue;
		}
		rc = store_layer_get(f->c->store, d, NULL, NULL, NULL);
		if (rc == -ENOENT && store_pending_get(f->c->store, d, NULL) == 0) {
			rc = 0; /* recorded by a pull, streamed by the daemon */
		} else if (rc == -ENOENT) {
			problem(f, "image %s: layer %s is missing", ref, d);
			missing = 1;
		} else if (rc == -EIO || rc == -ENOMEM) {
			json_decref(o);
			return rc;
		}
		/* a corrupt record was reported (and removed on --repair) by the layer pass */
		strata_err_clear();
	}
	json_decref(o);
	if (missing && f->repair) {
		rc = store_image_del(f->c->store, ref);
		if (rc < 0)
			return rc;
		repaired(f, "removed image %s (pull it again)", ref);
	}
	return 0;
}

int cmd_fsck(struct cli *c, int argc, char **argv)
{
	struct fsck f = { 0 };
	uint64_t remote;
	int rc;

	f.c = c;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--repair") == 0)
			f.repair = 1;
		else
			return cli_usage(c, "unknown argument '%s'", argv[i]);
	}
	f.problems = json_array();
	f.repaired = json_array();
	if (!f.problems || !f.repaired) {
		rc = -ENOMEM;
		goto out;
	}
	rc = store_layer_keys(c->store, fsck_layer_cb, &f);
	if (rc == 0)
		rc = store_chunk_scan(c->store, 1, fsck_chunk_cb, &f);
	progress(c, "fsck", f.chunks, 1);
	if (rc == 0)
		rc = store_image_list(c->store, fsck_image_cb, &f);
	if (rc < 0)
		goto out;
	remote = f.refs.n - f.present_refs;
	if (c->json) {
		json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:b, s:O}", "chunks",
				      (json_int_t)f.chunks, "bad_chunks", (json_int_t)f.bad,
				      "orphan_chunks", (json_int_t)f.orphans, "remote_chunks",
				      (json_int_t)remote, "layers", (json_int_t)f.layers, "images",
				      (json_int_t)f.images, "problems",
				      (json_int_t)json_array_size(f.problems), "problem_list",
				      f.problems, "repair", f.repair, "repaired", f.repaired);
		char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;

		fprintf(c->out, "%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(o);
	} else {
		fprintf(c->out, "chunks checked %llu\n", (unsigned long long)f.chunks);
		fprintf(c->out, "bad chunks     %llu\n", (unsigned long long)f.bad);
		fprintf(c->out, "orphan chunks  %llu (referenced by no layer; strata gc removes them)\n",
			(unsigned long long)f.orphans);
		fprintf(c->out, "remote chunks  %llu (referenced, not stored yet: fetched when read)\n",
			(unsigned long long)remote);
		fprintf(c->out, "layers         %llu\n", (unsigned long long)f.layers);
		fprintf(c->out, "images         %llu\n", (unsigned long long)f.images);
		fprintf(c->out, "problems       %zu%s\n", json_array_size(f.problems),
			f.repair && json_array_size(f.repaired) ? " (repaired as listed)" : "");
	}
	rc = json_array_size(f.problems) ? 1 : 0;
	fflush(c->out);
	dset_free(&f.refs);
	json_decref(f.problems);
	json_decref(f.repaired);
	return rc;
out:
	progress(c, "fsck", 0, 1);
	dset_free(&f.refs);
	json_decref(f.problems);
	json_decref(f.repaired);
	if (rc == -ECANCELED)
		return cli_fail(c, "cancelled: the daemon is shutting down");
	return cli_fail(c, "%s", rc == -ENOMEM ? "out of memory" : strata_errmsg(rc));
}

/* ---------------------------------------------------------------- gc */

struct gc {
	struct cli *c;
	json_t *keep_layers;   /* object: layer digest -> true, for every layer an image lists */
	struct dset refs;      /* chunks referenced by a kept layer */
	uint8_t (*del)[32];    /* chunks to delete */
	size_t ndel, capdel;
	uint64_t chunks, chunk_bytes, layers, layers_kept;
	json_t *layer_keys;    /* array: every layer record when gc started */
	json_t *freed_layers;  /* array of digests */
	json_t *pending_keys;  /* array: every pending layer when gc started */
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
	rc = cli_image_layer_set(o, g->keep_layers);
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
	void *enc = NULL;
	size_t len = 0;
	int rc;

	if (cancelled(g->c))
		return -ECANCELED;
	if (!json_object_get(g->keep_layers, key)) {
		json_array_append_new(g->freed_layers, json_string(key));
		return 0;
	}
	g->layers_kept++;
	rc = store_layer_get(g->c->store, key, NULL, &enc, &len);
	if (rc == 0)
		rc = index_layer_decode(enc, len, &l);
	free(enc);
	if (rc == -EBADMSG || rc == -EINVAL || rc == -EPROTO) {
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
	if (cancelled(g->c))
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
	if (g->chunks % PROGRESS_EVERY == 0)
		progress(g->c, "gc", g->chunks, 0);
	return 0;
}

int cmd_gc(struct cli *c, int argc, char **argv)
{
	struct gc g = { 0 };
	struct store_stats before, after;
	struct quota_result q;
	size_t i;
	json_t *d;
	int locked = 0, rc;

	(void)argv;
	if (argc > 1)
		return cli_usage(c, "gc takes no arguments");
	g.c = c;
	g.keep_layers = json_object();
	g.layer_keys = json_array();
	g.freed_layers = json_array();
	g.pending_keys = json_array();
	if (!g.keep_layers || !g.layer_keys || !g.freed_layers || !g.pending_keys) {
		rc = -ENOMEM;
		goto out;
	}
	rc = store_get_stats(c->store, &before);
	/* Layer keys, then images, then chunks. A layer a concurrent pull writes after the first
	 * pass is never deleted (its image may not be written yet); at worst some of its chunks are
	 * deleted and fetched again when read. */
	store_layers_wrlock(c->store);
	locked = 1;
	if (rc == 0)
		rc = store_layer_keys(c->store, gc_key_cb, &g);
	if (rc == 0)
		rc = store_pending_list(c->store, gc_pending_cb, &g);
	if (rc == 0)
		rc = store_image_list(c->store, gc_image_cb, &g);
	json_array_foreach(g.layer_keys, i, d) {
		if (rc == 0)
			rc = gc_layer(&g, json_string_value(d));
	}
	if (rc == 0)
		rc = store_chunk_scan(c->store, 0, gc_chunk_cb, &g);
	progress(c, "gc", g.chunks, 1);
	if (rc < 0)
		goto out;
	json_array_foreach(g.pending_keys, i, d) {
		/* A pending layer no image names: nothing to stream any more. */
		if (!json_object_get(g.keep_layers, json_string_value(d)) &&
		    json_array_append(g.freed_layers, d) < 0) {
			rc = -ENOMEM;
			goto out;
		}
	}
	json_array_foreach(g.freed_layers, i, d) {
		rc = store_layer_del(c->store, json_string_value(d));
		if (rc == 0)
			rc = store_pending_del(c->store, json_string_value(d));
		if (rc < 0)
			goto out;
	}
	store_layers_unlock(c->store);
	locked = 0;
	for (size_t off = 0; off < g.ndel; off += 1024) {
		rc = store_chunk_del(c->store, g.del + off, g.ndel - off < 1024 ? g.ndel - off : 1024);
		if (rc < 0)
			goto out;
	}
	rc = store_chunk_compact(c->store);
	/* Then the quota policy, as the daemon's evictor applies it (nothing when under quota):
	 * with this command's quota, else the daemon's. */
	if (rc == 0)
		rc = quota_evict(c->store, c->fs,
				 c->quota ? c->quota : c->evictor ? quota_bytes(c->evictor) : 0,
				 c->quota || !c->evictor ? c->low_water : quota_low_water(c->evictor),
				 c->cancel, &q);
	if (rc == 0)
		rc = store_get_stats(c->store, &after);
	if (rc < 0)
		goto out;
	if (c->json) {
		json_t *o = json_pack("{s:I, s:I, s:I, s:O, s:I, s:I, s:{s:I, s:I, s:b, s:I, s:I, s:I}}",
				      "freed_chunks",
				      (json_int_t)g.chunks, "freed_chunk_bytes",
				      (json_int_t)g.chunk_bytes, "freed_layers",
				      (json_int_t)json_array_size(g.freed_layers), "freed_layer_list",
				      g.freed_layers, "disk_bytes_before", (json_int_t)before.disk_bytes,
				      "disk_bytes_after", (json_int_t)after.disk_bytes, "quota",
				      "bytes", (json_int_t)q.quota, "low_water_bytes", (json_int_t)q.target,
				      "over", q.over, "evicted_chunks", (json_int_t)q.chunks,
				      "evicted_bytes", (json_int_t)q.bytes, "evicted_layers",
				      (json_int_t)q.layers);
		char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;

		fprintf(c->out, "%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(o);
	} else {
		char b1[32], b2[32], b3[32];

		json_array_foreach(g.freed_layers, i, d)
			fprintf(c->out, "removed layer %s\n", json_string_value(d));
		fprintf(c->out, "freed %llu chunks (%s stored), %zu layers; store on disk %s -> %s\n",
			(unsigned long long)g.chunks, cli_bytes(g.chunk_bytes, b1, sizeof(b1)),
			json_array_size(g.freed_layers), cli_bytes(before.disk_bytes, b2, sizeof(b2)),
			cli_bytes(after.disk_bytes, b3, sizeof(b3)));
		if (q.over)
			fprintf(c->out, "quota %s: evicted %llu chunks (%s stored) of %llu least recently "
				"used layers\n", cli_bytes(q.quota, b1, sizeof(b1)),
				(unsigned long long)q.chunks, cli_bytes(q.bytes, b2, sizeof(b2)),
				(unsigned long long)q.layers);
	}
out:
	if (locked)
		store_layers_unlock(c->store);
	free(g.del);
	dset_free(&g.refs);
	json_decref(g.keep_layers);
	json_decref(g.layer_keys);
	json_decref(g.freed_layers);
	json_decref(g.pending_keys);
	if (rc == -ECANCELED)
		return cli_fail(c, "cancelled: the daemon is shutting down");
	if (rc == -EBADMSG)
		return cli_fail(c, "%s does not decode; nothing was deleted (run 'strata fsck --repair' first)",
				g.bad_layer);
	if (rc == -ENOMEM)
		return cli_fail(c, "out of memory");
	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	return 0;
}

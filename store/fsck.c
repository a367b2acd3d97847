/* SPDX-License-Identifier: Apache-2.0 */
/* fsck: verifying chunks, layer records and images, and repairing what can be repaired. */
#include "maint_i.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "dset_i.h"
#include "index/layer.h"
#include "util/log.h"
#include "util/sha256.h"

struct fsck {
	struct store *s;
	const struct store_maint_hooks *h;
	int repair;
	struct dset refs; /* chunks referenced by a layer index or window */
	struct store_fsck_result *res;
	uint64_t present_refs;
};

static void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct fsck *f, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	f->res->problems++;
	if (f->h && f->h->problem)
		f->h->problem(f->h->ctx, msg);
}

static void repaired(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void repaired(struct fsck *f, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	f->res->repaired++;
	if (f->h && f->h->repaired)
		f->h->repaired(f->h->ctx, msg);
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

	if (maint_cancelled(f->h))
		return -ECANCELED;
	rc = store_layer_get(f->s, key, &info, &enc, &len);
	if (rc == -ENOENT) { /* removed meanwhile (gc or rm through the daemon) */
		strata_err_clear();
		return 0;
	}
	f->res->layers++;
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
			rc = store_layer_del(f->s, key);
			if (rc < 0)
				return rc;
			repaired(f, "removed layer record %s", key);
		}
		return 0;
	}
	if (strcmp(info.digest, key) != 0)
		problem(f, "layer %s: record names digest %s", key, info.digest);
	rc = store_layer_by_seq(f->s, info.seq, other);
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
	if (maint_cancelled(f->h))
		return -ECANCELED;
	f->res->chunks++;
	if (f->res->chunks % MAINT_PROGRESS_EVERY == 0 && f->h && f->h->progress)
		f->h->progress(f->h->ctx, f->res->chunks, 0);
	if (verified < 0) {
		f->res->bad++;
		util_digest_format(digest, hex);
		problem(f, "chunk %s: stored bytes do not match the digest", hex);
		if (f->repair) {
			rc = store_chunk_del(f->s, (const uint8_t(*)[32])digest, 1);
			if (rc < 0)
				return rc;
			repaired(f, "deleted chunk %s (fetched again when read)", hex);
		}
		return 0;
	}
	if (dset_has(&f->refs, digest))
		f->present_refs++;
	else
		f->res->orphans++;
	return 0;
}

static int fsck_image_cb(void *ctx, const char *ref, const char *json)
{
	struct fsck *f = ctx;
	json_error_t jerr;
	json_t *o = json_loads(json, 0, &jerr), *layers, *layer;
	size_t i;
	int missing = 0, rc;

	if (maint_cancelled(f->h))
		return -ECANCELED;
	f->res->images++;
	layers = o ? json_object_get(o, "layers") : NULL;
	if (!json_is_array(layers)) {
		problem(f, "image %s: unreadable record", ref);
		missing = 1;
	}
	json_array_foreach (layers, i, layer) {
		const char *d = json_string_value(json_object_get(layer, "digest"));

		if (!d) {
			problem(f, "image %s: layer %zu has no digest", ref, i);
			missing = 1;
			continue;
		}
		rc = store_layer_get(f->s, d, NULL, NULL, NULL);
		if (rc == -ENOENT && store_pending_get(f->s, d, NULL) == 0) {
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
		rc = store_image_del(f->s, ref);
		if (rc < 0)
			return rc;
		repaired(f, "removed image %s (pull it again)", ref);
	}
	return 0;
}

/* A snapshot record: JSON with an id and a kind, its parent recorded, its directory there (a
 * remote snapshot, one with a "layer", has none: it is a layer of the mount). */
static int fsck_snap_cb(void *ctx, const char *key, const char *json)
{
	struct fsck *f = ctx;
	json_t *o = json_loads(json, 0, NULL);
	const char *kind = json_string_value(json_object_get(o, "kind"));
	const char *parent = json_string_value(json_object_get(o, "parent"));
	json_int_t id = json_integer_value(json_object_get(o, "id"));
	char dir[4096], *pjson = NULL;
	struct stat st;
	int rc = 0;

	if (maint_cancelled(f->h)) {
		json_decref(o);
		return -ECANCELED;
	}
	f->res->snapshots++;
	if (!o || !kind || id <= 0 ||
	    (strcmp(kind, "active") && strcmp(kind, "view") && strcmp(kind, "committed"))) {
		problem(f, "snapshot %s: unreadable record", key);
		if (f->repair) {
			rc = store_snap_del(f->s, key);
			if (rc == 0)
				repaired(f, "removed snapshot record %s", key);
		}
		goto out;
	}
	if (parent && *parent) {
		rc = store_snap_get(f->s, parent, &pjson);
		free(pjson);
		if (rc == -ENOENT)
			problem(f, "snapshot %s: parent %s is missing", key, parent);
		if (rc == -ENOENT || rc == -EBADMSG)
			rc = 0;
		if (rc < 0)
			goto out;
	}
	if (!json_object_get(o, "layer")) {
		rc = store_snap_dir(f->s, (uint64_t)id, dir, sizeof(dir) - 4);
		if (rc < 0)
			goto out;
		strcat(dir, "/fs");
		if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			problem(f, "snapshot %s: directory %s is missing", key, dir);
	}
out:
	json_decref(o);
	return rc;
}

int store_fsck(struct store *s, int repair, const struct store_maint_hooks *hooks,
	       struct store_fsck_result *res)
{
	struct fsck f = { 0 };
	int rc;

	memset(res, 0, sizeof(*res));
	f.s = s;
	f.h = hooks;
	f.repair = repair;
	f.res = res;
	rc = store_layer_keys(s, fsck_layer_cb, &f);
	if (rc == 0)
		rc = store_chunk_scan(s, 1, fsck_chunk_cb, &f);
	if (hooks && hooks->progress)
		hooks->progress(hooks->ctx, res->chunks, 1);
	if (rc == 0)
		rc = store_image_list(s, fsck_image_cb, &f);
	if (rc == 0)
		rc = store_snap_list(s, fsck_snap_cb, &f);
	if (rc == 0)
		res->remote = f.refs.n - f.present_refs;
	dset_free(&f.refs);
	return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Pending layers: registered by pulls with every image's claims about the blob, streamed later. */
#include "store_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/thread.h"

/*
 * A pending record is stored in the meta column family under "pending/<digest>": a layer record
 * value (store_layer_json) without index bytes, whose header holds "claims": [{"image", "source",
 * "media_type", "size", "diff_id"}, ...], oldest first. Records written before claims existed have
 * none: their info is the one claim.
 */

void store_pending_notify(struct store *s)
{
	pthread_mutex_lock(&s->pending_mu);
	s->pending_gen++;
	pthread_cond_broadcast(&s->pending_cv);
	pthread_mutex_unlock(&s->pending_mu);
}

static int pending_key(const char *digest, char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN])
{
	return snprintf(key, sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN, PENDING_PREFIX "%s",
			digest);
}

static json_t *claim_json(const struct store_layer *info, const char *image)
{
	return json_pack("{s:s, s:s, s:s, s:I, s:s}", "image", image ? image : "", "source",
			 info->source, "media_type", info->media_type, "size",
			 (json_int_t)info->size, "diff_id", info->diff_id);
}

/* Reads the pending record of digest: info and claims (a new reference; legacy records get one
 * claim made from their info). Returns 0, -ENOENT, -EBADMSG or -EIO. */
static int pending_read(struct store *s, const char *digest, struct store_layer *info,
			json_t **claims)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *val;
	int klen = pending_key(digest, key);
	size_t len = 0;
	int rc;

	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)klen, &len, &err);
	if (err)
		return store_db_error(err, "pending layer read");
	if (!val)
		return -ENOENT;
	rc = store_layer_parse(val, len, info, NULL, NULL, claims);
	rocksdb_free(val);
	if (rc == 0 && claims && !*claims) {
		*claims = json_array();
		if (!*claims || json_array_append_new(*claims, claim_json(info, "")) < 0)
			rc = -ENOMEM;
	}
	return rc;
}

/* Adds info's claim for image to claims: replaces the image's earlier claim, drops the oldest
 * past STORE_PENDING_MAX_CLAIMS. Returns 0 or -ENOMEM. */
static int claims_add(json_t *claims, const struct store_layer *info, const char *image)
{
	size_t i;
	json_t *c;

	json_array_foreach (claims, i, c) {
		const char *img = json_string_value(json_object_get(c, "image"));

		if (img && strcmp(img, image ? image : "") == 0) {
			json_array_remove(claims, i);
			break;
		}
	}
	while (json_array_size(claims) >= STORE_PENDING_MAX_CLAIMS)
		json_array_remove(claims, 0);
	return json_array_append_new(claims, claim_json(info, image)) < 0 ? -ENOMEM : 0;
}

int store_pending_put(struct store *s, const struct store_layer *info, const char *image)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *json = NULL, *val = NULL;
	int klen = pending_key(info->digest, key);
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	struct store_layer rec;
	json_t *claims = NULL;
	size_t vlen;
	int rc;

	pthread_mutex_lock(&s->seq_mutex);
	rc = pending_read(s, info->digest, &rec, &claims);
	if (rc == -ENOENT) {
		strata_err_clear();
		rec = *info; /* the first registration describes the record */
		rec.prov = STORE_PROV_LEGACY;
		rec.prov_digest[0] = rec.signer[0] = rec.index_digest[0] = rec.quarantine[0] = '\0';
		rec.seq = 0;
		claims = json_array();
		rc = claims ? 0 : -ENOMEM;
	}
	if (rc == 0)
		rc = claims_add(claims, info, image);
	/* A layer record of the digest goes in the same write: the stream replaces it. */
	if (rc == 0)
		rc = store_layer_stage_delete(s, wb, info->digest, NULL);
	if (rc < 0)
		goto out;
	json = store_layer_json(&rec, claims);
	val = json ? store_layer_value(json, NULL, 0, &vlen) : NULL;
	if (!val) {
		rc = -ENOMEM;
		goto out;
	}
	rocksdb_writebatch_put_cf(wb, s->cf[CF_META], key, (size_t)klen, val, vlen);
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rc = err ? store_db_error(err, "pending layer write") : 0;
	if (rc == 0)
		store_layers_changed(s);
out:
	pthread_mutex_unlock(&s->seq_mutex);
	rocksdb_writebatch_destroy(wb);
	json_decref(claims);
	free(json);
	free(val);
	if (rc == 0)
		store_pending_notify(s);
	return rc < 0 ? rc : 0;
}

int store_pending_get(struct store *s, const char *digest, struct store_layer *info)
{
	return pending_read(s, digest, info, NULL);
}

/* Copies one claim from its JSON. Returns 0 or -EBADMSG. */
static int claim_parse(json_t *c, struct store_claim *out)
{
	const char *image = NULL, *source = NULL, *mt = NULL, *diff_id = NULL;
	json_int_t size = 0;

	if (json_unpack(c, "{s:s, s:s, s:s, s:I, s:s}", "image", &image, "source", &source,
			"media_type", &mt, "size", &size, "diff_id", &diff_id) < 0 ||
	    size < 0)
		return strata_err(EBADMSG, "corrupt pending layer claim");
	memset(out, 0, sizeof(*out));
	snprintf(out->image, sizeof(out->image), "%s", image);
	snprintf(out->source, sizeof(out->source), "%s", source);
	snprintf(out->media_type, sizeof(out->media_type), "%s", mt);
	out->size = (uint64_t)size;
	snprintf(out->diff_id, sizeof(out->diff_id), "%s", diff_id);
	return 0;
}

int store_pending_claims(struct store *s, const char *digest, struct store_claim **out, size_t *n)
{
	json_t *claims = NULL, *c;
	size_t i;
	int rc = pending_read(s, digest, NULL, &claims);

	*out = NULL;
	*n = 0;
	if (rc < 0)
		return rc;
	*out = calloc(json_array_size(claims) ? json_array_size(claims) : 1, sizeof(**out));
	if (!*out) {
		json_decref(claims);
		return -ENOMEM;
	}
	json_array_foreach (claims, i, c) {
		rc = claim_parse(c, &(*out)[*n]);
		if (rc < 0)
			break;
		(*n)++;
	}
	json_decref(claims);
	if (rc < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

int store_pending_del(struct store *s, const char *digest)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL;
	int klen = pending_key(digest, key);

	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)klen, &err);
	if (err)
		return store_db_error(err, "pending layer delete");
	store_pending_notify(s);
	return 0;
}

int store_pending_list(struct store *s, int (*fn)(void *ctx, const struct store_layer *l),
		       void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_META]);
	const size_t plen = strlen(PENDING_PREFIX);
	char *err = NULL;
	int rc = 0;

	for (rocksdb_iter_seek(it, PENDING_PREFIX, plen); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		struct store_layer info;
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const char *v = rocksdb_iter_value(it, &vl);

		if (kl < plen || memcmp(k, PENDING_PREFIX, plen) != 0)
			break;
		if (store_layer_parse(v, vl, &info, NULL, NULL, NULL) < 0) {
			strata_log(LOG_WARNING, "store: skipping corrupt pending record %.*s",
				   (int)kl, k);
			continue;
		}
		rc = fn(ctx, &info);
		if (rc)
			break;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err)
		return store_db_error(err, "pending layer list");
	return rc;
}

uint64_t store_pending_wait(struct store *s, uint64_t seen, int timeout_ms)
{
	struct timespec until;
	uint64_t gen;

	util_deadline_in(&until, timeout_ms);
	pthread_mutex_lock(&s->pending_mu);
	while (s->pending_gen == seen) {
		if (pthread_cond_timedwait(&s->pending_cv, &s->pending_mu, &until) == ETIMEDOUT)
			break;
	}
	gen = s->pending_gen;
	pthread_mutex_unlock(&s->pending_mu);
	return gen;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Layer records: their seq numbers, provenance and quarantine; the layers lock. */
#include "store_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/sha256.h"

/*
 * Record value: u32 LE length of the JSON header, the JSON header, then the encoded index. The
 * header's provenance keys ("prov", "prov_digest", "signer", "index_digest", "quarantine") are
 * optional: records written before they existed read as STORE_PROV_LEGACY, and older strata
 * versions ignore them.
 */

static const char *const prov_names[] = {
	[STORE_PROV_LEGACY] = "legacy",
	[STORE_PROV_ARTIFACT] = "artifact",
	[STORE_PROV_TOC] = "toc",
	[STORE_PROV_VERIFIED] = "verified",
};

const char *store_prov_name(enum store_prov p)
{
	return (unsigned)p < sizeof(prov_names) / sizeof(prov_names[0]) ? prov_names[p] : "?";
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

/* Adds key = value to o unless value is empty. */
static void set_nonempty(json_t *o, const char *key, const char *value)
{
	if (value[0])
		json_object_set_new(o, key, json_string(value));
}

char *store_layer_json(const struct store_layer *l, json_t *claims)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s}", "digest", l->digest,
			      "diff_id", l->diff_id, "media_type", l->media_type, "size",
			      (json_int_t)l->size, "tar_size", (json_int_t)l->tar_size, "seq",
			      (json_int_t)l->seq, "chunk_size", (json_int_t)l->chunk_size, "source",
			      l->source, "windows", l->windows);
	char *s;

	if (!o)
		return NULL;
	if (l->prov != STORE_PROV_LEGACY)
		json_object_set_new(o, "prov", json_string(store_prov_name(l->prov)));
	set_nonempty(o, "prov_digest", l->prov_digest);
	set_nonempty(o, "signer", l->signer);
	set_nonempty(o, "index_digest", l->index_digest);
	set_nonempty(o, "quarantine", l->quarantine);
	if (claims)
		json_object_set(o, "claims", claims);
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

char *store_layer_value(const char *json, const void *index, size_t len, size_t *vlen)
{
	size_t jlen = strlen(json);
	uint32_t u32 = (uint32_t)jlen;
	char *val = malloc(4 + jlen + len);

	if (!val)
		return NULL;
	memcpy(val, &u32, 4);
	memcpy(val + 4, json, jlen);
	if (len)
		memcpy(val + 4 + jlen, index, len);
	*vlen = 4 + jlen + len;
	return val;
}

/* Fills info's provenance from the header o. Returns 0 or -EBADMSG. */
static int parse_prov(json_t *o, struct store_layer *info)
{
	const char *prov = NULL, *pd = NULL, *signer = NULL, *id = NULL, *q = NULL;

	if (json_unpack(o, "{s?s, s?s, s?s, s?s, s?s}", "prov", &prov, "prov_digest", &pd, "signer",
			&signer, "index_digest", &id, "quarantine", &q) < 0)
		return -EBADMSG;
	info->prov = STORE_PROV_LEGACY;
	for (size_t i = 0; prov && i < sizeof(prov_names) / sizeof(prov_names[0]); i++) {
		if (strcmp(prov, prov_names[i]) == 0)
			info->prov = (enum store_prov)i;
	}
	copy_str(info->prov_digest, sizeof(info->prov_digest), pd);
	copy_str(info->signer, sizeof(info->signer), signer);
	copy_str(info->index_digest, sizeof(info->index_digest), id);
	copy_str(info->quarantine, sizeof(info->quarantine), q);
	return 0;
}

int store_layer_parse(const char *val, size_t vlen, struct store_layer *info, void **index,
		      size_t *len, json_t **claims)
{
	uint32_t jlen;
	json_t *o;
	json_error_t jerr;
	const char *digest = NULL, *diff_id = NULL, *mt = NULL, *source = NULL, *windows = NULL;
	json_int_t size = 0, tar_size = 0, seq = 0, cs = 0;

	if (vlen < 4)
		return strata_err(EBADMSG, "corrupt layer record");
	memcpy(&jlen, val, 4);
	if (jlen > vlen - 4)
		return strata_err(EBADMSG, "corrupt layer record");
	o = json_loadb(val + 4, jlen, 0, &jerr);
	if (!o ||
	    json_unpack(o, "{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "digest", &digest, "diff_id",
			&diff_id, "media_type", &mt, "size", &size, "tar_size", &tar_size, "seq",
			&seq, "chunk_size", &cs) < 0 ||
	    json_unpack(o, "{s?s, s?s}", "source", &source, "windows", &windows) < 0) {
		json_decref(o);
		return strata_err(EBADMSG, "corrupt layer record");
	}
	if (info) {
		memset(info, 0, sizeof(*info));
		copy_str(info->digest, sizeof(info->digest), digest);
		copy_str(info->diff_id, sizeof(info->diff_id), diff_id);
		copy_str(info->media_type, sizeof(info->media_type), mt);
		info->size = (uint64_t)size;
		info->tar_size = (uint64_t)tar_size;
		info->seq = (uint32_t)seq;
		info->chunk_size = (uint32_t)cs;
		copy_str(info->source, sizeof(info->source), source);
		copy_str(info->windows, sizeof(info->windows), windows);
		if (parse_prov(o, info) < 0) {
			json_decref(o);
			return strata_err(EBADMSG, "corrupt layer record");
		}
		if (!info->index_digest[0]) { /* a record from before index digests */
			uint8_t d[32];

			util_sha256(val + 4 + jlen, vlen - 4 - jlen, d);
			util_digest_format(d, info->index_digest);
		}
	}
	if (claims) {
		*claims = json_incref(json_object_get(o, "claims"));
		if (*claims && !json_is_array(*claims)) {
			json_decref(*claims);
			*claims = NULL;
			json_decref(o);
			return strata_err(EBADMSG, "corrupt pending layer record");
		}
	}
	json_decref(o);
	if (index) {
		size_t n = vlen - 4 - jlen;

		*index = malloc(n ? n : 1);
		if (!*index) {
			if (claims) {
				json_decref(*claims);
				*claims = NULL;
			}
			return -ENOMEM;
		}
		memcpy(*index, val + 4 + jlen, n);
		*len = n;
	}
	return 0;
}

int store_layer_get(struct store *s, const char *digest, struct store_layer *info, void **index,
		    size_t *len)
{
	char *err = NULL;
	rocksdb_pinnableslice_t *v = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_LAYERS], digest,
							   strlen(digest), &err);
	const char *val;
	size_t vlen;
	int rc;

	if (err)
		return store_db_error(err, "layer read");
	if (!v)
		return strata_err(ENOENT, "layer %s is not in the store", digest);
	val = rocksdb_pinnableslice_value(v, &vlen);
	rc = store_layer_parse(val, vlen, info, index, len, NULL);
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

static void seq_key(uint32_t seq, char key[8])
{
	memcpy(key, SEQ_PREFIX, 4);
	key[4] = (char)(seq >> 24);
	key[5] = (char)(seq >> 16);
	key[6] = (char)(seq >> 8);
	key[7] = (char)seq;
}

void store_layers_changed(struct store *s)
{
	atomic_fetch_add_explicit(&s->layers_gen, 1, memory_order_release);
}

uint64_t store_layers_generation(struct store *s)
{
	return atomic_load_explicit(&s->layers_gen, memory_order_acquire);
}

int store_quarantine_count_stage(struct store *s, rocksdb_writebatch_t *wb, int64_t delta)
{
	static const char key[] = COUNTER_PREFIX QUARANTINE_COUNTER;
	uint64_t v = 0;
	char buf[8];
	int rc = store_counter_get(s, QUARANTINE_COUNTER, &v);

	if (rc < 0)
		return rc;
	if (delta < 0 && v < (uint64_t)-delta)
		v = 0; /* never below zero, whatever a crash left */
	else
		v += (uint64_t)delta;
	for (int i = 0; i < 8; i++)
		buf[i] = (char)(v >> (8 * i));
	rocksdb_writebatch_put_cf(wb, s->cf[CF_META], key, sizeof(key) - 1, buf, 8);
	return 0;
}

int store_layer_stage_delete(struct store *s, rocksdb_writebatch_t *wb, const char *digest,
			     struct store_layer *old)
{
	struct store_layer info;
	char key[8], other[STORE_DIGEST_LEN];
	int rc = store_layer_get(s, digest, &info, NULL, NULL);

	if (old)
		memset(old, 0, sizeof(*old));
	if (rc == -ENOENT) {
		strata_err_clear();
		return 0;
	}
	if (rc < 0 && rc != -EBADMSG)
		return rc;
	rocksdb_writebatch_delete_cf(wb, s->cf[CF_LAYERS], digest, strlen(digest));
	store_atime_forget(s, wb, digest);
	if (rc == 0) {
		/* Only drop the seq entry when it points back at this layer. */
		if (store_layer_by_seq(s, info.seq, other) == 0 && strcmp(other, digest) == 0) {
			seq_key(info.seq, key);
			rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], key, sizeof(key));
		}
		if (info.quarantine[0]) {
			rc = store_quarantine_count_stage(s, wb, -1);
			if (rc < 0)
				return rc;
		}
		if (old)
			*old = info;
	}
	strata_err_clear();
	return 1;
}

/* Reads the next seq to assign. With seq_mutex held. Returns 0 or negative errno. */
static int next_seq(struct store *s, uint32_t *seq)
{
	char *err = NULL;
	size_t nlen = 0;
	char *next = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], KEY_NEXT_SEQ,
				    strlen(KEY_NEXT_SEQ), &nlen, &err);

	if (err)
		return store_db_error(err, "read layer sequence");
	*seq = 1;
	if (next && nlen == 4)
		memcpy(seq, next, 4);
	if (next)
		rocksdb_free(next);
	return 0;
}

int store_layer_put(struct store *s, struct store_layer *info, const void *index, size_t len)
{
	struct store_layer old;
	char *err = NULL, *json = NULL, *val = NULL;
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	char pkey[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], key[8];
	size_t vlen;
	uint32_t seq = 0, u32;
	uint8_t d[32];
	int rc, had, n;

	util_sha256(index, len, d);
	util_digest_format(d, info->index_digest);
	info->quarantine[0] = '\0';
	pthread_mutex_lock(&s->seq_mutex);
	rc = store_layer_get(s, info->digest, &old, NULL, NULL);
	had = rc == 0 && strcmp(old.index_digest, info->index_digest) == 0 && !old.quarantine[0];
	if (rc < 0 && rc != -ENOENT && rc != -EBADMSG)
		goto out;
	strata_err_clear();
	if (had) {
		seq = old.seq; /* the same index: its inodes stay valid */
	} else {
		/* New, or other index bytes: drop the old record with its seq, take the next. */
		rc = store_layer_stage_delete(s, wb, info->digest, NULL);
		if (rc == 0 || rc == 1)
			rc = next_seq(s, &seq);
		if (rc < 0)
			goto out;
		u32 = seq + 1;
		seq_key(seq, key);
		rocksdb_writebatch_put_cf(wb, s->cf[CF_META], key, sizeof(key), info->digest,
					  strlen(info->digest));
		rocksdb_writebatch_put_cf(wb, s->cf[CF_META], KEY_NEXT_SEQ, strlen(KEY_NEXT_SEQ),
					  (const char *)&u32, 4);
	}
	info->seq = seq;
	json = store_layer_json(info, NULL);
	val = json ? store_layer_value(json, index, len, &vlen) : NULL;
	if (!val) {
		rc = -ENOMEM;
		goto out;
	}
	rocksdb_writebatch_put_cf(wb, s->cf[CF_LAYERS], info->digest, strlen(info->digest), val,
				  vlen);
	n = snprintf(pkey, sizeof(pkey), PENDING_PREFIX "%s", info->digest);
	rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], pkey, (size_t)n);
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rc = err ? store_db_error(err, "layer write") : 0;
	if (rc == 0)
		store_layers_changed(s);
out:
	pthread_mutex_unlock(&s->seq_mutex);
	rocksdb_writebatch_destroy(wb);
	free(json);
	free(val);
	if (rc == 0)
		store_pending_notify(s); /* a pending record may have ended */
	return rc;
}

int store_layer_by_seq(struct store *s, uint32_t seq, char digest[STORE_DIGEST_LEN])
{
	char key[8], *err = NULL;
	size_t len = 0;
	char *val;

	seq_key(seq, key);
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, sizeof(key), &len, &err);
	if (err)
		return store_db_error(err, "layer sequence read");
	if (!val)
		return -ENOENT;
	snprintf(digest, STORE_DIGEST_LEN, "%.*s", (int)len, val);
	rocksdb_free(val);
	return 0;
}

int store_layer_del(struct store *s, const char *digest)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	char *err = NULL;
	int rc;

	pthread_mutex_lock(&s->seq_mutex);
	rc = store_layer_stage_delete(s, wb, digest, NULL);
	if (rc == 1) {
		rocksdb_write(s->db, s->wo_sync, wb, &err);
		rc = err ? store_db_error(err, "layer delete") : 0;
		if (rc == 0)
			store_layers_changed(s);
	}
	pthread_mutex_unlock(&s->seq_mutex);
	rocksdb_writebatch_destroy(wb);
	return rc < 0 ? rc : 0;
}

/* Rewrites the record of digest (still with seq) after change(info) edits its header; the index
 * bytes and seq stay. With seq_mutex held. Returns 0, -ESTALE, or negative errno. */
static int rewrite(struct store *s, const char *digest, uint32_t seq,
		   int (*change)(struct store *s, rocksdb_writebatch_t *wb,
				 struct store_layer *info, const void *arg),
		   const void *arg)
{
	struct store_layer info;
	rocksdb_writebatch_t *wb = NULL;
	void *index = NULL;
	size_t len = 0, vlen;
	char *json = NULL, *val = NULL, *err = NULL;
	int rc = store_layer_get(s, digest, &info, &index, &len);

	if (rc == -ENOENT || (rc == 0 && info.seq != seq)) {
		strata_err_clear();
		rc = strata_err(ESTALE, "layer %s was replaced meanwhile", digest);
		goto out;
	}
	if (rc < 0)
		goto out;
	wb = rocksdb_writebatch_create();
	rc = change(s, wb, &info, arg);
	if (rc <= 0)
		goto out; /* 0: nothing to change */
	json = store_layer_json(&info, NULL);
	val = json ? store_layer_value(json, index, len, &vlen) : NULL;
	if (!val) {
		rc = -ENOMEM;
		goto out;
	}
	rocksdb_writebatch_put_cf(wb, s->cf[CF_LAYERS], digest, strlen(digest), val, vlen);
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rc = err ? store_db_error(err, "layer write") : 0;
	if (rc == 0)
		store_layers_changed(s);
out:
	if (wb)
		rocksdb_writebatch_destroy(wb);
	free(index);
	free(json);
	free(val);
	return rc;
}

struct verified_arg {
	const char *diff_id;
	uint64_t tar_size;
};

static int set_verified(struct store *s, rocksdb_writebatch_t *wb, struct store_layer *info,
			const void *arg)
{
	const struct verified_arg *va = arg;

	(void)s;
	(void)wb;
	if (info->quarantine[0])
		return strata_err(EIO, "layer %s is quarantined: %s", info->digest,
				  info->quarantine);
	info->prov = STORE_PROV_VERIFIED;
	copy_str(info->diff_id, sizeof(info->diff_id), va->diff_id);
	info->tar_size = va->tar_size;
	return 1;
}

int store_layer_set_verified(struct store *s, const char *digest, uint32_t seq, const char *diff_id,
			     uint64_t tar_size)
{
	struct verified_arg va = { diff_id, tar_size };
	int rc;

	pthread_mutex_lock(&s->seq_mutex);
	rc = rewrite(s, digest, seq, set_verified, &va);
	pthread_mutex_unlock(&s->seq_mutex);
	return rc < 0 ? rc : 0;
}

static int set_quarantine(struct store *s, rocksdb_writebatch_t *wb, struct store_layer *info,
			  const void *arg)
{
	int rc;

	if (info->quarantine[0])
		return 0; /* already */
	rc = store_quarantine_count_stage(s, wb, 1);
	if (rc < 0)
		return rc;
	copy_str(info->quarantine, sizeof(info->quarantine), arg);
	if (!info->quarantine[0])
		copy_str(info->quarantine, sizeof(info->quarantine), "quarantined");
	return 1;
}

int store_layer_quarantine(struct store *s, const char *digest, uint32_t seq, const char *why)
{
	int rc;

	pthread_mutex_lock(&s->seq_mutex);
	rc = rewrite(s, digest, seq, set_quarantine, why);
	pthread_mutex_unlock(&s->seq_mutex);
	return rc < 0 ? rc : 0;
}

struct layer_iter {
	int (*fn)(void *ctx, const struct store_layer *l);
	void *ctx;
};

static int layer_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct layer_iter *li = ctx;
	struct store_layer info;

	if (store_layer_parse(v, vl, &info, NULL, NULL, NULL) < 0) {
		strata_log(LOG_WARNING, "store: skipping corrupt layer record %.*s", (int)kl, k);
		return 0;
	}
	return li->fn(li->ctx, &info);
}

int store_layer_list(struct store *s, int (*fn)(void *ctx, const struct store_layer *l), void *ctx)
{
	struct layer_iter li = { fn, ctx };

	return store_iterate(s, CF_LAYERS, layer_iter_cb, &li);
}

struct key_iter {
	int (*fn)(void *ctx, const char *key);
	void *ctx;
};

static int key_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct key_iter *ki = ctx;
	char *key = strndup(k, kl);
	int rc = -ENOMEM;

	(void)v;
	(void)vl;
	if (key)
		rc = ki->fn(ki->ctx, key);
	free(key);
	return rc;
}

int store_layer_keys(struct store *s, int (*fn)(void *ctx, const char *key), void *ctx)
{
	struct key_iter ki = { fn, ctx };

	return store_iterate(s, CF_LAYERS, key_iter_cb, &ki);
}

/* ---------------------------------------------------------------- the layers lock */

void store_layers_rdlock(struct store *s)
{
	pthread_rwlock_rdlock(&s->layers_lock);
}

void store_layers_wrlock(struct store *s)
{
	pthread_rwlock_wrlock(&s->layers_lock);
}

void store_layers_unlock(struct store *s)
{
	pthread_rwlock_unlock(&s->layers_lock);
}

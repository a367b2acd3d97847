/* SPDX-License-Identifier: Apache-2.0 */
/* Layer records (with their seq numbers) and pending layers, and the layers lock. */
#include "store_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util/log.h"
#include "util/thread.h"

/* Layer record: u32 LE length of the JSON header, the JSON header, then the encoded index. */
static char *layer_json(const struct store_layer *l)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s}", "digest", l->digest,
			      "diff_id", l->diff_id, "media_type", l->media_type, "size",
			      (json_int_t)l->size, "tar_size", (json_int_t)l->tar_size, "seq",
			      (json_int_t)l->seq, "chunk_size", (json_int_t)l->chunk_size, "source",
			      l->source, "windows", l->windows);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int parse_layer(const char *val, size_t vlen, struct store_layer *info, void **index,
		       size_t *len)
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
	}
	json_decref(o);
	if (index) {
		size_t n = vlen - 4 - jlen;

		*index = malloc(n ? n : 1);
		if (!*index)
			return -ENOMEM;
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
	rc = parse_layer(val, vlen, info, index, len);
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

int store_layer_put(struct store *s, struct store_layer *info, const void *index, size_t len)
{
	struct store_layer old;
	char *err = NULL, *json = NULL, *val = NULL, *next = NULL;
	rocksdb_writebatch_t *wb = NULL;
	size_t nlen = 0, jlen;
	uint32_t seq, u32;
	char key[8];
	int rc;

	pthread_mutex_lock(&s->seq_mutex);
	rc = store_layer_get(s, info->digest, &old, NULL, NULL);
	if (rc == 0) {
		seq = old.seq;
	} else if (rc == -ENOENT) {
		next = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], KEY_NEXT_SEQ,
				      strlen(KEY_NEXT_SEQ), &nlen, &err);
		if (err) {
			rc = store_db_error(err, "read layer sequence");
			goto out;
		}
		seq = 1;
		if (next && nlen == 4)
			memcpy(&seq, next, 4);
	} else {
		goto out;
	}
	strata_err_clear();
	info->seq = seq;
	json = layer_json(info);
	if (!json) {
		rc = -ENOMEM;
		goto out;
	}
	jlen = strlen(json);
	val = malloc(4 + jlen + len);
	if (!val) {
		rc = -ENOMEM;
		goto out;
	}
	u32 = (uint32_t)jlen;
	memcpy(val, &u32, 4);
	memcpy(val + 4, json, jlen);
	memcpy(val + 4 + jlen, index, len);
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(wb, s->cf[CF_LAYERS], info->digest, strlen(info->digest), val,
				  4 + jlen + len);
	{
		char pkey[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN];
		int n = snprintf(pkey, sizeof(pkey), PENDING_PREFIX "%s", info->digest);

		rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], pkey, (size_t)n);
	}
	if (rc == -ENOENT) {
		u32 = seq + 1;
		seq_key(seq, key);
		rocksdb_writebatch_put_cf(wb, s->cf[CF_META], key, sizeof(key), info->digest,
					  strlen(info->digest));
		rocksdb_writebatch_put_cf(wb, s->cf[CF_META], KEY_NEXT_SEQ, strlen(KEY_NEXT_SEQ),
					  (const char *)&u32, 4);
	}
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rc = err ? store_db_error(err, "layer write") : 0;
out:
	pthread_mutex_unlock(&s->seq_mutex);
	if (wb)
		rocksdb_writebatch_destroy(wb);
	if (next)
		rocksdb_free(next);
	free(json);
	free(val);
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
	struct store_layer info;
	rocksdb_writebatch_t *wb;
	char key[8], *err = NULL;
	int rc = store_layer_get(s, digest, &info, NULL, NULL);

	if (rc == -ENOENT)
		return 0;
	if (rc < 0 && rc != -EBADMSG)
		return rc;
	wb = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(wb, s->cf[CF_LAYERS], digest, strlen(digest));
	store_atime_forget(s, wb, digest);
	if (rc == 0) {
		char other[STORE_DIGEST_LEN];

		/* Only drop the seq entry when it points back at this layer. */
		if (store_layer_by_seq(s, info.seq, other) == 0 && strcmp(other, digest) == 0) {
			seq_key(info.seq, key);
			rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], key, sizeof(key));
		}
	}
	strata_err_clear();
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rocksdb_writebatch_destroy(wb);
	return err ? store_db_error(err, "layer delete") : 0;
}

struct layer_iter {
	int (*fn)(void *ctx, const struct store_layer *l);
	void *ctx;
};

static int layer_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct layer_iter *li = ctx;
	struct store_layer info;

	(void)k;
	(void)kl;
	if (parse_layer(v, vl, &info, NULL, NULL) < 0) {
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

/* ---------------------------------------------------------------- pending layers */

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

int store_pending_put(struct store *s, const struct store_layer *info)
{
	char key[sizeof(PENDING_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *json, *val;
	int klen = pending_key(info->digest, key);
	size_t jlen;
	uint32_t u32;

	json = layer_json(info);
	if (!json)
		return -ENOMEM;
	jlen = strlen(json);
	val = malloc(4 + jlen);
	if (!val) {
		free(json);
		return -ENOMEM;
	}
	u32 = (uint32_t)jlen;
	memcpy(val, &u32, 4);
	memcpy(val + 4, json, jlen);
	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)klen, val, 4 + jlen, &err);
	free(json);
	free(val);
	if (err)
		return store_db_error(err, "pending layer write");
	store_pending_notify(s);
	return 0;
}

int store_pending_get(struct store *s, const char *digest, struct store_layer *info)
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
	rc = parse_layer(val, len, info, NULL, NULL);
	rocksdb_free(val);
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
		if (parse_layer(v, vl, &info, NULL, NULL) < 0) {
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

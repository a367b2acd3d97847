/* SPDX-License-Identifier: Apache-2.0 */
/* Images and the meta column family: pins, per-layer access times, store-wide counters. */
#include "store_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

int store_image_put(struct store *s, const char *ref, const char *json)
{
	char *err = NULL;

	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_IMAGES], ref, strlen(ref), json, strlen(json),
		       &err);
	return err ? store_db_error(err, "image write") : 0;
}

int store_image_get(struct store *s, const char *ref, char **json)
{
	char *err = NULL;
	size_t len = 0;
	char *val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_IMAGES], ref, strlen(ref), &len, &err);

	if (err)
		return store_db_error(err, "image read");
	if (!val)
		return -ENOENT;
	*json = strndup(val, len);
	rocksdb_free(val);
	return *json ? 0 : -ENOMEM;
}

int store_image_del(struct store *s, const char *ref)
{
	char *err = NULL;

	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_IMAGES], ref, strlen(ref), &err);
	return err ? store_db_error(err, "image delete") : 0;
}

struct image_iter {
	int (*fn)(void *ctx, const char *ref, const char *json);
	void *ctx;
};

static int image_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct image_iter *ii = ctx;
	char *ref = strndup(k, kl), *json = strndup(v, vl);
	int rc = -ENOMEM;

	if (ref && json)
		rc = ii->fn(ii->ctx, ref, json);
	free(ref);
	free(json);
	return rc;
}

int store_image_list(struct store *s, int (*fn)(void *ctx, const char *ref, const char *json),
		     void *ctx)
{
	struct image_iter ii = { fn, ctx };

	return store_iterate(s, CF_IMAGES, image_iter_cb, &ii);
}

/* Builds "<prefix><name>" in key (cap bytes). Returns its length, or -ENAMETOOLONG. */
static int meta_key(char *key, size_t cap, const char *prefix, const char *name)
{
	int n = snprintf(key, cap, "%s%s", prefix, name);

	if (n < 0 || (size_t)n >= cap)
		return strata_err(ENAMETOOLONG, "name too long: %.64s...", name);
	return n;
}

int store_pin_put(struct store *s, const char *ref)
{
	char key[4096], *err = NULL;
	int n = meta_key(key, sizeof(key), PIN_PREFIX, ref);

	if (n < 0)
		return n;
	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)n, "", 0, &err);
	return err ? store_db_error(err, "pin write") : 0;
}

int store_pin_del(struct store *s, const char *ref)
{
	char key[4096], *err = NULL;
	int n = meta_key(key, sizeof(key), PIN_PREFIX, ref);

	if (n < 0)
		return n;
	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_META], key, (size_t)n, &err);
	return err ? store_db_error(err, "pin delete") : 0;
}

int store_pin_has(struct store *s, const char *ref)
{
	char key[4096], *err = NULL;
	int n = meta_key(key, sizeof(key), PIN_PREFIX, ref);
	rocksdb_pinnableslice_t *v;

	if (n < 0)
		return n;
	v = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)n, &err);
	if (err)
		return store_db_error(err, "pin read");
	if (!v)
		return 0;
	rocksdb_pinnableslice_destroy(v);
	return 1;
}

int store_pin_list(struct store *s, int (*fn)(void *ctx, const char *ref), void *ctx)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_META]);
	size_t plen = strlen(PIN_PREFIX);
	char *err = NULL;
	int rc = 0;

	for (rocksdb_iter_seek(it, PIN_PREFIX, plen); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);
		char *ref;

		if (kl < plen || memcmp(k, PIN_PREFIX, plen) != 0)
			break;
		ref = strndup(k + plen, kl - plen);
		if (!ref) {
			rc = -ENOMEM;
			break;
		}
		rc = fn(ctx, ref);
		free(ref);
		if (rc)
			break;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err)
		return store_db_error(err, "pin list");
	return rc;
}

/* Writes one access time. Caller holds meta_mutex. */
static int atime_write(struct store *s, struct atime *a)
{
	char key[sizeof(ATIME_PREFIX) + STORE_DIGEST_LEN], val[8], *err = NULL;
	int n = snprintf(key, sizeof(key), ATIME_PREFIX "%s", a->digest);

	for (int i = 0; i < 8; i++)
		val[i] = (char)(a->mem >> (8 * i));
	rocksdb_put_cf(s->db, s->wo, s->cf[CF_META], key, (size_t)n, val, 8, &err);
	if (err) {
		int rc = store_db_error(err, "access time write");

		if (rc != -ENOSPC && !s->atime_warned++)
			strata_log(LOG_WARNING, "store: cannot record layer access times: %s",
				   strata_errmsg(rc));
		return rc;
	}
	s->atime_warned = 0;
	a->written = a->mem;
	return 0;
}

void store_atime_flush(struct store *s)
{
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (s->atimes[i].mem != s->atimes[i].written)
			atime_write(s, &s->atimes[i]);
	}
	pthread_mutex_unlock(&s->meta_mutex);
}

void store_atime_forget(struct store *s, rocksdb_writebatch_t *wb, const char *digest)
{
	char akey[sizeof(ATIME_PREFIX) + STORE_DIGEST_LEN];
	int n = snprintf(akey, sizeof(akey), ATIME_PREFIX "%s", digest);

	rocksdb_writebatch_delete_cf(wb, s->cf[CF_META], akey, (size_t)n);
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (strcmp(s->atimes[i].digest, digest) == 0) {
			s->atimes[i] = s->atimes[--s->natimes];
			break;
		}
	}
	pthread_mutex_unlock(&s->meta_mutex);
}

int store_layer_touch(struct store *s, const char *digest, uint64_t now)
{
	struct atime *a = NULL;
	int rc = 0;

	if (strlen(digest) >= STORE_DIGEST_LEN)
		return -EINVAL;
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (strcmp(s->atimes[i].digest, digest) == 0) {
			a = &s->atimes[i];
			break;
		}
	}
	if (!a) {
		if (s->natimes == s->capatimes) {
			size_t cap = s->capatimes ? s->capatimes * 2 : 64;
			struct atime *na = realloc(s->atimes, cap * sizeof(*na));

			if (!na) {
				pthread_mutex_unlock(&s->meta_mutex);
				return -ENOMEM;
			}
			s->atimes = na;
			s->capatimes = cap;
		}
		a = &s->atimes[s->natimes++];
		memset(a, 0, sizeof(*a));
		snprintf(a->digest, sizeof(a->digest), "%s", digest);
	}
	if (now > a->mem)
		a->mem = now;
	if (a->mem >= a->written + ATIME_WRITE_EVERY)
		rc = atime_write(s, a);
	pthread_mutex_unlock(&s->meta_mutex);
	return rc;
}

int store_layer_atime(struct store *s, const char *digest, uint64_t *when)
{
	char key[sizeof(ATIME_PREFIX) + STORE_DIGEST_LEN], *err = NULL, *val;
	size_t len = 0;
	uint64_t mem = 0, disk = 0;
	int n;

	if (strlen(digest) >= STORE_DIGEST_LEN)
		return -EINVAL;
	n = snprintf(key, sizeof(key), ATIME_PREFIX "%s", digest);
	pthread_mutex_lock(&s->meta_mutex);
	for (size_t i = 0; i < s->natimes; i++) {
		if (strcmp(s->atimes[i].digest, digest) == 0) {
			mem = s->atimes[i].mem;
			break;
		}
	}
	pthread_mutex_unlock(&s->meta_mutex);
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)n, &len, &err);
	if (err)
		return store_db_error(err, "access time read");
	if (val && len == 8) {
		for (int i = 0; i < 8; i++)
			disk |= (uint64_t)(uint8_t)val[i] << (8 * i);
	}
	if (val)
		rocksdb_free(val);
	*when = mem > disk ? mem : disk;
	return 0;
}

int store_counter_add(struct store *s, const char *name, uint64_t delta)
{
	char key[256], buf[8];
	uint64_t v;
	int n = meta_key(key, sizeof(key), COUNTER_PREFIX, name), rc;
	char *err = NULL;

	if (n < 0)
		return n;
	pthread_mutex_lock(&s->meta_mutex);
	rc = store_counter_get(s, name, &v);
	if (rc == 0) {
		v += delta;
		for (int i = 0; i < 8; i++)
			buf[i] = (char)(v >> (8 * i));
		rocksdb_put_cf(s->db, s->wo, s->cf[CF_META], key, (size_t)n, buf, 8, &err);
		if (err)
			rc = store_db_error(err, "counter write");
	}
	pthread_mutex_unlock(&s->meta_mutex);
	return rc;
}

int store_counter_get(struct store *s, const char *name, uint64_t *value)
{
	char key[256], *err = NULL, *val;
	size_t len = 0;
	int n = meta_key(key, sizeof(key), COUNTER_PREFIX, name);

	if (n < 0)
		return n;
	*value = 0;
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_META], key, (size_t)n, &len, &err);
	if (err)
		return store_db_error(err, "counter read");
	if (val && len == 8) {
		for (int i = 0; i < 8; i++)
			*value |= (uint64_t)(uint8_t)val[i] << (8 * i);
	}
	if (val)
		rocksdb_free(val);
	return 0;
}

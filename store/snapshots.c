/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshot records of the containerd snapshotter (the snapshots column family): key -> JSON, and
 * the id counter naming each snapshot's directory. */
#include "store_i.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define SNAP_PREFIX  "k/"
#define SNAP_NEXT_ID "next_id"

/* "k/<key>" (malloc'd) or NULL. */
static char *rec_key(const char *key, size_t *len)
{
	char *k = NULL;
	int n = asprintf(&k, SNAP_PREFIX "%s", key);

	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return k;
}

int store_snap_get(struct store *s, const char *key, char **json)
{
	char *err = NULL, *val, *k;
	size_t kl, len = 0;

	k = rec_key(key, &kl);
	if (!k)
		return -ENOMEM;
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_SNAPSHOTS], k, kl, &len, &err);
	free(k);
	if (err)
		return store_db_error(err, "snapshot read");
	if (!val)
		return -ENOENT;
	*json = strndup(val, len);
	rocksdb_free(val);
	return *json ? 0 : -ENOMEM;
}

int store_snap_put(struct store *s, const char *key, const char *json)
{
	char *err = NULL, *k;
	size_t kl;

	k = rec_key(key, &kl);
	if (!k)
		return -ENOMEM;
	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_SNAPSHOTS], k, kl, json, strlen(json), &err);
	free(k);
	return err ? store_db_error(err, "snapshot write") : 0;
}

int store_snap_rename(struct store *s, const char *from, const char *to, const char *json)
{
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	char *err = NULL, *kf, *kt;
	size_t lf, lt;

	kf = rec_key(from, &lf);
	kt = rec_key(to, &lt);
	if (!kf || !kt) {
		free(kf);
		free(kt);
		rocksdb_writebatch_destroy(wb);
		return -ENOMEM;
	}
	rocksdb_writebatch_delete_cf(wb, s->cf[CF_SNAPSHOTS], kf, lf);
	rocksdb_writebatch_put_cf(wb, s->cf[CF_SNAPSHOTS], kt, lt, json, strlen(json));
	rocksdb_write(s->db, s->wo_sync, wb, &err);
	rocksdb_writebatch_destroy(wb);
	free(kf);
	free(kt);
	return err ? store_db_error(err, "snapshot commit") : 0;
}

int store_snap_del(struct store *s, const char *key)
{
	char *err = NULL, *k;
	size_t kl;

	k = rec_key(key, &kl);
	if (!k)
		return -ENOMEM;
	rocksdb_delete_cf(s->db, s->wo_sync, s->cf[CF_SNAPSHOTS], k, kl, &err);
	free(k);
	return err ? store_db_error(err, "snapshot delete") : 0;
}

struct snap_iter {
	int (*fn)(void *ctx, const char *key, const char *json);
	void *ctx;
};

static int snap_iter_cb(void *ctx, const char *k, size_t kl, const char *v, size_t vl)
{
	struct snap_iter *si = ctx;
	char *key, *json;
	int rc = -ENOMEM;

	if (kl < strlen(SNAP_PREFIX) || memcmp(k, SNAP_PREFIX, strlen(SNAP_PREFIX)) != 0)
		return 0; /* the id counter */
	key = strndup(k + strlen(SNAP_PREFIX), kl - strlen(SNAP_PREFIX));
	json = strndup(v, vl);
	if (key && json)
		rc = si->fn(si->ctx, key, json);
	free(key);
	free(json);
	return rc;
}

int store_snap_list(struct store *s, int (*fn)(void *ctx, const char *key, const char *json),
		    void *ctx)
{
	struct snap_iter si = { fn, ctx };

	return store_iterate(s, CF_SNAPSHOTS, snap_iter_cb, &si);
}

int store_snap_next_id(struct store *s, uint64_t *id)
{
	char *err = NULL, *val, buf[32];
	size_t len = 0;
	uint64_t next = 1;
	int n;

	pthread_mutex_lock(&s->meta_mutex);
	val = rocksdb_get_cf(s->db, s->ro, s->cf[CF_SNAPSHOTS], SNAP_NEXT_ID, strlen(SNAP_NEXT_ID),
			     &len, &err);
	if (err) {
		pthread_mutex_unlock(&s->meta_mutex);
		return store_db_error(err, "snapshot id read");
	}
	if (val) {
		snprintf(buf, sizeof(buf), "%.*s", (int)(len < 31 ? len : 31), val);
		next = strtoull(buf, NULL, 10);
		rocksdb_free(val);
		if (next == 0) {
			pthread_mutex_unlock(&s->meta_mutex);
			return strata_err(EBADMSG, "store %s: snapshot id counter is corrupt",
					  s->dir);
		}
	}
	n = snprintf(buf, sizeof(buf), "%" PRIu64, next + 1);
	rocksdb_put_cf(s->db, s->wo_sync, s->cf[CF_SNAPSHOTS], SNAP_NEXT_ID, strlen(SNAP_NEXT_ID),
		       buf, (size_t)n, &err);
	pthread_mutex_unlock(&s->meta_mutex);
	if (err)
		return store_db_error(err, "snapshot id write");
	*id = next;
	return 0;
}

int store_snap_dir(const struct store *s, uint64_t id, char *buf, size_t cap)
{
	int n = id ? snprintf(buf, cap, "%s/" STORE_SNAP_DIR "/%" PRIu64, s->dir, id) :
		     snprintf(buf, cap, "%s/" STORE_SNAP_DIR, s->dir);

	if (n < 0 || (size_t)n >= cap)
		return strata_err(ENAMETOOLONG, "store path %s is too long", s->dir);
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Quota eviction of least recently used, unpinned layers' chunks; pin and unpin commands. */
#include "quota.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "cmd.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "fs/fs.h"
#include "index/layer.h"
#include "store/store.h"
#include "tools/dset.h"
#include "util/log.h"
#include "util/thread.h"

#define BATCH 4096          /* chunks deleted under one fs_open_lock hold */
#define MAX_ROUNDS 16       /* compactions in one quota_evict() call */

static pthread_mutex_t evict_mu = PTHREAD_MUTEX_INITIALIZER; /* one pass at a time */

/* ---------------------------------------------------------------- pinned layers */

struct pins {
	struct store *s;
	json_t *layers; /* object: digest -> true */
	int rc;
};

static int pin_image_cb(void *ctx, const char *ref)
{
	struct pins *p = ctx;
	char *json = NULL;
	json_error_t jerr;
	json_t *o;
	int rc = store_image_get(p->s, ref, &json);

	if (rc == -ENOENT)
		return 0; /* a pin left by a crash between rm's steps keeps nothing */
	if (rc < 0)
		return rc;
	o = json_loads(json, 0, &jerr);
	free(json);
	if (!o)
		return strata_err(EBADMSG, "image %s: unreadable record", ref);
	rc = cli_image_layer_set(o, p->layers);
	json_decref(o);
	return rc;
}

/* Fills layers (an object) with the digests of every pinned image's layers. Returns 0 or negative
 * errno. */
static int pinned_layers(struct store *s, json_t *layers)
{
	struct pins p = { s, layers, 0 };

	return store_pin_list(s, pin_image_cb, &p);
}

/* Decodes layer digest's index. Returns 0 and *out, or negative errno (-EBADMSG for a bad one). */
static int load_index(struct store *s, const char *digest, struct index_layer **out)
{
	void *enc = NULL;
	size_t len = 0;
	int rc = store_layer_get(s, digest, NULL, &enc, &len);

	*out = NULL;
	if (rc == 0)
		rc = index_layer_decode(enc, len, out);
	free(enc);
	if (rc == -EINVAL || rc == -EPROTO)
		rc = strata_err(EBADMSG, "layer %s does not decode", digest);
	return rc;
}

/* ---------------------------------------------------------------- eviction */

struct cand {
	char digest[STORE_DIGEST_LEN];
	uint64_t atime;
};

struct evict {
	struct store *s;
	struct fs *fs;
	json_t *pinned;
	struct cand *c;
	size_t n, cap;
	int rc;
};

static int cand_cb(void *ctx, const struct store_layer *sl)
{
	struct evict *e = ctx;
	int rc;

	if (json_object_get(e->pinned, sl->digest))
		return 0;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct cand *n = realloc(e->c, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		e->c = n;
		e->cap = cap;
	}
	snprintf(e->c[e->n].digest, STORE_DIGEST_LEN, "%s", sl->digest);
	rc = store_layer_atime(e->s, sl->digest, &e->c[e->n].atime);
	if (rc < 0)
		return rc;
	e->n++;
	return 0;
}

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	if (x->atime != y->atime)
		return x->atime < y->atime ? -1 : 1;
	return strcmp(x->digest, y->digest);
}

static int open_cb(void *ctx, const uint8_t digest[32])
{
	return dset_add(ctx, digest) < 0 ? -ENOMEM : 0;
}

/* Deletes the n digests of batch that are not of an open file, with opens held off. *freed gets
 * the stored bytes of what was deleted. Returns the number deleted or negative errno. */
static int delete_batch(struct evict *e, uint8_t (*batch)[32], const uint64_t *sizes, size_t n,
			uint64_t *freed)
{
	struct dset open = { 0 };
	size_t k = 0;
	int rc = 0;

	*freed = 0;
	if (e->fs) {
		fs_open_lock(e->fs);
		rc = fs_open_chunks(e->fs, open_cb, &open);
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (dset_has(&open, batch[i]))
			continue;
		memmove(batch[k], batch[i], 32);
		*freed += sizes[i];
		k++;
	}
	if (rc == 0)
		rc = store_chunk_del(e->s, (const uint8_t(*)[32])batch, k);
	if (e->fs)
		fs_open_unlock(e->fs);
	dset_free(&open);
	return rc < 0 ? rc : (int)k;
}

/* Evicts the chunks of candidate layer ci that are neither kept nor gone already, in index order,
 * until want stored bytes are freed. Adds to res. */
static int evict_layer(struct evict *e, size_t ci, const struct dset *kept, struct dset *gone,
		       uint64_t want, volatile int *cancel, struct quota_result *res)
{
	struct index_layer *l = NULL;
	uint8_t (*batch)[32] = malloc(BATCH * sizeof(*batch));
	uint64_t *sizes = malloc(BATCH * sizeof(*sizes));
	uint32_t nchunks, nwin;
	size_t n = 0;
	uint64_t pending = 0, start = res->bytes;
	int rc, touched = 0;

	if (!batch || !sizes) {
		rc = -ENOMEM;
		goto out;
	}
	rc = load_index(e->s, e->c[ci].digest, &l);
	if (rc == -ENOENT) { /* removed meanwhile */
		strata_err_clear();
		rc = 0;
		goto out;
	}
	if (rc < 0)
		goto out;
	nchunks = index_layer_nchunks(l);
	nwin = index_layer_ncheckpoints(l);
	for (uint32_t i = 0; i < nchunks + nwin && rc >= 0; i++) {
		const uint8_t *d;
		ssize_t len;
		uint64_t freed;

		if (i < nchunks) {
			d = index_layer_chunk(l, i)->digest;
		} else {
			const struct index_checkpoint *cp = index_layer_checkpoint(l, i - nchunks);

			if (cp->wlen == 0)
				continue;
			d = cp->window;
		}
		if (dset_has(kept, d) || dset_has(gone, d))
			continue;
		if (dset_add(gone, d) < 0) {
			rc = -ENOMEM;
			break;
		}
		len = store_chunk_stored_len(e->s, d);
		if (len == -ENOENT)
			continue;
		if (len < 0) {
			rc = (int)len;
			break;
		}
		memcpy(batch[n], d, 32);
		sizes[n++] = (uint64_t)len;
		pending += (uint64_t)len;
		if (n < BATCH && i + 1 < nchunks + nwin && res->bytes - start + pending < want)
			continue;
		if (cancel && *cancel) {
			rc = -ECANCELED;
			break;
		}
		rc = delete_batch(e, batch, sizes, n, &freed);
		if (rc > 0) {
			res->chunks += (uint64_t)rc;
			res->bytes += freed;
			touched = 1;
		}
		n = 0;
		pending = 0;
		if (res->bytes - start >= want)
			break;
	}
	if (rc >= 0 && n > 0) {
		uint64_t freed;

		rc = delete_batch(e, batch, sizes, n, &freed);
		if (rc > 0) {
			res->chunks += (uint64_t)rc;
			res->bytes += freed;
			touched = 1;
		}
	}
	if (touched)
		res->layers++;
out:
	index_layer_free(l);
	free(batch);
	free(sizes);
	return rc < 0 ? rc : 0;
}

/* The store's size as the quota counts it: what the directory takes on disk. */
static uint64_t disk_size(struct store *s)
{
	struct store_stats st;

	store_get_stats(s, &st);
	return st.disk_bytes; /* chunks in memtables are in the WAL on disk too */
}

/* low_water percent of quota, without overflow. */
static uint64_t low_water_bytes(uint64_t quota, unsigned low_water)
{
	if (!low_water || low_water > 100)
		low_water = QUOTA_LOW_WATER_DEFAULT;
	return quota / 100 * low_water + quota % 100 * low_water / 100;
}

int quota_evict(struct store *s, struct fs *fs, uint64_t quota, unsigned low_water,
		volatile int *cancel, struct quota_result *res)
{
	struct evict e = { s, fs, NULL, NULL, 0, 0, 0 };
	struct dset kept = { 0 }, gone = { 0 };
	const char *key;
	json_t *v;
	size_t next = 0;
	uint64_t disk;
	int rc = 0;

	memset(res, 0, sizeof(*res));
	if (!low_water || low_water > 100)
		low_water = QUOTA_LOW_WATER_DEFAULT;
	res->quota = quota;
	res->target = low_water_bytes(quota, low_water);
	pthread_mutex_lock(&evict_mu);
	disk = disk_size(s);
	res->disk_before = res->disk_after = disk;
	if (!quota || disk <= quota)
		goto out;
	res->over = 1;
	e.pinned = json_object();
	if (!e.pinned) {
		rc = -ENOMEM;
		goto out;
	}
	rc = pinned_layers(s, e.pinned);
	json_object_foreach(e.pinned, key, v) {
		struct index_layer *l = NULL;

		if (rc < 0)
			break;
		rc = load_index(s, key, &l);
		if (rc == -ENOENT) { /* a pinned image with a missing layer: fsck reports it */
			strata_err_clear();
			rc = 0;
			continue;
		}
		if (rc == 0)
			rc = dset_add_layer(&kept, l);
		index_layer_free(l);
	}
	if (rc == 0)
		rc = store_layer_list(s, cand_cb, &e);
	if (rc < 0)
		goto out;
	qsort(e.c, e.n, sizeof(*e.c), cand_cmp);
	for (int round = 0; round < MAX_ROUNDS && disk > res->target && next < e.n; round++) {
		uint64_t need = disk - res->target, start = res->bytes;

		while (next < e.n && res->bytes - start < need) {
			rc = evict_layer(&e, next, &kept, &gone, need - (res->bytes - start),
					 cancel, res);
			if (rc == 0 && res->bytes - start < need)
				next++; /* done with it; else it may have more to give */
			if (rc < 0)
				goto compact;
		}
		rc = store_chunk_compact(s);
		if (rc < 0)
			goto out;
		disk = disk_size(s);
	}
compact:
	if (rc < 0 && res->chunks) {
		int crc = store_chunk_compact(s);

		if (crc < 0)
			strata_log(LOG_WARNING, "quota: compaction: %s", strata_errmsg(crc));
		disk = disk_size(s);
	}
	res->disk_after = disk;
	if (res->chunks) {
		store_counter_add(s, "evictions", 1);
		store_counter_add(s, "evicted_chunks", res->chunks);
		store_counter_add(s, "evicted_bytes", res->bytes);
	}
out:
	pthread_mutex_unlock(&evict_mu);
	json_decref(e.pinned);
	free(e.c);
	dset_free(&kept);
	dset_free(&gone);
	return rc;
}

/* ---------------------------------------------------------------- background evictor */

struct quota {
	struct store *s;
	struct fs *fs;
	uint64_t quota;
	unsigned low_water;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	volatile int stop; /* written under mu; read by quota_evict between batches */
};

static void *evictor_main(void *arg)
{
	struct quota *q = arg;
	int failed = 0;

	pthread_mutex_lock(&q->mu);
	while (!q->stop) {
		struct timespec until;
		struct quota_result r;
		int rc;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		pthread_cond_timedwait(&q->cv, &q->mu, &until);
		if (q->stop)
			break;
		pthread_mutex_unlock(&q->mu);
		if (disk_size(q->s) > q->quota) {
			rc = quota_evict(q->s, q->fs, q->quota, q->low_water, &q->stop, &r);
			if (rc < 0 && rc != -ECANCELED && !failed++) {
				strata_log(LOG_ERR, "quota: eviction failed: %s", strata_errmsg(rc));
			} else if (rc == 0 && r.over) {
				char b1[32], b2[32], b3[32], b4[32];

				failed = 0;
				strata_log(LOG_NOTICE, "quota: store was %s (quota %s): evicted %llu chunks "
					   "(%s) of %llu layers; now %s",
					   cli_bytes(r.disk_before, b1, sizeof(b1)),
					   cli_bytes(r.quota, b2, sizeof(b2)),
					   (unsigned long long)r.chunks, cli_bytes(r.bytes, b3, sizeof(b3)),
					   (unsigned long long)r.layers,
					   cli_bytes(r.disk_after, b4, sizeof(b4)));
				if (r.disk_after > r.quota && !r.chunks) {
					/* nothing evictable: do not spin on compactions */
					pthread_mutex_lock(&q->mu);
					clock_gettime(CLOCK_REALTIME, &until);
					until.tv_sec += 30;
					while (!q->stop &&
					       pthread_cond_timedwait(&q->cv, &q->mu, &until) == 0)
						;
					pthread_mutex_unlock(&q->mu);
				}
			}
		}
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int quota_start(struct store *s, struct fs *fs, uint64_t quota, unsigned low_water,
		struct quota **out)
{
	struct quota *q = calloc(1, sizeof(*q));
	int rc;

	*out = NULL;
	if (!q)
		return -ENOMEM;
	q->s = s;
	q->fs = fs;
	q->quota = quota;
	q->low_water = low_water;
	{
		/* Completion stays as far under the low-water mark as the mark is under the quota:
		 * a span it fetches past the check must not push the store over the quota. */
		uint64_t lw = low_water_bytes(quota, low_water);

		fs_background_limit(fs, lw > quota - lw ? lw - (quota - lw) : lw / 2);
	}
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	rc = util_thread_start(&q->thread, evictor_main, q);
	if (rc != 0) {
		pthread_mutex_destroy(&q->mu);
		pthread_cond_destroy(&q->cv);
		free(q);
		return strata_err(rc, "cannot start the quota evictor thread");
	}
	*out = q;
	return 0;
}

uint64_t quota_bytes(const struct quota *q)
{
	return q->quota;
}

unsigned quota_low_water(const struct quota *q)
{
	return q->low_water ? q->low_water : QUOTA_LOW_WATER_DEFAULT;
}

void quota_stop(struct quota *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stop = 1;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thread, NULL);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}

/* ---------------------------------------------------------------- pin, unpin */

/* Returns the normalized reference for arg (malloc'd), or NULL after printing the error. */
static char *normalize(struct cli *c, const char *arg)
{
	struct fetch_ref *r;
	char *name;
	int rc = fetch_ref_parse(arg, &r);

	if (rc < 0) {
		cli_fail(c, "%s", strata_errmsg(rc));
		return NULL;
	}
	name = fetch_ref_string(r);
	fetch_ref_free(r);
	if (!name)
		cli_fail(c, "out of memory");
	return name;
}

struct pin_progress {
	struct cli *c;
	const char *ref;
	uint64_t base, total; /* bytes of the layers before this one, of all layers */
	time_t last;
};

static void pin_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct pin_progress *p = ctx;
	time_t now = time(NULL);
	char b1[32], b2[32];

	(void)total;
	if (!p->c->tty || p->c->json || (now == p->last && done != 0))
		return;
	p->last = now;
	fprintf(p->c->err, "\r\033[Kpin %s: %s of %s local", p->ref,
		cli_bytes(p->base + done, b1, sizeof(b1)), cli_bytes(p->total, b2, sizeof(b2)));
	fflush(p->c->err);
}

/* Makes image name fully local. Returns 0 or negative errno (strata_err set). */
static int pin_fetch(struct cli *c, struct fetch_client *fc, const char *name, json_t *layers,
		     uint64_t *content)
{
	struct pin_progress p = { c, name, 0, 0, 0 };
	json_t *layer;
	size_t i;
	int rc = 0;

	json_array_foreach(layers, i, layer) {
		struct index_layer *l = NULL;
		const char *d = json_string_value(json_object_get(layer, "digest"));

		if (!d)
			return strata_err(EBADMSG, "image %s: layer %zu has no digest", name, i);
		rc = load_index(c->store, d, &l);
		if (rc < 0)
			return rc;
		for (uint32_t k = 0; k < index_layer_nchunks(l); k++)
			p.total += index_layer_chunk(l, k)->size;
		index_layer_free(l);
	}
	json_array_foreach(layers, i, layer) {
		const char *d = json_string_value(json_object_get(layer, "digest"));
		struct index_layer *l = NULL;

		rc = fs_fetch_layer(c->fs, c->store, fc, d, pin_progress_cb, &p, c->cancel);
		if (rc < 0)
			break;
		if (load_index(c->store, d, &l) == 0) {
			for (uint32_t k = 0; k < index_layer_nchunks(l); k++)
				p.base += index_layer_chunk(l, k)->size;
		}
		index_layer_free(l);
	}
	if (c->tty && !c->json) {
		fprintf(c->err, "\r\033[K");
		fflush(c->err);
	}
	*content = p.total;
	return rc;
}

static int pin_one(struct cli *c, struct fetch_client *fc, const char *arg)
{
	char *name = normalize(c, arg), *json = NULL;
	json_error_t jerr;
	json_t *o = NULL;
	uint64_t content = 0;
	int was, rc, code = 1;

	if (!name)
		return 1;
	rc = store_image_get(c->store, name, &json);
	if (rc == -ENOENT) {
		cli_fail(c, "%s: no such image in the store (pull it first)", name);
		goto out;
	}
	if (rc == 0 && !(o = json_loads(json, 0, &jerr)))
		rc = strata_err(EBADMSG, "image %s: unreadable record", name);
	if (rc < 0) {
		cli_fail(c, "%s: %s", name, strata_errmsg(rc));
		goto out;
	}
	/* Pin first, so eviction keeps what this fetches; undone when the fetch fails. */
	was = store_pin_has(c->store, name);
	rc = was < 0 ? was : store_pin_put(c->store, name);
	if (rc == 0) {
		/* An eviction pass under way chose its kept set before the pin: let it end. */
		pthread_mutex_lock(&evict_mu);
		pthread_mutex_unlock(&evict_mu);
	}
	if (rc == 0)
		rc = pin_fetch(c, fc, name, json_object_get(o, "layers"), &content);
	if (rc < 0) {
		if (was == 0)
			store_pin_del(c->store, name);
		if (rc == -ECANCELED)
			cli_fail(c, "%s: cancelled: the daemon is shutting down", name);
		else
			cli_fail(c, "%s: not pinned: %s", name, strata_errmsg(rc));
		goto out;
	}
	if (c->json) {
		json_t *r = json_pack("{s:s, s:b, s:I, s:I}", "ref", name, "pinned", 1, "layers",
				      (json_int_t)json_array_size(json_object_get(o, "layers")),
				      "content_bytes", (json_int_t)content);
		char *txt = r ? json_dumps(r, JSON_COMPACT) : NULL;

		fprintf(c->out, "%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(r);
	} else {
		char b[32];

		fprintf(c->out, "pinned %s (%zu layers, %s, all local)\n", name,
			json_array_size(json_object_get(o, "layers")), cli_bytes(content, b, sizeof(b)));
	}
	code = 0;
out:
	json_decref(o);
	free(json);
	free(name);
	return code;
}

int cmd_pin(struct cli *c, int argc, char **argv)
{
	struct fetch_client *fc = c->fetch;
	int failed = 0;

	if (argc < 2)
		return cli_usage(c, "pin needs at least one reference");
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			return cli_usage(c, "unknown option %s", argv[i]);
	}
	if (!c->fs) {
		if (cli_fetch_client(c, &fc))
			return 1;
	}
	for (int i = 1; i < argc; i++)
		failed |= pin_one(c, fc, argv[i]);
	if (!c->fs)
		fetch_client_free(fc);
	return failed;
}

int cmd_unpin(struct cli *c, int argc, char **argv)
{
	int failed = 0;

	if (argc < 2)
		return cli_usage(c, "unpin needs at least one reference");
	for (int i = 1; i < argc; i++) {
		char *name = normalize(c, argv[i]);
		int rc;

		if (!name) {
			failed = 1;
			continue;
		}
		rc = store_pin_has(c->store, name);
		if (rc == 0)
			failed = cli_fail(c, "%s is not pinned", name);
		else if (rc < 0 || (rc = store_pin_del(c->store, name)) < 0)
			failed = cli_fail(c, "%s: %s", name, strata_errmsg(rc));
		else if (!c->json)
			fprintf(c->out, "unpinned %s (strata gc or the quota may now evict it)\n", name);
		free(name);
	}
	return failed;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Streams pending layers (no index anywhere) into the store; lookups wait for them. */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch/ref.h"
#include "fetch/registry.h"
#include "index/decomp.h"
#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/thread.h"

#define WAIT_SLICE_MS 1000

/* ---------------------------------------------------------------- building one layer */

static int put_chunk(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	int rc = store_chunk_put(ctx, digest, data, len);

	return rc < 0 ? rc : 0;
}

/* Opens an anonymous temporary file in the store (never visible, gone on close). */
static int tmp_file(struct store *s)
{
	char dir[4096];
	int fd;

	snprintf(dir, sizeof(dir), "%s/tmp", store_dir(s));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return strata_err(errno, "%s: %s", dir, strerror(errno));
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return strata_err(errno, "temporary file in %s: %s", dir, strerror(errno));
	return fd;
}

int fs_layer_build(struct store *s, struct fetch_client *fc, const struct fetch_ref *ref,
		   struct store_layer *info,
		   int (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
		   struct index_layer **out)
{
	static const enum index_blob blob_kind[] = {
		[INDEX_COMP_NONE] = INDEX_BLOB_TAR,
		[INDEX_COMP_GZIP] = INDEX_BLOB_GZIP,
		[INDEX_COMP_ZSTD] = INDEX_BLOB_ZSTD,
	};
	enum index_compression comp, seen;
	struct index_build_opts bo;
	struct index_layer *idx = NULL;
	uint8_t magic[4] = { 0 };
	char diff_id[UTIL_DIGEST_STR_LEN];
	ssize_t n;
	int fd, rc;

	*out = NULL;
	if (index_compression_of_media_type(info->media_type, &comp) < 0)
		return strata_err(ENOTSUP, "unsupported layer media type %s", info->media_type);
	fd = tmp_file(s);
	if (fd < 0)
		return fd;
	rc = fetch_blob_to_fd(fc, ref, info->digest, info->size, fd, progress, pctx);
	if (rc < 0)
		goto out;
	n = pread(fd, magic, sizeof(magic), 0);
	if (n < 0) {
		rc = strata_err(errno, "read: %s", strerror(errno));
		goto out;
	}
	seen = index_compression_detect(magic, (size_t)n);
	if (comp != INDEX_COMP_NONE && seen != comp) {
		rc = strata_err(EBADMSG, "media type %s says %s, but the blob is not %s",
				info->media_type, index_compression_name(comp),
				index_compression_name(comp));
		goto out;
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		rc = strata_err(errno, "seek: %s", strerror(errno));
		goto out;
	}
	memset(&bo, 0, sizeof(bo));
	bo.chunk_size = info->chunk_size;
	bo.blob = blob_kind[comp];
	bo.chunk_fn = put_chunk;
	bo.window_fn = put_chunk; /* windows are content-addressed chunks too */
	bo.ctx = s;
	rc = index_layer_build_blob(index_reader_fd(fd), &bo, &idx);
	if (rc < 0)
		goto out;
	util_digest_format(index_layer_diff_id(idx), diff_id);
	if (info->diff_id[0] && strcmp(info->diff_id, diff_id) != 0) {
		rc = strata_err(
			EBADMSG,
			"uncompressed digest %s does not match the image config's diff_id %s",
			diff_id, info->diff_id);
		goto out;
	}
	snprintf(info->diff_id, sizeof(info->diff_id), "%s", diff_id);
	info->tar_size = index_layer_tar_size(idx);
	if (!info->chunk_size)
		info->chunk_size = index_layer_chunk_size(idx);
	*out = idx;
	idx = NULL;
out:
	close(fd);
	index_layer_free(idx);
	return rc;
}

/* ---------------------------------------------------------------- the streamer */

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_FAILED, JOB_DONE };

/* One pending layer. Jobs are freed only when the streamer stops (waiters hold pointers). */
struct job {
	char digest[STORE_DIGEST_LEN];
	enum job_state state;
	uint64_t done, total;
	struct timespec progress; /* CLOCK_MONOTONIC: queued, started, or last bytes arrived */
	struct timespec failed_at;
	char error[512];
	int waiters;
	int logged; /* this failure or stall was logged */
	struct job *next;
};

struct fs_streamer {
	struct store *store;
	struct fetch_client *fetch;
	int stall_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a job changed state or made progress */
	struct job *jobs;  /* protected by mu */
	atomic_int stop;
	unsigned nworkers;
	pthread_t *workers;
};

static int64_t ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* Finds the job for digest. Called with mu held. */
static struct job *job_find(struct fs_streamer *st, const char *digest)
{
	for (struct job *j = st->jobs; j; j = j->next) {
		if (strcmp(j->digest, digest) == 0)
			return j;
	}
	return NULL;
}

/* Queues digest unless a job for it exists; requeues a done job (pulled again after rm).
 * Called with mu held. Returns the job or NULL on ENOMEM. */
static struct job *job_queue(struct fs_streamer *st, const char *digest)
{
	struct job *j = job_find(st, digest);

	if (j) {
		if (j->state == JOB_DONE) {
			j->state = JOB_QUEUED;
			clock_gettime(CLOCK_MONOTONIC, &j->progress);
		}
		return j;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	snprintf(j->digest, sizeof(j->digest), "%s", digest);
	j->state = JOB_QUEUED;
	clock_gettime(CLOCK_MONOTONIC, &j->progress);
	j->next = st->jobs;
	st->jobs = j;
	return j;
}

static int refresh_cb(void *ctx, const struct store_layer *l)
{
	struct fs_streamer *st = ctx;
	struct job *j = job_find(st, l->digest);

	if (!j || j->state == JOB_DONE) {
		job_queue(st, l->digest); /* new, or pulled again after rm */
	} else if (j->state == JOB_FAILED && ms_since(&j->failed_at) >= FS_STREAM_RETRY_WORKER_MS) {
		j->state = JOB_QUEUED;
		clock_gettime(CLOCK_MONOTONIC, &j->progress);
	}
	return 0;
}

/* Takes the next queued job, those a lookup waits for first. Called with mu held. */
static struct job *job_take(struct fs_streamer *st)
{
	struct job *best = NULL;

	for (struct job *j = st->jobs; j; j = j->next) {
		if (j->state == JOB_QUEUED && (!best || j->waiters > best->waiters))
			best = j;
	}
	if (best) {
		best->state = JOB_RUNNING;
		best->done = 0;
		best->logged = 0;
		clock_gettime(CLOCK_MONOTONIC, &best->progress);
	}
	return best;
}

struct run_ctx {
	struct fs_streamer *st;
	struct job *job;
};

static int run_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct run_ctx *r = ctx;

	pthread_mutex_lock(&r->st->mu);
	if (done != r->job->done) {
		r->job->done = done;
		clock_gettime(CLOCK_MONOTONIC, &r->job->progress);
	}
	r->job->total = total;
	pthread_mutex_unlock(&r->st->mu);
	return atomic_load(&r->st->stop) ? 1 : 0;
}

/* Whether claim k repeats an earlier one (k > i, newest first) in what a stream of it checks. */
static int claim_repeats(const struct store_claim *c, size_t n, size_t k)
{
	for (size_t i = n; i-- > k + 1;) {
		if (strcmp(c[i].source, c[k].source) == 0 &&
		    strcmp(c[i].media_type, c[k].media_type) == 0 && c[i].size == c[k].size &&
		    strcmp(c[i].diff_id, c[k].diff_id) == 0)
			return 1;
	}
	return 0;
}

/* Streams the layer as claim c describes it (its source, media type, size, diff_id) and stores
 * the verified index. Returns 0 or negative errno (strata_err). */
static int stream_claim(struct fs_streamer *st, struct job *j, const struct store_layer *rec,
			const struct store_claim *c)
{
	struct run_ctx r = { st, j };
	struct store_layer info = *rec;
	struct fetch_ref *ref = NULL;
	struct index_layer *idx = NULL;
	void *enc = NULL;
	size_t len = 0;
	int rc;

	snprintf(info.source, sizeof(info.source), "%s", c->source);
	snprintf(info.media_type, sizeof(info.media_type), "%s", c->media_type);
	snprintf(info.diff_id, sizeof(info.diff_id), "%s", c->diff_id);
	info.size = c->size;
	rc = fetch_ref_parse(info.source, &ref);
	if (rc < 0)
		return strata_err(EINVAL, "unusable source '%s'", info.source);
	strata_log(LOG_INFO, "layer %s: streaming %llu bytes from %s (no index available)",
		   j->digest, (unsigned long long)info.size, info.source);
	rc = fs_layer_build(st->store, st->fetch, ref, &info, run_progress, &r, &idx);
	if (rc == 0)
		rc = index_layer_encode(idx, &enc, &len);
	if (rc == 0) {
		info.prov = STORE_PROV_VERIFIED; /* blob digest and diff_id checked */
		info.prov_digest[0] = info.signer[0] = '\0';
		rc = store_layer_put(st->store, &info, enc,
				     len); /* also drops the pending record */
	}
	if (rc == 0)
		strata_log(LOG_INFO, "layer %s: streamed and indexed", j->digest);
	free(enc);
	index_layer_free(idx);
	fetch_ref_free(ref);
	return rc;
}

/*
 * Streams one pending layer and stores its index. Each image that registered the layer made a
 * claim (source, media type, size, diff_id); none is trusted: the newest claim is streamed first
 * and checked as fs_layer_build checks, a claim that fails (a lying config, a repository that does
 * not serve the blob) is logged and the next one tried. Returns 0 or negative errno (strata_err,
 * the last claim's error).
 */
static int job_run(struct fs_streamer *st, struct job *j)
{
	struct store_layer rec;
	struct store_claim *claims = NULL;
	size_t n = 0;
	int rc;

	if (store_layer_get(st->store, j->digest, NULL, NULL, NULL) == 0) {
		store_pending_del(st->store, j->digest); /* built meanwhile (e.g. strata index) */
		return 0;
	}
	rc = store_pending_get(st->store, j->digest, &rec);
	if (rc == 0)
		rc = store_pending_claims(st->store, j->digest, &claims, &n);
	if (rc == -ENOENT)
		return 0; /* forgotten (strata rm and gc) */
	if (rc < 0)
		return rc;
	rc = strata_err(ENOENT, "layer %s: no image claims it", j->digest);
	for (size_t k = n; k-- > 0;) {
		if (claim_repeats(claims, n, k))
			continue;
		if (k + 1 < n) /* an earlier claim failed */
			strata_log(LOG_WARNING, "layer %s: %s; trying the claim of %s", j->digest,
				   strata_errmsg(rc), claims[k].image[0] ? claims[k].image : "?");
		strata_err_clear();
		rc = stream_claim(st, j, &rec, &claims[k]);
		if (rc == 0 || atomic_load(&st->stop))
			break;
	}
	free(claims);
	return rc;
}

static void *worker_main(void *arg)
{
	struct fs_streamer *st = arg;
	uint64_t gen = 0;

	while (!atomic_load(&st->stop)) {
		struct job *j;
		int rc;

		pthread_mutex_lock(&st->mu);
		store_pending_list(st->store, refresh_cb, st);
		j = job_take(st);
		pthread_mutex_unlock(&st->mu);
		if (!j) {
			gen = store_pending_wait(st->store, gen, WAIT_SLICE_MS);
			continue;
		}
		strata_err_clear();
		rc = job_run(st, j);
		pthread_mutex_lock(&st->mu);
		if (rc == 0) {
			j->state = JOB_DONE;
		} else {
			j->state = JOB_FAILED;
			clock_gettime(CLOCK_MONOTONIC, &j->failed_at);
			snprintf(j->error, sizeof(j->error), "%s", strata_errmsg(rc));
			if (!atomic_load(&st->stop))
				strata_log(LOG_ERR,
					   "layer %s: streaming failed: %s (retried on the "
					   "next lookup)",
					   j->digest, j->error);
		}
		pthread_cond_broadcast(&st->cv);
		pthread_mutex_unlock(&st->mu);
	}
	return NULL;
}

int fs_streamer_start(struct store *s, struct fetch_client *fc, unsigned workers, int stall_ms,
		      struct fs_streamer **out)
{
	struct fs_streamer *st = calloc(1, sizeof(*st));

	*out = NULL;
	if (!st)
		return -ENOMEM;
	st->store = s;
	st->fetch = fc;
	st->stall_ms = stall_ms > 0 ? stall_ms : FS_STREAM_STALL_MS_DEFAULT;
	st->nworkers = workers ? workers : FS_STREAM_WORKERS_DEFAULT;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	st->workers = calloc(st->nworkers, sizeof(*st->workers));
	if (!st->workers) {
		fs_streamer_stop(st);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < st->nworkers; i++) {
		if (util_thread_start(&st->workers[i], worker_main, st) != 0) {
			st->nworkers = i;
			fs_streamer_stop(st);
			return strata_err(EAGAIN, "cannot start the layer streaming threads");
		}
	}
	*out = st;
	return 0;
}

void fs_streamer_stop(struct fs_streamer *st)
{
	if (!st)
		return;
	atomic_store(&st->stop, 1);
	for (unsigned i = 0; i < st->nworkers; i++)
		pthread_join(st->workers[i], NULL);
	free(st->workers);
	while (st->jobs) {
		struct job *j = st->jobs;

		st->jobs = j->next;
		free(j);
	}
	pthread_mutex_destroy(&st->mu);
	pthread_cond_destroy(&st->cv);
	free(st);
}

int fs_streamer_wait(struct fs_streamer *st, const char *digest)
{
	struct job *j;
	int rc;

	if (store_layer_get(st->store, digest, NULL, NULL, NULL) == 0)
		return 0;
	rc = store_pending_get(st->store, digest, NULL);
	strata_err_clear();
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&st->mu);
	j = job_queue(st, digest);
	if (!j) {
		pthread_mutex_unlock(&st->mu);
		return -ENOMEM;
	}
	j->waiters++;
	for (;;) {
		struct timespec until;

		if (j->state == JOB_DONE) {
			rc = 0;
			break;
		}
		if (j->state == JOB_FAILED) {
			if (ms_since(&j->failed_at) < FS_STREAM_RETRY_WAITER_MS) {
				rc = strata_err(EIO, "layer %s: streaming failed: %s", digest,
						j->error);
				break;
			}
			j->state = JOB_QUEUED; /* try again for this lookup */
			clock_gettime(CLOCK_MONOTONIC, &j->progress);
			store_pending_notify(st->store); /* wakes an idle worker */
		}
		/* A queued layer waits for a worker busy with another layer, itself bounded: allow
		 * that several stall periods before giving up. */
		if (ms_since(&j->progress) >
		    (j->state == JOB_RUNNING ? 1 : 4) * (int64_t)st->stall_ms) {
			rc = strata_err(EIO, "layer %s: no progress streaming it for %d s", digest,
					st->stall_ms / 1000);
			if (!j->logged++)
				strata_log(LOG_ERR, "%s", strata_errmsg(rc));
			break;
		}
		if (atomic_load(&st->stop)) {
			rc = strata_err(EIO, "layer %s: the daemon is shutting down", digest);
			break;
		}
		util_deadline_in(&until, WAIT_SLICE_MS);
		pthread_cond_timedwait(&st->cv, &st->mu, &until);
	}
	j->waiters--;
	pthread_mutex_unlock(&st->mu);
	if (rc == 0 && store_layer_get(st->store, digest, NULL, NULL, NULL) < 0)
		rc = -ENOENT; /* streamed, then removed */
	return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Fetching whole layers ahead of reads: the --background completion thread, and a pin's layer. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_i.h"
#include "index/layer.h"
#include "index/zran.h"
#include "store/store.h"
#include "util/log.h"
#include "util/thread.h"

/* Sleeps while readers are fetching: the background never competes with a waiting program. */
static void bg_yield(struct fs_engine *eng)
{
	for (;;) {
		int busy;

		pthread_mutex_lock(&eng->inflight_mu);
		busy = eng->foreground > 0;
		pthread_mutex_unlock(&eng->inflight_mu);
		if (!busy && atomic_load_explicit(&eng->bg_limit, memory_order_relaxed)) {
			struct store_stats st;

			/* At the quota's low-water mark: fetch nothing that eviction would undo. */
			if (store_get_stats(eng->store, &st) == 0 &&
			    st.disk_bytes >= eng->bg_limit) {
				for (int t = 0; t < 20 && !atomic_load(&eng->bg_stop); t++)
					usleep(50 * 1000);
				continue;
			}
		}
		if (!busy || atomic_load(&eng->bg_stop))
			return;
		usleep(20 * 1000);
	}
}

/* Completes one layer: every missing chunk, in tar order, a span at a time. */
static int bg_layer(struct fs_engine *eng, struct fs_layer *l)
{
	uint32_t n = index_layer_ninodes(l->idx);
	int failed = 0;

	for (uint32_t i = 0; i < n && !atomic_load(&eng->bg_stop); i++) {
		const struct index_inode *in = index_layer_inode(l->idx, i);

		if (!S_ISREG(in->mode))
			continue;
		for (uint32_t ci = 0; ci < in->count && !atomic_load(&eng->bg_stop); ci++) {
			const struct index_chunk *c = index_layer_chunk(l->idx, in->first + ci);
			int rc;

			if (fs_chunk_local(eng, c->digest) != 0)
				continue;
			bg_yield(eng);
			rc = fs_fetch_shared(eng, l, in, ci);
			if (rc < 0 && !failed++)
				strata_log(LOG_WARNING,
					   "background: layer %s: %s (will retry later)", l->digest,
					   strata_errmsg(rc));
		}
	}
	return failed ? -EIO : 0;
}

/* A layer the background made fully local whose record was not built from its blob: checked
 * against it now (fs_layer_verify). */
static void bg_verify(struct fs_engine *eng, struct fs_layer *l, int *incomplete)
{
	int rc = fs_layer_verify(eng, l);

	if (rc == 0)
		atomic_store(&l->verified, 1);
	else if (rc != -EIO && rc != -ESTALE) {
		*incomplete = 1;
		if (!atomic_exchange(&l->warned, 1))
			strata_log(LOG_WARNING, "background: %s (will retry later)",
				   strata_errmsg(rc));
	}
}

static void *bg_main(void *arg)
{
	struct fs_engine *eng = arg;

	/* Passes over every layer until all are complete; new layers are picked up on the next pass. */
	while (!atomic_load(&eng->bg_stop)) {
		struct digest_list b = { 0, NULL };
		int incomplete = 0;

		if (store_layer_list(eng->store, fs_collect_layer_cb, &b) == 0) {
			for (size_t i = 0; i < b.n && !atomic_load(&eng->bg_stop); i++) {
				struct fs_layer *l;

				if (fs_layer_load(eng, b.names[i], &l) < 0)
					continue;
				if (l->src && bg_layer(eng, l) < 0)
					incomplete = 1;
				else if (l->src && !atomic_load(&l->verified) &&
					 !atomic_load(&l->quarantined) &&
					 !atomic_load(&eng->bg_stop))
					bg_verify(eng, l, &incomplete);
				fs_layer_put(eng, l);
			}
		}
		free(b.names);
		for (int t = 0; t < (incomplete ? 100 : 20) && !atomic_load(&eng->bg_stop); t++)
			usleep(50 * 1000); /* 5 s after a failure, else 1 s between passes */
	}
	return NULL;
}

/* Starts the background completion thread (fs_opts.background). */
void fs_bg_start(struct fs_engine *eng)
{
	eng->bg_started = util_thread_start(&eng->bg_thread, bg_main, eng) == 0;
	if (!eng->bg_started)
		strata_log(LOG_ERR, "cannot start the background completion thread");
}

/* Stops the background completion thread, if it runs, and waits for it. */
void fs_bg_stop(struct fs_engine *eng)
{
	if (!eng->bg_started)
		return;
	atomic_store(&eng->bg_stop, 1);
	pthread_join(eng->bg_thread, NULL);
	eng->bg_started = 0;
}

void fs_background_limit(struct fs *f, uint64_t bytes)
{
	if (f)
		atomic_store_explicit(&f->eng.bg_limit, bytes, memory_order_relaxed);
}

int fs_fetch_layer(struct fs_engine *eng, const char *digest,
		   void (*progress)(void *ctx, uint64_t done, uint64_t total), void *ctx,
		   atomic_int *cancel)
{
	struct fs_layer *l = NULL;
	uint64_t total = 0, done = 0;
	int rc;

	/* A pin checks that each chunk is stored: this thread stores its own chunks, and what the
	 * writer holds for readers is written first. */
	fs_writer_sync(1);
	fs_writer_drain(eng);
	rc = fs_layer_load(eng, digest, &l);
	if (rc < 0)
		goto out;
	/* A record not built here from its blob: the whole blob through the verifying builder
	 * first, which also stores every chunk (a quarantined layer fails the pin). */
	if (!atomic_load(&l->verified) && eng->fetch && l->src) {
		rc = fs_layer_verify(eng, l);
		if (rc < 0)
			goto out;
		atomic_store(&l->verified, 1);
	}
	for (uint32_t i = 0; i < index_layer_nchunks(l->idx); i++)
		total += index_layer_chunk(l->idx, i)->size;
	if (progress)
		progress(ctx, 0, total);
	for (uint32_t i = 0; i < index_layer_ninodes(l->idx) && rc == 0; i++) {
		const struct index_inode *in = index_layer_inode(l->idx, i);

		if (!S_ISREG(in->mode))
			continue;
		for (uint32_t ci = 0; ci < in->count && rc == 0; ci++) {
			const struct index_chunk *c = index_layer_chunk(l->idx, in->first + ci);

			if (cancel && atomic_load(cancel)) {
				rc = -ECANCELED;
				break;
			}
			rc = fs_stored_now(eng, c->digest);
			if (rc == 0) {
				if (!eng->fetch || !l->src)
					rc = strata_err(EIO, "layer %s has no source to fetch from",
							digest);
				else
					rc = fs_fetch_shared(eng, l, in, ci);
				if (rc == 0 && fs_stored_now(eng, c->digest) != 1)
					rc = atomic_load_explicit(&eng->store_full,
								  memory_order_relaxed) ?
						     strata_err(ENOSPC, "store %s is full",
								store_dir(eng->store)) :
						     strata_err(
							     EIO,
							     "a fetched chunk of %s was not stored",
							     digest);
			}
			if (rc > 0)
				rc = 0;
			done += c->size;
			if (progress && rc == 0)
				progress(ctx, done, total);
		}
	}
	/* the checkpoint windows every span needs */
	for (uint32_t k = 0; k < index_layer_ncheckpoints(l->idx) && rc == 0; k++) {
		const struct index_checkpoint *cp = index_layer_checkpoint(l->idx, k);
		uint8_t *w;

		if (cp->wlen == 0 || store_chunk_has(eng->store, cp->window) == 1)
			continue;
		w = malloc(INDEX_ZRAN_WINDOW);
		if (!w) {
			rc = -ENOMEM;
			break;
		}
		rc = l->src && eng->fetch ?
			     fs_get_window(eng, l, cp, w) :
			     strata_err(EIO, "layer %s has no source to fetch from", digest);
		free(w);
		if (rc == 0 &&
		    store_chunk_has(eng->store, cp->window) != 1) /* served, not stored */
			rc = strata_err(ENOSPC, "store %s is full", store_dir(eng->store));
	}
out:
	fs_writer_sync(0);
	if (l)
		fs_layer_put(eng, l);
	return rc;
}

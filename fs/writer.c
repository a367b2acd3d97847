/* SPDX-License-Identifier: Apache-2.0 */
/* The chunk writer: one thread storing the chunks reads verified, off the reads' path. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine_i.h"
#include "store/store.h"
#include "util/log.h"
#include "util/thread.h"

/*
 * A read stores the chunks a span yields through a queue that one writer thread drains: the zstd
 * compression and RocksDB write of every decoded chunk stay off the read's path. The queue is
 * bounded (WRITE_QUEUE_BYTES; past it chunks are stored on the read's thread) and searched by
 * lookups, so a queued chunk counts as local. fs_engine_fini (fs_free) drains it before the store
 * closes.
 */

#define WRITE_QUEUE_BYTES (32u << 20)

struct wchunk {
	struct wchunk *next;
	uint8_t digest[32];
	size_t len;
	uint8_t data[];
};

/* Set on threads that must see their chunks stored when fetch_span returns (pin). */
static _Thread_local int tl_sync_store;

void fs_writer_sync(int on)
{
	tl_sync_store = on;
}

/* Queues a verified chunk for the writer. Returns 1 when queued, 0 when the caller must store it
 * (no writer, queue full, no memory). */
int fs_writer_queue(struct fs_engine *eng, const uint8_t digest[32], const uint8_t *data,
		    size_t len)
{
	struct wchunk *w;

	if (!eng->w_started || tl_sync_store)
		return 0;
	pthread_mutex_lock(&eng->w_mu);
	if (eng->w_stop || eng->w_bytes + len > WRITE_QUEUE_BYTES) {
		pthread_mutex_unlock(&eng->w_mu);
		return 0;
	}
	pthread_mutex_unlock(&eng->w_mu);
	w = malloc(sizeof(*w) + len);
	if (!w)
		return 0;
	w->next = NULL;
	memcpy(w->digest, digest, 32);
	w->len = len;
	memcpy(w->data, data, len);
	pthread_mutex_lock(&eng->w_mu);
	if (eng->w_tail)
		eng->w_tail->next = w;
	else
		eng->w_head = w;
	eng->w_tail = w;
	eng->w_bytes += len;
	pthread_cond_signal(&eng->w_cv);
	pthread_mutex_unlock(&eng->w_mu);
	return 1;
}

/* Copies a queued chunk into buf. Returns its length, -ENOENT when not queued, -ENOBUFS. */
ssize_t fs_writer_get(struct fs_engine *eng, const uint8_t digest[32], void *buf, size_t cap)
{
	ssize_t n = -ENOENT;

	if (!eng->w_started)
		return n;
	pthread_mutex_lock(&eng->w_mu);
	for (struct wchunk *w = eng->w_head; w; w = w->next) {
		if (memcmp(w->digest, digest, 32) == 0) {
			n = w->len > cap ? -ENOBUFS : (ssize_t)w->len;
			if (n > 0)
				memcpy(buf, w->data, w->len);
			break;
		}
	}
	pthread_mutex_unlock(&eng->w_mu);
	return n;
}

static int writer_has(struct fs_engine *eng, const uint8_t digest[32])
{
	int found = 0;

	if (!eng->w_started)
		return 0;
	pthread_mutex_lock(&eng->w_mu);
	for (struct wchunk *w = eng->w_head; w && !found; w = w->next)
		found = memcmp(w->digest, digest, 32) == 0;
	pthread_mutex_unlock(&eng->w_mu);
	return found;
}

/* Waits until every queued chunk has been written (or failed). */
void fs_writer_drain(struct fs_engine *eng)
{
	if (!eng->w_started)
		return;
	pthread_mutex_lock(&eng->w_mu);
	while (eng->w_head)
		pthread_cond_wait(&eng->w_idle, &eng->w_mu);
	pthread_mutex_unlock(&eng->w_mu);
}

static void *writer_main(void *arg)
{
	struct fs_engine *eng = arg;
	int warned = 0;

	pthread_mutex_lock(&eng->w_mu);
	for (;;) {
		struct wchunk *w;
		int put;

		while (!eng->w_head && !eng->w_stop)
			pthread_cond_wait(&eng->w_cv, &eng->w_mu);
		if (!eng->w_head)
			break;	 /* stopping, and drained */
		w = eng->w_head; /* stays queued (found by lookups) until written */
		pthread_mutex_unlock(&eng->w_mu);
		put = store_chunk_put(eng->store, w->digest, w->data, w->len);
		if (put == -ENOSPC) {
			fs_store_full(eng, 1);
		} else if (put < 0) {
			if (!warned++)
				strata_log(LOG_ERR,
					   "store %s: writing fetched chunks: %s (they are "
					   "fetched again when read)",
					   store_dir(eng->store), strata_errmsg(put));
		} else {
			warned = 0;
			if (put > 0)
				fs_store_full(eng, 0);
		}
		strata_err_clear();
		pthread_mutex_lock(&eng->w_mu);
		eng->w_head = w->next;
		if (!eng->w_head) {
			eng->w_tail = NULL;
			pthread_cond_broadcast(&eng->w_idle);
		}
		eng->w_bytes -= w->len;
		free(w);
	}
	pthread_mutex_unlock(&eng->w_mu);
	return NULL;
}

void fs_writer_start(struct fs_engine *eng)
{
	eng->w_started = util_thread_start(&eng->w_thread, writer_main, eng) == 0;
	if (!eng->w_started)
		strata_log(LOG_WARNING,
			   "no chunk writer thread: reads store their chunks themselves");
}

/* Stops the writer after it wrote everything queued. */
void fs_writer_stop(struct fs_engine *eng)
{
	if (!eng->w_started)
		return;
	pthread_mutex_lock(&eng->w_mu);
	eng->w_stop = 1;
	pthread_cond_signal(&eng->w_cv);
	pthread_mutex_unlock(&eng->w_mu);
	pthread_join(eng->w_thread, NULL);
	eng->w_started = 0;
}

/* 1 when the chunk is in the store, after the writer wrote it if it was queued; 0 when not. */
int fs_stored_now(struct fs_engine *eng, const uint8_t digest[32])
{
	int rc = store_chunk_has(eng->store, digest);

	if (rc == 0 && writer_has(eng, digest)) {
		fs_writer_drain(eng);
		rc = store_chunk_has(eng->store, digest);
	}
	return rc;
}

/* 1 when the chunk is stored or queued to be, 0 when not, negative errno. */
int fs_chunk_local(struct fs_engine *eng, const uint8_t digest[32])
{
	int rc = store_chunk_has(eng->store, digest);

	return rc == 0 && writer_has(eng, digest) ? 1 : rc;
}

/* Notes whether chunk writes fail for lack of space, logging each change once. */
void fs_store_full(struct fs_engine *eng, int full)
{
	if (atomic_load_explicit(&eng->store_full, memory_order_relaxed) == full)
		return;
	if (atomic_exchange_explicit(&eng->store_full, full, memory_order_relaxed) == full)
		return;
	if (full)
		strata_log(LOG_ERR, "store %s is full: serving without caching",
			   store_dir(eng->store));
	else
		strata_log(LOG_NOTICE, "store %s has space again: caching fetched chunks",
			   store_dir(eng->store));
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The read engine's set-up and teardown, for a mount (embedded in struct fs) or a pin (its own). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "engine_i.h"

int fs_engine_init(struct fs_engine *eng, struct store *store, struct fetch_client *fc,
		   uint64_t chunk_cache_bytes, uint64_t index_cache_bytes)
{
	eng->store = store;
	eng->fetch = fc;
	pthread_rwlock_init(&eng->layers_lock, NULL);
	eng->layers_max = index_cache_bytes ? index_cache_bytes : FS_INDEX_CACHE_DEFAULT;
	pthread_mutex_init(&eng->inflight_mu, NULL);
	pthread_cond_init(&eng->inflight_cv, NULL);
	pthread_mutex_init(&eng->w_mu, NULL);
	pthread_cond_init(&eng->w_cv, NULL);
	pthread_cond_init(&eng->w_idle, NULL);
	return fs_cache_init(&eng->cache,
			     chunk_cache_bytes ? chunk_cache_bytes : FS_CHUNK_CACHE_DEFAULT);
}

void fs_engine_fini(struct fs_engine *eng)
{
	fs_bg_stop(eng);
	fs_writer_stop(eng);
	fs_layers_unload_all(eng);
	fs_cache_destroy(&eng->cache);
	pthread_rwlock_destroy(&eng->layers_lock);
	pthread_mutex_destroy(&eng->inflight_mu);
	pthread_cond_destroy(&eng->inflight_cv);
	pthread_mutex_destroy(&eng->w_mu);
	pthread_cond_destroy(&eng->w_cv);
	pthread_cond_destroy(&eng->w_idle);
}

int fs_engine_create(struct store *store, struct fetch_client *fc, uint64_t chunk_cache_bytes,
		     uint64_t index_cache_bytes, struct fs_engine **out)
{
	struct fs_engine *eng = calloc(1, sizeof(*eng));
	int rc;

	*out = NULL;
	if (!eng)
		return -ENOMEM;
	rc = fs_engine_init(eng, store, fc, chunk_cache_bytes, index_cache_bytes);
	if (rc < 0) {
		fs_engine_free(eng);
		return rc;
	}
	*out = eng;
	return 0;
}

void fs_engine_free(struct fs_engine *eng)
{
	if (!eng)
		return;
	fs_engine_fini(eng);
	free(eng);
}

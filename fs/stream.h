/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layers with no index anywhere (no artifact, not eStargz): `strata pull` inside the daemon records
 * them as pending (store_pending_put) and returns; the streamer downloads each blob once, verifies
 * its digest (and the config's diff_id), builds its index and stores it. Until then a lookup of
 * the layer waits for it, as long as its download makes progress. A layer's bytes are served only
 * after the whole blob verified: without an index nothing smaller than the blob can be checked.
 */
#ifndef STRATA_FS_STREAM_H
#define STRATA_FS_STREAM_H

#include <stdint.h>

struct store;
struct store_layer;
struct fetch_client;
struct fetch_ref;
struct index_layer;
struct fs_streamer;

#define FS_STREAM_WORKERS_DEFAULT  2	 /* layers streamed at once */
#define FS_STREAM_STALL_MS_DEFAULT 30000 /* a lookup waits this long for a stream's progress */
#define FS_STREAM_RETRY_WAITER_MS  2000	 /* a lookup retries a failed stream this long after it */
#define FS_STREAM_RETRY_WORKER_MS  30000 /* the workers retry a failed stream this long after it */

/*
 * Builds one layer's index by streaming its whole blob from ref's repository into an anonymous
 * temporary file under the store: verifies the blob digest and size, the compression its media
 * type names, and (when info->diff_id is set) the uncompressed digest. Chunks and windows go to
 * the store as they are cut; the index is returned in *out (index_layer_free) and not stored.
 * info: in: digest, media_type, size, diff_id ("" = unknown), source, chunk_size; out: diff_id,
 * tar_size. progress may be NULL; a non-zero return from it cancels (-ECANCELED).
 * Returns 0 or negative errno with strata_err set (-ENOTSUP for a media type that is no layer).
 */
int fs_layer_build(struct store *s, struct fetch_client *fc, const struct fetch_ref *ref,
		   struct store_layer *info,
		   int (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
		   struct index_layer **out);

/* Starts `workers` threads (0 = FS_STREAM_WORKERS_DEFAULT) streaming the store's pending layers,
 * those recorded later included. stall_ms bounds how long a lookup waits without progress (0 =
 * FS_STREAM_STALL_MS_DEFAULT). s and fc are borrowed. Returns 0 or negative errno. */
int fs_streamer_start(struct store *s, struct fetch_client *fc, unsigned workers, int stall_ms,
		      struct fs_streamer **out);

/* Cancels downloads under way (they resume at the next start) and joins the threads. NULL ok. */
void fs_streamer_stop(struct fs_streamer *st);

/*
 * Waits while layer digest is pending. Returns 0 once the layer is in the store; -ENOENT when it
 * is neither in the store nor pending; -EIO (strata_err set, logged once per failure) when its
 * stream failed or made no progress for the stall bound. A failed stream is retried by the next
 * wait that comes at least FS_STREAM_RETRY_WAITER_MS after the failure, and by the workers every
 * FS_STREAM_RETRY_WORKER_MS.
 */
int fs_streamer_wait(struct fs_streamer *st, const char *digest);

#endif

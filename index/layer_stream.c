/* SPDX-License-Identifier: Apache-2.0 */
/* Indexes a layer by streaming it once: a tar stream (with its diff_id), or a blob compressed
 * with gzip (zran checkpoints) or zstd (frame checkpoints), recording the blob's size. */
#include "layer.h"
#include "layer_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "decomp.h"
#include "tar.h"
#include "zran.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

/* Hashing pass-through reader: computes diff_id and the stream length. */
struct hash_reader {
	struct index_reader src;
	struct util_sha256 *sha;
	uint64_t bytes;
};

static ssize_t hash_read(void *ctx, void *buf, size_t len)
{
	struct hash_reader *h = ctx;
	ssize_t n = h->src.read(h->src.ctx, buf, len);

	if (n > 0) {
		util_sha256_update(h->sha, buf, (size_t)n);
		h->bytes += (uint64_t)n;
	}
	return n;
}

/* Called after the tar stream is fully read, before the builder finishes: sets the blob. */
typedef int (*finish_fn)(struct index_builder *b, void *arg);

/* Feeds every member of the tar stream src to a new builder, drains src so the diff_id covers all of
 * it, lets finish (may be NULL) record the blob, and lays the index out. */
static int build(struct index_reader src, uint32_t chunk_size, index_chunk_fn chunk_fn, void *ctx,
		 finish_fn finish, void *farg, struct index_layer **out)
{
	struct index_builder *b = NULL;
	struct hash_reader h = { src, NULL, 0 };
	struct index_tar *t = NULL;
	const struct index_tar_entry *e;
	uint8_t diff_id[32];
	char drain[65536];
	int rc;

	*out = NULL;
	rc = index_builder_new_tar(chunk_size, chunk_fn, ctx, &b);
	if (rc < 0)
		goto out;
	h.sha = util_sha256_new();
	if (!h.sha) {
		rc = -ENOMEM;
		goto out;
	}
	rc = index_tar_open((struct index_reader){ hash_read, &h }, &t);
	if (rc < 0)
		goto out;
	for (;;) {
		rc = index_tar_next(t, &e);
		if (rc <= 0)
			break;
		rc = index_builder_add_tar(b, t, e);
		if (rc < 0)
			goto out;
	}
	if (rc < 0)
		goto out;
	/* Drain what follows the end-of-archive marker so diff_id covers the whole stream. */
	for (;;) {
		ssize_t n = hash_read(&h, drain, sizeof(drain));

		if (n < 0) {
			rc = (int)n;
			goto out;
		}
		if (n == 0)
			break;
	}
	util_sha256_final(h.sha, diff_id);
	if (finish) {
		rc = finish(b, farg);
		if (rc < 0)
			goto out;
	}
	rc = index_builder_finish(b, diff_id, h.bytes, out);
	b = NULL; /* consumed */
out:
	index_tar_free(t);
	util_sha256_free(h.sha);
	index_builder_free(b);
	return rc;
}

int index_layer_build(struct index_reader src, uint32_t chunk_size, index_chunk_fn chunk_fn,
		      void *ctx, struct index_layer **out)
{
	return build(src, chunk_size, chunk_fn, ctx, NULL, NULL, out);
}

/* ---------------------------------------------------------------- blobs */

/* Counts the bytes a reader passes on. */
struct count_reader {
	struct index_reader src;
	uint64_t n;
};

static ssize_t count_read(void *ctx, void *buf, size_t len)
{
	struct count_reader *c = ctx;
	ssize_t n = c->src.read(c->src.ctx, buf, len);

	if (n > 0)
		c->n += (uint64_t)n;
	return n;
}

struct blob_build {
	const struct index_build_opts *o;
	struct count_reader count;
	struct index_zran *z;
	struct index_checkpoint *frames; /* zstd frame starts after the first */
	size_t nframes, cap_frames;
	int err;
};

/* Records a zstd frame boundary as a checkpoint candidate. */
static void on_frame(void *ctx, uint64_t coff, uint64_t uoff)
{
	struct blob_build *bb = ctx;
	struct index_checkpoint *cp;

	if (bb->err || (bb->nframes && bb->frames[bb->nframes - 1].uoff >= uoff) || uoff == 0)
		return;
	if (util_grow((void **)&bb->frames, &bb->cap_frames, bb->nframes + 1, sizeof(*bb->frames)) <
	    0) {
		bb->err = -ENOMEM;
		return;
	}
	cp = &bb->frames[bb->nframes++];
	memset(cp, 0, sizeof(*cp));
	cp->uoff = uoff;
	cp->coff = coff;
	cp->kind = INDEX_CP_ZSTD_FRAME;
	cp->woff = UINT64_MAX;
}

/* A gzip window nobody keeps (no window_fn): only its digest goes into the index. */
static int drop_window(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	(void)ctx;
	(void)digest;
	(void)data;
	(void)len;
	return 0;
}

/* The blob is read to its end: records its kind, size and checkpoints (gzip windows went to
 * window_fn as their checkpoints became final, so one window at a time is in memory). */
static int blob_finish(struct index_builder *b, void *arg)
{
	struct blob_build *bb = arg;
	struct index_checkpoint *cps = NULL;
	size_t ncps = 0;
	char drain[65536];
	ssize_t n;
	int rc = 0;

	/* Whatever follows the compressed stream still belongs to the blob. */
	do {
		n = count_read(&bb->count, drain, sizeof(drain));
	} while (n > 0);
	if (n < 0)
		return (int)n;
	if (bb->o->blob == INDEX_BLOB_ZSTD) {
		if (bb->err)
			return bb->err;
		cps = calloc(1 + bb->nframes, sizeof(*cps));
		if (!cps)
			return -ENOMEM;
		cps[0].kind = INDEX_CP_ZSTD_FRAME;
		cps[0].woff = UINT64_MAX;
		ncps = 1;
		for (size_t i = 0; i < bb->nframes; i++) {
			if (bb->frames[i].coff < bb->count.n) /* not the end of the stream */
				cps[ncps++] = bb->frames[i];
		}
	} else if (bb->o->blob == INDEX_BLOB_GZIP) {
		size_t n_cp = index_zran_count(bb->z);

		rc = index_zran_finish(bb->z); /* the last window goes to window_fn too */
		if (rc < 0)
			return rc;
		cps = calloc(n_cp ? n_cp : 1, sizeof(*cps));
		if (!cps)
			return -ENOMEM;
		for (size_t i = 0; i < n_cp; i++) {
			const struct index_zran_cp *zc = index_zran_cp(bb->z, i);
			struct index_checkpoint *cp = &cps[i];

			cp->uoff = zc->uoff;
			cp->coff = zc->coff;
			cp->bits = zc->bits;
			cp->kind = zc->kind;
			cp->wlen = zc->wlen;
			cp->woff = UINT64_MAX;
			if (cp->wlen)
				memcpy(cp->window, index_zran_window_digest(bb->z, i), 32);
		}
		ncps = n_cp;
	}
	rc = index_builder_set_blob(b, bb->o->blob, bb->count.n, cps, ncps);
	free(cps);
	return rc;
}

int index_layer_build_blob(struct index_reader src, const struct index_build_opts *o,
			   struct index_layer **out)
{
	struct blob_build bb = { o, { src, 0 }, NULL, NULL, 0, 0, 0 };
	struct index_reader counted = { count_read, &bb.count };
	struct index_decomp *d = NULL;
	struct index_reader tar;
	uint32_t cs = o->chunk_size ? o->chunk_size : INDEX_DEFAULT_CHUNK_SIZE;
	int rc;

	*out = NULL;
	switch (o->blob) {
	case INDEX_BLOB_TAR:
		tar = counted;
		break;
	case INDEX_BLOB_GZIP:
		rc = index_zran_new(counted, o->span, &bb.z);
		if (rc < 0)
			return rc;
		if (o->window_fn)
			index_zran_set_window_sink(bb.z, o->window_fn, o->ctx);
		else
			index_zran_set_window_sink(bb.z, drop_window, NULL);
		tar = index_zran_reader(bb.z);
		break;
	case INDEX_BLOB_ZSTD:
		rc = index_decomp_new(INDEX_COMP_ZSTD, counted, &d);
		if (rc < 0)
			return rc;
		index_decomp_on_frame(d, on_frame, &bb);
		tar = index_decomp_reader(d);
		break;
	default:
		return strata_err(EINVAL, "unknown blob kind %d", (int)o->blob);
	}
	rc = build(tar, cs, o->chunk_fn, o->ctx, blob_finish, &bb, out);
	index_zran_free(bb.z);
	index_decomp_free(d);
	free(bb.frames);
	return rc;
}

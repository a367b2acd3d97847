/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where a read is served: fs_op_read asks chunk_get for each chunk (the decoded-chunk cache, the
 * store, the writer's queue), and a miss goes to the network through fs_fetch_shared (one fetch
 * per span, shared by the readers that need it) and fetch_span (range read, decode, verify,
 * store).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zstd.h>

#include "fs_i.h"
#include "fetch/registry.h"
#include "index/layer.h"
#include "index/zran.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/thread.h"

#define MAX_DECODE	(16u << 20) /* decode at most this much of a span beyond what a read needs */
#define MAX_BEHIND	(4u << 20)  /* ... and this much before it */
#define READAHEAD_BYTES (8u << 20)  /* a miss fetches at most this much of the file, in one span */
#define READAHEAD_CHUNKS \
	128 /* ... and this many chunks: counted in bytes, so that a smaller chunk size (pull
	       --chunk-size 65536: smaller decode units for random reads) does not mean more
	       requests on a cold read; 8 chunks of the default 1 MiB either way */
#define BACK_OVERLAP \
	(64u << 10) /* spans sharing more than this make a miss take the chunk before */

/* A span being fetched; readers that need the same span wait for it instead of fetching again. */
struct inflight {
	uint32_t seq;
	uint64_t cstart, cend;
	int done, rc; /* protected by fs_engine.inflight_mu */
	int refs;     /* protected by fs_engine.inflight_mu */
	struct inflight *next;
};

/* fetch_span()'s verifier: decodes a host's compressed bytes into plain and checks the chunks that
 * were asked for, so that a host sending bad bytes is followed by the next host. */
struct span_check {
	const struct fs_layer *l;
	const struct index_span *sp;
	const uint8_t *window;
	uint64_t uoff, need_end, dec_start;
	uint64_t dec_end_max; /* what to decode at most */
	uint64_t dec_end;     /* what was decoded: dec_end_max, or need_end for an eStargz tail */
	uint8_t *plain;
};

/* fs_get_window()'s verifier: the window of checkpoint cp, decompressed into window. */
struct window_check {
	const struct index_checkpoint *cp;
	uint8_t *window;
	const char *hex;
};

static int do_read(struct fs *f, fuse_ino_t ino, size_t size, off_t off, char **out, size_t *len);
static int chunk_get(struct fs_engine *eng, struct fs_layer *l, const struct index_inode *ino,
		     uint32_t ci, struct cchunk **out);
static int wait_inflight(struct fs_engine *eng, struct inflight *in);
static void miss_range(struct fs_engine *eng, const struct index_layer *idx,
		       const struct index_inode *in, uint32_t ci, uint64_t *uoff, uint64_t *uend);
static int fetch_span(struct fs_engine *eng, struct fs_layer *l, const struct index_chunk *c,
		      uint64_t uoff, uint64_t need_end);
static int span_verify(void *ctx, const void *comp, size_t clen);
static void cache_verified(struct fs_engine *eng, const struct index_chunk *o, const uint8_t *data);
static int window_verify(void *ctx, const void *raw, size_t len);

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	char *buf;
	size_t len;
	int rc = do_read(f, ino, size, off, &buf, &len);

	(void)fi;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, len);
	free(buf);
}

/* What read_data() reads from: file in of layer l (referenced). */
struct data_reader {
	struct fs *f;
	struct fs_layer *l;
	const struct index_inode *in;
};

/* Copies the file's data bytes [pos, end) (what its chunks hold: a sparse file's extents one after
 * another) to dst, chunk by chunk. Returns 0 or negative errno. */
static int read_data(void *ctx, uint64_t pos, uint64_t end, char *dst)
{
	struct data_reader *r = ctx;
	uint32_t cs = index_layer_chunk_size(r->l->idx);
	int rc = 0;

	while (pos < end) {
		uint32_t ci = (uint32_t)(pos / cs);
		uint64_t cstart = (uint64_t)ci * cs;
		uint64_t cend = cstart + cs < end ? cstart + cs : end;
		struct cchunk *e = NULL;

		assert(ci < r->in->count);
		rc = chunk_get(&r->f->eng, r->l, r->in, ci, &e);
		if (rc < 0)
			break;
		memcpy(dst, e->data + (pos - cstart), cend - pos);
		fs_cache_put(&r->f->eng.cache, e);
		dst += cend - pos;
		pos = cend;
	}
	return rc;
}

/* Reads [off, off + size) of file ino into *out (malloc'd; NULL past the end) and its length into
 * *len. Returns 0 or negative errno. */
static int do_read(struct fs *f, fuse_ino_t ino, size_t size, off_t off, char **out, size_t *len)
{
	struct data_reader r = { f, NULL, NULL };
	uint32_t node;
	uint64_t end;
	char *buf;
	int rc;

	*out = NULL;
	*len = 0;
	rc = fs_layer_of(&f->eng, ino, &r.l, &node);
	if (rc < 0)
		return rc;
	fs_layer_touch(&f->eng, r.l);
	r.in = index_layer_inode(r.l->idx, node);
	if (!S_ISREG(r.in->mode)) {
		rc = -EISDIR;
		goto out;
	}
	if (off < 0 || (uint64_t)off >= r.in->size || size == 0)
		goto out;
	end = (uint64_t)off + size;
	if (end > r.in->size)
		end = r.in->size;
	buf = malloc(end - (uint64_t)off);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	fetch_read_begin(f->eng.fetch); /* one read timeout for all the fetches of this read */
	if (r.in->flags & INDEX_INODE_SPARSE)
		rc = fs_sparse_read(r.l->idx, r.in, (uint64_t)off, end, buf, read_data, &r);
	else
		rc = read_data(&r, (uint64_t)off, end, buf);
	fetch_read_end();
	if (rc < 0) {
		free(buf);
		goto out;
	}
	*out = buf;
	*len = end - (uint64_t)off;
out:
	fs_layer_put(&f->eng, r.l); /* buf is a copy */
	return rc;
}

/* Returns a referenced decoded chunk ci of file ino: cache, then store, then the registry. */
static int chunk_get(struct fs_engine *eng, struct fs_layer *l, const struct index_inode *ino,
		     uint32_t ci, struct cchunk **out)
{
	const struct index_chunk *c = index_layer_chunk(l->idx, ino->first + ci);
	struct cache_load load;
	struct cchunk *e = fs_cache_get_or_load(&eng->cache, c->digest, &load);
	char hex[UTIL_DIGEST_STR_LEN];
	ssize_t n;

	if (e) {
		fs_stats_count(FS_READ_CACHE_HIT);
		*out = e;
		return 0;
	}
	/* This reader loads the chunk; concurrent readers of it wait for the cache entry (one store
	 * read and check per chunk, not one per kernel read). */
	e = malloc(sizeof(*e) + c->size);
	if (!e) {
		fs_cache_load_done(&eng->cache, &load);
		return -ENOMEM;
	}
	memcpy(e->digest, c->digest, 32);
	n = store_chunk_get(eng->store, c->digest, e->data, c->size);
	if (n == -ENOENT)
		n = fs_writer_get(eng, c->digest, e->data, c->size); /* fetched, not written yet */
	if (n >= 0 && (size_t)n == c->size) {
		fs_stats_count(FS_READ_STORE_HIT);
		e->len = c->size;
		*out = fs_cache_insert(&eng->cache, e);
		fs_cache_load_done(&eng->cache, &load);
		atomic_store_explicit(&l->warned, 0, memory_order_relaxed);
		return 0;
	}
	fs_cache_load_done(&eng->cache, &load);
	if (n >= 0)
		fs_stats_count(FS_READ_STORE_HIT);
	/* Twice at most: a full store hands fetched chunks over in the cache only, which may trim
	 * them before this reader looks. */
	for (int attempt = 0; attempt < 2 && n == -ENOENT && eng->fetch && l->src; attempt++) {
		uint64_t t0 = fs_stats_now_us();
		struct cchunk *got;

		pthread_mutex_lock(&eng->inflight_mu);
		eng->foreground++;
		pthread_mutex_unlock(&eng->inflight_mu);
		n = fs_fetch_shared(eng, l, ino, ci);
		pthread_mutex_lock(&eng->inflight_mu);
		eng->foreground--;
		pthread_mutex_unlock(&eng->inflight_mu);
		if (n == 0) {
			got = fs_cache_get(&eng->cache, c->digest); /* put there by fetch_span */
			if (got) {
				fs_stats_fetched(t0);
				free(e);
				*out = got;
				return 0;
			}
			n = store_chunk_get(eng->store, c->digest, e->data, c->size);
			if (n == -ENOENT)
				n = fs_writer_get(eng, c->digest, e->data, c->size);
		}
		fs_stats_fetched(t0);
		if (n != -ENOENT)
			continue;
		got = fs_cache_get(&eng->cache, c->digest);
		if (got) {
			free(e);
			*out = got;
			return 0;
		}
	}
	if (n < 0)
		fs_stats_count(FS_READ_FAILED);
	if (n >= 0 && (size_t)n != c->size)
		n = strata_err(EBADMSG, "chunk has the wrong size");
	if (n < 0) {
		util_digest_format(c->digest, hex);
		if (!atomic_exchange_explicit(&l->warned, 1, memory_order_relaxed))
			strata_log(LOG_ERR, "read: layer %s chunk %s: %s%s", l->digest, hex,
				   strata_errmsg((int)n),
				   l->src ? "" : " (the layer has no source to fetch from)");
		free(e);
		return n == -ENOMEM ? -ENOMEM : -EIO;
	}
	atomic_store_explicit(&l->warned, 0, memory_order_relaxed);
	e->len = c->size;
	*out = fs_cache_insert(&eng->cache, e);
	return 0;
}

/* Fetches the span for chunk ci of file ino unless another thread is fetching it already, then
 * waits for that fetch. */
int fs_fetch_shared(struct fs_engine *eng, struct fs_layer *l, const struct index_inode *ino,
		    uint32_t ci)
{
	const struct index_chunk *c = index_layer_chunk(l->idx, ino->first + ci);
	struct index_span need, sp;
	struct inflight *in;
	uint64_t uoff, uend;
	int rc;

	/* Wait for fetches under way whose spans overlap this chunk's own span: they may bring it,
	 * and one that does not still leaves less to fetch. Bounded: each wait is for a fetch that
	 * started before this reader looked. */
	rc = index_layer_span(l->idx, c->offset, c->offset + c->size, &need);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&eng->inflight_mu);
	for (int round = 0; round < 8; round++) {
		for (in = eng->inflight; in; in = in->next) {
			if (in->seq == l->seq && in->cstart < need.cend && need.cstart < in->cend)
				break;
		}
		if (!in)
			break;
		in->refs++;
		rc = wait_inflight(eng, in);
		if (rc == 0)
			rc = in->rc;
		if (--in->refs == 0)
			free(in);
		pthread_mutex_unlock(&eng->inflight_mu);
		if (fs_chunk_local(eng, c->digest) == 1)
			return 0;
		if (rc < 0)
			return rc; /* that fetch failed: do not retry at once on this reader's behalf */
		pthread_mutex_lock(&eng->inflight_mu);
	}
	/* Still holding the lock: no other reader can start an overlapping fetch before ours is
	 * registered. */
	miss_range(eng, l->idx, ino, ci, &uoff, &uend);
	rc = index_layer_span(l->idx, uoff, uend, &sp);
	if (rc < 0) {
		pthread_mutex_unlock(&eng->inflight_mu);
		return rc;
	}
	in = calloc(1, sizeof(*in));
	if (!in) {
		pthread_mutex_unlock(&eng->inflight_mu);
		return -ENOMEM;
	}
	in->seq = l->seq;
	in->cstart = sp.cstart;
	in->cend = sp.cend;
	in->refs = 1;
	in->next = eng->inflight;
	eng->inflight = in;
	pthread_mutex_unlock(&eng->inflight_mu);

	rc = fetch_span(eng, l, c, uoff, uend);

	pthread_mutex_lock(&eng->inflight_mu);
	for (struct inflight **pp = &eng->inflight; *pp; pp = &(*pp)->next) {
		if (*pp == in) {
			*pp = in->next;
			break;
		}
	}
	in->rc = rc;
	in->done = 1;
	pthread_cond_broadcast(&eng->inflight_cv);
	if (--in->refs == 0)
		free(in);
	pthread_mutex_unlock(&eng->inflight_mu);
	return rc;
}

/* Waits (inflight_mu held) until fetch in is done, bounded by the caller's read deadline.
 * Returns 0, or -ETIMEDOUT (strata_err set) when the read's time ran out first. */
static int wait_inflight(struct fs_engine *eng, struct inflight *in)
{
	while (!in->done) {
		int64_t left = fetch_read_remaining_ms();
		struct timespec until;

		if (left < 0) {
			pthread_cond_wait(&eng->inflight_cv, &eng->inflight_mu);
			continue;
		}
		if (left == 0)
			return strata_err(ETIMEDOUT, "read timeout while another read fetched the "
						     "same span");
		util_deadline_in(&until, (long)left);
		pthread_cond_timedwait(&eng->inflight_cv, &eng->inflight_mu, &until);
	}
	return 0;
}

/* The tar range a miss on chunk ci of file in fetches: the chunk and the next ones of the same
 * file that are not stored yet, up to READAHEAD_BYTES, so that a file read in order costs one
 * request per few chunks instead of one per chunk (consecutive chunk spans would share a
 * checkpoint interval each). Called with inflight_mu held; does store lookups only. */
static void miss_range(struct fs_engine *eng, const struct index_layer *idx,
		       const struct index_inode *in, uint32_t ci, uint64_t *uoff, uint64_t *uend)
{
	const struct index_chunk *a = index_layer_chunk(idx, in->first + ci);
	uint32_t last = ci;

	/* Take the previous chunk too when it is missing and its span overlaps this one's much (a
	 * gzip checkpoint interval holding both): concurrent readers of a file arrive in any order.
	 * Not when each chunk has its own gzip member (eStargz): that would only fetch more. */
	if (ci > 0) {
		const struct index_chunk *p = index_layer_chunk(idx, in->first + ci - 1);
		struct index_span ps, cs;

		if (index_layer_span(idx, p->offset, p->offset + p->size, &ps) == 0 &&
		    index_layer_span(idx, a->offset, a->offset + a->size, &cs) == 0 &&
		    ps.cend > cs.cstart + BACK_OVERLAP && fs_chunk_local(eng, p->digest) == 0)
			a = p;
	}
	/* extend over the following chunks that are not stored yet */
	while (last + 1 < in->count && last + 1 < ci + READAHEAD_CHUNKS &&
	       index_layer_chunk(idx, in->first + last + 1)->offset + index_layer_chunk_size(idx) -
			       a->offset <=
		       READAHEAD_BYTES &&
	       fs_chunk_local(eng, index_layer_chunk(idx, in->first + last + 1)->digest) == 0)
		last++;
	*uoff = a->offset;
	*uend = index_layer_chunk(idx, in->first + last)->offset +
		index_layer_chunk(idx, in->first + last)->size;
}

/*
 * Fetches the span holding tar bytes [uoff, need_end) of layer l (which contain chunk c), decodes
 * it, verifies every whole chunk it yields against its digest, and stores those chunks. Only bytes
 * that matched a digest are stored.
 */
static int fetch_span(struct fs_engine *eng, struct fs_layer *l, const struct index_chunk *c,
		      uint64_t uoff, uint64_t need_end)
{
	struct index_span sp;
	struct span_check sc;
	uint8_t *comp = NULL, *plain = NULL, *window = NULL;
	uint64_t dec_start = uoff, dec_end;
	char hex[UTIL_DIGEST_STR_LEN];
	int rc, found_needed = 0;

	rc = index_layer_span(l->idx, uoff, need_end, &sp);
	if (rc < 0)
		return rc;
	/* Decode the span from its start, so the chunks before the wanted ones are stored too (reads
	 * come out of tar order: a program's imports, concurrent readers), but skip what lies more
	 * than MAX_BEHIND before them (a single zstd frame starts at the layer's first byte), and keep
	 * at most MAX_DECODE beyond what was asked for. */
	if (uoff - sp.ustart <= MAX_BEHIND)
		dec_start = sp.ustart;
	dec_end = sp.uend;
	if (dec_end - need_end > MAX_DECODE)
		dec_end = need_end + MAX_DECODE;
	comp = malloc(sp.cend - sp.cstart ? sp.cend - sp.cstart : 1);
	plain = malloc(dec_end - dec_start ? dec_end - dec_start : 1);
	if (!comp || !plain) {
		rc = -ENOMEM;
		goto out;
	}
	if (sp.cp != UINT32_MAX && index_layer_checkpoint(l->idx, sp.cp)->wlen) {
		window = malloc(INDEX_ZRAN_WINDOW);
		if (!window) {
			rc = -ENOMEM;
			goto out;
		}
		rc = fs_get_window(eng, l, index_layer_checkpoint(l->idx, sp.cp), window);
		if (rc < 0)
			goto out;
	}
	sc = (struct span_check){ .l = l,
				  .sp = &sp,
				  .window = window,
				  .uoff = uoff,
				  .need_end = need_end,
				  .dec_start = dec_start,
				  .dec_end_max = dec_end,
				  .plain = plain };
	/* decoded and the wanted chunks checked per host: bad bytes from a mirror go to the next */
	rc = fetch_blob_range_verify(eng->fetch, l->src, l->digest, sp.cstart, sp.cend - sp.cstart,
				     comp, span_verify, &sc);
	if (rc < 0)
		goto out;
	dec_end = sc.dec_end;
	/* Store every whole chunk of the decoded range whose bytes match its digest. The wanted
	 * chunks, [uoff, need_end), were checked by span_verify() on these very bytes. */
	for (uint32_t k = index_layer_chunk_rank(l->idx, dec_start);
	     k < index_layer_nchunks(l->idx); k++) {
		const struct index_chunk *o =
			index_layer_chunk(l->idx, index_layer_chunk_by_offset(l->idx, k));
		uint8_t digest[32];
		int put;

		if (o->offset + o->size > dec_end)
			break;
		if (o->offset < uoff || o->offset + o->size > need_end) {
			util_sha256(plain + (o->offset - dec_start), o->size, digest);
			if (memcmp(digest, o->digest, 32) != 0) {
				/* beside the read: not stored, fetched again if ever read */
				util_digest_format(o->digest, hex);
				strata_log(LOG_WARNING,
					   "layer %s: chunk %s decoded beside a read does "
					   "not match its digest; not stored",
					   l->digest, hex);
				continue;
			}
		}
		put = fs_writer_queue(eng, o->digest, plain + (o->offset - dec_start), o->size) ?
			      0 :
			      store_chunk_put(eng->store, o->digest,
					      plain + (o->offset - dec_start), o->size);
		if (put == -ENOSPC) {
			/* Serve the verified bytes without storing them. */
			fs_store_full(eng, 1);
			strata_err_clear();
		} else if (put < 0) {
			rc = put;
			goto out;
		} else if (put > 0) {
			fs_store_full(eng, 0); /* written: there is room again */
		}
		/* The read and its read-ahead get their chunks from the cache: no store read, no
		 * decompression and no second hash of bytes verified a moment ago. */
		if (o->offset >= uoff && o->offset + o->size <= need_end)
			cache_verified(eng, o, plain + (o->offset - dec_start));
		if (o == c)
			found_needed = 1;
	}
	if (!found_needed)
		rc = strata_err(EIO, "span of %s did not yield the chunk at offset %llu", l->digest,
				(unsigned long long)c->offset);
out:
	free(comp);
	free(plain);
	free(window);
	return rc;
}

/* Returns 0 when comp decodes and every whole chunk inside [uoff, need_end) matches its digest,
 * -EBADMSG (strata_err set) when not, or another negative errno. */
static int span_verify(void *ctx, const void *comp, size_t clen)
{
	struct span_check *sc = ctx;
	const struct index_layer *idx = sc->l->idx;
	char hex[UTIL_DIGEST_STR_LEN];
	int rc;

	sc->dec_end = sc->dec_end_max;
	rc = index_layer_extract(idx, sc->sp, sc->window, comp, clen, sc->dec_start, sc->plain,
				 sc->dec_end - sc->dec_start);
	if (rc == -EPIPE && sc->dec_end > sc->need_end) {
		/* The span ends in data the index does not describe (eStargz member tails): keep what
		 * was asked for. */
		sc->dec_end = sc->need_end;
		rc = index_layer_extract(idx, sc->sp, sc->window, comp, clen, sc->dec_start,
					 sc->plain, sc->dec_end - sc->dec_start);
	}
	if (rc == -EPIPE)
		return strata_err(EBADMSG, "span of %s does not decode", sc->l->digest);
	if (rc < 0)
		return rc;
	for (uint32_t k = index_layer_chunk_rank(idx, sc->uoff); k < index_layer_nchunks(idx);
	     k++) {
		const struct index_chunk *o =
			index_layer_chunk(idx, index_layer_chunk_by_offset(idx, k));
		uint8_t digest[32];

		if (o->offset + o->size > sc->need_end)
			break;
		if (o->offset < sc->uoff)
			continue;
		util_sha256(sc->plain + (o->offset - sc->dec_start), o->size, digest);
		if (memcmp(digest, o->digest, 32) != 0) {
			util_digest_format(o->digest, hex);
			return strata_err(EBADMSG, "chunk %s from %s does not match its digest",
					  hex, sc->l->digest);
		}
	}
	return 0;
}

/* Puts a verified chunk into the decoded-chunk cache (unreferenced: it may be trimmed). */
static void cache_verified(struct fs_engine *eng, const struct index_chunk *o, const uint8_t *data)
{
	struct cchunk *e = malloc(sizeof(*e) + o->size);

	if (!e)
		return;
	memcpy(e->digest, o->digest, 32);
	memcpy(e->data, data, o->size);
	e->len = o->size;
	fs_cache_put(&eng->cache, fs_cache_insert(&eng->cache, e));
}

/* Gets the window of checkpoint cp: from the store, else from the layer's index artifact. */
int fs_get_window(struct fs_engine *eng, struct fs_layer *l, const struct index_checkpoint *cp,
		  uint8_t *window)
{
	char hex[UTIL_DIGEST_STR_LEN];
	struct window_check wc = { cp, window, hex };
	uint8_t *raw;
	ssize_t n = store_chunk_get(eng->store, cp->window, window, INDEX_ZRAN_WINDOW);
	int rc;

	if (n >= 0)
		return n == cp->wlen ? 0 :
				       strata_err(EBADMSG, "checkpoint window has the wrong size");
	if (n != -ENOENT)
		return (int)n;
	util_digest_format(cp->window, hex);
	if (!l->windows[0] || cp->woff == UINT64_MAX)
		return strata_err(EIO, "checkpoint window %s is missing", hex);
	raw = malloc(cp->wclen ? cp->wclen : 1);
	if (!raw)
		return -ENOMEM;
	rc = fetch_blob_range_verify(eng->fetch, l->src, l->windows, cp->woff, cp->wclen, raw,
				     window_verify, &wc);
	free(raw);
	if (rc < 0)
		return rc;
	rc = store_chunk_put(eng->store, cp->window, window, cp->wlen);
	if (rc == -ENOSPC) { /* the verified window is in the caller's buffer: serve anyway */
		fs_store_full(eng, 1);
		strata_err_clear();
		return 0;
	}
	return rc < 0 ? rc : 0;
}

/* Returns 0 when raw (the window's bytes in the artifact) decompresses to the window's digest,
 * else -EBADMSG with strata_err set (fetch_blob_range_verify then tries the next host). */
static int window_verify(void *ctx, const void *raw, size_t len)
{
	const struct window_check *wc = ctx;
	uint8_t digest[32];

	if (len == wc->cp->wlen) {
		memcpy(wc->window, raw, len);
	} else {
		size_t d = ZSTD_decompress(wc->window, wc->cp->wlen, raw, len);

		if (ZSTD_isError(d) || d != wc->cp->wlen)
			return strata_err(EBADMSG, "window %s does not decompress", wc->hex);
	}
	util_sha256(wc->window, wc->cp->wlen, digest);
	if (memcmp(digest, wc->cp->window, 32) != 0)
		return strata_err(EBADMSG, "window %s digest mismatch", wc->hex);
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where a read is served: fs_op_read asks chunk_get for each chunk (the decoded-chunk cache, the
 * store, the writer's queue), and a miss goes to the network through fs_fetch_shared (one fetch
 * per span, shared by the readers that need it) and fetch_span (a range read decoded, verified and
 * stored as it arrives).
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
	(64u << 10)	       /* spans sharing more than this make a miss take the chunk before */
#define DEC_PIECE (256u << 10) /* a span's decode buffer holds a chunk and this much more */

/* A span being fetched; readers that need the same span wait for it instead of fetching again. */
struct inflight {
	uint32_t seq;
	uint64_t cstart, cend;
	int done, rc; /* protected by fs_engine.inflight_mu */
	int refs;     /* protected by fs_engine.inflight_mu */
	struct inflight *next;
};

/*
 * fetch_span()'s sink: decodes a host's compressed bytes as they arrive, checks each chunk against its
 * digest once its last byte is decoded, stores it, and stops the transfer once the chunks it should
 * decode are done. Memory holds one chunk and a piece of decoded bytes (plus the decoder's state),
 * whatever the span's length: a single-frame zstd layer or a TOC's one huge gzip member cannot make
 * a read allocate its span.
 */
struct span_stream {
	struct fs_engine *eng;
	struct fs_layer *l;
	const struct index_chunk *c; /* the chunk the read needs */
	const struct index_span *sp;
	const uint8_t *window;	 /* the span checkpoint's window, or NULL */
	uint64_t uoff, need_end; /* chunks in here must verify, or the host's bytes are bad */
	uint64_t dec_start, dec_end_max; /* chunks in here are stored when they verify */
	struct index_span_dec *dec;	 /* this attempt's decoder */
	uint8_t *plain;			 /* decoded tar bytes [pbase, pbase + plen) */
	size_t plen, pcap;
	uint64_t pbase;
	uint32_t k;	  /* the next chunk to check, in tar order (index_layer_chunk_by_offset) */
	int found_needed; /* c verified */
	int store_rc;	  /* a store failure: the span stopped there, fetch_span returns it */
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
static int span_start(void *ctx);
static int span_data(void *ctx, const void *buf, size_t len);
static int span_finish(void *ctx);
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
 * Fetches the span holding tar bytes [uoff, need_end) of layer l (which contain chunk c), decoding
 * it as it arrives (span_data()): every whole chunk it yields is verified against its digest and
 * stored, and only such chunks. A wanted chunk that does not verify makes the next host try.
 */
static int fetch_span(struct fs_engine *eng, struct fs_layer *l, const struct index_chunk *c,
		      uint64_t uoff, uint64_t need_end)
{
	struct fetch_range_sink sink = { span_start, span_data, span_finish, NULL };
	struct index_span sp;
	struct span_stream ss;
	uint8_t *window = NULL;
	int rc;

	rc = index_layer_span(l->idx, uoff, need_end, &sp);
	if (rc < 0)
		return rc;
	memset(&ss, 0, sizeof(ss));
	ss.eng = eng;
	ss.l = l;
	ss.c = c;
	ss.sp = &sp;
	ss.uoff = uoff;
	ss.need_end = need_end;
	/* Decode the span from its start, so the chunks before the wanted ones are stored too (reads
	 * come out of tar order: a program's imports, concurrent readers), but skip what lies more
	 * than MAX_BEHIND before them (a single zstd frame starts at the layer's first byte), and stop
	 * at most MAX_DECODE beyond what was asked for. */
	ss.dec_start = uoff - sp.ustart <= MAX_BEHIND ? sp.ustart : uoff;
	ss.dec_end_max = sp.uend - need_end > MAX_DECODE ? need_end + MAX_DECODE : sp.uend;
	ss.pcap = (size_t)index_layer_chunk_size(l->idx) + DEC_PIECE;
	ss.plain = malloc(ss.pcap);
	if (!ss.plain) {
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
	ss.window = window;
	sink.ctx = &ss;
	rc = fetch_blob_range_stream(eng->fetch, l->src, l->digest, sp.cstart, sp.cend - sp.cstart,
				     &sink);
	if (rc == 0 && ss.store_rc < 0)
		rc = ss.store_rc;
	else if (rc == 0 && !ss.found_needed)
		rc = strata_err(EIO, "span of %s did not yield the chunk at offset %llu", l->digest,
				(unsigned long long)c->offset);
out:
	index_span_dec_free(ss.dec);
	free(ss.plain);
	free(window);
	return rc;
}

/* A host starts sending the span: decoding starts over from the span's checkpoint. */
static int span_start(void *ctx)
{
	struct span_stream *ss = ctx;

	index_span_dec_free(ss->dec);
	ss->dec = NULL;
	ss->pbase = ss->sp->ustart;
	ss->plen = 0;
	ss->k = index_layer_chunk_rank(ss->l->idx, ss->dec_start);
	ss->found_needed = 0;
	ss->store_rc = 0;
	return index_span_dec_new(ss->l->idx, ss->sp, ss->window, &ss->dec);
}

/* Makes room in the decode buffer: drops the bytes before the next chunk to check. Returns 0, or
 * -EBADMSG when that chunk alone fills the buffer (larger than the index's chunk size). */
static int span_compact(struct span_stream *ss)
{
	const struct index_layer *idx = ss->l->idx;
	uint64_t dpos = ss->pbase + ss->plen, keep = dpos;

	if (ss->k < index_layer_nchunks(idx)) {
		uint64_t off =
			index_layer_chunk(idx, index_layer_chunk_by_offset(idx, ss->k))->offset;

		if (off < keep)
			keep = off > ss->pbase ? off : ss->pbase;
	}
	if (keep == ss->pbase)
		return strata_err(EBADMSG,
				  "layer %s: a chunk at tar offset %llu is larger than its "
				  "index's chunk size",
				  ss->l->digest, (unsigned long long)keep);
	memmove(ss->plain, ss->plain + (keep - ss->pbase), (size_t)(dpos - keep));
	ss->plen = (size_t)(dpos - keep);
	ss->pbase = keep;
	return 0;
}

/* Verifies chunk o (its bytes in data) and stores it. Returns 0; 1 when the store failed
 * (ss->store_rc: the span stops); -EBADMSG when it is a wanted chunk and does not verify. */
static int span_chunk(struct span_stream *ss, const struct index_chunk *o, const uint8_t *data)
{
	struct fs_engine *eng = ss->eng;
	int wanted = o->offset >= ss->uoff && o->offset + o->size <= ss->need_end;
	char hex[UTIL_DIGEST_STR_LEN];
	uint8_t digest[32];
	int put;

	util_sha256(data, o->size, digest);
	if (memcmp(digest, o->digest, 32) != 0) {
		util_digest_format(o->digest, hex);
		if (wanted)
			return strata_err(EBADMSG, "chunk %s of %s does not match its digest", hex,
					  ss->l->digest);
		/* beside the read: not stored, fetched again if ever read */
		strata_log(LOG_WARNING,
			   "layer %s: chunk %s decoded beside a read does not match its digest; "
			   "not stored",
			   ss->l->digest, hex);
		return 0;
	}
	put = fs_writer_queue(eng, o->digest, data, o->size) ?
		      0 :
		      store_chunk_put(eng->store, o->digest, data, o->size);
	if (put == -ENOSPC) {
		/* Serve the verified bytes without storing them. */
		fs_store_full(eng, 1);
		strata_err_clear();
	} else if (put < 0) {
		ss->store_rc = put;
		return 1;
	} else if (put > 0) {
		fs_store_full(eng, 0); /* written: there is room again */
	}
	/* The read and its read-ahead get their chunks from the cache: no store read, no
	 * decompression and no second hash of bytes verified a moment ago. */
	if (wanted)
		cache_verified(eng, o, data);
	if (o == ss->c)
		ss->found_needed = 1;
	return 0;
}

/* Checks and stores every chunk whose last byte is decoded. Returns 0 for more, 1 when no chunk
 * is left to decode (or the store failed), or span_chunk()'s -EBADMSG. */
static int span_chunks(struct span_stream *ss)
{
	const struct index_layer *idx = ss->l->idx;
	uint64_t dpos = ss->pbase + ss->plen;

	for (; ss->k < index_layer_nchunks(idx); ss->k++) {
		const struct index_chunk *o =
			index_layer_chunk(idx, index_layer_chunk_by_offset(idx, ss->k));
		int rc;

		if (o->offset + o->size > ss->dec_end_max)
			return 1;
		if (o->offset + o->size > dpos)
			return 0;
		if (o->offset < ss->pbase)
			continue; /* overlaps a chunk before it (a lying index): its bytes are gone */
		rc = span_chunk(ss, o, ss->plain + (o->offset - ss->pbase));
		if (rc != 0)
			return rc;
	}
	return 1;
}

/* The next compressed bytes of the span from one host. Returns 0 for more, 1 when the chunks to
 * decode are done (the transfer stops), or negative errno: -EBADMSG for bytes that do not decode
 * or verify before the wanted chunks were verified (the next host tries). */
static int span_data(void *ctx, const void *buf, size_t len)
{
	struct span_stream *ss = ctx;
	const uint8_t *in = buf;

	for (;;) {
		size_t made;
		int rc, t;

		if (ss->plen == ss->pcap) {
			rc = span_compact(ss);
			if (rc < 0)
				return rc;
		}
		rc = index_span_dec_feed(ss->dec, &in, &len, ss->plain + ss->plen,
					 ss->pcap - ss->plen, &made);
		ss->plen += made;
		t = rc == -ENOMEM ? 0 : span_chunks(ss);
		if (t != 0)
			return t;
		if (rc < 0) {
			if (rc == -EBADMSG && ss->pbase + ss->plen >= ss->need_end) {
				strata_err_clear(); /* past what the read needs, all verified */
				return 1;
			}
			return rc;
		}
		if (rc == 1)
			return 1; /* the compressed data ended: span_finish() judges */
		if (made == 0 && len == 0)
			return 0;
	}
}

/* A host's answer ended (or span_data() stopped it). Returns 0 when the wanted chunks were all
 * decoded (each verified by span_chunk()), else -EBADMSG. */
static int span_finish(void *ctx)
{
	struct span_stream *ss = ctx;

	if (ss->store_rc < 0)
		return 0; /* the bytes were good: fetch_span() returns the store's error */
	if (ss->pbase + ss->plen < ss->need_end)
		return strata_err(EBADMSG, "span of %s does not decode (%llu of %llu bytes)",
				  ss->l->digest,
				  (unsigned long long)(ss->pbase + ss->plen - ss->sp->ustart),
				  (unsigned long long)(ss->need_end - ss->sp->ustart));
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

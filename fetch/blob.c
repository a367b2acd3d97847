/* SPDX-License-Identifier: Apache-2.0 */
/* Blob reads: whole blobs into a file with their digest checked, byte ranges into a buffer or
 * streamed to a caller's sink, and the deadline one read's fetches share. */
#include "registry.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry_i.h"
#include "util/log.h"
#include "util/sha256.h"

/* req.check of fetch_blob_to_fd(): size and sha256 of what one host sent. -EBADMSG tries the
 * next host. */
static int blob_check(struct req *r)
{
	uint8_t md[UTIL_SHA256_LEN];
	char got[UTIL_DIGEST_STR_LEN];

	util_sha256_final(r->sha, md); /* also resets the context for another host */
	util_digest_format(md, got);
	if (r->got != r->expected)
		return strata_err(EBADMSG,
				  "blob %s from %s is %llu bytes, its descriptor says %llu",
				  r->blob_digest, r->host, (unsigned long long)r->got,
				  (unsigned long long)r->expected);
	if (strcmp(got, r->blob_digest) != 0)
		return strata_err(EBADMSG, "blob %s from %s digest mismatch (got %s)",
				  r->blob_digest, r->host, got);
	return 0;
}

/* Sets r's deadline for a whole-blob download of size bytes: the client's base + size / min rate
 * (sizes are at most FETCH_BLOB_SIZE_MAX, so nothing overflows). */
static void download_deadline(struct req *r, const struct fetch_client *c, uint64_t size)
{
	uint64_t s = (uint64_t)c->download_base_s + size / c->download_min_rate;

	r->timeout_ms = (long)(s * 1000);
	r->deadline_ms = fetch_now_ms() + (int64_t)s * 1000;
	snprintf(r->deadline_what, sizeof(r->deadline_what),
		 "download deadline of %llus (%lds + %llu bytes at %llu bytes/s: "
		 "download_deadline_base, download_min_rate)",
		 (unsigned long long)s, c->download_base_s, (unsigned long long)size,
		 (unsigned long long)c->download_min_rate);
}

int fetch_blob_to_fd(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		     uint64_t expected_size, int fd, fetch_progress_fn progress, void *pctx)
{
	char want[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	if (expected_size > FETCH_BLOB_SIZE_MAX)
		return strata_err(EFBIG,
				  "blob %s claims %llu bytes, more than the %llu strata accepts",
				  want, (unsigned long long)expected_size,
				  (unsigned long long)FETCH_BLOB_SIZE_MAX);
	rc = fetch_route_init(&r, c, ref, "blobs", want, &url, &what);
	if (rc < 0)
		goto out;
	download_deadline(&r, c, expected_size);
	r.kind = SINK_FD;
	r.fd = fd;
	r.fd_start = lseek(fd, 0, SEEK_CUR); /* -1 for a pipe: then a retry cannot rewind */
	r.expected = expected_size;
	r.blob_digest = want;
	r.progress = progress;
	r.pctx = pctx;
	r.check = blob_check;
	r.sha = util_sha256_new();
	if (!r.sha) {
		rc = -ENOMEM;
		goto out;
	}
	rc = fetch_route_request(&r);
out:
	util_sha256_free(r.sha);
	free(r.errbody);
	free(url);
	free(what);
	return rc;
}

/* The caller's verifier of fetch_blob_range_verify(). */
struct range_check {
	int (*verify)(void *ctx, const void *buf, size_t len);
	void *ctx;
};

/* req.check of a verified range read: the caller's verify on the bytes one host sent. */
static int range_check(struct req *r)
{
	const struct range_check *rc = r->check_ctx;
	int v = rc->verify(rc->ctx, r->buf, r->range_len);

	if (v == -EBADMSG)
		return strata_err(EBADMSG, "%s: bytes %llu-%llu from %s do not verify", r->what,
				  (unsigned long long)r->range_off,
				  (unsigned long long)fetch_range_last(r), r->host);
	return v;
}

/* The deadline of the caller's current read (fetch_read_begin()), or 0. */
static _Thread_local int64_t tl_read_deadline_ms;
static _Thread_local long tl_read_timeout_ms;

void fetch_read_begin(struct fetch_client *c)
{
	if (c && c->read_timeout_ms > 0) {
		tl_read_deadline_ms = fetch_now_ms() + c->read_timeout_ms;
		tl_read_timeout_ms = c->read_timeout_ms;
	} else {
		tl_read_deadline_ms = 0;
	}
}

void fetch_read_end(void)
{
	tl_read_deadline_ms = 0;
}

int64_t fetch_read_remaining_ms(void)
{
	int64_t left;

	if (!tl_read_deadline_ms)
		return -1;
	left = tl_read_deadline_ms - fetch_now_ms();
	return left > 0 ? left : 0;
}

/* Sets up r for a range read of blob want (normalized) into sink kind: the route, the read
 * deadline, the range. Returns 0 or negative errno (strata_err set); the caller frees *url, *what
 * and r->errbody either way. */
static int range_init(struct req *r, struct fetch_client *c, const struct fetch_ref *ref,
		      const char *want, uint64_t off, uint64_t len, enum sink_kind kind, char **url,
		      char **what)
{
	int rc;

	if (off > UINT64_MAX - (len - 1) || len > SIZE_MAX)
		return strata_err(EINVAL, "blob %s: range %llu+%llu is out of bounds", want,
				  (unsigned long long)off, (unsigned long long)len);
	rc = fetch_route_init(r, c, ref, "blobs", want, url, what);
	if (rc < 0)
		return rc;
	r->kind = kind;
	if (c->read_timeout_ms > 0) {
		r->timeout_ms = c->read_timeout_ms;
		r->deadline_ms = fetch_now_ms() + c->read_timeout_ms;
	}
	if (tl_read_deadline_ms && (!r->deadline_ms || tl_read_deadline_ms < r->deadline_ms)) {
		r->timeout_ms =
			tl_read_timeout_ms; /* the read's earlier fetches used up some of it */
		r->deadline_ms = tl_read_deadline_ms;
	}
	r->range_off = off;
	r->range_len = (size_t)len;
	return 0;
}

/* Byte ranges of a blob: one GET with a Range header into the caller's buffer (see sink_buf()). */
int fetch_blob_range_verify(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
			    uint64_t off, size_t len, void *buf,
			    int (*verify)(void *ctx, const void *buf, size_t len), void *vctx)
{
	struct range_check chk = { verify, vctx };
	char want[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	if (len == 0)
		return verify ? verify(vctx, buf, 0) : 0;
	rc = range_init(&r, c, ref, want, off, len, SINK_BUF, &url, &what);
	if (rc < 0)
		goto out;
	r.buf = buf;
	if (verify) {
		r.check = range_check;
		r.check_ctx = &chk;
	}
	rc = fetch_route_request(&r);
out:
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* req.check of a streamed range read: the sink's finish() on what one host sent. */
static int stream_check(struct req *r)
{
	const struct fetch_range_sink *k = r->stream;
	int v;

	v = k->finish(k->ctx); /* after data(): a 2xx answer delivered at least one byte */
	if (v == -EBADMSG)
		return strata_err_prefix(EBADMSG, "%s: bytes %llu-%llu from %s do not verify",
					 r->what, (unsigned long long)r->range_off,
					 (unsigned long long)fetch_range_last(r), r->host);
	return v;
}

int fetch_blob_range_stream(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
			    uint64_t off, uint64_t len, const struct fetch_range_sink *sink)
{
	char want[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	if (len == 0) {
		rc = sink->start(sink->ctx);
		return rc < 0 ? rc : sink->finish(sink->ctx);
	}
	rc = range_init(&r, c, ref, want, off, len, SINK_STREAM, &url, &what);
	if (rc < 0)
		goto out;
	r.stream = sink;
	r.check = stream_check;
	rc = fetch_route_request(&r);
out:
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

int fetch_blob_range(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		     uint64_t off, size_t len, void *buf)
{
	return fetch_blob_range_verify(c, ref, digest, off, len, buf, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* One HTTP attempt of a registry request over a curl easy handle: request headers and options,
 * response headers, where the body goes (memory, a file, a byte range), and its errno. */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "registry_i.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define ERRBODY_MAX	 (64u << 10)
#define MAX_REDIRS	 10L
#define BLOB_BUFFER_SIZE (256L << 10)

static int is_2xx(long status)
{
	return status >= 200 && status < 300;
}

/* The URL for messages: an upload location's query may carry a signature or state. */
const char *fetch_http_url(const struct req *r)
{
	return r->shown_url ? r->shown_url : r->url;
}

/* Copies a header value, trimmed, and for Content-Type without its parameters. */
static void header_value(char *dst, size_t dstlen, const char *v, size_t n, int strip_params)
{
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	if (strip_params) {
		const char *semi = memchr(v, ';', n);

		if (semi)
			n = (size_t)(semi - v);
	}
	while (n > 0 &&
	       (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n >= dstlen)
		n = dstlen - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* When line is header `name`, returns the offset of its value, else 0. */
static size_t header_is(const char *line, size_t n, const char *name)
{
	size_t len = strlen(name);

	if (n > len && line[len] == ':' && strncasecmp(line, name, len) == 0)
		return len + 1;
	return 0;
}

/* Parses a decimal number that ends at *end (or the end of s). Returns 0, or -1 when s is not one. */
int fetch_http_parse_u64(const char *s, char **end, uint64_t *out)
{
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, end, 10);
	if (errno != 0)
		return -1;
	*out = v;
	return 0;
}

/* Parses a Content-Range value "bytes first-last/total" (total may be "*") into r. */
static void parse_content_range(struct req *r, const char *v)
{
	uint64_t first, last, total;
	char *p;

	r->has_range = 0;
	if (strncasecmp(v, "bytes ", 6) != 0)
		return;
	if (fetch_http_parse_u64(v + 6, &p, &first) != 0 || *p != '-' ||
	    fetch_http_parse_u64(p + 1, &p, &last) != 0 || *p != '/' || last < first)
		return;
	if (strcmp(p + 1, "*") == 0)
		r->cr_total = -1;
	else if (fetch_http_parse_u64(p + 1, &p, &total) == 0 && *p == '\0' && total <= INT64_MAX &&
		 last < total)
		r->cr_total = (int64_t)total;
	else
		return;
	r->cr_first = first;
	r->cr_last = last;
	r->has_range = 1;
}

/* Records the status of each response (redirects included) and the headers strata reads. Header
 * values are never logged: Location and auth challenges may carry tokens. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *userp)
{
	struct req *r = userp;
	size_t n = size * nmemb;
	char tmp[128];
	size_t v;

	if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
		const char *p = memchr(line, ' ', n);

		r->status = p ? strtol(p + 1, NULL, 10) : 0;
		r->content_type[0] = '\0';
		r->docker_digest[0] = '\0';
		r->errlen = 0;
		r->content_length = -1;
		r->has_range = 0;
		r->body_pos = 0;
		free(r->location);
		r->location = NULL;
		free(r->www_auth);
		r->www_auth = NULL;
		r->retry_after[0] = '\0';
	} else if ((v = header_is(line, n, "Retry-After")) != 0) {
		header_value(r->retry_after, sizeof(r->retry_after), line + v, n - v, 0);
	} else if ((v = header_is(line, n, "WWW-Authenticate")) != 0) {
		/* the first challenge header is kept (registries send one) */
		if (!r->www_auth) {
			r->www_auth = malloc(n - v + 1);
			if (!r->www_auth) {
				r->sink_err = -ENOMEM;
				return 0;
			}
			header_value(r->www_auth, n - v + 1, line + v, n - v, 0);
		}
	} else if ((v = header_is(line, n, "Content-Type")) != 0) {
		header_value(r->content_type, sizeof(r->content_type), line + v, n - v, 1);
	} else if ((v = header_is(line, n, "Docker-Content-Digest")) != 0) {
		header_value(r->docker_digest, sizeof(r->docker_digest), line + v, n - v, 0);
	} else if ((v = header_is(line, n, "Content-Length")) != 0) {
		uint64_t cl;
		char *end;

		header_value(tmp, sizeof(tmp), line + v, n - v, 0);
		if (fetch_http_parse_u64(tmp, &end, &cl) == 0 && *end == '\0' && cl <= INT64_MAX)
			r->content_length = (int64_t)cl;
	} else if ((v = header_is(line, n, "Content-Range")) != 0) {
		header_value(tmp, sizeof(tmp), line + v, n - v, 0);
		parse_content_range(r, tmp);
	} else if (r->want_location && (v = header_is(line, n, "Location")) != 0) {
		/* an upload location: bounded by curl's header size limit (100 KiB) */
		char *loc = malloc(n - v + 1);

		if (!loc) {
			r->sink_err = -ENOMEM;
			return 0;
		}
		header_value(loc, n - v + 1, line + v, n - v, 0);
		free(r->location);
		r->location = loc;
	}
	return n;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static size_t sink_mem(struct req *r, const char *data, size_t n)
{
	if (n > r->limit - r->len) {
		if (r->limit_exact)
			r->sink_err =
				strata_err(EBADMSG,
					   "%s: %s from %s is larger than its descriptor says "
					   "(%zu bytes)",
					   r->what, r->limit_what, r->host, r->limit);
		else
			r->sink_err = strata_err(EBADMSG, "%s: %s is larger than %zu MiB", r->what,
						 r->limit_what, r->limit >> 20);
		return 0;
	}
	if (util_grow((void **)&r->mem, &r->cap, r->len + n + 1, 1) < 0) {
		r->sink_err = -ENOMEM;
		return 0;
	}
	memcpy(r->mem + r->len, data, n);
	r->len += n;
	r->mem[r->len] = '\0';
	return n;
}

static size_t sink_fd(struct req *r, const char *data, size_t n)
{
	int rc;

	/* the descriptor's size is exact, 0 included: a host cannot stream more than it claimed */
	if (n > r->expected - r->got) {
		r->sink_err = strata_err(EBADMSG,
					 "blob %s from %s is larger than its descriptor says (%llu "
					 "bytes)",
					 r->blob_digest, r->host, (unsigned long long)r->expected);
		return 0;
	}
	rc = write_all(r->fd, data, n);
	if (rc < 0) {
		r->sink_err = strata_err(-rc, "%s: write: %s", r->what, strerror(-rc));
		return 0;
	}
	util_sha256_update(r->sha, data, n);
	r->got += n;
	return n;
}

/* Whether r reads a byte range (into a buffer or a stream sink). */
static int is_range(const struct req *r)
{
	return r->kind == SINK_BUF || r->kind == SINK_STREAM;
}

/* The last byte offset of the requested range (range_len > 0, checked by fetch_blob_range). */
uint64_t fetch_range_last(const struct req *r)
{
	return r->range_off + r->range_len - 1;
}

/* Whether a 206 answers the Range sent: it starts at range_off and ends at its last byte, or earlier
 * where the blob ends. A 206 without a (valid) Content-Range does not say which bytes it holds: no. */
static int range_matches(const struct req *r)
{
	if (!r->has_range)
		return 0;
	if (r->cr_first != r->range_off)
		return 0;
	return r->cr_last == fetch_range_last(r) ||
	       (r->cr_last < fetch_range_last(r) && r->cr_total >= 0 &&
		r->cr_last + 1 == (uint64_t)r->cr_total);
}

/* Hands the next n bytes of the range to the stream sink (start() first, once per attempt).
 * Returns data()'s answer: 0, 1 (enough) or negative errno, a bad-bytes one naming the host. */
static int stream_put(struct req *r, const char *p, size_t n)
{
	const struct fetch_range_sink *k = r->stream;
	int v;

	if (!r->stream_started) {
		v = k->start(k->ctx);
		if (v < 0)
			return v;
		r->stream_started = 1;
	}
	v = k->data(k->ctx, p, n);
	if (v == -EBADMSG)
		return strata_err_prefix(EBADMSG, "%s: bytes %llu-%llu from %s do not verify",
					 r->what, (unsigned long long)r->range_off,
					 (unsigned long long)fetch_range_last(r), r->host);
	return v;
}

/*
 * Copies the requested range out of a 2xx body (SINK_BUF), or hands it on as it arrives
 * (SINK_STREAM). A 206 body starts at range_off; any other 2xx body is the whole blob, whose first
 * range_off bytes are skipped. Once range_len bytes are in, or the stream sink has enough, returns a
 * short count to stop the transfer (range_done tells fetch_http_perform() that this is not a
 * failure), unless the body ends right there anyway, which keeps the connection reusable.
 */
static size_t sink_buf(struct req *r, const char *data, size_t n)
{
	uint64_t start = r->status == 206 ? r->range_off :
					    0;	/* blob offset of the body's first byte */
	uint64_t pos = start + r->body_pos;	/* blob offset of data[0] */
	uint64_t want = r->range_off + r->have; /* blob offset of the next byte needed */

	if (r->body_pos == 0 && r->status == 206) {
		if (strcasecmp(r->content_type, "multipart/byteranges") == 0) {
			r->sink_err = strata_err(EIO,
						 "%s: server returned several ranges for request "
						 "%llu-%llu",
						 r->what, (unsigned long long)r->range_off,
						 (unsigned long long)fetch_range_last(r));
			return 0;
		}
		if (!r->has_range) {
			r->sink_err = strata_err(EIO,
						 "%s: server returned a partial response without a "
						 "valid Content-Range for request %llu-%llu",
						 r->what, (unsigned long long)r->range_off,
						 (unsigned long long)fetch_range_last(r));
			return 0;
		}
		if (!range_matches(r)) {
			r->sink_err = strata_err(EIO,
						 "%s: server returned range %llu-%llu for request "
						 "%llu-%llu",
						 r->what, (unsigned long long)r->cr_first,
						 (unsigned long long)r->cr_last,
						 (unsigned long long)r->range_off,
						 (unsigned long long)fetch_range_last(r));
			return 0;
		}
	}
	if (r->have == r->range_len) { /* more body after its Content-Length said it ended */
		r->range_done = 1;
		return 0;
	}
	assert(pos <= want);
	r->body_pos += n;
	if (pos + n > want) {
		size_t skip = (size_t)(want - pos);
		size_t take = n - skip;

		if (take > r->range_len - r->have)
			take = r->range_len - r->have;
		if (r->kind == SINK_STREAM) {
			int v = stream_put(r, data + skip, take);

			if (v < 0) {
				r->sink_err = v;
				return 0;
			}
			r->have += take;
			if (v == 1) {
				r->stream_enough = 1;
				r->range_done = 1;
				return 0;
			}
		} else {
			memcpy(r->buf + r->have, data + skip, take);
			r->have += take;
		}
	}
	if (r->have < r->range_len)
		return n;
	r->range_done = 1;
	if (r->content_length >= 0 && r->body_pos == (uint64_t)r->content_length)
		return n;
	return 0;
}

/* The body of a 2xx response goes to the sink; any other body is kept (bounded) for its error code. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct req *r = userp;
	size_t n = size * nmemb;

	r->rx += n;
	if (!is_2xx(r->status)) {
		size_t room = ERRBODY_MAX - r->errlen;

		if (!r->errbody) {
			r->errbody = malloc(ERRBODY_MAX + 1);
			if (!r->errbody)
				return n; /* the error code is optional */
		}
		if (n < room)
			room = n;
		memcpy(r->errbody + r->errlen, data, room);
		r->errlen += room;
		r->errbody[r->errlen] = '\0';
		return n;
	}
	switch (r->kind) {
	case SINK_MEM:
		return sink_mem(r, data, n);
	case SINK_FD:
		return sink_fd(r, data, n);
	case SINK_BUF:
	case SINK_STREAM:
		return sink_buf(r, data, n);
	case SINK_NONE:
		break;
	}
	return n;
}

static int on_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct req *r = userp;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (!r->progress || !is_2xx(r->status))
		return 0;
	if (r->progress(r->pctx, r->got, r->expected) != 0) {
		r->sink_err = strata_err(ECANCELED, "%s: download cancelled", r->what);
		return 1;
	}
	return 0;
}

/* Empties the sink before another attempt (or host): the fd is cut back to where it started.
 * Returns 0 or negative errno, without touching the error message (the caller keeps the
 * transfer's). */
int fetch_http_sink_reset(struct req *r)
{
	uint8_t scratch[UTIL_SHA256_LEN];

	r->len = 0;
	if (r->mem)
		r->mem[0] = '\0';
	r->have = 0;
	r->range_done = 0;
	r->stream_started = 0;
	r->stream_enough = 0;
	if (r->kind != SINK_FD || r->got == 0)
		return 0;
	if (r->fd_start < 0)
		return -ESPIPE;
	if (ftruncate(r->fd, r->fd_start) != 0 ||
	    lseek(r->fd, r->fd_start, SEEK_SET) != r->fd_start)
		return -errno;
	util_sha256_final(r->sha, scratch); /* resets the context */
	r->got = 0;
	return 0;
}

/* Appends one formatted header line to *list. Returns 0 or -ENOMEM (*list is unchanged then). */
__attribute__((format(printf, 2, 3))) static int add_header(struct curl_slist **list,
							    const char *fmt, ...)
{
	struct curl_slist *t;
	char *line;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	t = curl_slist_append(*list, line);
	free(line);
	if (!t)
		return -ENOMEM;
	*list = t;
	return 0;
}

/*
 * Builds the request headers into *out (NULL when there are none; caller frees with
 * curl_slist_free_all). Authorization is not among them: set_options() hands it to curl as auth
 * options, which curl drops on a redirect to another host. Returns 0 or -ENOMEM.
 */
static int request_headers(const struct req *r, struct curl_slist **out)
{
	struct curl_slist *h = NULL;
	int rc = 0;

	*out = NULL;
	if (r->accept)
		rc = add_header(&h, "Accept: %s", r->accept);
	for (size_t i = 0; rc == 0 && r->hc && i < r->hc->host->nheaders; i++)
		rc = add_header(&h, "%s: %s", r->hc->host->headers[i].name,
				r->hc->host->headers[i].value);
	if (rc == 0 && is_range(r))
		rc = add_header(&h, "Range: bytes=%llu-%llu", (unsigned long long)r->range_off,
				(unsigned long long)fetch_range_last(r));
	if (rc == 0 && (r->method == M_POST || r->method == M_PUT)) {
		/* "Content-Type:" with no value stops curl sending its form default */
		rc = add_header(&h, "Content-Type:%s%s", r->src_type ? " " : "",
				r->src_type ? r->src_type : "");
		/* no "Expect: 100-continue" round trip before a large body */
		if (rc == 0)
			rc = add_header(&h, "Expect:");
	}
	if (rc < 0) {
		curl_slist_free_all(h);
		return rc;
	}
	*out = h;
	return 0;
}

/* Sets every option of r on h, with the request headers built by request_headers(). */
static int set_options(struct req *r, CURL *h, struct curl_slist *headers)
{
	struct fetch_client *c = r->c;
	CURLcode cc = CURLE_OK;

	/* string options are copied and can fail; the others cannot for a known option */
	if (curl_easy_setopt(h, CURLOPT_URL, r->url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT, "strata/" STRATA_VERSION) != CURLE_OK)
		return strata_err(ENOMEM, "%s: cannot set up the request", fetch_http_url(r));
#if LIBCURL_VERSION_NUM >= 0x075500
	cc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	if (cc != CURLE_OK)
		return strata_err(EIO, "%s: %s", fetch_http_url(r), curl_easy_strerror(cc));
#endif
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	switch (r->method) {
	case M_GET:
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
		break;
	case M_HEAD:
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		break;
	case M_POST:
	case M_PUT:
		/* the body from memory: curl resends it itself for a retry on a fresh connection */
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->src_len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->src_len > 0 ? r->src : "");
		if (r->method == M_PUT &&
		    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT") != CURLE_OK)
			return strata_err(ENOMEM, "%s: cannot set up the request",
					  fetch_http_url(r));
		break;
	}
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	/* a host trickling bytes (slowloris) is cut off: below FETCH_LOW_SPEED_BYTES a second for
	 * low_speed_s, and a document (manifest, config: a few MiB at most) within
	 * FETCH_DOC_TIMEOUT_MS whatever its pace */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, FETCH_LOW_SPEED_BYTES);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->low_speed_s);
	if (r->kind == SINK_MEM)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, FETCH_DOC_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, MAX_REDIRS);
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	/* credentials through curl's auth options, never as a custom header: curl sends these only
	 * to the host of the URL and drops them on a redirect elsewhere (UNRESTRICTED_AUTH 0) */
	if (r->bearer) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		if (curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, r->bearer) != CURLE_OK)
			return strata_err(ENOMEM, "%s: cannot set up the request",
					  fetch_http_url(r));
	} else if (r->basic) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		if (curl_easy_setopt(h, CURLOPT_USERNAME,
				     r->basic->username ? r->basic->username : "") != CURLE_OK ||
		    curl_easy_setopt(h, CURLOPT_PASSWORD, r->basic->secret) != CURLE_OK)
			return strata_err(ENOMEM, "%s: cannot set up the request",
					  fetch_http_url(r));
	}
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	if (r->kind == SINK_FD || (is_range(r) && r->range_len >= (size_t)BLOB_BUFFER_SIZE))
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, BLOB_BUFFER_SIZE);
	if (r->hc) {
		const struct fetch_host *fh = r->hc->host;

		if (r->hc->ca_pem) {
			struct curl_blob blob = { .data = r->hc->ca_pem,
						  .len = r->hc->ca_len,
						  .flags = CURL_BLOB_COPY };

			cc = curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
		}
		if (cc == CURLE_OK && fh->nclient > 0)
			cc = curl_easy_setopt(h, CURLOPT_SSLCERT, fh->client[0].cert);
		if (cc == CURLE_OK && fh->nclient > 0 && fh->client[0].key)
			cc = curl_easy_setopt(h, CURLOPT_SSLKEY, fh->client[0].key);
		if (cc == CURLE_OK && fh->proxy)
			cc = curl_easy_setopt(h, CURLOPT_PROXY, fh->proxy);
		if (cc != CURLE_OK)
			return strata_err(EIO, "%s: %s", fetch_http_url(r), curl_easy_strerror(cc));
		if (fh->skip_verify == 1) {
			curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
			curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
		}
		if (fh->dial_timeout_ms > 0)
			curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)fh->dial_timeout_ms);
	}
	if (r->progress) {
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	}
	return 0;
}

int fetch_http_setup(struct req *r, CURL *h, struct curl_slist **headers)
{
	int rc = request_headers(r, headers);

	if (rc < 0)
		return rc;
	return set_options(r, h, *headers);
}

/* Converts a failed transfer to an errno, once, with curl's own message. */
static int curl_error(struct req *r, CURLcode cc, int *retry)
{
	const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc);

	r->transport_err = 1;
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
		*retry = 1;
		return strata_err(ECONNREFUSED, "cannot reach %s: %s", r->host, msg);
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		*retry = 1;
		return strata_err(EHOSTUNREACH, "cannot reach %s: %s", r->host, msg);
	case CURLE_OPERATION_TIMEDOUT:
		*retry = 1;
		return strata_err(ETIMEDOUT, "cannot reach %s: %s", r->host, msg);
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		*retry = 1;
		return strata_err(EIO, "%s: %s", fetch_http_url(r), msg);
	default:
		return strata_err(EIO, "%s: %s", fetch_http_url(r), msg);
	}
}

/* The first entry of a registry error body {"errors":[{"code":..,"message":..}]}, if any. */
static void registry_error(const struct req *r, char *code, size_t codelen, char *msg,
			   size_t msglen)
{
	json_t *root, *first;
	const char *s;

	code[0] = '\0';
	msg[0] = '\0';
	if (!r->errbody || r->errlen == 0)
		return;
	root = json_loadb(r->errbody, r->errlen, 0, NULL);
	first = json_array_get(json_object_get(root, "errors"), 0);
	s = json_string_value(json_object_get(first, "code"));
	if (s)
		snprintf(code, codelen, "%s", s);
	s = json_string_value(json_object_get(first, "message"));
	if (s)
		snprintf(msg, msglen, "%s", s);
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	for (char *p = code; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	json_decref(root);
}

/* Converts a non-2xx final status to an errno and marks the attempt as ended by that status
 * (r->status_err): whether a 429 or 5xx is worth another attempt, and when, is retry.c's call. */
static int http_error(struct req *r, long status)
{
	char code[64], msg[160];

	r->status_err = 1;
	registry_error(r, code, sizeof(code), msg, sizeof(msg));
	if (status == 429 || status >= 500) {
		if (code[0])
			return strata_err(EIO, "%s: HTTP %ld (%s: %s)", fetch_http_url(r), status,
					  code, msg);
		return strata_err(EIO, "%s: HTTP %ld", fetch_http_url(r), status);
	}
	if (status == 401 || status == 403) /* fetch_authorize_request() answers a 401 challenge */
		return strata_err(EACCES, "%s: access denied (HTTP %ld from %s)", r->what, status,
				  r->host);
	if (status == 416 && is_range(r))
		return strata_err(EPIPE,
				  "%s: blob is shorter than the requested range (bytes %llu-%llu)",
				  r->what, (unsigned long long)r->range_off,
				  (unsigned long long)fetch_range_last(r));
	if (strcmp(code, "NAME_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: repository not found (NAME_UNKNOWN)", r->what);
	if (strcmp(code, "MANIFEST_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: manifest unknown (MANIFEST_UNKNOWN)", r->what);
	if (strcmp(code, "BLOB_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: blob unknown (BLOB_UNKNOWN)", r->what);
	if (status == 404)
		return strata_err(ENOENT, "%s: HTTP 404", fetch_http_url(r));
	if (code[0])
		return strata_err(EIO, "%s: HTTP %ld (%s: %s)", fetch_http_url(r), status, code,
				  msg);
	return strata_err(EIO, "%s: HTTP %ld", fetch_http_url(r), status);
}

/* Adds one attempt to the client's counters, the only place they change: requests counts the attempt
 * and the redirects it followed, range_requests each attempt of a range read (retries included). */
static void count_attempt(const struct req *r, CURL *h, int attempt)
{
	struct fetch_client *c = r->c;
	long redirects = 0;

	if (curl_easy_getinfo(h, CURLINFO_REDIRECT_COUNT, &redirects) != CURLE_OK || redirects < 0)
		redirects = 0;
	atomic_fetch_add_explicit(&c->n_requests, 1 + (uint64_t)redirects, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->n_bytes, r->rx, memory_order_relaxed);
	if (attempt > 0)
		atomic_fetch_add_explicit(&c->n_retries, 1, memory_order_relaxed);
	if (is_range(r))
		atomic_fetch_add_explicit(&c->n_range, 1, memory_order_relaxed);
	if (r->hs) {
		atomic_fetch_add_explicit(&r->hs->n_requests, 1 + (uint64_t)redirects,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&r->hs->n_bytes, r->rx, memory_order_relaxed);
		if (attempt > 0)
			atomic_fetch_add_explicit(&r->hs->n_retries, 1, memory_order_relaxed);
	}
}

/* After a 2xx range response: 0 when the range is complete, else -EPIPE, retried unless the response
 * itself shows that the blob ends early (a 206 ending at its total, or a whole body that arrived). */
static int range_finish(struct req *r, int *retry)
{
	int proven;

	if (r->have == r->range_len || r->stream_enough)
		return 0;
	if (r->status == 206)
		proven = r->has_range && r->cr_total >= 0 &&
			 r->cr_last + 1 == (uint64_t)r->cr_total &&
			 r->body_pos == r->cr_last - r->cr_first + 1;
	else
		proven = r->content_length >= 0 && r->body_pos == (uint64_t)r->content_length;
	*retry = !proven;
	return strata_err(EPIPE, "%s: blob is shorter than the requested range (bytes %llu-%llu)%s",
			  r->what, (unsigned long long)r->range_off,
			  (unsigned long long)fetch_range_last(r),
			  proven ? "" : " or the response was cut short");
}

/* The "host:port" of url into out (cap bytes), lowercase; "" when it cannot be parsed. */
static void url_authority(const char *url, char *out, size_t cap)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;

	out[0] = '\0';
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
		snprintf(out, cap, "%s:%s", host, port);
	for (char *p = out; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
}

/* Whether the final response of a redirected request came from another host than the one asked
 * (a blob's storage, say); its name into other (cap bytes). */
static int from_redirect_target(const struct req *r, CURL *h, char *other, size_t cap)
{
	char asked[300];
	long redirects = 0;
	char *eff = NULL;

	if (curl_easy_getinfo(h, CURLINFO_REDIRECT_COUNT, &redirects) != CURLE_OK ||
	    redirects <= 0 || curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff) != CURLE_OK ||
	    !eff)
		return 0;
	url_authority(r->url, asked, sizeof(asked));
	url_authority(eff, other, cap);
	return strcmp(asked, other) != 0;
}

/* One attempt. Returns 0 for a 2xx response (or a 3xx where redirects are not followed), else
 * negative errno with strata_err set; *retry when another attempt may succeed (a non-2xx status:
 * r->status_err, for retry.c to judge). */
int fetch_http_perform(struct req *r, CURL *h, int attempt, int *retry)
{
	CURLcode cc;
	long status = 0;

	*retry = 0;
	r->errbuf[0] = '\0';
	r->sink_err = 0;
	r->transport_err = 0;
	r->status_err = 0;
	r->status = 0;
	r->errlen = 0;
	r->rx = 0;
	cc = curl_easy_perform(h);
	count_attempt(r, h, attempt);
	if (r->sink_err)
		return r->sink_err;
	if (cc == CURLE_WRITE_ERROR && r->range_done)
		cc = CURLE_OK; /* sink_buf() stopped a whole-blob body once the range was in */
	if (cc == CURLE_PARTIAL_FILE && r->status >= 400)
		/* an error whose body fell short of its Content-Length (Distribution 2.8 sends a 416
		 * with the blob's length): the status is the answer */
		return http_error(r, r->status);
	if (cc != CURLE_OK)
		return curl_error(r, cc, retry);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	r->status = status;
	if (is_2xx(status))
		return is_range(r) ? range_finish(r, retry) : 0;
	if (r->method != M_GET && status >= 300 && status < 400)
		return 0;
	if (status == 401 && r->www_auth) {
		char other[300];

		if (from_redirect_target(r, h, other, sizeof(other))) {
			/* only the registry itself may say where to get credentials: a redirect
			 * target's challenge would send the registry's credentials elsewhere */
			free(r->www_auth);
			r->www_auth = NULL;
			r->status_err = 1;
			return strata_err(EACCES,
					  "%s: access denied (HTTP 401 from %s, where %s redirected; "
					  "its challenge is ignored)",
					  r->what, other, r->host);
		}
	}
	return http_error(r, status);
}

/* Whether s can go into a header line: no control characters (no CR/LF header injection). */
int fetch_http_header_safe(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

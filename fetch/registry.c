/* SPDX-License-Identifier: Apache-2.0 */
/* OCI distribution client over libcurl: resolves manifests and indexes and downloads verified blobs. */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "util/log.h"
#include "util/sha256.h"

#define MANIFEST_MAX (4u << 20)
#define CONFIG_MAX (16u << 20)
#define ERRBODY_MAX (64u << 10)
#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_LOW_SPEED_S 30L
#define DEFAULT_ATTEMPTS 3
#define BACKOFF_BASE_MS 200L
#define BACKOFF_MAX_SHIFT 8
#define RETRY_AFTER_MAX_S 10L
#define MAX_REDIRS 10L
#define BLOB_BUFFER_SIZE (256L << 10)
/* Idle easy handles kept per client: each keeps its own connection cache, so reusing one reuses its
 * keep-alive connections (libcurl does not support sharing a connection cache across threads). */
#define POOL_MAX 8

#define ACCEPT_MANIFESTS                                                                          \
	"Accept: " FETCH_MT_OCI_INDEX ", " FETCH_MT_OCI_MANIFEST ", " FETCH_MT_DOCKER_LIST ", "   \
	FETCH_MT_DOCKER_MANIFEST
#define SCHEMA1_PREFIX "application/vnd.docker.distribution.manifest.v1+"

struct fetch_client {
	char *os;
	char *arch;
	char *variant; /* NULL: any */
	long connect_timeout_ms;
	long low_speed_s;
	int max_attempts;
	CURLSH *share; /* DNS and TLS session caches, locked through share_locks */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t pool_lock;
	CURL *pool[POOL_MAX]; /* idle easy handles; protected by pool_lock */
	size_t npool;         /* protected by pool_lock */
};

enum sink_kind { SINK_MEM, SINK_FD };

/* One HTTP GET with its retries: what to fetch, where the 2xx body goes, and what came back. */
struct req {
	struct fetch_client *c;
	const char *url;
	const char *what; /* names the object in error messages: "<ref>" or "<repo>@<digest>" */
	const char *host; /* for "cannot reach <host>" */
	int accept_manifests;

	enum sink_kind kind;
	/* SINK_MEM: the body, NUL-terminated, at most limit bytes */
	char *mem;
	size_t len, cap, limit;
	const char *limit_what; /* "manifest", "config" */
	/* SINK_FD: the body streamed to fd from fd_start, hashed as it goes */
	int fd;
	off_t fd_start;
	struct util_sha256 *sha;
	uint64_t got;
	uint64_t expected; /* 0: unknown */
	const char *blob_digest;
	fetch_progress_fn progress;
	void *pctx;

	/* the current response; reset at each status line (redirects, retries) */
	long status;
	char content_type[256];
	char docker_digest[128];
	char *errbody; /* a non-2xx body, for the registry's error code */
	size_t errlen;

	int sink_err; /* negative errno, strata_err set, when a callback stopped the transfer */
	char errbuf[CURL_ERROR_SIZE];
};

/* A fetched manifest: the bytes, their digest, and the Content-Type they came with. */
struct doc {
	char *data;
	size_t len;
	char digest[UTIL_DIGEST_STR_LEN];
	char content_type[256];
};

enum doc_kind { DOC_MANIFEST, DOC_INDEX };

/* --- process-wide setup --- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static pthread_once_t arch_once = PTHREAD_ONCE_INIT;
static const char *host_arch;
static char host_machine[65];

static void arch_init(void)
{
	static const struct {
		const char *machine;
		const char *goarch;
	} map[] = {
		{ "x86_64", "amd64" },	 { "amd64", "amd64" },	   { "aarch64", "arm64" },
		{ "arm64", "arm64" },	 { "i386", "386" },	   { "i486", "386" },
		{ "i586", "386" },	 { "i686", "386" },	   { "ppc64le", "ppc64le" },
		{ "s390x", "s390x" },	 { "riscv64", "riscv64" },
	};
	struct utsname u;

	host_arch = "unknown";
	if (uname(&u) != 0)
		return;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(u.machine, map[i].machine) == 0) {
			host_arch = map[i].goarch;
			return;
		}
	}
	if (strncmp(u.machine, "arm", 3) == 0) {
		host_arch = "arm";
		return;
	}
	snprintf(host_machine, sizeof(host_machine), "%s", u.machine);
	host_arch = host_machine;
}

const char *fetch_host_arch(void)
{
	pthread_once(&arch_once, arch_init);
	return host_arch;
}

/* --- client --- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
	struct fetch_client *c = userp;

	(void)h;
	(void)access;
	assert((unsigned int)data < CURL_LOCK_DATA_LAST);
	pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userp)
{
	struct fetch_client *c = userp;

	(void)h;
	assert((unsigned int)data < CURL_LOCK_DATA_LAST);
	pthread_mutex_unlock(&c->share_locks[data]);
}

void fetch_client_free(struct fetch_client *c)
{
	if (!c)
		return;
	/* easy handles first: they may still reference the share */
	for (size_t i = 0; i < c->npool; i++)
		curl_easy_cleanup(c->pool[i]);
	if (c->share)
		curl_share_cleanup(c->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&c->share_locks[i]);
	pthread_mutex_destroy(&c->pool_lock);
	free(c->os);
	free(c->arch);
	free(c->variant);
	free(c);
}

int fetch_client_new(const struct fetch_opts *opts, struct fetch_client **out)
{
	static const struct fetch_opts defaults;
	struct fetch_client *c = NULL;
	int rc;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return strata_err(EIO, "curl_global_init: %s", curl_easy_strerror(global_rc));

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&c->share_locks[i], NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	c->os = strdup(opts->platform_os ? opts->platform_os : "linux");
	c->arch = strdup(opts->platform_arch ? opts->platform_arch : fetch_host_arch());
	c->variant = opts->platform_variant ? strdup(opts->platform_variant) : NULL;
	c->connect_timeout_ms =
		opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	c->low_speed_s = opts->low_speed_timeout_s > 0 ? opts->low_speed_timeout_s : DEFAULT_LOW_SPEED_S;
	c->max_attempts = opts->max_attempts > 0 ? opts->max_attempts : DEFAULT_ATTEMPTS;
	if (!c->os || !c->arch || (opts->platform_variant && !c->variant)) {
		rc = -ENOMEM;
		goto out;
	}

	c->share = curl_share_init();
	if (!c->share) {
		rc = -ENOMEM;
		goto out;
	}
	if (curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
		rc = strata_err(EIO, "curl share setup failed");
		goto out;
	}
	*out = c;
	c = NULL;
	rc = 0;
out:
	fetch_client_free(c);
	return rc;
}

/* Takes an idle easy handle from the pool, or makes one. Returns NULL on allocation failure. */
static CURL *handle_get(struct fetch_client *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->npool > 0)
		h = c->pool[--c->npool];
	pthread_mutex_unlock(&c->pool_lock);
	return h ? h : curl_easy_init();
}

/* Returns h to the pool with its options cleared (its live connections stay open). */
static void handle_put(struct fetch_client *c, CURL *h)
{
	if (!h)
		return;
	curl_easy_reset(h);
	pthread_mutex_lock(&c->pool_lock);
	if (c->npool < POOL_MAX) {
		c->pool[c->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

/* --- one request --- */

static int is_2xx(long status)
{
	return status >= 200 && status < 300;
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
	while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
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

/* Records the status of each response (redirects included) and the headers strata reads. Header
 * values are never logged: Location and auth challenges may carry tokens. */
static size_t on_header(char *line, size_t size, size_t nmemb, void *userp)
{
	struct req *r = userp;
	size_t n = size * nmemb;
	size_t v;

	if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
		const char *p = memchr(line, ' ', n);

		r->status = p ? strtol(p + 1, NULL, 10) : 0;
		r->content_type[0] = '\0';
		r->docker_digest[0] = '\0';
		r->errlen = 0;
	} else if ((v = header_is(line, n, "Content-Type")) != 0) {
		header_value(r->content_type, sizeof(r->content_type), line + v, n - v, 1);
	} else if ((v = header_is(line, n, "Docker-Content-Digest")) != 0) {
		header_value(r->docker_digest, sizeof(r->docker_digest), line + v, n - v, 0);
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
		r->sink_err = strata_err(EBADMSG, "%s: %s is larger than %zu MiB", r->what, r->limit_what,
					 r->limit >> 20);
		return 0;
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 16384;
		char *p;

		while (cap < r->len + n + 1)
			cap *= 2;
		p = realloc(r->mem, cap);
		if (!p) {
			r->sink_err = -ENOMEM;
			return 0;
		}
		r->mem = p;
		r->cap = cap;
	}
	memcpy(r->mem + r->len, data, n);
	r->len += n;
	r->mem[r->len] = '\0';
	return n;
}

static size_t sink_fd(struct req *r, const char *data, size_t n)
{
	int rc;

	if (r->expected > 0 && n > r->expected - r->got) {
		r->sink_err = strata_err(EBADMSG, "blob %s is larger than its descriptor (%llu bytes)",
					 r->blob_digest, (unsigned long long)r->expected);
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

/* The body of a 2xx response goes to the sink; any other body is kept (bounded) for its error code. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct req *r = userp;
	size_t n = size * nmemb;

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
	return r->kind == SINK_MEM ? sink_mem(r, data, n) : sink_fd(r, data, n);
}

static int on_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct req *r = userp;
	uint64_t total = r->expected;

	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (!r->progress || !is_2xx(r->status))
		return 0;
	if (total == 0 && dltotal > 0)
		total = (uint64_t)dltotal;
	if (r->progress(r->pctx, r->got, total) != 0) {
		r->sink_err = strata_err(ECANCELED, "%s: download cancelled", r->what);
		return 1;
	}
	return 0;
}

/* Empties the sink before another attempt: the fd is cut back to where it started. Returns 0 or
 * negative errno, without touching the error message (the caller keeps the transfer's). */
static int sink_reset(struct req *r)
{
	uint8_t scratch[UTIL_SHA256_LEN];

	r->len = 0;
	if (r->mem)
		r->mem[0] = '\0';
	if (r->kind != SINK_FD || r->got == 0)
		return 0;
	if (r->fd_start < 0)
		return -ESPIPE;
	if (ftruncate(r->fd, r->fd_start) != 0 || lseek(r->fd, r->fd_start, SEEK_SET) != r->fd_start)
		return -errno;
	util_sha256_final(r->sha, scratch); /* resets the context */
	r->got = 0;
	return 0;
}

/*
 * Builds the request headers into *out (NULL when there are none; caller frees with
 * curl_slist_free_all). This is the one place where an "Authorization: Bearer <token>" header will be
 * added once token auth exists (a 401 answered in http_error() fetches the token, then request()
 * retries). Returns 0 or -ENOMEM.
 */
static int request_headers(const struct req *r, struct curl_slist **out)
{
	struct curl_slist *h = NULL, *t;

	*out = NULL;
	if (r->accept_manifests) {
		t = curl_slist_append(h, ACCEPT_MANIFESTS);
		if (!t) {
			curl_slist_free_all(h);
			return -ENOMEM;
		}
		h = t;
	}
	*out = h;
	return 0;
}

static int set_options(struct req *r, CURL *h, struct curl_slist *headers)
{
	struct fetch_client *c = r->c;
	CURLcode cc = CURLE_OK;

	/* string options are copied and can fail; the others cannot for a known option */
	if (curl_easy_setopt(h, CURLOPT_URL, r->url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT, "strata/" STRATA_VERSION) != CURLE_OK)
		return strata_err(ENOMEM, "%s: cannot set up the request", r->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	cc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	if (cc != CURLE_OK)
		return strata_err(EIO, "%s: %s", r->url, curl_easy_strerror(cc));
#endif
	curl_easy_setopt(h, CURLOPT_SHARE, c->share);
	curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->low_speed_s);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, MAX_REDIRS);
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	if (r->kind == SINK_FD)
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, BLOB_BUFFER_SIZE);
	if (r->progress) {
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	}
	return 0;
}

/* Converts a failed transfer to an errno, once, with curl's own message. */
static int curl_error(struct req *r, CURLcode cc, int *retry)
{
	const char *msg = r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc);

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
		return strata_err(EIO, "%s: %s", r->url, msg);
	default:
		return strata_err(EIO, "%s: %s", r->url, msg);
	}
}

/* The first entry of a registry error body {"errors":[{"code":..,"message":..}]}, if any. */
static void registry_error(const struct req *r, char *code, size_t codelen, char *msg, size_t msglen)
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

/* Converts a non-2xx final status to an errno; *retry for 429 and 5xx, with the server's delay. */
static int http_error(struct req *r, CURL *h, long status, int *retry, long *retry_after_s)
{
	char code[64], msg[160];
	curl_off_t ra = 0;

	registry_error(r, code, sizeof(code), msg, sizeof(msg));
	if (status == 429 || status >= 500) {
		*retry = 1;
		if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
			*retry_after_s = ra > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : (long)ra;
		if (code[0])
			return strata_err(EIO, "%s: HTTP %ld (%s: %s)", r->url, status, code, msg);
		return strata_err(EIO, "%s: HTTP %ld", r->url, status);
	}
	if (status == 401 || status == 403) {
		/* Token auth goes here: read the WWW-Authenticate challenge, get a bearer token, let
		 * request() retry with it (see request_headers()). */
		return strata_err(EACCES, "%s: access denied (HTTP %ld)", r->what, status);
	}
	if (strcmp(code, "NAME_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: repository not found (NAME_UNKNOWN)", r->what);
	if (strcmp(code, "MANIFEST_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: manifest unknown (MANIFEST_UNKNOWN)", r->what);
	if (strcmp(code, "BLOB_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: blob unknown (BLOB_UNKNOWN)", r->what);
	if (status == 404)
		return strata_err(ENOENT, "%s: HTTP 404", r->url);
	if (code[0])
		return strata_err(EIO, "%s: HTTP %ld (%s: %s)", r->url, status, code, msg);
	return strata_err(EIO, "%s: HTTP %ld", r->url, status);
}

/* One attempt. Returns 0 for a 2xx response, else negative errno with strata_err set. */
static int perform_once(struct req *r, CURL *h, int *retry, long *retry_after_s)
{
	CURLcode cc;
	long status = 0;

	*retry = 0;
	*retry_after_s = 0;
	r->errbuf[0] = '\0';
	r->sink_err = 0;
	r->status = 0;
	r->errlen = 0;
	cc = curl_easy_perform(h);
	if (r->sink_err)
		return r->sink_err;
	if (cc != CURLE_OK)
		return curl_error(r, cc, retry);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (is_2xx(status))
		return 0;
	return http_error(r, h, status, retry, retry_after_s);
}

/* Full-jitter backoff: a random delay in [0, 200 ms * 2^attempt]. */
static long backoff_ms(int attempt)
{
	static _Thread_local unsigned int seed;
	long cap = BACKOFF_BASE_MS << (attempt < BACKOFF_MAX_SHIFT ? attempt : BACKOFF_MAX_SHIFT);

	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (unsigned int)(ts.tv_nsec ^ ts.tv_sec ^ (long)(uintptr_t)&seed) | 1u;
	}
	return (long)((double)rand_r(&seed) / RAND_MAX * (double)cap);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Runs r to completion with retries. Returns 0 with the body in the sink, or negative errno with
 * strata_err set. r->mem and r->errbody stay owned by the caller either way. */
static int request(struct req *r)
{
	struct curl_slist *headers = NULL;
	CURL *h;
	int rc, retry;
	long retry_after_s, delay;

	h = handle_get(r->c);
	if (!h)
		return strata_err(ENOMEM, "%s: cannot create a curl handle", r->url);
	rc = request_headers(r, &headers);
	if (rc < 0)
		goto out;
	rc = set_options(r, h, headers);
	if (rc < 0)
		goto out;
	for (int attempt = 0;; attempt++) {
		if (attempt > 0) {
			int rrc = sink_reset(r);

			if (rrc < 0) {
				strata_debug("%s: cannot rewind the output to retry: %s", r->url,
					     strerror(-rrc));
				break; /* keep the transfer's error, it says more */
			}
		}
		rc = perform_once(r, h, &retry, &retry_after_s);
		if (rc == 0 || !retry || attempt + 1 >= r->c->max_attempts)
			break;
		delay = retry_after_s > 0 ? retry_after_s * 1000 : backoff_ms(attempt);
		strata_debug("%s: attempt %d failed (%s); retrying in %ld ms", r->url, attempt + 1,
			     strata_errmsg(rc), delay);
		sleep_ms(delay);
	}
out:
	curl_slist_free_all(headers);
	handle_put(r->c, h);
	return rc;
}

/* --- manifests --- */

static const char *scheme(const struct fetch_ref *ref)
{
	return fetch_ref_is_loopback(ref) ? "http" : "https";
}

static void doc_clear(struct doc *d)
{
	free(d->data);
	memset(d, 0, sizeof(*d));
}

/*
 * GETs the manifest `reference` (a tag or a digest) of ref's repository into d and computes its
 * digest. Checks it against expect_digest when given (and expect_size when > 0), else against the
 * Docker-Content-Digest header when the registry sent a sha256 one.
 */
static int get_manifest(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
			const char *reference, const char *expect_digest, uint64_t expect_size,
			struct doc *d)
{
	uint8_t md[UTIL_SHA256_LEN];
	char *url = NULL;
	struct req r = { 0 };
	int rc;

	if (asprintf(&url, "%s://%s/v2/%s/manifests/%s", scheme(ref), fetch_ref_api_host(ref),
		     ref->path, reference) < 0)
		return -ENOMEM;
	r.c = c;
	r.url = url;
	r.what = refstr;
	r.host = fetch_ref_api_host(ref);
	r.accept_manifests = 1;
	r.kind = SINK_MEM;
	r.limit = MANIFEST_MAX;
	r.limit_what = "manifest";
	rc = request(&r);
	if (rc < 0)
		goto out;
	if (!r.mem) {
		rc = strata_err(EBADMSG, "%s: empty manifest from %s", refstr, url);
		goto out;
	}
	util_sha256(r.mem, r.len, md);
	util_digest_format(md, d->digest);
	if (expect_digest && strcmp(expect_digest, d->digest) != 0) {
		rc = strata_err(EBADMSG, "%s: manifest %s digest mismatch (got %s)", refstr, expect_digest,
				d->digest);
		goto out;
	}
	if (expect_size > 0 && r.len != expect_size) {
		rc = strata_err(EBADMSG, "%s: manifest %s is %zu bytes, its descriptor says %llu", refstr,
				d->digest, r.len, (unsigned long long)expect_size);
		goto out;
	}
	if (!expect_digest && strncmp(r.docker_digest, "sha256:", 7) == 0 &&
	    strcasecmp(r.docker_digest, d->digest) != 0) {
		rc = strata_err(EBADMSG, "%s: manifest digest mismatch (Docker-Content-Digest %s, got %s)",
				refstr, r.docker_digest, d->digest);
		goto out;
	}
	d->data = r.mem;
	d->len = r.len;
	r.mem = NULL;
	snprintf(d->content_type, sizeof(d->content_type), "%s", r.content_type);
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(url);
	return rc;
}

static int parse_json(const char *refstr, const char *what, const char *data, size_t len, json_t **out)
{
	json_error_t jerr;
	json_t *root;

	*out = NULL;
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return strata_err(EBADMSG, "%s: malformed %s JSON: %s (line %d)", refstr, what, jerr.text,
				  jerr.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return strata_err(EBADMSG, "%s: %s JSON is not an object", refstr, what);
	}
	*out = root;
	return 0;
}

/*
 * Decides what a manifest document is: its media type comes from the JSON mediaType field, else the
 * Content-Type header; when neither names a manifest type, the shape decides (an OCI document
 * without mediaType). *mt points into root or at a static string.
 */
static int classify(const char *refstr, json_t *root, const char *content_type, const char **mt,
		    enum doc_kind *kind)
{
	json_t *sv = json_object_get(root, "schemaVersion");
	const char *t = json_string_value(json_object_get(root, "mediaType"));

	if (!t || !*t)
		t = content_type;
	if ((json_is_integer(sv) && json_integer_value(sv) == 1) ||
	    strncmp(t, SCHEMA1_PREFIX, strlen(SCHEMA1_PREFIX)) == 0)
		return strata_err(ENOTSUP, "%s: schema 1 manifests are not supported", refstr);
	if (!json_is_integer(sv) || json_integer_value(sv) != 2)
		return strata_err(ENOTSUP, "%s: unsupported manifest schemaVersion (want 2)", refstr);
	if (strcmp(t, FETCH_MT_OCI_INDEX) == 0 || strcmp(t, FETCH_MT_DOCKER_LIST) == 0) {
		*mt = t;
		*kind = DOC_INDEX;
		return 0;
	}
	if (strcmp(t, FETCH_MT_OCI_MANIFEST) == 0 || strcmp(t, FETCH_MT_DOCKER_MANIFEST) == 0) {
		*mt = t;
		*kind = DOC_MANIFEST;
		return 0;
	}
	if (!*t || strcmp(t, "application/json") == 0 || strcmp(t, "application/octet-stream") == 0) {
		if (json_is_array(json_object_get(root, "manifests"))) {
			*mt = FETCH_MT_OCI_INDEX;
			*kind = DOC_INDEX;
			return 0;
		}
		if (json_is_object(json_object_get(root, "config")) &&
		    json_is_array(json_object_get(root, "layers"))) {
			*mt = FETCH_MT_OCI_MANIFEST;
			*kind = DOC_MANIFEST;
			return 0;
		}
	}
	return strata_err(ENOTSUP, "%s: unsupported manifest media type '%.100s'", refstr,
			  *t ? t : "(none)");
}

/* Reads a descriptor's digest (normalized to lowercase hex) and size. */
static int descriptor(const char *refstr, const char *what, json_t *d, char digest[UTIL_DIGEST_STR_LEN],
		      uint64_t *size)
{
	uint8_t md[UTIL_SHA256_LEN];
	const char *s = json_string_value(json_object_get(d, "digest"));
	json_t *sz = json_object_get(d, "size");

	if (!json_is_object(d))
		return strata_err(EBADMSG, "%s: %s is not a descriptor object", refstr, what);
	if (!s || util_digest_parse(s, md) != 0)
		return strata_err(EBADMSG, "%s: %s has a missing or unsupported digest '%.80s'", refstr,
				  what, s ? s : "");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0)
		return strata_err(EBADMSG, "%s: %s has no valid size", refstr, what);
	util_digest_format(md, digest);
	*size = (uint64_t)json_integer_value(sz);
	return 0;
}

static char *platform_string(const char *os, const char *arch, const char *variant)
{
	char *s = NULL;

	if (asprintf(&s, "%s/%s%s%s", os, arch, variant ? "/" : "", variant ? variant : "") < 0)
		return NULL;
	return s;
}

/* Whether the ", "-separated list contains item. */
static int list_has(const char *list, const char *item)
{
	size_t n = strlen(item);

	while (*list) {
		size_t len = strcspn(list, ",");

		if (len == n && strncmp(list, item, n) == 0)
			return 1;
		list += len;
		while (*list == ',' || *list == ' ')
			list++;
	}
	return 0;
}

/*
 * Picks the first index entry for the client's os/arch (variant: unset on either side matches).
 * Returns 0 with the entry's digest, size and platform string (*platform malloc'd), -ENOENT listing
 * the platforms the index has, -ENOTSUP for a nested index, -EBADMSG for a malformed entry.
 */
static int pick_platform(const struct fetch_client *c, const char *refstr, json_t *root,
			 char digest[UTIL_DIGEST_STR_LEN], uint64_t *size, char **platform)
{
	json_t *manifests = json_object_get(root, "manifests");
	char has[512] = "";
	size_t hlen = 0, i;
	int rc, truncated = 0;
	json_t *e;

	*platform = NULL;
	if (!json_is_array(manifests))
		return strata_err(EBADMSG, "%s: index has no manifests array", refstr);
	json_array_foreach(manifests, i, e) {
		json_t *p = json_object_get(e, "platform");
		const char *os = json_string_value(json_object_get(p, "os"));
		const char *arch = json_string_value(json_object_get(p, "architecture"));
		const char *variant = json_string_value(json_object_get(p, "variant"));
		const char *mt = json_string_value(json_object_get(e, "mediaType"));
		char entry[128];

		if (!os || !arch)
			continue;
		if (strcmp(os, c->os) == 0 && strcmp(arch, c->arch) == 0 &&
		    (!c->variant || !variant || strcmp(variant, c->variant) == 0)) {
			if (mt && (strcmp(mt, FETCH_MT_OCI_INDEX) == 0 ||
				   strcmp(mt, FETCH_MT_DOCKER_LIST) == 0))
				return strata_err(ENOTSUP, "%s: nested indexes are not supported", refstr);
			rc = descriptor(refstr, "index entry", e, digest, size);
			if (rc < 0)
				return rc;
			*platform = platform_string(os, arch, variant);
			return *platform ? 0 : -ENOMEM;
		}
		if (strcmp(os, "unknown") == 0) /* attestation manifests */
			continue;
		snprintf(entry, sizeof(entry), "%s/%s%s%s", os, arch, variant ? "/" : "",
			 variant ? variant : "");
		if (list_has(has, entry))
			continue;
		if (hlen + strlen(entry) + 8 >= sizeof(has)) {
			if (!truncated)
				hlen += (size_t)snprintf(has + hlen, sizeof(has) - hlen, ", ...");
			truncated = 1;
			continue;
		}
		hlen += (size_t)snprintf(has + hlen, sizeof(has) - hlen, "%s%s", hlen ? ", " : "", entry);
	}
	return strata_err(ENOENT, "%s: no %s/%s%s%s image in index (has: %s)", refstr, c->os, c->arch,
			  c->variant ? "/" : "", c->variant ? c->variant : "",
			  hlen ? has : "no platform entries");
}

/* Fills the config descriptor and the layer list from an image manifest. */
static int parse_manifest(const char *refstr, json_t *root, struct fetch_image *img,
			  uint64_t *config_size)
{
	char digest[UTIL_DIGEST_STR_LEN];
	json_t *layers = json_object_get(root, "layers");
	json_t *e;
	size_t i;
	int rc;

	rc = descriptor(refstr, "manifest config", json_object_get(root, "config"), digest, config_size);
	if (rc < 0)
		return rc;
	img->config_digest = strdup(digest);
	if (!img->config_digest)
		return -ENOMEM;
	if (!json_is_array(layers))
		return strata_err(EBADMSG, "%s: manifest has no layers array", refstr);
	img->nlayers = json_array_size(layers);
	if (img->nlayers > 0) {
		img->layers = calloc(img->nlayers, sizeof(*img->layers));
		if (!img->layers) {
			img->nlayers = 0;
			return -ENOMEM;
		}
	}
	json_array_foreach(layers, i, e) {
		struct fetch_layer *l = &img->layers[i];
		const char *mt = json_string_value(json_object_get(e, "mediaType"));
		char what[32];

		snprintf(what, sizeof(what), "layer %zu", i);
		rc = descriptor(refstr, what, e, digest, &l->size);
		if (rc < 0)
			return rc;
		if (!mt)
			return strata_err(EBADMSG, "%s: layer %zu has no mediaType", refstr, i);
		l->digest = strdup(digest);
		l->media_type = strdup(mt);
		if (!l->digest || !l->media_type)
			return -ENOMEM;
	}
	return 0;
}

/* Points r at blob `digest` of ref's repository. *url and *what are malloc'd (the caller frees
 * them, also on failure, where they are NULL). Returns 0 or -ENOMEM. */
static int blob_req(struct req *r, struct fetch_client *c, const struct fetch_ref *ref,
		    const char *digest, char **url, char **what)
{
	*url = NULL;
	*what = NULL;
	if (asprintf(url, "%s://%s/v2/%s/blobs/%s", scheme(ref), fetch_ref_api_host(ref), ref->path,
		     digest) < 0) {
		*url = NULL;
		return -ENOMEM;
	}
	if (asprintf(what, "%s/%s@%s", ref->domain, ref->path, digest) < 0) {
		*what = NULL;
		return -ENOMEM;
	}
	r->c = c;
	r->url = *url;
	r->what = *what;
	r->host = fetch_ref_api_host(ref);
	return 0;
}

/* GETs the config blob into img, checking its digest and size. */
static int get_config(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
		      struct fetch_image *img, uint64_t size)
{
	uint8_t md[UTIL_SHA256_LEN];
	char got[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = blob_req(&r, c, ref, img->config_digest, &url, &what);
	if (rc < 0)
		goto out;
	r.kind = SINK_MEM;
	r.limit = CONFIG_MAX;
	r.limit_what = "config";
	rc = request(&r);
	if (rc < 0)
		goto out;
	util_sha256(r.mem ? r.mem : "", r.len, md);
	util_digest_format(md, got);
	if (strcmp(got, img->config_digest) != 0) {
		rc = strata_err(EBADMSG, "%s: config blob %s digest mismatch (got %s)", refstr,
				img->config_digest, got);
		goto out;
	}
	if (r.len != size) {
		rc = strata_err(EBADMSG, "%s: config blob %s is %zu bytes, its descriptor says %llu",
				refstr, img->config_digest, r.len, (unsigned long long)size);
		goto out;
	}
	if (!r.mem) {
		rc = strata_err(EBADMSG, "%s: empty config", what);
		goto out;
	}
	img->config = r.mem;
	img->config_len = r.len;
	r.mem = NULL;
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* Reads rootfs.diff_ids (when there is one per layer) and, when no index gave it, the platform. */
static int parse_config(const struct fetch_client *c, const char *refstr, struct fetch_image *img)
{
	json_t *root = NULL, *diff_ids, *e;
	size_t i;
	int rc;

	rc = parse_json(refstr, "config", img->config, img->config_len, &root);
	if (rc < 0)
		return rc;
	diff_ids = json_object_get(json_object_get(root, "rootfs"), "diff_ids");
	if (json_is_array(diff_ids) && json_array_size(diff_ids) == img->nlayers) {
		json_array_foreach(diff_ids, i, e) {
			const char *s = json_string_value(e);

			if (!s)
				continue;
			img->layers[i].diff_id = strdup(s);
			if (!img->layers[i].diff_id) {
				rc = -ENOMEM;
				goto out;
			}
		}
	} else {
		strata_debug("%s: config has %zu diff_ids for %zu layers; ignoring them", refstr,
			     json_array_size(diff_ids), img->nlayers);
	}
	if (!img->platform) {
		const char *os = json_string_value(json_object_get(root, "os"));
		const char *arch = json_string_value(json_object_get(root, "architecture"));
		const char *variant = json_string_value(json_object_get(root, "variant"));

		img->platform = platform_string(os ? os : "unknown", arch ? arch : "unknown", variant);
		if (!img->platform) {
			rc = -ENOMEM;
			goto out;
		}
		if (!os || !arch || strcmp(os, c->os) != 0 || strcmp(arch, c->arch) != 0)
			strata_log(LOG_WARNING, "%s: image is for %s, this host wants %s/%s", refstr,
				   img->platform, c->os, c->arch);
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

void fetch_image_free(struct fetch_image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->nlayers; i++) {
		free(img->layers[i].digest);
		free(img->layers[i].media_type);
		free(img->layers[i].diff_id);
	}
	free(img->layers);
	free(img->manifest_digest);
	free(img->index_digest);
	free(img->media_type);
	free(img->config_digest);
	free(img->platform);
	free(img->manifest);
	free(img->config);
	free(img);
}

int fetch_resolve(struct fetch_client *c, const struct fetch_ref *ref, struct fetch_image **out)
{
	struct fetch_image *img = NULL;
	struct doc d = { 0 };
	json_t *root = NULL;
	char *refstr = NULL;
	char entry_digest[UTIL_DIGEST_STR_LEN];
	uint64_t entry_size = 0, config_size = 0;
	const char *mt;
	enum doc_kind kind;
	int rc;

	*out = NULL;
	img = calloc(1, sizeof(*img));
	refstr = fetch_ref_string(ref);
	if (!img || !refstr) {
		rc = -ENOMEM;
		goto out;
	}
	/* a pinned digest wins over the tag, as in containerd */
	rc = get_manifest(c, ref, refstr, ref->digest ? ref->digest : ref->tag, ref->digest, 0, &d);
	if (rc < 0)
		goto out;
	rc = parse_json(refstr, "manifest", d.data, d.len, &root);
	if (rc < 0)
		goto out;
	rc = classify(refstr, root, d.content_type, &mt, &kind);
	if (rc < 0)
		goto out;

	if (kind == DOC_INDEX) {
		img->index_digest = strdup(d.digest);
		if (!img->index_digest) {
			rc = -ENOMEM;
			goto out;
		}
		rc = pick_platform(c, refstr, root, entry_digest, &entry_size, &img->platform);
		if (rc < 0)
			goto out;
		json_decref(root);
		root = NULL;
		doc_clear(&d);
		rc = get_manifest(c, ref, refstr, entry_digest, entry_digest, entry_size, &d);
		if (rc < 0)
			goto out;
		rc = parse_json(refstr, "manifest", d.data, d.len, &root);
		if (rc < 0)
			goto out;
		rc = classify(refstr, root, d.content_type, &mt, &kind);
		if (rc < 0)
			goto out;
		if (kind != DOC_MANIFEST) {
			rc = strata_err(ENOTSUP, "%s: nested indexes are not supported", refstr);
			goto out;
		}
	}

	img->media_type = strdup(mt);
	img->manifest_digest = strdup(d.digest);
	if (!img->media_type || !img->manifest_digest) {
		rc = -ENOMEM;
		goto out;
	}
	rc = parse_manifest(refstr, root, img, &config_size);
	if (rc < 0)
		goto out;
	img->manifest = d.data;
	img->manifest_len = d.len;
	d.data = NULL;
	rc = get_config(c, ref, refstr, img, config_size);
	if (rc < 0)
		goto out;
	rc = parse_config(c, refstr, img);
	if (rc < 0)
		goto out;
	*out = img;
	img = NULL;
out:
	json_decref(root);
	doc_clear(&d);
	fetch_image_free(img);
	free(refstr);
	return rc;
}

/* --- blobs --- */

int fetch_blob_to_fd(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		     uint64_t expected_size, int fd, fetch_progress_fn progress, void *pctx)
{
	uint8_t md[UTIL_SHA256_LEN];
	char want[UTIL_DIGEST_STR_LEN], got[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = util_digest_parse(digest, md);
	if (rc < 0)
		return rc;
	util_digest_format(md, want);
	rc = blob_req(&r, c, ref, want, &url, &what);
	if (rc < 0)
		goto out;
	r.kind = SINK_FD;
	r.fd = fd;
	r.fd_start = lseek(fd, 0, SEEK_CUR); /* -1 for a pipe: then a retry cannot rewind */
	r.expected = expected_size;
	r.blob_digest = want;
	r.progress = progress;
	r.pctx = pctx;
	r.sha = util_sha256_new();
	if (!r.sha) {
		rc = -ENOMEM;
		goto out;
	}
	rc = request(&r);
	if (rc < 0)
		goto out;
	util_sha256_final(r.sha, md);
	util_digest_format(md, got);
	if (expected_size > 0 && r.got != expected_size) {
		rc = strata_err(EBADMSG, "blob %s is %llu bytes, its descriptor says %llu", want,
				(unsigned long long)r.got, (unsigned long long)expected_size);
		goto out;
	}
	if (strcmp(got, want) != 0) {
		rc = strata_err(EBADMSG, "blob %s digest mismatch (got %s)", want, got);
		goto out;
	}
	rc = 0;
out:
	util_sha256_free(r.sha);
	free(r.errbody);
	free(url);
	free(what);
	return rc;
}

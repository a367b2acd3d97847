/* SPDX-License-Identifier: Apache-2.0 */
/* OCI distribution client over libcurl: resolves manifests and indexes, downloads verified blobs and
 * blob byte ranges, and pushes blobs and manifests. */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "auth.h"
#include "hosts.h"
#include "util/log.h"
#include "util/mem.h"
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
#define RETRY_AFTER_LIMIT_S 86400L /* a host's "not before" is kept at most this far ahead */
#define DEFAULT_PER_HOST 8
#define MAX_THROTTLED 8 /* 429 answers one request waits out, beyond its max_attempts */
#define DEFAULT_BREAKER_FAILURES 5
#define DEFAULT_BREAKER_COOLDOWN_MS 10000L
#define BREAKER_COOLDOWN_MAX_MS 120000L
#define MAX_REDIRS 10L
#define BLOB_BUFFER_SIZE (256L << 10)
/* Idle easy handles kept per client: each keeps its own connection cache, so reusing one reuses its
 * keep-alive connections (libcurl does not support sharing a connection cache across threads). */
#define POOL_MAX 8

#define ACCEPT_MANIFESTS                                                                          \
	FETCH_MT_OCI_INDEX ", " FETCH_MT_OCI_MANIFEST ", " FETCH_MT_DOCKER_LIST ", "              \
	FETCH_MT_DOCKER_MANIFEST
#define SCHEMA1_PREFIX "application/vnd.docker.distribution.manifest.v1+"

/* One host of a registry's list with what its requests need, read once: its `ca` files
 * concatenated (PEM), or the error reading them. */
struct host_cfg {
	const struct fetch_host *host; /* borrowed from the owning reg_hosts' list */
	char *ca_pem;                  /* NULL: no ca files (or ca_err) */
	size_t ca_len;
	int ca_err;                    /* negative errno when a ca file could not be read */
	char ca_errmsg[256];
};

/* The credentials for one registry host (the reference's domain for its server, a mirror's own host
 * for a mirror), looked up once, and the bearer tokens obtained with them (one token cache per set of
 * credentials). Kept until the client is freed; immutable once listed. */
struct reg_auth {
	char *key;
	int have_creds; /* 0: anonymous (no credentials, or they could not be read) */
	struct fetch_creds creds;
	struct fetch_tokens *tokens;
	struct reg_auth *next;
};

/* The last challenge a host sent for a repository (pull or push), so that later requests send a
 * token up front instead of collecting a 401 first. */
struct auth_memo {
	char *host;
	char *path;
	int push;
	struct fetch_challenge ch; /* with the scope that was asked for */
	struct auth_memo *next;
};

/* What the client knows about one host (by "host[:port]"), shared by every thread: the Retry-After
 * it asked for, its in-flight requests (a counting semaphore), its circuit breaker and counters.
 * Listed on first use and kept until the client is freed. */
struct host_state {
	char *host;              /* immutable */
	int inflight;            /* protected by fetch_client.hs_lock */
	int64_t not_before_ms;   /* CLOCK_MONOTONIC; no request before it; protected by hs_lock */
	unsigned fails;          /* consecutive failures; protected by hs_lock */
	int64_t open_until_ms;   /* breaker: 0 closed, else open until then, half-open after it;
				  * protected by hs_lock */
	long cooldown_ms;        /* the current open period; protected by hs_lock */
	int probing;             /* a half-open probe is in flight; protected by hs_lock */
	_Atomic uint64_t n_requests, n_bytes, n_retries, n_429, n_fallbacks; /* relaxed */
	struct host_state *next; /* immutable once listed */
};

/* The host list of one registry domain, loaded on first use and kept until the client is freed. */
struct reg_hosts {
	char *domain;
	struct fetch_hosts *hosts;
	struct host_cfg *cfg; /* fetch_hosts_count(hosts) entries, in order */
	struct reg_hosts *next;
};

struct fetch_client {
	char *os;
	char *arch;
	char *variant; /* NULL: any */
	long connect_timeout_ms;
	long low_speed_s;
	int max_attempts;
	char *hosts_dir; /* NULL: built-in defaults only */
	int strict_cache;
	pthread_mutex_t hosts_lock;
	struct reg_hosts *reg; /* protected by hosts_lock; entries are immutable once listed */
	pthread_mutex_t auth_lock;
	struct reg_auth *auth;  /* protected by auth_lock; entries are immutable once listed */
	struct auth_memo *memo; /* protected by auth_lock */
	CURLSH *share; /* DNS and TLS session caches, locked through share_locks */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t pool_lock;
	CURL *pool[POOL_MAX]; /* idle easy handles; protected by pool_lock */
	size_t npool;         /* protected by pool_lock */
	/* fetch_client_counters(); updated only by count_attempt(), relaxed (they are statistics) */
	_Atomic uint64_t n_requests;
	_Atomic uint64_t n_bytes;
	_Atomic uint64_t n_retries;
	_Atomic uint64_t n_range;
	_Atomic uint64_t n_fallbacks;
	long read_timeout_ms;
	long retry_after_max_ms;
	int max_per_host;
	unsigned breaker_failures;
	long breaker_cooldown_ms;
	pthread_mutex_t hs_lock;
	pthread_cond_t hs_cond;   /* signalled when a slot frees up; CLOCK_MONOTONIC */
	struct host_state *hosts; /* protected by hs_lock (list links); see struct host_state */
};

enum method { M_GET, M_HEAD, M_POST, M_PUT };

/* Where a 2xx response body goes: nowhere, memory, a file, or a caller's buffer (a byte range). */
enum sink_kind { SINK_NONE, SINK_MEM, SINK_FD, SINK_BUF };

/* One HTTP request with its retries: what to send, where the 2xx body goes, and what came back. */
struct req {
	struct fetch_client *c;
	const char *url;
	const char *shown_url; /* printed instead of url when the url may carry secrets; NULL: url */
	const char *what; /* names the object in error messages: "<ref>" or "<repo>@<digest>" */
	const char *host; /* for "cannot reach <host>" */
	const char *accept; /* Accept header value, or NULL */

	/* GET follows redirects; the other methods do not, and a 3xx is then the final answer */
	enum method method;
	/* M_POST, M_PUT: the request body (borrowed) and its Content-Type (NULL: none sent) */
	const char *src;
	size_t src_len;
	const char *src_type;
	int want_location; /* keep the Location header in location */

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
	/* SINK_BUF: bytes [range_off, range_off + range_len) of the blob into buf, sent with a Range
	 * header; a 206 body starts at range_off, any other 2xx body at 0 (the prefix is skipped) */
	char *buf;
	uint64_t range_off;
	size_t range_len;
	size_t have;       /* bytes of buf filled */
	uint64_t body_pos; /* bytes of the current 2xx body seen */
	int range_done;    /* have == range_len and the callback stopped the transfer on purpose */

	/* the current response; reset at each status line (redirects, retries) */
	long status;
	char content_type[256];
	char docker_digest[128];
	char *location; /* malloc'd, when want_location; the caller frees it */
	int64_t content_length; /* -1: not sent */
	int has_range;          /* a Content-Range "bytes first-last/total" was parsed */
	uint64_t cr_first, cr_last;
	int64_t cr_total; /* -1: "*" */
	char *errbody; /* a non-2xx body, for the registry's error code */
	size_t errlen;
	uint64_t rx; /* body bytes of this attempt, all responses */

	int sink_err; /* negative errno, strata_err set, when a callback stopped the transfer */
	int transport_err; /* the last attempt failed below HTTP (connection, TLS, cut transfer) */
	char retry_after[64]; /* the current response's Retry-After value, or "" */
	struct host_state *hs; /* the state of r->host, set by request() */
	int last_endpoint;     /* no later hosts.toml endpoint could take r: an open breaker must
				  not fail it fast (set by request_hosts()) */
	int64_t deadline_ms;   /* CLOCK_MONOTONIC end of the whole call, or 0 */
	long timeout_ms;       /* what the deadline was set from, for messages */
	char errbuf[CURL_ERROR_SIZE];

	/* Set by api_req(): the request goes to the eligible hosts of ref's registry in turn (see
	 * request_hosts()), each with its own URL kept in *urlp (the caller frees it). */
	const struct fetch_ref *ref;
	const char *api_kind;
	const char *api_x;
	char **urlp;
	unsigned need_cap; /* FETCH_CAP_* a host needs; 0: derived from the method and the reference */
	const char *query_key, *query_value; /* one more query parameter, or NULL */
	const struct host_cfg *hc; /* the host being tried (TLS, headers), or NULL */
	/* Authentication (see request_auth()): the repository requests are authorized for (ref, or
	 * set by the caller for an upload location), the last WWW-Authenticate of the final response
	 * (malloc'd), and what the current attempt sends: a bearer token (malloc'd, a secret) or
	 * Basic credentials (borrowed from the client). */
	const struct fetch_ref *auth_ref;
	char *www_auth;
	char *bearer;
	const struct fetch_creds *basic;
	/* Called after a host answered 2xx; -EBADMSG makes request_hosts() try the next host. */
	int (*check)(struct req *r);
	void *check_ctx;
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

static void reg_hosts_free(struct reg_hosts *rh)
{
	if (!rh)
		return;
	for (size_t i = 0; rh->cfg && i < fetch_hosts_count(rh->hosts); i++)
		free(rh->cfg[i].ca_pem);
	free(rh->cfg);
	fetch_hosts_free(rh->hosts);
	free(rh->domain);
	free(rh);
}

static void reg_auth_free(struct reg_auth *ra)
{
	if (!ra)
		return;
	fetch_creds_clear(&ra->creds);
	fetch_tokens_free(ra->tokens);
	free(ra->key);
	free(ra);
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
	while (c->reg) {
		struct reg_hosts *rh = c->reg;

		c->reg = rh->next;
		reg_hosts_free(rh);
	}
	pthread_mutex_destroy(&c->hosts_lock);
	while (c->auth) {
		struct reg_auth *ra = c->auth;

		c->auth = ra->next;
		reg_auth_free(ra);
	}
	while (c->memo) {
		struct auth_memo *m = c->memo;

		c->memo = m->next;
		fetch_challenge_clear(&m->ch);
		free(m->host);
		free(m->path);
		free(m);
	}
	pthread_mutex_destroy(&c->auth_lock);
	while (c->hosts) {
		struct host_state *hs = c->hosts;

		c->hosts = hs->next;
		free(hs->host);
		free(hs);
	}
	pthread_cond_destroy(&c->hs_cond);
	pthread_mutex_destroy(&c->hs_lock);
	free(c->hosts_dir);
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
	pthread_mutex_init(&c->hosts_lock, NULL);
	pthread_mutex_init(&c->auth_lock, NULL);
	pthread_mutex_init(&c->hs_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&c->hs_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	c->read_timeout_ms = opts->read_timeout_ms > 0 ? opts->read_timeout_ms : 0;
	c->retry_after_max_ms = 1000L * (opts->retry_after_max_s > 0 ? opts->retry_after_max_s
								    : RETRY_AFTER_MAX_S);
	c->max_per_host = opts->max_per_host > 0 ? opts->max_per_host : DEFAULT_PER_HOST;
	c->breaker_failures = opts->breaker_failures > 0 ? (unsigned)opts->breaker_failures
							 : DEFAULT_BREAKER_FAILURES;
	c->breaker_cooldown_ms = opts->breaker_cooldown_ms > 0 ? opts->breaker_cooldown_ms
							       : DEFAULT_BREAKER_COOLDOWN_MS;
	c->strict_cache = opts->strict_cache;
	c->hosts_dir = opts->hosts_dir && *opts->hosts_dir ? strdup(opts->hosts_dir) : NULL;
	c->os = strdup(opts->platform_os ? opts->platform_os : "linux");
	c->arch = strdup(opts->platform_arch ? opts->platform_arch : fetch_host_arch());
	c->variant = opts->platform_variant ? strdup(opts->platform_variant) : NULL;
	c->connect_timeout_ms =
		opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	c->low_speed_s = opts->low_speed_timeout_s > 0 ? opts->low_speed_timeout_s : DEFAULT_LOW_SPEED_S;
	c->max_attempts = opts->max_attempts > 0 ? opts->max_attempts : DEFAULT_ATTEMPTS;
	if (!c->os || !c->arch || (opts->platform_variant && !c->variant) ||
	    (opts->hosts_dir && *opts->hosts_dir && !c->hosts_dir)) {
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

/* The URL for messages: an upload location's query may carry a signature or state. */
static const char *req_url(const struct req *r)
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

/* Parses a decimal number that ends at *end (or the end of s). Returns 0, or -1 when s is not one. */
static int parse_u64(const char *s, char **end, uint64_t *out)
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
	if (parse_u64(v + 6, &p, &first) != 0 || *p != '-' || parse_u64(p + 1, &p, &last) != 0 ||
	    *p != '/' || last < first)
		return;
	if (strcmp(p + 1, "*") == 0)
		r->cr_total = -1;
	else if (parse_u64(p + 1, &p, &total) == 0 && *p == '\0' && total <= INT64_MAX && last < total)
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
		if (parse_u64(tmp, &end, &cl) == 0 && *end == '\0' && cl <= INT64_MAX)
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
		r->sink_err = strata_err(EBADMSG, "%s: %s is larger than %zu MiB", r->what, r->limit_what,
					 r->limit >> 20);
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

/* The last byte offset of the requested range (range_len > 0, checked by fetch_blob_range). */
static uint64_t range_last(const struct req *r)
{
	return r->range_off + r->range_len - 1;
}

/* Whether a 206 answers the Range sent: it starts at range_off and ends at its last byte, or earlier
 * where the blob ends. Without a Content-Range header it is taken on trust. */
static int range_matches(const struct req *r)
{
	if (!r->has_range)
		return 1;
	if (r->cr_first != r->range_off)
		return 0;
	return r->cr_last == range_last(r) ||
	       (r->cr_last < range_last(r) && r->cr_total >= 0 && r->cr_last + 1 == (uint64_t)r->cr_total);
}

/*
 * Copies the requested range out of a 2xx body. A 206 body starts at range_off; any other 2xx body
 * is the whole blob, whose first range_off bytes are skipped. Once range_len bytes are in, returns a
 * short count to stop the transfer (range_done tells perform_once() that this is not a failure),
 * unless the body ends right there anyway, which keeps the connection reusable.
 */
static size_t sink_buf(struct req *r, const char *data, size_t n)
{
	uint64_t start = r->status == 206 ? r->range_off : 0; /* blob offset of the body's first byte */
	uint64_t pos = start + r->body_pos;                     /* blob offset of data[0] */
	uint64_t want = r->range_off + r->have;                 /* blob offset of the next byte needed */

	if (r->body_pos == 0 && r->status == 206) {
		if (strcasecmp(r->content_type, "multipart/byteranges") == 0) {
			r->sink_err = strata_err(EIO, "%s: server returned several ranges for request "
						 "%llu-%llu", r->what, (unsigned long long)r->range_off,
						 (unsigned long long)range_last(r));
			return 0;
		}
		if (!range_matches(r)) {
			r->sink_err = strata_err(EIO, "%s: server returned range %llu-%llu for request "
						 "%llu-%llu", r->what, (unsigned long long)r->cr_first,
						 (unsigned long long)r->cr_last,
						 (unsigned long long)r->range_off,
						 (unsigned long long)range_last(r));
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
		memcpy(r->buf + r->have, data + skip, take);
		r->have += take;
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
	r->have = 0;
	r->range_done = 0;
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

/* Appends one formatted header line to *list. Returns 0 or -ENOMEM (*list is unchanged then). */
__attribute__((format(printf, 2, 3)))
static int add_header(struct curl_slist **list, const char *fmt, ...)
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
	if (rc == 0 && r->kind == SINK_BUF)
		rc = add_header(&h, "Range: bytes=%llu-%llu", (unsigned long long)r->range_off,
				(unsigned long long)range_last(r));
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

static int set_options(struct req *r, CURL *h, struct curl_slist *headers)
{
	struct fetch_client *c = r->c;
	CURLcode cc = CURLE_OK;

	/* string options are copied and can fail; the others cannot for a known option */
	if (curl_easy_setopt(h, CURLOPT_URL, r->url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERAGENT, "strata/" STRATA_VERSION) != CURLE_OK)
		return strata_err(ENOMEM, "%s: cannot set up the request", req_url(r));
#if LIBCURL_VERSION_NUM >= 0x075500
	cc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (cc == CURLE_OK)
		cc = curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	if (cc != CURLE_OK)
		return strata_err(EIO, "%s: %s", req_url(r), curl_easy_strerror(cc));
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
			return strata_err(ENOMEM, "%s: cannot set up the request", req_url(r));
		break;
	}
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->low_speed_s);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, MAX_REDIRS);
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	/* credentials through curl's auth options, never as a custom header: curl sends these only
	 * to the host of the URL and drops them on a redirect elsewhere (UNRESTRICTED_AUTH 0) */
	if (r->bearer) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		if (curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, r->bearer) != CURLE_OK)
			return strata_err(ENOMEM, "%s: cannot set up the request", req_url(r));
	} else if (r->basic) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		if (curl_easy_setopt(h, CURLOPT_USERNAME, r->basic->username ? r->basic->username : "") !=
			    CURLE_OK ||
		    curl_easy_setopt(h, CURLOPT_PASSWORD, r->basic->secret) != CURLE_OK)
			return strata_err(ENOMEM, "%s: cannot set up the request", req_url(r));
	}
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	if (r->kind == SINK_FD || (r->kind == SINK_BUF && r->range_len >= (size_t)BLOB_BUFFER_SIZE))
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, BLOB_BUFFER_SIZE);
	if (r->hc) {
		const struct fetch_host *fh = r->hc->host;

		if (r->hc->ca_pem) {
			struct curl_blob blob = { .data = r->hc->ca_pem, .len = r->hc->ca_len,
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
			return strata_err(EIO, "%s: %s", req_url(r), curl_easy_strerror(cc));
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
		return strata_err(EIO, "%s: %s", req_url(r), msg);
	default:
		return strata_err(EIO, "%s: %s", req_url(r), msg);
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

/* A Retry-After value in seconds from now: delta-seconds or an HTTP-date (RFC 9110 10.2.3), at most
 * RETRY_AFTER_LIMIT_S; 0 when absent, malformed or in the past. */
static long parse_retry_after(const char *v)
{
	uint64_t secs;
	char *end;
	time_t t;

	if (!v[0])
		return 0;
	if (parse_u64(v, &end, &secs) == 0 && *end == '\0')
		return secs > (uint64_t)RETRY_AFTER_LIMIT_S ? RETRY_AFTER_LIMIT_S : (long)secs;
	t = curl_getdate(v, NULL);
	if (t == (time_t)-1)
		return 0;
	t -= time(NULL);
	if (t <= 0)
		return 0;
	return t > RETRY_AFTER_LIMIT_S ? RETRY_AFTER_LIMIT_S : (long)t;
}

/* Converts a non-2xx final status to an errno; *retry for 429 and 5xx, with the server's delay. */
static int http_error(struct req *r, CURL *h, long status, int *retry, long *retry_after_s)
{
	char code[64], msg[160];

	(void)h;
	registry_error(r, code, sizeof(code), msg, sizeof(msg));
	if (status == 429 || status >= 500) {
		*retry = 1;
		*retry_after_s = parse_retry_after(r->retry_after);
		if (code[0])
			return strata_err(EIO, "%s: HTTP %ld (%s: %s)", req_url(r), status, code, msg);
		return strata_err(EIO, "%s: HTTP %ld", req_url(r), status);
	}
	if (status == 401 || status == 403) /* request_auth() answers a 401 challenge */
		return strata_err(EACCES, "%s: access denied (HTTP %ld from %s)", r->what, status,
				  r->host);
	if (status == 416 && r->kind == SINK_BUF)
		return strata_err(EPIPE, "%s: blob is shorter than the requested range (bytes %llu-%llu)",
				  r->what, (unsigned long long)r->range_off,
				  (unsigned long long)range_last(r));
	if (strcmp(code, "NAME_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: repository not found (NAME_UNKNOWN)", r->what);
	if (strcmp(code, "MANIFEST_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: manifest unknown (MANIFEST_UNKNOWN)", r->what);
	if (strcmp(code, "BLOB_UNKNOWN") == 0)
		return strata_err(ENOENT, "%s: blob unknown (BLOB_UNKNOWN)", r->what);
	if (status == 404)
		return strata_err(ENOENT, "%s: HTTP 404", req_url(r));
	if (code[0])
		return strata_err(EIO, "%s: HTTP %ld (%s: %s)", req_url(r), status, code, msg);
	return strata_err(EIO, "%s: HTTP %ld", req_url(r), status);
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
	if (r->kind == SINK_BUF)
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

	if (r->have == r->range_len)
		return 0;
	if (r->status == 206)
		proven = r->has_range && r->cr_total >= 0 && r->cr_last + 1 == (uint64_t)r->cr_total &&
			 r->body_pos == r->cr_last - r->cr_first + 1;
	else
		proven = r->content_length >= 0 && r->body_pos == (uint64_t)r->content_length;
	*retry = !proven;
	return strata_err(EPIPE, "%s: blob is shorter than the requested range (bytes %llu-%llu)%s",
			  r->what, (unsigned long long)r->range_off, (unsigned long long)range_last(r),
			  proven ? "" : " or the response was cut short");
}

/* One attempt. Returns 0 for a 2xx response (or a 3xx where redirects are not followed), else
 * negative errno with strata_err set; *retry when another attempt may succeed. */
static int perform_once(struct req *r, CURL *h, int attempt, int *retry, long *retry_after_s)
{
	CURLcode cc;
	long status = 0;

	*retry = 0;
	*retry_after_s = 0;
	r->errbuf[0] = '\0';
	r->sink_err = 0;
	r->transport_err = 0;
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
		return http_error(r, h, r->status, retry, retry_after_s);
	if (cc != CURLE_OK)
		return curl_error(r, cc, retry);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	r->status = status;
	if (is_2xx(status))
		return r->kind == SINK_BUF ? range_finish(r, retry) : 0;
	if (r->method != M_GET && status >= 300 && status < 400)
		return 0;
	return http_error(r, h, status, retry, retry_after_s);
}

/* A random delay in [0, cap] ms. */
static long jitter_ms(long cap)
{
	static _Thread_local unsigned int seed;

	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = (unsigned int)(ts.tv_nsec ^ ts.tv_sec ^ (long)(uintptr_t)&seed) | 1u;
	}
	return (long)((double)rand_r(&seed) / RAND_MAX * (double)cap);
}

/* Full-jitter backoff: a random delay in [0, 200 ms * 2^attempt]. */
static long backoff_ms(int attempt)
{
	return jitter_ms(BACKOFF_BASE_MS << (attempt < BACKOFF_MAX_SHIFT ? attempt : BACKOFF_MAX_SHIFT));
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* --- per-host state: Retry-After, concurrency, circuit breaker --- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The state of host, listed on first use. Returns it (owned by the client), or NULL without memory. */
static struct host_state *host_state_get(struct fetch_client *c, const char *host)
{
	struct host_state *hs;

	pthread_mutex_lock(&c->hs_lock);
	for (hs = c->hosts; hs; hs = hs->next)
		if (strcmp(hs->host, host) == 0)
			goto out;
	hs = calloc(1, sizeof(*hs));
	if (hs && !(hs->host = strdup(host))) {
		free(hs);
		hs = NULL;
	}
	if (hs) {
		struct host_state **tail = &c->hosts;

		while (*tail)
			tail = &(*tail)->next;
		*tail = hs;
	}
out:
	pthread_mutex_unlock(&c->hs_lock);
	return hs;
}

/* "cannot try" error for an open circuit. Caller holds hs_lock. */
static int breaker_err(const struct host_state *hs, int64_t now)
{
	int64_t left = hs->open_until_ms > now ? hs->open_until_ms - now : 0;

	return strata_err(EHOSTUNREACH, "%s: circuit open after %u failures, retrying after %llds",
			  hs->host, hs->fails, (long long)((left + 999) / 1000));
}

/* The error for a call whose deadline passed, with the failure that used up the time (rc, may be 0). */
static int deadline_err(const struct req *r, int rc)
{
	char last[512] = "";

	if (rc < 0)
		snprintf(last, sizeof(last), " (last error: %s)", strata_errmsg(rc));
	return strata_err(ETIMEDOUT, "%s: read timeout of %lds expired%s", r->what,
			  (r->timeout_ms + 999) / 1000, last);
}

/*
 * Admits one attempt of r to its host: fails fast while the host's circuit is open (during the
 * half-open period one request, *probe set, goes through) unless the host is the last endpoint
 * that could take r (then the request goes through, bounded by its deadline, so the first
 * request after the registry recovered succeeds and closes the circuit), then waits for a free slot of the host's
 * semaphore and for the host's Retry-After to pass. A wait longer than the client's Retry-After
 * bound, or past r's deadline, fails instead (the host is not asked early). Returns 0 holding a
 * slot (give it back with slot_release()), or negative errno with strata_err set.
 */
static int slot_acquire(struct req *r, int *probe, int prev_rc)
{
	struct fetch_client *c = r->c;
	struct host_state *hs = r->hs;
	int rc = 0;

	*probe = 0;
	pthread_mutex_lock(&c->hs_lock);
	for (;;) {
		int64_t now = now_ms(), until;
		struct timespec ts;

		if (hs->open_until_ms && !r->last_endpoint) {
			if (now < hs->open_until_ms || hs->probing) {
				rc = breaker_err(hs, now);
				break;
			}
		}
		if (r->deadline_ms && now >= r->deadline_ms) {
			rc = deadline_err(r, prev_rc);
			break;
		}
		if (hs->not_before_ms > now) {
			if (hs->not_before_ms - now > c->retry_after_max_ms * 5 / 4) { /* + jitter */
				rc = strata_err(EAGAIN, "%s: rate limited, retry after %llds (more than "
						"the %lds wait bound)", hs->host,
						(long long)((hs->not_before_ms - now + 999) / 1000),
						c->retry_after_max_ms / 1000);
				break;
			}
			if (r->deadline_ms && hs->not_before_ms > r->deadline_ms) {
				rc = deadline_err(r, prev_rc);
				break;
			}
			until = hs->not_before_ms;
		} else if (hs->inflight >= c->max_per_host) {
			until = now + 1000;
			if (r->deadline_ms && until > r->deadline_ms)
				until = r->deadline_ms;
		} else {
			hs->inflight++;
			if (hs->open_until_ms && !hs->probing) {
				hs->probing = 1;
				*probe = 1;
			}
			break;
		}
		ts.tv_sec = until / 1000;
		ts.tv_nsec = (until % 1000) * 1000000L;
		pthread_cond_timedwait(&c->hs_cond, &c->hs_lock, &ts);
	}
	pthread_mutex_unlock(&c->hs_lock);
	return rc;
}

enum outcome { O_OK, O_FAIL, O_NEUTRAL };

/* Gives back the slot of slot_acquire() and feeds the attempt's outcome to the host's breaker:
 * O_OK (an HTTP answer that is not 429 or 5xx) closes it; O_FAIL (connection error, timeout, 5xx)
 * counts towards opening it, and a failed probe opens it again for twice as long; O_NEUTRAL (429,
 * local errors) only ends a probe. retry_after_s > 0 moves the host's "not before" time. */
static void slot_release(struct req *r, int probe, enum outcome o, long retry_after_s)
{
	struct fetch_client *c = r->c;
	struct host_state *hs = r->hs;
	int64_t now = now_ms();
	int opened = 0;

	pthread_mutex_lock(&c->hs_lock);
	assert(hs->inflight > 0);
	hs->inflight--;
	if (retry_after_s > 0) {
		/* never before Retry-After; a little after it, at random, so that the clients a
		 * host throttled at once do not all come back at once */
		int64_t nb = now + retry_after_s * 1000 + jitter_ms(retry_after_s * 250);

		if (nb > hs->not_before_ms)
			hs->not_before_ms = nb;
	}
	if (probe)
		hs->probing = 0;
	if (o == O_OK) {
		if (hs->open_until_ms)
			strata_log(LOG_NOTICE, "%s: circuit closed (probe succeeded)", hs->host);
		hs->fails = 0;
		hs->open_until_ms = 0;
		hs->cooldown_ms = 0;
	} else if (o == O_FAIL) {
		hs->fails++;
		if (probe) {
			hs->cooldown_ms = hs->cooldown_ms * 2 > BREAKER_COOLDOWN_MAX_MS
						  ? BREAKER_COOLDOWN_MAX_MS : hs->cooldown_ms * 2;
			hs->open_until_ms = now + hs->cooldown_ms;
			opened = 1;
		} else if (!hs->open_until_ms && hs->fails >= c->breaker_failures) {
			hs->cooldown_ms = c->breaker_cooldown_ms;
			hs->open_until_ms = now + hs->cooldown_ms;
			opened = 1;
		}
	}
	if (opened)
		strata_log(LOG_WARNING, "%s: circuit open after %u failures, retrying after %lds",
			   hs->host, hs->fails, (hs->cooldown_ms + 999) / 1000);
	pthread_cond_broadcast(&c->hs_cond);
	pthread_mutex_unlock(&c->hs_lock);
}

/* How an attempt's result counts for the breaker. */
static enum outcome attempt_outcome(const struct req *r, int rc)
{
	if (rc == 0)
		return O_OK;
	if (r->transport_err)
		return O_FAIL;
	if (r->status >= 500)
		return O_FAIL;
	if (r->status == 429 || r->status == 0)
		return O_NEUTRAL;
	return O_OK; /* 4xx, short range: the host answered */
}

/* Runs r to completion with retries, each attempt admitted by slot_acquire(). Returns 0 with the
 * body in the sink, or negative errno with strata_err set. r->mem and r->errbody stay owned by the
 * caller either way. */
static int request(struct req *r)
{
	struct curl_slist *headers = NULL;
	CURL *h;
	int rc, retry, probe = 0, throttled = 0;
	long retry_after_s, delay;

	r->hs = r->host ? host_state_get(r->c, r->host) : NULL;
	if (r->host && !r->hs)
		return -ENOMEM;
	h = handle_get(r->c);
	if (!h)
		return strata_err(ENOMEM, "%s: cannot create a curl handle", req_url(r));
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
				strata_debug("%s: cannot rewind the output to retry: %s", req_url(r),
					     strerror(-rrc));
				break; /* keep the transfer's error, it says more */
			}
		}
		if (r->hs) {
			int arc = slot_acquire(r, &probe, attempt > 0 ? rc : 0);

			if (arc < 0) {
				rc = arc;
				break;
			}
		}
		if (r->deadline_ms) {
			int64_t left = r->deadline_ms - now_ms();

			curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(left > 1 ? left : 1));
		}
		r->retry_after[0] = '\0';
		rc = perform_once(r, h, attempt, &retry, &retry_after_s);
		if (r->status == 429 && rc < 0)
			throttled++;
		if (r->hs) {
			if (r->status == 429)
				atomic_fetch_add_explicit(&r->hs->n_429, 1, memory_order_relaxed);
			slot_release(r, probe, attempt_outcome(r, rc), retry_after_s);
		}
		/* a 429 is the host pacing its clients, not a failure: it does not use up an attempt
		 * (up to MAX_THROTTLED of them) */
		if (rc == 0 || !retry || attempt + 1 - throttled >= r->c->max_attempts ||
		    throttled > MAX_THROTTLED)
			break;
		/* a Retry-After is waited for in slot_acquire(), for every request to the host */
		delay = retry_after_s > 0 && r->hs ? 0 : backoff_ms(attempt);
		if (retry_after_s > 0 && !r->hs)
			delay = retry_after_s * 1000 > r->c->retry_after_max_ms
					? r->c->retry_after_max_ms : retry_after_s * 1000;
		if (r->deadline_ms) {
			int64_t left = r->deadline_ms - now_ms();

			if (left <= 0) {
				rc = deadline_err(r, rc);
				break;
			}
			if (delay > left)
				delay = (long)left;
		}
		strata_debug("%s: attempt %d failed (%s); retrying in %ld ms", req_url(r), attempt + 1,
			     strata_errmsg(rc), delay);
		sleep_ms(delay);
	}
out:
	curl_slist_free_all(headers);
	handle_put(r->c, h);
	return rc;
}

static int url_add_query(char **url, const char *key, const char *value);

/* --- authentication: challenges, credentials, tokens --- */

/* Copies a challenge. Returns 0 or -ENOMEM (dst zeroed then). */
static int challenge_dup(struct fetch_challenge *dst, const struct fetch_challenge *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->scheme = strdup(src->scheme);
	dst->realm = src->realm ? strdup(src->realm) : NULL;
	dst->service = src->service ? strdup(src->service) : NULL;
	dst->scope = src->scope ? strdup(src->scope) : NULL;
	if (!dst->scheme || (src->realm && !dst->realm) || (src->service && !dst->service) ||
	    (src->scope && !dst->scope)) {
		fetch_challenge_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

/* Whether r writes to the repository (its token needs the push action). */
static int req_is_push(const struct req *r)
{
	return r->method == M_POST || r->method == M_PUT;
}

/* The credential key of the host r is on: the reference's domain for the registry's own server
 * (docker config keys name registries that way), the host itself for a mirror or an upload
 * location elsewhere. */
static const char *auth_key(const struct req *r)
{
	if (r->hc && r->hc->host->is_server && strcmp(r->host, r->hc->host->host) == 0)
		return r->auth_ref->domain;
	return r->host;
}

/* What is left of r's deadline in ms (at least 1), or 0 when r has none. */
static long req_left_ms(const struct req *r)
{
	int64_t left;

	if (!r->deadline_ms)
		return 0;
	left = r->deadline_ms - now_ms();
	return left > 1 ? (long)left : 1;
}

/* The credentials and token cache for key, looked up on first use (fetch_creds_lookup, outside the
 * client's lock: a credential helper may take seconds; a failure other than "none" is logged once,
 * without secrets, and means anonymous). limit_ms > 0 bounds a credential helper (a read's
 * deadline): a helper cut short by it is not remembered, so that a later request asks again.
 * Returns 0 with *out borrowed from the client, or -ENOMEM, or -ETIMEDOUT with strata_err set.
 * Thread-safe. */
static int reg_auth_get(struct fetch_client *c, const char *key, long limit_ms,
			const struct reg_auth **out)
{
	struct reg_auth *ra, *fresh;
	int rc;

	*out = NULL;
	pthread_mutex_lock(&c->auth_lock);
	for (ra = c->auth; ra; ra = ra->next)
		if (strcmp(ra->key, key) == 0)
			break;
	pthread_mutex_unlock(&c->auth_lock);
	if (ra) {
		*out = ra;
		return 0;
	}
	fresh = calloc(1, sizeof(*fresh));
	if (!fresh)
		return -ENOMEM;
	fresh->key = strdup(key);
	rc = fresh->key ? fetch_tokens_new(&fresh->tokens) : -ENOMEM;
	if (rc < 0) {
		reg_auth_free(fresh);
		return rc;
	}
	rc = fetch_creds_lookup_within(NULL, key, limit_ms, &fresh->creds);
	if (rc == 0) {
		fresh->have_creds = 1;
		strata_debug("%s: using credentials from the docker config", key);
	} else if (rc == -ENOMEM) {
		reg_auth_free(fresh);
		return rc;
	} else if (rc == -ETIMEDOUT && limit_ms > 0 && limit_ms < fetch_auth_helper_timeout_ms()) {
		reg_auth_free(fresh);
		return rc; /* cut short by the caller's deadline: ask again next time */
	} else if (rc == -ENOENT) {
		strata_debug("%s: no credentials (%s); anonymous", key, strata_errmsg(rc));
	} else {
		strata_log(LOG_WARNING, "%s: cannot read credentials (%s); continuing anonymously", key,
			   strata_errmsg(rc));
	}
	strata_err_clear();
	pthread_mutex_lock(&c->auth_lock);
	for (ra = c->auth; ra; ra = ra->next) /* another thread may have been quicker */
		if (strcmp(ra->key, key) == 0)
			break;
	if (!ra) {
		fresh->next = c->auth;
		c->auth = fresh;
		ra = fresh;
		fresh = NULL;
	}
	pthread_mutex_unlock(&c->auth_lock);
	reg_auth_free(fresh);
	*out = ra;
	return 0;
}

/* reg_auth_get() for r's host within r's deadline (its expiry is the read timeout's error). */
static int req_auth_get(struct req *r, const struct reg_auth **ra)
{
	int rc = reg_auth_get(r->c, auth_key(r), req_left_ms(r), ra);

	if (rc == -ETIMEDOUT && r->deadline_ms)
		rc = deadline_err(r, rc);
	return rc;
}

/* The challenge remembered for r's (host, repository, push), copied into *ch. Returns 1 when there
 * is one, 0 when not, or -ENOMEM. */
static int memo_get(struct req *r, struct fetch_challenge *ch)
{
	struct fetch_client *c = r->c;
	int push = req_is_push(r), rc = 0;

	pthread_mutex_lock(&c->auth_lock);
	for (struct auth_memo *m = c->memo; m; m = m->next) {
		if (m->push == push && strcmp(m->host, r->host) == 0 &&
		    strcmp(m->path, r->auth_ref->path) == 0) {
			rc = challenge_dup(ch, &m->ch) < 0 ? -ENOMEM : 1;
			break;
		}
	}
	pthread_mutex_unlock(&c->auth_lock);
	return rc;
}

/* Remembers ch for r's (host, repository, push), replacing an older one. Returns 0 or -ENOMEM. */
static int memo_put(struct req *r, const struct fetch_challenge *ch)
{
	struct fetch_client *c = r->c;
	struct fetch_challenge copy;
	struct auth_memo *m;
	int push = req_is_push(r), rc = 0;

	if (challenge_dup(&copy, ch) < 0)
		return -ENOMEM;
	pthread_mutex_lock(&c->auth_lock);
	for (m = c->memo; m; m = m->next)
		if (m->push == push && strcmp(m->host, r->host) == 0 &&
		    strcmp(m->path, r->auth_ref->path) == 0)
			break;
	if (!m) {
		m = calloc(1, sizeof(*m));
		if (m) {
			m->host = strdup(r->host);
			m->path = strdup(r->auth_ref->path);
			m->push = push;
		}
		if (!m || !m->host || !m->path) {
			if (m) {
				free(m->host);
				free(m->path);
				free(m);
			}
			fetch_challenge_clear(&copy);
			rc = -ENOMEM;
			goto out;
		}
		m->next = c->memo;
		c->memo = m;
	}
	fetch_challenge_clear(&m->ch);
	m->ch = copy;
out:
	pthread_mutex_unlock(&c->auth_lock);
	return rc;
}

/* Drops the secrets of the current attempt. */
static void auth_reset(struct req *r)
{
	if (r->bearer) {
		explicit_bzero(r->bearer, strlen(r->bearer));
		free(r->bearer);
	}
	r->bearer = NULL;
	r->basic = NULL;
}

/* Prepares r to authenticate against challenge ch with ra's credentials: Basic sends them as they
 * are, Bearer a token from the cache or the issuer. Returns 0, or negative errno with strata_err
 * set (the errors of fetch_tokens_get). */
static int auth_apply(struct req *r, const struct reg_auth *ra, const struct fetch_challenge *ch)
{
	char *value = NULL;
	int rc;

	auth_reset(r);
	if (strcmp(ch->scheme, "basic") == 0) {
		if (!ra->have_creds || !ra->creds.username || ra->creds.identity_token)
			return strata_err(EACCES, "the host asks for a username and password");
		r->basic = &ra->creds;
		return 0;
	}
	rc = fetch_tokens_get_within(ra->tokens, ch, ra->have_creds ? &ra->creds : NULL,
				     req_left_ms(r), &value);
	if (rc < 0 && r->deadline_ms && now_ms() >= r->deadline_ms)
		return deadline_err(r, rc); /* the issuer did not answer within the read's time */
	if (rc < 0)
		return rc;
	if (strncasecmp(value, "Bearer ", 7) != 0) { /* fetch_tokens_get's contract */
		explicit_bzero(value, strlen(value));
		free(value);
		return strata_err(EIO, "%s: unexpected authorization from the token cache", r->what);
	}
	r->bearer = strdup(value + 7);
	explicit_bzero(value, strlen(value));
	free(value);
	return r->bearer ? 0 : -ENOMEM;
}

/* The message of a final 401: which host refused, and with what credentials. rc is the error of
 * auth_apply() (the token issuer's own message is kept, after the host's), or 0 when the registry
 * refused a token or credentials. Returns -EACCES, or rc when it is not about access. */
static int auth_denied(const struct req *r, const struct reg_auth *ra, int rc)
{
	char cause[512] = "";

	if (rc < 0 && rc != -EACCES)
		return rc; /* the issuer could not be asked: its own message */
	if (rc == -EACCES)
		snprintf(cause, sizeof(cause), ": %s", strata_errmsg(rc));
	return strata_err(EACCES, "%s: access denied (HTTP 401 from %s; %s)%s", r->what, r->host,
			  ra->have_creds ? "credentials from the docker config for this registry" :
			  "anonymous: no credentials in the docker config for this registry", cause);
}

/*
 * request() with registry authentication. A token remembered for this (host, repository) is sent
 * up front. A 401 with a Bearer or Basic challenge gets a token (or sends the credentials) and the
 * request is repeated: the first 401 with a token makes its cache forget it and fetch a fresh one
 * (a token that expired mid-read), a 401 after that, any 403 and an issuer's refusal are final
 * (-EACCES, naming the host; no secrets in any message). Requests without auth_ref are plain.
 */
static int request_auth(struct req *r)
{
	const struct reg_auth *ra = NULL;
	struct fetch_challenge ch = { 0 };
	int rc, have_ch, rounds = 0;

	if (!r->auth_ref) {
		rc = request(r);
		goto out;
	}
	have_ch = memo_get(r, &ch);
	if (have_ch < 0) {
		rc = -ENOMEM;
		goto out;
	}
	if (have_ch) {
		rc = req_auth_get(r, &ra);
		if (rc < 0)
			goto out;
		rc = auth_apply(r, ra, &ch);
		rounds = 1; /* a cached token refused: one fresh token, then the answer is final */
		if (rc < 0) { /* a remembered challenge that does not work now: ask without */
			strata_debug("%s: cannot authorize up front (%s)", r->what, strata_errmsg(rc));
			strata_err_clear();
			auth_reset(r);
			fetch_challenge_clear(&ch);
			have_ch = 0;
			rounds = 0;
		}
	}
	for (;;) {
		int sent = r->bearer || r->basic;

		rc = request(r);
		if (rc != -EACCES || r->status != 401 || !r->www_auth)
			break;
		if (sent && rounds >= 2) { /* a fresh token refused as well */
			rc = auth_denied(r, ra, 0);
			break;
		}
		if (sent && r->bearer && have_ch)
			fetch_tokens_invalidate(ra->tokens, &ch);
		fetch_challenge_clear(&ch);
		have_ch = 0;
		rc = fetch_challenge_parse(r->www_auth, &ch);
		if (rc < 0) {
			char msg[256];

			snprintf(msg, sizeof(msg), "%s", strata_errmsg(rc));
			rc = strata_err(EACCES, "%s: access denied (HTTP 401 from %s; unusable "
					"challenge: %s)", r->what, r->host, msg);
			break;
		}
		have_ch = 1;
		if (!ch.scope && strcmp(ch.scheme, "bearer") == 0 &&
		    asprintf(&ch.scope, "repository:%s:%s", r->auth_ref->path,
			     req_is_push(r) ? "pull,push" : "pull") < 0) {
			ch.scope = NULL;
			rc = -ENOMEM;
			break;
		}
		if (!ra) {
			rc = req_auth_get(r, &ra);
			if (rc < 0)
				break;
		}
		if (sent && strcmp(ch.scheme, "basic") == 0) { /* the credentials were refused */
			rc = auth_denied(r, ra, 0);
			break;
		}
		rc = auth_apply(r, ra, &ch);
		if (rc < 0) {
			rc = auth_denied(r, ra, rc);
			break;
		}
		rc = memo_put(r, &ch);
		if (rc < 0)
			break;
		rounds++;
		strata_debug("%s: HTTP 401 from %s; retrying with %s", r->what, r->host,
			     r->bearer ? "a bearer token" : "basic credentials");
		if (sink_reset(r) < 0) {
			rc = strata_err(EIO, "%s: cannot rewind the output to retry with credentials",
					r->what);
			break;
		}
	}
out:
	auth_reset(r);
	fetch_challenge_clear(&ch);
	free(r->www_auth);
	r->www_auth = NULL;
	return rc;
}


/* --- hosts (hosts.toml): which endpoints serve a registry, in order --- */

/* Appends file path to *buf (reallocating). Returns 0, or negative errno with strata_err set. */
static int read_append(const char *path, char **buf, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char chunk[16384];
	size_t n;
	int rc = 0;

	if (!fp)
		return strata_err(errno, "cannot read %s: %s", path, strerror(errno));
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
		char *p = realloc(*buf, *len + n + 2);

		if (!p) {
			rc = -ENOMEM;
			goto out;
		}
		*buf = p;
		memcpy(*buf + *len, chunk, n);
		*len += n;
	}
	if (ferror(fp)) {
		rc = strata_err(EIO, "cannot read %s", path);
		goto out;
	}
	if (*buf) { /* PEM files need not end in a newline */
		(*buf)[(*len)++] = '\n';
		(*buf)[*len] = '\0';
	}
out:
	fclose(fp);
	return rc;
}

/* Reads a host's `ca` files into cfg: the system bundle libcurl would use first (hosts.toml CAs
 * are added to the system roots, as in containerd), then each file. A failure is kept in cfg and
 * reported when the host is tried. Returns 0 or -ENOMEM. */
static int host_cfg_init(struct host_cfg *cfg, const struct fetch_host *host)
{
	char *sys = NULL;
	CURL *h;
	int rc = 0;

	cfg->host = host;
	if (host->nca == 0)
		return 0;
	h = curl_easy_init();
	if (h && curl_easy_getinfo(h, CURLINFO_CAINFO, &sys) == CURLE_OK && sys &&
	    access(sys, R_OK) == 0)
		rc = read_append(sys, &cfg->ca_pem, &cfg->ca_len);
	curl_easy_cleanup(h);
	if (rc == -ENOMEM)
		return rc;
	strata_err_clear(); /* an unreadable system bundle leaves just the host's own CAs */
	rc = 0;
	for (size_t i = 0; i < host->nca && rc == 0; i++)
		rc = read_append(host->ca[i], &cfg->ca_pem, &cfg->ca_len);
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0) {
		cfg->ca_err = rc;
		snprintf(cfg->ca_errmsg, sizeof(cfg->ca_errmsg), "%s: %s", host->host,
			 strata_errmsg(rc));
		free(cfg->ca_pem);
		cfg->ca_pem = NULL;
		cfg->ca_len = 0;
	}
	return 0;
}

/* The host list of registry `domain`, loaded from the client's hosts dir on first use. Returns 0
 * with *out borrowed from the client (valid until fetch_client_free), or negative errno with
 * strata_err set (an invalid hosts.toml). Thread-safe. */
static int reg_hosts_get(struct fetch_client *c, const char *domain, const struct reg_hosts **out)
{
	struct reg_hosts *rh;
	int rc = 0;

	pthread_mutex_lock(&c->hosts_lock);
	for (rh = c->reg; rh; rh = rh->next)
		if (strcmp(rh->domain, domain) == 0)
			goto out;
	rh = calloc(1, sizeof(*rh));
	if (!rh) {
		rc = -ENOMEM;
		goto out;
	}
	rh->domain = strdup(domain);
	rc = rh->domain ? fetch_hosts_load(c->hosts_dir, domain, &rh->hosts) : -ENOMEM;
	if (rc == 0) {
		rh->cfg = calloc(fetch_hosts_count(rh->hosts), sizeof(*rh->cfg));
		if (!rh->cfg)
			rc = -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < fetch_hosts_count(rh->hosts); i++)
		rc = host_cfg_init(&rh->cfg[i], fetch_hosts_get(rh->hosts, i));
	if (rc < 0) {
		reg_hosts_free(rh);
		rh = NULL;
		goto out;
	}
	for (size_t i = 0; i < fetch_hosts_warning_count(rh->hosts); i++)
		strata_log(LOG_WARNING, "%s", fetch_hosts_warning(rh->hosts, i));
	if (fetch_hosts_source(rh->hosts))
		strata_log(LOG_INFO, "%s: %zu host(s) from %s", domain, fetch_hosts_count(rh->hosts),
			   fetch_hosts_source(rh->hosts));
	rh->next = c->reg;
	c->reg = rh;
out:
	pthread_mutex_unlock(&c->hosts_lock);
	*out = rh;
	return rc;
}

/* Points r at host hc: "<base>/<path>/<kind>/<x>[?ns=<registry>][&<query>]" in *r->urlp. */
static int host_url(struct req *r, const struct host_cfg *hc)
{
	char *base = fetch_host_base_url(hc->host);
	char *url = NULL;
	int rc = 0;

	if (!base)
		return -ENOMEM;
	if (asprintf(&url, "%s/%s/%s/%s", base, r->ref->path, r->api_kind, r->api_x) < 0) {
		url = NULL;
		rc = -ENOMEM;
	}
	free(base);
	if (rc == 0 && fetch_host_is_mirror(hc->host, r->ref->domain))
		rc = url_add_query(&url, "ns", r->ref->domain);
	if (rc == 0 && r->query_key)
		rc = url_add_query(&url, r->query_key, r->query_value);
	if (rc == -EINVAL)
		rc = strata_err(EINVAL, "%s: cannot build a URL for host %s", r->what, hc->host->host);
	free(*r->urlp);
	*r->urlp = url;
	r->url = url;
	r->host = hc->host->host;
	r->hc = hc;
	return rc;
}

/* Whether a failure on one host lets the next host try. As in containerd, any answer but success
 * does (unreachable, TLS, 4xx, 5xx after the retries, bytes that do not verify): a mirror may be
 * down, lack the object or refuse the client. Only local failures stop the list. The server is
 * always the last host, so its errors end the list anyway. */
static int may_fall_back(int rc)
{
	return rc != -ENOMEM && rc != -ECANCELED;
}

/* The error for a push that only the upstream server could take, under --strict-cache. */
static int push_refused(const char *what, const struct fetch_host *server)
{
	return strata_err(EACCES, "%s: --strict-cache forbids pushing to the upstream registry %s "
			  "(pushes go to the upstream; no mirror in hosts.toml has the push capability)",
			  what, server->host);
}

int fetch_push_check(struct fetch_client *c, const struct fetch_ref *ref)
{
	const struct reg_hosts *rh;
	const struct fetch_host *server = NULL;
	char *what = NULL;
	int rc;

	rc = reg_hosts_get(c, ref->domain, &rh);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < fetch_hosts_count(rh->hosts); i++) {
		const struct fetch_host *h = rh->cfg[i].host;

		if (!fetch_host_has_cap(h, FETCH_CAP_PUSH))
			continue;
		if (!h->is_server || !c->strict_cache)
			return 0;
		server = h;
	}
	if (!server)
		return strata_err(EACCES, "%s/%s: no host configured for %s has the push capability",
				  ref->domain, ref->path, ref->domain);
	if (asprintf(&what, "%s/%s", ref->domain, ref->path) < 0)
		return -ENOMEM;
	rc = push_refused(what, server);
	free(what);
	return rc;
}

/*
 * Runs r on each host of its registry that has the capability it needs, in hosts.toml order, until
 * one succeeds (request() with its retries, then r->check). A host that fails in a way
 * may_fall_back() accepts hands over to the next; the error returned names the last host tried.
 * With strict_cache the upstream server is never contacted. Requests without r->ref (an upload
 * location) go to r->url as they are.
 */
static int request_hosts(struct req *r)
{
	struct fetch_client *c = r->c;
	const struct reg_hosts *rh;
	const struct fetch_host *skipped = NULL;
	unsigned cap = r->need_cap;
	int rc, tried = 0, n_mirrors = 0;
	size_t n;

	if (!r->ref) {
		rc = request_auth(r);
		return rc == 0 && r->check ? r->check(r) : rc;
	}
	if (!cap) {
		if (r->method == M_POST || r->method == M_PUT)
			cap = FETCH_CAP_PUSH;
		else if (strcmp(r->api_kind, "manifests") == 0 && !strchr(r->api_x, ':'))
			cap = FETCH_CAP_RESOLVE;
		else
			cap = FETCH_CAP_PULL;
	}
	rc = reg_hosts_get(c, r->ref->domain, &rh);
	if (rc < 0)
		return rc;
	n = fetch_hosts_count(rh->hosts);
	rc = 0;
	for (size_t i = 0; i < n; i++) {
		const struct host_cfg *hc = &rh->cfg[i];
		int mirror = !hc->host->is_server;

		if (!fetch_host_has_cap(hc->host, cap))
			continue;
		if (!mirror && c->strict_cache) {
			skipped = hc->host;
			continue;
		}
		r->last_endpoint = 1;
		for (size_t j = i + 1; j < n; j++) {
			if (fetch_host_has_cap(rh->cfg[j].host, cap) &&
			    (!rh->cfg[j].host->is_server || !c->strict_cache))
				r->last_endpoint = 0;
		}
		if (tried) {
			int rrc;

			if (r->deadline_ms && now_ms() >= r->deadline_ms) {
				rc = deadline_err(r, rc);
				break;
			}
			rrc = sink_reset(r);
			if (rrc < 0)
				break; /* cannot rewind the output: keep the last host's error */
			/* bytes that do not verify are worth a warning; a mirror that is down or
			 * lacks the object is what mirrors do */
			strata_log(rc == -EBADMSG ? LOG_WARNING : LOG_NOTICE, "%s: %s failed (%s); "
				   "trying %s", r->what, r->host, strata_errmsg(rc), hc->host->host);
			atomic_fetch_add_explicit(&c->n_fallbacks, 1, memory_order_relaxed);
			if (r->hs)
				atomic_fetch_add_explicit(&r->hs->n_fallbacks, 1, memory_order_relaxed);
		}
		rc = host_url(r, hc);
		if (rc < 0)
			return rc;
		tried = 1;
		n_mirrors += mirror;
		if (hc->ca_err) {
			rc = strata_err(-hc->ca_err, "%s", hc->ca_errmsg);
			r->transport_err = 1;
			continue;
		}
		rc = request_auth(r);
		if (rc == 0 && r->check)
			rc = r->check(r);
		if (rc == 0 || !may_fall_back(rc))
			return rc;
	}
	if (skipped && cap == FETCH_CAP_PUSH && !tried)
		return push_refused(r->what, skipped);
	if (skipped) {
		char last[512] = "";

		if (n_mirrors > 0)
			snprintf(last, sizeof(last), " (last error: %s)", strata_errmsg(rc));
		/* -ENOENT when the (last) mirror does not have it: callers tell a missing object
		 * (an optional artifact) from a failure by it */
		return strata_err(rc == -ENOENT ? ENOENT : EHOSTUNREACH, "%s: no mirror could serve it "
				  "and --strict-cache forbids the upstream registry %s%s", r->what,
				  skipped->host, last);
	}
	if (!tried)
		return strata_err(EACCES, "%s: no host configured for %s has the %s capability", r->what,
				  r->ref->domain, cap == FETCH_CAP_PUSH ? "push" :
				  cap == FETCH_CAP_RESOLVE ? "resolve" : "pull");
	return rc;
}

/* --- manifests --- */

/*
 * Prepares r for "<host base>/<path>/<kind>/<x>" of ref's registry (kind: "blobs", "manifests",
 * "referrers", "blobs/uploads" with x ""), sent by request_hosts() to each eligible host in turn;
 * *url receives the URL of the host tried last. r->what becomes "<domain>/<path>@<x>" for a
 * digest, "<domain>/<path>:<x>" for a tag, "<domain>/<path>" without x; callers may point it
 * elsewhere. *url and *what are malloc'd (the caller frees them, also on failure, where they may be
 * NULL). x is borrowed until the request ends. Returns 0 or -ENOMEM.
 */
static int api_req(struct req *r, struct fetch_client *c, const struct fetch_ref *ref,
		   const char *kind, const char *x, char **url, char **what)
{
	const char *sep = !*x ? "" : strchr(x, ':') ? "@" : ":";

	*url = NULL;
	*what = NULL;
	if (asprintf(what, "%s/%s%s%s", ref->domain, ref->path, sep, x) < 0) {
		*what = NULL;
		return -ENOMEM;
	}
	r->c = c;
	r->ref = ref;
	r->auth_ref = ref;
	r->api_kind = kind;
	r->api_x = x;
	r->urlp = url;
	r->url = "";
	r->what = *what;
	r->host = fetch_ref_api_host(ref);
	return 0;
}

static void doc_clear(struct doc *d)
{
	free(d->data);
	memset(d, 0, sizeof(*d));
}

/*
 * GETs the manifest `reference` (a tag or a digest) of ref's repository into d, asking for `accept`
 * (NULL: the four image manifest and index types), and computes its digest. Checks it against
 * expect_digest when given (and expect_size when > 0), else against the Docker-Content-Digest header
 * when the registry sent a sha256 one. On failure d owns no memory (the caller clears it either way).
 */
/* What get_manifest() checks a host's answer against. */
struct manifest_check {
	const char *refstr;
	const char *expect_digest;
	uint64_t expect_size;
	struct doc *d;
};

/* req.check of get_manifest(): the digest (into d->digest) and size. -EBADMSG tries the next host. */
static int manifest_check(struct req *r)
{
	const struct manifest_check *mc = r->check_ctx;
	uint8_t md[UTIL_SHA256_LEN];

	if (!r->mem)
		return strata_err(EBADMSG, "%s: empty manifest from %s", mc->refstr, r->url);
	util_sha256(r->mem, r->len, md);
	util_digest_format(md, mc->d->digest);
	if (mc->expect_digest && strcmp(mc->expect_digest, mc->d->digest) != 0)
		return strata_err(EBADMSG, "%s: manifest %s from %s digest mismatch (got %s)",
				  mc->refstr, mc->expect_digest, r->host, mc->d->digest);
	if (mc->expect_size > 0 && r->len != mc->expect_size)
		return strata_err(EBADMSG, "%s: manifest %s from %s is %zu bytes, its descriptor says "
				  "%llu", mc->refstr, mc->d->digest, r->host, r->len,
				  (unsigned long long)mc->expect_size);
	if (!mc->expect_digest && strncmp(r->docker_digest, "sha256:", 7) == 0 &&
	    strcasecmp(r->docker_digest, mc->d->digest) != 0)
		return strata_err(EBADMSG, "%s: manifest digest mismatch from %s (Docker-Content-Digest "
				  "%s, got %s)", mc->refstr, r->host, r->docker_digest, mc->d->digest);
	return 0;
}

static int get_manifest(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
			const char *reference, const char *accept, const char *expect_digest,
			uint64_t expect_size, struct doc *d)
{
	struct manifest_check mc = { refstr, expect_digest, expect_size, d };
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = api_req(&r, c, ref, "manifests", reference, &url, &what);
	if (rc < 0)
		goto out;
	r.what = refstr;
	r.accept = accept ? accept : ACCEPT_MANIFESTS;
	r.kind = SINK_MEM;
	r.limit = MANIFEST_MAX;
	r.limit_what = "manifest";
	r.check = manifest_check;
	r.check_ctx = &mc;
	rc = request_hosts(&r);
	if (rc < 0)
		goto out;
	d->data = r.mem;
	d->len = r.len;
	r.mem = NULL;
	snprintf(d->content_type, sizeof(d->content_type), "%s", r.content_type);
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(what);
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
		const char *toc;
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
		toc = json_string_value(json_object_get(json_object_get(e, "annotations"),
							FETCH_ANNOTATION_TOC_DIGEST));
		if (toc && util_digest_normalize(toc, digest) == 0) {
			l->toc_digest = strdup(digest);
			if (!l->toc_digest)
				return -ENOMEM;
		} else if (toc) {
			strata_err_clear();
			strata_log(LOG_WARNING, "%s: layer %zu: ignoring its %s annotation: not a sha256 "
				   "digest", refstr, i, FETCH_ANNOTATION_TOC_DIGEST);
		}
	}
	return 0;
}

/* What get_config() checks a host's answer against. */
struct config_check {
	const char *refstr;
	const char *digest;
	uint64_t size;
};

/* req.check of get_config(): digest and size. -EBADMSG tries the next host. */
static int config_check(struct req *r)
{
	const struct config_check *cc = r->check_ctx;
	uint8_t md[UTIL_SHA256_LEN];
	char got[UTIL_DIGEST_STR_LEN];

	util_sha256(r->mem ? r->mem : "", r->len, md);
	util_digest_format(md, got);
	if (strcmp(got, cc->digest) != 0)
		return strata_err(EBADMSG, "%s: config blob %s from %s digest mismatch (got %s)",
				  cc->refstr, cc->digest, r->host, got);
	if (r->len != cc->size)
		return strata_err(EBADMSG, "%s: config blob %s from %s is %zu bytes, its descriptor "
				  "says %llu", cc->refstr, cc->digest, r->host, r->len,
				  (unsigned long long)cc->size);
	return 0;
}

/* GETs the config blob into img, checking its digest and size. */
static int get_config(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
		      struct fetch_image *img, uint64_t size)
{
	struct config_check chk = { refstr, img->config_digest, size };
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = api_req(&r, c, ref, "blobs", img->config_digest, &url, &what);
	if (rc < 0)
		goto out;
	r.kind = SINK_MEM;
	r.limit = CONFIG_MAX;
	r.limit_what = "config";
	r.check = config_check;
	r.check_ctx = &chk;
	rc = request_hosts(&r);
	if (rc < 0)
		goto out;
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
		free(img->layers[i].toc_digest);
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
	rc = get_manifest(c, ref, refstr, ref->digest ? ref->digest : ref->tag, NULL, ref->digest, 0,
			  &d);
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
		rc = get_manifest(c, ref, refstr, entry_digest, NULL, entry_digest, entry_size, &d);
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

/* req.check of fetch_blob_to_fd(): size and sha256 of what one host sent. -EBADMSG tries the
 * next host. */
static int blob_check(struct req *r)
{
	uint8_t md[UTIL_SHA256_LEN];
	char got[UTIL_DIGEST_STR_LEN];

	util_sha256_final(r->sha, md); /* also resets the context for another host */
	util_digest_format(md, got);
	if (r->expected > 0 && r->got != r->expected)
		return strata_err(EBADMSG, "blob %s from %s is %llu bytes, its descriptor says %llu",
				  r->blob_digest, r->host, (unsigned long long)r->got,
				  (unsigned long long)r->expected);
	if (strcmp(got, r->blob_digest) != 0)
		return strata_err(EBADMSG, "blob %s from %s digest mismatch (got %s)", r->blob_digest,
				  r->host, got);
	return 0;
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
	rc = api_req(&r, c, ref, "blobs", want, &url, &what);
	if (rc < 0)
		goto out;
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
	rc = request_hosts(&r);
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
				  (unsigned long long)r->range_off, (unsigned long long)range_last(r),
				  r->host);
	return v;
}

/* The deadline of the caller's current read (fetch_read_begin()), or 0. */
static _Thread_local int64_t tl_read_deadline_ms;
static _Thread_local long tl_read_timeout_ms;

void fetch_read_begin(struct fetch_client *c)
{
	if (c && c->read_timeout_ms > 0) {
		tl_read_deadline_ms = now_ms() + c->read_timeout_ms;
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
	left = tl_read_deadline_ms - now_ms();
	return left > 0 ? left : 0;
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
	if (off > UINT64_MAX - (len - 1))
		return strata_err(EINVAL, "blob %s: range %llu+%zu is out of bounds", want,
				  (unsigned long long)off, len);
	rc = api_req(&r, c, ref, "blobs", want, &url, &what);
	if (rc < 0)
		goto out;
	r.kind = SINK_BUF;
	if (c->read_timeout_ms > 0) {
		r.timeout_ms = c->read_timeout_ms;
		r.deadline_ms = now_ms() + c->read_timeout_ms;
	}
	if (tl_read_deadline_ms && (!r.deadline_ms || tl_read_deadline_ms < r.deadline_ms)) {
		r.timeout_ms = tl_read_timeout_ms; /* the read's earlier fetches used up some of it */
		r.deadline_ms = tl_read_deadline_ms;
	}
	r.buf = buf;
	r.range_off = off;
	r.range_len = len;
	if (verify) {
		r.check = range_check;
		r.check_ctx = &chk;
	}
	rc = request_hosts(&r);
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

/* --- counters --- */

void fetch_client_counters(struct fetch_client *c, struct fetch_counters *out)
{
	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	out->requests = atomic_load_explicit(&c->n_requests, memory_order_relaxed);
	out->bytes = atomic_load_explicit(&c->n_bytes, memory_order_relaxed);
	out->retries = atomic_load_explicit(&c->n_retries, memory_order_relaxed);
	out->range_requests = atomic_load_explicit(&c->n_range, memory_order_relaxed);
	out->fallbacks = atomic_load_explicit(&c->n_fallbacks, memory_order_relaxed);
}

void fetch_client_hosts(struct fetch_client *c,
			void (*fn)(void *ctx, const struct fetch_host_stats *s), void *ctx)
{
	int64_t now = now_ms();

	if (!c)
		return;
	pthread_mutex_lock(&c->hs_lock);
	for (const struct host_state *hs = c->hosts; hs; hs = hs->next) {
		struct fetch_host_stats st = {
			.host = hs->host,
			.requests = atomic_load_explicit(&hs->n_requests, memory_order_relaxed),
			.bytes = atomic_load_explicit(&hs->n_bytes, memory_order_relaxed),
			.retries = atomic_load_explicit(&hs->n_retries, memory_order_relaxed),
			.throttled = atomic_load_explicit(&hs->n_429, memory_order_relaxed),
			.fallbacks = atomic_load_explicit(&hs->n_fallbacks, memory_order_relaxed),
			.breaker = !hs->open_until_ms ? "closed"
				   : now < hs->open_until_ms ? "open" : "half-open",
			.failures = hs->fails,
		};

		fn(ctx, &st);
	}
	pthread_mutex_unlock(&c->hs_lock);
}

/* --- generic manifest GET, pushes, referrers --- */

/* Whether s can go into a header line: no control characters (no CR/LF header injection). */
static int header_safe(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

/* Whether s is a tag or a digest that can go into a URL path unescaped. */
static int reference_safe(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      strchr("_.-:+=", *s)))
			return 0;
	return 1;
}

int fetch_manifest_get(struct fetch_client *c, const struct fetch_ref *ref, const char *accept,
		       char **body, size_t *len, char **media_type, char **digest)
{
	struct doc d = { 0 };
	char *refstr = NULL, *mt = NULL, *dg = NULL;
	int rc;

	*body = NULL;
	*len = 0;
	if (media_type)
		*media_type = NULL;
	if (digest)
		*digest = NULL;
	assert(ref->digest || ref->tag);
	if (accept && !header_safe(accept))
		return strata_err(EINVAL, "invalid Accept header value");
	refstr = fetch_ref_string(ref);
	if (!refstr)
		return -ENOMEM;
	rc = get_manifest(c, ref, refstr, ref->digest ? ref->digest : ref->tag, accept, ref->digest, 0,
			  &d);
	if (rc < 0)
		goto out;
	if (media_type) {
		/* any JSON will do here: the caller interprets the document */
		json_t *root = json_loadb(d.data, d.len, 0, NULL);
		const char *t = json_string_value(json_object_get(root, "mediaType"));

		mt = strdup(t && *t ? t : d.content_type);
		json_decref(root);
	}
	if (digest)
		dg = strdup(d.digest);
	if ((media_type && !mt) || (digest && !dg)) {
		rc = -ENOMEM;
		goto out;
	}
	*body = d.data;
	*len = d.len;
	d.data = NULL;
	if (media_type)
		*media_type = mt;
	if (digest)
		*digest = dg;
	mt = NULL;
	dg = NULL;
	rc = 0;
out:
	free(mt);
	free(dg);
	doc_clear(&d);
	free(refstr);
	return rc;
}

/* Appends "key=<value, URL-encoded>" to *url's query (replacing *url). Returns 0 or -ENOMEM, or
 * -EINVAL for a URL libcurl cannot parse. */
static int url_add_query(char **url, const char *key, const char *value)
{
	CURLU *u = curl_url();
	char *q = NULL, *s = NULL, *copy;
	int rc;

	if (!u)
		return -ENOMEM;
	if (asprintf(&q, "%s=%s", key, value) < 0) {
		q = NULL;
		rc = -ENOMEM;
		goto out;
	}
	/* URLENCODE with APPENDQUERY encodes all but the first '=' */
	if (curl_url_set(u, CURLUPART_URL, *url, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK) {
		rc = -EINVAL;
		goto out;
	}
	copy = strdup(s);
	if (!copy) {
		rc = -ENOMEM;
		goto out;
	}
	free(*url);
	*url = copy;
	rc = 0;
out:
	curl_free(s);
	free(q);
	curl_url_cleanup(u);
	return rc;
}

/* A resolved upload location: where to PUT, what to print instead, and which host it is on. */
struct upload {
	char *url;   /* absolute, with digest=<digest> appended to the query */
	char *shown; /* without query, fragment and user info */
	char *host;  /* "host" or "host:port" */
	const struct host_cfg *hc; /* the host that started the upload (TLS, headers) */
};

static void upload_clear(struct upload *up)
{
	free(up->url);
	free(up->shown);
	free(up->host);
	memset(up, 0, sizeof(*up));
}

/* Resolves an upload Location (absolute, or relative to base, the URL that returned it) into up.
 * The location's value is never printed: its query may carry a signature. Returns 0, -EIO for an
 * unusable location, or -ENOMEM; up is cleared by the caller either way. */
static int upload_resolve(const char *base, const char *location, const char *digest,
			  struct upload *up)
{
	CURLU *u = curl_url();
	char *sch = NULL, *host = NULL, *port = NULL, *s = NULL;
	int rc;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_URL, location, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &sch, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		rc = strata_err(EIO, "%s: the registry returned an unusable upload location", base);
		goto out;
	}
	if (strcasecmp(sch, "http") != 0 && strcasecmp(sch, "https") != 0) {
		rc = strata_err(EIO, "%s: the registry returned a %s:// upload location", base, sch);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK) {
		rc = -ENOMEM;
		goto out;
	}
	up->url = strdup(s);
	curl_free(s);
	s = NULL;
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
		port = NULL; /* the scheme's default */
	if (asprintf(&up->host, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0)
		up->host = NULL;
	if (curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK) {
		rc = -ENOMEM;
		goto out;
	}
	up->shown = strdup(s);
	if (!up->url || !up->host || !up->shown) {
		rc = -ENOMEM;
		goto out;
	}
	rc = url_add_query(&up->url, "digest", digest);
	if (rc == -EINVAL)
		rc = strata_err(EIO, "%s: cannot add the digest to the upload location", up->shown);
out:
	curl_free(s);
	curl_free(port);
	curl_free(host);
	curl_free(sch);
	curl_url_cleanup(u);
	return rc;
}

/* HEAD of blob `digest`: 1 when the registry has it (2xx, or a redirect to its storage, which is
 * not followed), 0 when it does not (404), or negative errno with strata_err set. */
static int blob_exists(struct fetch_client *c, const struct fetch_ref *ref, const char *digest)
{
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = api_req(&r, c, ref, "blobs", digest, &url, &what);
	if (rc < 0)
		goto out;
	r.method = M_HEAD;
	r.need_cap = FETCH_CAP_PUSH; /* asks the registry it will push to */
	rc = request_hosts(&r);
	if (rc == 0) {
		rc = 1;
	} else if (rc == -ENOENT) {
		strata_err_clear();
		rc = 0;
	}
out:
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* POST /v2/<path>/blobs/uploads/ (202 with a Location) and resolves where the PUT goes into up. */
static int upload_start(struct fetch_client *c, const struct fetch_ref *ref, const char *what,
			const char *digest, struct upload *up)
{
	char *url = NULL, *rwhat = NULL;
	struct req r = { 0 };
	int rc;

	rc = api_req(&r, c, ref, "blobs/uploads", "", &url, &rwhat);
	if (rc < 0)
		goto out;
	r.what = what;
	r.method = M_POST;
	r.want_location = 1;
	rc = request_hosts(&r);
	if (rc < 0)
		goto out;
	if (r.status != 202) {
		rc = strata_err(EIO, "%s: starting an upload: HTTP %ld (want 202)", url, r.status);
		goto out;
	}
	if (!r.location || !*r.location) {
		rc = strata_err(EIO, "%s: HTTP 202 without a Location header", url);
		goto out;
	}
	rc = upload_resolve(url, r.location, digest, up);
	up->hc = r.hc;
out:
	free(r.location);
	free(r.errbody);
	free(rwhat);
	free(url);
	return rc;
}

/* PUTs the whole blob to an upload location, closing the upload (201). */
static int upload_put(struct fetch_client *c, const struct fetch_ref *ref, const struct upload *up,
		      const char *what, const char *digest, const void *data, size_t len)
{
	struct req r = { 0 };
	int rc;

	r.c = c;
	r.url = up->url;
	r.shown_url = up->shown;
	r.what = what;
	r.host = up->host;
	r.hc = up->hc;
	r.auth_ref = ref; /* the location is on the registry that started the upload */
	r.method = M_PUT;
	r.src = data;
	r.src_len = len;
	r.src_type = "application/octet-stream";
	rc = request_hosts(&r);
	if (rc < 0)
		goto out;
	if (r.status != 201) {
		rc = strata_err(EIO, "%s: finishing the upload: HTTP %ld (want 201)", up->shown,
				r.status);
		goto out;
	}
	if (strncmp(r.docker_digest, "sha256:", 7) == 0 && strcasecmp(r.docker_digest, digest) != 0) {
		rc = strata_err(EBADMSG, "%s: the registry stored the blob as %s", what,
				r.docker_digest);
		goto out;
	}
	rc = 0;
out:
	free(r.errbody);
	return rc;
}

int fetch_blob_push(struct fetch_client *c, const struct fetch_ref *ref, const void *data,
		    size_t len, const char *digest)
{
	char want[UTIL_DIGEST_STR_LEN];
	struct upload up = { 0 };
	char *what = NULL;
	int rc;

	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	if (asprintf(&what, "%s/%s@%s", ref->domain, ref->path, want) < 0)
		return -ENOMEM;
	rc = blob_exists(c, ref, want);
	if (rc != 0) {
		if (rc > 0) {
			strata_debug("%s: already in the registry", what);
			rc = 0;
		}
		goto out;
	}
	rc = upload_start(c, ref, what, want, &up);
	if (rc < 0)
		goto out;
	rc = upload_put(c, ref, &up, what, want, data, len);
out:
	upload_clear(&up);
	free(what);
	return rc;
}

int fetch_manifest_push(struct fetch_client *c, const struct fetch_ref *ref,
			const char *tag_or_digest, const char *media_type, const void *body, size_t len)
{
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	if (!reference_safe(tag_or_digest))
		return strata_err(EINVAL, "invalid tag or digest '%.80s'", tag_or_digest);
	if (!media_type || !*media_type || !header_safe(media_type))
		return strata_err(EINVAL, "invalid manifest media type");
	rc = api_req(&r, c, ref, "manifests", tag_or_digest, &url, &what);
	if (rc < 0)
		goto out;
	r.method = M_PUT;
	r.src = body;
	r.src_len = len;
	r.src_type = media_type;
	rc = request_hosts(&r);
	if (rc < 0)
		goto out;
	if (r.status != 201) {
		rc = strata_err(EIO, "%s: HTTP %ld (want 201)", url, r.status);
		goto out;
	}
	rc = 0;
out:
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* Whether data is an OCI image index: a JSON object with a manifests array, and when it names its
 * mediaType, the index type. */
static int is_oci_index(const char *data, size_t len)
{
	json_t *root = json_loadb(data, len, 0, NULL);
	const char *mt = json_string_value(json_object_get(root, "mediaType"));
	int ok = json_is_object(root) && json_is_array(json_object_get(root, "manifests")) &&
		 (!mt || strcmp(mt, FETCH_MT_OCI_INDEX) == 0);

	json_decref(root);
	return ok;
}

int fetch_referrers(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		    const char *artifact_type, char **body, size_t *len)
{
	char want[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	*body = NULL;
	*len = 0;
	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	rc = api_req(&r, c, ref, "referrers", want, &url, &what);
	if (rc < 0)
		goto out;
	if (artifact_type) {
		r.query_key = "artifactType";
		r.query_value = artifact_type;
	}
	r.accept = FETCH_MT_OCI_INDEX;
	r.kind = SINK_MEM;
	r.limit = MANIFEST_MAX;
	r.limit_what = "referrers index";
	rc = request_hosts(&r);
	if (rc < 0 && (r.status == 404 || r.status == 405)) {
		/* a registry with the API answers 200 even for an unknown subject */
		if (!r.errbody || !is_oci_index(r.errbody, r.errlen)) {
			rc = strata_err(ENOTSUP, "%s: the registry does not support the referrers API "
					"(HTTP %ld)", what, r.status);
			goto out;
		}
		strata_err_clear();
		free(r.mem);
		r.mem = r.errbody;
		r.len = r.errlen;
		r.errbody = NULL;
		rc = 0;
	}
	if (rc < 0)
		goto out;
	if (!r.mem || !is_oci_index(r.mem, r.len)) {
		rc = strata_err(EBADMSG, "%s: the referrers response is not an OCI image index", what);
		goto out;
	}
	*body = r.mem;
	*len = r.len;
	r.mem = NULL;
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

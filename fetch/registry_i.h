/* SPDX-License-Identifier: Apache-2.0 */
/* Private to fetch/'s registry client (registry.h): the client, one request, and the functions the
 * files serving it share. Requests flow manifest.c/blob.c/push.c -> route.c (which host) ->
 * authorize.c (401 -> token) -> retry.c (attempts, slots, breaker) -> http.c (one attempt). */
#ifndef STRATA_FETCH_REGISTRY_I_H
#define STRATA_FETCH_REGISTRY_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <curl/curl.h>

#include "auth.h"
#include "clock_i.h"
#include "hosts.h"
#include "registry.h"
#include "util/sha256.h"

/* The slowest a transfer may be, in bytes a second, for longer than the client's low_speed_s;
 * and the longest one attempt at a document (SINK_MEM: manifest, index, config) may take. */
#define FETCH_LOW_SPEED_BYTES 1024L
#define FETCH_DOC_TIMEOUT_MS  120000L

/* The defaults of a whole-blob download's deadline: base + size / min rate (fetch_opts). */
#define FETCH_DOWNLOAD_BASE_S	300L
#define FETCH_DOWNLOAD_MIN_RATE (64u << 10)

/* Idle easy handles kept per client: each keeps its own connection cache, so reusing one reuses its
 * keep-alive connections (libcurl does not support sharing a connection cache across threads). */
#define POOL_MAX 8

/* One host of a registry's list with what its requests need, read once: its `ca` files
 * concatenated (PEM), or the error reading them. */
struct host_cfg {
	const struct fetch_host *host; /* borrowed from the owning reg_hosts' list */
	char *ca_pem;		       /* NULL: no ca files (or ca_err) */
	size_t ca_len;
	int ca_err; /* negative errno when a ca file could not be read */
	char ca_errmsg[256];
};

/* What the client knows about one host (by "host[:port]"), shared by every thread: the Retry-After
 * it asked for, its in-flight requests (a counting semaphore), its circuit breaker and counters.
 * Listed on first use and kept until the client is freed. */
struct host_state {
	char *host;	       /* immutable */
	int inflight;	       /* protected by fetch_client.hs_lock */
	int64_t not_before_ms; /* CLOCK_MONOTONIC; no request before it; protected by hs_lock */
	unsigned fails;	       /* consecutive failures; protected by hs_lock */
	int64_t open_until_ms; /* breaker: 0 closed, else open until then, half-open after it;
				  * protected by hs_lock */
	long cooldown_ms;      /* the current open period; protected by hs_lock */
	int probing;	       /* a half-open probe is in flight; protected by hs_lock */
	_Atomic uint64_t n_requests, n_bytes, n_retries, n_429, n_fallbacks; /* relaxed */
	struct host_state *next; /* immutable once listed */
};

struct reg_hosts; /* route.c: one registry's hosts.toml list */
struct reg_auth;  /* authorize.c: one registry host's credentials and tokens */
struct auth_memo; /* authorize.c: the last challenge of a (host, repository) */

/* A registry client (fetch_client_new); shared by every thread that uses it. */
struct fetch_client {
	char *os;
	char *arch;
	char *variant; /* NULL: any */
	long connect_timeout_ms;
	long low_speed_s;
	long download_base_s;
	uint64_t download_min_rate; /* > 0 */
	int max_attempts;
	char *hosts_dir; /* NULL: built-in defaults only */
	int strict_cache;
	pthread_mutex_t hosts_lock;
	struct reg_hosts *reg; /* protected by hosts_lock; entries are immutable once listed */
	pthread_mutex_t auth_lock;
	struct reg_auth *auth;	/* protected by auth_lock; entries are immutable once listed */
	struct auth_memo *memo; /* protected by auth_lock */
	CURLSH *share;		/* DNS and TLS session caches, locked through share_locks */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t pool_lock;
	CURL *pool[POOL_MAX]; /* idle easy handles; protected by pool_lock */
	size_t npool;	      /* protected by pool_lock */
	/* fetch_client_counters(); updated only by count_attempt() (http.c) and
	 * fetch_route_request() (fallbacks), relaxed (they are statistics) */
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
	pthread_cond_t hs_cond;	  /* signalled when a slot frees up; CLOCK_MONOTONIC */
	struct host_state *hosts; /* protected by hs_lock (list links); see struct host_state */
};

enum method { M_GET, M_HEAD, M_POST, M_PUT };

/* Where a 2xx response body goes: nowhere, memory, a file, a caller's buffer (a byte range), or a
 * caller's callbacks as it arrives (a byte range). */
enum sink_kind { SINK_NONE, SINK_MEM, SINK_FD, SINK_BUF, SINK_STREAM };

/* One HTTP request with its retries: what to send, where the 2xx body goes, and what came back. */
struct req {
	struct fetch_client *c;
	const char *url;
	const char *shown_url; /* printed instead of url when the url may carry secrets; NULL: url */
	const char *what;   /* names the object in error messages: "<ref>" or "<repo>@<digest>" */
	const char *host;   /* for "cannot reach <host>" */
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
	int limit_exact;	/* limit is the descriptor's size, not a cap in MiB */
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
	 * header; a 206 body starts at range_off, any other 2xx body at 0 (the prefix is skipped).
	 * SINK_STREAM: the same bytes to stream->data() instead (stream->start() before the first of
	 * each attempt) */
	char *buf;
	const struct fetch_range_sink *stream;
	int stream_started; /* start() was called for this attempt's bytes */
	int stream_enough;  /* data() asked to stop: the range is complete as far as it cares */
	uint64_t range_off;
	size_t range_len;
	size_t have;	   /* bytes of buf filled */
	uint64_t body_pos; /* bytes of the current 2xx body seen */
	int range_done; /* have == range_len (or stream_enough) and the callback stopped the transfer
			 * on purpose */

	/* the current response; reset at each status line (redirects, retries) */
	long status;
	char content_type[256];
	char docker_digest[128];
	char *location;		/* malloc'd, when want_location; the caller frees it */
	int64_t content_length; /* -1: not sent */
	int has_range;		/* a Content-Range "bytes first-last/total" was parsed */
	uint64_t cr_first, cr_last;
	int64_t cr_total; /* -1: "*" */
	char *errbody;	  /* a non-2xx body, for the registry's error code */
	size_t errlen;
	uint64_t rx; /* body bytes of this attempt, all responses */

	int sink_err; /* negative errno, strata_err set, when a callback stopped the transfer */
	int transport_err; /* the last attempt failed below HTTP (connection, TLS, cut transfer) */
	int status_err;	   /* the last attempt ended in a non-2xx final status (r->status), which
			    * fetch_http_perform() turned into an errno; retry.c judges 429/5xx */
	char retry_after[64];	 /* the current response's Retry-After value, or "" */
	struct host_state *hs;	 /* the state of r->host, set by fetch_retry_request() */
	int last_endpoint;	 /* no later hosts.toml endpoint could take r: an open breaker must
				  not fail it fast (set by fetch_route_request()) */
	int64_t deadline_ms;	 /* CLOCK_MONOTONIC end of the whole call, or 0 */
	long timeout_ms;	 /* what the deadline was set from, for messages */
	char deadline_what[128]; /* names the deadline in messages; "": the read timeout */
	char errbuf[CURL_ERROR_SIZE];

	/* Set by fetch_route_init(): the request goes to the eligible hosts of ref's registry in
	 * turn (see fetch_route_request()), each with its own URL kept in *urlp (the caller frees
	 * it). */
	const struct fetch_ref *ref;
	const char *api_kind;
	const char *api_x;
	char **urlp;
	unsigned need_cap; /* FETCH_CAP_* a host needs; 0: derived from the method and the reference */
	const char *query_key, *query_value; /* one more query parameter, or NULL */
	const struct host_cfg *hc;	     /* the host being tried (TLS, headers), or NULL */
	/* Authentication (see fetch_authorize_request()): the repository requests are authorized
	 * for (ref, or set by the caller for an upload location), the last WWW-Authenticate of the
	 * final response (malloc'd), and what the current attempt sends: a bearer token (malloc'd,
	 * a secret) or Basic credentials (borrowed from the client). */
	const struct fetch_ref *auth_ref;
	char *www_auth;
	char *bearer;
	const struct fetch_creds *basic;
	/* Called after a host answered 2xx; -EBADMSG makes fetch_route_request() try the next
	 * host. */
	int (*check)(struct req *r);
	void *check_ctx;
};

/* --- client.c --- */

/* Takes an idle easy handle from c's pool, or makes one. Returns NULL on allocation failure.
 * Thread-safe. */
CURL *fetch_handle_get(struct fetch_client *c);

/* Returns h to c's pool with its options cleared (its live connections stay open), or cleans it up
 * when the pool is full. h NULL: nothing. Thread-safe. */
void fetch_handle_put(struct fetch_client *c, CURL *h);

/* --- http.c: one attempt --- */

/* Sets up h for r: the request headers into *headers (NULL when there are none; the caller frees
 * them with curl_slist_free_all after the last attempt, also on failure) and every option of the
 * request, credentials (r->bearer, r->basic) through curl's auth options. Returns 0, -ENOMEM, or
 * negative errno with strata_err set. */
int fetch_http_setup(struct req *r, CURL *h, struct curl_slist **headers);

/* One attempt of r on h (set up by fetch_http_setup). Returns 0 for a 2xx response (or a 3xx where
 * redirects are not followed), else negative errno with strata_err set; *retry when the attempt
 * failed below HTTP or a range came back cut short, and another attempt may succeed. A non-2xx
 * final status sets r->status_err: whether that status is worth another attempt (429, 5xx) is
 * retry.c's decision. Adds the attempt (attempt > 0: a retry) to the client's and host's
 * counters. */
int fetch_http_perform(struct req *r, CURL *h, int attempt, int *retry);

/* Empties r's sink before another attempt or host: the fd is cut back to where it started. Returns
 * 0 or negative errno, without touching the error message (the caller keeps the transfer's). */
int fetch_http_sink_reset(struct req *r);

/* The URL of r for messages: an upload location's query may carry a signature or state. */
const char *fetch_http_url(const struct req *r);

/* The last byte offset of r's range (range_len > 0, checked by fetch_blob_range_verify). */
uint64_t fetch_range_last(const struct req *r);

/* Parses a decimal number that ends at *end (or the end of s). Returns 0, or -1 when s is not
 * one. */
int fetch_http_parse_u64(const char *s, char **end, uint64_t *out);

/* Whether s can go into a header line: no control characters (no CR/LF header injection). */
int fetch_http_header_safe(const char *s);

/* --- retry.c: attempts, per-host slots and breaker, deadlines --- */

/* Runs r to completion on r->url with retries, each attempt admitted by r->host's slots and
 * breaker. Returns 0 with the body in the sink, or negative errno with strata_err set. r->mem and
 * r->errbody stay owned by the caller either way. */
int fetch_retry_request(struct req *r);

/* The error for a call whose deadline passed, with the failure that used up the time (rc, may be
 * 0). Returns -ETIMEDOUT with strata_err set. */
int fetch_deadline_err(const struct req *r, int rc);

/* What is left of r's deadline in ms (at least 1), or 0 when r has none. */
long fetch_deadline_left_ms(const struct req *r);

/* Frees c's per-host states. For fetch_client_free only. */
void fetch_retry_clear(struct fetch_client *c);

/* A Retry-After value (NUL-terminated, as the header gave it, trimmed) in seconds from now:
 * delta-seconds or an HTTP-date (RFC 9110 10.2.3), at most a day; 0 when empty, malformed or in
 * the past. Never fails. Thread-safe. */
long fetch_retry_after_parse(const char *v);

/* --- authorize.c: 401 -> token --- */

/* fetch_retry_request() with registry authentication when r->auth_ref is set (see the function).
 * Returns 0, or negative errno with strata_err set (-EACCES naming the host for a final
 * refusal). */
int fetch_authorize_request(struct req *r);

/* Frees c's credential caches and remembered challenges. For fetch_client_free only. */
void fetch_authorize_clear(struct fetch_client *c);

/* --- manifest_parse.c: manifest, index and config documents --- */

/* What strata accepts from a registry, checked before anything is fetched for a descriptor (and
 * on the bytes that came): a manifest or index at most 4 MiB (containerd's limit), an image
 * config at most 16 MiB, at most 1000 layers per manifest (Docker refuses more than 125 and
 * overlayfs stacks at most 500) and 1000 entries per index, and a blob at most 1 TiB (far above any
 * registry's layer limit, and far below where offset arithmetic could wrap). */
#define FETCH_MANIFEST_MAX	(4u << 20)
#define FETCH_CONFIG_MAX	(16u << 20)
#define FETCH_LAYERS_MAX	1000u
#define FETCH_INDEX_ENTRIES_MAX 1000u
#define FETCH_BLOB_SIZE_MAX	(1ull << 40)

/* The platform an index entry is chosen for (os, arch; variant NULL matches any). Borrowed. */
struct fetch_platform {
	const char *os, *arch, *variant;
};

/* What fetch_doc_parse() found besides what it put in the image. */
struct fetch_doc {
	int is_index;
	char entry_digest[UTIL_DIGEST_STR_LEN]; /* is_index: the entry chosen for the platform */
	uint64_t entry_size;			/* is_index: its descriptor's size (exact) */
	uint64_t config_size;			/* !is_index: the config descriptor's size */
};

/*
 * Parses a manifest document (len bytes, NUL-terminated or not; content_type the Content-Type it
 * came with, or NULL): a JSON object of schema 2 whose kind its mediaType, else content_type, else
 * its shape decides. An index (unless manifest_only, then -ENOTSUP "nested indexes are not
 * supported") gets its first entry for `want` chosen: out->entry_digest/entry_size and
 * img->platform (malloc'd). An image manifest fills img->media_type, config_digest, nlayers and
 * layers (malloc'd; fetch_image_free frees them, also after a failure) and out->config_size.
 * Every descriptor size and count is checked against the caps above. refstr names the image in
 * messages. Returns 0, or negative errno with strata_err set, one line: -EBADMSG for malformed
 * JSON or descriptors, -ENOTSUP for schema 1 or an unknown media type, -ENOENT when the index has
 * no entry for want (listing what it has), -EFBIG beyond a cap, -ENOMEM. Thread-safe.
 */
int fetch_doc_parse(const struct fetch_platform *want, const char *refstr, const char *data,
		    size_t len, const char *content_type, int manifest_only,
		    struct fetch_image *img, struct fetch_doc *out);

/* Parses img->config (img->config_len bytes): the rootfs.diff_ids when there is one per layer
 * (else none, logged at debug level), and img->platform from the config when no index set it
 * (a warning when it is not want's). Returns 0, or negative errno with strata_err set (-EBADMSG
 * malformed, -EFBIG above the cap, -ENOMEM). Thread-safe. */
int fetch_config_parse(const struct fetch_platform *want, const char *refstr,
		       struct fetch_image *img);

/* --- route.c: which hosts, in which order --- */

/*
 * Prepares r for "<host base>/<path>/<kind>/<x>" of ref's registry (kind: "blobs", "manifests",
 * "referrers", "blobs/uploads" with x ""), sent by fetch_route_request() to each eligible host in
 * turn; *url receives the URL of the host tried last. r->what becomes "<domain>/<path>@<x>" for a
 * digest, "<domain>/<path>:<x>" for a tag, "<domain>/<path>" without x; callers may point it
 * elsewhere. *url and *what are malloc'd (the caller frees them, also on failure, where they may be
 * NULL). x is borrowed until the request ends. Returns 0 or -ENOMEM.
 */
int fetch_route_init(struct req *r, struct fetch_client *c, const struct fetch_ref *ref,
		     const char *kind, const char *x, char **url, char **what);

/* Runs r on the hosts of its registry in hosts.toml order until one succeeds (see the function);
 * r without ref goes to r->url as it is. Returns 0, or negative errno with strata_err set naming
 * the host tried last. */
int fetch_route_request(struct req *r);

/* Appends "key=<value, URL-encoded>" to *url's query (replacing *url). Returns 0 or -ENOMEM, or
 * -EINVAL for a URL libcurl cannot parse. */
int fetch_route_url_add_query(char **url, const char *key, const char *value);

/* Frees c's host lists. For fetch_client_free only. */
void fetch_route_clear(struct fetch_client *c);

#endif

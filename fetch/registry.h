/* SPDX-License-Identifier: Apache-2.0 */
/* OCI distribution client: manifest and index resolution, whole-blob downloads with digest checks.
 * Served by manifest.c, blob.c and push.c over one request path: route.c (which hosts) ->
 * authorize.c (401 -> token) -> retry.c (retries, 429, slots, breaker) -> http.c (one attempt);
 * client.c holds the client. Private structs: registry_i.h. */
#ifndef STRATA_FETCH_REGISTRY_H
#define STRATA_FETCH_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "ref.h"

#define FETCH_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define FETCH_MT_DOCKER_LIST	 "application/vnd.docker.distribution.manifest.list.v2+json"
#define FETCH_MT_OCI_MANIFEST	 "application/vnd.oci.image.manifest.v1+json"
#define FETCH_MT_OCI_INDEX	 "application/vnd.oci.image.index.v1+json"

struct fetch_opts {
	const char *platform_os;      /* "linux" */
	const char *platform_arch;    /* GOARCH name of this host: "amd64", "arm64", ... */
	const char *platform_variant; /* "v8", or NULL */
	long connect_timeout_ms;      /* 0 = default 10 s */
	long low_speed_timeout_s; /* abort a transfer slower than 1 KiB/s for this long; 0 = 30 s */
	/* A whole-blob download (fetch_blob_to_fd) must end by download_base_s + its size /
	 * download_min_rate seconds, across hosts, retries and waits, whatever its pace: a host
	 * trickling just above the low-speed floor cannot hold it for days. 0 = 300 s, 64 KiB/s. */
	long download_base_s;
	uint64_t download_min_rate; /* bytes a second */
	int max_attempts;	    /* per request and host, for connection errors and 5xx; 0 = 3 */
	const char *hosts_dir;	    /* containerd certs.d layout (hosts.toml per registry); NULL or
				    * "": each registry alone, with the defaults of fetch_hosts_load */
	int strict_cache;	    /* never contact a registry's upstream `server`: mirrors only */
	long read_timeout_ms;	/* overall deadline of one fetch_blob_range[_verify] call, across
				    * hosts, retries and waits (curl's timeout is capped by what is
				    * left); past it the call fails with -ETIMEDOUT. 0 = none */
	long retry_after_max_s; /* longest wait for a host's Retry-After; a longer one fails the
				    * request on that host instead of sending early. 0 = 10 s */
	int max_per_host;	/* in-flight requests per host, all threads; 0 = 8 */
	int breaker_failures;	/* consecutive failures (connect errors, timeouts, 5xx) that open a
				    * host's circuit; 0 = 5 */
	long breaker_cooldown_ms; /* first open period, doubling up to 2 min; 0 = 10 s */
};

struct fetch_client;

/* Creates a client. opts is copied (strings too).
 * Every request for a reference goes to the hosts of its registry (fetch/hosts.h, loaded once per
 * registry domain from opts->hosts_dir and kept): mirrors in hosts.toml order, then the upstream
 * server, each only for what its capabilities allow (tag -> resolve, digest -> pull, uploads ->
 * push). Mirrors get "?ns=<registry>". A host that cannot be reached, fails TLS, answers 429 or 5xx
 * after its retries, or sends bytes that do not verify, and a mirror answering 404/401/403, hands
 * the request to the next host; errors name the host tried last. With strict_cache the server is
 * skipped and the error says so.
 * Authentication (fetch/auth.h): a host answering 401 with a Bearer or Basic WWW-Authenticate
 * challenge gets credentials from the docker config ($DOCKER_CONFIG/config.json, else
 * ~/.docker/config.json: credHelpers, credsStore, auths), looked up once per registry host (the
 * reference's domain for its server, a mirror's own host for a mirror; none or unreadable:
 * anonymous, the latter logged once), and the request is repeated with a bearer token from the
 * challenge's issuer (scope "repository:<path>:pull" or ":pull,push" when the challenge names none)
 * or the Basic credentials. Tokens are cached per registry host; the last challenge of each (host,
 * repository) is remembered so that later requests send their token up front. A token refused with
 * 401 is forgotten and a fresh one fetched once; a further 401, a 403 or an issuer's refusal is
 * -EACCES "<ref>: access denied (HTTP 401 from <host>; ...)". Credentials go through curl's auth
 * options, so a redirect to another host does not carry them. No secret is ever logged.
 * Returns 0 and *out (free with fetch_client_free), or -ENOMEM.
 * Thread-safe: one client may serve requests from several threads at once. */
int fetch_client_new(const struct fetch_opts *opts, struct fetch_client **out);
void fetch_client_free(struct fetch_client *c);

/* The GOARCH name for this machine (uname -m mapped: x86_64->amd64, aarch64->arm64, ...). Static. */
const char *fetch_host_arch(void);

struct fetch_layer {
	char *digest; /* "sha256:<hex>" of the compressed blob */
	char *media_type;
	uint64_t size;
	char *diff_id; /* from the config's rootfs.diff_ids[i], or NULL when the config lacks it */
	char *toc_digest; /* the descriptor's FETCH_ANNOTATION_TOC_DIGEST ("sha256:<hex>", the digest
			   * of an eStargz layer's stargz.index.json), or NULL when it has none or
			   * one that is no sha256 digest */
};

/* The layer descriptor annotation ctr-remote / stargz-snapshotter write for an eStargz layer. */
#define FETCH_ANNOTATION_TOC_DIGEST "containerd.io/snapshot/stargz/toc.digest"

struct fetch_image {
	char *manifest_digest; /* digest of the platform manifest (not of the index) */
	char *index_digest;    /* digest of the index/list it was chosen from, or NULL */
	char *media_type;      /* of the manifest */
	char *config_digest;
	char *platform; /* "linux/amd64" (from the index entry or the config) */
	size_t nlayers;
	struct fetch_layer *layers;
	char *manifest; /* the raw manifest bytes, NUL-terminated */
	size_t manifest_len;
	char *config; /* the raw config blob, NUL-terminated */
	size_t config_len;
};

/*
 * Resolves ref to the image manifest for the client's platform: GET /v2/<path>/manifests/<tag or digest>
 * with an Accept header for all four manifest types; for a list or index, picks the entry matching
 * os/arch (and variant when set; an entry without variant matches too) and fetches it. Verifies every
 * manifest's digest (against ref->digest when pinned, and against the index entry), fetches and
 * verifies the config blob, and fills diff_ids. Rejects schema 1 and unknown media types.
 * Returns 0 and *out (free with fetch_image_free), or negative errno with strata_err set, one line:
 * -ENOENT "<ref>: repository not found (NAME_UNKNOWN)" / "manifest unknown" / "no linux/amd64 image in
 * index (has: linux/arm64, ...)", -EBADMSG for a digest mismatch or malformed JSON, -ENOTSUP for an
 * unsupported media type, -ECONNREFUSED/-EHOSTUNREACH/-ETIMEDOUT "cannot reach <host>: <curl msg>",
 * -EACCES for 401/403, -EIO otherwise (with the HTTP status).
 */
int fetch_resolve(struct fetch_client *c, const struct fetch_ref *ref, struct fetch_image **out);

void fetch_image_free(struct fetch_image *img);

/* Progress callback: bytes received so far of total (total may be 0 when unknown). Return non-zero to abort. */
typedef int (*fetch_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/*
 * Downloads blob `digest` of ref's repository into fd (appending from the fd's current offset; the
 * caller passes an empty file; a host whose bytes do not match is followed by the next host, which
 * needs a seekable fd), following redirects (and dropping Authorization on a redirect to
 * another host). Verifies the sha256 of the whole body and its size: expected_size (the
 * descriptor's) is exact, 0 too, and a host that sends more is cut off at once (it cannot fill the
 * disk); a size above FETCH_BLOB_SIZE_MAX (1 TiB) is refused before any request.
 * Returns 0, or negative errno with strata_err set: -EBADMSG "blob sha256:... digest mismatch
 * (got sha256:...)" or "... is larger than its descriptor says", -EFBIG for a size above the cap,
 * -ENOENT "blob unknown", -ETIMEDOUT "... download deadline of Ns (...) expired" when the
 * whole download (hosts, retries, waits) took longer than the client's download_base_s +
 * expected_size / download_min_rate, and the network errors above. On failure the fd's content is
 * unspecified (the caller discards it). progress may be NULL; its total is expected_size.
 */
int fetch_blob_to_fd(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		     uint64_t expected_size, int fd, fetch_progress_fn progress, void *pctx);

/*
 * Reads bytes [off, off + len) of blob `digest` into buf with one HTTP Range request (following
 * redirects, with the client's retries). A server that ignores Range and answers 200 with the whole
 * body is handled: the prefix is discarded and the transfer stops once len bytes arrived.
 * The bytes are not digest-verified here: the caller verifies what it decodes from them.
 * Returns 0 (exactly len bytes in buf), -EPIPE when the blob ends before off + len, -ENOENT
 * "blob unknown", or the network errors of fetch_resolve, with strata_err set. Thread-safe.
 */
int fetch_blob_range(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		     uint64_t off, size_t len, void *buf);

/*
 * fetch_blob_range, then verify(vctx, buf, len) on the bytes of each host that answered: 0 accepts
 * them, -EBADMSG tries the next host (another negative errno is returned as it is, with strata_err
 * set by verify); for len 0 verify is called once, without a request. verify NULL is
 * fetch_blob_range. Returns what fetch_blob_range returns, or
 * -EBADMSG when no host sent bytes that verify. Thread-safe when verify is.
 */
int fetch_blob_range_verify(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
			    uint64_t off, size_t len, void *buf,
			    int (*verify)(void *vctx, const void *buf, size_t len), void *vctx);

/*
 * Where fetch_blob_range_stream() hands a range's bytes as they arrive, so that no buffer holds the
 * range. Each host (and each retry) sends the range from its first byte: start() comes first and
 * must forget what an earlier attempt gave. data() takes the next len bytes and returns 0 for more,
 * 1 when it needs no more (the transfer is stopped there: not an error), or a negative errno with
 * strata_err set (-EBADMSG: the bytes do not verify, the next host is tried; -ENOMEM or -ECANCELED
 * end the call). finish() runs when a host's answer ended (every byte, or data() said 1): 0
 * accepts it, -EBADMSG tries the next host. The callbacks run on the calling thread.
 */
struct fetch_range_sink {
	int (*start)(void *ctx);
	int (*data)(void *ctx, const void *buf, size_t len);
	int (*finish)(void *ctx);
	void *ctx;
};

/*
 * Reads bytes [off, off + len) of blob `digest` as fetch_blob_range does (Range GET, redirects,
 * retries, next hosts, a 200 answer's prefix skipped, the client's read timeout), handing them to
 * sink as they arrive instead of into a buffer: memory stays bounded (curl's 256 KiB buffer)
 * whatever len is, and a sink that has what it needs stops the transfer. For len 0 start() and
 * finish() are called without a request. Returns 0 once finish() accepted a host's bytes, -EPIPE
 * when the blob ends before off + len (and data() did not stop it first), -EBADMSG when no host's
 * bytes were accepted, data()'s other errors, or the errors of fetch_blob_range; strata_err set.
 * Thread-safe when the sink is (each call uses it from one thread).
 */
int fetch_blob_range_stream(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
			    uint64_t off, uint64_t len, const struct fetch_range_sink *sink);

/*
 * One deadline for all the fetches of one read: between fetch_read_begin(c) and fetch_read_end()
 * on the same thread, every fetch_blob_range[_verify] call ends by begin + the client's
 * read_timeout_ms (or by its own deadline when that is earlier), so a read that needs several
 * fetches (a checkpoint window, then spans of several chunks) fails with -ETIMEDOUT once the read
 * timeout has passed since it began. Everything such a call waits for is bounded by it: range
 * GETs, retries' sleeps, Retry-After and per-host slot waits, token requests and credential
 * helpers. No effect when the client has no read timeout. Thread-local; no nesting.
 */
void fetch_read_begin(struct fetch_client *c);
void fetch_read_end(void);

/* Milliseconds left until the calling thread's read deadline (0 when it passed), or -1 when the
 * thread is in no read with a timeout. For waits outside the fetch calls (e.g. for another
 * reader's fetch of the same span). */
int64_t fetch_read_remaining_ms(void);

/* Counters since the client was created (all requests, including manifests and retries). */
struct fetch_counters {
	uint64_t requests; /* HTTP requests sent (each retry counts) */
	uint64_t bytes;	   /* response body bytes received */
	uint64_t retries;
	uint64_t range_requests;
	uint64_t fallbacks; /* requests handed from one host to the next */
};

void fetch_client_counters(struct fetch_client *c, struct fetch_counters *out);

/* One host's share of the counters, and its circuit breaker ("closed", "open", "half-open"). */
struct fetch_host_stats {
	const char *host;  /* "host[:port]" as in hosts.toml or the reference (no credentials) */
	uint64_t requests; /* attempts sent to it (redirects followed count too) */
	uint64_t bytes;
	uint64_t retries;
	uint64_t throttled;  /* HTTP 429 answers */
	uint64_t fallbacks;  /* requests handed from it to the next host */
	const char *breaker; /* static string */
	unsigned failures;   /* consecutive failures now */
};

/*
 * Calls fn once per host the client has sent (or tried to send) a request to, in first-use order.
 * s and its strings are valid during the call only. fn runs under the client's host lock: it must
 * not call into the client. Thread-safe. c NULL: no call.
 */
void fetch_client_hosts(struct fetch_client *c,
			void (*fn)(void *ctx, const struct fetch_host_stats *s), void *ctx);

/*
 * GETs the manifest at ref (its digest if pinned, else its tag) with an Accept header of `accept`
 * (comma-separated; NULL = the four image manifest and index types).
 * Verifies the digest when pinned. Returns 0 with malloc'd *body (NUL-terminated, *len bytes),
 * *media_type and *digest ("sha256:..." of the body) — any of media_type/digest may be NULL —
 * or -ENOENT when the tag or manifest does not exist, or the errors of fetch_resolve.
 */
int fetch_manifest_get(struct fetch_client *c, const struct fetch_ref *ref, const char *accept,
		       char **body, size_t *len, char **media_type, char **digest);

/*
 * Uploads blob data (len bytes, whose digest is `digest`) to ref's repository: HEAD first and skip
 * when present, else POST /v2/<name>/blobs/uploads/ and PUT <location>?digest=... (monolithic).
 * Returns 0, or negative errno with strata_err set (-EACCES, -EIO with the HTTP status, network).
 */
int fetch_blob_push(struct fetch_client *c, const struct fetch_ref *ref, const void *data,
		    size_t len, const char *digest);

/*
 * Whether a push to ref's repository has a host to go to, without sending any request: a host of
 * the registry's hosts.toml list with the push capability (by default only the upstream server;
 * mirrors do not take pushes unless their capabilities say so), the server not counting under
 * strict_cache. Returns 0, or -EACCES with strata_err set ("<ref>: --strict-cache forbids pushing
 * to the upstream registry <host> (...)"), or the errors of loading hosts.toml. Thread-safe.
 */
int fetch_push_check(struct fetch_client *c, const struct fetch_ref *ref);

/* PUTs a manifest body under `tag_or_digest` in ref's repository with Content-Type media_type.
 * Returns 0, or negative errno with strata_err set. */
int fetch_manifest_push(struct fetch_client *c, const struct fetch_ref *ref,
			const char *tag_or_digest, const char *media_type, const void *body,
			size_t len);

/*
 * OCI referrers API: GET /v2/<name>/referrers/<digest>[?artifactType=<type>]. Returns 0 with the
 * malloc'd image index JSON in *body (*len bytes), -ENOTSUP when the registry does not implement the API
 * (404 or 405 without an OCI index body), or other negative errno.
 */
int fetch_referrers(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		    const char *artifact_type, char **body, size_t *len);

#endif

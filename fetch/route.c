/* SPDX-License-Identifier: Apache-2.0 */
/* Routing of registry requests over the endpoints hosts.toml lists for a registry: mirrors in
 * order, then the upstream server, each for what its capabilities allow, with its URL and TLS. */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "hosts.h"
#include "registry_i.h"
#include "util/log.h"

/* The host list of one registry domain, loaded on first use and kept until the client is freed. */
struct reg_hosts {
	char *domain;
	struct fetch_hosts *hosts;
	struct host_cfg *cfg; /* fetch_hosts_count(hosts) entries, in order */
	struct reg_hosts *next;
};

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

void fetch_route_clear(struct fetch_client *c)
{
	while (c->reg) {
		struct reg_hosts *rh = c->reg;

		c->reg = rh->next;
		reg_hosts_free(rh);
	}
}

/* --- host lists (hosts.toml): which endpoints serve a registry, in order --- */

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
 * strata_err set (an invalid hosts.toml). Thread-safe. Loaded under the client's lock (unlike
 * authorize.c's credentials, which may wait for a helper), so that a list's warnings are logged
 * once. */
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
		strata_log(LOG_INFO, "%s: %zu host(s) from %s", domain,
			   fetch_hosts_count(rh->hosts), fetch_hosts_source(rh->hosts));
	rh->next = c->reg;
	c->reg = rh;
out:
	pthread_mutex_unlock(&c->hosts_lock);
	*out = rh;
	return rc;
}

/* --- URLs --- */

/*
 * Prepares r for "<host base>/<path>/<kind>/<x>" of ref's registry (kind: "blobs", "manifests",
 * "referrers", "blobs/uploads" with x ""), sent by fetch_route_request() to each eligible host in
 * turn; *url receives the URL of the host tried last. r->what becomes "<domain>/<path>@<x>" for a
 * digest, "<domain>/<path>:<x>" for a tag, "<domain>/<path>" without x; callers may point it
 * elsewhere. *url and *what are malloc'd (the caller frees them, also on failure, where they may be
 * NULL). x is borrowed until the request ends. Returns 0 or -ENOMEM.
 */
int fetch_route_init(struct req *r, struct fetch_client *c, const struct fetch_ref *ref,
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

/* Appends "key=<value, URL-encoded>" to *url's query (replacing *url). Returns 0 or -ENOMEM, or
 * -EINVAL for a URL libcurl cannot parse. */
int fetch_route_url_add_query(char **url, const char *key, const char *value)
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
		rc = fetch_route_url_add_query(&url, "ns", r->ref->domain);
	if (rc == 0 && r->query_key)
		rc = fetch_route_url_add_query(&url, r->query_key, r->query_value);
	if (rc == -EINVAL)
		rc = strata_err(EINVAL, "%s: cannot build a URL for host %s", r->what,
				hc->host->host);
	free(*r->urlp);
	*r->urlp = url;
	r->url = url;
	r->host = hc->host->host;
	r->hc = hc;
	return rc;
}

/* --- routing a request over the hosts --- */

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
	return strata_err(
		EACCES,
		"%s: --strict-cache forbids pushing to the upstream registry %s "
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
		return strata_err(EACCES,
				  "%s/%s: no host configured for %s has the push capability",
				  ref->domain, ref->path, ref->domain);
	if (asprintf(&what, "%s/%s", ref->domain, ref->path) < 0)
		return -ENOMEM;
	rc = push_refused(what, server);
	free(what);
	return rc;
}

/*
 * Runs r on each host of its registry that has the capability it needs, in hosts.toml order, until
 * one succeeds (fetch_retry_request() with its retries, then r->check). A host that fails in a way
 * may_fall_back() accepts hands over to the next; the error returned names the last host tried.
 * With strict_cache the upstream server is never contacted. Requests without r->ref (an upload
 * location) go to r->url as they are.
 */
int fetch_route_request(struct req *r)
{
	struct fetch_client *c = r->c;
	const struct reg_hosts *rh;
	const struct fetch_host *skipped = NULL;
	unsigned cap = r->need_cap;
	int rc, tried = 0, n_mirrors = 0;
	size_t n;

	if (!r->ref) {
		rc = fetch_authorize_request(r);
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

			if (r->deadline_ms && fetch_now_ms() >= r->deadline_ms) {
				rc = fetch_deadline_err(r, rc);
				break;
			}
			rrc = fetch_http_sink_reset(r);
			if (rrc < 0)
				break; /* cannot rewind the output: keep the last host's error */
			/* bytes that do not verify are worth a warning; a mirror that is down or
			 * lacks the object is what mirrors do */
			strata_log(rc == -EBADMSG ? LOG_WARNING : LOG_NOTICE,
				   "%s: %s failed (%s); "
				   "trying %s",
				   r->what, r->host, strata_errmsg(rc), hc->host->host);
			atomic_fetch_add_explicit(&c->n_fallbacks, 1, memory_order_relaxed);
			if (r->hs)
				atomic_fetch_add_explicit(&r->hs->n_fallbacks, 1,
							  memory_order_relaxed);
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
		rc = fetch_authorize_request(r);
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
		return strata_err(rc == -ENOENT ? ENOENT : EHOSTUNREACH,
				  "%s: no mirror could serve it "
				  "and --strict-cache forbids the upstream registry %s%s",
				  r->what, skipped->host, last);
	}
	if (!tried)
		return strata_err(EACCES, "%s: no host configured for %s has the %s capability",
				  r->what, r->ref->domain,
				  cap == FETCH_CAP_PUSH	   ? "push" :
				  cap == FETCH_CAP_RESOLVE ? "resolve" :
							     "pull");
	return rc;
}

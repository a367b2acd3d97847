/* SPDX-License-Identifier: Apache-2.0 */
/* Registry authentication of requests: a 401 challenge answered with a bearer token or Basic
 * credentials, the credentials looked up once per registry host, and the challenges remembered. */
#include "registry.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "registry_i.h"
#include "util/log.h"

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

static void reg_auth_free(struct reg_auth *ra)
{
	if (!ra)
		return;
	fetch_creds_clear(&ra->creds);
	fetch_tokens_free(ra->tokens);
	free(ra->key);
	free(ra);
}

void fetch_authorize_clear(struct fetch_client *c)
{
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
}

/* --- credentials and remembered challenges --- */

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

/* The credentials and token cache for key, looked up on first use (fetch_creds_lookup, outside the
 * client's lock: a credential helper may take seconds; a failure other than "none" is logged once,
 * without secrets, and means anonymous). limit_ms > 0 bounds a credential helper (a read's
 * deadline): a helper cut short by it is not remembered, so that a later request asks again.
 * Returns 0 with *out borrowed from the client, or -ENOMEM, or -ETIMEDOUT with strata_err set.
 * Thread-safe. Unlike route.c's host lists (loaded under their lock, so that a list's warnings
 * are logged once), the lookup runs unlocked and a slower thread's result is dropped. */
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
		strata_log(LOG_WARNING, "%s: cannot read credentials (%s); continuing anonymously",
			   key, strata_errmsg(rc));
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
	int rc = reg_auth_get(r->c, auth_key(r), fetch_deadline_left_ms(r), ra);

	if (rc == -ETIMEDOUT && r->deadline_ms)
		rc = fetch_deadline_err(r, rc);
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
				     fetch_deadline_left_ms(r), &value);
	if (rc < 0 && r->deadline_ms && fetch_now_ms() >= r->deadline_ms)
		/* the issuer did not answer within the read's time */
		return fetch_deadline_err(r, rc);
	if (rc < 0)
		return rc;
	if (strncasecmp(value, "Bearer ", 7) != 0) { /* fetch_tokens_get's contract */
		explicit_bzero(value, strlen(value));
		free(value);
		return strata_err(EIO, "%s: unexpected authorization from the token cache",
				  r->what);
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
			  ra->have_creds ?
				  "credentials from the docker config for this registry" :
				  "anonymous: no credentials in the docker config for this registry",
			  cause);
}

/* --- the 401 -> token flow --- */

/*
 * fetch_retry_request() with registry authentication. A token remembered for this (host,
 * repository) is sent up front. A 401 with a Bearer or Basic challenge gets a token (or sends the
 * credentials) and the request is repeated: the first 401 with a token makes its cache forget it
 * and fetch a fresh one (a token that expired mid-read), a 401 after that, any 403 and an issuer's
 * refusal are final (-EACCES, naming the host; no secrets in any message). Requests without
 * auth_ref are plain.
 */
int fetch_authorize_request(struct req *r)
{
	const struct reg_auth *ra = NULL;
	struct fetch_challenge ch = { 0 };
	int rc, have_ch, rounds = 0;

	if (!r->auth_ref) {
		rc = fetch_retry_request(r);
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
			strata_debug("%s: cannot authorize up front (%s)", r->what,
				     strata_errmsg(rc));
			strata_err_clear();
			auth_reset(r);
			fetch_challenge_clear(&ch);
			have_ch = 0;
			rounds = 0;
		}
	}
	for (;;) {
		int sent = r->bearer || r->basic;

		rc = fetch_retry_request(r);
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
			rc = strata_err(EACCES,
					"%s: access denied (HTTP 401 from %s; unusable "
					"challenge: %s)",
					r->what, r->host, msg);
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
		if (fetch_http_sink_reset(r) < 0) {
			rc = strata_err(EIO,
					"%s: cannot rewind the output to retry with credentials",
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

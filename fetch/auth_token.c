/* SPDX-License-Identifier: Apache-2.0 */
/* Bearer tokens: asked from a challenge's issuer (anonymous, Basic, or an OAuth2 refresh token),
 * cached per (realm, service, scope) until shortly before they expire; Basic authorization values. */
#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "auth_i.h"
#include "util/log.h"
#include "util/mem.h"

#define TOKEN_BODY_MAX	 (1024 * 1024)
#define TOKEN_DEFAULT_S	 60
#define TOKEN_EARLY_S	 10
#define TOKEN_CONNECT_MS 10000L
#define TOKEN_TIMEOUT_MS 30000L
#define TOKEN_MAX_REDIRS 3L

const char *fetch_token_redirect_protocols(const char *realm)
{
	return strncasecmp(realm, "https://", 8) == 0 ? "https" : "http,https";
}

/* ---- the cache ---- */

struct token {
	char *realm, *service, *scope; /* "" for NULL */
	char *authorization;	       /* "Bearer <token>", a secret */
	int64_t expires_ms;	       /* CLOCK_MONOTONIC */
	struct token *next;
};

struct fetch_tokens {
	pthread_mutex_t mu;
	struct token *head; /* protected by mu */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_rc;

static void curl_init_once(void)
{
	curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void token_free(struct token *k)
{
	if (!k)
		return;
	free(k->realm);
	free(k->service);
	free(k->scope);
	fetch_auth_free_secret(k->authorization);
	free(k);
}

int fetch_tokens_new(struct fetch_tokens **out)
{
	struct fetch_tokens *t;

	*out = NULL;
	pthread_once(&curl_once, curl_init_once);
	if (curl_rc != CURLE_OK)
		return strata_err(EIO, "curl_global_init: %s", curl_easy_strerror(curl_rc));
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

void fetch_tokens_free(struct fetch_tokens *t)
{
	if (!t)
		return;
	while (t->head) {
		struct token *k = t->head;

		t->head = k->next;
		token_free(k);
	}
	pthread_mutex_destroy(&t->mu);
	free(t);
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

static int key_eq(const struct token *k, const struct fetch_challenge *ch)
{
	return strcmp(k->realm, nz(ch->realm)) == 0 && strcmp(k->service, nz(ch->service)) == 0 &&
	       strcmp(k->scope, nz(ch->scope)) == 0;
}

/* Unlinks and returns the entry for ch, or NULL. Caller holds t->mu. */
static struct token *unlink_key(struct fetch_tokens *t, const struct fetch_challenge *ch)
{
	for (struct token **pp = &t->head; *pp; pp = &(*pp)->next) {
		if (key_eq(*pp, ch)) {
			struct token *k = *pp;

			*pp = k->next;
			k->next = NULL;
			return k;
		}
	}
	return NULL;
}

/* ---- asking the issuer ---- */

/* The realm's host (userinfo dropped) for messages, into buf. */
static const char *realm_host(const char *realm, char *buf, size_t len)
{
	const char *h = strstr(realm, "://");
	size_t n;
	const char *at;

	h = h ? h + 3 : realm;
	n = strcspn(h, "/?#");
	at = memchr(h, '@', n);
	if (at) {
		n -= (size_t)(at + 1 - h);
		h = at + 1;
	}
	snprintf(buf, len, "%.*s", (int)(n < 200 ? n : 200), h);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return buf;
}

struct body {
	char *data;
	size_t len, cap;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct body *b = userp;
	size_t n = size * nmemb;

	if (b->len + n > TOKEN_BODY_MAX)
		return 0;
	if (util_grow((void **)&b->data, &b->cap, b->len + n + 1, 1) < 0)
		return 0;
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* Appends "&name=<escaped value>" (no '&' when *s is empty) to the malloc'd *s. */
static int append_param(CURL *h, char **s, const char *name, const char *value)
{
	char *esc = curl_easy_escape(h, value, 0);
	char *ns = NULL;
	int n;

	if (!esc)
		return -ENOMEM;
	n = asprintf(&ns, "%s%s%s=%s", *s ? *s : "", *s && **s ? "&" : "", name, esc);
	curl_free(esc);
	if (n < 0)
		return -ENOMEM;
	fetch_auth_free_secret(*s);
	*s = ns;
	return 0;
}

/* Appends service= and one scope= per space-separated scope of ch. */
static int append_service_scope(CURL *h, char **s, const struct fetch_challenge *ch)
{
	const char *p = ch->scope;
	int rc = 0;

	if (ch->service)
		rc = append_param(h, s, "service", ch->service);
	while (rc == 0 && p && *p) {
		size_t n = strcspn(p, " ");

		if (n > 0) {
			char *one = strndup(p, n);

			if (!one)
				return -ENOMEM;
			rc = append_param(h, s, "scope", one);
			free(one);
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	return rc;
}

/* A token fit to put in a header: visible ASCII, no spaces. */
static int token_ok(const char *s)
{
	if (!s || !s[0])
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* Asks the issuer for a token. Returns 0 with a malloc'd "Bearer <token>" in *auth and its lifetime in
 * *life_s, or a negative errno with strata_err. */
static int fetch_token(const struct fetch_challenge *ch, const struct fetch_creds *creds,
		       long limit_ms, char **auth, long *life_s)
{
	char host[256], errbuf[CURL_ERROR_SIZE] = "";
	struct body b = { 0 };
	CURL *h = curl_easy_init();
	char *url = NULL, *query = NULL;
	json_t *root = NULL;
	const char *tok;
	json_t *exp;
	long status = 0;
	CURLcode cc;
	int rc = 0, post = creds && creds->identity_token;

	realm_host(ch->realm, host, sizeof(host));
	if (!h)
		return strata_err(ENOMEM, "token request to %s: cannot create a curl handle", host);
	rc = append_service_scope(h, &query, ch);
	if (rc == 0 && post) {
		rc = append_param(h, &query, "grant_type", "refresh_token");
		if (rc == 0)
			rc = append_param(h, &query, "client_id", "strata");
		if (rc == 0)
			rc = append_param(h, &query, "refresh_token", creds->secret);
	}
	if (rc < 0)
		goto out;
	if (post || !query || !query[0])
		url = strdup(ch->realm);
	else if (asprintf(&url, "%s%c%s", ch->realm, strchr(ch->realm, '?') ? '&' : '?', query) < 0)
		url = NULL;
	if (!url) {
		rc = -ENOMEM;
		goto out;
	}
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR,
			     fetch_token_redirect_protocols(ch->realm)) != CURLE_OK) {
		rc = strata_err(EINVAL, "token request to %s: invalid realm URL", host);
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_USERAGENT, "strata/" STRATA_VERSION);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 limit_ms > 0 && limit_ms < TOKEN_CONNECT_MS ? limit_ms : TOKEN_CONNECT_MS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
			 limit_ms > 0 && limit_ms < TOKEN_TIMEOUT_MS ? limit_ms : TOKEN_TIMEOUT_MS);
	/* a redirected POST (307/308) would carry the refresh token to wherever it points */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, post ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, TOKEN_MAX_REDIRS);
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (post) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, query);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(query));
	} else if (creds) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, nz(creds->username));
		curl_easy_setopt(h, CURLOPT_PASSWORD, nz(creds->secret));
	}
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		rc = strata_err(EIO, "token request to %s failed: %s", host,
				errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status == 401 || status == 403) {
		rc = strata_err(EACCES, "token request to %s denied (HTTP %ld)", host, status);
		goto out;
	}
	if (status < 200 || status > 299) {
		rc = strata_err(EIO, "token request to %s failed (HTTP %ld)", host, status);
		goto out;
	}
	root = b.data ? json_loadb(b.data, b.len, 0, NULL) : NULL;
	tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !tok[0])
		tok = json_string_value(json_object_get(root, "access_token"));
	if (!token_ok(tok)) {
		rc = strata_err(EIO, "token request to %s: the answer has no usable token", host);
		goto out;
	}
	exp = json_object_get(root, "expires_in");
	*life_s = json_is_integer(exp) && json_integer_value(exp) > 0 ?
			  (json_integer_value(exp) > 86400L * 365 ? 86400L * 365 :
								    (long)json_integer_value(exp)) :
			  TOKEN_DEFAULT_S;
	if (asprintf(auth, "Bearer %s", tok) < 0) {
		*auth = NULL;
		rc = -ENOMEM;
	}
out:
	if (root) {
		json_t *s = json_object_get(root, "token");
		json_t *a = json_object_get(root, "access_token");

		if (json_is_string(s))
			explicit_bzero((char *)json_string_value(s), json_string_length(s));
		if (json_is_string(a))
			explicit_bzero((char *)json_string_value(a), json_string_length(a));
		json_decref(root);
	}
	if (b.data) {
		explicit_bzero(b.data, b.len);
		free(b.data);
	}
	fetch_auth_free_secret(query);
	free(url);
	curl_easy_cleanup(h);
	return rc;
}

/* ---- authorization values ---- */

static int basic_authorization(const struct fetch_creds *creds, char **authorization)
{
	char *pair = NULL, *b64;
	int n;

	if (!creds || creds->identity_token || !creds->username || !creds->secret)
		return strata_err(EACCES,
				  "the registry asks for a username and password (Basic auth) and "
				  "none are configured");
	n = asprintf(&pair, "%s:%s", creds->username, creds->secret);
	if (n < 0)
		return -ENOMEM;
	b64 = util_base64_encode(pair, (size_t)n);
	fetch_auth_free_secret(pair);
	if (!b64)
		return -ENOMEM;
	n = asprintf(authorization, "Basic %s", b64);
	fetch_auth_free_secret(b64);
	if (n < 0) {
		*authorization = NULL;
		return -ENOMEM;
	}
	return 0;
}

int fetch_tokens_get(struct fetch_tokens *t, const struct fetch_challenge *ch,
		     const struct fetch_creds *creds, char **authorization)
{
	return fetch_tokens_get_within(t, ch, creds, 0, authorization);
}

int fetch_tokens_get_within(struct fetch_tokens *t, const struct fetch_challenge *ch,
			    const struct fetch_creds *creds, long limit_ms, char **authorization)
{
	struct token *k = NULL;
	char *auth = NULL;
	long life_s = 0;
	int64_t early_ms;
	int rc = 0;

	*authorization = NULL;
	if (!ch->scheme)
		return strata_err(EINVAL, "no authentication challenge");
	if (strcmp(ch->scheme, "basic") == 0)
		return basic_authorization(creds, authorization);
	if (strcmp(ch->scheme, "bearer") != 0 || !ch->realm)
		return strata_err(EINVAL, "unsupported authentication scheme");

	pthread_mutex_lock(&t->mu);
	for (struct token *c = t->head; c; c = c->next) {
		if (key_eq(c, ch)) {
			if (fetch_now_ms() < c->expires_ms) {
				*authorization = strdup(c->authorization);
				rc = *authorization ? 0 : -ENOMEM;
				pthread_mutex_unlock(&t->mu);
				return rc;
			}
			break;
		}
	}
	pthread_mutex_unlock(&t->mu);

	/* not under the lock: the request may take seconds */
	rc = fetch_token(ch, creds, limit_ms, &auth, &life_s);
	if (rc < 0)
		goto out;
	*authorization = strdup(auth);
	if (!*authorization) {
		rc = -ENOMEM;
		goto out;
	}
	early_ms = life_s >= 2 * TOKEN_EARLY_S ? TOKEN_EARLY_S * 1000L : life_s * 500L;
	k = calloc(1, sizeof(*k));
	if (!k)
		goto out; /* the token is returned, just not cached */
	k->realm = strdup(nz(ch->realm));
	k->service = strdup(nz(ch->service));
	k->scope = strdup(nz(ch->scope));
	if (!k->realm || !k->service || !k->scope)
		goto out;
	k->authorization = auth;
	auth = NULL;
	k->expires_ms = fetch_now_ms() + life_s * 1000L - early_ms;
	pthread_mutex_lock(&t->mu);
	token_free(unlink_key(t, ch));
	k->next = t->head;
	t->head = k;
	k = NULL;
	pthread_mutex_unlock(&t->mu);
out:
	token_free(k);
	fetch_auth_free_secret(auth);
	if (rc < 0) {
		fetch_auth_free_secret(*authorization);
		*authorization = NULL;
	}
	return rc;
}

void fetch_tokens_invalidate(struct fetch_tokens *t, const struct fetch_challenge *ch)
{
	struct token *k;

	if (!t || !ch || !ch->scheme || strcmp(ch->scheme, "bearer") != 0)
		return;
	pthread_mutex_lock(&t->mu);
	k = unlink_key(t, ch);
	pthread_mutex_unlock(&t->mu);
	token_free(k);
}

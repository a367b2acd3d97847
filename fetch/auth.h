/* SPDX-License-Identifier: Apache-2.0 */
/* Registry authentication: WWW-Authenticate challenges (auth_challenge.c), Docker config credentials
 * (auth_creds.c, helpers in auth_helper.c), a bearer token cache (auth_token.c). */
#ifndef STRATA_FETCH_AUTH_H
#define STRATA_FETCH_AUTH_H

/*
 * One challenge from a WWW-Authenticate header (RFC 7235). All strings are malloc'd and owned by the
 * struct; free them with fetch_challenge_clear().
 */
struct fetch_challenge {
	char *scheme;  /* "bearer" or "basic", lowercased */
	char *realm;   /* Bearer: the token issuer's URL, never NULL; Basic: may be NULL */
	char *service; /* may be NULL */
	char *scope;   /* may be NULL; several scopes are separated by spaces */
};

/*
 * Parses one WWW-Authenticate header value: a comma-separated list of challenges, each a scheme
 * followed by a token68 or by auth-params (name = token / quoted-string with \-escapes; names and
 * schemes case-insensitive). The first Bearer or Basic challenge is returned; other schemes are
 * skipped. A Bearer challenge needs a realm that starts with "https://", or "http://" for an
 * issuer on a loopback address (127.0.0.0/8, ::1, localhost): it gets the registry's credentials.
 * Returns 0 with *out filled (caller frees with fetch_challenge_clear), or -EINVAL with strata_err
 * for a syntax error, a duplicate parameter, a Bearer challenge without a usable realm (a plain
 * http one elsewhere than on loopback included), or a header
 * with no Bearer or Basic challenge; *out is zeroed then. -ENOMEM. Thread-safe.
 */
int fetch_challenge_parse(const char *value, struct fetch_challenge *out);

/* Frees the strings in c and zeroes it. Accepts NULL and a zeroed struct. */
void fetch_challenge_clear(struct fetch_challenge *c);

/* Credentials for one registry. Strings are malloc'd and owned by the struct. */
struct fetch_creds {
	char *username;	    /* may be NULL when identity_token is set */
	char *secret;	    /* the password, or the identity (refresh) token; never NULL */
	int identity_token; /* 1: secret is an OAuth2 refresh token ("identitytoken", or a credential
			     * helper's Username "<token>") */
};

/*
 * Looks up the credentials for a registry host as written in references ("docker.io", "ghcr.io",
 * "127.0.0.1:5000") the way the docker CLI does, in a docker config.json: config_path, or when NULL
 * $DOCKER_CONFIG/config.json, or else $HOME/.docker/config.json.
 *   1. credHelpers[<host>] names a helper: run "docker-credential-<name> get" (found on $PATH) with
 *      the server URL on stdin, read {"ServerURL","Username","Secret"} from its stdout.
 *   2. else credsStore names a helper: the same; when it answers "credentials not found" the
 *      `auths` entry is used.
 *   3. else auths[<host>]: "auth" = base64("user:password"), or "username" + "password";
 *      "identitytoken" when present wins (identity_token = 1, username from "auth" if any).
 * Keys match when their host part (scheme and path dropped, case-insensitive) is the host; for
 * docker.io the server URL is "https://index.docker.io/v1/" and keys for "index.docker.io",
 * "docker.io" and "registry-1.docker.io" match, in that order of preference.
 * A helper runs in its own process group with stderr inherited, its stdout capped at 64 KiB; it is
 * killed (SIGKILL, whole group) when it has not finished within 10 s.
 * Returns 0 with *out filled (caller frees with fetch_creds_clear); -ENOENT when there is no config
 * file or no credentials for host (strata_err says so); -EINVAL for a malformed config file or
 * helper answer; -ETIMEDOUT for a helper that did not finish; -EIO for a helper that could not be run
 * or failed; -ENOMEM. On failure *out is zeroed. Messages never contain a secret or helper output.
 * Thread-safe (spawns with posix_spawnp; reads the environment).
 */
int fetch_creds_lookup(const char *config_path, const char *host, struct fetch_creds *out);

/* fetch_creds_lookup, with a credential helper given at most limit_ms (when > 0 and shorter than
 * the helper timeout): for a lookup inside a read with a deadline. */
int fetch_creds_lookup_within(const char *config_path, const char *host, long limit_ms,
			      struct fetch_creds *out);

/* Wipes and frees the strings in c and zeroes it. Accepts NULL and a zeroed struct. */
void fetch_creds_clear(struct fetch_creds *c);

/* For tests: the credential helper timeout in milliseconds (default 10000; <= 0 restores it). */
void fetch_auth_set_helper_timeout_ms(long ms);

/* The credential helper timeout in force, in milliseconds. */
long fetch_auth_helper_timeout_ms(void);

/* A thread-safe cache of bearer tokens keyed by (realm, service, scope). */
struct fetch_tokens;

/* Returns 0 and *out (free with fetch_tokens_free), or -ENOMEM / -EIO (curl_global_init failed). */
int fetch_tokens_new(struct fetch_tokens **out);

/* Frees the cache and wipes the tokens in it. Accepts NULL. No fetch_tokens_get() may be running. */
void fetch_tokens_free(struct fetch_tokens *t);

/*
 * Returns in *authorization a malloc'd Authorization header value (without "Authorization: ") for
 * the challenge ch; the caller frees it (it is a secret: never log it).
 *   Basic: "Basic base64(username:secret)"; needs creds with a username and a password
 *          (-EACCES otherwise). Not cached.
 *   Bearer: "Bearer <token>": the cached token for (realm, service, scope) while it is fresh, else a
 *          new one from the issuer, cached:
 *          - creds NULL: anonymous GET <realm>?service=<service>&scope=<scope> (one scope= per
 *            space-separated scope);
 *          - username + password: the same GET with Basic auth;
 *          - identity token: POST <realm> (application/x-www-form-urlencoded) grant_type=
 *            refresh_token, refresh_token, service, scope, client_id=strata, as the docker CLI does
 *            (distribution's OAuth2 spec); the answer's "access_token" is used.
 *          The answer's "token" (or "access_token") is used; "expires_in" (default 60 s when absent
 *          or not positive) counts from when the answer arrived ("issued_at" is ignored: clocks
 *          differ), and the token is treated as expired 10 s early, or half its lifetime early
 *          when that is shorter than 20 s.
 * The issuer request has a 10 s connect timeout and a 30 s total timeout and reads at most 1 MiB;
 * a GET follows at most 3 redirects (Basic credentials are not sent to another host; see
 * fetch_token_redirect_protocols for where they may lead), the POST none.
 * Two threads missing the same key at once may both fetch; the later answer is cached.
 * The cache does not key on creds: use one cache per set of credentials.
 * Returns 0; -EACCES when the issuer answers 401 or 403 (strata_err "token request to <realm host>
 * denied (HTTP 401)") or Basic has no usable creds; -EIO for another failure (connection, HTTP
 * status, a response without a token); -EINVAL for an unsupported challenge; -ENOMEM. On failure
 * *authorization is NULL. Messages never contain a secret or token. Thread-safe.
 */
int fetch_tokens_get(struct fetch_tokens *t, const struct fetch_challenge *ch,
		     const struct fetch_creds *creds, char **authorization);

/*
 * The protocols a token request for realm may be redirected to (curl's REDIR_PROTOCOLS_STR): "https"
 * for an https realm, so a redirect can never downgrade the request (its Basic credentials, the
 * token in the answer) to plain http, wherever the realm is; "http,https" for a plain http realm
 * (which fetch_challenge_parse accepts only on loopback). Never NULL. Thread-safe.
 */
const char *fetch_token_redirect_protocols(const char *realm);

/* fetch_tokens_get, with an issuer request (connect and whole transfer) of at most limit_ms when
 * > 0 and shorter than the defaults: for a token needed by a read with a deadline. A request cut
 * by the limit fails with -EIO "token request to <host> failed: <curl's timeout message>". */
int fetch_tokens_get_within(struct fetch_tokens *t, const struct fetch_challenge *ch,
			    const struct fetch_creds *creds, long limit_ms, char **authorization);

/*
 * Forgets the cached token for ch's (realm, service, scope), e.g. after the registry answered 401 to
 * a request that carried it (the token expired mid-read or was revoked). Does nothing for Basic
 * challenges or unknown keys. Thread-safe.
 */
void fetch_tokens_invalidate(struct fetch_tokens *t, const struct fetch_challenge *ch);

#endif

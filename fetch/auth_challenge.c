/* SPDX-License-Identifier: Apache-2.0 */
/* WWW-Authenticate challenges (RFC 7235): the first Bearer or Basic challenge of a header value. */
#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "util/log.h"

static int is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_token68_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~+/", c));
}

static size_t token_len(const char *p)
{
	size_t n = 0;

	while (is_tchar((unsigned char)p[n]))
		n++;
	return n;
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* At p: a token68 that ends the challenge (followed by OWS then ',' or the end)? Returns its end. */
static const char *token68_end(const char *p)
{
	const char *q = p;

	while (is_token68_char((unsigned char)*q))
		q++;
	if (q == p)
		return NULL;
	while (*q == '=')
		q++;
	q = skip_ows(q);
	return *q == ',' || *q == '\0' ? q : NULL;
}

/* At p (after OWS): "name BWS =" that starts an auth-param? */
static int param_starts(const char *p)
{
	size_t n = token_len(p);

	return n > 0 && *skip_ows(p + n) == '=';
}

/* Parses a quoted-string at *pp (at the opening quote) into a malloc'd *out. Returns 0, -EINVAL,
 * -ENOMEM. */
static int parse_quoted(const char **pp, char **out)
{
	const char *p = *pp + 1;
	char *buf = malloc(strlen(p) + 1);
	size_t o = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			break;
		if (c == '\\') {
			p++;
			c = (unsigned char)*p;
			if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f)
				goto bad;
		} else if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f) {
			goto bad;
		}
		buf[o++] = (char)c;
		p++;
	}
	buf[o] = '\0';
	*pp = p + 1;
	*out = buf;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}

/* Stores value into *slot (a challenge field being filled) unless already set. Takes value. */
static int set_param(char **slot, char *value, const char *name)
{
	if (*slot) {
		free(value);
		return strata_err(EINVAL, "WWW-Authenticate: duplicate parameter \"%s\"", name);
	}
	*slot = value;
	return 0;
}

/* Whether url's host is a loopback address or name (127.0.0.0/8, ::1, localhost). */
static int loopback_url(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL;
	int yes = 0;

	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		struct in_addr a4;

		if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
			yes = 1;
		else if (inet_pton(AF_INET, host, &a4) == 1)
			yes = (ntohl(a4.s_addr) >> 24) == 127;
	}
	curl_free(host);
	curl_url_cleanup(u);
	return yes;
}

int fetch_challenge_parse(const char *value, struct fetch_challenge *out)
{
	struct fetch_challenge cur = { 0 };
	const char *p = value;
	int found = 0, rc = 0;

	memset(out, 0, sizeof(*out));
	for (;;) {
		size_t n;
		int want;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		n = token_len(p);
		if (n == 0) {
			rc = strata_err(EINVAL,
					"WWW-Authenticate: expected an auth scheme at offset %zu",
					(size_t)(p - value));
			goto out;
		}
		want = !found && ((n == 6 && strncasecmp(p, "bearer", 6) == 0) ||
				  (n == 5 && strncasecmp(p, "basic", 5) == 0));
		if (want) {
			cur.scheme = strndup(p, n);
			if (!cur.scheme) {
				rc = -ENOMEM;
				goto out;
			}
			for (char *s = cur.scheme; *s; s++)
				if (*s >= 'A' && *s <= 'Z')
					*s = (char)(*s - 'A' + 'a');
		}
		p += n;
		if (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t') {
			rc = strata_err(EINVAL,
					"WWW-Authenticate: invalid character after the auth scheme");
			goto out;
		}
		p = skip_ows(p);
		if (!param_starts(p) && token68_end(p)) {
			p = token68_end(p);
		} else if (!param_starts(p) && *p != ',' && *p != '\0') {
			rc = strata_err(
				EINVAL,
				"WWW-Authenticate: expected auth-params or ',' at offset %zu",
				(size_t)(p - value));
			goto out;
		} else {
			/* auth-params, until what follows a comma is not a parameter */
			while (param_starts(p)) {
				const char *name = p;
				char *val = NULL;
				size_t nlen = token_len(p);

				p = skip_ows(p + nlen) + 1;
				p = skip_ows(p);
				if (*p == '"') {
					rc = parse_quoted(&p, &val);
				} else if (token_len(p) > 0) {
					val = strndup(p, token_len(p));
					rc = val ? 0 : -ENOMEM;
					p += token_len(p);
				} else {
					rc = -EINVAL;
				}
				if (rc == -EINVAL)
					rc = strata_err(
						EINVAL,
						"WWW-Authenticate: invalid value for parameter "
						"\"%.*s\"",
						(int)(nlen < 40 ? nlen : 40), name);
				if (rc < 0)
					goto out;
				if (want && nlen == 5 && strncasecmp(name, "realm", 5) == 0)
					rc = set_param(&cur.realm, val, "realm");
				else if (want && nlen == 7 && strncasecmp(name, "service", 7) == 0)
					rc = set_param(&cur.service, val, "service");
				else if (want && nlen == 5 && strncasecmp(name, "scope", 5) == 0)
					rc = set_param(&cur.scope, val, "scope");
				else
					free(val);
				if (rc < 0)
					goto out;
				p = skip_ows(p);
				if (*p == '\0')
					break;
				if (*p != ',') {
					rc = strata_err(
						EINVAL,
						"WWW-Authenticate: expected ',' at offset %zu",
						(size_t)(p - value));
					goto out;
				}
				while (*p == ' ' || *p == '\t' || *p == ',')
					p++;
			}
		}
		if (want)
			found = 1;
	}
	if (!found) {
		rc = strata_err(EINVAL, "WWW-Authenticate: no Bearer or Basic challenge");
		goto out;
	}
	if (strcmp(cur.scheme, "bearer") == 0 &&
	    (!cur.realm || (strncasecmp(cur.realm, "https://", 8) != 0 &&
			    strncasecmp(cur.realm, "http://", 7) != 0))) {
		rc = strata_err(EINVAL,
				"WWW-Authenticate: Bearer challenge without an http(s) realm");
		goto out;
	}
	if (strcmp(cur.scheme, "bearer") == 0 && strncasecmp(cur.realm, "http://", 7) == 0 &&
	    !loopback_url(cur.realm)) {
		/* the issuer gets the registry's credentials: never in clear over a network */
		rc = strata_err(EINVAL,
				"WWW-Authenticate: token realm %.120s is plain http (only a "
				"loopback issuer may be)",
				cur.realm);
		goto out;
	}
	*out = cur;
	memset(&cur, 0, sizeof(cur));
out:
	fetch_challenge_clear(&cur);
	return rc;
}

void fetch_challenge_clear(struct fetch_challenge *c)
{
	if (!c)
		return;
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	memset(c, 0, sizeof(*c));
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Parses image references with the docker/distribution grammar and normalizes them as containerd does. */
#include "ref.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/log.h"

#define DEFAULT_DOMAIN	 "docker.io"
#define LEGACY_DOMAIN	 "index.docker.io"
#define DEFAULT_API_HOST "registry-1.docker.io"
#define OFFICIAL_PREFIX	 "library/"
#define DEFAULT_TAG	 "latest"
#define NAME_MAX_LEN	 255
#define TAG_MAX_LEN	 128
#define SHA256_HEX_LEN	 64

/* Longest part of the user's input echoed back in an error message. */
#define ECHO_MAX 300

static int is_lower_alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static int is_alnum(char ch)
{
	return is_lower_alnum(ch) || (ch >= 'A' && ch <= 'Z');
}

static int is_word(char ch)
{
	return is_alnum(ch) || ch == '_';
}

static int is_hex_lower(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

/* The error every parse failure reports: the input (control characters shown as '?', so the
 * message stays one line) and what is wrong with it. */
static int bad(const char *input, const char *what)
{
	char echo[ECHO_MAX + 1];
	size_t i;

	for (i = 0; i < ECHO_MAX && input[i]; i++)
		echo[i] = (unsigned char)input[i] < 0x20 || input[i] == 0x7f ? '?' : input[i];
	echo[i] = '\0';
	return strata_err(EINVAL, "invalid reference '%s': %s", echo, what);
}

/* tag := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static int tag_valid(const char *t, size_t len)
{
	if (len == 0 || len > TAG_MAX_LEN || !is_word(t[0]))
		return 0;
	for (size_t i = 1; i < len; i++)
		if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
			return 0;
	return 1;
}

/* digest := "sha256:" 64 lowercase hex (the only algorithm strata verifies). */
static int digest_valid(const char *d, size_t len)
{
	if (len != 7 + SHA256_HEX_LEN || strncmp(d, "sha256:", 7) != 0)
		return 0;
	for (size_t i = 7; i < len; i++)
		if (!is_hex_lower(d[i]))
			return 0;
	return 1;
}

/* path-component := [a-z0-9]+ (('.' | '_' | '__' | '-'+) [a-z0-9]+)* */
static int component_valid(const char *p, size_t len)
{
	size_t i = 0;

	if (len == 0 || !is_lower_alnum(p[0]))
		return 0;
	while (i < len) {
		while (i < len && is_lower_alnum(p[i]))
			i++;
		if (i == len)
			return 1;
		/* a separator, then at least one alphanumeric */
		if (p[i] == '.') {
			i++;
		} else if (p[i] == '_') {
			i++;
			if (i < len && p[i] == '_')
				i++;
		} else if (p[i] == '-') {
			while (i < len && p[i] == '-')
				i++;
		} else {
			return 0;
		}
		if (i == len || !is_lower_alnum(p[i]))
			return 0;
	}
	return 1;
}

/* domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9] */
static int host_label_valid(const char *p, size_t len)
{
	if (len == 0 || !is_alnum(p[0]) || !is_alnum(p[len - 1]))
		return 0;
	for (size_t i = 1; i + 1 < len; i++)
		if (!is_alnum(p[i]) && p[i] != '-')
			return 0;
	return 1;
}

int fetch_port_valid(const char *p, size_t len)
{
	unsigned long v = 0;

	if (len == 0 || len > 5)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return 0;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	return v <= 65535;
}

/* domain := host [':' port], host := domain-component ('.' domain-component)* | '[' ipv6 ']' */
static int domain_valid(const char *d, size_t len)
{
	size_t host_end;

	if (len == 0)
		return 0;
	if (d[0] == '[') {
		const char *close = memchr(d, ']', len);
		size_t i;

		if (!close || close == d + 1)
			return 0;
		for (i = 1; d + i < close; i++)
			if (!is_hex_lower(d[i]) && !(d[i] >= 'A' && d[i] <= 'F') && d[i] != ':')
				return 0;
		host_end = (size_t)(close - d) + 1;
		if (host_end == len)
			return 1;
		return d[host_end] == ':' && fetch_port_valid(d + host_end + 1, len - host_end - 1);
	}

	const char *colon = memchr(d, ':', len);
	size_t start = 0;

	host_end = colon ? (size_t)(colon - d) : len;
	for (size_t i = 0; i <= host_end; i++) {
		if (i == host_end || d[i] == '.') {
			if (!host_label_valid(d + start, i - start))
				return 0;
			start = i + 1;
		}
	}
	if (!colon)
		return 1;
	return fetch_port_valid(colon + 1, len - host_end - 1);
}

/* Whether the first component of a name is a registry domain rather than part of the path. */
static int looks_like_domain(const char *first, size_t len)
{
	if (len == 9 && memcmp(first, "localhost", 9) == 0)
		return 1;
	return memchr(first, '.', len) || memchr(first, ':', len) || (len > 0 && first[0] == '[');
}

/* Checks every '/'-separated component of a path; returns NULL or what is wrong with it. */
static const char *path_problem(const char *p, size_t len)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++)
		if (p[i] >= 'A' && p[i] <= 'Z')
			return "repository name must be lowercase";
	for (size_t i = 0; i <= len; i++) {
		if (i < len && p[i] != '/')
			continue;
		if (i == start)
			return "empty path component (leading, trailing or double '/')";
		if (!component_valid(p + start, i - start))
			return "path components may only contain [a-z0-9] separated by '.', '_', '__' or '-'";
		start = i + 1;
	}
	return NULL;
}

static int is_hex64(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!is_hex_lower(s[i]))
			return 0;
	return i == SHA256_HEX_LEN;
}

void fetch_ref_free(struct fetch_ref *r)
{
	if (!r)
		return;
	free(r->domain);
	free(r->path);
	free(r->tag);
	free(r->digest);
	free(r);
}

int fetch_ref_parse(const char *s, struct fetch_ref **out)
{
	struct fetch_ref *r = NULL;
	const char *at, *name_end, *slash, *colon, *bracket, *tag = NULL, *first_slash;
	const char *path, *problem;
	size_t name_len, tag_len = 0, domain_len, path_len;
	int official, rc;

	*out = NULL;
	if (!s || !*s)
		return bad(s ? s : "", "empty reference");
	if (is_hex64(s))
		return bad(s, "a 64-character hex string is an image ID, not a reference");

	/* name [':' tag] ['@' digest]: the digest starts at the first '@' */
	at = strchr(s, '@');
	name_end = at ? at : s + strlen(s);
	if (at && !digest_valid(at + 1, strlen(at + 1)))
		return bad(s, "digest must be sha256:<64 lowercase hex>");

	/* the tag is after a ':' that follows the last '/' (and the ']' of an IPv6 domain) */
	slash = NULL;
	colon = NULL;
	bracket = NULL;
	for (const char *p = s; p < name_end; p++) {
		if (*p == '/')
			slash = p;
		else if (*p == ':')
			colon = p;
		else if (*p == ']')
			bracket = p;
	}
	if (colon && (!slash || colon > slash) && (!bracket || colon > bracket)) {
		tag = colon + 1;
		tag_len = (size_t)(name_end - tag);
		name_end = colon;
		if (tag_len == 0)
			return bad(s, "empty tag");
		if (!tag_valid(tag, tag_len))
			return bad(s, "tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
	}
	name_len = (size_t)(name_end - s);
	if (name_len == 0)
		return bad(s, "missing repository name");
	if (name_len > NAME_MAX_LEN)
		return bad(s, "repository name is longer than 255 characters");

	/* [domain '/'] path */
	first_slash = memchr(s, '/', name_len);
	if (first_slash && looks_like_domain(s, (size_t)(first_slash - s))) {
		domain_len = (size_t)(first_slash - s);
		path = first_slash + 1;
		if (!domain_valid(s, domain_len))
			return bad(s, "invalid registry domain");
	} else {
		domain_len = 0;
		path = s;
	}
	path_len = (size_t)(name_end - path);
	problem = path_problem(path, path_len);
	if (problem)
		return bad(s, problem);

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (domain_len == 0 ||
	    (domain_len == strlen(LEGACY_DOMAIN) && memcmp(s, LEGACY_DOMAIN, domain_len) == 0))
		r->domain = strdup(DEFAULT_DOMAIN);
	else
		r->domain = strndup(s, domain_len);
	official = strcmp(r->domain ? r->domain : "", DEFAULT_DOMAIN) == 0 &&
		   !memchr(path, '/', path_len);
	if (official) {
		r->path = malloc(strlen(OFFICIAL_PREFIX) + path_len + 1);
		if (r->path)
			sprintf(r->path, "%s%.*s", OFFICIAL_PREFIX, (int)path_len, path);
	} else {
		r->path = strndup(path, path_len);
	}
	if (tag)
		r->tag = strndup(tag, tag_len);
	else if (!at)
		r->tag = strdup(DEFAULT_TAG);
	if (at)
		r->digest = strdup(at + 1);
	if (!r->domain || !r->path || (!r->tag && (tag || !at)) || (at && !r->digest)) {
		rc = -ENOMEM;
		goto out;
	}
	*out = r;
	r = NULL;
	rc = 0;
out:
	fetch_ref_free(r);
	return rc;
}

char *fetch_ref_string(const struct fetch_ref *r)
{
	char *s = NULL;
	int n;

	assert(r && r->domain && r->path);
	n = asprintf(&s, "%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "",
		     r->tag ? r->tag : "", r->digest ? "@" : "", r->digest ? r->digest : "");
	return n < 0 ? NULL : s;
}

const char *fetch_ref_api_host(const struct fetch_ref *r)
{
	if (strcmp(r->domain, DEFAULT_DOMAIN) == 0)
		return DEFAULT_API_HOST;
	return r->domain;
}

int fetch_ref_is_loopback(const struct fetch_ref *r)
{
	const char *d = r->domain;
	char host[64];
	size_t len;

	if (d[0] == '[') {
		struct in6_addr a6;
		const char *close = strchr(d, ']');

		len = close ? (size_t)(close - d - 1) : 0;
		if (len == 0 || len >= sizeof(host))
			return 0;
		memcpy(host, d + 1, len);
		host[len] = '\0';
		return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}

	struct in_addr a4;

	len = strcspn(d, ":");
	if (len >= sizeof(host))
		return 0;
	memcpy(host, d, len);
	host[len] = '\0';
	if (strcasecmp(host, "localhost") == 0)
		return 1;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

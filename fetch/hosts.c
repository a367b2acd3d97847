/* SPDX-License-Identifier: Apache-2.0 */
/* The host list of a registry from containerd's hosts.toml: mirrors in table order, then the
 * server, each with its capabilities, TLS files, headers and timeouts; the default server. */
#include "hosts.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fetch/ref.h"
#include "hosts_i.h"
#include "toml_i.h"
#include "util/log.h"
#include "util/sha256.h"

#define DOCKER_DOMAIN	"docker.io"
#define DOCKER_API_HOST "registry-1.docker.io"
#define API_PATH	"/v2"

#define MAX_TIMEOUT_MS (24LL * 3600 * 1000)

/* The context of turning a tree into hosts. */
struct interp {
	const char *file;
	const char *base; /* directory relative ca/client paths resolve against */
	const char *registry;
	struct fetch_hosts *h;
};

/* ---- paths in hosts.toml ---- */

/* The directory of file: "." when it has no '/'. Malloc'd or NULL. */
static char *dir_of(const char *file)
{
	const char *slash = strrchr(file, '/');

	if (!slash)
		return strdup(".");
	if (slash == file)
		return strdup("/");
	return strndup(file, (size_t)(slash - file));
}

/* containerd's makeAbsPath: absolute paths unchanged, others joined to the hosts.toml directory. */
static char *resolve_path(const struct interp *in, const char *p)
{
	return p[0] == '/' ? strdup(p) : fetch_path_join(in->base, p);
}

/* ---- building hosts ---- */

static void host_clear(struct fetch_host *h)
{
	free(h->scheme);
	free(h->host);
	free(h->path);
	for (size_t i = 0; i < h->nca; i++)
		free(h->ca[i]);
	free(h->ca);
	for (size_t i = 0; i < h->nclient; i++) {
		free(h->client[i].cert);
		free(h->client[i].key);
	}
	free(h->client);
	for (size_t i = 0; i < h->nheaders; i++) {
		free(h->headers[i].name);
		free(h->headers[i].value);
	}
	free(h->headers);
	free(h->proxy);
}

void fetch_hosts_free(struct fetch_hosts *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++)
		host_clear(&h->hosts[i]);
	free(h->hosts);
	for (size_t i = 0; i < h->nwarnings; i++)
		free(h->warnings[i].msg);
	free(h->warnings);
	free(h->source);
	free(h);
}

/* A new zeroed host at the end of h. Returns NULL on allocation failure. */
struct fetch_host *fetch_hosts_add(struct fetch_hosts *h)
{
	struct fetch_host *hosts = realloc(h->hosts, (h->n + 1) * sizeof(*hosts)), *host;

	if (!hosts)
		return NULL;
	h->hosts = hosts;
	host = &hosts[h->n++];
	memset(host, 0, sizeof(*host));
	host->skip_verify = -1;
	host->dial_timeout_ms = -1;
	host->caps = FETCH_CAP_ALL;
	return host;
}

/* Appends a CA path; consumes path, also on failure. */
int fetch_host_add_ca(struct fetch_host *h, char *path)
{
	char **ca;

	if (!path)
		return -ENOMEM;
	ca = realloc(h->ca, (h->nca + 1) * sizeof(*ca));
	if (!ca) {
		free(path);
		return -ENOMEM;
	}
	h->ca = ca;
	h->ca[h->nca++] = path;
	return 0;
}

/* Appends a client pair; consumes cert and key (key may be NULL), also on failure. */
int fetch_host_add_client(struct fetch_host *h, char *cert, char *key, int want_key)
{
	struct fetch_host_client *c = NULL;

	if (cert && (key || !want_key))
		c = realloc(h->client, (h->nclient + 1) * sizeof(*c));
	if (!c) {
		free(cert);
		free(key);
		return -ENOMEM;
	}
	h->client = c;
	h->client[h->nclient].cert = cert;
	h->client[h->nclient].key = key;
	h->nclient++;
	return 0;
}

/* Appends a header; copies name and value. */
static int push_header(struct fetch_host *h, const char *name, const char *value)
{
	struct fetch_host_header *hd = realloc(h->headers, (h->nheaders + 1) * sizeof(*hd));

	if (!hd)
		return -ENOMEM;
	h->headers = hd;
	hd = &h->headers[h->nheaders];
	hd->name = strdup(name);
	hd->value = strdup(value);
	if (!hd->name || !hd->value) {
		free(hd->name);
		free(hd->value);
		return -ENOMEM;
	}
	h->nheaders++;
	return 0;
}

__attribute__((format(printf, 3, 4))) static int warn(struct interp *in, int line, const char *fmt,
						      ...)
{
	struct fetch_hosts *h = in->h;
	struct warning *w;
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	w = realloc(h->warnings, (h->nwarnings + 1) * sizeof(*w));
	if (!w)
		return -ENOMEM;
	h->warnings = w;
	w = &h->warnings[h->nwarnings];
	w->line = line;
	w->seq = h->nwarnings;
	if (asprintf(&w->msg, "%s:%d: %s", in->file, line, what) < 0)
		return -ENOMEM;
	h->nwarnings++;
	return 0;
}

static int warning_cmp(const void *a, const void *b)
{
	const struct warning *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int is_tchar(char c)
{
	return fetch_toml_is_bare(c) || (c && strchr("!#$%&'*+.^`|~", c));
}

static int set_caps(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	unsigned caps = 0;
	char e[TOML_ECHO_MAX];

	if (v->kind != T_ARRAY)
		return fetch_toml_fail(
			in->file, v->line,
			"\"capabilities\" must be an array of strings, e.g. [\"pull\", \"resolve\"]");
	for (size_t i = 0; i < v->n; i++) {
		const struct tnode *c = v->items[i];

		if (c->kind != T_STRING)
			return fetch_toml_fail(in->file, c->line,
					       "\"capabilities\" must be an array of strings");
		if (strcasecmp(c->str, "pull") == 0)
			caps |= FETCH_CAP_PULL;
		else if (strcasecmp(c->str, "resolve") == 0)
			caps |= FETCH_CAP_RESOLVE;
		else if (strcasecmp(c->str, "push") == 0)
			caps |= FETCH_CAP_PUSH;
		else
			return fetch_toml_fail(
				in->file, c->line,
				"unknown capability \"%s\" (expected \"pull\", \"resolve\" or \"push\")",
				TOML_ECHO(e, c->str));
	}
	host->caps = caps ? caps : FETCH_CAP_ALL; /* containerd: an empty list means all */
	return 0;
}

static int set_ca(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	const char *msg = "\"ca\" must be a path or an array of paths";
	int rc = 0;

	if (v->kind == T_STRING) {
		if (!v->str[0])
			return fetch_toml_fail(in->file, v->line, "empty path in \"ca\"");
		return fetch_host_add_ca(host, resolve_path(in, v->str));
	}
	if (v->kind != T_ARRAY)
		return fetch_toml_fail(in->file, v->line, "%s", msg);
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		const struct tnode *c = v->items[i];

		if (c->kind != T_STRING)
			return fetch_toml_fail(in->file, c->line, "%s", msg);
		if (!c->str[0])
			return fetch_toml_fail(in->file, c->line, "empty path in \"ca\"");
		rc = fetch_host_add_ca(host, resolve_path(in, c->str));
	}
	return rc;
}

static int set_client(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	const char *msg =
		"\"client\" must be a path, an array of paths or an array of [cert, key] pairs";
	int rc = 0;

	if (v->kind == T_STRING) {
		if (!v->str[0])
			return fetch_toml_fail(in->file, v->line, "empty path in \"client\"");
		return fetch_host_add_client(host, resolve_path(in, v->str), NULL, 0);
	}
	if (v->kind != T_ARRAY)
		return fetch_toml_fail(in->file, v->line, "%s", msg);
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		const struct tnode *c = v->items[i];
		const struct tnode *cert, *key;

		if (c->kind == T_STRING) {
			if (!c->str[0])
				return fetch_toml_fail(in->file, c->line,
						       "empty path in \"client\"");
			rc = fetch_host_add_client(host, resolve_path(in, c->str), NULL, 0);
			continue;
		}
		if (c->kind != T_ARRAY)
			return fetch_toml_fail(in->file, c->line, "%s", msg);
		if (c->n != 2)
			return fetch_toml_fail(
				in->file, c->line,
				"a \"client\" pair must have two elements: [cert, key]");
		cert = c->items[0];
		key = c->items[1];
		if (cert->kind != T_STRING || key->kind != T_STRING)
			return fetch_toml_fail(in->file, c->line,
					       "a \"client\" pair must be two strings: [cert, key]");
		if (!cert->str[0])
			return fetch_toml_fail(in->file, c->line,
					       "empty certificate path in \"client\" pair");
		/* "" as the key means the key is in the cert file (containerd's docs show [cert, ""]) */
		rc = fetch_host_add_client(host, resolve_path(in, cert->str),
					   key->str[0] ? resolve_path(in, key->str) : NULL,
					   key->str[0] != '\0');
	}
	return rc;
}

static int header_value_ok(const char *s)
{
	for (; *s; s++)
		if (fetch_toml_is_control((unsigned char)*s))
			return 0;
	return 1;
}

static int set_headers(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	char e[TOML_ECHO_MAX];
	int rc = 0;

	if (v->kind != T_TABLE)
		return fetch_toml_fail(
			in->file, v->line,
			"\"header\" must be a table: [header] or [host.\"...\".header]");
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		const char *name = v->keys[i];
		const struct tnode *val = v->items[i];
		int ok = name[0] != '\0';

		for (const char *c = name; *c; c++)
			ok = ok && is_tchar(*c);
		if (!ok)
			return fetch_toml_fail(in->file, val->line, "invalid header name \"%s\"",
					       TOML_ECHO(e, name));
		if (val->kind == T_STRING) {
			if (!header_value_ok(val->str))
				return fetch_toml_fail(
					in->file, val->line,
					"control character in the value of header \"%s\"", name);
			rc = push_header(host, name, val->str);
			continue;
		}
		if (val->kind != T_ARRAY)
			return fetch_toml_fail(
				in->file, val->line,
				"header \"%s\" must be a string or an array of strings", name);
		for (size_t j = 0; j < val->n && rc == 0; j++) {
			const struct tnode *s = val->items[j];

			if (s->kind != T_STRING)
				return fetch_toml_fail(
					in->file, s->line,
					"header \"%s\" must be a string or an array of strings",
					name);
			if (!header_value_ok(s->str))
				return fetch_toml_fail(
					in->file, s->line,
					"control character in the value of header \"%s\"", name);
			rc = push_header(host, name, s->str);
		}
	}
	return rc;
}

/* Go's time.ParseDuration for non-negative values, in milliseconds rounded up. */
static int parse_duration_ms(const char *s, long long *ms)
{
	static const struct {
		const char *unit;
		double ns;
	} units[] = {
		{ "ns", 1 },   { "us", 1e3 }, { "\xc2\xb5s", 1e3 }, { "\xce\xbcs", 1e3 },
		{ "ms", 1e6 }, { "s", 1e9 },  { "m", 60e9 },	    { "h", 3600e9 },
	};
	double total = 0;

	if (*s == '+')
		s++;
	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return 0;
	}
	if (!*s)
		return -EINVAL;
	while (*s) {
		double v = 0, scale = 1;
		int digits = 0;
		size_t best = 0, best_len = 0;

		for (; *s >= '0' && *s <= '9'; s++, digits++)
			v = v * 10 + (*s - '0');
		if (*s == '.')
			for (s++; *s >= '0' && *s <= '9'; s++, digits++)
				v += (*s - '0') * (scale /= 10);
		if (!digits)
			return -EINVAL;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t n = strlen(units[i].unit);

			if (strncmp(s, units[i].unit, n) == 0 && n > best_len) {
				best = i;
				best_len = n;
			}
		}
		if (!best_len)
			return -EINVAL;
		s += best_len;
		total += v * units[best].ns;
		if (total > (double)MAX_TIMEOUT_MS * 1e6)
			return -ERANGE;
	}
	*ms = (long long)(total / 1e6);
	if ((double)*ms * 1e6 < total)
		++*ms;
	return 0;
}

static int set_proxy(struct interp *in, const struct tnode *v, struct fetch_host *host)
{
	static const char *const schemes[] = { "http://", "https://", "socks5://", "socks5h://" };
	const char *rest = NULL;
	char e[TOML_ECHO_MAX];
	size_t hostlen;

	if (v->kind != T_STRING)
		return fetch_toml_fail(in->file, v->line, "\"proxy\" must be a string");
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]) && !rest; i++)
		if (strncasecmp(v->str, schemes[i], strlen(schemes[i])) == 0)
			rest = v->str + strlen(schemes[i]);
	if (!rest)
		return fetch_toml_fail(
			in->file, v->line,
			"invalid \"proxy\" \"%s\": expected http://, https://, socks5:// or socks5h://",
			TOML_ECHO(e, v->str));
	hostlen = strcspn(rest, "/?#");
	if (hostlen == 0 || strcspn(rest, " \t") < strlen(rest) ||
	    (rest[hostlen] && strcmp(rest + hostlen, "/") != 0))
		return fetch_toml_fail(in->file, v->line,
				       "invalid \"proxy\" \"%s\": expected scheme://host[:port]",
				       TOML_ECHO(e, v->str));
	if (!header_value_ok(v->str))
		return fetch_toml_fail(in->file, v->line, "control character in \"proxy\"");
	free(host->proxy);
	host->proxy = strdup(v->str);
	return host->proxy ? 0 : -ENOMEM;
}

/* The hostFileConfig fields (plus `server` at the top level). go-toml matches struct fields
 * case-insensitively, so containerd accepts "Capabilities" too; so does this. */
enum field {
	F_CAPS,
	F_CA,
	F_CLIENT,
	F_SKIP,
	F_OVERRIDE,
	F_HEADER,
	F_DIAL,
	F_PROXY,
	F_SERVER,
	F_COUNT
};

static const char *const field_names[F_COUNT] = {
	"capabilities", "ca",		"client", "skip_verify", "override_path",
	"header",	"dial_timeout", "proxy",  "server",
};

/* Applies the hostFileConfig keys of table t to host. top: t is the root, where `host` is handled by
 * the caller and `server` is returned in *server. */
static int apply_config(struct interp *in, const struct tnode *t, int top, struct fetch_host *host,
			int *override_path, const struct tnode **server)
{
	int seen[F_COUNT] = { 0 }, rc = 0;
	char e[TOML_ECHO_MAX];

	*override_path = 0;
	for (size_t i = 0; i < t->n && rc == 0; i++) {
		const char *key = t->keys[i];
		const struct tnode *v = t->items[i];
		int f = 0;

		if (top && strcmp(key, "host") == 0)
			continue;
		while (f < F_COUNT && strcasecmp(key, field_names[f]) != 0)
			f++;
		if (f == F_SERVER && !top)
			f = F_COUNT; /* containerd ignores `server` in a [host."..."] table */
		if (f < F_COUNT && seen[f])
			return fetch_toml_fail(
				in->file, v->line,
				"duplicate key \"%s\" (same as line %d: keys match case-insensitively)",
				TOML_ECHO(e, key), seen[f]);
		if (f < F_COUNT)
			seen[f] = v->line;
		switch (f) {
		case F_CAPS:
			rc = set_caps(in, v, host);
			break;
		case F_CA:
			rc = set_ca(in, v, host);
			break;
		case F_CLIENT:
			rc = set_client(in, v, host);
			break;
		case F_SKIP:
			if (v->kind != T_BOOL)
				return fetch_toml_fail(in->file, v->line,
						       "\"skip_verify\" must be true or false");
			host->skip_verify = (int)v->num;
			break;
		case F_OVERRIDE:
			if (v->kind != T_BOOL)
				return fetch_toml_fail(in->file, v->line,
						       "\"override_path\" must be true or false");
			*override_path = (int)v->num;
			break;
		case F_HEADER:
			rc = set_headers(in, v, host);
			break;
		case F_DIAL:
			if (v->kind != T_STRING ||
			    parse_duration_ms(v->str, &host->dial_timeout_ms) != 0)
				return fetch_toml_fail(
					in->file, v->line,
					"\"dial_timeout\" must be a duration string like \"500ms\" or "
					"\"2s\" (at most 24h)");
			break;
		case F_PROXY:
			rc = set_proxy(in, v, host);
			break;
		case F_SERVER:
			if (v->kind != T_STRING)
				return fetch_toml_fail(in->file, v->line,
						       "\"server\" must be a string (a URL)");
			*server = v;
			break;
		default:
			if (!top && strcmp(key, "host") == 0)
				rc = warn(
					in, v->line,
					"nested [host] tables are not supported; \"host\" ignored");
			else
				rc = warn(in, v->line, "unknown key \"%s\" ignored",
					  TOML_ECHO(e, key));
			break;
		}
	}
	return rc;
}

/* host[:port] or [v6]:port */
static int valid_authority(const char *a, size_t n)
{
	size_t i = 0;

	if (n && a[0] == '[') {
		for (i = 1; i < n && a[i] != ']'; i++)
			if (util_hexval(a[i]) < 0 && a[i] != ':' && a[i] != '.')
				return 0;
		if (i == n || i == 1)
			return 0;
		i++;
	} else {
		for (; i < n && a[i] != ':'; i++)
			if (!fetch_toml_is_bare(a[i]) && a[i] != '.' && a[i] != '~')
				return 0;
		if (i == 0)
			return 0;
	}
	if (i == n)
		return 1;
	return a[i] == ':' && fetch_port_valid(a + i + 1, n - i - 1);
}

/* Sets scheme, host and path from a host URL the way containerd's parseHostConfig does. */
static int set_url(struct interp *in, int line, const char *url, int override_path,
		   struct fetch_host *host)
{
	const char *scheme = "https", *rest = url, *path;
	char e[TOML_ECHO_MAX], *p = NULL;
	size_t alen, plen;
	int rc = 0;

	if (strncasecmp(url, "https://", 8) == 0) {
		rest = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		scheme = "http";
		rest = url + 7;
	} else if (strstr(url, "://")) {
		return fetch_toml_fail(in->file, line,
				       "unsupported scheme in \"%s\" (expected http:// or https://)",
				       TOML_ECHO(e, url));
	}
	alen = strcspn(rest, "/?#");
	path = rest + alen;
	if (alen == 0)
		return fetch_toml_fail(in->file, line, "missing host name in \"%s\"",
				       TOML_ECHO(e, url));
	if (memchr(rest, '@', alen))
		return fetch_toml_fail(in->file, line,
				       "credentials in host URL \"%s\" are not supported",
				       TOML_ECHO(e, url));
	if (!valid_authority(rest, alen))
		return fetch_toml_fail(
			in->file, line,
			"invalid host in \"%s\" (expected host[:port] or [ipv6]:port)",
			TOML_ECHO(e, url));
	plen = strcspn(path, "?#");
	if (path[plen])
		return fetch_toml_fail(in->file, line,
				       "query or fragment not allowed in host URL \"%s\"",
				       TOML_ECHO(e, url));
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f)
			return fetch_toml_fail(in->file, line,
					       "space or control character in host URL \"%s\"",
					       TOML_ECHO(e, url));
	if (plen) {
		/* room for "/v2" after the cleaned path */
		p = malloc(plen + sizeof(API_PATH));
		if (!p)
			return -ENOMEM;
		memcpy(p, path, plen + 1);
		fetch_path_clean(p);
		if (strcmp(p, "/") == 0)
			p[0] = '\0'; /* "https://h/" is the host root (containerd would build "//v2") */
		if (!override_path && (strlen(p) < 3 || strcmp(p + strlen(p) - 3, API_PATH) != 0))
			strcat(p, API_PATH);
	} else {
		p = strdup(override_path ? "" : API_PATH);
		if (!p)
			return -ENOMEM;
	}
	host->path = p;
	host->scheme = strdup(scheme);
	host->host = strndup(rest, alen);
	if (!host->scheme || !host->host)
		rc = -ENOMEM;
	return rc;
}

static int is_loopback(const char *registry)
{
	struct fetch_ref r = { .domain = (char *)registry };

	return strcmp(registry, "::1") == 0 || fetch_ref_is_loopback(&r);
}

/* The server containerd uses when hosts.toml names none (ConfigureHosts). */
int fetch_hosts_default_server(const char *registry, struct fetch_host *host)
{
	const char *name = registry, *scheme = "https";

	if (strcmp(registry, DOCKER_DOMAIN) == 0) {
		name = DOCKER_API_HOST;
	} else if (is_loopback(registry)) {
		scheme = "http";
		if (host->skip_verify < 0)
			host->skip_verify = 1;
	}
	host->scheme = strdup(scheme);
	host->host = strdup(name);
	host->path = strdup(API_PATH);
	host->caps = FETCH_CAP_ALL;
	host->is_server = 1;
	return host->scheme && host->host && host->path ? 0 : -ENOMEM;
}

static int build(struct interp *in, const struct tnode *root)
{
	const struct tnode *server = NULL, *hosts = fetch_toml_find(root, "host");
	struct fetch_host *host;
	int override_path, rc = 0;

	/* exactly "host": containerd orders mirrors by tables whose first key part is "host" */
	if (hosts && hosts->kind != T_TABLE)
		return fetch_toml_fail(in->file, hosts->line,
				       "\"host\" must be [host.\"URL\"] tables");
	for (size_t i = 0; hosts && i < hosts->n; i++) {
		const struct tnode *t = hosts->items[i];
		const char *url = hosts->keys[i];

		if (t->kind != T_TABLE)
			return fetch_toml_fail(
				in->file, t->line,
				"\"host\" must be [host.\"URL\"] tables, not a value");
		if (!url[0])
			return fetch_toml_fail(in->file, t->line, "empty host URL in [host.\"\"]");
		host = fetch_hosts_add(in->h);
		if (!host)
			return -ENOMEM;
		rc = apply_config(in, t, 0, host, &override_path, NULL);
		if (rc == 0)
			rc = set_url(in, t->line, url, override_path, host);
		if (rc)
			return rc;
	}
	host = fetch_hosts_add(in->h);
	if (!host)
		return -ENOMEM;
	rc = apply_config(in, root, 1, host, &override_path, &server);
	if (rc)
		return rc;
	host->is_server = 1;
	if (server && server->str[0])
		return set_url(in, server->line, server->str, override_path, host);
	/* no server: the registry itself, with the top-level TLS settings but all capabilities */
	return fetch_hosts_default_server(in->registry, host);
}

int fetch_hosts_check_registry(const char *registry)
{
	char e[TOML_ECHO_MAX];
	int ok;

	if (!registry || !registry[0])
		return strata_err(EINVAL, "invalid registry host \"\": empty");
	ok = strcmp(registry, ".") != 0 && strcmp(registry, "..") != 0 && strlen(registry) < 256;
	for (const char *c = registry; *c && ok; c++)
		ok = *c != '/' && (unsigned char)*c > 0x20 && *c != 0x7f;
	if (!ok)
		return strata_err(EINVAL, "invalid registry host \"%s\"", TOML_ECHO(e, registry));
	return 0;
}

int fetch_hosts_parse(const char *text, size_t len, const char *path, const char *registry,
		      struct fetch_hosts **out)
{
	struct interp in = { .file = path, .registry = registry };
	struct tnode *root = NULL;
	char *base = NULL;
	int rc;

	assert(path);
	in.h = calloc(1, sizeof(*in.h));
	base = dir_of(path);
	if (!in.h || !base) {
		rc = -ENOMEM;
		goto out;
	}
	in.base = base;
	rc = fetch_hosts_check_registry(registry);
	if (rc)
		goto out;
	rc = fetch_toml_parse(text, len, path, &root);
	if (rc)
		goto out;
	rc = build(&in, root);
	if (rc)
		goto out;
	if (in.h->nwarnings > 1)
		qsort(in.h->warnings, in.h->nwarnings, sizeof(*in.h->warnings), warning_cmp);
	in.h->source = strdup(path);
	if (!in.h->source)
		rc = -ENOMEM;
out:
	if (rc == -ENOMEM)
		strata_err(ENOMEM, "%s: out of memory", path);
	if (rc == 0) {
		*out = in.h;
		in.h = NULL;
	}
	fetch_hosts_free(in.h);
	fetch_toml_free(root);
	free(base);
	return rc;
}

/* ---- accessors ---- */

size_t fetch_hosts_count(const struct fetch_hosts *h)
{
	return h->n;
}

const struct fetch_host *fetch_hosts_get(const struct fetch_hosts *h, size_t i)
{
	return i < h->n ? &h->hosts[i] : NULL;
}

const char *fetch_hosts_source(const struct fetch_hosts *h)
{
	return h->source;
}

size_t fetch_hosts_warning_count(const struct fetch_hosts *h)
{
	return h->nwarnings;
}

const char *fetch_hosts_warning(const struct fetch_hosts *h, size_t i)
{
	return i < h->nwarnings ? h->warnings[i].msg : NULL;
}

int fetch_host_has_cap(const struct fetch_host *host, unsigned caps)
{
	return (host->caps & caps) == caps;
}

int fetch_host_is_mirror(const struct fetch_host *host, const char *registry)
{
	if (strcmp(host->host, registry) == 0)
		return 0;
	return !(strcmp(registry, DOCKER_DOMAIN) == 0 && strcmp(host->host, DOCKER_API_HOST) == 0);
}

char *fetch_host_base_url(const struct fetch_host *host)
{
	char *s;

	if (asprintf(&s, "%s://%s%s", host->scheme, host->host, host->path) < 0)
		return NULL;
	return s;
}

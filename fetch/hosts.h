/* SPDX-License-Identifier: Apache-2.0 */
/* Registry endpoints from containerd's hosts.toml (certs.d layout): mirrors in order, then the server.
 * The host model is hosts.c, the TOML subset parser toml.c, the certs.d lookup hosts_dir.c. */
#ifndef STRATA_FETCH_HOSTS_H
#define STRATA_FETCH_HOSTS_H

#include <stddef.h>

/* What a host may be used for (containerd's HostCapabilities). */
enum {
	FETCH_CAP_PULL = 1,    /* manifests and blobs by digest */
	FETCH_CAP_RESOLVE = 2, /* tag -> digest: a trusted operation */
	FETCH_CAP_PUSH = 4,
	FETCH_CAP_ALL = FETCH_CAP_PULL | FETCH_CAP_RESOLVE | FETCH_CAP_PUSH,
};

struct fetch_host_client {
	char *cert; /* absolute when the hosts.toml path was; never NULL */
	char *key;  /* NULL: the key is in the cert file */
};

struct fetch_host_header {
	char *name;  /* as written in the file (an RFC 9110 token) */
	char *value; /* no CR, LF or NUL */
};

/* One endpoint to try. All fields are owned by the struct fetch_hosts that holds it; read-only. */
struct fetch_host {
	char *scheme; /* "https" or "http" */
	char *host;   /* "mirror.example:5000", "[::1]:5000", "registry-1.docker.io" */
	char *path;   /* API root: "/v2", "/us/v2"; with override_path the URL's cleaned path as is,
			  * possibly "" (the host root) */
	unsigned caps;	 /* FETCH_CAP_* bits */
	int skip_verify; /* -1 unset (verify), 0, 1 */
	char **ca;	 /* CA files; relative paths in the file resolved against its directory */
	size_t nca;
	struct fetch_host_client *client;
	size_t nclient;
	struct fetch_host_header *headers; /* file order; a header with an array value gives one entry
					    * per element, in order */
	size_t nheaders;
	long long dial_timeout_ms; /* `dial_timeout` (containerd 2.x), -1 unset */
	char *proxy;		   /* `proxy` URL (containerd 2.x), NULL unset */
	int is_server; /* 1 for the upstream `server` (configured or default), always last */
};

struct fetch_hosts;

/*
 * Finds and reads the host configuration for registry (a reference's domain: "docker.io",
 * "127.0.0.1:5000", "[::1]:5000") the way containerd's HostDirFromRoot + loadHostDir do:
 * the first directory that exists of
 *     <hosts_dir>/<host>_<port>_   (only when registry has a ':port')
 *     <hosts_dir>/<registry>
 *     <hosts_dir>/_default
 * is the host directory. Its hosts.toml is parsed (fetch_hosts_parse); when that file is missing or
 * empty, the directory's Docker-style certificates are used instead: "*.crt" become `ca` and
 * "*.cert" client certificates (with "<name>.key" when it exists) of the default server.
 * With no host directory at all (hosts_dir NULL, "" or missing) the result is the default server
 * alone: https://<registry>/v2 (https://registry-1.docker.io/v2 for docker.io; http:// with
 * skip_verify=1, unless the file sets skip_verify, for localhost, 127.0.0.0/8 and ::1), all
 * capabilities.
 * A relative hosts_dir is taken relative to the current directory; the ca/client paths returned are
 * absolute.
 * Returns 0 and *out (caller frees with fetch_hosts_free). On failure *out is untouched and:
 * -EINVAL with strata_err "<file>:<line>: <what>" for a hosts.toml this parser rejects (unlike
 * containerd, which logs and falls back to the certificate files) or "invalid registry host ..."
 * for a registry name that is empty, has '/' or is "." or ".."; another negative errno with
 * strata_err naming the path when a directory or file exists but cannot be read; -ENOMEM.
 * Unknown keys are not errors: they are listed by fetch_hosts_warning(), which the caller logs.
 * Thread-safe (no shared state).
 */
int fetch_hosts_load(const char *hosts_dir, const char *registry, struct fetch_hosts **out);

/*
 * Parses one hosts.toml text of len bytes (need not be NUL-terminated; at most 1 MiB) for registry.
 * path (required) names the file in messages, and relative `ca`/`client` paths are resolved against
 * its directory (so they are absolute when path is).
 * Result, as containerd orders it: one entry per [host."URL"] table in the order the tables first
 * appear, then the server: `server` with the top-level keys, or, without `server`, the default
 * server for registry (see fetch_hosts_load) with the top-level ca, client, skip_verify, header,
 * dial_timeout and proxy but all capabilities and path "/v2".
 * A host URL without "http://" or "https://" gets https; its path is cleaned and gets "/v2"
 * appended unless it already ends in "/v2" or override_path = true. capabilities defaults to
 * pull+resolve+push (also for an empty array); values are case-insensitive.
 * TOML accepted: comments, bare and quoted keys, [dotted."table".headers], one-line basic strings
 * (escapes \b \t \n \f \r \" \\ \uXXXX \UXXXXXXXX) and literal strings, booleans, decimal
 * integers, arrays (nested, multi-line, trailing comma). Rejected with a message: inline tables,
 * arrays of tables, dotted keys, multi-line strings, floats, dates, duplicate keys and tables,
 * invalid UTF-8, NUL bytes, anything after a value but a comment.
 * Field names (capabilities, ca, client, skip_verify, override_path, header, dial_timeout, proxy,
 * server) match case-insensitively, as go-toml matches them for containerd; "host" must be exact.
 * Unknown keys and tables are ignored as containerd ignores them, each with a warning.
 * Returns 0 and *out (free with fetch_hosts_free), -EINVAL with strata_err
 * "<path>:<line>: <what>" for a syntax error, a wrong value type or an invalid value, -ENOMEM.
 */
int fetch_hosts_parse(const char *text, size_t len, const char *path, const char *registry,
		      struct fetch_hosts **out);

/* Frees h and every host, string and warning in it. Accepts NULL. */
void fetch_hosts_free(struct fetch_hosts *h);

/* Number of hosts: always >= 1 (the server is last). */
size_t fetch_hosts_count(const struct fetch_hosts *h);

/* Host i (0 <= i < count), in the order to try. Borrowed from h; NULL when i is out of range. */
const struct fetch_host *fetch_hosts_get(const struct fetch_hosts *h, size_t i);

/* The hosts.toml or host directory the configuration came from, or NULL for the built-in default.
 * Borrowed from h. */
const char *fetch_hosts_source(const struct fetch_hosts *h);

/* Warnings ("<file>:<line>: unknown key \"x\" ignored"), in file order. Borrowed from h; NULL when i
 * is out of range. Nothing is logged by this module: the caller decides. */
size_t fetch_hosts_warning_count(const struct fetch_hosts *h);
const char *fetch_hosts_warning(const struct fetch_hosts *h, size_t i);

/* 1 when host has every capability in caps (FETCH_CAP_* bits), else 0. Use
 * fetch_host_has_cap(h, FETCH_CAP_RESOLVE) before asking a host for a tag: a host with PULL only
 * may serve manifests and blobs by digest, never resolve a tag. */
int fetch_host_has_cap(const struct fetch_host *host, unsigned caps);

/* 1 when requests to host for an image on registry must carry "?ns=<registry>" (containerd's
 * isProxy: the host is not the registry itself; registry-1.docker.io counts as docker.io). */
int fetch_host_is_mirror(const struct fetch_host *host, const char *registry);

/* "<scheme>://<host><path>", e.g. "https://mirror.example:5000/v2". Returns a malloc'd string
 * (caller frees) or NULL on allocation failure. */
char *fetch_host_base_url(const struct fetch_host *host);

#endif

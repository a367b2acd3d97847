/* SPDX-License-Identifier: Apache-2.0 */
/* Image references, normalized as containerd does (ubuntu -> docker.io/library/ubuntu:latest). */
#ifndef STRATA_FETCH_REF_H
#define STRATA_FETCH_REF_H

#include <stddef.h>

struct fetch_ref {
	char *domain; /* "docker.io", "127.0.0.1:5000", "[::1]:5000", "registry.example.com" */
	char *path;   /* "library/ubuntu", "team/app" */
	char *tag; /* "latest" when neither tag nor digest was given; NULL when only a digest was */
	char *digest; /* "sha256:<hex>" or NULL */
};

/*
 * Parses and normalizes s. Rules (docker/distribution reference grammar):
 * - the first component is a domain if it contains '.' or ':' or is "localhost", else the domain
 *   is "docker.io"; on docker.io a one-component path gets "library/";
 * - path components are lowercase [a-z0-9] with separators '.', '_', '__', '-'+, joined by '/';
 * - tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; digest "sha256:<64 hex>";
 * - no tag and no digest -> tag "latest"; both may be given ("repo:tag@sha256:...").
 * Returns 0 and *out (free with fetch_ref_free), or -EINVAL with strata_err saying what is wrong
 * ("invalid reference 'X': <reason>"), or -ENOMEM.
 */
int fetch_ref_parse(const char *s, struct fetch_ref **out);

/* 1 when p (len bytes) is a port number: 1 to 5 digits, at most 65535; else 0. */
int fetch_port_valid(const char *p, size_t len);

void fetch_ref_free(struct fetch_ref *r);

/*
 * The normalized string: "domain/path:tag", "domain/path@digest" or "domain/path:tag@digest".
 * Returns a malloc'd string (caller frees) or NULL on allocation failure.
 */
char *fetch_ref_string(const struct fetch_ref *r);

/* The host to connect to for r->domain: "registry-1.docker.io" for docker.io, else domain. */
const char *fetch_ref_api_host(const struct fetch_ref *r);

/* 1 when the domain is localhost, 127.0.0.0/8 or ::1 (plain HTTP by default, like containerd). */
int fetch_ref_is_loopback(const struct fetch_ref *r);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Test helpers that parse hosts.toml text and check the hosts it gives. */
#ifndef STRATA_TESTS_HOSTSQ_H
#define STRATA_TESTS_HOSTSQ_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "fetch/hosts.h"
#include "util/log.h"

#define T "/t/hosts.toml" /* the path parsed texts come from, as messages name it */

/* Parses text (from path, for registry), which must succeed and end with the server. */
static inline struct fetch_hosts *parse_ok(const char *text, const char *path, const char *registry)
{
	struct fetch_hosts *h = NULL;
	int rc;

	strata_err_clear();
	rc = fetch_hosts_parse(text, strlen(text), path, registry, &h);
	if (rc != 0)
		fail_msg("parse failed: rc %d: %s\n%s", rc, strata_errmsg(rc), text);
	assert_non_null(h);
	assert_true(fetch_hosts_count(h) >= 1);
	assert_true(fetch_hosts_get(h, fetch_hosts_count(h) - 1)->is_server);
	return h;
}

/* Parses text expecting -EINVAL and exactly msg. */
static inline void parse_bad(const char *text, const char *msg)
{
	struct fetch_hosts *h = NULL;
	int rc;

	strata_err_clear();
	rc = fetch_hosts_parse(text, strlen(text), T, "example.com", &h);
	if (rc != -EINVAL)
		fail_msg("expected -EINVAL for:\n%s\ngot rc %d", text, rc);
	assert_null(h);
	if (strcmp(strata_errmsg(rc), msg) != 0)
		fail_msg("for:\n%s\nexpected: %s\n     got: %s", text, msg, strata_errmsg(rc));
}

/* h is there and has exactly these fields. */
static inline void check_host(const struct fetch_host *h, const char *scheme, const char *host,
			      const char *path, unsigned caps, int skip_verify, int is_server)
{
	assert_non_null(h);
	assert_string_equal(h->scheme, scheme);
	assert_string_equal(h->host, host);
	assert_string_equal(h->path, path);
	assert_int_equal(h->caps, caps);
	assert_int_equal(h->skip_verify, skip_verify);
	assert_int_equal(h->is_server, is_server);
}

#endif

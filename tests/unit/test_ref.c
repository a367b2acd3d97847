/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/ref.c: reference parsing, normalization, loopback detection, API hosts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/ref.h"
#include "util/log.h"

#define HEX64  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DIGEST "sha256:" HEX64

struct good_case {
	const char *in;
	const char *domain;
	const char *path;
	const char *tag;    /* NULL: none */
	const char *digest; /* NULL: none */
	const char *str;    /* fetch_ref_string() */
};

static const struct good_case good[] = {
	{ "ubuntu", "docker.io", "library/ubuntu", "latest", NULL,
	  "docker.io/library/ubuntu:latest" },
	{ "ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", NULL,
	  "docker.io/library/ubuntu:22.04" },
	{ "library/ubuntu", "docker.io", "library/ubuntu", "latest", NULL,
	  "docker.io/library/ubuntu:latest" },
	{ "docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", NULL,
	  "docker.io/library/ubuntu:latest" },
	{ "docker.io/library/ubuntu:jammy", "docker.io", "library/ubuntu", "jammy", NULL,
	  "docker.io/library/ubuntu:jammy" },
	{ "index.docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", NULL,
	  "docker.io/library/ubuntu:latest" },
	{ "foo/bar", "docker.io", "foo/bar", "latest", NULL, "docker.io/foo/bar:latest" },
	{ "myregistry.io/a/b:c", "myregistry.io", "a/b", "c", NULL, "myregistry.io/a/b:c" },
	{ "localhost/x", "localhost", "x", "latest", NULL, "localhost/x:latest" },
	{ "localhost:5000/x:y", "localhost:5000", "x", "y", NULL, "localhost:5000/x:y" },
	{ "127.0.0.1:5000/team/app@" DIGEST, "127.0.0.1:5000", "team/app", NULL, DIGEST,
	  "127.0.0.1:5000/team/app@" DIGEST },
	{ "repo:tag@" DIGEST, "docker.io", "library/repo", "tag", DIGEST,
	  "docker.io/library/repo:tag@" DIGEST },
	{ "[::1]:5000/x", "[::1]:5000", "x", "latest", NULL, "[::1]:5000/x:latest" },
	{ "[fe80::1]/a/b:v1", "[fe80::1]", "a/b", "v1", NULL, "[fe80::1]/a/b:v1" },
	{ "Registry.Example.COM/a", "Registry.Example.COM", "a", "latest", NULL,
	  "Registry.Example.COM/a:latest" },
	{ "foo/a-b.c_d__e/f---g.h:Tag_1.0-rc", "docker.io", "foo/a-b.c_d__e/f---g.h", "Tag_1.0-rc",
	  NULL, "docker.io/foo/a-b.c_d__e/f---g.h:Tag_1.0-rc" },
	{ "ghcr.io/org/deep/nested/repo", "ghcr.io", "org/deep/nested/repo", "latest", NULL,
	  "ghcr.io/org/deep/nested/repo:latest" },
	/* "localhost" alone is a repository on Docker Hub, not a domain */
	{ "localhost:5000", "docker.io", "library/localhost", "5000", NULL,
	  "docker.io/library/localhost:5000" },
};

struct bad_case {
	const char *in;
	const char *reason; /* a substring of the error message */
	const char *echo;   /* how the message quotes the input, when not verbatim */
};

static const struct bad_case bad[] = {
	{ "Uppercase", "must be lowercase" },
	{ "docker.io/Library/ubuntu", "must be lowercase" },
	{ "", "empty reference" },
	{ ":tag", "missing repository name" },
	{ "a:", "empty tag" },
	{ "a:-bad", "tag must match" },
	{ "a:bad$tag", "tag must match" },
	{ "a@sha256:short", "digest must be sha256" },
	{ "a@sha512:" HEX64, "digest must be sha256" },
	{ "a@sha256:"
	  "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
	  "digest must be sha256" },
	{ "a@", "digest must be sha256" },
	{ "a//b", "empty path component" },
	{ "a/", "empty path component" },
	{ "/a", "empty path component" },
	{ "localhost:5000/", "empty path component" },
	{ "a..b", "path components may only" },
	{ "a___b", "path components may only" },
	{ "-a", "path components may only" },
	{ "a-", "path components may only" },
	{ "a b", "path components may only" },
	{ "host:port/x", "invalid registry domain" },
	{ "host:70000/x", "invalid registry domain" },
	{ "-bad.io/x", "invalid registry domain" },
	/* a first component with '.' is a domain, and domains have no '_' */
	{ "a_b.c/x", "invalid registry domain" },
	{ "[zz::1]:5000/x", "invalid registry domain" },
	{ "[::1/x", "invalid registry domain" },
	{ HEX64, "image ID" },
	{ "_underscore", "path components may only" },
	{ "a\nb", "path components may only", "a?b" },
	{ "ubuntu:22.04\n", "tag must match", "ubuntu:22.04?" },
};

static void test_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const struct good_case *t = &good[i];
		struct fetch_ref *r = NULL;
		char *s;
		int rc;

		rc = fetch_ref_parse(t->in, &r);
		if (rc != 0)
			fail_msg("'%s': rc %d: %s", t->in, rc, strata_errmsg(rc));
		assert_non_null(r);
		assert_string_equal(r->domain, t->domain);
		assert_string_equal(r->path, t->path);
		if (t->tag)
			assert_string_equal(r->tag, t->tag);
		else
			assert_null(r->tag);
		if (t->digest)
			assert_string_equal(r->digest, t->digest);
		else
			assert_null(r->digest);
		s = fetch_ref_string(r);
		assert_non_null(s);
		assert_string_equal(s, t->str);

		/* the normalized string parses to the same reference */
		{
			struct fetch_ref *r2 = NULL;
			char *s2;

			assert_int_equal(fetch_ref_parse(s, &r2), 0);
			s2 = fetch_ref_string(r2);
			assert_string_equal(s2, s);
			free(s2);
			fetch_ref_free(r2);
		}
		free(s);
		fetch_ref_free(r);
	}
}

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const struct bad_case *t = &bad[i];
		struct fetch_ref *r = (struct fetch_ref *)&r; /* must be reset to NULL */
		char prefix[400];
		const char *msg;
		int rc;

		strata_err_clear();
		rc = fetch_ref_parse(t->in, &r);
		if (rc != -EINVAL)
			fail_msg("'%s': expected -EINVAL, got %d", t->in, rc);
		assert_null(r);
		msg = strata_errmsg(rc);
		snprintf(prefix, sizeof(prefix),
			 "invalid reference '%s': ", t->echo ? t->echo : t->in);
		if (strncmp(msg, prefix, strlen(prefix)) != 0 || !strstr(msg, t->reason))
			fail_msg("'%s': message '%s' lacks '%s'", t->in, msg, t->reason);
		assert_null(strchr(msg, '\n'));
	}
}

static void test_null_is_empty(void **state)
{
	struct fetch_ref *r = NULL;

	(void)state;
	assert_int_equal(fetch_ref_parse(NULL, &r), -EINVAL);
	assert_null(r);
	assert_non_null(strstr(strata_errmsg(EINVAL), "empty reference"));
}

static void test_length_limits(void **state)
{
	char name[300], in[400];
	struct fetch_ref *r = NULL;

	(void)state;
	/* 255 characters of name are fine, 256 are not */
	memset(name, 'a', 255);
	name[255] = '\0';
	assert_int_equal(fetch_ref_parse(name, &r), 0);
	assert_string_equal(r->path + strlen("library/"), name);
	fetch_ref_free(r);
	r = NULL;
	memset(name, 'a', 256);
	name[256] = '\0';
	assert_int_equal(fetch_ref_parse(name, &r), -EINVAL);
	assert_non_null(strstr(strata_errmsg(EINVAL), "longer than 255"));
	assert_null(r);

	/* 128-character tags are fine, 129 are not */
	memset(name, 't', 129);
	snprintf(in, sizeof(in), "a:%.128s", name);
	assert_int_equal(fetch_ref_parse(in, &r), 0);
	assert_int_equal(strlen(r->tag), 128);
	fetch_ref_free(r);
	r = NULL;
	snprintf(in, sizeof(in), "a:%.129s", name);
	assert_int_equal(fetch_ref_parse(in, &r), -EINVAL);
	assert_non_null(strstr(strata_errmsg(EINVAL), "tag must match"));
}

static void test_loopback(void **state)
{
	static const struct {
		const char *in;
		int loopback;
	} cases[] = {
		{ "localhost/x", 1 },
		{ "localhost:5000/x", 1 },
		{ "127.0.0.1/x", 1 },
		{ "127.0.0.1:5000/x", 1 },
		{ "127.1.2.3:80/x", 1 },
		{ "[::1]/x", 1 },
		{ "[::1]:5000/x", 1 },
		{ "[0:0:0:0:0:0:0:1]:5000/x", 1 },
		{ "ubuntu", 0 },
		{ "docker.io/library/ubuntu", 0 },
		{ "128.0.0.1:5000/x", 0 },
		{ "10.0.0.1/x", 0 },
		{ "127.0.0.1.example.com/x", 0 },
		{ "localhost.example.com/x", 0 },
		{ "[::2]:5000/x", 0 },
		{ "[fe80::1]/x", 0 },
		{ "myregistry.io:5000/x", 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fetch_ref *r = NULL;

		assert_int_equal(fetch_ref_parse(cases[i].in, &r), 0);
		if (fetch_ref_is_loopback(r) != cases[i].loopback)
			fail_msg("'%s': loopback %d, want %d", cases[i].in,
				 fetch_ref_is_loopback(r), cases[i].loopback);
		fetch_ref_free(r);
	}
}

static void test_api_host(void **state)
{
	static const struct {
		const char *in;
		const char *host;
	} cases[] = {
		{ "ubuntu", "registry-1.docker.io" },
		{ "docker.io/foo/bar", "registry-1.docker.io" },
		{ "index.docker.io/foo/bar", "registry-1.docker.io" },
		{ "ghcr.io/org/app", "ghcr.io" },
		{ "localhost:5000/x", "localhost:5000" },
		{ "[::1]:5000/x", "[::1]:5000" },
		{ "registry-1.docker.io/library/x", "registry-1.docker.io" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fetch_ref *r = NULL;

		assert_int_equal(fetch_ref_parse(cases[i].in, &r), 0);
		assert_string_equal(fetch_ref_api_host(r), cases[i].host);
		fetch_ref_free(r);
	}
}

static void test_string_forms(void **state)
{
	struct fetch_ref r = { .domain = "d.io", .path = "p/q", .tag = "t", .digest = NULL };
	char *s;

	(void)state;
	s = fetch_ref_string(&r);
	assert_string_equal(s, "d.io/p/q:t");
	free(s);
	r.tag = NULL;
	r.digest = DIGEST;
	s = fetch_ref_string(&r);
	assert_string_equal(s, "d.io/p/q@" DIGEST);
	free(s);
	r.tag = "t";
	s = fetch_ref_string(&r);
	assert_string_equal(s, "d.io/p/q:t@" DIGEST);
	free(s);
	fetch_ref_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),	      cmocka_unit_test(test_bad),
		cmocka_unit_test(test_null_is_empty), cmocka_unit_test(test_length_limits),
		cmocka_unit_test(test_loopback),      cmocka_unit_test(test_api_host),
		cmocka_unit_test(test_string_forms),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

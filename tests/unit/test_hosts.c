/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/hosts.c: the hosts.toml parser, containerd's host ordering and defaults, loading. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/hosts.h"
#include "util/log.h"

#define DOCKER_TOML "/etc/containerd/certs.d/docker.io/hosts.toml"
#define T	    "/t/hosts.toml"

static struct fetch_hosts *parse_ok(const char *text, const char *path, const char *registry)
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
static void parse_bad(const char *text, const char *msg)
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

static void check_host(const struct fetch_host *h, const char *scheme, const char *host, const char *path,
		       unsigned caps, int skip_verify, int is_server)
{
	assert_non_null(h);
	assert_string_equal(h->scheme, scheme);
	assert_string_equal(h->host, host);
	assert_string_equal(h->path, path);
	assert_int_equal(h->caps, caps);
	assert_int_equal(h->skip_verify, skip_verify);
	assert_int_equal(h->is_server, is_server);
}

/* ---- containerd docs examples (same shapes, own text) ---- */

static void test_docs_simple_docker(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("server = \"https://docker.io\"\n"
					 "\n"
					 "[host.\"https://registry-1.docker.io\"]\n"
					 "  capabilities = [\"pull\", \"resolve\"]\n",
					 DOCKER_TOML, "docker.io");

	assert_int_equal(fetch_hosts_count(h), 2);
	check_host(fetch_hosts_get(h, 0), "https", "registry-1.docker.io", "/v2",
		   FETCH_CAP_PULL | FETCH_CAP_RESOLVE, -1, 0);
	/* an explicit server is used verbatim, not mapped to registry-1 */
	check_host(fetch_hosts_get(h, 1), "https", "docker.io", "/v2", FETCH_CAP_ALL, -1, 1);
	assert_null(fetch_hosts_get(h, 2));
	assert_string_equal(fetch_hosts_source(h), DOCKER_TOML);
	assert_int_equal(fetch_hosts_warning_count(h), 0);
	fetch_hosts_free(h);
}

static void test_docs_local_mirror(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("server = \"https://registry-1.docker.io\"    # upstream\n"
					 "\n"
					 "[host.\"https://public-mirror.example.com\"]\n"
					 "  capabilities = [\"pull\"]   # never resolves tags\n"
					 "[host.\"https://docker-mirror.internal\"]\n"
					 "  capabilities = [\"pull\", \"resolve\"]\n"
					 "  ca = \"docker-mirror.crt\"\n",
					 DOCKER_TOML, "docker.io");
	const struct fetch_host *m0 = fetch_hosts_get(h, 0), *m1 = fetch_hosts_get(h, 1);

	assert_int_equal(fetch_hosts_count(h), 3);
	check_host(m0, "https", "public-mirror.example.com", "/v2", FETCH_CAP_PULL, -1, 0);
	check_host(m1, "https", "docker-mirror.internal", "/v2", FETCH_CAP_PULL | FETCH_CAP_RESOLVE, -1, 0);
	assert_int_equal(m1->nca, 1);
	assert_string_equal(m1->ca[0], "/etc/containerd/certs.d/docker.io/docker-mirror.crt");
	check_host(fetch_hosts_get(h, 2), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1, 1);

	assert_true(fetch_host_has_cap(m0, FETCH_CAP_PULL));
	assert_false(fetch_host_has_cap(m0, FETCH_CAP_RESOLVE));
	assert_true(fetch_host_has_cap(m1, FETCH_CAP_RESOLVE));
	assert_false(fetch_host_has_cap(m1, FETCH_CAP_RESOLVE | FETCH_CAP_PUSH));
	assert_true(fetch_host_has_cap(fetch_hosts_get(h, 2), FETCH_CAP_ALL));
	fetch_hosts_free(h);
}

static void test_docs_host_section(void **state)
{
	(void)state;
	/* the detailed example from docs/hosts.md, same shape */
	struct fetch_hosts *h =
		parse_ok("[host.\"https://mirror.registry\"]\n"
			 "  capabilities = [\"pull\"]\n"
			 "  ca = \"/etc/certs/mirror.pem\"\n"
			 "  skip_verify = false\n"
			 "  [host.\"https://mirror.registry\".header]\n"
			 "    x-custom-2 = [\"value1\", \"value2\"]\n"
			 "\n"
			 "[host.\"https://mirror-bak.registry/us\"]\n"
			 "  capabilities = [\"pull\"]\n"
			 "  skip_verify = true\n"
			 "\n"
			 "[host.\"http://mirror.registry\"]\n"
			 "  capabilities = [\"pull\"]\n"
			 "\n"
			 "[host.\"https://test-1.registry\"]\n"
			 "  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
			 "  ca = [\"/etc/certs/test-1-ca.pem\", \"/etc/certs/special.pem\"]\n"
			 "  client = [[\"/etc/certs/client.cert\", "
			 "\"/etc/certs/client.key\"],[\"/etc/certs/client.pem\", \"\"]]\n"
			 "\n"
			 "[host.\"https://test-2.registry\"]\n"
			 "  client = \"/etc/certs/client.pem\"\n"
			 "\n"
			 "[host.\"https://test-3.registry\"]\n"
			 "  client = [\"/etc/certs/client-1.pem\", \"/etc/certs/client-2.pem\"]\n"
			 "\n"
			 "[host.\"https://non-compliant-mirror.registry/v2/upstream\"]\n"
			 "  capabilities = [\"pull\"]\n"
			 "  override_path = true\n",
			 T, "myregistry.io:5000");
	const struct fetch_host *x;

	assert_int_equal(fetch_hosts_count(h), 8);
	x = fetch_hosts_get(h, 0);
	check_host(x, "https", "mirror.registry", "/v2", FETCH_CAP_PULL, 0, 0);
	assert_int_equal(x->nca, 1);
	assert_string_equal(x->ca[0], "/etc/certs/mirror.pem");
	assert_int_equal(x->nheaders, 2);
	assert_string_equal(x->headers[0].name, "x-custom-2");
	assert_string_equal(x->headers[0].value, "value1");
	assert_string_equal(x->headers[1].name, "x-custom-2");
	assert_string_equal(x->headers[1].value, "value2");

	check_host(fetch_hosts_get(h, 1), "https", "mirror-bak.registry", "/us/v2", FETCH_CAP_PULL, 1, 0);
	check_host(fetch_hosts_get(h, 2), "http", "mirror.registry", "/v2", FETCH_CAP_PULL, -1, 0);

	x = fetch_hosts_get(h, 3);
	check_host(x, "https", "test-1.registry", "/v2", FETCH_CAP_ALL, -1, 0);
	assert_int_equal(x->nca, 2);
	assert_string_equal(x->ca[0], "/etc/certs/test-1-ca.pem");
	assert_string_equal(x->ca[1], "/etc/certs/special.pem");
	assert_int_equal(x->nclient, 2);
	assert_string_equal(x->client[0].cert, "/etc/certs/client.cert");
	assert_string_equal(x->client[0].key, "/etc/certs/client.key");
	assert_string_equal(x->client[1].cert, "/etc/certs/client.pem");
	assert_null(x->client[1].key);

	x = fetch_hosts_get(h, 4);
	check_host(x, "https", "test-2.registry", "/v2", FETCH_CAP_ALL, -1, 0);
	assert_int_equal(x->nclient, 1);
	assert_string_equal(x->client[0].cert, "/etc/certs/client.pem");
	assert_null(x->client[0].key);

	x = fetch_hosts_get(h, 5);
	assert_int_equal(x->nclient, 2);
	assert_string_equal(x->client[0].cert, "/etc/certs/client-1.pem");
	assert_null(x->client[0].key);
	assert_string_equal(x->client[1].cert, "/etc/certs/client-2.pem");
	assert_null(x->client[1].key);

	check_host(fetch_hosts_get(h, 6), "https", "non-compliant-mirror.registry", "/v2/upstream",
		   FETCH_CAP_PULL, -1, 0);
	/* no server: the registry itself, port kept */
	check_host(fetch_hosts_get(h, 7), "https", "myregistry.io:5000", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);
}

static void test_docs_default_mirror(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("[host.\"https://registry.example.com\"]\n"
					 "  capabilities = [\"pull\", \"resolve\"]\n",
					 "/etc/containerd/certs.d/_default/hosts.toml", "ghcr.io");

	assert_int_equal(fetch_hosts_count(h), 2);
	check_host(fetch_hosts_get(h, 0), "https", "registry.example.com", "/v2",
		   FETCH_CAP_PULL | FETCH_CAP_RESOLVE, -1, 0);
	check_host(fetch_hosts_get(h, 1), "https", "ghcr.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	/* only the mirror: make it the server */
	h = parse_ok("server = \"https://registry.example.com\"\n", T, "ghcr.io");
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "https", "registry.example.com", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);
}

static void test_docs_skip_verify_example(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("server = \"https://registry-1.docker.io\"\n"
					 "\n"
					 "[host.\"http://192.168.31.250:5000\"]\n"
					 "  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
					 "  skip_verify = true\n",
					 DOCKER_TOML, "docker.io");

	check_host(fetch_hosts_get(h, 0), "http", "192.168.31.250:5000", "/v2", FETCH_CAP_ALL, 1, 0);
	check_host(fetch_hosts_get(h, 1), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);
}

/* ---- ordering and defaults ---- */

static void test_mirror_order(void **state)
{
	(void)state;
	/* order is where each host's table first appears; a later [host."a".header] does not move "a" */
	struct fetch_hosts *h = parse_ok("server = \"upstream.example\"\n"
					 "[host.\"https://c.example\"]\n"
					 "[host.\"https://a.example\"]\n"
					 "[host.\"b.example:5000\"]\n"
					 "[host.\"https://c.example\".header]\n"
					 "  X-A = \"1\"\n"
					 "[header]\n"
					 "  X-Server = \"s\"\n",
					 T, "example.com");

	assert_int_equal(fetch_hosts_count(h), 4);
	check_host(fetch_hosts_get(h, 0), "https", "c.example", "/v2", FETCH_CAP_ALL, -1, 0);
	check_host(fetch_hosts_get(h, 1), "https", "a.example", "/v2", FETCH_CAP_ALL, -1, 0);
	check_host(fetch_hosts_get(h, 2), "https", "b.example:5000", "/v2", FETCH_CAP_ALL, -1, 0);
	check_host(fetch_hosts_get(h, 3), "https", "upstream.example", "/v2", FETCH_CAP_ALL, -1, 1);
	assert_int_equal(fetch_hosts_get(h, 0)->nheaders, 1);
	assert_string_equal(fetch_hosts_get(h, 0)->headers[0].name, "X-A");
	assert_int_equal(fetch_hosts_get(h, 1)->nheaders, 0);
	assert_int_equal(fetch_hosts_get(h, 3)->nheaders, 1);
	assert_string_equal(fetch_hosts_get(h, 3)->headers[0].value, "s");
	fetch_hosts_free(h);

	/* a sub-table first, its host table later: the host is ordered by its first appearance */
	h = parse_ok("[host.\"https://z.example\".header]\n"
		     "  X = \"1\"\n"
		     "[host.\"https://y.example\"]\n"
		     "[host.\"https://z.example\"]\n"
		     "  capabilities = [\"pull\"]\n",
		     T, "example.com");
	assert_int_equal(fetch_hosts_count(h), 3);
	check_host(fetch_hosts_get(h, 0), "https", "z.example", "/v2", FETCH_CAP_PULL, -1, 0);
	check_host(fetch_hosts_get(h, 1), "https", "y.example", "/v2", FETCH_CAP_ALL, -1, 0);
	fetch_hosts_free(h);
}

static void test_default_server(void **state)
{
	(void)state;
	/* no server: top-level TLS settings go to the default server, capabilities and override_path do not
	 */
	struct fetch_hosts *h =
		parse_ok("ca = \"ca.pem\"\n"
			 "skip_verify = true\n"
			 "capabilities = [\"pull\"]\n"
			 "override_path = true\n"
			 "client = \"c.pem\"\n"
			 "[header]\n"
			 "  Authorization-Hint = \"x\"\n",
			 "/etc/containerd/certs.d/registry.example.com/hosts.toml", "registry.example.com");
	const struct fetch_host *s = fetch_hosts_get(h, 0);

	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(s, "https", "registry.example.com", "/v2", FETCH_CAP_ALL, 1, 1);
	assert_int_equal(s->nca, 1);
	assert_string_equal(s->ca[0], "/etc/containerd/certs.d/registry.example.com/ca.pem");
	assert_int_equal(s->nclient, 1);
	assert_string_equal(s->client[0].cert, "/etc/containerd/certs.d/registry.example.com/c.pem");
	assert_int_equal(s->nheaders, 1);
	fetch_hosts_free(h);

	/* with a server, top-level capabilities apply to it */
	h = parse_ok("server = \"https://up.example\"\ncapabilities = [\"pull\", \"resolve\"]\n", T, "x.io");
	check_host(fetch_hosts_get(h, 0), "https", "up.example", "/v2", FETCH_CAP_PULL | FETCH_CAP_RESOLVE,
		   -1, 1);
	fetch_hosts_free(h);

	/* empty server = absent */
	h = parse_ok("server = \"\"\n", T, "x.io");
	check_host(fetch_hosts_get(h, 0), "https", "x.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	/* empty file, comments only */
	h = parse_ok("# nothing here\n\n   \t\n", T, "docker.io");
	check_host(fetch_hosts_get(h, 0), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);
}

static void test_docker_io_default(void **state)
{
	(void)state;
	struct fetch_hosts *h = NULL;

	assert_int_equal(fetch_hosts_load(NULL, "docker.io", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1, 1);
	assert_null(fetch_hosts_source(h));
	{
		char *url = fetch_host_base_url(fetch_hosts_get(h, 0));

		assert_string_equal(url, "https://registry-1.docker.io/v2");
		free(url);
	}
	/* registry-1.docker.io serves docker.io itself: no ns= parameter */
	assert_false(fetch_host_is_mirror(fetch_hosts_get(h, 0), "docker.io"));
	fetch_hosts_free(h);
}

static void test_loopback_http(void **state)
{
	static const struct {
		const char *registry, *scheme;
		int skip;
	} cases[] = {
		{"127.0.0.1:5000", "http", 1},
		{"localhost", "http", 1},
		{"localhost:5000", "http", 1},
		{"127.1.2.3", "http", 1},
		{"[::1]:5000", "http", 1},
		{"[::1]", "http", 1},
		{"::1", "http", 1},
		{"10.0.0.1:5000", "https", -1},
		{"localhost.example", "https", -1},
		{"128.0.0.1", "https", -1},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fetch_hosts *h = NULL;
		const struct fetch_host *s;

		assert_int_equal(fetch_hosts_load("/nonexistent/certs.d", cases[i].registry, &h), 0);
		s = fetch_hosts_get(h, 0);
		if (strcmp(s->scheme, cases[i].scheme) != 0)
			fail_msg("%s: scheme %s", cases[i].registry, s->scheme);
		assert_string_equal(s->host, cases[i].registry);
		assert_int_equal(s->skip_verify, cases[i].skip);
		assert_false(fetch_host_is_mirror(s, cases[i].registry));
		fetch_hosts_free(h);
	}

	/* an explicit skip_verify = false on the default loopback server is kept */
	{
		struct fetch_hosts *h = parse_ok("skip_verify = false\n", T, "127.0.0.1:5000");

		check_host(fetch_hosts_get(h, 0), "http", "127.0.0.1:5000", "/v2", FETCH_CAP_ALL, 0, 1);
		fetch_hosts_free(h);
	}
}

static void test_urls_and_override_path(void **state)
{
	static const struct {
		const char *url;
		int override;
		const char *scheme, *host, *path;
	} cases[] = {
		{"mirror.example:5000", 0, "https", "mirror.example:5000", "/v2"},
		{"http://mirror.example", 0, "http", "mirror.example", "/v2"},
		{"HTTPS://Mirror.Example", 0, "https", "Mirror.Example", "/v2"},
		{"https://m.example/", 0, "https", "m.example", "/v2"},
		{"https://m.example/us", 0, "https", "m.example", "/us/v2"},
		{"https://m.example/us/v2", 0, "https", "m.example", "/us/v2"},
		{"https://m.example/us/v2/", 0, "https", "m.example", "/us/v2"},
		{"https://m.example//a/./b/../c", 0, "https", "m.example", "/a/c/v2"},
		{"https://m.example/v2/upstream", 0, "https", "m.example", "/v2/upstream/v2"},
		{"https://m.example/v2/upstream", 1, "https", "m.example", "/v2/upstream"},
		{"https://m.example/api/", 1, "https", "m.example", "/api"},
		{"https://m.example", 1, "https", "m.example", ""},
		{"https://[fd00::1]:5000/p", 0, "https", "[fd00::1]:5000", "/p/v2"},
		{"http://10.0.0.1:80", 0, "http", "10.0.0.1:80", "/v2"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		struct fetch_hosts *h;
		const struct fetch_host *x;

		snprintf(text, sizeof(text), "[host.\"%s\"]\noverride_path = %s\n", cases[i].url,
			 cases[i].override ? "true" : "false");
		h = parse_ok(text, T, "example.com");
		x = fetch_hosts_get(h, 0);
		if (strcmp(x->scheme, cases[i].scheme) || strcmp(x->host, cases[i].host) ||
		    strcmp(x->path, cases[i].path))
			fail_msg("%s: got %s %s '%s'", cases[i].url, x->scheme, x->host, x->path);
		assert_true(fetch_host_is_mirror(x, "example.com"));
		fetch_hosts_free(h);
	}

	/* override_path on the server */
	{
		struct fetch_hosts *h = parse_ok(
			"server = \"https://up.example/registry\"\noverride_path = true\n", T, "example.com");
		char *url = fetch_host_base_url(fetch_hosts_get(h, 0));

		assert_string_equal(url, "https://up.example/registry");
		free(url);
		fetch_hosts_free(h);
	}
}

static void test_ca_forms(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("[host.\"https://a\"]\n"
					 "  ca = \"/abs/ca.pem\"\n"
					 "[host.\"https://b\"]\n"
					 "  ca = [\"one.pem\", \"/abs/two.pem\",\n"
					 "        \"sub/three.pem\",   # trailing comma next\n"
					 "  ]\n"
					 "[host.\"https://c\"]\n"
					 "  ca = []\n",
					 "/etc/certs.d/reg/hosts.toml", "reg");
	const struct fetch_host *a = fetch_hosts_get(h, 0), *b = fetch_hosts_get(h, 1);

	assert_int_equal(a->nca, 1);
	assert_string_equal(a->ca[0], "/abs/ca.pem");
	assert_int_equal(b->nca, 3);
	assert_string_equal(b->ca[0], "/etc/certs.d/reg/one.pem");
	assert_string_equal(b->ca[1], "/abs/two.pem");
	assert_string_equal(b->ca[2], "/etc/certs.d/reg/sub/three.pem");
	assert_int_equal(fetch_hosts_get(h, 2)->nca, 0);
	fetch_hosts_free(h);
}

static void test_client_forms(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("[host.\"https://a\"]\n"
					 "  client = \"both.pem\"\n"
					 "[host.\"https://b\"]\n"
					 "  client = [\"one.pem\", \"/abs/two.pem\"]\n"
					 "[host.\"https://c\"]\n"
					 "  client = [[\"c.cert\", \"c.key\"]]\n"
					 "[host.\"https://d\"]\n"
					 "  client = [\n"
					 "    [\"/x/c1.cert\", \"/x/c1.key\"],\n"
					 "    [\"c2.pem\", \"\"],\n"
					 "    \"c3.pem\",\n"
					 "  ]\n",
					 "/certs/reg/hosts.toml", "reg");
	const struct fetch_host *x;

	x = fetch_hosts_get(h, 0);
	assert_int_equal(x->nclient, 1);
	assert_string_equal(x->client[0].cert, "/certs/reg/both.pem");
	assert_null(x->client[0].key);

	x = fetch_hosts_get(h, 1);
	assert_int_equal(x->nclient, 2);
	assert_string_equal(x->client[0].cert, "/certs/reg/one.pem");
	assert_string_equal(x->client[1].cert, "/abs/two.pem");
	assert_null(x->client[1].key);

	x = fetch_hosts_get(h, 2);
	assert_int_equal(x->nclient, 1);
	assert_string_equal(x->client[0].cert, "/certs/reg/c.cert");
	assert_string_equal(x->client[0].key, "/certs/reg/c.key");

	x = fetch_hosts_get(h, 3);
	assert_int_equal(x->nclient, 3);
	assert_string_equal(x->client[0].cert, "/x/c1.cert");
	assert_string_equal(x->client[0].key, "/x/c1.key");
	assert_string_equal(x->client[1].cert, "/certs/reg/c2.pem");
	assert_null(x->client[1].key);
	assert_string_equal(x->client[2].cert, "/certs/reg/c3.pem");
	assert_null(x->client[2].key);
	fetch_hosts_free(h);
}

static void test_header_forms(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("[host.\"https://a\".header]\n"
					 "  x-custom-1 = \"custom header\"\n"
					 "  x-custom-1-2 = \"another\"\n"
					 "  \"X-Quoted\" = 'lit\\eral'\n"
					 "  x-multi = [\"part a\", \"part b\"]\n"
					 "  x-empty = []\n",
					 T, "example.com");
	const struct fetch_host *x = fetch_hosts_get(h, 0);

	assert_int_equal(x->nheaders, 5);
	assert_string_equal(x->headers[0].name, "x-custom-1");
	assert_string_equal(x->headers[0].value, "custom header");
	assert_string_equal(x->headers[1].name, "x-custom-1-2");
	assert_string_equal(x->headers[2].name, "X-Quoted");
	assert_string_equal(x->headers[2].value, "lit\\eral");
	assert_string_equal(x->headers[3].name, "x-multi");
	assert_string_equal(x->headers[3].value, "part a");
	assert_string_equal(x->headers[4].name, "x-multi");
	assert_string_equal(x->headers[4].value, "part b");
	fetch_hosts_free(h);
}

static void test_relative_paths(void **state)
{
	(void)state;
	struct fetch_hosts *h =
		parse_ok("ca = [\"./a.pem\", \"../shared/b.pem\", \"c//d/./e.pem\", \"../../../../x.pem\"]\n"
			 "client = [[\"k/../c.cert\", \"./c.key\"]]\n",
			 "/etc/containerd/certs.d/reg/hosts.toml", "reg");
	const struct fetch_host *s = fetch_hosts_get(h, 0);

	assert_int_equal(s->nca, 4);
	assert_string_equal(s->ca[0], "/etc/containerd/certs.d/reg/a.pem");
	assert_string_equal(s->ca[1], "/etc/containerd/certs.d/shared/b.pem");
	assert_string_equal(s->ca[2], "/etc/containerd/certs.d/reg/c/d/e.pem");
	assert_string_equal(s->ca[3], "/x.pem");
	assert_string_equal(s->client[0].cert, "/etc/containerd/certs.d/reg/c.cert");
	assert_string_equal(s->client[0].key, "/etc/containerd/certs.d/reg/c.key");
	fetch_hosts_free(h);

	/* a path without a directory: relative to "." */
	h = parse_ok("ca = \"a.pem\"\n", "hosts.toml", "reg");
	assert_string_equal(fetch_hosts_get(h, 0)->ca[0], "a.pem");
	fetch_hosts_free(h);
}

static void test_capabilities(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("[host.\"https://a\"]\n"
					 "capabilities = [\"PULL\", \"Resolve\"]\n"
					 "[host.\"https://b\"]\n"
					 "capabilities = []\n"
					 "[host.\"https://c\"]\n"
					 "[host.\"https://d\"]\n"
					 "capabilities = [\"push\", \"pull\", \"pull\"]\n",
					 T, "example.com");

	assert_int_equal(fetch_hosts_get(h, 0)->caps, FETCH_CAP_PULL | FETCH_CAP_RESOLVE);
	assert_int_equal(fetch_hosts_get(h, 1)->caps, FETCH_CAP_ALL);
	assert_int_equal(fetch_hosts_get(h, 2)->caps, FETCH_CAP_ALL);
	assert_int_equal(fetch_hosts_get(h, 3)->caps, FETCH_CAP_PULL | FETCH_CAP_PUSH);
	fetch_hosts_free(h);

	parse_bad("[host.\"https://a\"]\ncapabilities = [\"pull\",\n  \"pul\"]\n",
		  T ":3: unknown capability \"pul\" (expected \"pull\", \"resolve\" or \"push\")");
	parse_bad("capabilities = \"pull\"\n",
		  T ":1: \"capabilities\" must be an array of strings, e.g. [\"pull\", \"resolve\"]");
}

static void test_skip_verify_and_extras(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("[host.\"https://a\"]\n"
					 "skip_verify = true\n"
					 "dial_timeout = \"1.5s\"\n"
					 "proxy = \"http://proxy.internal:3128\"\n"
					 "[host.\"https://b\"]\n"
					 "skip_verify = false\n"
					 "dial_timeout = \"1m30s\"\n"
					 "[host.\"https://c\"]\n"
					 "dial_timeout = \"1ns\"\n",
					 T, "example.com");

	assert_int_equal(fetch_hosts_get(h, 0)->skip_verify, 1);
	assert_int_equal(fetch_hosts_get(h, 0)->dial_timeout_ms, 1500);
	assert_string_equal(fetch_hosts_get(h, 0)->proxy, "http://proxy.internal:3128");
	assert_int_equal(fetch_hosts_get(h, 1)->skip_verify, 0);
	assert_int_equal(fetch_hosts_get(h, 1)->dial_timeout_ms, 90000);
	assert_null(fetch_hosts_get(h, 1)->proxy);
	assert_int_equal(fetch_hosts_get(h, 2)->skip_verify, -1);
	assert_int_equal(fetch_hosts_get(h, 2)->dial_timeout_ms, 1);
	assert_int_equal(fetch_hosts_get(h, 3)->dial_timeout_ms, -1);
	fetch_hosts_free(h);

	parse_bad("skip_verify = \"yes\"\n", T ":1: \"skip_verify\" must be true or false");
	parse_bad("dial_timeout = \"10\"\n",
		  T ":1: \"dial_timeout\" must be a duration string like \"500ms\" or \"2s\" (at most 24h)");
	parse_bad("proxy = \"ftp://p\"\n",
		  T ":1: invalid \"proxy\" \"ftp://p\": expected http://, https://, socks5:// or socks5h://");
}

static void test_toml_values(void **state)
{
	(void)state;
	/* escapes, literal strings, integers, nested arrays, CRLF, BOM, quoted keys: all parse; the unknown
	 * keys become warnings */
	struct fetch_hosts *h =
		parse_ok("\xef\xbb\xbf# bom first\r\n"
			 "x-int = -1_000\r\n"
			 "x-zero = 0\r\n"
			 "x-nested = [[1, 2], [\"a\", ['b']], []]\r\n"
			 "\"quoted key\" = \"tab\\there \\\"q\\\" \\\\ \\u00e9\\U0001F600 \\b\\f\\r\\n\"\r\n"
			 "'literal key' = 'C:\\path'\r\n"
			 "[host.\"https://a\".header]\r\n"
			 "  X-Unicode = \"\\u00e9t\\u00e9\"\r\n",
			 T, "example.com");

	assert_string_equal(fetch_hosts_get(h, 0)->headers[0].value, "\xc3\xa9t\xc3\xa9");
	assert_int_equal(fetch_hosts_warning_count(h), 5);
	assert_string_equal(fetch_hosts_warning(h, 0), T ":2: unknown key \"x-int\" ignored");
	assert_string_equal(fetch_hosts_warning(h, 3), T ":5: unknown key \"quoted key\" ignored");
	assert_null(fetch_hosts_warning(h, 5));
	fetch_hosts_free(h);
}

static void test_unknown_keys_warn(void **state)
{
	(void)state;
	struct fetch_hosts *h = parse_ok("server = \"https://up.example\"\n"	       /* 1 */
					 "mirrors = [\"x\"]\n"			       /* 2 */
					 "[host.\"https://a\"]\n"		       /* 3 */
					 "  capabilities = [\"pull\"]\n"	       /* 4 */
					 "  username = \"me\"\n"		       /* 5 */
					 "  server = \"nested\"\n"		       /* 6 */
					 "  [host.\"https://a\".host.\"https://b\"]\n" /* 7 */
					 "[plugins]\n"				       /* 8 */
					 "  enabled = true\n",			       /* 9 */
					 T, "example.com");

	assert_int_equal(fetch_hosts_count(h), 2);
	check_host(fetch_hosts_get(h, 0), "https", "a", "/v2", FETCH_CAP_PULL, -1, 0);
	assert_int_equal(fetch_hosts_warning_count(h), 5);
	assert_string_equal(fetch_hosts_warning(h, 0), T ":2: unknown key \"mirrors\" ignored");
	assert_string_equal(fetch_hosts_warning(h, 1), T ":5: unknown key \"username\" ignored");
	assert_string_equal(fetch_hosts_warning(h, 2), T ":6: unknown key \"server\" ignored");
	assert_string_equal(fetch_hosts_warning(h, 3),
			    T ":7: nested [host] tables are not supported; \"host\" ignored");
	assert_string_equal(fetch_hosts_warning(h, 4), T ":8: unknown key \"plugins\" ignored");
	fetch_hosts_free(h);
}

static void test_key_case(void **state)
{
	(void)state;
	/* go-toml matches containerd's field names case-insensitively; "host" must be exact to be ordered */
	struct fetch_hosts *h = parse_ok("Server = \"https://up.example\"\n"
					 "[host.\"https://a\"]\n"
					 "  Capabilities = [\"pull\"]\n"
					 "  SKIP_VERIFY = true\n"
					 "[Host.\"https://b\"]\n",
					 T, "example.com");

	assert_int_equal(fetch_hosts_count(h), 2);
	check_host(fetch_hosts_get(h, 0), "https", "a", "/v2", FETCH_CAP_PULL, 1, 0);
	check_host(fetch_hosts_get(h, 1), "https", "up.example", "/v2", FETCH_CAP_ALL, -1, 1);
	assert_int_equal(fetch_hosts_warning_count(h), 1);
	assert_string_equal(fetch_hosts_warning(h, 0), T ":5: unknown key \"Host\" ignored");
	fetch_hosts_free(h);

	parse_bad("ca = \"a\"\nCA = \"b\"\n",
		  T ":2: duplicate key \"CA\" (same as line 1: keys match case-insensitively)");
}

/* ---- errors, with exact lines ---- */

static void test_errors(void **state)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{"server = \"https://a\"\n\n[host.\"https://m\n",
		 T ":3: unterminated string (a string must end on its line)"},
		{"server = \"https://a\n\"", T ":1: unterminated string (a string must end on its line)"},
		{"server = 'abc", T ":1: unterminated string (a string must end on its line)"},
		{"a = 1\n[host.\"x\"]\nca = \"a\"\n\nca = \"b\"\n",
		 T ":5: duplicate key \"ca\" (first defined on line 3)"},
		{"[host.\"https://m\"]\nca = \"a\"\n\n[host.\"https://m\"]\n",
		 T ":4: duplicate table [host.\"https://m\"] (first defined on line 1)"},
		{"[host.\"a\".header]\n[host.\"a\"]\n[host.\"a\".header]\n",
		 T ":3: duplicate table [host.\"a\".header] (first defined on line 1)"},
		{"[header]\nx = \"1\"\n[header]\n",
		 T ":3: duplicate table [header] (first defined on line 1)"},
		{"\n[host.\"h\"]\nca = \"a\\qb\"\n", T ":3: invalid escape '\\q' in string"},
		{"ca = \"\\u12\"\n", T ":1: invalid escape '\\u': expected 4 hex digits"},
		{"ca = \"\\uD800\"\n", T ":1: invalid escape: U+D800 is not a Unicode scalar value"},
		{"ca = \"\\u0000\"\n", T ":1: invalid escape: NUL (\\u0000) is not allowed"},
		{"# c\n[host.\"h\"]\n  capabilities [\"pull\"]\n",
		 T ":3: expected '=' after key \"capabilities\""},
		{"capabilities\n", T ":1: expected '=' after key \"capabilities\""},
		{"skip_verify = true yes\n", T ":1: unexpected 'y' after the value of key \"skip_verify\""},
		{"server = \"https://a\" \"b\"\n", T ":1: unexpected '\"' after the value of key \"server\""},
		{"ca = [\"a\", \"b\"] ,\n", T ":1: unexpected ',' after the value of key \"ca\""},
		{"[host.\"h\"] x\n", T ":1: unexpected 'x' after table header [host.\"h\"]"},
		{"\n\nheader = { a = \"b\" }\n",
		 T ":3: inline tables are not supported (key \"header\"); use a [table] header"},
		{"[[host]]\n", T ":1: arrays of tables ([[...]]) are not supported"},
		{"host.\"x\".ca = \"a\"\n",
		 T ":1: dotted keys are not supported (key \"host\"); use a [table] header"},
		{"server = https://a\n",
		 T ":1: expected a value for key \"server\", got 'h' (strings must be quoted)"},
		{"server =\n", T ":1: expected a value for key \"server\""},
		{"server = \"\"\"x\"\"\"\n", T ":1: multi-line strings (\"\"\") are not supported"},
		{"x = 1.5\n", T ":1: floats are not supported (key \"x\")"},
		{"x = 1979-05-27\n", T ":1: dates and times are not supported (key \"x\")"},
		{"x = 0x10\n",
		 T ":1: invalid integer for key \"x\" (only decimal integers; strings must be quoted)"},
		{"x = 012\n", T ":1: invalid integer for key \"x\": leading zero"},
		{"x = 99999999999999999999\n", T ":1: integer out of range for key \"x\""},
		{"ca = [\"a\"\n\"b\"]\n", T ":2: expected ',' or ']' in the array of key \"ca\", got '\"'"},
		{"ca = [\"a\",\n  \"b\",\n", T ":3: unterminated array for key \"ca\" (opened on line 1)"},
		{"ca = [,]\n", T ":1: expected a value for key \"ca\", got ',' (strings must be quoted)"},
		{"x = [[[[[[[[[1]]]]]]]]]\n", T ":1: arrays nested too deeply (key \"x\")"},
		{"[host.\"h\"\n", T ":1: expected '.' or ']' in table header, got end of line"},
		{"[]\n", T ":1: expected a key in table header, got ']'"},
		{"= 1\n", T ":1: expected a key at the start of a line, got '='"},
		{"[a.b.c.d.e.f.g.h.i]\n", T ":1: table header has more than 8 parts"},
		{"server = \"a\"\n[server]\n",
		 T ":2: cannot define table [server]: key \"server\" already has a value (line 1)"},
		{"a = 1\r\rb = 2\n", T ":1: carriage return not followed by a newline"},
		{"a = \"x\ty\" # ok\nb = \"\x01\"\n",
		 T ":2: control character 0x01 in string (use an escape)"},
		{"# bad \x7f comment\n", T ":1: control character in comment"},
		{"a = 1\nb = 2\n\xff\n", T ":3: invalid UTF-8"},
		/* semantic errors */
		{"server = 1\n", T ":1: \"server\" must be a string (a URL)"},
		{"host = \"x\"\n", T ":1: \"host\" must be [host.\"URL\"] tables"},
		{"[host]\nx = 1\n", T ":2: \"host\" must be [host.\"URL\"] tables, not a value"},
		{"[host.\"\"]\n", T ":1: empty host URL in [host.\"\"]"},
		{"[host.\"ftp://m\"]\n",
		 T ":1: unsupported scheme in \"ftp://m\" (expected http:// or https://)"},
		{"[host.\"https://\"]\n", T ":1: missing host name in \"https://\""},
		{"[host.\"https://u:p@m\"]\n",
		 T ":1: credentials in host URL \"https://u:p@m\" are not supported"},
		{"[host.\"https://m:99999\"]\n",
		 T ":1: invalid host in \"https://m:99999\" (expected host[:port] or [ipv6]:port)"},
		{"[host.\"https://m/x?y=1\"]\n",
		 T ":1: query or fragment not allowed in host URL \"https://m/x?y=1\""},
		{"server = \"https://m/a b\"\n",
		 T ":1: space or control character in host URL \"https://m/a b\""},
		{"ca = 1\n", T ":1: \"ca\" must be a path or an array of paths"},
		{"ca = [\"a\",\n 2]\n", T ":2: \"ca\" must be a path or an array of paths"},
		{"ca = \"\"\n", T ":1: empty path in \"ca\""},
		{"client = true\n",
		 T ":1: \"client\" must be a path, an array of paths or an array of [cert, key] pairs"},
		{"client = [[\"a\", \"b\", \"c\"]]\n",
		 T ":1: a \"client\" pair must have two elements: [cert, key]"},
		{"client = [[\"a\", 1]]\n", T ":1: a \"client\" pair must be two strings: [cert, key]"},
		{"client = [[\"\", \"k\"]]\n", T ":1: empty certificate path in \"client\" pair"},
		{"header = \"x\"\n", T ":1: \"header\" must be a table: [header] or [host.\"...\".header]"},
		{"[header]\nx = 1\n", T ":2: header \"x\" must be a string or an array of strings"},
		{"[header]\nx = [\"a\", true]\n",
		 T ":2: header \"x\" must be a string or an array of strings"},
		{"[header]\n\"bad name\" = \"v\"\n", T ":2: invalid header name \"bad name\""},
		{"[header]\nx = \"a\\r\\nInjected: 1\"\n",
		 T ":2: control character in the value of header \"x\""},
		{"[header.sub]\n", T ":1: header \"sub\" must be a string or an array of strings"},
		{"override_path = 1\n", T ":1: \"override_path\" must be true or false"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		parse_bad(cases[i].text, cases[i].msg);
}

static void test_nul_and_size(void **state)
{
	struct fetch_hosts *h = NULL;
	static const char text[] = "a = 1\nb = \"x\0y\"\n";
	char *big;
	int rc;

	(void)state;
	rc = fetch_hosts_parse(text, sizeof(text) - 1, T, "example.com", &h);
	assert_int_equal(rc, -EINVAL);
	assert_string_equal(strata_errmsg(rc), T ":2: NUL byte in file");

	/* no NUL terminator needed: only len bytes are read */
	rc = fetch_hosts_parse("server = \"https://a\"XXXX", 20, T, "example.com", &h);
	assert_int_equal(rc, 0);
	check_host(fetch_hosts_get(h, 0), "https", "a", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);
	h = NULL;

	big = malloc((1 << 20) + 2);
	assert_non_null(big);
	memset(big, '#', (1 << 20) + 1);
	rc = fetch_hosts_parse(big, (1 << 20) + 1, T, "example.com", &h);
	assert_int_equal(rc, -EINVAL);
	assert_string_equal(strata_errmsg(rc), T ":1: file is larger than 1048576 bytes");
	free(big);

	/* invalid registry names */
	assert_int_equal(fetch_hosts_parse("", 0, T, "../etc", &h), -EINVAL);
	assert_int_equal(fetch_hosts_load("/tmp", "..", &h), -EINVAL);
	assert_int_equal(fetch_hosts_load("/tmp", "", &h), -EINVAL);
	assert_int_equal(fetch_hosts_load("/tmp", "a b", &h), -EINVAL);
	assert_null(h);
	fetch_hosts_free(NULL);
}

/* ---- loading from a directory ---- */

static char tmp_root[PATH_MAX];

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *root, const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", root, name);
	assert_int_equal(mkdir(out, 0755), 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup_tmp(void **state)
{
	(void)state;
	snprintf(tmp_root, sizeof(tmp_root), "/tmp/strata-hosts-XXXXXX");
	return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
	(void)state;
	return nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_load_dirs(void **state)
{
	char root[PATH_MAX], def[PATH_MAX], reg[PATH_MAX], regp[PATH_MAX], path[PATH_MAX];
	struct fetch_hosts *h = NULL;
	const struct fetch_host *x;

	(void)state;
	snprintf(root, sizeof(root), "%s/certs.d", tmp_root);

	/* a missing hosts dir is not an error */
	assert_int_equal(fetch_hosts_load(root, "quay.io", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "https", "quay.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	assert_int_equal(mkdir(root, 0755), 0);
	make_dir(root, "_default", def, sizeof(def));
	write_file(
		def, "hosts.toml",
		"[host.\"https://cache.internal\"]\n  capabilities = [\"pull\"]\n  ca = \"cache-ca.pem\"\n");

	/* _default serves any registry without its own directory */
	assert_int_equal(fetch_hosts_load(root, "quay.io", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 2);
	x = fetch_hosts_get(h, 0);
	check_host(x, "https", "cache.internal", "/v2", FETCH_CAP_PULL, -1, 0);
	snprintf(path, sizeof(path), "%s/cache-ca.pem", def);
	assert_string_equal(x->ca[0], path);
	check_host(fetch_hosts_get(h, 1), "https", "quay.io", "/v2", FETCH_CAP_ALL, -1, 1);
	snprintf(path, sizeof(path), "%s/hosts.toml", def);
	assert_string_equal(fetch_hosts_source(h), path);
	fetch_hosts_free(h);

	/* a per-registry directory named host:port wins over _default */
	make_dir(root, "127.0.0.1:5000", reg, sizeof(reg));
	write_file(reg, "hosts.toml", "[host.\"http://127.0.0.1:6000\"]\n");
	assert_int_equal(fetch_hosts_load(root, "127.0.0.1:5000", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 2);
	check_host(fetch_hosts_get(h, 0), "http", "127.0.0.1:6000", "/v2", FETCH_CAP_ALL, -1, 0);
	check_host(fetch_hosts_get(h, 1), "http", "127.0.0.1:5000", "/v2", FETCH_CAP_ALL, 1, 1);
	fetch_hosts_free(h);

	/* ... and host_port_ wins over host:port */
	make_dir(root, "127.0.0.1_5000_", regp, sizeof(regp));
	write_file(regp, "hosts.toml", "server = \"http://127.0.0.1:7000\"\n");
	assert_int_equal(fetch_hosts_load(root, "127.0.0.1:5000", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "http", "127.0.0.1:7000", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	/* a bad hosts.toml is an error naming the file and line */
	write_file(regp, "hosts.toml", "server = \"http://127.0.0.1:7000\"\n\n[host.\"x\"\n");
	strata_err_clear();
	h = NULL;
	assert_int_equal(fetch_hosts_load(root, "127.0.0.1:5000", &h), -EINVAL);
	snprintf(path, sizeof(path), "%s/hosts.toml:3: expected '.' or ']' in table header, got end of line",
		 regp);
	assert_string_equal(strata_errmsg(-EINVAL), path);
	assert_null(h);
}

static void test_load_cert_files(void **state)
{
	char root[PATH_MAX], reg[PATH_MAX], sub[PATH_MAX], path[PATH_MAX], key[PATH_MAX];
	struct fetch_hosts *h = NULL;
	const struct fetch_host *s;

	(void)state;
	snprintf(root, sizeof(root), "%s/certs2.d", tmp_root);
	assert_int_equal(mkdir(root, 0755), 0);
	{
		char def[PATH_MAX];

		make_dir(root, "_default", def, sizeof(def));
		write_file(def, "hosts.toml", "server = \"https://never.used\"\n");
	}
	/* the registry directory exists without hosts.toml: Docker's certificate files, no _default */
	make_dir(root, "registry.example.com", reg, sizeof(reg));
	write_file(reg, "b.crt", "x");
	write_file(reg, "a.crt", "x");
	write_file(reg, "client.cert", "x");
	write_file(reg, "client.key", "x");
	write_file(reg, "solo.cert", "x");
	write_file(reg, "notes.txt", "x");
	make_dir(reg, "dir.crt", sub, sizeof(sub));

	assert_int_equal(fetch_hosts_load(root, "registry.example.com", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	s = fetch_hosts_get(h, 0);
	check_host(s, "https", "registry.example.com", "/v2", FETCH_CAP_ALL, -1, 1);
	assert_string_equal(fetch_hosts_source(h), reg);
	assert_int_equal(s->nca, 2);
	snprintf(path, sizeof(path), "%s/a.crt", reg);
	assert_string_equal(s->ca[0], path);
	snprintf(path, sizeof(path), "%s/b.crt", reg);
	assert_string_equal(s->ca[1], path);
	assert_int_equal(s->nclient, 2);
	snprintf(path, sizeof(path), "%s/client.cert", reg);
	snprintf(key, sizeof(key), "%s/client.key", reg);
	assert_string_equal(s->client[0].cert, path);
	assert_string_equal(s->client[0].key, key);
	snprintf(path, sizeof(path), "%s/solo.cert", reg);
	assert_string_equal(s->client[1].cert, path);
	assert_null(s->client[1].key);
	fetch_hosts_free(h);

	/* an empty hosts.toml counts as missing */
	write_file(reg, "hosts.toml", "");
	assert_int_equal(fetch_hosts_load(root, "registry.example.com", &h), 0);
	assert_int_equal(fetch_hosts_get(h, 0)->nca, 2);
	fetch_hosts_free(h);

	/* hosts.toml that is a directory: an error */
	{
		char other[PATH_MAX], d[PATH_MAX];

		make_dir(root, "other.example", other, sizeof(other));
		make_dir(other, "hosts.toml", d, sizeof(d));
		h = NULL;
		assert_int_equal(fetch_hosts_load(root, "other.example", &h), -EISDIR);
		assert_null(h);
	}
}

static void test_load_relative_dir(void **state)
{
	char cwd[PATH_MAX], root[PATH_MAX], reg[PATH_MAX], path[PATH_MAX];
	struct fetch_hosts *h = NULL;

	(void)state;
	snprintf(root, sizeof(root), "%s/rel.d", tmp_root);
	assert_int_equal(mkdir(root, 0755), 0);
	make_dir(root, "ghcr.io", reg, sizeof(reg));
	write_file(reg, "hosts.toml", "ca = \"ca.pem\"\n");

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmp_root), 0);
	assert_int_equal(fetch_hosts_load("./rel.d/", "ghcr.io", &h), 0);
	assert_int_equal(chdir(cwd), 0);
	snprintf(path, sizeof(path), "%s/ca.pem", reg);
	assert_string_equal(fetch_hosts_get(h, 0)->ca[0], path);
	snprintf(path, sizeof(path), "%s/hosts.toml", reg);
	assert_string_equal(fetch_hosts_source(h), path);
	fetch_hosts_free(h);
}

/* ---- robustness: prefixes and random damage must never crash ---- */

static const char fuzz_seed[] = "# mirrors for docker.io\n"
				"server = \"https://registry-1.docker.io\"\n"
				"capabilities = [\"pull\", \"resolve\"]\n"
				"\n"
				"[host.\"https://mirror.example:5000/us\"]\n"
				"  capabilities = [\"pull\"]\n"
				"  ca = [\"ca.pem\", '/abs/b.pem']\n"
				"  client = [[\"c.cert\", \"c.key\"], \"both.pem\"]\n"
				"  skip_verify = false\n"
				"  override_path = true\n"
				"  dial_timeout = \"2s\"\n"
				"  x-unknown = -12\n"
				"  [host.\"https://mirror.example:5000/us\".header]\n"
				"    X-One = \"a\\tb\\u00e9\"\n"
				"    X-Many = [\n"
				"      \"1\",  # c\n"
				"      \"2\",\n"
				"    ]\n"
				"[host.\"http://[::1]:80\"]\n"
				"[header]\n"
				"  Authorization-Extra = 'z'\r\n";

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void check_result(int rc, struct fetch_hosts *h)
{
	if (rc == 0) {
		size_t n = fetch_hosts_count(h);

		assert_true(n >= 1);
		for (size_t i = 0; i < n; i++) {
			const struct fetch_host *x = fetch_hosts_get(h, i);

			assert_non_null(x->scheme);
			assert_non_null(x->host);
			assert_non_null(x->path);
			assert_int_equal(x->is_server, i + 1 == n);
			for (size_t j = 0; j < x->nclient; j++)
				assert_non_null(x->client[j].cert);
		}
		for (size_t i = 0; i < fetch_hosts_warning_count(h); i++)
			assert_non_null(fetch_hosts_warning(h, i));
	} else {
		if (rc != -EINVAL)
			fail_msg("rc %d", rc);
		assert_null(h);
		assert_true(strncmp(strata_errmsg(rc), T ":", strlen(T) + 1) == 0);
		assert_null(strchr(strata_errmsg(rc), '\n'));
	}
	fetch_hosts_free(h);
}

static void test_fuzz(void **state)
{
	static const char specials[] = "\"'[]{}=.,#\\\n\r\t \x01\x7f\xc3\xff"
				       "0u";
	size_t len = sizeof(fuzz_seed) - 1, ok = 0;
	struct fetch_hosts *h;
	char *buf, *exact;
	int rc;

	(void)state;
	h = parse_ok(fuzz_seed, T, "docker.io");
	assert_int_equal(fetch_hosts_count(h), 3);
	fetch_hosts_free(h);

	/* every prefix, in a buffer of exactly that size so ASan sees any over-read */
	for (size_t n = 0; n <= len; n++) {
		buf = malloc(n ? n : 1);
		assert_non_null(buf);
		memcpy(buf, fuzz_seed, n);
		h = NULL;
		rc = fetch_hosts_parse(buf, n, T, "docker.io", &h);
		ok += rc == 0;
		check_result(rc, h);
		free(buf);
	}
	assert_true(ok > 0);

	/* random damage: flipped bits, special bytes, deletions */
	for (int iter = 0; iter < 30000; iter++) {
		size_t n = len;
		int edits = 1 + (int)(rng() % 4);

		buf = malloc(len);
		assert_non_null(buf);
		memcpy(buf, fuzz_seed, len);
		for (int e = 0; e < edits; e++) {
			size_t pos = rng() % n;

			switch (rng() % 3) {
			case 0:
				buf[pos] ^= (char)(1u << (rng() % 8));
				break;
			case 1:
				buf[pos] = specials[rng() % (sizeof(specials) - 1)];
				break;
			default:
				memmove(buf + pos, buf + pos + 1, n - pos - 1);
				n--;
				break;
			}
		}
		/* an exact-size copy, so ASan sees any read past the end */
		exact = malloc(n ? n : 1);
		assert_non_null(exact);
		memcpy(exact, buf, n);
		free(buf);
		h = NULL;
		rc = fetch_hosts_parse(exact, n, T, "docker.io", &h);
		ok += rc == 0;
		check_result(rc, h);
		free(exact);
	}
	/* some damaged files still parse (e.g. a flipped letter in a comment) */
	assert_true(ok > len + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_docs_simple_docker),
		cmocka_unit_test(test_docs_local_mirror),
		cmocka_unit_test(test_docs_host_section),
		cmocka_unit_test(test_docs_default_mirror),
		cmocka_unit_test(test_docs_skip_verify_example),
		cmocka_unit_test(test_mirror_order),
		cmocka_unit_test(test_default_server),
		cmocka_unit_test(test_docker_io_default),
		cmocka_unit_test(test_loopback_http),
		cmocka_unit_test(test_urls_and_override_path),
		cmocka_unit_test(test_ca_forms),
		cmocka_unit_test(test_client_forms),
		cmocka_unit_test(test_header_forms),
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_capabilities),
		cmocka_unit_test(test_skip_verify_and_extras),
		cmocka_unit_test(test_toml_values),
		cmocka_unit_test(test_unknown_keys_warn),
		cmocka_unit_test(test_key_case),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_nul_and_size),
		cmocka_unit_test(test_load_dirs),
		cmocka_unit_test(test_load_cert_files),
		cmocka_unit_test(test_load_relative_dir),
		cmocka_unit_test(test_fuzz),
	};

	return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}

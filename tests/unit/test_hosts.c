/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/hosts.c: the hosts.toml parser, containerd's host ordering and defaults. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/hosts.h"
#include "hostsq.h"
#include "util/log.h"

#define DOCKER_TOML "/etc/containerd/certs.d/docker.io/hosts.toml"

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
	check_host(m1, "https", "docker-mirror.internal", "/v2", FETCH_CAP_PULL | FETCH_CAP_RESOLVE,
		   -1, 0);
	assert_int_equal(m1->nca, 1);
	assert_string_equal(m1->ca[0], "/etc/containerd/certs.d/docker.io/docker-mirror.crt");
	check_host(fetch_hosts_get(h, 2), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1,
		   1);

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

	check_host(fetch_hosts_get(h, 1), "https", "mirror-bak.registry", "/us/v2", FETCH_CAP_PULL,
		   1, 0);
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
	check_host(fetch_hosts_get(h, 7), "https", "myregistry.io:5000", "/v2", FETCH_CAP_ALL, -1,
		   1);
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
	check_host(fetch_hosts_get(h, 0), "https", "registry.example.com", "/v2", FETCH_CAP_ALL, -1,
		   1);
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

	check_host(fetch_hosts_get(h, 0), "http", "192.168.31.250:5000", "/v2", FETCH_CAP_ALL, 1,
		   0);
	check_host(fetch_hosts_get(h, 1), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1,
		   1);
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
	struct fetch_hosts *h = parse_ok("ca = \"ca.pem\"\n"
					 "skip_verify = true\n"
					 "capabilities = [\"pull\"]\n"
					 "override_path = true\n"
					 "client = \"c.pem\"\n"
					 "[header]\n"
					 "  Authorization-Hint = \"x\"\n",
					 "/etc/containerd/certs.d/registry.example.com/hosts.toml",
					 "registry.example.com");
	const struct fetch_host *s = fetch_hosts_get(h, 0);

	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(s, "https", "registry.example.com", "/v2", FETCH_CAP_ALL, 1, 1);
	assert_int_equal(s->nca, 1);
	assert_string_equal(s->ca[0], "/etc/containerd/certs.d/registry.example.com/ca.pem");
	assert_int_equal(s->nclient, 1);
	assert_string_equal(s->client[0].cert,
			    "/etc/containerd/certs.d/registry.example.com/c.pem");
	assert_int_equal(s->nheaders, 1);
	fetch_hosts_free(h);

	/* with a server, top-level capabilities apply to it */
	h = parse_ok("server = \"https://up.example\"\ncapabilities = [\"pull\", \"resolve\"]\n", T,
		     "x.io");
	check_host(fetch_hosts_get(h, 0), "https", "up.example", "/v2",
		   FETCH_CAP_PULL | FETCH_CAP_RESOLVE, -1, 1);
	fetch_hosts_free(h);

	/* empty server = absent */
	h = parse_ok("server = \"\"\n", T, "x.io");
	check_host(fetch_hosts_get(h, 0), "https", "x.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	/* empty file, comments only */
	h = parse_ok("# nothing here\n\n   \t\n", T, "docker.io");
	check_host(fetch_hosts_get(h, 0), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1,
		   1);
	fetch_hosts_free(h);
}

static void test_docker_io_default(void **state)
{
	(void)state;
	struct fetch_hosts *h = NULL;

	assert_int_equal(fetch_hosts_load(NULL, "docker.io", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "https", "registry-1.docker.io", "/v2", FETCH_CAP_ALL, -1,
		   1);
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
		{ "127.0.0.1:5000", "http", 1 },
		{ "localhost", "http", 1 },
		{ "localhost:5000", "http", 1 },
		{ "127.1.2.3", "http", 1 },
		{ "[::1]:5000", "http", 1 },
		{ "[::1]", "http", 1 },
		{ "::1", "http", 1 },
		{ "10.0.0.1:5000", "https", -1 },
		{ "localhost.example", "https", -1 },
		{ "128.0.0.1", "https", -1 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fetch_hosts *h = NULL;
		const struct fetch_host *s;

		assert_int_equal(fetch_hosts_load("/nonexistent/certs.d", cases[i].registry, &h),
				 0);
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

		check_host(fetch_hosts_get(h, 0), "http", "127.0.0.1:5000", "/v2", FETCH_CAP_ALL, 0,
			   1);
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
		{ "mirror.example:5000", 0, "https", "mirror.example:5000", "/v2" },
		{ "http://mirror.example", 0, "http", "mirror.example", "/v2" },
		{ "HTTPS://Mirror.Example", 0, "https", "Mirror.Example", "/v2" },
		{ "https://m.example/", 0, "https", "m.example", "/v2" },
		{ "https://m.example/us", 0, "https", "m.example", "/us/v2" },
		{ "https://m.example/us/v2", 0, "https", "m.example", "/us/v2" },
		{ "https://m.example/us/v2/", 0, "https", "m.example", "/us/v2" },
		{ "https://m.example//a/./b/../c", 0, "https", "m.example", "/a/c/v2" },
		{ "https://m.example/v2/upstream", 0, "https", "m.example", "/v2/upstream/v2" },
		{ "https://m.example/v2/upstream", 1, "https", "m.example", "/v2/upstream" },
		{ "https://m.example/api/", 1, "https", "m.example", "/api" },
		{ "https://m.example", 1, "https", "m.example", "" },
		{ "https://[fd00::1]:5000/p", 0, "https", "[fd00::1]:5000", "/p/v2" },
		{ "http://10.0.0.1:80", 0, "http", "10.0.0.1:80", "/v2" },
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
		struct fetch_hosts *h =
			parse_ok("server = \"https://up.example/registry\"\noverride_path = true\n",
				 T, "example.com");
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
	struct fetch_hosts *h = parse_ok(
		"ca = [\"./a.pem\", \"../shared/b.pem\", \"c//d/./e.pem\", \"../../../../x.pem\"]\n"
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
	parse_bad("capabilities = \"pull\"\n", T
		  ":1: \"capabilities\" must be an array of strings, e.g. [\"pull\", \"resolve\"]");
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
	parse_bad(
		"dial_timeout = \"10\"\n", T
		":1: \"dial_timeout\" must be a duration string like \"500ms\" or \"2s\" (at most 24h)");
	parse_bad(
		"proxy = \"ftp://p\"\n", T
		":1: invalid \"proxy\" \"ftp://p\": expected http://, https://, socks5:// or socks5h://");
}

static void test_toml_values(void **state)
{
	(void)state;
	/* escapes, literal strings, integers, nested arrays, CRLF, BOM, quoted keys: all parse; the unknown
	 * keys become warnings */
	struct fetch_hosts *h = parse_ok(
		"\xef\xbb\xbf# bom first\r\n"
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

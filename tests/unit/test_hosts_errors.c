/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/hosts.c: malformed hosts.toml (exact messages), and damaged input that must never crash. */
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

/* ---- errors, with exact lines ---- */

static void test_errors(void **state)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{ "server = \"https://a\"\n\n[host.\"https://m\n",
		  T ":3: unterminated string (a string must end on its line)" },
		{ "server = \"https://a\n\"",
		  T ":1: unterminated string (a string must end on its line)" },
		{ "server = 'abc", T ":1: unterminated string (a string must end on its line)" },
		{ "a = 1\n[host.\"x\"]\nca = \"a\"\n\nca = \"b\"\n",
		  T ":5: duplicate key \"ca\" (first defined on line 3)" },
		{ "[host.\"https://m\"]\nca = \"a\"\n\n[host.\"https://m\"]\n",
		  T ":4: duplicate table [host.\"https://m\"] (first defined on line 1)" },
		{ "[host.\"a\".header]\n[host.\"a\"]\n[host.\"a\".header]\n",
		  T ":3: duplicate table [host.\"a\".header] (first defined on line 1)" },
		{ "[header]\nx = \"1\"\n[header]\n",
		  T ":3: duplicate table [header] (first defined on line 1)" },
		{ "\n[host.\"h\"]\nca = \"a\\qb\"\n", T ":3: invalid escape '\\q' in string" },
		{ "ca = \"\\u12\"\n", T ":1: invalid escape '\\u': expected 4 hex digits" },
		{ "ca = \"\\uD800\"\n",
		  T ":1: invalid escape: U+D800 is not a Unicode scalar value" },
		{ "ca = \"\\u0000\"\n", T ":1: invalid escape: NUL (\\u0000) is not allowed" },
		{ "# c\n[host.\"h\"]\n  capabilities [\"pull\"]\n",
		  T ":3: expected '=' after key \"capabilities\"" },
		{ "capabilities\n", T ":1: expected '=' after key \"capabilities\"" },
		{ "skip_verify = true yes\n",
		  T ":1: unexpected 'y' after the value of key \"skip_verify\"" },
		{ "server = \"https://a\" \"b\"\n",
		  T ":1: unexpected '\"' after the value of key \"server\"" },
		{ "ca = [\"a\", \"b\"] ,\n", T ":1: unexpected ',' after the value of key \"ca\"" },
		{ "[host.\"h\"] x\n", T ":1: unexpected 'x' after table header [host.\"h\"]" },
		{ "\n\nheader = { a = \"b\" }\n",
		  T ":3: inline tables are not supported (key \"header\"); use a [table] header" },
		{ "[[host]]\n", T ":1: arrays of tables ([[...]]) are not supported" },
		{ "host.\"x\".ca = \"a\"\n",
		  T ":1: dotted keys are not supported (key \"host\"); use a [table] header" },
		{ "server = https://a\n",
		  T ":1: expected a value for key \"server\", got 'h' (strings must be quoted)" },
		{ "server =\n", T ":1: expected a value for key \"server\"" },
		{ "server = \"\"\"x\"\"\"\n",
		  T ":1: multi-line strings (\"\"\") are not supported" },
		{ "x = 1.5\n", T ":1: floats are not supported (key \"x\")" },
		{ "x = 1979-05-27\n", T ":1: dates and times are not supported (key \"x\")" },
		{ "x = 0x10\n", T
		  ":1: invalid integer for key \"x\" (only decimal integers; strings must be quoted)" },
		{ "x = 012\n", T ":1: invalid integer for key \"x\": leading zero" },
		{ "x = 99999999999999999999\n", T ":1: integer out of range for key \"x\"" },
		{ "ca = [\"a\"\n\"b\"]\n",
		  T ":2: expected ',' or ']' in the array of key \"ca\", got '\"'" },
		{ "ca = [\"a\",\n  \"b\",\n",
		  T ":3: unterminated array for key \"ca\" (opened on line 1)" },
		{ "ca = [,]\n",
		  T ":1: expected a value for key \"ca\", got ',' (strings must be quoted)" },
		{ "x = [[[[[[[[[1]]]]]]]]]\n", T ":1: arrays nested too deeply (key \"x\")" },
		{ "[host.\"h\"\n", T ":1: expected '.' or ']' in table header, got end of line" },
		{ "[]\n", T ":1: expected a key in table header, got ']'" },
		{ "= 1\n", T ":1: expected a key at the start of a line, got '='" },
		{ "[a.b.c.d.e.f.g.h.i]\n", T ":1: table header has more than 8 parts" },
		{ "server = \"a\"\n[server]\n", T
		  ":2: cannot define table [server]: key \"server\" already has a value (line 1)" },
		{ "a = 1\r\rb = 2\n", T ":1: carriage return not followed by a newline" },
		{ "a = \"x\ty\" # ok\nb = \"\x01\"\n",
		  T ":2: control character 0x01 in string (use an escape)" },
		{ "# bad \x7f comment\n", T ":1: control character in comment" },
		{ "a = 1\nb = 2\n\xff\n", T ":3: invalid UTF-8" },
		/* semantic errors */
		{ "server = 1\n", T ":1: \"server\" must be a string (a URL)" },
		{ "host = \"x\"\n", T ":1: \"host\" must be [host.\"URL\"] tables" },
		{ "[host]\nx = 1\n", T ":2: \"host\" must be [host.\"URL\"] tables, not a value" },
		{ "[host.\"\"]\n", T ":1: empty host URL in [host.\"\"]" },
		{ "[host.\"ftp://m\"]\n",
		  T ":1: unsupported scheme in \"ftp://m\" (expected http:// or https://)" },
		{ "[host.\"https://\"]\n", T ":1: missing host name in \"https://\"" },
		{ "[host.\"https://u:p@m\"]\n",
		  T ":1: credentials in host URL \"https://u:p@m\" are not supported" },
		{ "[host.\"https://m:99999\"]\n", T
		  ":1: invalid host in \"https://m:99999\" (expected host[:port] or [ipv6]:port)" },
		{ "[host.\"https://m/x?y=1\"]\n",
		  T ":1: query or fragment not allowed in host URL \"https://m/x?y=1\"" },
		{ "server = \"https://m/a b\"\n",
		  T ":1: space or control character in host URL \"https://m/a b\"" },
		{ "ca = 1\n", T ":1: \"ca\" must be a path or an array of paths" },
		{ "ca = [\"a\",\n 2]\n", T ":2: \"ca\" must be a path or an array of paths" },
		{ "ca = \"\"\n", T ":1: empty path in \"ca\"" },
		{ "client = true\n", T
		  ":1: \"client\" must be a path, an array of paths or an array of [cert, key] pairs" },
		{ "client = [[\"a\", \"b\", \"c\"]]\n",
		  T ":1: a \"client\" pair must have two elements: [cert, key]" },
		{ "client = [[\"a\", 1]]\n",
		  T ":1: a \"client\" pair must be two strings: [cert, key]" },
		{ "client = [[\"\", \"k\"]]\n", T ":1: empty certificate path in \"client\" pair" },
		{ "header = \"x\"\n",
		  T ":1: \"header\" must be a table: [header] or [host.\"...\".header]" },
		{ "[header]\nx = 1\n",
		  T ":2: header \"x\" must be a string or an array of strings" },
		{ "[header]\nx = [\"a\", true]\n",
		  T ":2: header \"x\" must be a string or an array of strings" },
		{ "[header]\n\"bad name\" = \"v\"\n", T ":2: invalid header name \"bad name\"" },
		{ "[header]\nx = \"a\\r\\nInjected: 1\"\n",
		  T ":2: control character in the value of header \"x\"" },
		{ "[header.sub]\n",
		  T ":1: header \"sub\" must be a string or an array of strings" },
		{ "override_path = 1\n", T ":1: \"override_path\" must be true or false" },
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
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_nul_and_size),
		cmocka_unit_test(test_fuzz),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

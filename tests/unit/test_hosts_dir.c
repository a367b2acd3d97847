/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/hosts.c: loading hosts.toml and certificate files from a hosts directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/hosts.h"
#include "hostsq.h"
#include "tmpdir.h"
#include "util/log.h"

/* ---- loading from a directory ---- */

static void make_dir(const char *root, const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s", root, name);
	assert_int_equal(mkdir(out, 0755), 0);
}

static void test_load_dirs(void **state)
{
	char root[PATH_MAX], def[PATH_MAX], reg[PATH_MAX], regp[PATH_MAX], path[PATH_MAX];
	struct fetch_hosts *h = NULL;
	const struct fetch_host *x;

	(void)state;
	snprintf(root, sizeof(root), "%s/certs.d", tmpdir_path);

	/* a missing hosts dir is not an error */
	assert_int_equal(fetch_hosts_load(root, "quay.io", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "https", "quay.io", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	assert_int_equal(mkdir(root, 0755), 0);
	make_dir(root, "_default", def, sizeof(def));
	tmpdir_write_text(
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
	tmpdir_write_text(reg, "hosts.toml", "[host.\"http://127.0.0.1:6000\"]\n");
	assert_int_equal(fetch_hosts_load(root, "127.0.0.1:5000", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 2);
	check_host(fetch_hosts_get(h, 0), "http", "127.0.0.1:6000", "/v2", FETCH_CAP_ALL, -1, 0);
	check_host(fetch_hosts_get(h, 1), "http", "127.0.0.1:5000", "/v2", FETCH_CAP_ALL, 1, 1);
	fetch_hosts_free(h);

	/* ... and host_port_ wins over host:port */
	make_dir(root, "127.0.0.1_5000_", regp, sizeof(regp));
	tmpdir_write_text(regp, "hosts.toml", "server = \"http://127.0.0.1:7000\"\n");
	assert_int_equal(fetch_hosts_load(root, "127.0.0.1:5000", &h), 0);
	assert_int_equal(fetch_hosts_count(h), 1);
	check_host(fetch_hosts_get(h, 0), "http", "127.0.0.1:7000", "/v2", FETCH_CAP_ALL, -1, 1);
	fetch_hosts_free(h);

	/* a bad hosts.toml is an error naming the file and line */
	tmpdir_write_text(regp, "hosts.toml",
			  "server = \"http://127.0.0.1:7000\"\n\n[host.\"x\"\n");
	strata_err_clear();
	h = NULL;
	assert_int_equal(fetch_hosts_load(root, "127.0.0.1:5000", &h), -EINVAL);
	snprintf(path, sizeof(path),
		 "%s/hosts.toml:3: expected '.' or ']' in table header, got end of line", regp);
	assert_string_equal(strata_errmsg(-EINVAL), path);
	assert_null(h);
}

static void test_load_cert_files(void **state)
{
	char root[PATH_MAX], reg[PATH_MAX], sub[PATH_MAX], path[PATH_MAX], key[PATH_MAX];
	struct fetch_hosts *h = NULL;
	const struct fetch_host *s;

	(void)state;
	snprintf(root, sizeof(root), "%s/certs2.d", tmpdir_path);
	assert_int_equal(mkdir(root, 0755), 0);
	{
		char def[PATH_MAX];

		make_dir(root, "_default", def, sizeof(def));
		tmpdir_write_text(def, "hosts.toml", "server = \"https://never.used\"\n");
	}
	/* the registry directory exists without hosts.toml: Docker's certificate files, no _default */
	make_dir(root, "registry.example.com", reg, sizeof(reg));
	tmpdir_write_text(reg, "b.crt", "x");
	tmpdir_write_text(reg, "a.crt", "x");
	tmpdir_write_text(reg, "client.cert", "x");
	tmpdir_write_text(reg, "client.key", "x");
	tmpdir_write_text(reg, "solo.cert", "x");
	tmpdir_write_text(reg, "notes.txt", "x");
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
	tmpdir_write_text(reg, "hosts.toml", "");
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
	snprintf(root, sizeof(root), "%s/rel.d", tmpdir_path);
	assert_int_equal(mkdir(root, 0755), 0);
	make_dir(root, "ghcr.io", reg, sizeof(reg));
	tmpdir_write_text(reg, "hosts.toml", "ca = \"ca.pem\"\n");

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmpdir_path), 0);
	assert_int_equal(fetch_hosts_load("./rel.d/", "ghcr.io", &h), 0);
	assert_int_equal(chdir(cwd), 0);
	snprintf(path, sizeof(path), "%s/ca.pem", reg);
	assert_string_equal(fetch_hosts_get(h, 0)->ca[0], path);
	snprintf(path, sizeof(path), "%s/hosts.toml", reg);
	assert_string_equal(fetch_hosts_source(h), path);
	fetch_hosts_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_dirs),
		cmocka_unit_test(test_load_cert_files),
		cmocka_unit_test(test_load_relative_dir),
	};

	return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}

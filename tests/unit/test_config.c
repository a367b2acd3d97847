/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the configuration file parser: values, comments, and FILE:LINE errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/config.h"

static int parse(const char *text, struct config *cfg, char *err)
{
	return config_parse("strata.toml", text, strlen(text), cfg, err, 512);
}

static void test_values(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse("# strata\n\n  quota = \"20G\"   # the bound\r\n"
			       "quota_low_water=75\nhosts_dir = \"/etc/a \\\"b\\\"#c\"\n"
			       "strict_cache = true\nread_timeout = 7\n",
			       &cfg, err),
			 0);
	assert_true(cfg.has_quota && cfg.has_low_water && cfg.has_strict_cache &&
		    cfg.has_read_timeout);
	assert_int_equal(cfg.quota, 20ull << 30);
	assert_int_equal(cfg.low_water, 75);
	assert_string_equal(cfg.hosts_dir, "/etc/a \"b\"#c");
	assert_int_equal(cfg.strict_cache, 1);
	assert_int_equal(cfg.read_timeout, 7);
	config_free(&cfg);

	/* defaults: nothing set, low water 90 */
	assert_int_equal(parse("", &cfg, err), 0);
	assert_false(cfg.has_quota || cfg.has_low_water || cfg.has_strict_cache ||
		     cfg.has_read_timeout);
	assert_null(cfg.hosts_dir);
	assert_int_equal(cfg.low_water, CONFIG_LOW_WATER_DEFAULT);
	config_free(&cfg);

	assert_int_equal(parse("quota = 1048576\nstrict_cache = false\n", &cfg, err), 0);
	assert_int_equal(cfg.quota, 1048576);
	assert_int_equal(cfg.strict_cache, 0);
	assert_int_equal(cfg.has_strict_cache, 1);
	config_free(&cfg);
	assert_int_equal(parse("quota = \"512MiB\"", &cfg, err), 0); /* no final newline */
	assert_int_equal(cfg.quota, 512ull << 20);
	config_free(&cfg);
}

static void test_cache_keys(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(
		parse("index_cache = \"8M\"\nchunk_cache = 1048576\nblock_cache = \"1GiB\"\n", &cfg,
		      err),
		0);
	assert_true(cfg.has_index_cache && cfg.has_chunk_cache && cfg.has_block_cache);
	assert_int_equal(cfg.index_cache, 8ull << 20);
	assert_int_equal(cfg.chunk_cache, 1048576);
	assert_int_equal(cfg.block_cache, 1ull << 30);
	config_free(&cfg);
	assert_int_equal(parse("chunk_cache = \"4k\"\n", &cfg, err), 0);
	assert_false(cfg.has_index_cache || cfg.has_block_cache);
	assert_int_equal(cfg.chunk_cache, 4096);
	config_free(&cfg);
}

static void test_allow_other(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse("", &cfg, err), 0);
	assert_false(cfg.has_allow_other || cfg.allow_other); /* private by default */
	config_free(&cfg);
	assert_int_equal(parse("allow_other = true\n", &cfg, err), 0);
	assert_true(cfg.has_allow_other && cfg.allow_other);
	config_free(&cfg);
	assert_int_equal(parse("allow_other = false\n", &cfg, err), 0);
	assert_true(cfg.has_allow_other && !cfg.allow_other);
	config_free(&cfg);
}

static void test_low_speed_timeout(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse("low_speed_timeout = 5\n", &cfg, err), 0);
	assert_true(cfg.has_low_speed_timeout && cfg.low_speed_timeout == 5);
	config_free(&cfg);
	assert_int_equal(parse("low_speed_timeout = 0\n", &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "strata.toml:1: low_speed_timeout: expected a number"));
	assert_int_equal(parse("low_speed_timeout = 3601\n", &cfg, err), -EINVAL);
}

/* images and pin: the references a daemon pulls (and pins) at start. */
static void test_images_and_pin(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse("images = [\"a/b:1\", \"c@sha256:00\"]\npin = [\"d\"]\n", &cfg, err),
			 0);
	assert_int_equal(cfg.nimages, 2);
	assert_string_equal(cfg.images[0], "a/b:1");
	assert_string_equal(cfg.images[1], "c@sha256:00");
	assert_int_equal(cfg.npins, 1);
	assert_string_equal(cfg.pins[0], "d");
	config_free(&cfg);
	assert_null(cfg.images);
	assert_int_equal(parse("images = \"a\"\n", &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "strata.toml:1: images: expected [\"reference\", ...]"));
	assert_int_equal(parse("pin = [\"\"]\n", &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "strata.toml:1: pin: an empty reference"));
	assert_int_equal(parse("images = [\"a\"]\nimages = [\"b\"]\n", &cfg, err), -EINVAL);
}

static void expect_error(const char *text, const char *msg)
{
	struct config cfg;
	char err[512] = "";

	assert_int_equal(parse(text, &cfg, err), -EINVAL);
	if (!strstr(err, msg))
		fail_msg("error '%s' does not contain '%s'", err, msg);
	assert_null(cfg.hosts_dir);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("quota = \"20G\"\nquoat = 1\n", "strata.toml:2: unknown key 'quoat'");
	expect_error("\n\nquota = \"20X\"\n", "strata.toml:3: quota: expected a size");
	expect_error("quota = -1\n", "strata.toml:1: quota:");
	expect_error("quota = true\n", "strata.toml:1: quota:");
	expect_error("quota_low_water = 0\n", "strata.toml:1: quota_low_water");
	expect_error("quota_low_water = 101\n", "strata.toml:1: quota_low_water");
	expect_error("quota_low_water = \"90\"\n", "strata.toml:1: quota_low_water");
	expect_error("strict_cache = 1\n", "strata.toml:1: strict_cache: expected true or false");
	expect_error("read_timeout = 0\n", "strata.toml:1: read_timeout");
	expect_error("read_timeout = 99999999999999999999\n",
		     "strata.toml:1: read_timeout: integer out of range");
	expect_error("hosts_dir = \"/x\" extra\n", "strata.toml:1: hosts_dir: unexpected text");
	expect_error("hosts_dir = \"/x\n", "strata.toml:1: hosts_dir: unterminated string");
	expect_error("hosts_dir = \"\\q\"\n", "strata.toml:1: hosts_dir: unsupported escape");
	expect_error("hosts_dir = /x\n", "strata.toml:1: hosts_dir: expected a \"string\"");
	expect_error("hosts_dir =\n", "strata.toml:1: hosts_dir: missing value");
	expect_error("quota\n", "strata.toml:1: expected key = value");
	expect_error("= 3\n", "strata.toml:1: expected key = value");
	expect_error("[store]\nquota = 1\n", "strata.toml:1: tables are not supported");
	expect_error("# c\nread_timeout = 3\nread_timeout = 4\n",
		     "strata.toml:3: read_timeout is set twice");
	expect_error("hosts_dir = \"/a\"\nhosts_dir = \"/b\"\n",
		     "strata.toml:2: hosts_dir is set twice");
	expect_error("index_cache = 0\n",
		     "strata.toml:1: index_cache: expected a size greater than 0");
	expect_error("chunk_cache = \"0M\"\n", "strata.toml:1: chunk_cache: expected a size");
	expect_error("block_cache = \"32X\"\n", "strata.toml:1: block_cache: expected a size");
	expect_error("block_cache = true\n", "strata.toml:1: block_cache: expected a size");
	expect_error("index_cache = 1\nindex_cache = 2\n",
		     "strata.toml:2: index_cache is set twice");
	expect_error("allow_other = 1\n", "strata.toml:1: allow_other: expected true or false");
	expect_error("allow_other = \"yes\"\n", "strata.toml:1: allow_other: expected true");
	expect_error("allow_other = true\nallow_other = true\n",
		     "strata.toml:2: allow_other is set twice");
}

static void test_snapshotter_socket(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse("", &cfg, err), 0);
	assert_null(cfg.snapshotter_socket);
	config_free(&cfg);
	assert_int_equal(parse("snapshotter_socket = \"/run/strata/s.sock\"\n", &cfg, err), 0);
	assert_string_equal(cfg.snapshotter_socket, "/run/strata/s.sock");
	config_free(&cfg);
	assert_null(cfg.snapshotter_socket);
	expect_error("snapshotter_socket = \"s.sock\"\n",
		     "strata.toml:1: snapshotter_socket: expected an absolute \"path\"");
	expect_error("snapshotter_socket = 1\n", "snapshotter_socket: expected an absolute");
	expect_error("snapshotter_socket = \"/a\"\nsnapshotter_socket = \"/b\"\n",
		     "strata.toml:2: snapshotter_socket is set twice");
}

static void test_trust_keys(void **state)
{
	struct config cfg;
	char err[512];

	(void)state;
	assert_int_equal(parse("artifact_trust = \"signed\"\n"
			       "trusted_keys = [ \"/etc/strata/a.pub\", \"/k/b.pub\" ] # two\n",
			       &cfg, err),
			 0);
	assert_string_equal(cfg.artifact_trust, "signed");
	assert_int_equal(cfg.ntrusted_keys, 2);
	assert_string_equal(cfg.trusted_keys[0], "/etc/strata/a.pub");
	assert_string_equal(cfg.trusted_keys[1], "/k/b.pub");
	config_free(&cfg);
	assert_int_equal(parse("trusted_keys = [\"/a\",]\n", &cfg, err), 0);
	assert_int_equal(cfg.ntrusted_keys, 1);
	assert_string_equal(cfg.artifact_trust, "");
	config_free(&cfg);
	expect_error("artifact_trust = \"everyone\"\n", "strata.toml:1: artifact_trust: expected");
	expect_error("trusted_keys = \"/a.pub\"\n", "strata.toml:1: trusted_keys: expected [");
	expect_error("trusted_keys = []\n", "strata.toml:1: trusted_keys: expected [");
	expect_error("trusted_keys = [\"a.pub\"]\n", "strata.toml:1: trusted_keys: 'a.pub' is not");
	expect_error("trusted_keys = [\"/a\"\n", "strata.toml:1: trusted_keys: unterminated array");
	expect_error("trusted_keys = [\"/a\" \"/b\"]\n",
		     "strata.toml:1: trusted_keys: expected , or ]");
	expect_error("trusted_keys = [1]\n",
		     "strata.toml:1: trusted_keys: expected a \"string\" in");
	expect_error("quota = [\"1\"]\n", "strata.toml:1: quota: expected a size");
}

static void test_load(void **state)
{
	char path[] = "/tmp/strata-test-config-XXXXXX", err[512];
	struct config cfg;
	FILE *fp;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fp = fdopen(fd, "w");
	fputs("quota = \"1T\"\nbogus = 1\n", fp);
	fclose(fp);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":2: unknown key 'bogus'"));
	assert_int_equal(strncmp(err, path, strlen(path)), 0);
	unlink(path);
	assert_int_equal(config_load(path, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "No such file"));
}

static void test_size(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(config_parse_size("64k", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(config_parse_size("2GB", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(config_parse_size("7", &v), 0);
	assert_int_equal(v, 7);
	assert_int_equal(config_parse_size("", &v), -EINVAL);
	assert_int_equal(config_parse_size("-1G", &v), -EINVAL);
	assert_int_equal(config_parse_size("1Q", &v), -EINVAL);
	assert_int_equal(config_parse_size("99999999999T", &v), -EINVAL);
}

static void test_download_deadline(void **state)
{
	struct config cfg;
	char err[512] = "";

	(void)state;
	assert_int_equal(parse("download_deadline_base = 60\ndownload_min_rate = \"256K\"\n", &cfg,
			       err),
			 0);
	assert_true(cfg.has_download_deadline_base && cfg.download_deadline_base == 60);
	assert_true(cfg.has_download_min_rate && cfg.download_min_rate == 256 * 1024);
	config_free(&cfg);
	assert_int_equal(parse("download_min_rate = 1000\n", &cfg, err), 0);
	assert_true(cfg.download_min_rate == 1000 && !cfg.has_download_deadline_base);
	config_free(&cfg);
	assert_int_equal(parse("download_deadline_base = 0\n", &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "strata.toml:1: download_deadline_base: expected a number"));
	assert_int_equal(parse("download_deadline_base = 86401\n", &cfg, err), -EINVAL);
	assert_int_equal(parse("download_min_rate = 0\n", &cfg, err), -EINVAL);
	assert_non_null(strstr(err, "download_min_rate: expected bytes a second"));
	assert_int_equal(parse("download_min_rate = \"0\"\n", &cfg, err), -EINVAL);
	assert_int_equal(parse("download_min_rate = \"fast\"\n", &cfg, err), -EINVAL);
	assert_int_equal(parse("download_min_rate = 5\ndownload_min_rate = 6\n", &cfg, err),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_cache_keys),
		cmocka_unit_test(test_allow_other),
		cmocka_unit_test(test_low_speed_timeout),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_trust_keys),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_snapshotter_socket),
		cmocka_unit_test(test_images_and_pin),
		cmocka_unit_test(test_download_deadline),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

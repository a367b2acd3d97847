/* SPDX-License-Identifier: Apache-2.0 */
/* The commands' shared helpers: global options, the config file, errors, sizes, registry client. */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fetch/registry.h"
#include "tools/config.h"
#include "util/log.h"

int cli_fetch_client(struct cli *c, struct fetch_client **out)
{
	struct fetch_opts fo;
	int rc;

	memset(&fo, 0, sizeof(fo));
	fo.platform_os = "linux";
	fo.platform_arch = fetch_host_arch();
	fo.hosts_dir = c->hosts_dir;
	fo.strict_cache = c->strict_cache;
	fo.low_speed_timeout_s = c->low_speed_s;
	fo.download_base_s = c->download_base_s;
	fo.download_min_rate = c->download_min_rate;
	rc = fetch_client_new(&fo, out);
	return rc < 0 ? cli_fail(c, "%s", strata_errmsg(rc)) : 0;
}

int cli_fail(struct cli *c, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(c->err, "strata: %s: %s\n", c->cmd ? c->cmd : "error", msg);
	fflush(c->err);
	return 1;
}

int cli_usage(struct cli *c, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(c->err, "strata: %s: %s (see 'strata --help')\n", c->cmd ? c->cmd : "usage", msg);
	fflush(c->err);
	return 2;
}

const char *cli_bytes(uint64_t n, char *buf, size_t cap)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, cap, "%.1f %s", v, units[u]);
	return buf;
}

int cli_parse_size(const char *s, uint64_t *out)
{
	return config_parse_size(s, out); /* one size syntax for flags and the config file */
}

/* ---------------------------------------------------------------- global options */

int cli_parse_globals(struct cli *c, int argc, char **argv, char **rest, int *nrest)
{
	int n = 0;
	int dashdash = 0;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = NULL;
		const char *val = NULL;
		size_t klen;

		if (dashdash || a[0] != '-') {
			rest[n++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			dashdash = 1;
			continue;
		}
		if (strcmp(a, "--json") == 0) {
			c->json = 1;
			continue;
		}
		if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			c->verbose++;
			continue;
		}
		if (strcmp(a, "--strict-cache") == 0) {
			c->strict_cache = 1;
			continue;
		}
		klen = strcspn(a, "=");
		if (strncmp(a, "--store", klen) == 0 && klen == 7)
			dst = &c->store_dir;
		else if (strncmp(a, "--config", klen) == 0 && klen == 8)
			dst = &c->config;
		else if (strncmp(a, "--hosts-dir", klen) == 0 && klen == 11)
			dst = &c->hosts_dir;
		else if (!(strncmp(a, "--quota", klen) == 0 && klen == 7)) {
			rest[n++] = argv[i]; /* a command option */
			continue;
		}
		if (a[klen] == '=') {
			val = a + klen + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			c->cmd = NULL;
			return cli_usage(c, "option %s needs a value", a);
		}
		if (dst) {
			*dst = val;
		} else if (cli_parse_size(val, &c->quota) < 0) {
			return cli_usage(c, "invalid size '%s' for --quota (e.g. 20G)", val);
		}
	}
	rest[n] = NULL;
	*nrest = n;
	return 0;
}

int cli_apply_config(struct cli *c)
{
	struct config cfg;
	char err[1024];

	if (!c->config)
		return 0;
	if (config_load(c->config, &cfg, err, sizeof(err)) < 0) {
		fprintf(c->err, "strata: %s\n", err);
		fflush(c->err);
		return 1;
	}
	if (!c->quota && cfg.has_quota)
		c->quota = cfg.quota;
	if (!c->low_water)
		c->low_water = cfg.low_water;
	if (!c->hosts_dir && cfg.hosts_dir) {
		free(c->config_hosts_dir);
		c->config_hosts_dir = cfg.hosts_dir;
		c->hosts_dir = cfg.hosts_dir;
		cfg.hosts_dir = NULL;
	}
	if (!c->strict_cache && cfg.has_strict_cache)
		c->strict_cache = cfg.strict_cache;
	if (!c->read_timeout_s && cfg.has_read_timeout)
		c->read_timeout_s = cfg.read_timeout;
	if (!c->index_cache && cfg.has_index_cache)
		c->index_cache = cfg.index_cache;
	if (!c->chunk_cache && cfg.has_chunk_cache)
		c->chunk_cache = cfg.chunk_cache;
	if (!c->block_cache && cfg.has_block_cache)
		c->block_cache = cfg.block_cache;
	if (!c->allow_other && cfg.has_allow_other)
		c->allow_other = cfg.allow_other;
	if (!c->low_speed_s && cfg.has_low_speed_timeout)
		c->low_speed_s = cfg.low_speed_timeout;
	if (!c->download_base_s && cfg.has_download_deadline_base)
		c->download_base_s = cfg.download_deadline_base;
	if (!c->download_min_rate && cfg.has_download_min_rate)
		c->download_min_rate = cfg.download_min_rate;
	if (!c->artifact_trust[0])
		snprintf(c->artifact_trust, sizeof(c->artifact_trust), "%s", cfg.artifact_trust);
	if (!c->snapshotter_socket && cfg.snapshotter_socket) {
		free(c->config_snapshotter_socket);
		c->config_snapshotter_socket = cfg.snapshotter_socket;
		c->snapshotter_socket = cfg.snapshotter_socket;
		cfg.snapshotter_socket = NULL;
	}
	if (!c->trusted_keys) {
		c->trusted_keys = cfg.trusted_keys;
		c->ntrusted_keys = cfg.ntrusted_keys;
		cfg.trusted_keys = NULL;
		cfg.ntrusted_keys = 0;
	}
	if (!c->images && !c->pins) {
		c->images = cfg.images;
		c->nimages = cfg.nimages;
		c->pins = cfg.pins;
		c->npins = cfg.npins;
		cfg.images = cfg.pins = NULL;
		cfg.nimages = cfg.npins = 0;
	}
	config_free(&cfg);
	return 0;
}

void cli_config_free(struct cli *c)
{
	free(c->config_hosts_dir);
	c->config_hosts_dir = NULL;
	free(c->config_snapshotter_socket);
	c->config_snapshotter_socket = NULL;
	for (size_t i = 0; i < c->ntrusted_keys; i++)
		free(c->trusted_keys[i]);
	free(c->trusted_keys);
	c->trusted_keys = NULL;
	c->ntrusted_keys = 0;
	for (size_t i = 0; i < c->nimages; i++)
		free(c->images[i]);
	free(c->images);
	c->images = NULL;
	c->nimages = 0;
	for (size_t i = 0; i < c->npins; i++)
		free(c->pins[i]);
	free(c->pins);
	c->pins = NULL;
	c->npins = 0;
}

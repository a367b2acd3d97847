/* SPDX-License-Identifier: Apache-2.0 */
/* The strata configuration file: a strict `key = value` subset of TOML. */
#ifndef STRATA_TOOLS_CONFIG_H
#define STRATA_TOOLS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* Values read from a configuration file; a has_ flag says whether the file set the key. */
struct config {
	uint64_t quota;	    /* bytes; "20G" strings or plain integers */
	unsigned low_water; /* quota_low_water: percent of the quota eviction goes down to */
	char *hosts_dir;    /* malloc'd, or NULL */
	int strict_cache;
	long read_timeout;	     /* seconds, 1-86400 */
	uint64_t index_cache;	     /* bytes of decoded layer indexes a daemon keeps loaded */
	uint64_t chunk_cache;	     /* bytes of decoded chunks a daemon keeps */
	uint64_t block_cache;	     /* bytes of RocksDB block cache */
	int allow_other;	     /* mount: let other users read the mount */
	long low_speed_timeout;	     /* seconds a transfer may stay below 1 KiB/s, 1-3600 */
	long download_deadline_base; /* seconds every whole-blob download gets, 1-86400 */
	uint64_t download_min_rate;  /* bytes/s a whole-blob download must average beyond it */
	char artifact_trust[16];     /* "repository", "signed", "none", or "" (not set) */
	char **trusted_keys; /* malloc'd paths of PEM public keys (artifact_trust "signed") */
	size_t ntrusted_keys;
	char *snapshotter_socket; /* malloc'd absolute path (mount: containerd snapshotter), or NULL */
	char **images;		  /* malloc'd references the daemon pulls at start */
	size_t nimages;
	char **pins; /* malloc'd references the daemon pulls and pins at start */
	size_t npins;
	int has_quota, has_low_water, has_strict_cache, has_read_timeout;
	int has_index_cache, has_chunk_cache, has_block_cache, has_allow_other;
	int has_low_speed_timeout, has_download_deadline_base, has_download_min_rate;
};

#define CONFIG_LOW_WATER_DEFAULT 90

/*
 * Parses the configuration text (len bytes; name is used in messages) into *cfg, which it
 * zeroes first. The format: one `key = value` per line; `#` comments (outside strings) and blank
 * lines; values are "strings" (escapes \" \\ \t \n), integers, or true/false. Known keys: quota
 * (size string like "20G", or bytes), quota_low_water (1-100), hosts_dir (string), strict_cache
 * (boolean), read_timeout (seconds, 1-86400), index_cache, chunk_cache, block_cache (sizes like
 * quota, greater than 0), allow_other (boolean), low_speed_timeout (seconds, 1-3600),
 * download_deadline_base (seconds, 1-86400), download_min_rate (a size a second, > 0),
 * artifact_trust ("repository", "signed" or "none"), trusted_keys (a one-line array of
 * 1-16 "paths" of PEM public keys), snapshotter_socket (an absolute "path"), images and pin (one-line arrays of 1-16 "references" a
 * daemon pulls, and pulls and pins, when it starts). Returns 0, or -EINVAL with "NAME:LINE: message" in
 * err (errcap bytes) for an unknown key, a repeated key, a table header, or a bad value; *cfg is
 * then freed. -ENOMEM when out of memory. Release with config_free.
 */
int config_parse(const char *name, const char *text, size_t len, struct config *cfg, char *err,
		 size_t errcap);

/* Reads the file at path and parses it as config_parse does. Returns 0, -EINVAL with the message
 * in err, or a negative errno when the file cannot be read (err says so, with the path). */
int config_load(const char *path, struct config *cfg, char *err, size_t errcap);

/* Frees what cfg owns (not cfg); NULL ok. */
void config_free(struct config *cfg);

/* Parses "123", "64k", "10M", "2G", "1T" (binary units, optional "iB"/"B"). Returns 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Parser for the configuration file: a strict `key = value` subset of TOML. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONFIG_BYTES (1u << 20)

enum vtype { V_STRING, V_INT, V_BOOL, V_ARRAY };

#define MAX_ARRAY 16 /* strings in an array value */

/* A value: V_ARRAY holds num strings, one after the other in str, each NUL-terminated. */
struct value {
	enum vtype type;
	char str[4096];
	long long num;
};

static int fail(char *err, size_t cap, const char *name, int line, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t cap, const char *name, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, cap, "%s:%d: %s", name, line, msg);
	return -EINVAL;
}

int config_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	case 't':
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (shift && (*end == 'i' || *end == 'I'))
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/* Parses the "string" at p into out (cap bytes, NUL-terminated); *end is after its closing
 * quote. Returns the string's length, or -EINVAL with *why set. */
static int parse_string(const char *p, char *out, size_t cap, const char **end, const char **why)
{
	size_t n = 0;

	for (p++; *p != '"'; p++) {
		char ch = *p;

		if (!*p) {
			*why = "unterminated string";
			return -EINVAL;
		}
		if (ch == '\\') {
			p++;
			switch (*p) {
			case '"':
				ch = '"';
				break;
			case '\\':
				ch = '\\';
				break;
			case 't':
				ch = '\t';
				break;
			case 'n':
				ch = '\n';
				break;
			default:
				*why = "unsupported escape in string";
				return -EINVAL;
			}
		} else if ((unsigned char)ch < 0x20) {
			*why = "control character in string";
			return -EINVAL;
		}
		if (n + 1 >= cap) {
			*why = "string too long";
			return -EINVAL;
		}
		out[n++] = ch;
	}
	out[n] = '\0';
	*end = p + 1;
	return (int)n;
}

static const char *skip_blanks(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Parses a one-line array of strings ["a", "b"] at p into v. Returns 0 or -EINVAL. */
static int parse_array(const char *p, struct value *v, const char **end, const char **why)
{
	size_t used = 0;

	v->type = V_ARRAY;
	v->num = 0;
	for (p = skip_blanks(p + 1); *p != ']';) {
		int n;

		if (*p != '"') {
			*why = *p ? "expected a \"string\" in the array" : "unterminated array";
			return -EINVAL;
		}
		if (v->num == MAX_ARRAY) {
			*why = "too many strings in the array";
			return -EINVAL;
		}
		n = parse_string(p, v->str + used, sizeof(v->str) - used, &p, why);
		if (n < 0)
			return n;
		used += (size_t)n + 1;
		v->num++;
		p = skip_blanks(p);
		if (*p == ',')
			p = skip_blanks(p + 1);
		else if (*p != ']') {
			*why = *p ? "expected , or ] in the array" : "unterminated array";
			return -EINVAL;
		}
	}
	*end = p + 1;
	return 0;
}

/* Parses the value starting at p (the rest of the line, comments included) into v. Returns 0 or
 * -EINVAL with *why set. */
static int parse_value(const char *p, struct value *v, const char **why)
{
	if (*p == '"') {
		if (parse_string(p, v->str, sizeof(v->str), &p, why) < 0)
			return -EINVAL;
		v->type = V_STRING;
	} else if (*p == '[') {
		if (parse_array(p, v, &p, why) < 0)
			return -EINVAL;
	} else if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0) {
		v->type = V_BOOL;
		v->num = *p == 't';
		p += v->num ? 4 : 5;
	} else if (isdigit((unsigned char)*p) ||
		   ((*p == '-' || *p == '+') && isdigit((unsigned char)p[1]))) {
		char *end;

		errno = 0;
		v->num = strtoll(p, &end, 10);
		if (errno) {
			*why = "integer out of range";
			return -EINVAL;
		}
		v->type = V_INT;
		p = end;
	} else {
		*why = *p ? "expected a \"string\", an integer, true or false" : "missing value";
		return -EINVAL;
	}
	p = skip_blanks(p);
	if (*p && *p != '#') {
		*why = "unexpected text after the value";
		return -EINVAL;
	}
	return 0;
}

/* Applies trusted_keys = ["path", ...]. Returns 0 or -EINVAL/-ENOMEM. */
static int set_trusted_keys(struct config *cfg, const struct value *v, const char *name, int line,
			    char *err, size_t cap)
{
	const char *k = v->str;

	if (v->type != V_ARRAY || v->num < 1)
		return fail(err, cap, name, line,
			    "trusted_keys: expected [\"path.pem\", ...] (public keys)");
	cfg->trusted_keys = calloc((size_t)v->num, sizeof(char *));
	if (!cfg->trusted_keys)
		return -ENOMEM;
	for (long long i = 0; i < v->num; i++, k += strlen(k) + 1) {
		if (k[0] != '/')
			return fail(err, cap, name, line,
				    "trusted_keys: '%.200s' is not an absolute path", k);
		cfg->trusted_keys[i] = strdup(k);
		if (!cfg->trusted_keys[i])
			return -ENOMEM;
		cfg->ntrusted_keys++;
	}
	return 0;
}

/* Applies images = [...] or pin = [...] (key): references, checked when they are pulled. Returns 0
 * or -EINVAL/-ENOMEM. */
static int set_refs(char ***dst, size_t *n, const char *key, const struct value *v,
		    const char *name, int line, char *err, size_t cap)
{
	const char *k = v->str;

	if (v->type != V_ARRAY || v->num < 1)
		return fail(err, cap, name, line, "%s: expected [\"reference\", ...]", key);
	*dst = calloc((size_t)v->num, sizeof(char *));
	if (!*dst)
		return -ENOMEM;
	for (long long i = 0; i < v->num; i++, k += strlen(k) + 1) {
		if (!k[0])
			return fail(err, cap, name, line, "%s: an empty reference", key);
		(*dst)[i] = strdup(k);
		if (!(*dst)[i])
			return -ENOMEM;
		(*n)++;
	}
	return 0;
}

/* Applies key = v to cfg. Returns 0, or -EINVAL with a message in err. */
static int set_key(struct config *cfg, const char *key, const struct value *v, const char *name,
		   int line, char *err, size_t cap)
{
	if (strcmp(key, "quota") == 0) {
		if (v->type == V_INT && v->num >= 0)
			cfg->quota = (uint64_t)v->num;
		else if (v->type != V_STRING || config_parse_size(v->str, &cfg->quota) < 0)
			return fail(err, cap, name, line, "quota: expected a size such as \"20G\"");
		cfg->has_quota = 1;
	} else if (strcmp(key, "quota_low_water") == 0) {
		if (v->type != V_INT || v->num < 1 || v->num > 100)
			return fail(err, cap, name, line,
				    "quota_low_water: expected a percentage from 1 to 100");
		cfg->low_water = (unsigned)v->num;
		cfg->has_low_water = 1;
	} else if (strcmp(key, "hosts_dir") == 0) {
		if (v->type != V_STRING || !v->str[0])
			return fail(err, cap, name, line, "hosts_dir: expected a \"path\"");
		cfg->hosts_dir = strdup(v->str);
		if (!cfg->hosts_dir)
			return -ENOMEM;
	} else if (strcmp(key, "strict_cache") == 0) {
		if (v->type != V_BOOL)
			return fail(err, cap, name, line, "strict_cache: expected true or false");
		cfg->strict_cache = (int)v->num;
		cfg->has_strict_cache = 1;
	} else if (strcmp(key, "read_timeout") == 0) {
		if (v->type != V_INT || v->num < 1 || v->num > 86400)
			return fail(err, cap, name, line,
				    "read_timeout: expected a number of seconds from 1 to 86400");
		cfg->read_timeout = (long)v->num;
		cfg->has_read_timeout = 1;
	} else if (strcmp(key, "low_speed_timeout") == 0) {
		if (v->type != V_INT || v->num < 1 || v->num > 3600)
			return fail(
				err, cap, name, line,
				"low_speed_timeout: expected a number of seconds from 1 to 3600");
		cfg->low_speed_timeout = (long)v->num;
		cfg->has_low_speed_timeout = 1;
	} else if (strcmp(key, "download_deadline_base") == 0) {
		if (v->type != V_INT || v->num < 1 || v->num > 86400)
			return fail(err, cap, name, line,
				    "download_deadline_base: expected a number of seconds from 1 to "
				    "86400");
		cfg->download_deadline_base = (long)v->num;
		cfg->has_download_deadline_base = 1;
	} else if (strcmp(key, "download_min_rate") == 0) {
		if (v->type == V_INT && v->num > 0)
			cfg->download_min_rate = (uint64_t)v->num;
		else if (v->type != V_STRING ||
			 config_parse_size(v->str, &cfg->download_min_rate) < 0 ||
			 cfg->download_min_rate == 0)
			return fail(err, cap, name, line,
				    "download_min_rate: expected bytes a second greater than 0 such "
				    "as \"64K\"");
		cfg->has_download_min_rate = 1;
	} else if (strcmp(key, "allow_other") == 0) {
		if (v->type != V_BOOL)
			return fail(err, cap, name, line, "allow_other: expected true or false");
		cfg->allow_other = (int)v->num;
		cfg->has_allow_other = 1;
	} else if (strcmp(key, "index_cache") == 0 || strcmp(key, "chunk_cache") == 0 ||
		   strcmp(key, "block_cache") == 0) {
		uint64_t *dst = key[0] == 'i' ? &cfg->index_cache :
				key[0] == 'c' ? &cfg->chunk_cache :
						&cfg->block_cache;
		int *has = key[0] == 'i' ? &cfg->has_index_cache :
			   key[0] == 'c' ? &cfg->has_chunk_cache :
					   &cfg->has_block_cache;

		if (v->type == V_INT && v->num > 0)
			*dst = (uint64_t)v->num;
		else if (v->type != V_STRING || config_parse_size(v->str, dst) < 0 || *dst == 0)
			return fail(err, cap, name, line,
				    "%s: expected a size greater than 0 such as \"32M\"", key);
		*has = 1;
	} else if (strcmp(key, "artifact_trust") == 0) {
		if (v->type != V_STRING ||
		    (strcmp(v->str, "repository") != 0 && strcmp(v->str, "signed") != 0 &&
		     strcmp(v->str, "none") != 0))
			return fail(
				err, cap, name, line,
				"artifact_trust: expected \"repository\", \"signed\" or \"none\"");
		snprintf(cfg->artifact_trust, sizeof(cfg->artifact_trust), "%s", v->str);
	} else if (strcmp(key, "trusted_keys") == 0) {
		return set_trusted_keys(cfg, v, name, line, err, cap);
	} else if (strcmp(key, "snapshotter_socket") == 0) {
		if (v->type != V_STRING || v->str[0] != '/')
			return fail(err, cap, name, line,
				    "snapshotter_socket: expected an absolute \"path\"");
		cfg->snapshotter_socket = strdup(v->str);
		if (!cfg->snapshotter_socket)
			return -ENOMEM;
	} else if (strcmp(key, "images") == 0) {
		return set_refs(&cfg->images, &cfg->nimages, key, v, name, line, err, cap);
	} else if (strcmp(key, "pin") == 0) {
		return set_refs(&cfg->pins, &cfg->npins, key, v, name, line, err, cap);
	} else {
		return fail(err, cap, name, line,
			    "unknown key '%s' (known: quota, quota_low_water, hosts_dir, "
			    "strict_cache, read_timeout, index_cache, chunk_cache, block_cache, "
			    "allow_other, low_speed_timeout, download_deadline_base, "
			    "download_min_rate, artifact_trust, trusted_keys, snapshotter_socket, "
			    "images, pin)",
			    key);
	}
	return 0;
}

int config_parse(const char *name, const char *text, size_t len, struct config *cfg, char *err,
		 size_t errcap)
{
	static const char *const keys[] = { "quota",
					    "quota_low_water",
					    "hosts_dir",
					    "strict_cache",
					    "read_timeout",
					    "index_cache",
					    "chunk_cache",
					    "block_cache",
					    "allow_other",
					    "low_speed_timeout",
					    "artifact_trust",
					    "trusted_keys",
					    "snapshotter_socket",
					    "images",
					    "pin",
					    "download_deadline_base",
					    "download_min_rate" };
	int seen[sizeof(keys) / sizeof(keys[0])] = { 0 };
	struct value *v = malloc(sizeof(*v));
	char *copy = malloc(len + 1), *line, *next;
	int lineno = 0, rc = 0;

	memset(cfg, 0, sizeof(*cfg));
	cfg->low_water = CONFIG_LOW_WATER_DEFAULT;
	if (!v || !copy) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	if (strlen(copy) != len) {
		rc = fail(err, errcap, name, 1, "the file contains a NUL byte");
		goto out;
	}
	for (line = copy; line && rc == 0; line = next) {
		char key[64];
		const char *why = NULL;
		size_t k = 0;
		char *p;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (*line && line[strlen(line) - 1] == '\r')
			line[strlen(line) - 1] = '\0';
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (!*p || *p == '#')
			continue;
		if (*p == '[') {
			rc = fail(err, errcap, name, lineno,
				  "tables are not supported; use top-level keys");
			break;
		}
		while (isalnum((unsigned char)*p) || *p == '_' || *p == '-') {
			if (k + 1 >= sizeof(key)) {
				rc = fail(err, errcap, name, lineno, "key too long");
				break;
			}
			key[k++] = *p++;
		}
		if (rc)
			break;
		key[k] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (!k || *p != '=') {
			rc = fail(err, errcap, name, lineno, "expected key = value");
			break;
		}
		for (p++; *p == ' ' || *p == '\t'; p++)
			;
		if (parse_value(p, v, &why) < 0) {
			rc = fail(err, errcap, name, lineno, "%s: %s", key, why);
			break;
		}
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			if (strcmp(keys[i], key) == 0 && seen[i]++) {
				rc = fail(err, errcap, name, lineno, "%s is set twice", key);
				break;
			}
		}
		if (rc == 0)
			rc = set_key(cfg, key, v, name, lineno, err, errcap);
	}
out:
	if (rc == -ENOMEM)
		snprintf(err, errcap, "%s: out of memory", name);
	if (rc < 0)
		config_free(cfg);
	free(v);
	free(copy);
	return rc;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errcap)
{
	FILE *fp = fopen(path, "re");
	char *buf;
	size_t n;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	cfg->low_water = CONFIG_LOW_WATER_DEFAULT;
	if (!fp) {
		rc = -errno;
		snprintf(err, errcap, "config file %s: %s", path, strerror(-rc));
		return rc;
	}
	buf = malloc(MAX_CONFIG_BYTES + 1);
	if (!buf) {
		fclose(fp);
		snprintf(err, errcap, "%s: out of memory", path);
		return -ENOMEM;
	}
	n = fread(buf, 1, MAX_CONFIG_BYTES + 1, fp);
	if (ferror(fp)) {
		rc = -EIO;
		snprintf(err, errcap, "config file %s: read error", path);
	} else if (n > MAX_CONFIG_BYTES) {
		rc = -EINVAL;
		snprintf(err, errcap, "config file %s: larger than %u bytes", path,
			 MAX_CONFIG_BYTES);
	} else {
		rc = config_parse(path, buf, n, cfg, err, errcap);
	}
	fclose(fp);
	free(buf);
	return rc;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	free(cfg->hosts_dir);
	cfg->hosts_dir = NULL;
	free(cfg->snapshotter_socket);
	cfg->snapshotter_socket = NULL;
	for (size_t i = 0; i < cfg->ntrusted_keys; i++)
		free(cfg->trusted_keys[i]);
	free(cfg->trusted_keys);
	cfg->trusted_keys = NULL;
	cfg->ntrusted_keys = 0;
	for (size_t i = 0; i < cfg->nimages; i++)
		free(cfg->images[i]);
	free(cfg->images);
	cfg->images = NULL;
	cfg->nimages = 0;
	for (size_t i = 0; i < cfg->npins; i++)
		free(cfg->pins[i]);
	free(cfg->pins);
	cfg->pins = NULL;
	cfg->npins = 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Registry credentials from a docker config.json: credHelpers, credsStore, then auths, as the
 * docker CLI looks them up. */
#include "auth.h"

#include <errno.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "auth_i.h"
#include "util/log.h"
#include "util/mem.h"

#define DOCKER_HUB_SERVER "https://index.docker.io/v1/"

void fetch_creds_clear(struct fetch_creds *c)
{
	if (!c)
		return;
	fetch_auth_free_secret(c->username);
	fetch_auth_free_secret(c->secret);
	memset(c, 0, sizeof(*c));
}

/* Does config key (e.g. "https://index.docker.io/v1/", "127.0.0.1:5000", "http://h/v2/") name host?
 * Compares the key's host part, case-insensitively, as the docker CLI's ConvertToHostname does. */
static int key_is_host(const char *key, const char *host)
{
	size_t n;

	if (strncasecmp(key, "https://", 8) == 0)
		key += 8;
	else if (strncasecmp(key, "http://", 7) == 0)
		key += 7;
	n = strcspn(key, "/");
	return n == strlen(host) && strncasecmp(key, host, n) == 0;
}

/* The hosts whose config keys stand for host, best first (NULL-terminated). */
static void host_candidates(const char *host, const char *cand[4])
{
	if (strcasecmp(host, "docker.io") == 0 || strcasecmp(host, "index.docker.io") == 0 ||
	    strcasecmp(host, "registry-1.docker.io") == 0) {
		cand[0] = "index.docker.io";
		cand[1] = "docker.io";
		cand[2] = "registry-1.docker.io";
		cand[3] = NULL;
	} else {
		cand[0] = host;
		cand[1] = NULL;
	}
}

/* The member of object obj whose key names host (an exact "https://index.docker.io/v1/" first for
 * Docker Hub), or NULL. Borrowed from obj. */
static json_t *find_host_entry(json_t *obj, const char *host)
{
	const char *cand[4];
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return NULL;
	host_candidates(host, cand);
	if (strcmp(cand[0], "index.docker.io") == 0) {
		v = json_object_get(obj, DOCKER_HUB_SERVER);
		if (v)
			return v;
	}
	for (size_t i = 0; cand[i]; i++) {
		json_object_foreach (obj, key, v) {
			if (key_is_host(key, cand[i]))
				return v;
		}
	}
	return NULL;
}

static int is_docker_hub(const char *host)
{
	const char *cand[4];

	host_candidates(host, cand);
	return strcmp(cand[0], "index.docker.io") == 0;
}

/* Fills out from one `auths` entry. Returns 0, -ENOENT for an entry without credentials, -EINVAL,
 * -ENOMEM; out is cleared on failure. */
static int creds_from_entry(json_t *e, const char *host, struct fetch_creds *out)
{
	const char *auth = json_string_value(json_object_get(e, "auth"));
	const char *idt = json_string_value(json_object_get(e, "identitytoken"));
	const char *user = json_string_value(json_object_get(e, "username"));
	const char *pass = json_string_value(json_object_get(e, "password"));
	uint8_t *dec = NULL;
	size_t dlen = 0;
	char *colon;
	int rc = 0;

	if (!json_is_object(e))
		return strata_err(EINVAL, "docker config: the auths entry for %s is not an object",
				  host);
	if (auth && auth[0]) {
		rc = util_base64_decode(auth, strlen(auth), &dec, &dlen);
		if (rc == -EINVAL)
			rc = strata_err(EINVAL,
					"docker config: \"auth\" for %s is not valid base64", host);
		if (rc < 0)
			goto out;
		dec[dlen] = '\0';
		colon = memchr(dec, ':', dlen);
		if (!colon || strlen((char *)dec) != dlen) {
			rc = strata_err(
				EINVAL,
				"docker config: \"auth\" for %s is not base64(user:password)",
				host);
			goto out;
		}
		*colon = '\0';
		user = (char *)dec;
		pass = colon + 1;
	}
	if (user && user[0]) {
		out->username = strdup(user);
		if (!out->username) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if (idt && idt[0]) {
		out->identity_token = 1;
		out->secret = strdup(idt);
	} else if (out->username && pass && pass[0]) {
		out->secret = strdup(pass);
	} else {
		rc = strata_err(ENOENT, "docker config: no credentials in the auths entry for %s",
				host);
		goto out;
	}
	if (!out->secret)
		rc = -ENOMEM;
out:
	if (dec) {
		explicit_bzero(dec, dlen);
		free(dec);
	}
	if (rc < 0)
		fetch_creds_clear(out);
	return rc;
}

/* The default config path (malloc'd), or NULL when there is no home directory / memory. */
static char *default_config_path(void)
{
	const char *dir = getenv("DOCKER_CONFIG");
	const char *home;
	char *path = NULL;

	if (dir && dir[0]) {
		if (asprintf(&path, "%s/config.json", dir) < 0)
			return NULL;
		return path;
	}
	home = getenv("HOME");
	if (!home || !home[0]) {
		struct passwd pw, *res = NULL;
		char pwbuf[4096];

		if (getpwuid_r(getuid(), &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res)
			return NULL;
		if (asprintf(&path, "%s/.docker/config.json", res->pw_dir) < 0)
			return NULL;
		return path;
	}
	if (asprintf(&path, "%s/.docker/config.json", home) < 0)
		return NULL;
	return path;
}

int fetch_creds_lookup(const char *config_path, const char *host, struct fetch_creds *out)
{
	return fetch_creds_lookup_within(config_path, host, 0, out);
}

int fetch_creds_lookup_within(const char *config_path, const char *host, long limit_ms,
			      struct fetch_creds *out)
{
	char *path = NULL;
	const char *server;
	const char *helper = NULL;
	int from_store = 0;
	json_t *root = NULL, *entry;
	json_error_t jerr;
	FILE *f = NULL;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!host || !host[0] || strchr(host, '/'))
		return strata_err(EINVAL, "invalid registry host for a credential lookup");
	server = is_docker_hub(host) ? DOCKER_HUB_SERVER : host;
	path = config_path ? strdup(config_path) : default_config_path();
	if (!path)
		return strata_err(ENOENT, "no docker config file (no home directory)");
	f = fopen(path, "re");
	if (!f) {
		rc = errno == ENOENT ?
			     strata_err(ENOENT, "no credentials for %s (%s does not exist)", host,
					path) :
			     strata_err(errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	/* jerr.text may quote the input near the error: only the position is reported */
	root = json_loadf(f, 0, &jerr);
	if (!root || !json_is_object(root)) {
		rc = strata_err(EINVAL, "%s:%d:%d: not a valid docker config file", path,
				root ? 1 : jerr.line, root ? 1 : jerr.column);
		goto out;
	}
	entry = find_host_entry(json_object_get(root, "credHelpers"), host);
	if (entry) {
		helper = json_string_value(entry);
		if (!helper) {
			rc = strata_err(EINVAL, "%s: credHelpers entry for %s is not a string",
					path, host);
			goto out;
		}
	} else {
		entry = json_object_get(root, "credsStore");
		if (entry && !json_is_string(entry)) {
			rc = strata_err(EINVAL, "%s: credsStore is not a string", path);
			goto out;
		}
		helper = json_string_value(entry);
		if (helper && !helper[0])
			helper = NULL;
		from_store = 1;
	}
	if (helper) {
		rc = fetch_auth_run_helper(helper, server, limit_ms, out);
		/* a credsStore that has nothing falls back to the file, as docker's native store does */
		if (rc != -ENOENT || !from_store)
			goto out;
	}
	entry = find_host_entry(json_object_get(root, "auths"), host);
	if (!entry) {
		rc = strata_err(ENOENT, "no credentials for %s in %s", host, path);
		goto out;
	}
	rc = creds_from_entry(entry, host, out);
	if (rc == -ENOENT)
		strata_err(ENOENT, "no credentials for %s in %s", host, path);
out:
	if (root) {
		/* do not leave the decoded file's secrets in freed memory longer than needed */
		json_decref(root);
	}
	if (f)
		fclose(f);
	free(path);
	if (rc < 0)
		fetch_creds_clear(out);
	return rc;
}

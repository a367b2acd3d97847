/* SPDX-License-Identifier: Apache-2.0 */
/* Finds a registry's host configuration in a containerd certs.d directory: the host directory, its
 * hosts.toml, or Docker-style certificate files; and the path helpers both sides use. */
#include "hosts.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hosts_i.h"
#include "toml_i.h"
#include "util/log.h"

#define HOSTS_FILE  "hosts.toml"
#define DEFAULT_DIR "_default"

/* ---- paths ---- */

/* Go's path.Clean, in place; s must not be empty. */
void fetch_path_clean(char *s)
{
	size_t n = strlen(s), r = 0, w = 0, dotdot = 0;
	int rooted = s[0] == '/';

	assert(n > 0);
	if (rooted) {
		w = r = dotdot = 1;
	}
	while (r < n) {
		if (s[r] == '/') {
			r++;
		} else if (s[r] == '.' && (r + 1 == n || s[r + 1] == '/')) {
			r++;
		} else if (s[r] == '.' && s[r + 1] == '.' && (r + 2 == n || s[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				w--;
				while (w > dotdot && s[w] != '/')
					w--;
			} else if (!rooted) {
				if (w > 0)
					s[w++] = '/';
				s[w++] = '.';
				s[w++] = '.';
				dotdot = w;
			}
		} else {
			if ((rooted && w != 1) || (!rooted && w != 0))
				s[w++] = '/';
			while (r < n && s[r] != '/')
				s[w++] = s[r++];
		}
	}
	if (w == 0)
		s[w++] = '.';
	s[w] = '\0';
}

/* base/p cleaned (Go's filepath.Join). Returns a malloc'd string or NULL. */
char *fetch_path_join(const char *base, const char *p)
{
	char *s;

	if (asprintf(&s, "%s/%s", base, p) < 0)
		return NULL;
	fetch_path_clean(s);
	return s;
}

/* ---- loading from a certs.d directory ---- */

/* containerd's hostDirectory: "host:port" -> "host_port_" (unchanged without ':'). Malloc'd. */
static char *host_directory(const char *registry)
{
	const char *colon = strrchr(registry, ':');
	char *s;

	if (!colon || colon == registry)
		return strdup(registry);
	if (asprintf(&s, "%.*s_%s_", (int)(colon - registry), registry, colon + 1) < 0)
		return NULL;
	return s;
}

/* Reads file (at most TOML_MAX_TEXT bytes) into a malloc'd *text. -ENOENT quietly when missing. */
static int read_file(const char *file, char **text, size_t *len)
{
	char *buf = NULL;
	size_t n = 0, cap = 0;
	struct stat st;
	int fd, rc = 0;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT :
					 strata_err(errno, "%s: %s", file, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = strata_err(errno, "%s: %s", file, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = strata_err(EISDIR, "%s: is a directory", file);
		goto out;
	}
	for (;;) {
		ssize_t got;

		if (n == cap) {
			char *nb;

			if (cap > TOML_MAX_TEXT) {
				rc = strata_err(EINVAL, "%s: file is larger than %d bytes", file,
						TOML_MAX_TEXT);
				goto out;
			}
			cap = cap ? cap * 2 : 4096;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				rc = -ENOMEM;
				goto out;
			}
			buf = nb;
		}
		got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = strata_err(errno, "%s: %s", file, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > TOML_MAX_TEXT) {
		rc = strata_err(EINVAL, "%s: file is larger than %d bytes", file, TOML_MAX_TEXT);
		goto out;
	}
out:
	close(fd);
	if (rc == 0) {
		*text = buf;
		*len = n;
	} else {
		free(buf);
	}
	return rc;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* containerd's loadCertFiles: "*.crt" are CAs, "*.cert" client certs with "<name>.key" when present;
 * in name order; directories are skipped. Adds them to host. */
static int load_cert_files(const char *dir, struct fetch_host *host)
{
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : strata_err(errno, "%s: %s", dir, strerror(errno));
	while (rc == 0) {
		struct stat st;
		char **nn;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				rc = strata_err(errno, "%s: %s", dir, strerror(errno));
			break;
		}
		if (!has_suffix(de->d_name, ".crt") && !has_suffix(de->d_name, ".cert"))
			continue;
		if (de->d_type == DT_DIR)
			continue;
		if (de->d_type == DT_UNKNOWN &&
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISDIR(st.st_mode))
			continue;
		nn = realloc(names, (n + 1) * sizeof(*nn));
		if (!nn) {
			rc = -ENOMEM;
			break;
		}
		names = nn;
		names[n] = strdup(de->d_name);
		if (!names[n])
			rc = -ENOMEM;
		else
			n++;
	}
	closedir(d);
	if (rc)
		goto out;
	if (n > 1)
		qsort(names, n, sizeof(*names), str_cmp);
	for (size_t i = 0; i < n && rc == 0; i++) {
		char *file = fetch_path_join(dir, names[i]), *key = NULL;
		struct stat st;

		if (has_suffix(names[i], ".crt")) {
			rc = fetch_host_add_ca(host, file);
			continue;
		}
		if (file && asprintf(&key, "%.*s.key", (int)(strlen(file) - 5), file) < 0)
			key = NULL;
		if (!file || !key) {
			free(file);
			free(key);
			rc = -ENOMEM;
		} else if (stat(key, &st) == 0) {
			rc = fetch_host_add_client(host, file, key, 1);
		} else if (errno == ENOENT) {
			free(key);
			rc = fetch_host_add_client(host, file, NULL, 0);
		} else {
			rc = strata_err(errno, "%s: %s", key, strerror(errno));
			free(file);
			free(key);
		}
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* The default server alone, with the Docker-style certificates of dir when dir is not NULL. */
static int load_default(const char *registry, const char *dir, struct fetch_hosts **out)
{
	struct fetch_hosts *h = calloc(1, sizeof(*h));
	struct fetch_host *host;
	int rc;

	if (!h)
		return -ENOMEM;
	host = fetch_hosts_add(h);
	rc = host ? 0 : -ENOMEM;
	if (rc == 0 && dir) {
		h->source = strdup(dir);
		rc = h->source ? load_cert_files(dir, host) : -ENOMEM;
	}
	if (rc == 0)
		rc = fetch_hosts_default_server(registry, host);
	if (rc == 0)
		*out = h;
	else
		fetch_hosts_free(h);
	return rc;
}

/* hosts_dir made absolute (relative to the current directory) and cleaned. Malloc'd or NULL. */
static char *absolute_dir(const char *hosts_dir)
{
	char *cwd, *s;

	if (hosts_dir[0] == '/') {
		s = strdup(hosts_dir);
		if (s)
			fetch_path_clean(s);
		return s;
	}
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return NULL;
	s = fetch_path_join(cwd, hosts_dir);
	free(cwd);
	return s;
}

int fetch_hosts_load(const char *hosts_dir, const char *registry, struct fetch_hosts **out)
{
	char *root = NULL, *cand[3] = { NULL, NULL, NULL }, *dir = NULL, *file = NULL, *text = NULL;
	size_t len = 0;
	int rc;

	rc = fetch_hosts_check_registry(registry);
	if (rc)
		return rc;
	if (!hosts_dir || !hosts_dir[0])
		return load_default(registry, NULL, out);
	root = absolute_dir(hosts_dir);
	if (!root) {
		rc = errno == ENOMEM || errno == 0 ?
			     -ENOMEM :
			     strata_err(errno, "%s: %s", hosts_dir, strerror(errno));
		goto out;
	}
	/* containerd's hostPaths (unix): host_port_ (when different), host, _default */
	{
		char *hd = host_directory(registry);
		size_t k = 0;

		if (!hd) {
			rc = -ENOMEM;
			goto out;
		}
		if (strcmp(hd, registry) != 0)
			cand[k++] = fetch_path_join(root, hd);
		cand[k++] = fetch_path_join(root, registry);
		cand[k++] = fetch_path_join(root, DEFAULT_DIR);
		free(hd);
		for (size_t i = 0; i < k; i++)
			if (!cand[i])
				rc = -ENOMEM;
		for (size_t i = 0; i < k && rc == 0 && !dir; i++) {
			struct stat st;

			if (stat(cand[i], &st) == 0)
				dir = cand[i];
			else if (errno != ENOENT)
				rc = strata_err(errno, "%s: %s", cand[i], strerror(errno));
		}
		if (rc)
			goto out;
	}
	if (!dir) {
		rc = load_default(registry, NULL, out);
		goto out;
	}
	file = fetch_path_join(dir, HOSTS_FILE);
	if (!file) {
		rc = -ENOMEM;
		goto out;
	}
	rc = read_file(file, &text, &len);
	if (rc == -ENOENT || (rc == 0 && len == 0)) {
		/* no hosts.toml: Docker's certificate file layout in the same directory */
		rc = load_default(registry, dir, out);
		goto out;
	}
	if (rc)
		goto out;
	rc = fetch_hosts_parse(text, len, file, registry, out);
out:
	if (rc == -ENOMEM)
		strata_err(ENOMEM, "loading hosts for %s: out of memory", registry);
	free(text);
	free(file);
	for (size_t i = 0; i < 3; i++)
		free(cand[i]);
	free(root);
	return rc;
}

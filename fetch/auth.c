/* SPDX-License-Identifier: Apache-2.0 */
/* Registry authentication: challenge parsing, docker config and credential helpers, bearer tokens. */
#include "auth.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "util/log.h"
#include "util/mem.h"

extern char **environ;

#define DOCKER_HUB_SERVER   "https://index.docker.io/v1/"
#define HELPER_PREFIX	    "docker-credential-"
#define HELPER_OUT_MAX	    (64 * 1024)
#define HELPER_TIMEOUT_MS   10000L
#define TOKEN_BODY_MAX	    (1024 * 1024)
#define TOKEN_DEFAULT_S	    60
#define TOKEN_EARLY_S	    10
#define TOKEN_CONNECT_MS    10000L
#define TOKEN_TIMEOUT_MS    30000L
#define TOKEN_MAX_REDIRS    3L
#define NOT_FOUND_MSG	    "credentials not found in native keychain"

/* ---- small helpers ---- */

static void free_secret(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- WWW-Authenticate (RFC 7235) ---- */

static int is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_token68_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~+/", c));
}

static size_t token_len(const char *p)
{
	size_t n = 0;

	while (is_tchar((unsigned char)p[n]))
		n++;
	return n;
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* At p: a token68 that ends the challenge (followed by OWS then ',' or the end)? Returns its end. */
static const char *token68_end(const char *p)
{
	const char *q = p;

	while (is_token68_char((unsigned char)*q))
		q++;
	if (q == p)
		return NULL;
	while (*q == '=')
		q++;
	q = skip_ows(q);
	return *q == ',' || *q == '\0' ? q : NULL;
}

/* At p (after OWS): "name BWS =" that starts an auth-param? */
static int param_starts(const char *p)
{
	size_t n = token_len(p);

	return n > 0 && *skip_ows(p + n) == '=';
}

/* Parses a quoted-string at *pp (at the opening quote) into a malloc'd *out. Returns 0, -EINVAL,
 * -ENOMEM. */
static int parse_quoted(const char **pp, char **out)
{
	const char *p = *pp + 1;
	char *buf = malloc(strlen(p) + 1);
	size_t o = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			break;
		if (c == '\\') {
			p++;
			c = (unsigned char)*p;
			if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f)
				goto bad;
		} else if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f) {
			goto bad;
		}
		buf[o++] = (char)c;
		p++;
	}
	buf[o] = '\0';
	*pp = p + 1;
	*out = buf;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}

/* Stores value into *slot (a challenge field being filled) unless already set. Takes value. */
static int set_param(char **slot, char *value, const char *name)
{
	if (*slot) {
		free(value);
		return strata_err(EINVAL, "WWW-Authenticate: duplicate parameter \"%s\"", name);
	}
	*slot = value;
	return 0;
}

int fetch_challenge_parse(const char *value, struct fetch_challenge *out)
{
	struct fetch_challenge cur = { 0 };
	const char *p = value;
	int found = 0, rc = 0;

	memset(out, 0, sizeof(*out));
	for (;;) {
		size_t n;
		int want;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		n = token_len(p);
		if (n == 0) {
			rc = strata_err(EINVAL, "WWW-Authenticate: expected an auth scheme at offset %zu",
					(size_t)(p - value));
			goto out;
		}
		want = !found && ((n == 6 && strncasecmp(p, "bearer", 6) == 0) ||
				  (n == 5 && strncasecmp(p, "basic", 5) == 0));
		if (want) {
			cur.scheme = strndup(p, n);
			if (!cur.scheme) {
				rc = -ENOMEM;
				goto out;
			}
			for (char *s = cur.scheme; *s; s++)
				if (*s >= 'A' && *s <= 'Z')
					*s = (char)(*s - 'A' + 'a');
		}
		p += n;
		if (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t') {
			rc = strata_err(EINVAL, "WWW-Authenticate: invalid character after the auth scheme");
			goto out;
		}
		p = skip_ows(p);
		if (!param_starts(p) && token68_end(p)) {
			p = token68_end(p);
		} else if (!param_starts(p) && *p != ',' && *p != '\0') {
			rc = strata_err(EINVAL, "WWW-Authenticate: expected auth-params or ',' at offset %zu",
					(size_t)(p - value));
			goto out;
		} else {
			/* auth-params, until what follows a comma is not a parameter */
			while (param_starts(p)) {
				const char *name = p;
				char *val = NULL;
				size_t nlen = token_len(p);

				p = skip_ows(p + nlen) + 1;
				p = skip_ows(p);
				if (*p == '"') {
					rc = parse_quoted(&p, &val);
				} else if (token_len(p) > 0) {
					val = strndup(p, token_len(p));
					rc = val ? 0 : -ENOMEM;
					p += token_len(p);
				} else {
					rc = -EINVAL;
				}
				if (rc == -EINVAL)
					rc = strata_err(EINVAL, "WWW-Authenticate: invalid value for parameter "
								"\"%.*s\"", (int)(nlen < 40 ? nlen : 40), name);
				if (rc < 0)
					goto out;
				if (want && nlen == 5 && strncasecmp(name, "realm", 5) == 0)
					rc = set_param(&cur.realm, val, "realm");
				else if (want && nlen == 7 && strncasecmp(name, "service", 7) == 0)
					rc = set_param(&cur.service, val, "service");
				else if (want && nlen == 5 && strncasecmp(name, "scope", 5) == 0)
					rc = set_param(&cur.scope, val, "scope");
				else
					free(val);
				if (rc < 0)
					goto out;
				p = skip_ows(p);
				if (*p == '\0')
					break;
				if (*p != ',') {
					rc = strata_err(EINVAL, "WWW-Authenticate: expected ',' at offset %zu",
							(size_t)(p - value));
					goto out;
				}
				while (*p == ' ' || *p == '\t' || *p == ',')
					p++;
			}
		}
		if (want)
			found = 1;
	}
	if (!found) {
		rc = strata_err(EINVAL, "WWW-Authenticate: no Bearer or Basic challenge");
		goto out;
	}
	if (strcmp(cur.scheme, "bearer") == 0 &&
	    (!cur.realm || (strncasecmp(cur.realm, "https://", 8) != 0 &&
			    strncasecmp(cur.realm, "http://", 7) != 0))) {
		rc = strata_err(EINVAL, "WWW-Authenticate: Bearer challenge without an http(s) realm");
		goto out;
	}
	*out = cur;
	memset(&cur, 0, sizeof(cur));
out:
	fetch_challenge_clear(&cur);
	return rc;
}

void fetch_challenge_clear(struct fetch_challenge *c)
{
	if (!c)
		return;
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	memset(c, 0, sizeof(*c));
}

/* ---- docker config.json and credential helpers ---- */

static atomic_long helper_timeout_ms = HELPER_TIMEOUT_MS;

void fetch_auth_set_helper_timeout_ms(long ms)
{
	atomic_store(&helper_timeout_ms, ms > 0 ? ms : HELPER_TIMEOUT_MS);
}

long fetch_auth_helper_timeout_ms(void)
{
	return atomic_load(&helper_timeout_ms);
}

void fetch_creds_clear(struct fetch_creds *c)
{
	if (!c)
		return;
	free_secret(c->username);
	free_secret(c->secret);
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

/* Reads fd into buf (at most cap bytes) until EOF or the deadline. Returns the byte count, -E2BIG
 * past cap, -ETIMEDOUT, or another negative errno. */
static ssize_t read_until(int fd, char *buf, size_t cap, int64_t deadline)
{
	size_t len = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();
		ssize_t n;
		int pr;

		if (left <= 0)
			return -ETIMEDOUT;
		pr = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0)
			return -ETIMEDOUT;
		if (len == cap) {
			char extra;

			n = read(fd, &extra, 1);
			if (n == 0)
				return (ssize_t)len;
			if (n < 0 && errno == EINTR)
				continue;
			return n < 0 ? -errno : -E2BIG;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return (ssize_t)len;
		len += (size_t)n;
	}
}

/* Waits for pid until the deadline, then kills its process group and reaps it. Returns the wait
 * status, or -ETIMEDOUT when it had to be killed. */
static int reap(pid_t pid, int64_t deadline, int kill_now)
{
	int status = 0;

	while (!kill_now) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			return status;
		if (w < 0 && errno != EINTR)
			return -ECHILD;
		if (now_ms() >= deadline)
			break;
		usleep(5000);
	}
	kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return -ETIMEDOUT;
}

/*
 * Runs "docker-credential-<helper> get" with server on stdin. Returns 0 with the answer's fields in
 * *out; -ENOENT when the helper says it has no credentials; -ETIMEDOUT, -EIO, -EINVAL, -ENOMEM with
 * strata_err (never quoting the helper's output).
 */
static int run_helper(const char *helper, const char *server, long limit_ms,
		      struct fetch_creds *out)
{
	char prog[256];
	char *argv[3];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int in_sv[2] = { -1, -1 }, out_p[2] = { -1, -1 };
	int fa_ok = 0, attr_ok = 0, rc = 0, status;
	pid_t pid = -1;
	long timeout_ms = atomic_load(&helper_timeout_ms);
	int64_t deadline;
	char *buf = NULL;
	ssize_t len = 0;
	json_t *root = NULL;
	const char *user, *secret;
	size_t off = 0, slen = strlen(server);

	if (limit_ms > 0 && limit_ms < timeout_ms)
		timeout_ms = limit_ms;
	deadline = now_ms() + timeout_ms;
	if (helper[0] == '\0' || strchr(helper, '/') ||
	    (size_t)snprintf(prog, sizeof(prog), HELPER_PREFIX "%s", helper) >= sizeof(prog))
		return strata_err(EINVAL, "invalid credential helper name in the docker config");
	argv[0] = prog;
	argv[1] = "get";
	argv[2] = NULL;
	buf = malloc(HELPER_OUT_MAX + 1);
	if (!buf)
		return -ENOMEM;
	/* a socket for stdin: send() with MSG_NOSIGNAL cannot raise SIGPIPE if the helper exits early */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_sv) != 0 || pipe2(out_p, O_CLOEXEC) != 0) {
		rc = strata_err(errno, "%s: cannot create pipes: %s", prog, strerror(errno));
		goto out;
	}
	if (posix_spawn_file_actions_init(&fa) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	fa_ok = 1;
	if (posix_spawnattr_init(&attr) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	attr_ok = 1;
	if (posix_spawn_file_actions_adddup2(&fa, in_sv[1], 0) != 0 ||
	    posix_spawn_file_actions_adddup2(&fa, out_p[1], 1) != 0 ||
	    posix_spawnattr_setpgroup(&attr, 0) != 0 ||
	    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	rc = posix_spawnp(&pid, prog, &fa, &attr, argv, environ);
	if (rc != 0) {
		pid = -1;
		rc = strata_err(EIO, "cannot run credential helper %s: %s", prog, strerror(rc));
		goto out;
	}
	close(in_sv[1]);
	in_sv[1] = -1;
	close(out_p[1]);
	out_p[1] = -1;
	while (off < slen) {
		ssize_t n = send(in_sv[0], server + off, slen - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break; /* the helper may not read stdin; its answer decides */
		off += (size_t)n;
	}
	shutdown(in_sv[0], SHUT_WR);
	len = read_until(out_p[0], buf, HELPER_OUT_MAX, deadline);
	status = reap(pid, deadline, len == -ETIMEDOUT);
	pid = -1;
	if (len == -ETIMEDOUT || status == -ETIMEDOUT) {
		rc = strata_err(ETIMEDOUT, "credential helper %s did not finish within %ld ms", prog,
				timeout_ms);
		goto out;
	}
	if (len < 0) {
		rc = strata_err(EIO, "credential helper %s: cannot read its output: %s", prog,
				strerror((int)-len));
		goto out;
	}
	buf[len] = '\0';
	if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* the protocol's "not found" answer is the one output worth recognizing */
		if (status >= 0 && WIFEXITED(status) && strstr(buf, NOT_FOUND_MSG)) {
			rc = strata_err(ENOENT, "credential helper %s has no credentials for %s", prog,
					server);
			goto out;
		}
		if (status >= 0 && WIFSIGNALED(status))
			rc = strata_err(EIO, "credential helper %s killed by signal %d", prog,
					WTERMSIG(status));
		else
			rc = strata_err(EIO, "credential helper %s failed (exit status %d)", prog,
					status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		goto out;
	}
	root = json_loadb(buf, (size_t)len, 0, NULL);
	user = json_string_value(json_object_get(root, "Username"));
	secret = json_string_value(json_object_get(root, "Secret"));
	if (!root || !user || !secret || secret[0] == '\0') {
		rc = strata_err(EINVAL, "credential helper %s: answer is not JSON with Username and Secret",
				prog);
		goto out;
	}
	if (strcmp(user, "<token>") == 0) {
		out->identity_token = 1;
	} else {
		out->username = strdup(user);
		if (!out->username) {
			rc = -ENOMEM;
			goto out;
		}
	}
	out->secret = strdup(secret);
	if (!out->secret)
		rc = -ENOMEM;
out:
	if (pid > 0)
		reap(pid, 0, 1);
	if (attr_ok)
		posix_spawnattr_destroy(&attr);
	if (fa_ok)
		posix_spawn_file_actions_destroy(&fa);
	for (int i = 0; i < 2; i++) {
		if (in_sv[i] >= 0)
			close(in_sv[i]);
		if (out_p[i] >= 0)
			close(out_p[i]);
	}
	if (root) {
		/* wipe the secret inside jansson's copy too */
		json_t *s = json_object_get(root, "Secret");

		if (json_is_string(s))
			explicit_bzero((char *)json_string_value(s), json_string_length(s));
		json_decref(root);
	}
	explicit_bzero(buf, HELPER_OUT_MAX + 1);
	free(buf);
	if (rc < 0)
		fetch_creds_clear(out);
	return rc;
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
		return strata_err(EINVAL, "docker config: the auths entry for %s is not an object", host);
	if (auth && auth[0]) {
		rc = util_base64_decode(auth, strlen(auth), &dec, &dlen);
		if (rc == -EINVAL)
			rc = strata_err(EINVAL, "docker config: \"auth\" for %s is not valid base64", host);
		if (rc < 0)
			goto out;
		dec[dlen] = '\0';
		colon = memchr(dec, ':', dlen);
		if (!colon || strlen((char *)dec) != dlen) {
			rc = strata_err(EINVAL, "docker config: \"auth\" for %s is not base64(user:password)",
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
		rc = strata_err(ENOENT, "docker config: no credentials in the auths entry for %s", host);
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
		rc = errno == ENOENT ? strata_err(ENOENT, "no credentials for %s (%s does not exist)", host,
						  path) :
				       strata_err(errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	/* jerr.text may quote the input near the error: only the position is reported */
	root = json_loadf(f, 0, &jerr);
	if (!root || !json_is_object(root)) {
		rc = strata_err(EINVAL, "%s:%d:%d: not a valid docker config file", path, root ? 1 : jerr.line,
				root ? 1 : jerr.column);
		goto out;
	}
	entry = find_host_entry(json_object_get(root, "credHelpers"), host);
	if (entry) {
		helper = json_string_value(entry);
		if (!helper) {
			rc = strata_err(EINVAL, "%s: credHelpers entry for %s is not a string", path, host);
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
		rc = run_helper(helper, server, limit_ms, out);
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

/* ---- bearer token cache ---- */

struct token {
	char *realm, *service, *scope; /* "" for NULL */
	char *authorization;	       /* "Bearer <token>", a secret */
	int64_t expires_ms;	       /* CLOCK_MONOTONIC */
	struct token *next;
};

struct fetch_tokens {
	pthread_mutex_t mu;
	struct token *head; /* protected by mu */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_rc;

static void curl_init_once(void)
{
	curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void token_free(struct token *k)
{
	if (!k)
		return;
	free(k->realm);
	free(k->service);
	free(k->scope);
	free_secret(k->authorization);
	free(k);
}

int fetch_tokens_new(struct fetch_tokens **out)
{
	struct fetch_tokens *t;

	*out = NULL;
	pthread_once(&curl_once, curl_init_once);
	if (curl_rc != CURLE_OK)
		return strata_err(EIO, "curl_global_init: %s", curl_easy_strerror(curl_rc));
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

void fetch_tokens_free(struct fetch_tokens *t)
{
	if (!t)
		return;
	while (t->head) {
		struct token *k = t->head;

		t->head = k->next;
		token_free(k);
	}
	pthread_mutex_destroy(&t->mu);
	free(t);
}

static const char *nz(const char *s)
{
	return s ? s : "";
}

static int key_eq(const struct token *k, const struct fetch_challenge *ch)
{
	return strcmp(k->realm, nz(ch->realm)) == 0 && strcmp(k->service, nz(ch->service)) == 0 &&
	       strcmp(k->scope, nz(ch->scope)) == 0;
}

/* Unlinks and returns the entry for ch, or NULL. Caller holds t->mu. */
static struct token *unlink_key(struct fetch_tokens *t, const struct fetch_challenge *ch)
{
	for (struct token **pp = &t->head; *pp; pp = &(*pp)->next) {
		if (key_eq(*pp, ch)) {
			struct token *k = *pp;

			*pp = k->next;
			k->next = NULL;
			return k;
		}
	}
	return NULL;
}

/* The realm's host (userinfo dropped) for messages, into buf. */
static const char *realm_host(const char *realm, char *buf, size_t len)
{
	const char *h = strstr(realm, "://");
	size_t n;
	const char *at;

	h = h ? h + 3 : realm;
	n = strcspn(h, "/?#");
	at = memchr(h, '@', n);
	if (at) {
		n -= (size_t)(at + 1 - h);
		h = at + 1;
	}
	snprintf(buf, len, "%.*s", (int)(n < 200 ? n : 200), h);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return buf;
}

struct body {
	char *data;
	size_t len, cap;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct body *b = userp;
	size_t n = size * nmemb;

	if (b->len + n > TOKEN_BODY_MAX)
		return 0;
	if (util_grow((void **)&b->data, &b->cap, b->len + n + 1, 1) < 0)
		return 0;
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* Appends "&name=<escaped value>" (no '&' when *s is empty) to the malloc'd *s. */
static int append_param(CURL *h, char **s, const char *name, const char *value)
{
	char *esc = curl_easy_escape(h, value, 0);
	char *ns = NULL;
	int n;

	if (!esc)
		return -ENOMEM;
	n = asprintf(&ns, "%s%s%s=%s", *s ? *s : "", *s && **s ? "&" : "", name, esc);
	curl_free(esc);
	if (n < 0)
		return -ENOMEM;
	free_secret(*s);
	*s = ns;
	return 0;
}

/* Appends service= and one scope= per space-separated scope of ch. */
static int append_service_scope(CURL *h, char **s, const struct fetch_challenge *ch)
{
	const char *p = ch->scope;
	int rc = 0;

	if (ch->service)
		rc = append_param(h, s, "service", ch->service);
	while (rc == 0 && p && *p) {
		size_t n = strcspn(p, " ");

		if (n > 0) {
			char *one = strndup(p, n);

			if (!one)
				return -ENOMEM;
			rc = append_param(h, s, "scope", one);
			free(one);
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	return rc;
}

/* A token fit to put in a header: visible ASCII, no spaces. */
static int token_ok(const char *s)
{
	if (!s || !s[0])
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* Asks the issuer for a token. Returns 0 with a malloc'd "Bearer <token>" in *auth and its lifetime in
 * *life_s, or a negative errno with strata_err. */
static int fetch_token(const struct fetch_challenge *ch, const struct fetch_creds *creds,
		       long limit_ms, char **auth, long *life_s)
{
	char host[256], errbuf[CURL_ERROR_SIZE] = "";
	struct body b = { 0 };
	CURL *h = curl_easy_init();
	char *url = NULL, *query = NULL;
	json_t *root = NULL;
	const char *tok;
	json_t *exp;
	long status = 0;
	CURLcode cc;
	int rc = 0, post = creds && creds->identity_token;

	realm_host(ch->realm, host, sizeof(host));
	if (!h)
		return strata_err(ENOMEM, "token request to %s: cannot create a curl handle", host);
	rc = append_service_scope(h, &query, ch);
	if (rc == 0 && post) {
		rc = append_param(h, &query, "grant_type", "refresh_token");
		if (rc == 0)
			rc = append_param(h, &query, "client_id", "strata");
		if (rc == 0)
			rc = append_param(h, &query, "refresh_token", creds->secret);
	}
	if (rc < 0)
		goto out;
	if (post || !query || !query[0])
		url = strdup(ch->realm);
	else if (asprintf(&url, "%s%c%s", ch->realm, strchr(ch->realm, '?') ? '&' : '?', query) < 0)
		url = NULL;
	if (!url) {
		rc = -ENOMEM;
		goto out;
	}
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK) {
		rc = strata_err(EINVAL, "token request to %s: invalid realm URL", host);
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_USERAGENT, "strata/" STRATA_VERSION);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 limit_ms > 0 && limit_ms < TOKEN_CONNECT_MS ? limit_ms : TOKEN_CONNECT_MS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
			 limit_ms > 0 && limit_ms < TOKEN_TIMEOUT_MS ? limit_ms : TOKEN_TIMEOUT_MS);
	/* a redirected POST (307/308) would carry the refresh token to wherever it points */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, post ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, TOKEN_MAX_REDIRS);
	curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (post) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, query);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(query));
	} else if (creds) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, nz(creds->username));
		curl_easy_setopt(h, CURLOPT_PASSWORD, nz(creds->secret));
	}
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		rc = strata_err(EIO, "token request to %s failed: %s", host,
				errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status == 401 || status == 403) {
		rc = strata_err(EACCES, "token request to %s denied (HTTP %ld)", host, status);
		goto out;
	}
	if (status < 200 || status > 299) {
		rc = strata_err(EIO, "token request to %s failed (HTTP %ld)", host, status);
		goto out;
	}
	root = b.data ? json_loadb(b.data, b.len, 0, NULL) : NULL;
	tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !tok[0])
		tok = json_string_value(json_object_get(root, "access_token"));
	if (!token_ok(tok)) {
		rc = strata_err(EIO, "token request to %s: the answer has no usable token", host);
		goto out;
	}
	exp = json_object_get(root, "expires_in");
	*life_s = json_is_integer(exp) && json_integer_value(exp) > 0 ?
			  (json_integer_value(exp) > 86400L * 365 ? 86400L * 365 : (long)json_integer_value(exp)) :
			  TOKEN_DEFAULT_S;
	if (asprintf(auth, "Bearer %s", tok) < 0) {
		*auth = NULL;
		rc = -ENOMEM;
	}
out:
	if (root) {
		json_t *s = json_object_get(root, "token");
		json_t *a = json_object_get(root, "access_token");

		if (json_is_string(s))
			explicit_bzero((char *)json_string_value(s), json_string_length(s));
		if (json_is_string(a))
			explicit_bzero((char *)json_string_value(a), json_string_length(a));
		json_decref(root);
	}
	if (b.data) {
		explicit_bzero(b.data, b.len);
		free(b.data);
	}
	free_secret(query);
	free(url);
	curl_easy_cleanup(h);
	return rc;
}

static int basic_authorization(const struct fetch_creds *creds, char **authorization)
{
	char *pair = NULL, *b64;
	int n;

	if (!creds || creds->identity_token || !creds->username || !creds->secret)
		return strata_err(EACCES, "the registry asks for a username and password (Basic auth) and "
					  "none are configured");
	n = asprintf(&pair, "%s:%s", creds->username, creds->secret);
	if (n < 0)
		return -ENOMEM;
	b64 = util_base64_encode(pair, (size_t)n);
	free_secret(pair);
	if (!b64)
		return -ENOMEM;
	n = asprintf(authorization, "Basic %s", b64);
	free_secret(b64);
	if (n < 0) {
		*authorization = NULL;
		return -ENOMEM;
	}
	return 0;
}

int fetch_tokens_get(struct fetch_tokens *t, const struct fetch_challenge *ch, const struct fetch_creds *creds,
		     char **authorization)
{
	return fetch_tokens_get_within(t, ch, creds, 0, authorization);
}

int fetch_tokens_get_within(struct fetch_tokens *t, const struct fetch_challenge *ch,
			    const struct fetch_creds *creds, long limit_ms, char **authorization)
{
	struct token *k = NULL;
	char *auth = NULL;
	long life_s = 0;
	int64_t early_ms;
	int rc = 0;

	*authorization = NULL;
	if (!ch->scheme)
		return strata_err(EINVAL, "no authentication challenge");
	if (strcmp(ch->scheme, "basic") == 0)
		return basic_authorization(creds, authorization);
	if (strcmp(ch->scheme, "bearer") != 0 || !ch->realm)
		return strata_err(EINVAL, "unsupported authentication scheme");

	pthread_mutex_lock(&t->mu);
	for (struct token *c = t->head; c; c = c->next) {
		if (key_eq(c, ch)) {
			if (now_ms() < c->expires_ms) {
				*authorization = strdup(c->authorization);
				rc = *authorization ? 0 : -ENOMEM;
				pthread_mutex_unlock(&t->mu);
				return rc;
			}
			break;
		}
	}
	pthread_mutex_unlock(&t->mu);

	/* not under the lock: the request may take seconds */
	rc = fetch_token(ch, creds, limit_ms, &auth, &life_s);
	if (rc < 0)
		goto out;
	*authorization = strdup(auth);
	if (!*authorization) {
		rc = -ENOMEM;
		goto out;
	}
	early_ms = life_s >= 2 * TOKEN_EARLY_S ? TOKEN_EARLY_S * 1000L : life_s * 500L;
	k = calloc(1, sizeof(*k));
	if (!k)
		goto out; /* the token is returned, just not cached */
	k->realm = strdup(nz(ch->realm));
	k->service = strdup(nz(ch->service));
	k->scope = strdup(nz(ch->scope));
	if (!k->realm || !k->service || !k->scope)
		goto out;
	k->authorization = auth;
	auth = NULL;
	k->expires_ms = now_ms() + life_s * 1000L - early_ms;
	pthread_mutex_lock(&t->mu);
	token_free(unlink_key(t, ch));
	k->next = t->head;
	t->head = k;
	k = NULL;
	pthread_mutex_unlock(&t->mu);
out:
	token_free(k);
	free_secret(auth);
	if (rc < 0) {
		free_secret(*authorization);
		*authorization = NULL;
	}
	return rc;
}

void fetch_tokens_invalidate(struct fetch_tokens *t, const struct fetch_challenge *ch)
{
	struct token *k;

	if (!t || !ch || !ch->scheme || strcmp(ch->scheme, "bearer") != 0)
		return;
	pthread_mutex_lock(&t->mu);
	k = unlink_key(t, ch);
	pthread_mutex_unlock(&t->mu);
	token_free(k);
}

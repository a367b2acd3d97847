/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/auth.c: challenges, docker config and credential helpers, a real token issuer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "fetch/auth.h"
#include "tmpdir.h"
#include "util/log.h"
#include "util/mem.h"

#define PYTHON "/usr/bin/python3"

/* ---- helpers ---- */

/* Writes text to tmpdir_path/name with mode. */
static void write_file(const char *name, const char *text, mode_t mode)
{
	char path[PATH_MAX];

	tmpdir_write_text(tmpdir_path, name, text);
	snprintf(path, sizeof(path), "%s/%s", tmpdir_path, name);
	assert_int_equal(chmod(path, mode), 0);
}

static void write_config(const char *text)
{
	write_file("config.json", text, 0600);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The message of the last failure must not quote any of the secrets. */
static void assert_no_secret(int rc, const char *const *secrets)
{
	const char *msg = strata_errmsg(rc);

	for (size_t i = 0; secrets[i]; i++)
		if (strstr(msg, secrets[i]))
			fail_msg("error message leaks a secret: %s", msg);
}

/* ---- challenges ---- */

static void test_challenge_docker_hub(void **state)
{
	struct fetch_challenge c;

	(void)state;
	assert_int_equal(
		fetch_challenge_parse(
			"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
			"scope=\"repository:library/alpine:pull\"",
			&c),
		0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:library/alpine:pull");
	fetch_challenge_clear(&c);
	assert_null(c.realm);
	fetch_challenge_clear(&c); /* twice is fine */
	fetch_challenge_clear(NULL);

	/* case-insensitive scheme and names, OWS around '=', a token value, no scope */
	assert_int_equal(fetch_challenge_parse(
				 "  BEARER   Realm = \"http://127.0.0.1:5001/auth\" , SERVICE=reg ",
				 &c),
			 0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "http://127.0.0.1:5001/auth");
	assert_string_equal(c.service, "reg");
	assert_null(c.scope);
	fetch_challenge_clear(&c);

	/* ghcr.io's shape: push and pull in one scope, extra parameters ignored */
	assert_int_equal(fetch_challenge_parse(
				 "Bearer realm=\"https://ghcr.io/token\",service=\"ghcr.io\","
				 "scope=\"repository:a/b:pull,push\",error=\"insufficient_scope\"",
				 &c),
			 0);
	assert_string_equal(c.scope, "repository:a/b:pull,push");
	fetch_challenge_clear(&c);
}

static void test_challenge_escapes(void **state)
{
	struct fetch_challenge c;

	(void)state;
	assert_int_equal(fetch_challenge_parse(
				 "Bearer realm=\"https://h/t\",service=\"a \\\"quoted\\\" \\\\ \\x\","
				 "scope=\"\"",
				 &c),
			 0);
	assert_string_equal(c.service, "a \"quoted\" \\ x");
	assert_string_equal(c.scope, "");
	fetch_challenge_clear(&c);

	/* a comma inside a quoted string does not split */
	assert_int_equal(fetch_challenge_parse(
				 "Bearer scope=\"x, Basic realm=y\",realm=\"https://h/t\"", &c),
			 0);
	assert_string_equal(c.scope, "x, Basic realm=y");
	assert_string_equal(c.realm, "https://h/t");
	fetch_challenge_clear(&c);
}

/* A token realm gets the registry's credentials: plain http only to a loopback issuer. */
static void test_challenge_http_realm_only_on_loopback(void **state)
{
	static const char *const ok[] = { "http://127.0.0.1:5001/auth", "http://127.9.0.3/t",
					  "http://localhost:80/t",	"http://LOCALHOST/t",
					  "http://[::1]:5000/t",	"https://auth.example/t" };
	static const char *const refused[] = { "http://auth.example/t",
					       "http://192.0.2.2:5001/t",
					       "http://128.0.0.1/t",
					       "http://[fd00::2]/t",
					       "http://127.0.0.1.evil.example/t",
					       "http://localhost.evil.example/t" };
	struct fetch_challenge c;
	char v[256];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(v, sizeof(v), "Bearer realm=\"%s\"", ok[i]);
		assert_int_equal(fetch_challenge_parse(v, &c), 0);
		fetch_challenge_clear(&c);
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(v, sizeof(v), "Bearer realm=\"%s\",service=x", refused[i]);
		assert_int_equal(fetch_challenge_parse(v, &c), -EINVAL);
		assert_non_null(strstr(strata_errmsg(-EINVAL), "plain http"));
		assert_null(c.realm);
	}
	/* Basic sends the credentials to the registry itself, which is the user's choice */
	assert_int_equal(fetch_challenge_parse("Basic realm=\"http://auth.example/\"", &c), 0);
	fetch_challenge_clear(&c);
}

/* A token request from an https realm is never redirected to plain http (its Basic credentials
 * and the token would cross the network in clear); a plain http realm (loopback only) may be. */
static void test_token_redirect_protocols(void **state)
{
	(void)state;
	assert_string_equal(fetch_token_redirect_protocols("https://auth.example.com/token"),
			    "https");
	assert_string_equal(fetch_token_redirect_protocols("HTTPS://auth.example.com/token"),
			    "https");
	assert_string_equal(fetch_token_redirect_protocols("https://127.0.0.1:5001/token"),
			    "https");
	assert_string_equal(fetch_token_redirect_protocols("http://127.0.0.1:5001/token"),
			    "http,https");
}

static void test_challenge_multiple(void **state)
{
	struct fetch_challenge c;

	(void)state;
	/* an unknown scheme with params, one with a token68, then Bearer */
	assert_int_equal(fetch_challenge_parse(
				 "Newauth realm=\"apps\", type=1, title=\"Login to \\\"apps\\\"\", "
				 "Negotiate abc+/==, Bearer realm=\"https://a/t\",service=s",
				 &c),
			 0);
	assert_string_equal(c.scheme, "bearer");
	assert_string_equal(c.realm, "https://a/t");
	assert_string_equal(c.service, "s");
	fetch_challenge_clear(&c);

	/* the first of Basic and Bearer wins; the second is still parsed for syntax */
	assert_int_equal(fetch_challenge_parse(
				 "Basic realm=\"Registry Realm\", Bearer realm=\"https://a/t\"",
				 &c),
			 0);
	assert_string_equal(c.scheme, "basic");
	assert_string_equal(c.realm, "Registry Realm");
	assert_null(c.service);
	fetch_challenge_clear(&c);

	assert_int_equal(fetch_challenge_parse("Negotiate, basic", &c), 0);
	assert_string_equal(c.scheme, "basic");
	assert_null(c.realm);
	fetch_challenge_clear(&c);

	/* empty list elements are allowed */
	assert_int_equal(fetch_challenge_parse(", ,Bearer realm=\"https://a/t\",,scope=x,", &c), 0);
	assert_string_equal(c.scope, "x");
	fetch_challenge_clear(&c);
}

static void test_challenge_bad(void **state)
{
	static const char *const bad[] = {
		"",
		"   ",
		"Negotiate abc==",				  /* no Bearer or Basic */
		"Bearer",					  /* no realm */
		"Bearer service=x",				  /* no realm */
		"Bearer realm=\"ftp://h/t\"",			  /* not http(s) */
		"Bearer realm=\"https://h/t",			  /* unterminated */
		"Bearer realm=\"https://h/t\" service=x",	  /* missing comma */
		"Bearer realm=",				  /* no value */
		"Bearer realm=\"https://a\",realm=\"https://b\"", /* duplicate */
		"Bearer realm=\"https://h/\x01t\"",		  /* control character */
		"=Bearer",
		"Bearer; realm=x",
		"\"Bearer\"",
		"Bearer realm=\"https://h/t\",@x=y",
		"Basic abc def", /* two token68s */
		"Basic realm=\"r\" extra",
		NULL,
	};
	struct fetch_challenge c;

	(void)state;
	for (size_t i = 0; bad[i]; i++) {
		int rc;

		strata_err_clear();
		rc = fetch_challenge_parse(bad[i], &c);
		if (rc != -EINVAL)
			fail_msg("expected -EINVAL for <%s>, got %d", bad[i], rc);
		assert_null(c.scheme);
		assert_null(c.realm);
		assert_non_null(strstr(strata_errmsg(rc), "WWW-Authenticate"));
	}
}

static void test_base64_encode(void **state)
{
	static const char *const vec[][2] = {
		{ "", "" },	   { "f", "Zg==" },	   { "fo", "Zm8=" },
		{ "foo", "Zm9v" }, { "foob", "Zm9vYg==" }, { "foobar", "Zm9vYmFy" },
	};
	uint8_t all[256], *dec = NULL;
	size_t dlen = 0;
	char *s;

	(void)state;
	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		s = util_base64_encode(vec[i][0], strlen(vec[i][0]));
		assert_non_null(s);
		assert_string_equal(s, vec[i][1]);
		free(s);
	}
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)(255 - i);
	s = util_base64_encode(all, sizeof(all));
	assert_non_null(s);
	assert_int_equal(util_base64_decode(s, strlen(s), &dec, &dlen), 0);
	assert_int_equal(dlen, sizeof(all));
	assert_memory_equal(dec, all, sizeof(all));
	free(dec);
	free(s);
}

/* ---- docker config and credential helpers ---- */

static char *b64(const char *s)
{
	char *r = util_base64_encode(s, strlen(s));

	assert_non_null(r);
	return r;
}

static void lookup_ok(const char *host, const char *user, const char *secret, int idt)
{
	struct fetch_creds c;
	int rc;

	strata_err_clear();
	rc = fetch_creds_lookup(NULL, host, &c);
	if (rc != 0)
		fail_msg("lookup %s: rc %d: %s", host, rc, strata_errmsg(rc));
	if (user)
		assert_string_equal(c.username, user);
	else
		assert_null(c.username);
	assert_string_equal(c.secret, secret);
	assert_int_equal(c.identity_token, idt);
	fetch_creds_clear(&c);
	assert_null(c.secret);
}

static void lookup_fails(const char *host, int want)
{
	static const char *const secrets[] = { "pw-secret", "helpersecret", "s3cret-leak",
					       "idtok-xyz", NULL };
	struct fetch_creds c;
	int rc;

	strata_err_clear();
	rc = fetch_creds_lookup(NULL, host, &c);
	if (rc != want)
		fail_msg("lookup %s: expected %d, got %d: %s", host, want, rc, strata_errmsg(rc));
	assert_null(c.username);
	assert_null(c.secret);
	assert_no_secret(rc, secrets);
}

static void test_config_auths(void **state)
{
	char *a = b64("bob:pw-secret"), *h = b64("hubuser:pw-secret-hub"), *i = b64("alice:");
	char *nc = b64("pw-secret");
	char *cfg = NULL;
	struct fetch_creds c;

	(void)state;
	assert_true(
		asprintf(&cfg,
			 "{\"auths\": {"
			 " \"127.0.0.1:5000\": {\"auth\": \"%s\"},"
			 " \"http://reg.example:5000/v2/\": {\"auth\": \"%s\"},"
			 " \"docker.io\": {\"auth\": \"%s\"},"
			 " \"https://index.docker.io/v1/\": {\"auth\": \"%s\"},"
			 " \"idt.example\": {\"auth\": \"%s\", \"identitytoken\": \"idtok-xyz\"},"
			 " \"bare.example\": {\"identitytoken\": \"idtok-xyz\"},"
			 " \"plain.example\": {\"username\": \"carol\", \"password\": \"pw-secret\"},"
			 " \"empty.example\": {},"
			 " \"badb64.example\": {\"auth\": \"!!!pw-secret\"},"
			 " \"nocolon.example\": {\"auth\": \"%s\"}"
			 "}}",
			 a, a, a, h, i, nc) > 0);
	write_config(cfg);
	lookup_ok("127.0.0.1:5000", "bob", "pw-secret", 0);
	lookup_ok("reg.example:5000", "bob", "pw-secret", 0);  /* key with scheme and path */
	lookup_ok("REG.Example:5000", "bob", "pw-secret", 0);  /* case-insensitive */
	lookup_ok("docker.io", "hubuser", "pw-secret-hub", 0); /* the v1 URL key wins */
	lookup_ok("idt.example", "alice", "idtok-xyz", 1);
	lookup_ok("bare.example", NULL, "idtok-xyz", 1);
	lookup_ok("plain.example", "carol", "pw-secret", 0);
	lookup_fails("empty.example", -ENOENT);
	lookup_fails("127.0.0.1", -ENOENT);
	lookup_fails("127.0.0.1:5001", -ENOENT);
	lookup_fails("ghcr.io", -ENOENT);
	lookup_fails("badb64.example", -EINVAL);
	lookup_fails("nocolon.example", -EINVAL);
	lookup_fails("", -EINVAL);
	lookup_fails("a/b", -EINVAL);
	free(cfg);

	/* the other Docker Hub key spellings */
	cfg = NULL;
	assert_true(asprintf(&cfg, "{\"auths\": {\"docker.io\": {\"auth\": \"%s\"}}}", a) > 0);
	write_config(cfg);
	lookup_ok("docker.io", "bob", "pw-secret", 0);
	lookup_ok("index.docker.io", "bob", "pw-secret", 0);
	free(cfg);
	cfg = NULL;
	assert_true(asprintf(&cfg,
			     "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"%s\"}}}",
			     a) > 0);
	write_config(cfg);
	lookup_ok("docker.io", "bob", "pw-secret", 0);
	lookup_fails("quay.io", -ENOENT);
	free(cfg);

	/* an explicit path wins over DOCKER_CONFIG */
	write_file("other.json",
		   "{\"auths\": {\"x.example\": {\"username\": \"u\", \"password\": \"p\"}}}",
		   0600);
	{
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/other.json", tmpdir_path);
		assert_int_equal(fetch_creds_lookup(path, "x.example", &c), 0);
		assert_string_equal(c.username, "u");
		fetch_creds_clear(&c);
		snprintf(path, sizeof(path), "%s/missing.json", tmpdir_path);
		assert_int_equal(fetch_creds_lookup(path, "x.example", &c), -ENOENT);
	}

	/* a malformed file: the message gives the position, never the text near it */
	write_config("{\"auths\": {\"h\": {\"auth\": \"pw-secret\" \"x\"}}}");
	lookup_fails("h", -EINVAL);
	write_config("[]");
	lookup_fails("h", -EINVAL);
	free(a);
	free(h);
	free(i);
	free(nc);
}

static void test_config_helpers(void **state)
{
	struct fetch_creds c;
	char *a = b64("filebob:pw-secret");
	char *cfg = NULL;

	(void)state;
	assert_true(
		asprintf(&cfg,
			 "{\"credHelpers\": {\"reg.example:5000\": \"fake\", \"tok.example\": \"fake\","
			 " \"index.docker.io\": \"fake\", \"broken.example\": \"broken\","
			 " \"garbage.example\": \"garbage\", \"gone.example\": \"nonexistent\","
			 " \"none.example\": \"fake\", \"evil.example\": \"../fake\"},"
			 " \"auths\": {\"none.example\": {\"auth\": \"%s\"}}}",
			 a) > 0);
	write_config(cfg);
	lookup_ok("reg.example:5000", "helperuser", "helpersecret", 0);
	lookup_ok("tok.example", NULL, "idtok-xyz", 1);
	lookup_ok("docker.io", "hubhelper", "helpersecret",
		  0); /* asked for https://index.docker.io/v1/ */
	lookup_fails("broken.example", -EIO);
	lookup_fails("garbage.example", -EINVAL);
	lookup_fails("gone.example", -EIO);
	lookup_fails("evil.example", -EINVAL);
	/* a credHelpers entry does not fall back to auths */
	lookup_fails("none.example", -ENOENT);
	free(cfg);

	/* credsStore: asked first, then the file */
	cfg = NULL;
	assert_true(
		asprintf(&cfg,
			 "{\"credsStore\": \"fake\", \"auths\": {\"file.example\": {\"auth\": \"%s\"},"
			 " \"reg.example:5000\": {}}}",
			 a) > 0);
	write_config(cfg);
	lookup_ok("reg.example:5000", "helperuser", "helpersecret", 0);
	lookup_ok("file.example", "filebob", "pw-secret", 0);
	lookup_fails("nothing.example", -ENOENT);
	free(cfg);

	/* credHelpers wins over credsStore */
	write_config(
		"{\"credsStore\": \"broken\", \"credHelpers\": {\"reg.example:5000\": \"fake\"}}");
	lookup_ok("reg.example:5000", "helperuser", "helpersecret", 0);
	lookup_fails("other.example", -EIO);
	assert_int_equal(fetch_creds_lookup(NULL, "other.example", &c), -EIO);
	assert_non_null(
		strstr(strata_errmsg(-EIO), "docker-credential-broken failed (exit status 3)"));
	free(a);
}

static void test_helper_timeout(void **state)
{
	char pidfile[PATH_MAX], buf[64], stat_path[64];
	double t0, dt;
	FILE *f;
	long pid = 0;

	(void)state;
	write_config("{\"credHelpers\": {\"slow.example\": \"slow\"}}");
	fetch_auth_set_helper_timeout_ms(500);
	t0 = now_s();
	lookup_fails("slow.example", -ETIMEDOUT);
	dt = now_s() - t0;
	fetch_auth_set_helper_timeout_ms(0);
	if (dt < 0.4 || dt > 3.0)
		fail_msg("helper timeout took %.2f s", dt);
	assert_non_null(strstr(strata_errmsg(-ETIMEDOUT), "did not finish within 500 ms"));

	/* the helper's child (sleep 30) was killed with its process group */
	snprintf(pidfile, sizeof(pidfile), "%s/sleep.pid", tmpdir_path);
	for (int i = 0; i < 100 && pid == 0; i++) {
		f = fopen(pidfile, "r");
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
		}
	}
	assert_true(pid > 0);
	for (int i = 0; i < 200; i++) { /* gone, or a zombie waiting for its new parent */
		snprintf(stat_path, sizeof(stat_path), "/proc/%ld/stat", pid);
		f = fopen(stat_path, "r");
		if (!f)
			return;
		buf[0] = '\0';
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
		if (strstr(buf, ") Z") || strstr(buf, ") X"))
			return;
		usleep(10000);
	}
	fail_msg("sleep %ld still runs: %s", pid, buf);
}

/* ---- token cache against a real issuer ---- */

static const char issuer_py[] =
	"import base64, json, sys, threading, time\n"
	"from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
	"from urllib.parse import urlparse, parse_qs\n"
	"count = {}\n"
	"lock = threading.Lock()\n"
	"GOOD = 'Basic ' + base64.b64encode(b'alice:s3cret-pw').decode()\n"
	"class H(BaseHTTPRequestHandler):\n"
	"    protocol_version = 'HTTP/1.1'\n"
	"    def log_message(self, *a): pass\n"
	"    def reply(self, code, obj):\n"
	"        body = json.dumps(obj).encode()\n"
	"        self.send_response(code)\n"
	"        self.send_header('Content-Type', 'application/json')\n"
	"        self.send_header('Content-Length', str(len(body)))\n"
	"        self.end_headers()\n"
	"        self.wfile.write(body)\n"
	"    def bump(self, path):\n"
	"        with lock:\n"
	"            count[path] = count.get(path, 0) + 1\n"
	"            return count[path]\n"
	"    def do_GET(self):\n"
	"        u = urlparse(self.path); q = parse_qs(u.query)\n"
	"        if u.path == '/count':\n"
	"            with lock: c = dict(count)\n"
	"            return self.reply(200, c)\n"
	"        n = self.bump(u.path)\n"
	"        if u.path == '/token':\n"
	"            if self.headers.get('Authorization') != GOOD:\n"
	"                return self.reply(401, {'details': 'bad credentials'})\n"
	"            if q.get('service') != ['registry.test'] or q.get('scope') != ['repository:foo/bar:pull']:\n"
	"                return self.reply(400, {'error': 'bad query'})\n"
	"            return self.reply(200, {'token': 'tok-%d' % n, 'expires_in': 2,\n"
	"                                    'issued_at': '2001-01-01T00:00:00Z'})\n"
	"        if u.path == '/anon':\n"
	"            if 'Authorization' in self.headers: return self.reply(400, {})\n"
	"            return self.reply(200, {'access_token': 'anon-%d-%d' % (n, len(q.get('scope', [])))})\n"
	"        if u.path == '/deny': return self.reply(401, {})\n"
	"        if u.path == '/hang':\n"
	"            time.sleep(3)\n"
	"            try: return self.reply(200, {'token': 'late'})\n"
	"            except OSError: return  # the client gave up\n"
	"        if u.path == '/forbid': return self.reply(403, {})\n"
	"        if u.path == '/broken': return self.reply(200, {'nothing': 1})\n"
	"        if u.path == '/badtoken': return self.reply(200, {'token': 'a b\\r\\nX-Evil: 1'})\n"
	"        if u.path == '/fail': return self.reply(500, {})\n"
	"        self.reply(404, {})\n"
	"    def do_POST(self):\n"
	"        u = urlparse(self.path)\n"
	"        n = self.bump(u.path)\n"
	"        ln = int(self.headers.get('Content-Length', '0'))\n"
	"        f = parse_qs(self.rfile.read(ln).decode())\n"
	"        if (u.path == '/oauth' and f.get('grant_type') == ['refresh_token']\n"
	"                and f.get('refresh_token') == ['idtok-secret'] and f.get('client_id') == ['strata']\n"
	"                and f.get('service') == ['registry.test']):\n"
	"            return self.reply(200, {'access_token': 'oauth-%d' % n, 'expires_in': 300})\n"
	"        self.reply(401, {})\n"
	"s = ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
	"print(s.server_address[1], flush=True)\n"
	"s.serve_forever()\n";

struct issuer {
	pid_t pid;
	int port;
};

static struct issuer issuer;

static int start_issuer(void **state)
{
	char script[PATH_MAX];
	char line[32] = "";
	int p[2];
	FILE *f;

	(void)state;
	if (access(PYTHON, X_OK) != 0)
		return 0; /* the token tests skip */
	snprintf(script, sizeof(script), "%s/issuer.py", tmpdir_path);
	f = fopen(script, "w");
	if (!f || fputs(issuer_py, f) < 0 || fclose(f) != 0)
		return -1;
	if (pipe(p) != 0)
		return -1;
	issuer.pid = fork();
	if (issuer.pid < 0)
		return -1;
	if (issuer.pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execl(PYTHON, "python3", script, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	if (!f || !fgets(line, sizeof(line), f)) {
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	issuer.port = atoi(line);
	return issuer.port > 0 ? 0 : -1;
}

static int stop_issuer(void **state)
{
	(void)state;
	if (issuer.pid > 0) {
		kill(issuer.pid, SIGTERM);
		waitpid(issuer.pid, NULL, 0);
		issuer.pid = 0;
	}
	return 0;
}

static size_t sink(char *d, size_t s, size_t n, void *u)
{
	struct {
		char buf[4096];
		size_t len;
	} *b = u;
	size_t k = s * n;

	if (b->len + k >= sizeof(b->buf))
		return 0;
	memcpy(b->buf + b->len, d, k);
	b->len += k;
	b->buf[b->len] = '\0';
	return k;
}

/* Requests the issuer has seen on path. */
static long issuer_count(const char *path)
{
	struct {
		char buf[4096];
		size_t len;
	} b = { "", 0 };
	char url[128];
	CURL *h = curl_easy_init();
	json_t *root;
	long n;

	assert_non_null(h);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/count", issuer.port);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	assert_int_equal(curl_easy_perform(h), CURLE_OK);
	curl_easy_cleanup(h);
	root = json_loads(b.buf, 0, NULL);
	assert_non_null(root);
	n = (long)json_integer_value(json_object_get(root, path));
	json_decref(root);
	return n;
}

static void challenge_for(struct fetch_challenge *ch, const char *path, const char *scope)
{
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", issuer.port, path);
	ch->scheme = strdup("bearer");
	ch->realm = strdup(url);
	ch->service = strdup("registry.test");
	ch->scope = scope ? strdup(scope) : NULL;
}

static const struct fetch_creds alice = { .username = "alice", .secret = "s3cret-pw" };
static const char *const token_secrets[] = { "s3cret-pw", "YWxpY2U6czNjcmV0LXB3", "idtok-secret",
					     "tok-", NULL };

static void get_ok(struct fetch_tokens *t, const struct fetch_challenge *ch,
		   const struct fetch_creds *cr, const char *want)
{
	char *auth = NULL;
	int rc = fetch_tokens_get(t, ch, cr, &auth);

	if (rc != 0)
		fail_msg("fetch_tokens_get %s: rc %d: %s", ch->realm, rc, strata_errmsg(rc));
	assert_string_equal(auth, want);
	free(auth);
}

static void get_fails(struct fetch_tokens *t, const struct fetch_challenge *ch,
		      const struct fetch_creds *cr, int want)
{
	char *auth = (char *)"x";
	int rc;

	strata_err_clear();
	rc = fetch_tokens_get(t, ch, cr, &auth);
	if (rc != want)
		fail_msg("fetch_tokens_get %s: expected %d, got %d: %s", ch->realm, want, rc,
			 strata_errmsg(rc));
	assert_null(auth);
	assert_no_secret(rc, token_secrets);
}

/* A caller's limit (what is left of a read's deadline) cuts a slow helper and a slow issuer short. */
static void test_limits(void **state)
{
	struct fetch_challenge ch = { 0 };
	struct fetch_tokens *t = NULL;
	struct fetch_creds c;
	char *auth = (char *)"x";

	(void)state;
	write_config("{\"credHelpers\": {\"slow.example\": \"slow\"}}");
	assert_int_equal(fetch_creds_lookup_within(NULL, "slow.example", 300, &c), -ETIMEDOUT);
	assert_non_null(strstr(strata_errmsg(-ETIMEDOUT), "did not finish within 300 ms"));
	assert_null(c.secret);
	if (issuer.pid <= 0)
		skip();
	assert_int_equal(fetch_tokens_new(&t), 0);
	challenge_for(&ch, "/hang", NULL);
	/* the issuer answers after 3 s: 300 ms is not enough, no limit is */
	assert_int_equal(fetch_tokens_get_within(t, &ch, NULL, 300, &auth), -EIO);
	assert_null(auth);
	assert_non_null(strstr(strata_errmsg(-EIO), "token request to 127.0.0.1:"));
	assert_int_equal(fetch_tokens_get_within(t, &ch, NULL, 0, &auth), 0);
	assert_string_equal(auth, "Bearer late");
	free(auth);
	fetch_challenge_clear(&ch);
	fetch_tokens_free(t);
}

static void test_tokens_cache(void **state)
{
	struct fetch_challenge ch = { 0 }, other = { 0 };
	struct fetch_tokens *t = NULL;

	(void)state;
	if (issuer.pid <= 0)
		skip();
	assert_int_equal(fetch_tokens_new(&t), 0);
	challenge_for(&ch, "/token", "repository:foo/bar:pull");

	/* one request for two gets */
	get_ok(t, &ch, &alice, "Bearer tok-1");
	get_ok(t, &ch, &alice, "Bearer tok-1");
	assert_int_equal(issuer_count("/token"), 1);

	/* expires_in 2: fresh for 1 s (half the lifetime early) */
	usleep(1200 * 1000);
	get_ok(t, &ch, &alice, "Bearer tok-2");
	get_ok(t, &ch, &alice, "Bearer tok-2");
	assert_int_equal(issuer_count("/token"), 2);

	/* invalidate: the next get asks again */
	fetch_tokens_invalidate(t, &ch);
	get_ok(t, &ch, &alice, "Bearer tok-3");
	assert_int_equal(issuer_count("/token"), 3);
	fetch_tokens_invalidate(t, &other); /* unknown key, zeroed challenge: nothing happens */
	fetch_tokens_invalidate(NULL, &ch);

	/* anonymous, another key; several scopes become several scope= parameters */
	challenge_for(&other, "/anon", "repository:a:pull repository:b:pull");
	get_ok(t, &other, NULL, "Bearer anon-1-2");
	get_ok(t, &other, NULL, "Bearer anon-1-2");
	get_ok(t, &ch, &alice, "Bearer tok-3"); /* still cached */
	fetch_challenge_clear(&other);
	challenge_for(&other, "/anon", NULL);
	get_ok(t, &other, NULL, "Bearer anon-2-0");
	fetch_challenge_clear(&other);

	/* identity token: OAuth2 POST */
	challenge_for(&other, "/oauth", "repository:foo/bar:pull");
	{
		const struct fetch_creds idt = { .secret = "idtok-secret", .identity_token = 1 };
		const struct fetch_creds wrong = { .secret = "idtok-wrong", .identity_token = 1 };

		get_ok(t, &other, &idt, "Bearer oauth-1");
		get_ok(t, &other, &idt, "Bearer oauth-1");
		fetch_tokens_invalidate(t, &other);
		get_fails(t, &other, &wrong, -EACCES);
	}
	fetch_challenge_clear(&other);
	fetch_challenge_clear(&ch);
	fetch_tokens_free(t);
	fetch_tokens_free(NULL);
}

static void test_tokens_errors(void **state)
{
	static const struct fetch_creds wrong = { .username = "alice",
						  .secret = "s3cret-pw-wrong" };
	struct fetch_challenge ch = { 0 };
	struct fetch_tokens *t = NULL;
	char want[128];

	(void)state;
	if (issuer.pid <= 0)
		skip();
	assert_int_equal(fetch_tokens_new(&t), 0);

	challenge_for(&ch, "/token", "repository:foo/bar:pull");
	get_fails(t, &ch, &wrong, -EACCES);
	snprintf(want, sizeof(want), "token request to 127.0.0.1:%d denied (HTTP 401)",
		 issuer.port);
	assert_string_equal(strata_errmsg(-EACCES), want);
	get_fails(t, &ch, NULL, -EACCES);
	fetch_challenge_clear(&ch);

	challenge_for(&ch, "/forbid", NULL);
	get_fails(t, &ch, &alice, -EACCES);
	assert_non_null(strstr(strata_errmsg(-EACCES), "(HTTP 403)"));
	fetch_challenge_clear(&ch);

	challenge_for(&ch, "/fail", NULL);
	get_fails(t, &ch, &alice, -EIO);
	assert_non_null(strstr(strata_errmsg(-EIO), "(HTTP 500)"));
	fetch_challenge_clear(&ch);

	challenge_for(&ch, "/broken", NULL);
	get_fails(t, &ch, &alice, -EIO);
	fetch_challenge_clear(&ch);

	challenge_for(&ch, "/badtoken", NULL);
	get_fails(t, &ch, &alice, -EIO);
	fetch_challenge_clear(&ch);

	/* userinfo in the realm never reaches the message */
	ch.scheme = strdup("bearer");
	ch.realm = strdup("http://user:s3cret-pw@127.0.0.1:1/token");
	get_fails(t, &ch, &alice, -EIO);
	assert_non_null(strstr(strata_errmsg(-EIO), "token request to 127.0.0.1:1 failed"));
	fetch_challenge_clear(&ch);

	/* Basic challenges: no request, just the header */
	ch.scheme = strdup("basic");
	ch.realm = strdup("Registry");
	get_ok(t, &ch, &alice, "Basic YWxpY2U6czNjcmV0LXB3");
	get_fails(t, &ch, NULL, -EACCES);
	{
		const struct fetch_creds idt = { .secret = "idtok-secret", .identity_token = 1 };

		get_fails(t, &ch, &idt, -EACCES);
	}
	fetch_tokens_invalidate(t, &ch);
	fetch_challenge_clear(&ch);

	ch.scheme = strdup("negotiate");
	get_fails(t, &ch, &alice, -EINVAL);
	fetch_challenge_clear(&ch);
	fetch_tokens_free(t);
}

struct worker {
	struct fetch_tokens *t;
	const struct fetch_challenge *ch;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 25; i++) {
		char *auth = NULL;

		if (fetch_tokens_get(w->t, w->ch, &alice, &auth) != 0 ||
		    strncmp(auth, "Bearer tok-", 11) != 0)
			w->failures++;
		free(auth);
		if (i % 10 == 5)
			fetch_tokens_invalidate(w->t, w->ch);
	}
	return NULL;
}

static void test_tokens_threads(void **state)
{
	struct fetch_challenge ch = { 0 };
	struct fetch_tokens *t = NULL;
	struct worker w[4];
	pthread_t th[4];

	(void)state;
	if (issuer.pid <= 0)
		skip();
	assert_int_equal(fetch_tokens_new(&t), 0);
	challenge_for(&ch, "/token", "repository:foo/bar:pull");
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ .t = t, .ch = &ch };
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	fetch_challenge_clear(&ch);
	fetch_tokens_free(t);
}

/* ---- fixtures ---- */

static int setup_tmp(void **state)
{
	char bindir[PATH_MAX + 8], *path = NULL;
	const char *old = getenv("PATH");

	if (tmpdir_setup(state) != 0)
		return -1;
	snprintf(bindir, sizeof(bindir), "%s/bin", tmpdir_path);
	if (mkdir(bindir, 0700) != 0)
		return -1;
	write_file(
		"bin/docker-credential-fake",
		"#!/bin/sh\n"
		"[ \"$1\" = get ] || exit 9\n"
		"url=$(cat)\n"
		"case \"$url\" in\n"
		"reg.example:5000) printf '{\"ServerURL\":\"%s\",\"Username\":\"helperuser\","
		"\"Secret\":\"helpersecret\"}' \"$url\";;\n"
		"tok.example) printf '{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"idtok-xyz\"}\\n' "
		"\"$url\";;\n"
		"https://index.docker.io/v1/) echo '{\"Username\":\"hubhelper\",\"Secret\":\"helpersecret\"}';;\n"
		"*) echo 'credentials not found in native keychain'; exit 1;;\n"
		"esac\n",
		0700);
	write_file("bin/docker-credential-broken", "#!/bin/sh\necho 'oops s3cret-leak'\nexit 3\n",
		   0700);
	write_file("bin/docker-credential-garbage", "#!/bin/sh\necho 'not json s3cret-leak'\n",
		   0700);
	write_file("bin/docker-credential-slow",
		   "#!/bin/sh\nsleep 30 &\necho $! > \"$(dirname \"$0\")/../sleep.pid\"\nwait\n",
		   0700);
	if (asprintf(&path, "%s:%s", bindir, old ? old : "/usr/bin:/bin") < 0)
		return -1;
	setenv("PATH", path, 1);
	free(path);
	setenv("DOCKER_CONFIG", tmpdir_path, 1);
	return start_issuer(state);
}

static int teardown_tmp(void **state)
{
	stop_issuer(state);
	tmpdir_teardown(state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_challenge_docker_hub),
		cmocka_unit_test(test_challenge_escapes),
		cmocka_unit_test(test_challenge_multiple),
		cmocka_unit_test(test_token_redirect_protocols),
		cmocka_unit_test(test_challenge_http_realm_only_on_loopback),
		cmocka_unit_test(test_challenge_bad),
		cmocka_unit_test(test_base64_encode),
		cmocka_unit_test(test_config_auths),
		cmocka_unit_test(test_config_helpers),
		cmocka_unit_test(test_helper_timeout),
		cmocka_unit_test(test_tokens_cache),
		cmocka_unit_test(test_tokens_errors),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_tokens_threads),
	};

	return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}

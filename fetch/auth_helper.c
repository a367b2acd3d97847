/* SPDX-License-Identifier: Apache-2.0 */
/* Docker credential helpers: "docker-credential-<name> get" run in its own process group, bounded
 * in time and output, its answer read without ever quoting it. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "auth_i.h"
#include "util/log.h"

extern char **environ;

#define HELPER_PREFIX	  "docker-credential-"
#define HELPER_OUT_MAX	  (64 * 1024)
#define HELPER_TIMEOUT_MS 10000L
#define NOT_FOUND_MSG	  "credentials not found in native keychain"

static _Atomic long helper_timeout_ms =
	HELPER_TIMEOUT_MS; /* set by tests, read by every helper run */

void fetch_auth_set_helper_timeout_ms(long ms)
{
	atomic_store(&helper_timeout_ms, ms > 0 ? ms : HELPER_TIMEOUT_MS);
}

long fetch_auth_helper_timeout_ms(void)
{
	return atomic_load(&helper_timeout_ms);
}

/* Reads fd into buf (at most cap bytes) until EOF or the deadline. Returns the byte count, -E2BIG
 * past cap, -ETIMEDOUT, or another negative errno. */
static ssize_t read_until(int fd, char *buf, size_t cap, int64_t deadline)
{
	size_t len = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - fetch_now_ms();
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
		if (fetch_now_ms() >= deadline)
			break;
		usleep(5000);
	}
	kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return -ETIMEDOUT;
}

/* Starts prog with the argument "get", stdin from in_fd and stdout to out_fd, in its own process
 * group. Returns 0 with *pid, or negative errno with strata_err set (*pid -1). */
static int spawn_helper(char *prog, int in_fd, int out_fd, pid_t *pid)
{
	char *argv[3] = { prog, "get", NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int fa_ok = 0, attr_ok = 0, rc;

	*pid = -1;
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
	if (posix_spawn_file_actions_adddup2(&fa, in_fd, 0) != 0 ||
	    posix_spawn_file_actions_adddup2(&fa, out_fd, 1) != 0 ||
	    posix_spawnattr_setpgroup(&attr, 0) != 0 ||
	    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	rc = posix_spawnp(pid, prog, &fa, &attr, argv, environ);
	if (rc != 0) {
		*pid = -1;
		rc = strata_err(EIO, "cannot run credential helper %s: %s", prog, strerror(rc));
	}
out:
	if (attr_ok)
		posix_spawnattr_destroy(&attr);
	if (fa_ok)
		posix_spawn_file_actions_destroy(&fa);
	return rc;
}

/* Sends server to the helper's stdin (in_fd, shut for writing after it), reads its stdout (out_fd)
 * into buf (at most HELPER_OUT_MAX bytes) until EOF or the deadline, and reaps pid, killing its
 * group first when the read timed out. Returns what read_until() returns; *status is reap()'s. */
static ssize_t talk(int in_fd, int out_fd, pid_t pid, const char *server, char *buf,
		    int64_t deadline, int *status)
{
	size_t off = 0, slen = strlen(server);
	ssize_t len;

	while (off < slen) {
		ssize_t n = send(in_fd, server + off, slen - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break; /* the helper may not read stdin; its answer decides */
		off += (size_t)n;
	}
	shutdown(in_fd, SHUT_WR);
	len = read_until(out_fd, buf, HELPER_OUT_MAX, deadline);
	*status = reap(pid, deadline, len == -ETIMEDOUT);
	return len;
}

/* The credentials in the answer (buf, len bytes, NUL-terminated) of a helper that exited with
 * status. Returns 0 with *out filled, or negative errno with strata_err set, never quoting buf. */
static int read_answer(const char *prog, const char *server, int status, const char *buf,
		       ssize_t len, struct fetch_creds *out)
{
	json_t *root = NULL;
	const char *user, *secret;
	int rc = 0;

	if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* the protocol's "not found" answer is the one output worth recognizing */
		if (status >= 0 && WIFEXITED(status) && strstr(buf, NOT_FOUND_MSG))
			return strata_err(ENOENT, "credential helper %s has no credentials for %s",
					  prog, server);
		if (status >= 0 && WIFSIGNALED(status))
			return strata_err(EIO, "credential helper %s killed by signal %d", prog,
					  WTERMSIG(status));
		return strata_err(EIO, "credential helper %s failed (exit status %d)", prog,
				  status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
	root = json_loadb(buf, (size_t)len, 0, NULL);
	user = json_string_value(json_object_get(root, "Username"));
	secret = json_string_value(json_object_get(root, "Secret"));
	if (!root || !user || !secret || secret[0] == '\0') {
		rc = strata_err(EINVAL,
				"credential helper %s: answer is not JSON with Username and Secret",
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
	if (root) {
		/* wipe the secret inside jansson's copy too */
		json_t *s = json_object_get(root, "Secret");

		if (json_is_string(s))
			explicit_bzero((char *)json_string_value(s), json_string_length(s));
		json_decref(root);
	}
	return rc;
}

int fetch_auth_run_helper(const char *helper, const char *server, long limit_ms,
			  struct fetch_creds *out)
{
	char prog[256];
	int in_sv[2] = { -1, -1 }, out_p[2] = { -1, -1 };
	int rc = 0, status;
	pid_t pid = -1;
	long timeout_ms = atomic_load(&helper_timeout_ms);
	int64_t deadline;
	char *buf = NULL;
	ssize_t len = 0;

	if (limit_ms > 0 && limit_ms < timeout_ms)
		timeout_ms = limit_ms;
	deadline = fetch_now_ms() + timeout_ms;
	if (helper[0] == '\0' || strchr(helper, '/') ||
	    (size_t)snprintf(prog, sizeof(prog), HELPER_PREFIX "%s", helper) >= sizeof(prog))
		return strata_err(EINVAL, "invalid credential helper name in the docker config");
	buf = malloc(HELPER_OUT_MAX + 1);
	if (!buf)
		return -ENOMEM;
	/* a socket for stdin: send() with MSG_NOSIGNAL cannot raise SIGPIPE if the helper exits early */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_sv) != 0 ||
	    pipe2(out_p, O_CLOEXEC) != 0) {
		rc = strata_err(errno, "%s: cannot create pipes: %s", prog, strerror(errno));
		goto out;
	}
	rc = spawn_helper(prog, in_sv[1], out_p[1], &pid);
	if (rc < 0)
		goto out;
	close(in_sv[1]);
	in_sv[1] = -1;
	close(out_p[1]);
	out_p[1] = -1;
	len = talk(in_sv[0], out_p[0], pid, server, buf, deadline, &status);
	pid = -1;
	if (len == -ETIMEDOUT || status == -ETIMEDOUT) {
		rc = strata_err(ETIMEDOUT, "credential helper %s did not finish within %ld ms",
				prog, timeout_ms);
		goto out;
	}
	if (len < 0) {
		rc = strata_err(EIO, "credential helper %s: cannot read its output: %s", prog,
				strerror((int)-len));
		goto out;
	}
	buf[len] = '\0';
	rc = read_answer(prog, server, status, buf, len, out);
out:
	if (pid > 0)
		reap(pid, 0, 1);
	for (int i = 0; i < 2; i++) {
		if (in_sv[i] >= 0)
			close(in_sv[i]);
		if (out_p[i] >= 0)
			close(out_p[i]);
	}
	explicit_bzero(buf, HELPER_OUT_MAX + 1);
	free(buf);
	if (rc < 0)
		fetch_creds_clear(out);
	return rc;
}

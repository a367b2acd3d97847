/* SPDX-License-Identifier: Apache-2.0 */
/* Socket helpers: unix sockets in a directory, a stoppable accept loop, whole reads and writes. */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Fills addr for <dir>/<name>. Paths too long for sun_path go through /proc/self/fd. */
static int sock_addr(const char *dir, const char *name, struct sockaddr_un *addr, int *dirfd)
{
	*dirfd = -1;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(dir) + strlen(name) + 2 < sizeof(addr->sun_path)) {
		snprintf(addr->sun_path, sizeof(addr->sun_path), "%s/%s", dir, name);
		return 0;
	}
	*dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*dirfd < 0)
		return -errno;
	snprintf(addr->sun_path, sizeof(addr->sun_path), "/proc/self/fd/%d/%s", *dirfd, name);
	return 0;
}

int util_sock_connect(const char *dir, const char *name)
{
	struct sockaddr_un addr;
	int dirfd, fd, rc, e;

	rc = sock_addr(dir, name, &addr, &dirfd);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		e = errno;
		close(fd);
		fd = -1;
		errno = e;
	}
	e = errno;
	if (dirfd >= 0)
		close(dirfd);
	errno = e;
	return fd;
}

int util_sock_listen(const char *dir, const char *name, const char *dir_what, const char *what)
{
	struct sockaddr_un addr;
	int dirfd, fd, rc;

	rc = sock_addr(dir, name, &addr, &dirfd);
	if (rc < 0)
		return strata_err(-rc, "cannot open %s %s: %s", dir_what, dir, strerror(-rc));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = strata_err(errno, "socket: %s", strerror(errno));
		goto out;
	}
	unlink(addr.sun_path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    chmod(addr.sun_path, 0600) < 0 || listen(fd, 64) < 0) {
		rc = strata_err(errno, "%s %s/%s: %s", what, dir, name, strerror(errno));
		close(fd);
		goto out;
	}
	rc = fd;
out:
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}

void util_sock_unlink(const char *dir, const char *name)
{
	struct sockaddr_un addr;
	int dirfd;

	if (sock_addr(dir, name, &addr, &dirfd) == 0)
		unlink(addr.sun_path);
	if (dirfd >= 0)
		close(dirfd);
}

int util_sock_accept(int lfd, int stop_fd, const char *what)
{
	struct pollfd pfd[2] = { { lfd, POLLIN, 0 }, { stop_fd, POLLIN, 0 } };

	for (;;) {
		int fd;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			strata_log(LOG_ERR, "%s: poll: %s", what, strerror(errno));
			return -1;
		}
		if (pfd[1].revents)
			return -1;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
	}
}

int util_sock_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int util_sock_read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

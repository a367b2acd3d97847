/* SPDX-License-Identifier: Apache-2.0 */
/* Socket helpers: unix sockets in a directory, a stoppable accept loop, whole reads and writes. */
#ifndef STRATA_UTIL_SOCK_H
#define STRATA_UTIL_SOCK_H

#include <stddef.h>

/*
 * Connects to the unix stream socket <dir>/<name> (paths too long for sun_path go through
 * /proc/self/fd). Returns a connected close-on-exec fd, or -1 with errno. Thread-safe.
 */
int util_sock_connect(const char *dir, const char *name);

/*
 * Binds <dir>/<name> (replacing any file there: the caller knows it is stale), makes it mode 0600
 * and listens (backlog 64). Returns the close-on-exec listening fd, or negative errno with
 * strata_err set: "cannot open <dir_what> <dir>: ..." when the directory cannot be opened (long
 * paths), "socket: ...", or "<what> <dir>/<name>: ..." when bind, chmod or listen fails.
 */
int util_sock_listen(const char *dir, const char *name, const char *dir_what, const char *what);

/* Removes the socket file <dir>/<name> (errors ignored). */
void util_sock_unlink(const char *dir, const char *name);

/* Accepts the next connection on the listening socket lfd (close-on-exec) unless stop_fd becomes
 * readable first. Returns the connection's fd, or -1 when stopped (or poll failed: logged with
 * what, e.g. "control socket"). */
int util_sock_accept(int lfd, int stop_fd, const char *what);

/* Writes all of buf to a socket (no SIGPIPE; retries on EINTR). Returns 0, or -1 with errno (or
 * errno untouched when the peer took nothing). */
int util_sock_write_all(int fd, const void *buf, size_t len);

/* Reads exactly len bytes (retries on EINTR). Returns 0, or -1 on an error or end of file. */
int util_sock_read_all(int fd, void *buf, size_t len);

#endif

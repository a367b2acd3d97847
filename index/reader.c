/* SPDX-License-Identifier: Apache-2.0 */
/* File-descriptor readers and the read-fully helper. */
#include "reader.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

static ssize_t fd_read(void *ctx, void *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	ssize_t n;

	do {
		n = read(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return strata_err(errno, "read: %s", strerror(errno));
	return n;
}

struct index_reader index_reader_fd(int fd)
{
	struct index_reader r = { fd_read, (void *)(intptr_t)fd };

	return r;
}

ssize_t index_reader_full(struct index_reader r, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = r.read(r.ctx, (char *)buf + got, len - got);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

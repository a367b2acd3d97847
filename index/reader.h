/* SPDX-License-Identifier: Apache-2.0 */
/* A pull-style byte source: the one interface every stage of layer decoding reads from. */
#ifndef STRATA_INDEX_READER_H
#define STRATA_INDEX_READER_H

#include <stddef.h>
#include <sys/types.h>

/*
 * read() fills up to len bytes of buf. Returns the number of bytes read (short reads are allowed),
 * 0 at the end of the stream, or a negative errno (with strata_err set) on error.
 * ctx is borrowed; the reader never frees it.
 */
struct index_reader {
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	void *ctx;
};

/* A reader over a file descriptor (ctx is the fd cast through intptr_t). */
struct index_reader index_reader_fd(int fd);

/* Reads exactly len bytes. Returns len, a smaller count only at end of stream, or negative errno. */
ssize_t index_reader_full(struct index_reader r, void *buf, size_t len);

#endif

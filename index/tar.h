/* SPDX-License-Identifier: Apache-2.0 */
/* A streaming tar reader: ustar, GNU (long names, base-256 numbers, sparse files) and PAX (incl.
 * xattrs and GNU sparse files). */
#ifndef STRATA_INDEX_TAR_H
#define STRATA_INDEX_TAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "reader.h"

/* PAX and GNU long-name data one member may carry (all its extension headers together). */
#define INDEX_TAR_MAX_EXT (1u << 20)

/* A GNU sparse member's map may hold this many entries (each 16 bytes while it is read). */
#define INDEX_TAR_MAX_SPARSE (1u << 18)
/* The largest real size of a sparse file (1 PiB): its holes cost nothing, but offsets stay far
 * from overflow. */
#define INDEX_TAR_MAX_SPARSE_SIZE (1ull << 50)

enum index_tar_type {
	INDEX_TAR_REG,
	INDEX_TAR_HARDLINK,
	INDEX_TAR_SYMLINK,
	INDEX_TAR_CHAR,
	INDEX_TAR_BLOCK,
	INDEX_TAR_DIR,
	INDEX_TAR_FIFO,
};

struct index_tar_xattr {
	char *name;	/* NUL-terminated, e.g. "user.foo", "security.capability" */
	uint8_t *value; /* raw bytes (may contain NUL) */
	size_t len;
};

/* Data of a sparse file: bytes [offset, offset + len) of the file. */
struct index_tar_extent {
	uint64_t offset, len;
};

/* One archive member. All pointers are owned by the reader and valid until the next index_tar_next(). */
struct index_tar_entry {
	/* Cleaned path relative to the root: no leading "/" or "./", no trailing "/", no "." or empty
	 * components, ".." resolved lexically and clamped at the root. The root itself is "". */
	char *path;
	/* Symlink target as stored (not cleaned), or hard-link target cleaned like path. NULL otherwise. */
	char *linkname;
	enum index_tar_type type;
	uint32_t mode; /* permission bits only: mode & 07777 */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec; /* from PAX mtime fractions, else 0 */
	uint64_t size;	     /* content size (0 for everything but regular files) */
	/* A GNU sparse file (any of the formats GNU tar and libarchive write: old GNU 'S' headers,
	 * PAX 0.0, 0.1 and 1.0): size is its real size, its data lies in the nextents extents
	 * (sorted, non-empty, not touching each other, inside size), the rest are holes, and
	 * index_tar_read returns the extents' bytes one after another (data_size bytes). For any
	 * other member sparse is false, extents NULL, nextents 0 and data_size == size. */
	bool sparse;
	const struct index_tar_extent *extents;
	size_t nextents;
	uint64_t data_size;
	uint32_t devmajor, devminor;
	struct index_tar_xattr *xattrs;
	size_t nxattrs;
	uint64_t header_offset; /* offset of the first header block of this member (incl. PAX/GNU headers) */
	uint64_t data_offset; /* offset of the content in the uncompressed tar stream */
};

struct index_tar;

/* Creates a reader over src (borrowed). Returns 0 and *out, or -ENOMEM. */
int index_tar_open(struct index_reader src, struct index_tar **out);

/*
 * Advances to the next member, skipping any unread content of the current one.
 * Returns 1 and *e (borrowed, see above), 0 at the end of the archive (two zero blocks, or a clean
 * EOF at a header boundary), or a negative errno with strata_err set:
 * -EINVAL "not a tar archive: bad header checksum at offset N" (also for the very first block),
 * -EPIPE "truncated tar archive at offset N", -ENOTSUP for unsupported members (an unknown type,
 * a sparse format other than GNU's), -EINVAL "sparse file P at offset N: ..." for a sparse map
 * that is malformed or does not fit the member, -EFBIG for one past INDEX_TAR_MAX_SPARSE entries
 * or INDEX_TAR_MAX_SPARSE_SIZE bytes, or the source's error.
 */
int index_tar_next(struct index_tar *t, const struct index_tar_entry **e);

/* Reads content of the current member. Returns bytes read, 0 at its end, or negative errno. */
ssize_t index_tar_read(struct index_tar *t, void *buf, size_t len);

/* Offset in the uncompressed stream just past what has been consumed so far. */
uint64_t index_tar_offset(const struct index_tar *t);

/* Frees t (NULL ok). */
void index_tar_free(struct index_tar *t);

#endif

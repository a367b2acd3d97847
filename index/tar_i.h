/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: the metadata PAX and GNU extension headers carry for the next tar member. */
#ifndef STRATA_INDEX_TAR_I_H
#define STRATA_INDEX_TAR_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tar.h"

/* Metadata collected from PAX 'x' and GNU 'L'/'K' headers for the next member. */
struct index_tar_ext {
	bool any;	       /* at least one extension header is pending */
	uint64_t bytes;	       /* extension data read for this member (bounded by MAX_EXT_SIZE) */
	char *path, *linkpath; /* PAX path, linkpath */
	char *gnu_name, *gnu_link; /* GNU 'L', 'K' */
	bool has_size, has_uid, has_gid, has_mtime, has_devmajor, has_devminor;
	uint64_t size;
	uint32_t uid, gid, devmajor, devminor;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	bool sparse; /* GNU.sparse.* seen */
	struct index_tar_xattr *xattrs;
	size_t nxattrs, cap;
};

/*
 * Parses the PAX records "<len> <key>=<value>\n" of one extended header (data[0..size), borrowed;
 * NUL padding after the last record is allowed) into x, later records replacing earlier values.
 * hdr_off (the header's stream offset) is for the message. Returns 0, or -EINVAL "invalid pax
 * header at offset N" or -ENOMEM with strata_err set; x may then hold part of the records (they
 * are freed with the rest of the pending metadata).
 */
int index_tar_pax_parse(struct index_tar_ext *x, const char *data, size_t size, uint64_t hdr_off);

/*
 * Merges x's xattrs of the same name (libarchive writes both SCHILY and LIBARCHIVE forms): the
 * last value wins, at the first one's place. O(n log n). Returns 0 or -ENOMEM (x unchanged).
 */
int index_tar_xattrs_dedup(struct index_tar_ext *x);

/* A NUL-terminated copy of the first len bytes (or up to the first NUL). NULL on ENOMEM. */
static inline char *index_tar_dup_field(const void *f, size_t len)
{
	return strndup(f, len);
}

#endif

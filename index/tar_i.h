/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: the tar reader's state and header layout (tar.c), the metadata PAX and GNU
 * extension headers carry for the next member (tar_pax.c), GNU sparse maps (tar_sparse.c). */
#ifndef STRATA_INDEX_TAR_I_H
#define STRATA_INDEX_TAR_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "tar.h"

/* A GNU sparse map being collected for one member (tar_sparse.c). */
struct index_tar_sparse {
	bool any; /* a GNU.sparse.* record was seen */
	bool has_major, has_minor, has_realsize, has_numblocks;
	uint64_t major, minor, realsize, numblocks;
	bool half;	   /* PAX 0.0: a GNU.sparse.offset waits for its GNU.sparse.numbytes */
	uint64_t half_off; /* ... at this offset */
	char *name;	   /* GNU.sparse.name: the member's real path (0.1, 1.0) */
	struct index_tar_extent *map; /* entries as read (zero-length ones included) */
	size_t n, cap;
};

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
	struct index_tar_sparse sp;
	struct index_tar_xattr *xattrs;
	size_t nxattrs, cap;
};

/*
 * Parses the PAX records "<len> <key>=<value>\n" of one extended header (data[0..size), borrowed;
 * NUL padding after the last record is allowed) into x, later records replacing earlier values.
 * hdr_off (the header's stream offset) is for the message. Returns 0, or -EINVAL "invalid pax
 * header at offset N", -EFBIG for a sparse map past INDEX_TAR_MAX_SPARSE entries, or -ENOMEM, with
 * strata_err set; x may then hold part of the records (they are freed with the rest of the pending
 * metadata).
 */
int index_tar_pax_parse(struct index_tar_ext *x, const char *data, size_t size, uint64_t hdr_off);

/*
 * Merges x's xattrs of the same name (libarchive writes both SCHILY and LIBARCHIVE forms): the
 * last value wins, at the first one's place. O(n log n). Returns 0 or -ENOMEM (x unchanged).
 */
int index_tar_xattrs_dedup(struct index_tar_ext *x);

/* ---- the reader (tar.c) ---- */

#define BLOCK 512

/* ustar header field offsets and sizes */
#define H_NAME		  0
#define H_NAME_LEN	  100
#define H_MODE		  100
#define H_UID		  108
#define H_GID		  116
#define H_SIZE		  124
#define H_MTIME		  136
#define H_CHKSUM	  148
#define H_TYPE		  156
#define H_LINK		  157
#define H_LINK_LEN	  100
#define H_MAGIC		  257
#define H_DEVMAJOR	  329
#define H_DEVMINOR	  337
#define H_PREFIX	  345
#define H_PREFIX_LEN	  155
#define H_STAR_PREFIX_LEN 131
#define H_STAR_MAGIC	  508

/* The reader (tar.h); tar_sparse.c reads sparse members through it. */
struct index_tar {
	struct index_reader src; /* borrowed */
	uint8_t *buf;		 /* read buffer; unconsumed bytes are buf[pos, len) */
	size_t pos, len;
	uint64_t off;	 /* stream offset of buf[pos] */
	bool done;	 /* end of archive reached */
	int err;	 /* sticky negative errno after a fatal error, else 0 */
	uint64_t remain; /* readable content left in the current member */
	uint64_t skip;	 /* bytes after the readable content: unreadable content + padding */
	bool have_entry;
	struct index_tar_entry ent; /* owns path, linkname, xattrs */
	struct index_tar_ext ext;
};

/* Zero bytes after a member of size bytes, up to its 512-byte boundary. */
static inline uint64_t index_tar_padding(uint64_t size)
{
	return (BLOCK - size % BLOCK) % BLOCK;
}

/* -EPIPE "truncated tar archive at offset N" (strata_err set). */
int index_tar_truncated(struct index_tar *t);

/* Reads len bytes of the stream (dst NULL: skips them). Returns the count (less than len only at
 * the end of the stream) or the source's negative errno. */
ssize_t index_tar_get_full(struct index_tar *t, void *dst, size_t len);

/* Parses a numeric header field whose value must lie in [0, max]. Returns 0 and *v, or -1. */
int index_tar_parse_unum(const uint8_t *f, size_t len, uint64_t max, uint64_t *v);

/* -EINVAL "invalid tar header at offset N: bad WHAT field" (strata_err set). */
int index_tar_bad_field(uint64_t hdr_off, const char *what);

/* ---- GNU sparse maps (tar_sparse.c) ---- */

/*
 * Finishes t->ent as a GNU sparse file (old GNU 'S' header b, or the pending PAX 0.0, 0.1, 1.0
 * records), reading what precedes its data (extension blocks, a 1.0 map) and setting what is left
 * to read and skip. gnu: b has the GNU magic. Returns 1 (the entry is current), -ENOTSUP for
 * another sparse format version (the member is skipped; the stream goes on), or a negative errno
 * with strata_err set (fatal for the stream).
 */
int index_tar_sparse_member(struct index_tar *t, const uint8_t *b, uint64_t hdr_off, bool gnu);

/* Frees s's map and name and clears it. */
void index_tar_sparse_reset(struct index_tar_sparse *s);

/* Appends the map entry (off, len). Returns 0, -EFBIG with strata_err set past
 * INDEX_TAR_MAX_SPARSE entries, or -ENOMEM. */
int index_tar_sparse_add(struct index_tar_sparse *s, uint64_t off, uint64_t len);

/*
 * Applies the PAX record GNU.sparse.<key>=<val> (key is what follows "GNU.sparse."): major, minor,
 * name, realsize, size (0.x's real size), numblocks, offset and numbytes (0.0, repeated in pairs),
 * map (0.1: "off,len,off,len..."). Unknown keys are ignored. Returns 0, -1 for a malformed value,
 * -EFBIG (strata_err set) for a map past INDEX_TAR_MAX_SPARSE entries, or -ENOMEM.
 */
int index_tar_sparse_pax(struct index_tar_sparse *s, const char *key, size_t klen, const char *val,
			 size_t vlen);

/*
 * Adds n old GNU map entries (24 bytes each: offset[12], numbytes[12], octal or base-256) from p
 * (borrowed). An entry whose numbytes field starts with NUL ends the map: *ended is set, and a
 * later non-empty entry is an error. Returns 0, -1 for a bad number or an entry after the end,
 * -EFBIG or -ENOMEM as index_tar_sparse_add.
 */
int index_tar_sparse_oldgnu(struct index_tar_sparse *s, const uint8_t *p, size_t n, bool *ended);

/* The PAX 1.0 map at the start of a member's data, being read ("<count>\n" then "<offset>\n<len>\n"
 * count times, padded to a 512-byte block). Zero-initialize. */
struct index_tar_sparse_v1 {
	bool have_count;
	uint64_t count, numbers; /* entries announced; numbers read after the count */
	uint64_t cur, pend_off;
	unsigned digits;
};

/*
 * Feeds the next len bytes of a PAX 1.0 map to p, adding entries to s. Returns the number of bytes
 * the map used from buf once it is complete (the rest of its block is padding), 0 when it needs
 * more, -1 when malformed (not a digit, a number of more than 20 digits, or past UINT64_MAX),
 * -EFBIG (count past INDEX_TAR_MAX_SPARSE, strata_err set) or -ENOMEM. Never reads past buf.
 */
ssize_t index_tar_sparse_v1_feed(struct index_tar_sparse *s, struct index_tar_sparse_v1 *p,
				 const uint8_t *buf, size_t len);

/*
 * Checks the collected map of member path (whose headers start at hdr_off) against its real size
 * and the data_size bytes the archive holds for it, and normalizes it: entries sorted and not
 * overlapping, each inside realsize (at most INDEX_TAR_MAX_SPARSE_SIZE), their lengths adding up to
 * data_size; zero-length entries dropped and touching ones merged, in place (s->n shrinks).
 * Returns 0, or -EINVAL / -EFBIG with strata_err "sparse file P at offset N: ...".
 */
int index_tar_sparse_finish(struct index_tar_sparse *s, uint64_t realsize, uint64_t data_size,
			    const char *path, uint64_t hdr_off);

/* Parses a numeric tar header field (octal, or GNU base-256). Returns 0 and *v, or -1. */
int index_tar_parse_num(const uint8_t *f, size_t len, int64_t *v);

/* A NUL-terminated copy of the first len bytes (or up to the first NUL). NULL on ENOMEM. */
static inline char *index_tar_dup_field(const void *f, size_t len)
{
	return strndup(f, len);
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The strata layer index: a layer's file tree, per-file chunk digests, and its binary encoding. */
#ifndef STRATA_INDEX_LAYER_H
#define STRATA_INDEX_LAYER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "reader.h"

/* The index format: version 2 for layers without sparse files (what strata always wrote before), 3
 * (version 2 plus the sparse sections) only for layers with one. Both decode. */
#define INDEX_FORMAT_VERSION	    2
#define INDEX_FORMAT_VERSION_SPARSE 3
#define INDEX_DEFAULT_CHUNK_SIZE    (1u << 20)
#define INDEX_MIN_CHUNK_SIZE	    4096u
#define INDEX_MAX_CHUNK_SIZE	    (16u << 20)

/* What one layer may hold (Linux's limits where it has one). Indexing a layer beyond one fails
 * with an error naming the member and the limit; nothing else is affected. */
#define INDEX_MAX_PATH	      4095u  /* bytes of a member's path or link target (PATH_MAX - 1) */
#define INDEX_MAX_NAME	      255u   /* bytes of one path component (NAME_MAX) */
#define INDEX_MAX_XATTR_NAME  255u   /* XATTR_NAME_MAX */
#define INDEX_MAX_XATTR_VALUE 65536u /* XATTR_SIZE_MAX */
#define INDEX_MAX_XATTR_LIST  65536u /* an entry's xattr names, each with its NUL (XATTR_LIST_MAX) */
#define INDEX_MAX_ENTRIES     400000u	     /* members, hard links and implicit directories */
#define INDEX_MAX_PATH_BYTES  (32u << 20)    /* the lengths of every path added to the tree */
#define INDEX_MAX_XATTR_BYTES (16u << 20)    /* xattr names and values, 32 bytes more for each */
#define INDEX_MAX_DECODED     (128ull << 20) /* bytes of a decoded index */
#define INDEX_MAX_EXTENTS     (1u << 20)     /* data extents of the layer's sparse files */

/* Inode flags. */
#define INDEX_INODE_IMPLICIT 1u /* a directory the tar never named; made for its children */
#define INDEX_INODE_SPARSE   2u /* a regular file with holes: see index_layer_file_extents */

/* One inode of a layer. Inode 0 is the layer root. A plain record, read in place. */
struct index_inode {
	uint32_t mode; /* full st_mode: S_IFMT | 07777 */
	uint32_t uid, gid;
	uint32_t nlink;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t flags; /* INDEX_INODE_* */
	uint64_t size;	/* regular: content bytes; symlink: target length; dir: 0 */
	uint64_t rdev;	/* makedev(major, minor) for devices; 0:0 for a whiteout */
	uint32_t first; /* dir: first dirent; regular: first chunk; symlink: string offset */
	uint32_t count; /* dir: dirents; regular: chunks */
	uint32_t xattr_first, nxattrs;
};

/* A directory entry; a directory's entries are contiguous and sorted by name (memcmp order). */
struct index_dirent {
	uint32_t name_off, name_len;
	uint32_t ino;
	uint32_t pad;
};

/* One chunk of a regular file: its bytes from i * chunk_size on. */
struct index_chunk {
	uint8_t digest[32]; /* sha256 of the uncompressed bytes */
	uint64_t offset;    /* where those bytes start in the uncompressed tar stream */
	uint32_t size;
	uint32_t pad;
};

/* Data of a sparse file: file bytes [offset, offset + len) are its chunks' bytes from data_off on. */
struct index_extent {
	uint64_t offset;
	uint64_t len;
	uint64_t data_off;
};

struct index_xattr {
	uint32_t name_off, name_len;
	uint32_t value_off, value_len;
};

/* How the layer blob is stored, which decides how a byte range of the tar is fetched. */
enum index_blob {
	INDEX_BLOB_UNKNOWN = 0, /* no random access information */
	INDEX_BLOB_TAR = 1,	/* uncompressed: tar offset == blob offset */
	INDEX_BLOB_GZIP = 2,	/* gzip: zran checkpoints (member starts and deflate blocks) */
	INDEX_BLOB_ZSTD = 3,	/* zstd: checkpoints at frame starts */
};

/* Checkpoint kinds (the first two match enum index_zran_kind). */
#define INDEX_CP_GZIP_MEMBER 0
#define INDEX_CP_GZIP_BLOCK  1
#define INDEX_CP_ZSTD_FRAME  2

/* A place to start decoding the blob: uncompressed offset uoff is produced by decoding from
 * compressed offset coff (minus one byte when bits > 0) with the window whose sha256 is window. */
struct index_checkpoint {
	uint64_t uoff;
	uint64_t coff;
	uint8_t bits;
	uint8_t kind; /* INDEX_CP_* */
	uint16_t pad;
	uint32_t wlen;	    /* window bytes (0: none needed) */
	uint8_t window[32]; /* sha256 of the window; windows are stored as chunks */
	uint64_t woff; /* offset of the window in an index artifact's windows blob, or UINT64_MAX */
	uint32_t wclen; /* stored length there */
	uint32_t pad2;
};

/* What a read must fetch: bytes [cstart, cend) of the blob, decoded from checkpoint cp
 * (UINT32_MAX for an uncompressed blob), produce the tar from offset ustart on. */
struct index_span {
	uint32_t cp;
	uint64_t cstart, cend;
	uint64_t ustart;
	uint64_t uend; /* tar bytes up to here can be decoded from [cstart, cend) */
};

struct index_layer;

/* Called for every chunk as it is cut, before the index is complete. Returns 0 or negative errno
 * (which aborts the build). data is borrowed for the call. */
typedef int (*index_chunk_fn)(void *ctx, const uint8_t digest[32], const void *data, size_t len);

/*
 * Builds the index of the uncompressed tar stream src (borrowed): reads every member, applies tar
 * semantics (a later member replaces an earlier one at the same path; hard links share the inode of
 * their target at that moment; parents without entries are made implicit 0755 root-owned dirs),
 * turns ".wh.NAME" into a whiteout char device 0:0 called NAME and ".wh..wh..opq" into the xattr
 * trusted.overlay.opaque=y on its directory, and cuts regular files into chunk_size chunks aligned
 * to the file start, calling chunk_fn for each (may be NULL). Drains src to its end so diff_id (the
 * sha256 of the whole uncompressed stream) is exact.
 * Returns 0 and *out (free with index_layer_free), or negative errno with strata_err set (the tar
 * reader's errors, -EINVAL for a hard link to a missing target, chunk_fn's error, -ENOMEM).
 */
int index_layer_build(struct index_reader src, uint32_t chunk_size, index_chunk_fn chunk_fn,
		      void *ctx, struct index_layer **out);

/* Called for every checkpoint window as the blob is indexed (wlen bytes, sha256 digest). */
typedef int (*index_window_fn)(void *ctx, const uint8_t digest[32], const void *data, size_t len);

struct index_build_opts {
	uint32_t chunk_size;	   /* 0 = INDEX_DEFAULT_CHUNK_SIZE */
	enum index_blob blob;	   /* how src is compressed (TAR, GZIP or ZSTD) */
	uint64_t span;		   /* gzip checkpoint spacing in compressed bytes; 0 = 1 MiB */
	index_chunk_fn chunk_fn;   /* may be NULL: build the index only */
	index_window_fn window_fn; /* may be NULL */
	void *ctx;		   /* passed to both callbacks */
};

/*
 * Builds the index of a layer blob read from src (compressed as o->blob says), with random-access
 * checkpoints, as index_layer_build does for a tar stream. The index records the blob's size and
 * kind. Returns 0 and *out, or negative errno with strata_err set.
 */
int index_layer_build_blob(struct index_reader src, const struct index_build_opts *o,
			   struct index_layer **out);

/* Records where checkpoint cp's window lives in an index artifact's windows blob. Not thread-safe
 * against readers of the same index (use it on a private copy before encoding). */
void index_layer_set_window_location(struct index_layer *l, uint32_t cp, uint64_t woff,
				     uint32_t wclen);

/* Encodes the index (zstd-compressed). Returns 0 with a malloc'd buffer in *buf and its size in *len, or -ENOMEM. */
int index_layer_encode(const struct index_layer *l, void **buf, size_t *len);

/*
 * Decodes an encoded index and validates every offset and count in it (the bytes may come from a
 * disk or a registry): sections in range, sizes that add up, each file's chunks inside the tar
 * stream in increasing order, checkpoints in increasing order. Memory grows with the bytes that
 * really decode, up to INDEX_MAX_DECODED. Returns 0 and *out, -EBADMSG "corrupt layer index:
 * <what>", or -EPROTO for an unknown format version (message names both versions), or -ENOMEM.
 */
int index_layer_decode(const void *buf, size_t len, struct index_layer **out);

void index_layer_free(struct index_layer *l);

/* Accessors. Returned pointers live as long as l. ino/index arguments must be in range (asserted). */
/* Bytes of memory the decoded index holds (what index_layer_free releases). */
size_t index_layer_mem_size(const struct index_layer *l);
uint32_t index_layer_ninodes(const struct index_layer *l);
const struct index_inode *index_layer_inode(const struct index_layer *l, uint32_t ino);
const struct index_dirent *index_layer_dirent(const struct index_layer *l, uint32_t i);
const struct index_chunk *index_layer_chunk(const struct index_layer *l, uint32_t i);
const struct index_xattr *index_layer_xattr(const struct index_layer *l, uint32_t i);
uint32_t index_layer_nchunks(const struct index_layer *l);
/* Bytes at a string-table offset (not NUL-terminated; use the recorded length). */
const char *index_layer_str(const struct index_layer *l, uint32_t off);
uint32_t index_layer_chunk_size(const struct index_layer *l);
/* sha256 of the uncompressed tar stream, and its length. */
const uint8_t *index_layer_diff_id(const struct index_layer *l);
uint64_t index_layer_tar_size(const struct index_layer *l);
/* Sum of regular file data (each inode once): their sizes, without the holes of sparse files. */
uint64_t index_layer_content_size(const struct index_layer *l);

/*
 * The data of regular file in (an inode of l): returns the bytes its chunks hold, cut as usual from
 * the file's chunk 0 on. For a sparse file (INDEX_INODE_SPARSE) those are the bytes of its extents
 * *ext[0..*n) (sorted, not touching, non-empty, inside in->size) one after another, and the rest
 * of the file reads as zeros; for any other file *ext is NULL, *n is 0 and the data is its size.
 * Pointers live as long as l.
 */
uint64_t index_layer_file_extents(const struct index_layer *l, const struct index_inode *in,
				  const struct index_extent **ext, uint32_t *n);

/* The first of the n sorted extents ext that ends after file offset off (n when none). */
uint32_t index_layer_extent_find(const struct index_extent *ext, uint32_t n, uint64_t off);

enum index_blob index_layer_blob_kind(const struct index_layer *l);
uint64_t index_layer_blob_size(const struct index_layer *l);
uint32_t index_layer_ncheckpoints(const struct index_layer *l);
const struct index_checkpoint *index_layer_checkpoint(const struct index_layer *l, uint32_t i);

/* The k-th chunk in tar-offset order (k < nchunks), for finding every chunk a span holds. */
uint32_t index_layer_chunk_by_offset(const struct index_layer *l, uint32_t k);
/* The smallest k whose chunk starts at or after uoff (nchunks when none). */
uint32_t index_layer_chunk_rank(const struct index_layer *l, uint64_t uoff);

/*
 * Plans the fetch of tar bytes [uoff, uend): which compressed range to request and where decoding
 * starts. Returns 0, -ENOTSUP when the index has no random-access information, or -EINVAL with
 * strata_err set for an empty or reversed range.
 */
int index_layer_span(const struct index_layer *l, uint64_t uoff, uint64_t uend,
		     struct index_span *s);

/*
 * Decodes tar bytes [uoff, uoff + len) from comp, the blob bytes [s->cstart, s->cstart + clen) of a
 * span planned by index_layer_span. window is the span checkpoint's window (NULL when wlen is 0).
 * Returns 0, -EPIPE when comp is too short, -EBADMSG for corrupt data, -EINVAL for a uoff before
 * the span, -ENOMEM. Thread-safe.
 */
int index_layer_extract(const struct index_layer *l, const struct index_span *s,
			const uint8_t *window, const uint8_t *comp, size_t clen, uint64_t uoff,
			void *out, size_t len);

struct index_span_dec;

/*
 * A decoder of span s (planned by index_layer_span) fed the span's compressed bytes as they arrive,
 * so that a span is never held whole however long it is. window is the span checkpoint's window
 * (NULL when wlen is 0), borrowed for this call only. Returns 0 and *out (free with
 * index_span_dec_free), -EINVAL for an invalid checkpoint, -ENOMEM; strata_err set.
 */
int index_span_dec_new(const struct index_layer *l, const struct index_span *s,
		       const uint8_t *window, struct index_span_dec **out);

/*
 * Decodes the span's next compressed bytes: consumes from *in (advancing *in, lowering *in_len) and
 * writes the next tar bytes (from s->ustart on) to out, at most cap, their count in *made. Returns 0
 * when the input ran out (*in_len == 0: call again with more, or with none to collect output that
 * did not fit) or out is full (*made == cap); 1 when the compressed data ended before the input
 * did (gzip: zero padding follows the last member); -EBADMSG for corrupt data; -ENOMEM; strata_err
 * set. Its memory is bounded by the format (zlib's state; a zstd frame's window, at most zstd's
 * default limit of 128 MiB), not by the span.
 */
int index_span_dec_feed(struct index_span_dec *d, const uint8_t **in, size_t *in_len, uint8_t *out,
			size_t cap, size_t *made);

/* Frees d; NULL is accepted. */
void index_span_dec_free(struct index_span_dec *d);

/* Finds name in directory dir. Returns the inode number, or -ENOENT / -ENOTDIR. */
int64_t index_layer_lookup(const struct index_layer *l, uint32_t dir, const char *name, size_t len);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: the layer index builder, fed entry by entry, and the decoded index's layout. */
#ifndef STRATA_INDEX_LAYER_I_H
#define STRATA_INDEX_LAYER_I_H

#include <stddef.h>
#include <stdint.h>

#include "layer.h"
#include "tar.h"

/* ---------------------------------------------------------------- builder (layer_build.c) */

/*
 * A layer index under construction, with the same tar semantics as index_layer_build (later entries
 * replace earlier ones, hard links share inodes, implicit parents, ".wh." whiteouts and opaque
 * directories). For sources that describe a layer without its tar stream (an eStargz TOC): regular
 * file content is given as precomputed chunks. Not thread-safe.
 */
struct index_builder;

/*
 * Creates an empty builder (root only) whose files are cut in chunk_size chunks.
 * Returns 0 and *out (free with index_builder_free), -EINVAL with strata_err set for a chunk size
 * outside [INDEX_MIN_CHUNK_SIZE, INDEX_MAX_CHUNK_SIZE], or -ENOMEM.
 */
int index_builder_new(uint32_t chunk_size, struct index_builder **out);

/*
 * index_builder_new for a builder fed from a tar stream with index_builder_add_tar: it also holds
 * the buffer chunks are cut in, and calls chunk_fn(ctx, ...) (may be NULL) for every chunk as it is
 * cut. Same returns.
 */
int index_builder_new_tar(uint32_t chunk_size, index_chunk_fn chunk_fn, void *ctx,
			  struct index_builder **out);

/*
 * Adds entry e (borrowed; e->data_offset and e->header_offset are ignored). For a regular file,
 * chunks[0..nchunks) (copied) are its content: sizes adding up to e->size, every one but the last
 * exactly chunk_size, none empty; their offsets may be in any coordinate the checkpoints share.
 * Other types pass no chunks. Returns 0, or a negative errno with strata_err set: -EINVAL for chunks
 * that do not fit e or the chunk size, and add_entry's errors for tar semantics (-EINVAL hard link to
 * a missing target, non-directory root, -ENOTDIR a path below a non-directory), -EFBIG, -ENOMEM.
 * After an error the builder may only be freed.
 */
int index_builder_add(struct index_builder *ib, const struct index_tar_entry *e,
		      const struct index_chunk *chunks, size_t nchunks);

/*
 * Adds the tar reader's current member e (borrowed from t) to a builder made by
 * index_builder_new_tar: a regular file's content is read from t, cut into chunks (their offsets
 * are tar stream offsets from e->data_offset) and passed to chunk_fn. Returns 0, or a negative errno
 * with strata_err set: index_builder_add's tar semantics errors, the tar reader's errors (-EPIPE for
 * a member cut short), chunk_fn's error. After an error the builder may only be freed.
 */
int index_builder_add_tar(struct index_builder *ib, struct index_tar *t,
			  const struct index_tar_entry *e);

/*
 * Records how the blob is stored: its kind, size and random-access checkpoints (copied; uoff strictly
 * increasing from 0, as index_layer_decode checks). Replaces earlier settings. Returns 0 or -ENOMEM.
 */
int index_builder_set_blob(struct index_builder *ib, enum index_blob kind, uint64_t blob_size,
			   const struct index_checkpoint *cps, size_t ncps);

/*
 * Lays out the index: diff_id (32 bytes, borrowed) and tar_size are recorded as given. Returns 0 and
 * *out (free with index_layer_free), or a negative errno with strata_err set (-EBADMSG when the
 * result fails index validation, -EFBIG, -ENOMEM). Consumes ib in every case.
 */
int index_builder_finish(struct index_builder *ib, const uint8_t diff_id[32], uint64_t tar_size,
			 struct index_layer **out);

/* Frees a builder that was not finished (NULL ok). */
void index_builder_free(struct index_builder *ib);

/* ---------------------------------------------------------------- format (layer_codec.c) */

/*
 * The raw (uncompressed) encoding, little-endian: this header, then the sections in this order:
 * inodes, dirents, chunks, xattrs, checkpoints, sparse files, extents, the string table.
 * index_layer_encode zstd-compresses it as a whole. Version 2 has neither sparse section and a
 * header without its last two fields (INDEX_HEADER_V2_SIZE bytes).
 */
struct index_layer_header {
	char magic[8];
	uint32_t version;
	uint32_t chunk_size;
	uint32_t ninodes, ndirents, nchunks, nxattrs;
	uint64_t strtab_len;
	uint64_t tar_size;
	uint64_t content_size;
	uint8_t diff_id[32];
	uint32_t ncheckpoints;
	uint32_t blob_kind;
	uint64_t blob_size;
	/* version 3 */
	uint32_t nsparse, nextents;
};

#define INDEX_HEADER_V2_SIZE 104

/* A sparse file's record (version 3), sorted by ino: its extents are [first, first + count) of the
 * extents section, holding data_size bytes. */
struct index_sparse {
	uint32_t ino;
	uint32_t first, count;
	uint32_t pad;
	uint64_t data_size;
};

/* A decoded index: pointers into one raw buffer, read in place (layer_codec.c makes it, layer.c
 * answers queries from it). */
struct index_layer {
	void *mem;			      /* owns everything below but hdr */
	const struct index_layer_header *hdr; /* &h */
	struct index_layer_header h;	      /* a copy: a version 2 header lacks the last fields */
	const struct index_inode *inodes;
	const struct index_dirent *dirents;
	const struct index_chunk *chunks;
	const struct index_xattr *xattrs;
	const struct index_checkpoint *cps;
	const struct index_sparse *sparse;
	const struct index_extent *extents;
	const char *strtab;
	uint32_t *by_offset; /* chunk indexes in tar-offset order (own allocation) */
	size_t mem_len;	     /* bytes at mem */
};

/* The sections of an index as the builder lays them out (all borrowed), and the header values. */
struct index_layer_sections {
	uint32_t chunk_size;
	const uint8_t *diff_id; /* 32 bytes */
	uint64_t tar_size, content_size;
	enum index_blob blob_kind;
	uint64_t blob_size;
	const struct index_inode *inodes;
	size_t ninodes;
	const struct index_dirent *dirents;
	size_t ndirents;
	const struct index_chunk *chunks;
	size_t nchunks;
	const struct index_xattr *xattrs;
	size_t nxattrs;
	const struct index_checkpoint *cps;
	size_t ncps;
	const struct index_sparse *sparse; /* none: the index is written as version 2 */
	size_t nsparse;
	const struct index_extent *extents;
	size_t nextents;
	const char *strtab;
	size_t strtab_len;
};

/*
 * Encodes s into one raw buffer and decodes that as index_layer_decode does (every check included).
 * Returns 0 and *out (free with index_layer_free), -EBADMSG with strata_err set when the result fails
 * validation, or -ENOMEM. Borrows s.
 */
int index_layer_pack(const struct index_layer_sections *s, struct index_layer **out);

#endif

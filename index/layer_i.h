/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: the layer index builder, fed entry by entry by sources other than a tar stream. */
#ifndef STRATA_INDEX_LAYER_I_H
#define STRATA_INDEX_LAYER_I_H

#include <stddef.h>
#include <stdint.h>

#include "layer.h"
#include "tar.h"

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

#endif

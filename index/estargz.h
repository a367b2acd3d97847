/* SPDX-License-Identifier: Apache-2.0 */
/* A layer index straight from an eStargz blob's footer and table of contents, without the blob. */
#ifndef STRATA_INDEX_ESTARGZ_H
#define STRATA_INDEX_ESTARGZ_H

#include <stddef.h>
#include <stdint.h>

#include "layer.h"

/* eStargz footer: an empty gzip member whose Extra field holds subfield "SG" = "%016xSTARGZ". */
#define INDEX_ESTARGZ_FOOTER_SIZE 51
/* Legacy stargz footer: the same, with the Extra field "%016xSTARGZ" bare. */
#define INDEX_ESTARGZ_LEGACY_FOOTER_SIZE 47
/* The largest TOC (its gzip member, and the JSON in it) indexed: parsing holds about five times
 * the JSON's size. */
#define INDEX_ESTARGZ_MAX_TOC (32u << 20)
/* How many tail bytes index_estargz_footer wants (fewer only when the blob is smaller). */
#define INDEX_ESTARGZ_TAIL INDEX_ESTARGZ_FOOTER_SIZE

/*
 * Parses the footer of a blob of blob_size bytes. tail holds the blob's last len bytes (borrowed;
 * len >= INDEX_ESTARGZ_TAIL, or len == blob_size for a smaller blob). Tries the eStargz footer first,
 * then the legacy one. Returns 0 with the TOC member's compressed offset in *toc_off and the footer's
 * length in *footer_size (the TOC member is blob bytes [*toc_off, blob_size - *footer_size)),
 * -ENOENT when the tail is no stargz footer, -EBADMSG with strata_err set when it is one but its TOC
 * offset lies outside the blob, -EINVAL for a tail shorter than required or longer than the blob.
 * No side effects.
 */
int index_estargz_footer(const uint8_t *tail, size_t len, uint64_t blob_size, uint64_t *toc_off,
			 size_t *footer_size);

/*
 * Builds the layer index of an eStargz blob of blob_size bytes from its TOC member: toc holds blob
 * bytes [toc_off, toc_off + len) (borrowed), a gzip member holding a tar whose first entry is
 * stargz.index.json.
 *
 * The tree follows tar semantics as index_layer_build does (later entries replace earlier ones, hard
 * links share inodes, implicit parents, ".wh." whiteouts become char 0:0, ".wh..wh..opq" the
 * trusted.overlay.opaque=y xattr, symlinks 0777). The root's ".prefetch.landmark" and
 * ".no.prefetch.landmark" files, which the converter adds, are not content and are left out.
 * Mtimes come from the TOC's RFC 3339 "modtime": the converter rounds them to whole seconds, so they
 * may differ from the tar header's by up to half a second (nanoseconds are kept when a TOC has them).
 * User and group names are ignored, as the tar builder does.
 *
 * Random access: the blob kind is INDEX_BLOB_GZIP and every checkpoint is an INDEX_CP_GZIP_MEMBER at a
 * gzip member start: the blob's first byte, every data member (the TOC's "offset"), and the TOC
 * member itself. The real tar offsets are not in the TOC, so chunk offsets, checkpoint uoffs and
 * index_layer_tar_size() live in a virtual uncompressed coordinate: members get consecutive ranges
 * in compressed order, each as long as the end of the last chunk it holds (at least 1), and a chunk
 * sits at its member's uoff + its "innerOffset". So index_layer_extract from a chunk's checkpoint
 * skips exactly innerOffset bytes of its member, and index_layer_span ends a chunk's fetch one byte
 * into the next member (the next data member, or the TOC), never past it. Decoding stays inside one
 * member for any range within a checkpoint's virtual range; ranges that cross a member boundary do
 * not map to real bytes (the virtual gap skips the tar headers between members). The diff_id is
 * unknown and left all zero (the image config has it; nothing here can verify it).
 *
 * Chunks take their digests from "chunkDigest" (sha256 of the uncompressed chunk bytes), or from a
 * single-chunk file's "digest" when chunkDigest is absent (legacy stargz). The index chunk size is the
 * TOC's chunk size when files are split, else the largest chunk (at least INDEX_MIN_CHUNK_SIZE).
 *
 * Returns 0 and *out (free with index_layer_free), or a negative errno with strata_err set: -EBADMSG
 * for a malformed TOC (bad gzip, tar or JSON, a missing or bad field, chunks that do not add up to
 * their file, a chunk outside the blob's data, a file's chunks out of compressed order, two chunks
 * overlapping in one gzip member, a hard link to a missing target), -ENOTSUP "irregular
 * eStargz chunking" when files are split at different sizes (or a chunk exceeds
 * INDEX_MAX_CHUNK_SIZE), -ENOTSUP for a TOC without chunk digests, -ENOMEM. Thread-safe.
 */
int index_estargz_build(const uint8_t *toc, size_t len, uint64_t toc_off, uint64_t blob_size,
			struct index_layer **out);

/*
 * index_estargz_build, trusting the TOC only when the sha256 of its stargz.index.json bytes (the
 * JSON as stored in the TOC member's tar, which is what ctr-remote / stargz-snapshotter put in the
 * layer descriptor's "containerd.io/snapshot/stargz/toc.digest" annotation) equals toc_digest
 * ("sha256:<hex>"): else -EBADMSG "eStargz TOC digest mismatch: ...", before anything else in the
 * JSON is looked at. toc_digest NULL: no check (index_estargz_build). -EINVAL for a toc_digest that
 * is no sha256 digest.
 */
int index_estargz_build_verified(const uint8_t *toc, size_t len, uint64_t toc_off,
				 uint64_t blob_size, const char *toc_digest,
				 struct index_layer **out);

#endif

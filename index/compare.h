/* SPDX-License-Identifier: Apache-2.0 */
/* Comparing two layer indexes by what a mount of each would show. */
#ifndef STRATA_INDEX_COMPARE_H
#define STRATA_INDEX_COMPARE_H

#include <stddef.h>

struct index_layer;

enum index_cmp_mode {
	INDEX_CMP_EXACT = 0, /* two indexes of the same tar stream, as strata builds them */
	INDEX_CMP_TOC = 1,   /* a is an eStargz TOC's index, b the tar's: see index_layer_compare */
};

/*
 * Compares what a mount of a and of b shows: the tree (every directory's entry names, and which
 * entries are one inode: hard links), and per inode its type and mode, owner, nlink, mtime, size,
 * device numbers, xattrs (as a set), symlink target and, for a regular file, its list of chunk
 * digests and sizes. Not compared: chunk offsets, checkpoints, inode numbering, the header (the
 * caller compares diff_ids). With INDEX_CMP_TOC, a was made from an eStargz TOC: mtimes may
 * differ by less than a second (the converter rounds them) and the entries ".prefetch.landmark"
 * and ".no.prefetch.landmark" of b's root (the converter adds them; the TOC index leaves them out)
 * are skipped. Iterative (no recursion on input); time and memory about linear in the sizes. Both
 * indexes are borrowed. Returns 1 when equal, 0 when not (why, whycap bytes, names the first
 * difference: "<path>: <what>"), or -ENOMEM. Thread-safe.
 */
int index_layer_compare(const struct index_layer *a, const struct index_layer *b,
			enum index_cmp_mode mode, char *why, size_t whycap);

#endif

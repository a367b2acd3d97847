/* SPDX-License-Identifier: Apache-2.0 */
/* An image's layers merged into one tree (whiteouts and opaque directories applied), for the
 * MNT/images/<ref>/rootfs view (rootfs.c). */
#ifndef STRATA_FS_MERGE_I_H
#define STRATA_FS_MERGE_I_H

#include <stddef.h>
#include <stdint.h>

struct index_layer;

/* What one merged tree may hold: nodes (every entry of every layer at most, replaced ones too)
 * and bytes of names. Building beyond either fails with -EFBIG. */
#define FS_MERGE_MAX_NODES	(4u << 20)
#define FS_MERGE_MAX_NAME_BYTES (64u << 20)
#define FS_MERGE_MAX_LAYERS	1024u

/* A child of a merged directory; a directory's children are sorted as the layer index sorts
 * names (memcmp, a prefix first). */
struct fs_mkid {
	uint32_t name_off, name_len; /* in fs_merged.names */
	uint32_t node;
};

/* One merged node. Node 0 is the root. */
struct fs_mnode {
	uint64_t src;	/* the layer inode it shows: (layer seq << 32) | index inode; 0: none
			   (a root no layer named) */
	uint32_t mode;	/* S_IFMT of src (S_IFDIR for the root) */
	uint32_t nlink; /* in the merged tree: names of a non-directory, 2 + subdirectories */
	uint32_t nkids; /* directories: children */
	struct fs_mkid *kids;
};

struct fs_merged {
	struct fs_mnode *nodes;
	uint32_t nnodes, capnodes;
	char *names;
	size_t names_len, names_cap;
};

/*
 * Merges layers[0..n) (bottom first; borrowed for the call), whose store seqs are seqs[i], with
 * the semantics of an OCI image unpack: an upper entry replaces a lower one of the same name (a
 * directory over a directory merges, taking the upper's attributes unless the upper layer never
 * named it); a whiteout (char device 0:0) removes the name; an opaque directory
 * (trusted.overlay.opaque=y) hides the lower layers' children. Non-directories sharing an index
 * inode (hard links) share a merged node; nlink counts the names left in the merged tree. Walks
 * with an explicit stack (no recursion on input). Returns 0 and *out (fs_merged_free), -EFBIG with
 * strata_err set when a bound is passed, -EINVAL for n == 0 or n > FS_MERGE_MAX_LAYERS, -ENOMEM.
 */
int fs_merged_build(const struct index_layer *const *layers, const uint32_t *seqs, size_t n,
		    struct fs_merged **out);

/* Finds name in directory node dir. Returns the child's node number, -ENOENT or -ENOTDIR. */
int64_t fs_merged_lookup(const struct fs_merged *m, uint32_t dir, const char *name, size_t len);

/* Frees m (NULL ok). */
void fs_merged_free(struct fs_merged *m);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: the layer index builder's state (layer_build.c) and its tree (layer_tree.c). */
#ifndef STRATA_INDEX_LAYER_TREE_I_H
#define STRATA_INDEX_LAYER_TREE_I_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "layer.h"
#include "pathmap_i.h"
#include "tar.h"

/* An xattr of a node (name and value owned). */
struct bxattr {
	char *name;
	uint8_t *value;
	size_t len;
};

/* A directory's child: its name (owned) and node. */
struct bchild {
	char *name;
	uint32_t node;
};

/* One node of the tree: an inode as the index will record it, and what finalize lays out. */
struct bnode {
	struct index_inode a; /* first/count unused while building */
	uint32_t chunk_first, nchunks;
	uint32_t ext_first, nextents; /* a sparse file's extents in the builder's */
	uint64_t data_size;	      /* a sparse file's data bytes */
	char *target;		      /* symlink target */
	struct bxattr *xattrs;
	size_t nxattrs;
	int opaque;
	struct bchild *children; /* dirs only, unsorted until finalize */
	size_t nchildren, cap_children;
	uint32_t new_ino; /* UINT32_MAX until numbered */
};

/* The builder (layer_i.h); not thread-safe. */
struct index_builder {
	struct bnode *nodes;
	size_t nnodes, cap_nodes;
	struct index_chunk *chunks;
	size_t nchunks, cap_chunks;
	struct index_extent *extents; /* sparse files' data extents (data_off per file) */
	size_t nextents, cap_extents;
	struct index_pathmap map;
	uint32_t chunk_size;
	uint8_t *chunk_buf;
	index_chunk_fn chunk_fn;
	void *ctx;
	/* random access: set by index_builder_set_blob before finalize */
	enum index_blob blob_kind;
	uint64_t blob_size;
	struct index_checkpoint *cps;
	size_t ncps;
	/* what the layer used of its limits (layer.h) */
	size_t nentries, path_bytes, xattr_bytes;
};

static inline int index_tree_is_dir(const struct bnode *n)
{
	return S_ISDIR(n->a.mode);
}

/* Appends a zeroed node of the given mode. Returns its number, or -EFBIG / -ENOMEM. */
int64_t index_tree_new_node(struct index_builder *b, uint32_t mode);

/* Counts one more entry of the layer (a member or an implicit directory) against
 * INDEX_MAX_ENTRIES. Returns 0 or -EFBIG with strata_err naming path. */
int index_tree_count_entry(struct index_builder *b, const char *path);

/* Checks member e against the per-member limits of layer.h and charges its link target and xattrs
 * to the layer's. Returns 0, or -ENAMETOOLONG, -E2BIG or -EFBIG with strata_err naming the member
 * and the limit. */
int index_tree_check_entry(struct index_builder *b, const struct index_tar_entry *e);

/* Ensures the directory at path (modified during the call, restored on return) exists, making
 * the missing ones implicitly, and returns its node; -ENOTDIR, -EFBIG (strata_err set) or
 * -ENOMEM. Iterative: the depth comes from the layer. */
int64_t index_tree_ensure_dir(struct index_builder *b, char *path);

/* Links path's last component in its parent (made implicitly if missing) to node, replacing an
 * existing child (a directory replaced by a non-directory loses its subtree from the path map).
 * Returns 0, index_tree_ensure_dir's errors, -EFBIG or -ENOMEM. */
int index_tree_link_child(struct index_builder *b, const char *path, uint32_t node);

#endif

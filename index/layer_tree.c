/* SPDX-License-Identifier: Apache-2.0 */
/* The layer index builder's tree: nodes, the path map, implicit parents, replacement of entries,
 * and the bounds of layer.h on what one layer may hold (no recursion on input depth). */
#include "layer_tree_i.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/log.h"
#include "util/mem.h"

int64_t index_tree_new_node(struct index_builder *b, uint32_t mode)
{
	struct bnode *n;

	if (b->nnodes >= UINT32_MAX - 1)
		return strata_err(EFBIG, "layer has too many entries");
	if (util_grow((void **)&b->nodes, &b->cap_nodes, b->nnodes + 1, sizeof(*b->nodes)) < 0)
		return -ENOMEM;
	n = &b->nodes[b->nnodes];
	memset(n, 0, sizeof(*n));
	n->a.mode = mode;
	n->new_ino = UINT32_MAX;
	return (int64_t)b->nnodes++;
}

/* Member names in messages: at most this many bytes of a path are shown. */
#define SHOWN 80

/* A path for a message: its first SHOWN bytes, "..." when there is more. */
#define SHOW(p) (int)(strlen(p) > SHOWN ? SHOWN : strlen(p)), (p), (strlen(p) > SHOWN ? "..." : "")

/* Counts one more entry of the layer (a member or an implicit directory) against
 * INDEX_MAX_ENTRIES. Returns 0 or -EFBIG with strata_err naming path. */
int index_tree_count_entry(struct index_builder *b, const char *path)
{
	if (++b->nentries > INDEX_MAX_ENTRIES)
		return strata_err(EFBIG,
				  "layer member '%.*s%s': the layer has more than %u entries",
				  SHOW(path), INDEX_MAX_ENTRIES);
	return 0;
}

/* Maps path to node at position pos of its parent's children, counting its bytes against
 * INDEX_MAX_PATH_BYTES. Returns 0, -EFBIG with strata_err set, or -ENOMEM. */
static int map_path(struct index_builder *b, const char *path, uint32_t node, uint32_t pos)
{
	size_t len = strlen(path);

	if (len > INDEX_MAX_PATH_BYTES - b->path_bytes)
		return strata_err(EFBIG,
				  "layer member '%.*s%s': the layer's paths add up to more than %u "
				  "bytes",
				  SHOW(path), INDEX_MAX_PATH_BYTES);
	b->path_bytes += len;
	return index_pathmap_set(&b->map, path, node, pos);
}

/* Appends child name -> node to directory parent. Returns its position, or -ENOMEM. */
static int64_t add_child(struct index_builder *b, uint32_t parent, const char *name, uint32_t node)
{
	struct bnode *p = &b->nodes[parent];
	char *dup = strdup(name);

	if (!dup || util_grow((void **)&p->children, &p->cap_children, p->nchildren + 1,
			      sizeof(*p->children)) < 0) {
		free(dup);
		return -ENOMEM;
	}
	p->children[p->nchildren].name = dup;
	p->children[p->nchildren].node = node;
	return (int64_t)p->nchildren++;
}

/* Drops path's descendants from the map (a directory is being replaced by a non-directory):
 * depth-first with a stack of paths, no recursion (the depth comes from the layer). */
static int unmap_subtree(struct index_builder *b, uint32_t dir, const char *path)
{
	struct pending {
		uint32_t dir;
		char *path;
	} *stack = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	if (util_grow((void **)&stack, &cap, 1, sizeof(*stack)) < 0)
		return -ENOMEM;
	stack[n].dir = dir;
	stack[n].path = strdup(path);
	if (!stack[n].path) {
		free(stack);
		return -ENOMEM;
	}
	n++;
	while (n > 0 && rc == 0) {
		struct pending top = stack[--n];
		const struct bnode *d = &b->nodes[top.dir];

		for (size_t i = 0; i < d->nchildren && rc == 0; i++) {
			size_t len = strlen(top.path) + strlen(d->children[i].name) + 2;
			char *sub = malloc(len);
			uint32_t child = d->children[i].node;

			if (!sub) {
				rc = -ENOMEM;
				break;
			}
			snprintf(sub, len, "%s%s%s", top.path, *top.path ? "/" : "",
				 d->children[i].name);
			if (index_pathmap_get(&b->map, sub) != (int64_t)child) {
				free(sub);
				continue;
			}
			index_pathmap_del(&b->map, sub);
			if (!index_tree_is_dir(&b->nodes[child])) {
				free(sub);
				continue;
			}
			if (util_grow((void **)&stack, &cap, n + 1, sizeof(*stack)) < 0) {
				free(sub);
				rc = -ENOMEM;
				break;
			}
			stack[n].dir = child;
			stack[n++].path = sub;
		}
		free(top.path);
	}
	while (n > 0)
		free(stack[--n].path);
	free(stack);
	return rc;
}

/* Ensures the directory at path (modified during the call, restored on return) exists, making
 * the missing ones implicitly, and returns its node. Iterative: the depth comes from the layer. */
int64_t index_tree_ensure_dir(struct index_builder *b, char *path)
{
	int64_t node = index_pathmap_get(&b->map, path);
	size_t len = strlen(path), have;

	if (node >= 0) {
		if (!index_tree_is_dir(&b->nodes[node]))
			return strata_err(ENOTDIR,
					  "'%.*s%s' is not a directory but has entries below it",
					  SHOW(path));
		return node;
	}
	/* the longest prefix that exists (the root always does) */
	have = len;
	for (;;) {
		while (have > 0 && path[have - 1] != '/')
			have--;
		if (have == 0) {
			node = index_pathmap_get(&b->map, "");
			break;
		}
		path[have - 1] = '\0';
		node = index_pathmap_get(&b->map, path);
		path[have - 1] = '/';
		if (node >= 0)
			break;
		have--;
	}
	if (node < 0)
		return node;
	if (!index_tree_is_dir(&b->nodes[node])) { /* not the root: it is always a directory */
		path[have - 1] = '\0';
		node = strata_err(ENOTDIR, "'%.*s%s' is not a directory but has entries below it",
				  SHOW(path));
		path[have - 1] = '/';
		return node;
	}
	/* make each missing component below it, from the top */
	while (have <= len) {
		size_t end = have;
		int64_t child, pos;
		char saved;
		int rc;

		while (end < len && path[end] != '/')
			end++;
		saved = path[end];
		path[end] = '\0';
		rc = index_tree_count_entry(b, path);
		child = rc < 0 ? rc : index_tree_new_node(b, S_IFDIR | 0755);
		pos = child < 0 ? child :
				  add_child(b, (uint32_t)node, path + have, (uint32_t)child);
		if (pos >= 0) {
			b->nodes[child].a.flags = INDEX_INODE_IMPLICIT;
			rc = map_path(b, path, (uint32_t)child, (uint32_t)pos);
			if (rc < 0)
				pos = rc;
		}
		path[end] = saved;
		if (pos < 0)
			return pos;
		node = child;
		have = end + 1;
	}
	return node;
}

/* Links name (last component of path) in its parent to node, replacing an existing child. */
int index_tree_link_child(struct index_builder *b, const char *path, uint32_t node)
{
	char *dup = strdup(path);
	char *slash, *name;
	int64_t parent, old, pos;
	uint32_t at = 0;
	int rc = 0;

	if (!dup)
		return -ENOMEM;
	slash = strrchr(dup, '/');
	if (slash) {
		*slash = '\0';
		name = slash + 1;
		parent = index_tree_ensure_dir(b, dup);
	} else {
		name = dup;
		parent = index_pathmap_get(&b->map, "");
	}
	if (parent < 0) {
		rc = (int)parent;
		goto out;
	}
	old = index_pathmap_find(&b->map, path, &at);
	if (old >= 0) {
		if (index_tree_is_dir(&b->nodes[old]) && !index_tree_is_dir(&b->nodes[node])) {
			rc = unmap_subtree(b, (uint32_t)old, path);
			if (rc < 0)
				goto out;
		}
		b->nodes[parent].children[at].node = node;
		pos = at;
	} else {
		pos = add_child(b, (uint32_t)parent, name, node);
		if (pos < 0) {
			rc = (int)pos;
			goto out;
		}
	}
	rc = map_path(b, path, node, (uint32_t)pos);
out:
	free(dup);
	return rc;
}

/* Checks member e against the per-member limits of layer.h and charges its xattrs to the layer's.
 * Returns 0, or -ENAMETOOLONG, -E2BIG or -EFBIG with strata_err naming the member and the limit. */
int index_tree_check_entry(struct index_builder *b, const struct index_tar_entry *e)
{
	const char *p = e->path;
	size_t len = strlen(p), list = 0, xbytes = 0;

	if (len > INDEX_MAX_PATH)
		return strata_err(ENAMETOOLONG,
				  "layer member '%.*s%s': its path of %zu bytes exceeds %u bytes",
				  SHOW(p), len, INDEX_MAX_PATH);
	while (*p) {
		size_t c = strcspn(p, "/");

		if (c > INDEX_MAX_NAME)
			return strata_err(ENAMETOOLONG,
					  "layer member '%.*s%s': a name of %zu bytes in its path "
					  "exceeds %u bytes",
					  SHOW(e->path), c, INDEX_MAX_NAME);
		p += c + (p[c] == '/');
	}
	if (e->linkname && strlen(e->linkname) > INDEX_MAX_PATH)
		return strata_err(ENAMETOOLONG,
				  "layer member '%.*s%s': its link target of %zu bytes exceeds %u "
				  "bytes",
				  SHOW(e->path), strlen(e->linkname), INDEX_MAX_PATH);
	if (e->linkname && strlen(e->linkname) > INDEX_MAX_PATH_BYTES - b->path_bytes)
		return strata_err(EFBIG,
				  "layer member '%.*s%s': the layer's paths add up to more than %u "
				  "bytes",
				  SHOW(e->path), INDEX_MAX_PATH_BYTES);
	for (size_t i = 0; i < e->nxattrs; i++) {
		size_t nlen = strlen(e->xattrs[i].name);

		if (nlen > INDEX_MAX_XATTR_NAME)
			return strata_err(E2BIG,
					  "layer member '%.*s%s': an xattr name of %zu bytes exceeds "
					  "%u bytes",
					  SHOW(e->path), nlen, INDEX_MAX_XATTR_NAME);
		if (e->xattrs[i].len > INDEX_MAX_XATTR_VALUE)
			return strata_err(
				E2BIG,
				"layer member '%.*s%s': xattr %.*s has a value of %zu bytes, "
				"more than %u",
				SHOW(e->path), (int)nlen, e->xattrs[i].name, e->xattrs[i].len,
				INDEX_MAX_XATTR_VALUE);
		list += nlen + 1;
		xbytes += nlen + e->xattrs[i].len + 32;
	}
	if (list > INDEX_MAX_XATTR_LIST)
		return strata_err(E2BIG,
				  "layer member '%.*s%s': its %zu xattr names take %zu bytes, more "
				  "than %u",
				  SHOW(e->path), e->nxattrs, list, INDEX_MAX_XATTR_LIST);
	if (e->linkname)
		b->path_bytes += strlen(e->linkname);
	if (xbytes > INDEX_MAX_XATTR_BYTES - b->xattr_bytes)
		return strata_err(
			EFBIG, "layer member '%.*s%s': the layer's xattrs take more than %u bytes",
			SHOW(e->path), INDEX_MAX_XATTR_BYTES);
	b->xattr_bytes += xbytes;
	return 0;
}

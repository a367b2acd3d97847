/* SPDX-License-Identifier: Apache-2.0 */
/* The layer index builder: a file tree with tar semantics (replacement, hard links, implicit
 * parents, whiteouts), laid out breadth-first into the index's sections. */
#include "layer.h"
#include "layer_i.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "layer_tree_i.h"
#include "tar.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define OPAQUE_XATTR	"trusted.overlay.opaque"
#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_NAME	".wh..wh..opq"

/* ---------------------------------------------------------------- entries */

static void free_xattrs(struct bnode *n)
{
	for (size_t i = 0; i < n->nxattrs; i++) {
		free(n->xattrs[i].name);
		free(n->xattrs[i].value);
	}
	free(n->xattrs);
	n->xattrs = NULL;
	n->nxattrs = 0;
}

static void builder_free(struct index_builder *b)
{
	for (size_t i = 0; i < b->nnodes; i++) {
		struct bnode *n = &b->nodes[i];

		free(n->target);
		free_xattrs(n);
		for (size_t j = 0; j < n->nchildren; j++)
			free(n->children[j].name);
		free(n->children);
	}
	free(b->nodes);
	free(b->chunks);
	free(b->extents);
	index_pathmap_free(&b->map);
	free(b->chunk_buf);
	free(b->cps);
}

static int copy_xattrs(struct bnode *n, const struct index_tar_entry *e)
{
	free_xattrs(n);
	if (!e->nxattrs)
		return 0;
	n->xattrs = calloc(e->nxattrs, sizeof(*n->xattrs));
	if (!n->xattrs)
		return -ENOMEM;
	for (size_t i = 0; i < e->nxattrs; i++) {
		struct bxattr *x = &n->xattrs[n->nxattrs];

		x->name = strdup(e->xattrs[i].name);
		x->value = malloc(e->xattrs[i].len ? e->xattrs[i].len : 1);
		if (!x->name || !x->value) {
			free(x->name);
			free(x->value);
			return -ENOMEM;
		}
		memcpy(x->value, e->xattrs[i].value, e->xattrs[i].len);
		x->len = e->xattrs[i].len;
		n->nxattrs++;
	}
	return 0;
}

static void set_attrs(struct bnode *n, const struct index_tar_entry *e, uint32_t type)
{
	n->a.mode = type | (e->mode & 07777);
	n->a.uid = e->uid;
	n->a.gid = e->gid;
	n->a.mtime_sec = e->mtime_sec;
	n->a.mtime_nsec = e->mtime_nsec;
	n->a.flags = 0;
}

/* The bytes a regular file's chunks hold: its data (a sparse file's extents), else its size. */
static uint64_t entry_data(const struct index_tar_entry *e)
{
	return e->sparse ? e->data_size : e->size;
}

/* Records sparse file e's extents on node (the holes are not stored). Returns 0, -EFBIG past
 * INDEX_MAX_EXTENTS in the layer, or -ENOMEM. */
static int put_extents(struct index_builder *b, const struct index_tar_entry *e, uint32_t node)
{
	uint64_t data = 0;

	if (e->nextents > INDEX_MAX_EXTENTS - b->nextents)
		return strata_err(EFBIG,
				  "sparse file '%s': the layer's sparse files have more than %u "
				  "extents",
				  e->path, INDEX_MAX_EXTENTS);
	if (util_grow((void **)&b->extents, &b->cap_extents, b->nextents + e->nextents,
		      sizeof(*b->extents)) < 0)
		return -ENOMEM;
	b->nodes[node].ext_first = (uint32_t)b->nextents;
	b->nodes[node].nextents = (uint32_t)e->nextents;
	b->nodes[node].data_size = e->data_size;
	b->nodes[node].a.flags |= INDEX_INODE_SPARSE;
	for (size_t i = 0; i < e->nextents; i++) {
		struct index_extent *x = &b->extents[b->nextents++];

		x->offset = e->extents[i].offset;
		x->len = e->extents[i].len;
		x->data_off = data;
		data += x->len;
	}
	return 0;
}

/* Reads the current member's content in chunks and records them on node. */
static int cut_chunks(struct index_builder *b, struct index_tar *t, const struct index_tar_entry *e,
		      uint32_t node)
{
	uint64_t left = entry_data(e);
	uint64_t off = e->data_offset;
	int rc;

	b->nodes[node].chunk_first = (uint32_t)b->nchunks;
	while (left > 0) {
		size_t want = left < b->chunk_size ? (size_t)left : b->chunk_size;
		size_t got = 0;
		struct index_chunk *c;

		while (got < want) {
			ssize_t n = index_tar_read(t, b->chunk_buf + got, want - got);

			if (n < 0)
				return (int)n;
			if (n == 0)
				return strata_err(EPIPE, "truncated tar archive in '%s'", e->path);
			got += (size_t)n;
		}
		rc = util_grow((void **)&b->chunks, &b->cap_chunks, b->nchunks + 1,
			       sizeof(*b->chunks));
		if (rc < 0)
			return rc;
		c = &b->chunks[b->nchunks++];
		memset(c, 0, sizeof(*c));
		util_sha256(b->chunk_buf, want, c->digest);
		c->offset = off;
		c->size = (uint32_t)want;
		if (b->chunk_fn) {
			rc = b->chunk_fn(b->ctx, c->digest, b->chunk_buf, want);
			if (rc < 0)
				return rc;
		}
		off += want;
		left -= want;
	}
	b->nodes[node].nchunks = (uint32_t)(b->nchunks - b->nodes[node].chunk_first);
	return 0;
}

/* Records precomputed chunks (copied) as node's content; they must cut e->size like cut_chunks. */
static int put_chunks(struct index_builder *b, const struct index_tar_entry *e, uint32_t node,
		      const struct index_chunk *pre, size_t npre)
{
	uint64_t left = e->size;
	int rc;

	for (size_t i = 0; i < npre; i++) {
		uint64_t want = left < b->chunk_size ? left : b->chunk_size;

		if (pre[i].size == 0 || pre[i].size != want)
			return strata_err(EINVAL, "chunk %zu of '%s' is %u bytes, not %llu", i,
					  e->path, pre[i].size, (unsigned long long)want);
		left -= want;
	}
	if (left)
		return strata_err(EINVAL, "chunks of '%s' cover %llu of its %llu bytes", e->path,
				  (unsigned long long)(entry_data(e) - left),
				  (unsigned long long)entry_data(e));
	if (npre > UINT32_MAX - b->nchunks)
		return strata_err(EFBIG, "layer has too many chunks");
	rc = util_grow((void **)&b->chunks, &b->cap_chunks, b->nchunks + npre, sizeof(*b->chunks));
	if (rc < 0)
		return rc;
	b->nodes[node].chunk_first = (uint32_t)b->nchunks;
	b->nodes[node].nchunks = (uint32_t)npre;
	if (npre)
		memcpy(&b->chunks[b->nchunks], pre, npre * sizeof(*pre));
	b->nchunks += npre;
	return 0;
}

/* Adds tar entry e. A regular file's content comes from t (cut into chunks), or, when t is NULL,
 * from the precomputed chunks pre[0..npre). */
static int add_entry(struct index_builder *b, struct index_tar *t, const struct index_tar_entry *e,
		     const struct index_chunk *pre, size_t npre)
{
	const char *base = strrchr(e->path, '/');
	static const uint32_t types[] = {
		[INDEX_TAR_REG] = S_IFREG,     [INDEX_TAR_HARDLINK] = 0,
		[INDEX_TAR_SYMLINK] = S_IFLNK, [INDEX_TAR_CHAR] = S_IFCHR,
		[INDEX_TAR_BLOCK] = S_IFBLK,   [INDEX_TAR_DIR] = S_IFDIR,
		[INDEX_TAR_FIFO] = S_IFIFO,
	};
	int64_t node, old;
	struct bnode *n;
	int rc;

	rc = index_tree_count_entry(b, e->path);
	if (rc == 0)
		rc = index_tree_check_entry(b, e);
	if (rc < 0)
		return rc;
	base = base ? base + 1 : e->path;

	if (strncmp(base, WHITEOUT_PREFIX, 4) == 0) {
		char *path;
		size_t plen = (size_t)(base - e->path);

		if (strcmp(base, OPAQUE_NAME) == 0) {
			char *dir = strndup(e->path, plen ? plen - 1 : 0);

			if (!dir)
				return -ENOMEM;
			node = index_tree_ensure_dir(b, dir);
			free(dir);
			if (node < 0)
				return (int)node;
			b->nodes[node].opaque = 1;
			return 0;
		}
		if (strncmp(base, ".wh..wh.", 8) == 0)
			return 0; /* aufs metadata (.wh..wh.plnk etc.): not content */
		if (!base[4])
			return strata_err(EINVAL, "invalid whiteout entry '%s'", e->path);
		path = malloc(strlen(e->path) + 1);
		if (!path)
			return -ENOMEM;
		memcpy(path, e->path, plen);
		strcpy(path + plen, base + 4);
		node = index_tree_new_node(b, S_IFCHR);
		if (node >= 0) {
			set_attrs(&b->nodes[node], e, S_IFCHR);
			b->nodes[node].a.mode = S_IFCHR;
			b->nodes[node].a.rdev = makedev(0, 0);
			rc = index_tree_link_child(b, path, (uint32_t)node);
		} else {
			rc = (int)node;
		}
		free(path);
		return rc;
	}

	if (e->type == INDEX_TAR_HARDLINK) {
		old = index_pathmap_get(&b->map, e->linkname ? e->linkname : "");
		if (old < 0)
			return strata_err(EINVAL, "hard link '%s' points to missing '%s'", e->path,
					  e->linkname ? e->linkname : "");
		if (index_tree_is_dir(&b->nodes[old]))
			return strata_err(EINVAL, "hard link '%s' points to directory '%s'",
					  e->path, e->linkname);
		if (!*e->path)
			return strata_err(EINVAL, "hard link at the layer root");
		return index_tree_link_child(b, e->path, (uint32_t)old);
	}

	if (e->type == INDEX_TAR_DIR) {
		old = index_pathmap_get(&b->map, e->path);
		if (old >= 0 && index_tree_is_dir(&b->nodes[old])) {
			/* A directory named again keeps its children and takes the new attributes. */
			n = &b->nodes[old];
			set_attrs(n, e, S_IFDIR);
			return copy_xattrs(n, e);
		}
	} else if (!*e->path) {
		return strata_err(EINVAL, "non-directory entry at the layer root");
	}

	node = index_tree_new_node(b, types[e->type]);
	if (node < 0)
		return (int)node;
	n = &b->nodes[node];
	set_attrs(n, e, types[e->type]);
	rc = copy_xattrs(n, e);
	if (rc < 0)
		return rc;
	switch (e->type) {
	case INDEX_TAR_REG:
		n->a.size = e->size;
		if (e->sparse) {
			rc = put_extents(b, e, (uint32_t)node);
			if (rc < 0)
				return rc;
		}
		rc = t ? cut_chunks(b, t, e, (uint32_t)node) :
			 put_chunks(b, e, (uint32_t)node, pre, npre);
		if (rc < 0)
			return rc;
		break;
	case INDEX_TAR_SYMLINK:
		n->a.mode = S_IFLNK | 0777; /* Linux symlinks have no mode of their own */
		n->target = strdup(e->linkname ? e->linkname : "");
		if (!n->target)
			return -ENOMEM;
		n->a.size = strlen(n->target);
		break;
	case INDEX_TAR_CHAR:
	case INDEX_TAR_BLOCK:
		n->a.rdev = makedev(e->devmajor, e->devminor);
		break;
	default:
		if (npre)
			return strata_err(EINVAL,
					  "chunks given for '%s', which is not a regular file",
					  e->path);
		break;
	}
	if (!*e->path)
		return 0; /* unreachable: root handled as a directory above */
	return index_tree_link_child(b, e->path, (uint32_t)node);
}

static int cmp_child(const void *a, const void *b)
{
	const struct bchild *x = a, *y = b;

	return strcmp(x->name, y->name);
}

/* Appends bytes to the string table, returning the offset. */
static int str_append(char **tab, size_t *len, size_t *cap, const void *data, size_t n,
		      uint32_t *off)
{
	if (*len + n > UINT32_MAX)
		return strata_err(EFBIG, "layer index string table too large");
	if (util_grow((void **)tab, cap, *len + n + 1, 1) < 0)
		return -ENOMEM;
	memcpy(*tab + *len, data, n);
	*off = (uint32_t)*len;
	*len += n;
	return 0;
}

/* ---------------------------------------------------------------- layout */

/* The index being laid out from the tree: finalize's working state, section by section. */
struct layout {
	uint32_t *order; /* new ino -> builder node */
	size_t ninodes, cap_o;
	struct index_dirent *dirents;
	size_t ndirents, cap_d;
	struct index_inode *inodes;
	struct index_xattr *xattrs;
	size_t nxattrs, cap_x;
	struct index_chunk *chunks;
	size_t nchunks;
	struct index_sparse *sparse;
	size_t nsparse, cap_s;
	struct index_extent *extents;
	size_t nextents;
	char *strtab;
	size_t strlen_, strcap;
	uint64_t content;
};

/* Numbers the nodes reachable from the root breadth-first and writes the directory entries. */
static int number_bfs(struct index_builder *b, struct layout *lo)
{
	int64_t root = index_pathmap_get(&b->map, "");
	int rc;

	assert(root >= 0);
	if (util_grow((void **)&lo->order, &lo->cap_o, 1, sizeof(*lo->order)) < 0)
		return -ENOMEM;
	lo->order[lo->ninodes++] = (uint32_t)root;
	b->nodes[root].new_ino = 0;
	/* BFS: a directory's entries are written when it is dequeued, so they are contiguous. */
	for (size_t q = 0; q < lo->ninodes; q++) {
		struct bnode *n = &b->nodes[lo->order[q]];

		if (!index_tree_is_dir(n))
			continue;
		if (n->nchildren) /* children is NULL in an empty directory */
			qsort(n->children, n->nchildren, sizeof(*n->children), cmp_child);
		n->a.first = (uint32_t)lo->ndirents;
		n->a.count = (uint32_t)n->nchildren;
		for (size_t i = 0; i < n->nchildren; i++) {
			struct bnode *c = &b->nodes[n->children[i].node];
			struct index_dirent *d;

			if (c->new_ino == UINT32_MAX) {
				if (util_grow((void **)&lo->order, &lo->cap_o, lo->ninodes + 1,
					      sizeof(*lo->order)) < 0)
					return -ENOMEM;
				c->new_ino = (uint32_t)lo->ninodes;
				lo->order[lo->ninodes++] = n->children[i].node;
				n = &b->nodes[lo->order[q]];
			}
			if (util_grow((void **)&lo->dirents, &lo->cap_d, lo->ndirents + 1,
				      sizeof(*lo->dirents)) < 0)
				return -ENOMEM;
			d = &lo->dirents[lo->ndirents++];
			memset(d, 0, sizeof(*d));
			d->ino = c->new_ino;
			d->name_len = (uint32_t)strlen(n->children[i].name);
			rc = str_append(&lo->strtab, &lo->strlen_, &lo->strcap, n->children[i].name,
					d->name_len, &d->name_off);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* Records sparse file n, inode ino in BFS order, with its extents. */
static int add_sparse(struct index_builder *b, struct layout *lo, const struct bnode *n,
		      uint32_t ino)
{
	struct index_sparse *sp;

	if (util_grow((void **)&lo->sparse, &lo->cap_s, lo->nsparse + 1, sizeof(*lo->sparse)) < 0)
		return -ENOMEM;
	if (!lo->extents) {
		lo->extents = malloc((b->nextents ? b->nextents : 1) * sizeof(*lo->extents));
		if (!lo->extents)
			return -ENOMEM;
	}
	sp = &lo->sparse[lo->nsparse++];
	memset(sp, 0, sizeof(*sp));
	sp->ino = ino;
	sp->first = (uint32_t)lo->nextents;
	sp->count = n->nextents;
	sp->data_size = n->data_size;
	if (n->nextents)
		memcpy(&lo->extents[lo->nextents], &b->extents[n->ext_first],
		       n->nextents * sizeof(*lo->extents));
	lo->nextents += n->nextents;
	return 0;
}

/* Fills the inode records in BFS order: attributes, chunk ranges, symlink targets and xattrs (the
 * opaque marker after the entry's own). */
static int fill_inodes(struct index_builder *b, struct layout *lo)
{
	int rc;

	lo->inodes = calloc(lo->ninodes, sizeof(*lo->inodes));
	if (!lo->inodes)
		return -ENOMEM;
	for (size_t i = 0; i < lo->ninodes; i++) {
		struct bnode *n = &b->nodes[lo->order[i]];
		struct index_inode *in = &lo->inodes[i];

		*in = n->a;
		in->nlink = index_tree_is_dir(n) ? 2 : 0;
		if (S_ISREG(n->a.mode)) {
			in->first = (uint32_t)lo->nchunks;
			in->count = n->nchunks;
			lo->content += n->a.flags & INDEX_INODE_SPARSE ? n->data_size : n->a.size;
			lo->nchunks += n->nchunks;
			if (n->a.flags & INDEX_INODE_SPARSE) {
				rc = add_sparse(b, lo, n, (uint32_t)i);
				if (rc < 0)
					return rc;
			}
		} else if (S_ISLNK(n->a.mode)) {
			rc = str_append(&lo->strtab, &lo->strlen_, &lo->strcap, n->target,
					strlen(n->target), &in->first);
			if (rc < 0)
				return rc;
		}
		in->xattr_first = (uint32_t)lo->nxattrs;
		in->nxattrs = (uint32_t)(n->nxattrs + (n->opaque ? 1 : 0));
		for (size_t j = 0; j < n->nxattrs + (n->opaque ? 1 : 0); j++) {
			const char *name = j < n->nxattrs ? n->xattrs[j].name : OPAQUE_XATTR;
			const void *val = j < n->nxattrs ? (const void *)n->xattrs[j].value : "y";
			size_t vlen = j < n->nxattrs ? n->xattrs[j].len : 1;
			struct index_xattr *x;

			if (util_grow((void **)&lo->xattrs, &lo->cap_x, lo->nxattrs + 1,
				      sizeof(*lo->xattrs)) < 0)
				return -ENOMEM;
			x = &lo->xattrs[lo->nxattrs++];
			x->name_len = (uint32_t)strlen(name);
			x->value_len = (uint32_t)vlen;
			rc = str_append(&lo->strtab, &lo->strlen_, &lo->strcap, name, x->name_len,
					&x->name_off);
			if (rc == 0)
				rc = str_append(&lo->strtab, &lo->strlen_, &lo->strcap, val, vlen,
						&x->value_off);
			if (rc < 0)
				return rc; /* -ENOMEM, or -EFBIG for a string table past 4 GiB */
		}
	}
	return 0;
}

/* Link counts: every dirent counts for its target; a subdirectory adds one to its parent. */
static void count_links(struct layout *lo)
{
	for (size_t i = 0; i < lo->ninodes; i++) {
		if (!S_ISDIR(lo->inodes[i].mode))
			continue;
		for (uint32_t j = 0; j < lo->inodes[i].count; j++) {
			uint32_t ino = lo->dirents[lo->inodes[i].first + j].ino;
			struct index_inode *c = &lo->inodes[ino];

			if (S_ISDIR(c->mode))
				lo->inodes[i].nlink++;
			else
				c->nlink++;
		}
	}
}

/* Copies the regular files' chunks in BFS order, as fill_inodes numbered them. */
static int collect_chunks(struct index_builder *b, struct layout *lo)
{
	lo->chunks = malloc((lo->nchunks ? lo->nchunks : 1) * sizeof(*lo->chunks));
	if (!lo->chunks)
		return -ENOMEM;
	lo->nchunks = 0;
	for (size_t i = 0; i < lo->ninodes; i++) {
		struct bnode *n = &b->nodes[lo->order[i]];

		if (!S_ISREG(n->a.mode) || n->nchunks == 0)
			continue; /* b->chunks is NULL in a layer of empty files */
		memcpy(&lo->chunks[lo->nchunks], &b->chunks[n->chunk_first],
		       n->nchunks * sizeof(*lo->chunks));
		lo->nchunks += n->nchunks;
	}
	return 0;
}

/* Hands the laid out sections to the codec, which encodes and validates them. */
static int serialize(const struct index_builder *b, const struct layout *lo,
		     const uint8_t diff_id[32], uint64_t tar_size, struct index_layer **out)
{
	struct index_layer_sections s;

	memset(&s, 0, sizeof(s));
	s.chunk_size = b->chunk_size;
	s.diff_id = diff_id;
	s.tar_size = tar_size;
	s.content_size = lo->content;
	s.blob_kind = b->blob_kind;
	s.blob_size = b->blob_size;
	s.inodes = lo->inodes;
	s.ninodes = lo->ninodes;
	s.dirents = lo->dirents;
	s.ndirents = lo->ndirents;
	s.chunks = lo->chunks;
	s.nchunks = lo->nchunks;
	s.xattrs = lo->xattrs;
	s.nxattrs = lo->nxattrs;
	s.cps = b->cps;
	s.ncps = b->ncps;
	s.sparse = lo->sparse;
	s.nsparse = lo->nsparse;
	s.extents = lo->extents;
	s.nextents = lo->nextents;
	s.strtab = lo->strtab;
	s.strtab_len = lo->strlen_;
	return index_layer_pack(&s, out);
}

/* Numbers reachable nodes breadth-first and lays out the final arrays into one encoded buffer. */
static int finalize(struct index_builder *b, const uint8_t diff_id[32], uint64_t tar_size,
		    struct index_layer **out)
{
	struct layout lo;
	int rc;

	memset(&lo, 0, sizeof(lo));
	rc = number_bfs(b, &lo);
	if (rc < 0)
		goto out;
	rc = fill_inodes(b, &lo);
	if (rc < 0)
		goto out;
	count_links(&lo);
	rc = collect_chunks(b, &lo);
	if (rc < 0)
		goto out;
	rc = serialize(b, &lo, diff_id, tar_size, out);
out:
	free(lo.order);
	free(lo.inodes);
	free(lo.dirents);
	free(lo.chunks);
	free(lo.xattrs);
	free(lo.sparse);
	free(lo.extents);
	free(lo.strtab);
	return rc;
}

/* ---------------------------------------------------------------- builder API (layer_i.h) */

/* Sets up an empty builder holding only the root; cut = 1 allocates the buffer cut_chunks needs.
 * On failure b still needs builder_free. */
static int builder_init(struct index_builder *b, uint32_t chunk_size, int cut)
{
	int64_t root;

	memset(b, 0, sizeof(*b));
	if (chunk_size < INDEX_MIN_CHUNK_SIZE || chunk_size > INDEX_MAX_CHUNK_SIZE)
		return strata_err(EINVAL, "chunk size %u out of range [%u, %u]", chunk_size,
				  INDEX_MIN_CHUNK_SIZE, INDEX_MAX_CHUNK_SIZE);
	b->chunk_size = chunk_size;
	if (cut) {
		b->chunk_buf = malloc(chunk_size);
		if (!b->chunk_buf)
			return -ENOMEM;
	}
	if (index_pathmap_grow(&b->map) < 0)
		return -ENOMEM;
	root = index_tree_new_node(b, S_IFDIR | 0755);
	if (root < 0)
		return (int)root;
	if (index_pathmap_set(&b->map, "", (uint32_t)root, 0) < 0)
		return -ENOMEM;
	b->nodes[root].a.flags = INDEX_INODE_IMPLICIT;
	return 0;
}

static int builder_new(uint32_t chunk_size, int cut, struct index_builder **out)
{
	struct index_builder *ib = malloc(sizeof(*ib));
	int rc;

	*out = NULL;
	if (!ib)
		return -ENOMEM;
	rc = builder_init(ib, chunk_size, cut);
	if (rc < 0) {
		index_builder_free(ib);
		return rc;
	}
	*out = ib;
	return 0;
}

int index_builder_new(uint32_t chunk_size, struct index_builder **out)
{
	return builder_new(chunk_size, 0, out);
}

int index_builder_new_tar(uint32_t chunk_size, index_chunk_fn chunk_fn, void *ctx,
			  struct index_builder **out)
{
	int rc = builder_new(chunk_size, 1, out);

	if (rc < 0)
		return rc;
	(*out)->chunk_fn = chunk_fn;
	(*out)->ctx = ctx;
	return 0;
}

int index_builder_add(struct index_builder *ib, const struct index_tar_entry *e,
		      const struct index_chunk *chunks, size_t nchunks)
{
	return add_entry(ib, NULL, e, chunks, nchunks);
}

int index_builder_add_tar(struct index_builder *ib, struct index_tar *t,
			  const struct index_tar_entry *e)
{
	return add_entry(ib, t, e, NULL, 0);
}

int index_builder_set_blob(struct index_builder *ib, enum index_blob kind, uint64_t blob_size,
			   const struct index_checkpoint *cps, size_t ncps)
{
	struct index_checkpoint *copy = malloc((ncps ? ncps : 1) * sizeof(*copy));

	if (!copy)
		return -ENOMEM;
	if (ncps)
		memcpy(copy, cps, ncps * sizeof(*copy));
	free(ib->cps);
	ib->cps = copy;
	ib->ncps = ncps;
	ib->blob_kind = kind;
	ib->blob_size = blob_size;
	return 0;
}

int index_builder_finish(struct index_builder *ib, const uint8_t diff_id[32], uint64_t tar_size,
			 struct index_layer **out)
{
	int rc;

	*out = NULL;
	rc = finalize(ib, diff_id, tar_size, out);
	index_builder_free(ib);
	return rc;
}

void index_builder_free(struct index_builder *ib)
{
	if (!ib)
		return;
	builder_free(ib);
	free(ib);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Builds a layer index from a tar stream, and encodes, decodes and queries it. */
#include "layer.h"
#include "layer_i.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <zstd.h>

#include "decomp.h"
#include "tar.h"
#include "zran.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/sha256.h"

#define MAGIC "STRATAIX"
#define MAX_DECODED (1ull << 31)
#define OPAQUE_XATTR "trusted.overlay.opaque"
#define WHITEOUT_PREFIX ".wh."
#define OPAQUE_NAME ".wh..wh..opq"

_Static_assert(sizeof(struct index_inode) == 64, "inode record layout");
_Static_assert(sizeof(struct index_dirent) == 16, "dirent record layout");
_Static_assert(sizeof(struct index_chunk) == 48, "chunk record layout");
_Static_assert(sizeof(struct index_xattr) == 16, "xattr record layout");
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the layer index encoding is little-endian; add byte swapping for this target"
#endif

struct enc_header {
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
};
_Static_assert(sizeof(struct enc_header) == 104, "header layout");
_Static_assert(sizeof(struct index_checkpoint) == 72, "checkpoint record layout");

struct index_layer {
	void *mem; /* owns everything below */
	const struct enc_header *hdr;
	const struct index_inode *inodes;
	const struct index_dirent *dirents;
	const struct index_chunk *chunks;
	const struct index_xattr *xattrs;
	const struct index_checkpoint *cps;
	const char *strtab;
	uint32_t *by_offset; /* chunk indexes in tar-offset order (own allocation) */
	size_t mem_len;      /* bytes at mem */
};

static int decode_raw(void *mem, size_t len, struct index_layer **out);

/* ---------------------------------------------------------------- builder */

struct bxattr {
	char *name;
	uint8_t *value;
	size_t len;
};

struct bchild {
	char *name;
	uint32_t node;
};

struct bnode {
	struct index_inode a; /* first/count unused while building */
	uint32_t chunk_first, nchunks;
	char *target;          /* symlink target */
	struct bxattr *xattrs;
	size_t nxattrs;
	int opaque;
	struct bchild *children; /* dirs only, unsorted until finalize */
	size_t nchildren, cap_children;
	uint32_t new_ino;        /* UINT32_MAX until numbered */
};

struct pathmap_slot {
	char *path; /* NULL = empty, owned */
	uint32_t node;
};

struct builder {
	struct bnode *nodes;
	size_t nnodes, cap_nodes;
	struct index_chunk *chunks;
	size_t nchunks, cap_chunks;
	struct pathmap_slot *map;
	size_t map_cap, map_used;
	uint32_t chunk_size;
	uint8_t *chunk_buf;
	index_chunk_fn chunk_fn;
	void *ctx;
	/* random access: set by the blob builder before finalize */
	enum index_blob blob_kind;
	uint64_t blob_size;
	struct index_checkpoint *cps;
	size_t ncps;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static struct pathmap_slot *map_find(struct builder *b, const char *path)
{
	size_t mask = b->map_cap - 1;
	size_t i = hash_str(path) & mask;

	for (;;) {
		struct pathmap_slot *s = &b->map[i];

		if (!s->path || strcmp(s->path, path) == 0)
			return s;
		i = (i + 1) & mask;
	}
}

static int map_rehash(struct builder *b)
{
	struct pathmap_slot *old = b->map;
	size_t ocap = b->map_cap;

	b->map_cap = ocap ? ocap * 2 : 1024;
	b->map = calloc(b->map_cap, sizeof(*b->map));
	if (!b->map) {
		b->map = old;
		b->map_cap = ocap;
		return -ENOMEM;
	}
	for (size_t i = 0; i < ocap; i++) {
		if (old[i].path)
			*map_find(b, old[i].path) = old[i];
	}
	free(old);
	return 0;
}

/* Maps path to node, replacing any earlier mapping. Copies path. */
static int map_set(struct builder *b, const char *path, uint32_t node)
{
	struct pathmap_slot *s;

	if ((b->map_used + 1) * 4 >= b->map_cap * 3 && map_rehash(b) < 0)
		return -ENOMEM;
	s = map_find(b, path);
	if (!s->path) {
		s->path = strdup(path);
		if (!s->path)
			return -ENOMEM;
		b->map_used++;
	}
	s->node = node;
	return 0;
}

static int64_t map_get(struct builder *b, const char *path)
{
	struct pathmap_slot *s = map_find(b, path);

	return s->path ? (int64_t)s->node : -ENOENT;
}

/* Removes path (tombstones are avoided by re-inserting the rest of the cluster). */
static void map_del(struct builder *b, const char *path)
{
	size_t mask = b->map_cap - 1;
	struct pathmap_slot *s = map_find(b, path);
	size_t i;

	if (!s->path)
		return;
	free(s->path);
	s->path = NULL;
	b->map_used--;
	i = ((size_t)(s - b->map) + 1) & mask;
	while (b->map[i].path) {
		struct pathmap_slot moved = b->map[i];

		b->map[i].path = NULL;
		*map_find(b, moved.path) = moved;
		i = (i + 1) & mask;
	}
}

static int64_t new_node(struct builder *b, uint32_t mode)
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

static void builder_free(struct builder *b)
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
	for (size_t i = 0; i < b->map_cap; i++)
		free(b->map[i].path);
	free(b->map);
	free(b->chunk_buf);
	free(b->cps);
}

static int is_dir(const struct bnode *n)
{
	return S_ISDIR(n->a.mode);
}

/* Drops path's descendants from the map (a directory is being replaced by a non-directory). */
static int unmap_subtree(struct builder *b, uint32_t dir, const char *path)
{
	struct bnode *d = &b->nodes[dir];

	for (size_t i = 0; i < d->nchildren; i++) {
		size_t len = strlen(path) + strlen(d->children[i].name) + 2;
		char *sub = malloc(len);
		uint32_t child = d->children[i].node;

		if (!sub)
			return -ENOMEM;
		snprintf(sub, len, "%s%s%s", path, *path ? "/" : "", d->children[i].name);
		if (map_get(b, sub) == (int64_t)child) {
			if (is_dir(&b->nodes[child]) && unmap_subtree(b, child, sub) < 0) {
				free(sub);
				return -ENOMEM;
			}
			map_del(b, sub);
		}
		free(sub);
	}
	return 0;
}

/* Ensures the directory at path exists (implicitly if needed) and returns its node. */
static int64_t ensure_dir(struct builder *b, const char *path)
{
	int64_t node = map_get(b, path);
	char *slash;
	int64_t parent;
	struct bnode *p;
	int rc;

	if (node >= 0) {
		if (!is_dir(&b->nodes[node]))
			return strata_err(ENOTDIR, "'%s' is not a directory but has entries below it", path);
		return node;
	}
	slash = strrchr(path, '/');
	if (slash) {
		*slash = '\0';
		parent = ensure_dir(b, path);
		*slash = '/';
	} else {
		parent = map_get(b, "");
	}
	if (parent < 0)
		return parent;
	node = new_node(b, S_IFDIR | 0755);
	if (node < 0)
		return node;
	b->nodes[node].a.flags = INDEX_INODE_IMPLICIT;
	p = &b->nodes[parent];
	if (util_grow((void **)&p->children, &p->cap_children, p->nchildren + 1, sizeof(*p->children)) < 0)
		return -ENOMEM;
	p->children[p->nchildren].name = strdup(slash ? slash + 1 : path);
	if (!p->children[p->nchildren].name)
		return -ENOMEM;
	p->children[p->nchildren++].node = (uint32_t)node;
	rc = map_set(b, path, (uint32_t)node);
	return rc < 0 ? rc : node;
}

/* Links name (last component of path) in its parent to node, replacing an existing child. */
static int link_child(struct builder *b, const char *path, uint32_t node)
{
	char *dup = strdup(path);
	char *slash, *name;
	int64_t parent, old;
	struct bnode *p;
	int rc = 0;

	if (!dup)
		return -ENOMEM;
	slash = strrchr(dup, '/');
	if (slash) {
		*slash = '\0';
		name = slash + 1;
		parent = ensure_dir(b, dup);
	} else {
		name = dup;
		parent = map_get(b, "");
	}
	if (parent < 0) {
		rc = (int)parent;
		goto out;
	}
	p = &b->nodes[parent];
	old = map_get(b, path);
	if (old >= 0) {
		if (is_dir(&b->nodes[old]) && !is_dir(&b->nodes[node])) {
			rc = unmap_subtree(b, (uint32_t)old, path);
			if (rc < 0)
				goto out;
		}
		for (size_t i = 0; i < p->nchildren; i++) {
			if (strcmp(p->children[i].name, name) == 0) {
				p->children[i].node = node;
				break;
			}
		}
	} else {
		rc = util_grow((void **)&p->children, &p->cap_children, p->nchildren + 1,
			  sizeof(*p->children));
		if (rc < 0)
			goto out;
		p->children[p->nchildren].name = strdup(name);
		if (!p->children[p->nchildren].name) {
			rc = -ENOMEM;
			goto out;
		}
		p->children[p->nchildren++].node = node;
	}
	rc = map_set(b, path, node);
out:
	free(dup);
	return rc;
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

/* Reads the current member's content in chunks and records them on node. */
static int cut_chunks(struct builder *b, struct index_tar *t, const struct index_tar_entry *e,
		      uint32_t node)
{
	uint64_t left = e->size;
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
		rc = util_grow((void **)&b->chunks, &b->cap_chunks, b->nchunks + 1, sizeof(*b->chunks));
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
static int put_chunks(struct builder *b, const struct index_tar_entry *e, uint32_t node,
		      const struct index_chunk *pre, size_t npre)
{
	uint64_t left = e->size;
	int rc;

	for (size_t i = 0; i < npre; i++) {
		uint64_t want = left < b->chunk_size ? left : b->chunk_size;

		if (pre[i].size == 0 || pre[i].size != want)
			return strata_err(EINVAL, "chunk %zu of '%s' is %u bytes, not %llu", i, e->path,
					  pre[i].size, (unsigned long long)want);
		left -= want;
	}
	if (left)
		return strata_err(EINVAL, "chunks of '%s' cover %llu of its %llu bytes", e->path,
				  (unsigned long long)(e->size - left), (unsigned long long)e->size);
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
static int add_entry(struct builder *b, struct index_tar *t, const struct index_tar_entry *e,
		     const struct index_chunk *pre, size_t npre)
{
	const char *base = strrchr(e->path, '/');
	static const uint32_t types[] = {
		[INDEX_TAR_REG] = S_IFREG, [INDEX_TAR_HARDLINK] = 0, [INDEX_TAR_SYMLINK] = S_IFLNK,
		[INDEX_TAR_CHAR] = S_IFCHR, [INDEX_TAR_BLOCK] = S_IFBLK, [INDEX_TAR_DIR] = S_IFDIR,
		[INDEX_TAR_FIFO] = S_IFIFO,
	};
	int64_t node, old;
	struct bnode *n;
	int rc;

	base = base ? base + 1 : e->path;

	if (strncmp(base, WHITEOUT_PREFIX, 4) == 0) {
		char *path;
		size_t plen = (size_t)(base - e->path);

		if (strcmp(base, OPAQUE_NAME) == 0) {
			char *dir = strndup(e->path, plen ? plen - 1 : 0);

			if (!dir)
				return -ENOMEM;
			node = ensure_dir(b, dir);
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
		node = new_node(b, S_IFCHR);
		if (node >= 0) {
			set_attrs(&b->nodes[node], e, S_IFCHR);
			b->nodes[node].a.mode = S_IFCHR;
			b->nodes[node].a.rdev = makedev(0, 0);
			rc = link_child(b, path, (uint32_t)node);
		} else {
			rc = (int)node;
		}
		free(path);
		return rc;
	}

	if (e->type == INDEX_TAR_HARDLINK) {
		old = map_get(b, e->linkname ? e->linkname : "");
		if (old < 0)
			return strata_err(EINVAL, "hard link '%s' points to missing '%s'", e->path,
					  e->linkname ? e->linkname : "");
		if (is_dir(&b->nodes[old]))
			return strata_err(EINVAL, "hard link '%s' points to directory '%s'", e->path,
					  e->linkname);
		if (!*e->path)
			return strata_err(EINVAL, "hard link at the layer root");
		return link_child(b, e->path, (uint32_t)old);
	}

	if (e->type == INDEX_TAR_DIR) {
		old = map_get(b, e->path);
		if (old >= 0 && is_dir(&b->nodes[old])) {
			/* A directory named again keeps its children and takes the new attributes. */
			n = &b->nodes[old];
			set_attrs(n, e, S_IFDIR);
			return copy_xattrs(n, e);
		}
	} else if (!*e->path) {
		return strata_err(EINVAL, "non-directory entry at the layer root");
	}

	node = new_node(b, types[e->type]);
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
		rc = t ? cut_chunks(b, t, e, (uint32_t)node) : put_chunks(b, e, (uint32_t)node, pre, npre);
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
			return strata_err(EINVAL, "chunks given for '%s', which is not a regular file",
					  e->path);
		break;
	}
	if (!*e->path)
		return 0; /* unreachable: root handled as a directory above */
	return link_child(b, e->path, (uint32_t)node);
}

/* Hashing pass-through reader: computes diff_id and the stream length. */
struct hash_reader {
	struct index_reader src;
	struct util_sha256 *sha;
	uint64_t bytes;
};

static ssize_t hash_read(void *ctx, void *buf, size_t len)
{
	struct hash_reader *h = ctx;
	ssize_t n = h->src.read(h->src.ctx, buf, len);

	if (n > 0) {
		util_sha256_update(h->sha, buf, (size_t)n);
		h->bytes += (uint64_t)n;
	}
	return n;
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

/* Numbers reachable nodes breadth-first and lays out the final arrays into one encoded buffer. */
static int finalize(struct builder *b, const uint8_t diff_id[32], uint64_t tar_size,
		    struct index_layer **out)
{
	uint32_t *order = NULL; /* new ino -> builder node */
	size_t ninodes = 0, ndirents = 0, nchunks = 0, nxattrs = 0;
	struct index_inode *inodes = NULL;
	struct index_dirent *dirents = NULL;
	struct index_chunk *chunks = NULL;
	struct index_xattr *xattrs = NULL;
	char *strtab = NULL;
	size_t strlen_ = 0, strcap = 0, cap_d = 0, cap_x = 0, cap_o = 0;
	uint64_t content = 0;
	struct enc_header hdr;
	void *mem = NULL;
	size_t total;
	int rc = -ENOMEM;
	int64_t root = map_get(b, "");

	assert(root >= 0);
	if (util_grow((void **)&order, &cap_o, 1, sizeof(*order)) < 0)
		goto out;
	order[ninodes++] = (uint32_t)root;
	b->nodes[root].new_ino = 0;
	/* BFS: a directory's entries are written when it is dequeued, so they are contiguous. */
	for (size_t q = 0; q < ninodes; q++) {
		struct bnode *n = &b->nodes[order[q]];

		if (!is_dir(n))
			continue;
		if (n->nchildren) /* children is NULL in an empty directory */
			qsort(n->children, n->nchildren, sizeof(*n->children), cmp_child);
		n->a.first = (uint32_t)ndirents;
		n->a.count = (uint32_t)n->nchildren;
		for (size_t i = 0; i < n->nchildren; i++) {
			struct bnode *c = &b->nodes[n->children[i].node];
			struct index_dirent *d;

			if (c->new_ino == UINT32_MAX) {
				if (util_grow((void **)&order, &cap_o, ninodes + 1, sizeof(*order)) < 0)
					goto out;
				c->new_ino = (uint32_t)ninodes;
				order[ninodes++] = n->children[i].node;
				n = &b->nodes[order[q]];
			}
			if (util_grow((void **)&dirents, &cap_d, ndirents + 1, sizeof(*dirents)) < 0)
				goto out;
			d = &dirents[ndirents++];
			memset(d, 0, sizeof(*d));
			d->ino = c->new_ino;
			d->name_len = (uint32_t)strlen(n->children[i].name);
			rc = str_append(&strtab, &strlen_, &strcap, n->children[i].name, d->name_len,
					&d->name_off);
			if (rc < 0)
				goto out;
			rc = -ENOMEM;
		}
	}
	inodes = calloc(ninodes, sizeof(*inodes));
	if (!inodes)
		goto out;
	for (size_t i = 0; i < ninodes; i++) {
		struct bnode *n = &b->nodes[order[i]];
		struct index_inode *in = &inodes[i];

		*in = n->a;
		in->nlink = is_dir(n) ? 2 : 0;
		if (S_ISREG(n->a.mode)) {
			in->first = (uint32_t)nchunks;
			in->count = n->nchunks;
			content += n->a.size;
			nchunks += n->nchunks;
		} else if (S_ISLNK(n->a.mode)) {
			rc = str_append(&strtab, &strlen_, &strcap, n->target, strlen(n->target),
					&in->first);
			if (rc < 0)
				goto out;
			rc = -ENOMEM;
		}
		in->xattr_first = (uint32_t)nxattrs;
		in->nxattrs = (uint32_t)(n->nxattrs + (n->opaque ? 1 : 0));
		for (size_t j = 0; j < n->nxattrs + (n->opaque ? 1 : 0); j++) {
			const char *name = j < n->nxattrs ? n->xattrs[j].name : OPAQUE_XATTR;
			const void *val = j < n->nxattrs ? (const void *)n->xattrs[j].value : "y";
			size_t vlen = j < n->nxattrs ? n->xattrs[j].len : 1;
			struct index_xattr *x;

			if (util_grow((void **)&xattrs, &cap_x, nxattrs + 1, sizeof(*xattrs)) < 0)
				goto out;
			x = &xattrs[nxattrs++];
			x->name_len = (uint32_t)strlen(name);
			x->value_len = (uint32_t)vlen;
			if (str_append(&strtab, &strlen_, &strcap, name, x->name_len, &x->name_off) < 0 ||
			    str_append(&strtab, &strlen_, &strcap, val, vlen, &x->value_off) < 0)
				goto out;
		}
	}
	/* link counts: every dirent counts for its target; a subdirectory adds one to its parent */
	for (size_t i = 0; i < ninodes; i++) {
		if (!S_ISDIR(inodes[i].mode))
			continue;
		for (uint32_t j = 0; j < inodes[i].count; j++) {
			struct index_inode *c = &inodes[dirents[inodes[i].first + j].ino];

			if (S_ISDIR(c->mode))
				inodes[i].nlink++;
			else
				c->nlink++;
		}
	}
	chunks = malloc((nchunks ? nchunks : 1) * sizeof(*chunks));
	if (!chunks)
		goto out;
	nchunks = 0;
	for (size_t i = 0; i < ninodes; i++) {
		struct bnode *n = &b->nodes[order[i]];

		if (!S_ISREG(n->a.mode))
			continue;
		memcpy(&chunks[nchunks], &b->chunks[n->chunk_first], n->nchunks * sizeof(*chunks));
		nchunks += n->nchunks;
	}

	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.magic, MAGIC, 8);
	hdr.version = INDEX_FORMAT_VERSION;
	hdr.chunk_size = b->chunk_size;
	hdr.ninodes = (uint32_t)ninodes;
	hdr.ndirents = (uint32_t)ndirents;
	hdr.nchunks = (uint32_t)nchunks;
	hdr.nxattrs = (uint32_t)nxattrs;
	hdr.strtab_len = strlen_;
	hdr.tar_size = tar_size;
	hdr.content_size = content;
	memcpy(hdr.diff_id, diff_id, 32);
	hdr.ncheckpoints = (uint32_t)b->ncps;
	hdr.blob_kind = b->blob_kind;
	hdr.blob_size = b->blob_size;
	total = sizeof(hdr) + ninodes * sizeof(*inodes) + ndirents * sizeof(*dirents) +
		nchunks * sizeof(*chunks) + nxattrs * sizeof(*xattrs) +
		b->ncps * sizeof(*b->cps) + strlen_;
	mem = malloc(total);
	if (!mem)
		goto out;
	{
		char *p = mem;

#define PUT(src, n)                                                                                \
	do {                                                                                       \
		if ((n) > 0)                                                                       \
			memcpy(p, src, n);                                                         \
		p += (n);                                                                          \
	} while (0)
		PUT(&hdr, sizeof(hdr));
		PUT(inodes, ninodes * sizeof(*inodes));
		PUT(dirents, ndirents * sizeof(*dirents));
		PUT(chunks, nchunks * sizeof(*chunks));
		PUT(xattrs, nxattrs * sizeof(*xattrs));
		PUT(b->cps, b->ncps * sizeof(*b->cps));
		PUT(strtab, strlen_);
#undef PUT
	}
	rc = decode_raw(mem, total, out);
	mem = NULL; /* owned by *out or freed by decode_raw */
out:
	free(order);
	free(inodes);
	free(dirents);
	free(chunks);
	free(xattrs);
	free(strtab);
	free(mem);
	return rc;
}

/* Called after the tar stream is fully read, before finalize: fills the random-access fields. */
typedef int (*finish_fn)(struct builder *b, void *arg);

/* Sets up an empty builder holding only the root; cut = 1 allocates the buffer cut_chunks needs.
 * On failure b still needs builder_free. */
static int builder_init(struct builder *b, uint32_t chunk_size, int cut)
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
	if (map_rehash(b) < 0)
		return -ENOMEM;
	root = new_node(b, S_IFDIR | 0755);
	if (root < 0)
		return (int)root;
	if (map_set(b, "", (uint32_t)root) < 0)
		return -ENOMEM;
	b->nodes[root].a.flags = INDEX_INODE_IMPLICIT;
	return 0;
}

static int build(struct index_reader src, uint32_t chunk_size, index_chunk_fn chunk_fn, void *ctx,
		 finish_fn finish, void *farg, struct index_layer **out)
{
	struct builder b;
	struct hash_reader h = { src, NULL, 0 };
	struct index_tar *t = NULL;
	const struct index_tar_entry *e;
	uint8_t diff_id[32];
	char drain[65536];
	int rc;

	*out = NULL;
	rc = builder_init(&b, chunk_size, 1);
	if (rc < 0)
		goto out;
	b.chunk_fn = chunk_fn;
	b.ctx = ctx;
	h.sha = util_sha256_new();
	if (!h.sha) {
		rc = -ENOMEM;
		goto out;
	}
	rc = index_tar_open((struct index_reader){ hash_read, &h }, &t);
	if (rc < 0)
		goto out;
	for (;;) {
		rc = index_tar_next(t, &e);
		if (rc <= 0)
			break;
		rc = add_entry(&b, t, e, NULL, 0);
		if (rc < 0)
			goto out;
	}
	if (rc < 0)
		goto out;
	/* Drain what follows the end-of-archive marker so diff_id covers the whole stream. */
	for (;;) {
		ssize_t n = hash_read(&h, drain, sizeof(drain));

		if (n < 0) {
			rc = (int)n;
			goto out;
		}
		if (n == 0)
			break;
	}
	util_sha256_final(h.sha, diff_id);
	if (finish) {
		rc = finish(&b, farg);
		if (rc < 0)
			goto out;
	}
	rc = finalize(&b, diff_id, h.bytes, out);
out:
	index_tar_free(t);
	util_sha256_free(h.sha);
	builder_free(&b);
	return rc;
}

int index_layer_build(struct index_reader src, uint32_t chunk_size, index_chunk_fn chunk_fn,
		      void *ctx, struct index_layer **out)
{
	return build(src, chunk_size, chunk_fn, ctx, NULL, NULL, out);
}

/* ---------------------------------------------------------------- builder API (layer_i.h) */

struct index_builder {
	struct builder b;
};

int index_builder_new(uint32_t chunk_size, struct index_builder **out)
{
	struct index_builder *ib = malloc(sizeof(*ib));
	int rc;

	*out = NULL;
	if (!ib)
		return -ENOMEM;
	rc = builder_init(&ib->b, chunk_size, 0);
	if (rc < 0) {
		index_builder_free(ib);
		return rc;
	}
	*out = ib;
	return 0;
}

int index_builder_add(struct index_builder *ib, const struct index_tar_entry *e,
		      const struct index_chunk *chunks, size_t nchunks)
{
	return add_entry(&ib->b, NULL, e, chunks, nchunks);
}

int index_builder_set_blob(struct index_builder *ib, enum index_blob kind, uint64_t blob_size,
			   const struct index_checkpoint *cps, size_t ncps)
{
	struct index_checkpoint *copy = malloc((ncps ? ncps : 1) * sizeof(*copy));

	if (!copy)
		return -ENOMEM;
	if (ncps)
		memcpy(copy, cps, ncps * sizeof(*copy));
	free(ib->b.cps);
	ib->b.cps = copy;
	ib->b.ncps = ncps;
	ib->b.blob_kind = kind;
	ib->b.blob_size = blob_size;
	return 0;
}

int index_builder_finish(struct index_builder *ib, const uint8_t diff_id[32], uint64_t tar_size,
			 struct index_layer **out)
{
	int rc;

	*out = NULL;
	rc = finalize(&ib->b, diff_id, tar_size, out);
	index_builder_free(ib);
	return rc;
}

void index_builder_free(struct index_builder *ib)
{
	if (!ib)
		return;
	builder_free(&ib->b);
	free(ib);
}

/* Counts the bytes a reader passes on. */
struct count_reader {
	struct index_reader src;
	uint64_t n;
};

static ssize_t count_read(void *ctx, void *buf, size_t len)
{
	struct count_reader *c = ctx;
	ssize_t n = c->src.read(c->src.ctx, buf, len);

	if (n > 0)
		c->n += (uint64_t)n;
	return n;
}

struct blob_build {
	const struct index_build_opts *o;
	struct count_reader count;
	struct index_zran *z;
	struct index_checkpoint *frames; /* zstd frame starts after the first */
	size_t nframes, cap_frames;
	int err;
};

/* Records a zstd frame boundary as a checkpoint candidate. */
static void on_frame(void *ctx, uint64_t coff, uint64_t uoff)
{
	struct blob_build *bb = ctx;
	struct index_checkpoint *cp;

	if (bb->err || (bb->nframes && bb->frames[bb->nframes - 1].uoff >= uoff) || uoff == 0)
		return;
	if (util_grow((void **)&bb->frames, &bb->cap_frames, bb->nframes + 1, sizeof(*bb->frames)) < 0) {
		bb->err = -ENOMEM;
		return;
	}
	cp = &bb->frames[bb->nframes++];
	memset(cp, 0, sizeof(*cp));
	cp->uoff = uoff;
	cp->coff = coff;
	cp->kind = INDEX_CP_ZSTD_FRAME;
	cp->woff = UINT64_MAX;
}

static int blob_finish(struct builder *b, void *arg)
{
	struct blob_build *bb = arg;
	char drain[65536];
	ssize_t n;

	/* Whatever follows the compressed stream still belongs to the blob. */
	do {
		n = count_read(&bb->count, drain, sizeof(drain));
	} while (n > 0);
	if (n < 0)
		return (int)n;
	b->blob_kind = bb->o->blob;
	b->blob_size = bb->count.n;
	if (bb->o->blob == INDEX_BLOB_ZSTD) {
		if (bb->err)
			return bb->err;
		b->cps = calloc(1 + bb->nframes, sizeof(*b->cps));
		if (!b->cps)
			return -ENOMEM;
		b->cps[0].kind = INDEX_CP_ZSTD_FRAME;
		b->cps[0].woff = UINT64_MAX;
		b->ncps = 1;
		for (size_t i = 0; i < bb->nframes; i++) {
			if (bb->frames[i].coff < b->blob_size) /* not the end of the stream */
				b->cps[b->ncps++] = bb->frames[i];
		}
	} else if (bb->o->blob == INDEX_BLOB_GZIP) {
		size_t n_cp = index_zran_count(bb->z);

		b->cps = calloc(n_cp ? n_cp : 1, sizeof(*b->cps));
		if (!b->cps)
			return -ENOMEM;
		for (size_t i = 0; i < n_cp; i++) {
			const struct index_zran_cp *zc = index_zran_cp(bb->z, i);
			struct index_checkpoint *cp = &b->cps[i];

			cp->uoff = zc->uoff;
			cp->coff = zc->coff;
			cp->bits = zc->bits;
			cp->kind = zc->kind;
			cp->wlen = zc->wlen;
			cp->woff = UINT64_MAX;
			if (cp->wlen) {
				const uint8_t *w = index_zran_window(bb->z, i);
				int rc;

				util_sha256(w, cp->wlen, cp->window);
				if (bb->o->window_fn) {
					rc = bb->o->window_fn(bb->o->ctx, cp->window, w, cp->wlen);
					if (rc < 0)
						return rc;
				}
			}
		}
		b->ncps = n_cp;
	}
	return 0;
}

int index_layer_build_blob(struct index_reader src, const struct index_build_opts *o,
			   struct index_layer **out)
{
	struct blob_build bb = { o, { src, 0 }, NULL, NULL, 0, 0, 0 };
	struct index_reader counted = { count_read, &bb.count };
	struct index_decomp *d = NULL;
	struct index_reader tar;
	uint32_t cs = o->chunk_size ? o->chunk_size : INDEX_DEFAULT_CHUNK_SIZE;
	int rc;

	*out = NULL;
	switch (o->blob) {
	case INDEX_BLOB_TAR:
		tar = counted;
		break;
	case INDEX_BLOB_GZIP:
		rc = index_zran_new(counted, o->span, &bb.z);
		if (rc < 0)
			return rc;
		tar = index_zran_reader(bb.z);
		break;
	case INDEX_BLOB_ZSTD:
		rc = index_decomp_new(INDEX_COMP_ZSTD, counted, &d);
		if (rc < 0)
			return rc;
		index_decomp_on_frame(d, on_frame, &bb);
		tar = index_decomp_reader(d);
		break;
	default:
		return strata_err(EINVAL, "unknown blob kind %d", (int)o->blob);
	}
	rc = build(tar, cs, o->chunk_fn, o->ctx, blob_finish, &bb, out);
	index_zran_free(bb.z);
	index_decomp_free(d);
	free(bb.frames);
	return rc;
}

/* ---------------------------------------------------------------- decode */

static int bad(const char *what)
{
	return strata_err(EBADMSG, "corrupt layer index: %s", what);
}

static int valid_name(const char *s, uint32_t len)
{
	if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	return memchr(s, '/', len) == NULL && memchr(s, '\0', len) == NULL;
}

static int cmp_chunk_offset(const void *a, const void *b, void *arg)
{
	const struct index_chunk *chunks = arg;
	uint64_t x = chunks[*(const uint32_t *)a].offset, y = chunks[*(const uint32_t *)b].offset;

	return (x > y) - (x < y);
}

static int in_range(uint64_t off, uint64_t len, uint64_t limit)
{
	return off <= limit && len <= limit - off;
}

/* Validates a raw (uncompressed) index in mem and takes ownership of mem in all cases. */
static int decode_raw(void *mem, size_t len, struct index_layer **out)
{
	struct index_layer *l = NULL;
	const struct enc_header *h = mem;
	const char *p;
	uint64_t need;
	int rc;

	*out = NULL;
	if (len < sizeof(*h) || memcmp(h->magic, MAGIC, 8) != 0) {
		rc = bad("bad magic");
		goto fail;
	}
	if (h->version != INDEX_FORMAT_VERSION) {
		rc = strata_err(EPROTO, "layer index format version %u is not supported (this strata reads version %u)",
				h->version, INDEX_FORMAT_VERSION);
		goto fail;
	}
	need = sizeof(*h) + (uint64_t)h->ninodes * sizeof(struct index_inode) +
	       (uint64_t)h->ndirents * sizeof(struct index_dirent) +
	       (uint64_t)h->nchunks * sizeof(struct index_chunk) +
	       (uint64_t)h->nxattrs * sizeof(struct index_xattr) +
	       (uint64_t)h->ncheckpoints * sizeof(struct index_checkpoint);
	if (h->strtab_len > len || need != len - h->strtab_len) {
		rc = bad("section sizes do not add up");
		goto fail;
	}
	if (h->ninodes == 0 || h->chunk_size < INDEX_MIN_CHUNK_SIZE ||
	    h->chunk_size > INDEX_MAX_CHUNK_SIZE) {
		rc = bad("bad header");
		goto fail;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		rc = -ENOMEM;
		goto fail;
	}
	l->mem = mem;
	l->hdr = h;
	p = (const char *)mem + sizeof(*h);
	l->inodes = (const void *)p;
	p += (size_t)h->ninodes * sizeof(struct index_inode);
	l->dirents = (const void *)p;
	p += (size_t)h->ndirents * sizeof(struct index_dirent);
	l->chunks = (const void *)p;
	p += (size_t)h->nchunks * sizeof(struct index_chunk);
	l->xattrs = (const void *)p;
	p += (size_t)h->nxattrs * sizeof(struct index_xattr);
	l->cps = (const void *)p;
	p += (size_t)h->ncheckpoints * sizeof(struct index_checkpoint);
	l->strtab = p;

	if (!S_ISDIR(l->inodes[0].mode)) {
		rc = bad("root is not a directory");
		goto fail;
	}
	for (uint32_t i = 0; i < h->nxattrs; i++) {
		const struct index_xattr *x = &l->xattrs[i];

		if (!in_range(x->name_off, x->name_len, h->strtab_len) ||
		    !in_range(x->value_off, x->value_len, h->strtab_len) || x->name_len == 0) {
			rc = bad("xattr out of range");
			goto fail;
		}
	}
	for (uint32_t i = 0; i < h->ninodes; i++) {
		const struct index_inode *in = &l->inodes[i];

		if (!in_range(in->xattr_first, in->nxattrs, h->nxattrs)) {
			rc = bad("inode xattrs out of range");
			goto fail;
		}
		switch (in->mode & S_IFMT) {
		case S_IFDIR:
			if (!in_range(in->first, in->count, h->ndirents)) {
				rc = bad("directory entries out of range");
				goto fail;
			}
			for (uint32_t j = 0; j < in->count; j++) {
				const struct index_dirent *d = &l->dirents[in->first + j];

				if (!in_range(d->name_off, d->name_len, h->strtab_len) ||
				    !valid_name(l->strtab + d->name_off, d->name_len) ||
				    d->ino >= h->ninodes) {
					rc = bad("directory entry invalid");
					goto fail;
				}
				/* Children that are directories come later in BFS order: no cycles. */
				if (S_ISDIR(l->inodes[d->ino].mode) && d->ino <= i) {
					rc = bad("directory cycle");
					goto fail;
				}
				if (j > 0) {
					const struct index_dirent *pd = d - 1;
					uint32_t m = pd->name_len < d->name_len ? pd->name_len : d->name_len;
					int c = memcmp(l->strtab + pd->name_off, l->strtab + d->name_off, m);

					if (c > 0 || (c == 0 && pd->name_len >= d->name_len)) {
						rc = bad("directory entries not sorted");
						goto fail;
					}
				}
			}
			break;
		case S_IFREG: {
			uint64_t want = (in->size + h->chunk_size - 1) / h->chunk_size;

			if (!in_range(in->first, in->count, h->nchunks) || want != in->count) {
				rc = bad("file chunks out of range");
				goto fail;
			}
			for (uint32_t j = 0; j < in->count; j++) {
				uint64_t sz = in->size - (uint64_t)j * h->chunk_size;

				if (sz > h->chunk_size)
					sz = h->chunk_size;
				if (l->chunks[in->first + j].size != sz) {
					rc = bad("chunk size mismatch");
					goto fail;
				}
			}
			break;
		}
		case S_IFLNK:
			if (!in_range(in->first, in->size, h->strtab_len)) {
				rc = bad("symlink target out of range");
				goto fail;
			}
			break;
		case S_IFCHR:
		case S_IFBLK:
		case S_IFIFO:
		case S_IFSOCK:
			break;
		default:
			rc = bad("unknown file type");
			goto fail;
		}
	}
	/* Every directory but the root is named exactly once (no directory hard links). */
	{
		uint8_t *seen = calloc(h->ninodes, 1);

		if (!seen) {
			rc = -ENOMEM;
			goto fail;
		}
		rc = 0;
		for (uint32_t i = 0; i < h->ndirents && rc == 0; i++) {
			uint32_t ino = l->dirents[i].ino;

			if (S_ISDIR(l->inodes[ino].mode) && (ino == 0 || seen[ino]++))
				rc = bad("directory linked twice");
		}
		free(seen);
		if (rc < 0)
			goto fail;
	}
	if (h->blob_kind > INDEX_BLOB_ZSTD) {
		rc = bad("unknown blob kind");
		goto fail;
	}
	for (uint32_t i = 0; i < h->ncheckpoints; i++) {
		const struct index_checkpoint *cp = &l->cps[i];

		if (cp->kind > INDEX_CP_ZSTD_FRAME || cp->bits > 7 || cp->wlen > INDEX_ZRAN_WINDOW ||
		    cp->coff > h->blob_size || (cp->bits && cp->coff == 0) ||
		    (i > 0 && cp->uoff <= l->cps[i - 1].uoff) || (i == 0 && cp->uoff != 0)) {
			rc = bad("invalid checkpoint");
			goto fail;
		}
	}
	if ((h->blob_kind == INDEX_BLOB_GZIP || h->blob_kind == INDEX_BLOB_ZSTD) && !h->ncheckpoints) {
		rc = bad("compressed blob without checkpoints");
		goto fail;
	}
	l->by_offset = malloc((h->nchunks ? h->nchunks : 1) * sizeof(*l->by_offset));
	if (!l->by_offset) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < h->nchunks; i++)
		l->by_offset[i] = i;
	l->mem_len = len;
	qsort_r(l->by_offset, h->nchunks, sizeof(*l->by_offset), cmp_chunk_offset, (void *)l->chunks);
	*out = l;
	return 0;
fail:
	if (l)
		free(l->by_offset);
	free(l);
	free(mem);
	return rc;
}

int index_layer_decode(const void *buf, size_t len, struct index_layer **out)
{
	unsigned long long raw = ZSTD_getFrameContentSize(buf, len);
	void *mem;
	size_t n;

	*out = NULL;
	if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN || raw > MAX_DECODED)
		return bad("not a zstd frame with a known size");
	mem = malloc(raw ? raw : 1);
	if (!mem)
		return -ENOMEM;
	n = ZSTD_decompress(mem, raw, buf, len);
	if (ZSTD_isError(n) || n != raw) {
		free(mem);
		return bad(ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame");
	}
	return decode_raw(mem, n, out);
}

void index_layer_set_window_location(struct index_layer *l, uint32_t cp, uint64_t woff,
				     uint32_t wclen)
{
	struct index_checkpoint *c;

	assert(cp < l->hdr->ncheckpoints);
	c = (struct index_checkpoint *)&l->cps[cp]; /* l owns the memory */
	c->woff = woff;
	c->wclen = wclen;
}

int index_layer_encode(const struct index_layer *l, void **buf, size_t *len)
{
	size_t raw = sizeof(*l->hdr) + (size_t)(l->strtab - (const char *)l->mem) - sizeof(*l->hdr) +
		     l->hdr->strtab_len;
	size_t cap = ZSTD_compressBound(raw);
	void *out = malloc(cap);
	size_t n;

	if (!out)
		return -ENOMEM;
	n = ZSTD_compress(out, cap, l->mem, raw, 3);
	if (ZSTD_isError(n)) {
		free(out);
		return strata_err(EIO, "zstd: %s", ZSTD_getErrorName(n));
	}
	*buf = out;
	*len = n;
	return 0;
}

void index_layer_free(struct index_layer *l)
{
	if (!l)
		return;
	free(l->by_offset);
	free(l->mem);
	free(l);
}

/* ---------------------------------------------------------------- queries */

size_t index_layer_mem_size(const struct index_layer *l)
{
	return sizeof(*l) + l->mem_len + (size_t)(l->hdr->nchunks ? l->hdr->nchunks : 1) *
						    sizeof(*l->by_offset);
}

uint32_t index_layer_ninodes(const struct index_layer *l)
{
	return l->hdr->ninodes;
}

const struct index_inode *index_layer_inode(const struct index_layer *l, uint32_t ino)
{
	assert(ino < l->hdr->ninodes);
	return &l->inodes[ino];
}

const struct index_dirent *index_layer_dirent(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->ndirents);
	return &l->dirents[i];
}

const struct index_chunk *index_layer_chunk(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->nchunks);
	return &l->chunks[i];
}

const struct index_xattr *index_layer_xattr(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->nxattrs);
	return &l->xattrs[i];
}

uint32_t index_layer_nchunks(const struct index_layer *l)
{
	return l->hdr->nchunks;
}

const char *index_layer_str(const struct index_layer *l, uint32_t off)
{
	assert(off <= l->hdr->strtab_len);
	return l->strtab + off;
}

uint32_t index_layer_chunk_size(const struct index_layer *l)
{
	return l->hdr->chunk_size;
}

const uint8_t *index_layer_diff_id(const struct index_layer *l)
{
	return l->hdr->diff_id;
}

uint64_t index_layer_tar_size(const struct index_layer *l)
{
	return l->hdr->tar_size;
}

uint64_t index_layer_content_size(const struct index_layer *l)
{
	return l->hdr->content_size;
}

int64_t index_layer_lookup(const struct index_layer *l, uint32_t dir, const char *name, size_t len)
{
	const struct index_inode *d = index_layer_inode(l, dir);
	uint32_t lo = 0, hi;

	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	hi = d->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct index_dirent *e = &l->dirents[d->first + mid];
		size_t m = e->name_len < len ? e->name_len : len;
		int c = memcmp(l->strtab + e->name_off, name, m);

		if (c == 0)
			c = (e->name_len > len) - (e->name_len < len);
		if (c == 0)
			return e->ino;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

/* ---------------------------------------------------------------- random access */

enum index_blob index_layer_blob_kind(const struct index_layer *l)
{
	return (enum index_blob)l->hdr->blob_kind;
}

uint64_t index_layer_blob_size(const struct index_layer *l)
{
	return l->hdr->blob_size;
}

uint32_t index_layer_ncheckpoints(const struct index_layer *l)
{
	return l->hdr->ncheckpoints;
}

const struct index_checkpoint *index_layer_checkpoint(const struct index_layer *l, uint32_t i)
{
	assert(i < l->hdr->ncheckpoints);
	return &l->cps[i];
}

uint32_t index_layer_chunk_by_offset(const struct index_layer *l, uint32_t k)
{
	assert(k < l->hdr->nchunks);
	return l->by_offset[k];
}

uint32_t index_layer_chunk_rank(const struct index_layer *l, uint64_t uoff)
{
	uint32_t lo = 0, hi = l->hdr->nchunks;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (l->chunks[l->by_offset[mid]].offset < uoff)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int index_layer_span(const struct index_layer *l, uint64_t uoff, uint64_t uend, struct index_span *s)
{
	uint32_t n = l->hdr->ncheckpoints, lo = 0, hi = n;
	const struct index_checkpoint *cp;

	assert(uoff < uend);
	switch (l->hdr->blob_kind) {
	case INDEX_BLOB_TAR:
		s->cp = UINT32_MAX;
		s->cstart = s->ustart = uoff;
		s->cend = s->uend = uend;
		return 0;
	case INDEX_BLOB_GZIP:
	case INDEX_BLOB_ZSTD:
		break;
	default:
		return strata_err(ENOTSUP, "layer index has no random-access information");
	}
	/* last checkpoint at or before uoff (the first one is at 0) */
	while (lo + 1 < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (l->cps[mid].uoff <= uoff)
			lo = mid;
		else
			hi = mid;
	}
	cp = &l->cps[lo];
	s->cp = lo;
	s->cstart = cp->coff - (cp->bits ? 1 : 0);
	s->ustart = cp->uoff;
	/* the first checkpoint at or after uend bounds what must be fetched */
	s->cend = l->hdr->blob_size;
	s->uend = l->hdr->tar_size;
	for (uint32_t i = lo + 1; i < n; i++) {
		if (l->cps[i].uoff >= uend) {
			uint64_t end = l->cps[i].coff + (l->cps[i].kind == INDEX_CP_ZSTD_FRAME ? 0 : 1);

			if (end < s->cend)
				s->cend = end;
			s->uend = l->cps[i].uoff;
			break;
		}
	}
	return 0;
}

/* Decodes [skip, skip + len) of the zstd frames in comp. */
static int zstd_extract(const uint8_t *comp, size_t clen, uint64_t skip, uint8_t *out, size_t len)
{
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	ZSTD_inBuffer in = { comp, clen, 0 };
	uint8_t *scratch = malloc(ZSTD_DStreamOutSize());
	size_t got = 0;
	int rc = 0;

	if (!dc || !scratch) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < len) {
		ZSTD_outBuffer ob = { scratch, ZSTD_DStreamOutSize(), 0 };
		size_t r;
		size_t pos = 0;

		if (in.pos == in.size) {
			rc = strata_err(EPIPE, "truncated zstd span");
			goto out;
		}
		r = ZSTD_decompressStream(dc, &ob, &in);
		if (ZSTD_isError(r)) {
			rc = strata_err(EBADMSG, "corrupt zstd stream: %s", ZSTD_getErrorName(r));
			goto out;
		}
		if (skip) {
			pos = ob.pos < skip ? ob.pos : (size_t)skip;
			skip -= pos;
		}
		if (ob.pos > pos) {
			size_t k = ob.pos - pos < len - got ? ob.pos - pos : len - got;

			memcpy(out + got, scratch + pos, k);
			got += k;
		}
	}
out:
	free(scratch);
	ZSTD_freeDCtx(dc);
	return rc;
}

int index_layer_extract(const struct index_layer *l, const struct index_span *s,
			const uint8_t *window, const uint8_t *comp, size_t clen, uint64_t uoff,
			void *out, size_t len)
{
	const struct index_checkpoint *cp;
	struct index_zran_cp zc;

	assert(uoff >= s->ustart);
	if (s->cp == UINT32_MAX) {
		uint64_t at = uoff - s->cstart;

		if (at > clen || len > clen - at)
			return strata_err(EPIPE, "span too short");
		memcpy(out, comp + at, len);
		return 0;
	}
	cp = index_layer_checkpoint(l, s->cp);
	if (cp->kind == INDEX_CP_ZSTD_FRAME)
		return zstd_extract(comp, clen, uoff - cp->uoff, out, len);
	zc.uoff = cp->uoff;
	zc.coff = cp->coff;
	zc.bits = cp->bits;
	zc.kind = cp->kind;
	zc.wlen = cp->wlen;
	return index_zran_extract(&zc, window, comp, clen, uoff - cp->uoff, out, len);
}

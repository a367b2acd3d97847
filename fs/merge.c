/* SPDX-License-Identifier: Apache-2.0 */
/* An image's layer indexes merged into one tree as an OCI unpack would leave them: whiteouts and
 * opaque directories applied, replacement by name, hard links kept; iterative, bounded. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "index/layer.h"
#include "merge_i.h"
#include "util/log.h"

#define OPAQUE_XATTR "trusted.overlay.opaque"
#define NO_NODE	     UINT32_MAX

/* A layer directory still to merge into a merged directory. */
struct frame {
	uint32_t lnode, mnode;
};

struct stack {
	struct frame *v;
	size_t n, cap;
};

static int push(struct stack *s, uint32_t lnode, uint32_t mnode)
{
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		struct frame *nv = realloc(s->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = ncap;
	}
	s->v[s->n].lnode = lnode;
	s->v[s->n++].mnode = mnode;
	return 0;
}

/* The index's name order: memcmp, a prefix before what extends it. */
static int name_cmp(const char *a, size_t la, const char *b, size_t lb)
{
	int c = memcmp(a, b, la < lb ? la : lb);

	return c ? c : (la > lb) - (la < lb);
}

static int new_node(struct fs_merged *m, uint64_t src, uint32_t mode, uint32_t *out)
{
	if (m->nnodes >= FS_MERGE_MAX_NODES)
		return strata_err(EFBIG, "more than %u entries in the merged layers",
				  FS_MERGE_MAX_NODES);
	if (m->nnodes == m->capnodes) {
		uint32_t ncap = m->capnodes ? m->capnodes * 2 : 256;
		struct fs_mnode *nv = realloc(m->nodes, (size_t)ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		m->nodes = nv;
		m->capnodes = ncap;
	}
	memset(&m->nodes[m->nnodes], 0, sizeof(m->nodes[0]));
	m->nodes[m->nnodes].src = src;
	m->nodes[m->nnodes].mode = mode & S_IFMT;
	*out = m->nnodes++;
	return 0;
}

static int add_name(struct fs_merged *m, const char *s, uint32_t len, uint32_t *off)
{
	if (m->names_len + len > FS_MERGE_MAX_NAME_BYTES)
		return strata_err(EFBIG, "more than %u bytes of names in the merged layers",
				  FS_MERGE_MAX_NAME_BYTES);
	if (m->names_len + len > m->names_cap) {
		size_t ncap = m->names_cap ? m->names_cap : 4096;
		char *nv;

		while (ncap < m->names_len + len)
			ncap *= 2;
		nv = realloc(m->names, ncap);
		if (!nv)
			return -ENOMEM;
		m->names = nv;
		m->names_cap = ncap;
	}
	memcpy(m->names + m->names_len, s, len);
	*off = (uint32_t)m->names_len;
	m->names_len += len;
	return 0;
}

static int is_whiteout(const struct index_inode *in)
{
	return S_ISCHR(in->mode) && in->rdev == 0;
}

static int is_opaque(const struct index_layer *l, const struct index_inode *in)
{
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l, in->xattr_first + i);

		if (x->name_len == sizeof(OPAQUE_XATTR) - 1 &&
		    !memcmp(index_layer_str(l, x->name_off), OPAQUE_XATTR, x->name_len) &&
		    x->value_len == 1 && index_layer_str(l, x->value_off)[0] == 'y')
			return 1;
	}
	return 0;
}

/* The layer's state while its directories are merged. */
struct lmerge {
	const struct index_layer *l;
	uint64_t seq;
	uint32_t *links; /* index inode -> merged node + 1, for non-directories (hard links) */
	struct stack st;
};

/* The merged node for the entry de of a layer directory, given the merged child of that name
 * (NO_NODE: none). Directories to descend into are pushed. Returns 0 and *out (NO_NODE: the
 * name goes, a whiteout) or negative errno. */
static int entry_node(struct fs_merged *m, struct lmerge *lm, const struct index_dirent *de,
		      uint32_t existing, uint32_t *out)
{
	const struct index_inode *lc = index_layer_inode(lm->l, de->ino);
	uint64_t src = (lm->seq << 32) | de->ino;
	int rc;

	*out = NO_NODE;
	if (is_whiteout(lc))
		return 0;
	if (S_ISDIR(lc->mode)) {
		if (existing != NO_NODE && m->nodes[existing].mode == S_IFDIR) {
			/* the upper layer's attributes, unless it never named the directory */
			if (!(lc->flags & INDEX_INODE_IMPLICIT))
				m->nodes[existing].src = src;
			*out = existing;
		} else {
			rc = new_node(m, src, S_IFDIR, out);
			if (rc < 0)
				return rc;
		}
		return push(&lm->st, de->ino, *out);
	}
	if (lm->links[de->ino]) {
		*out = lm->links[de->ino] - 1;
		return 0;
	}
	rc = new_node(m, src, lc->mode, out);
	if (rc == 0)
		lm->links[de->ino] = *out + 1;
	return rc;
}

/* Merges layer directory f->lnode into merged directory f->mnode: the two sorted child lists
 * become one. Returns 0 or negative errno. */
static int merge_dir(struct fs_merged *m, struct lmerge *lm, struct frame f)
{
	const struct index_inode *in = index_layer_inode(lm->l, f.lnode);
	struct fs_mkid *old = m->nodes[f.mnode].kids;
	uint32_t nold = is_opaque(lm->l, in) ? 0 : m->nodes[f.mnode].nkids;
	size_t cap = (size_t)nold + in->count, k = 0;
	struct fs_mkid *kids = malloc((cap ? cap : 1) * sizeof(*kids));
	uint32_t i = 0, j = 0;
	int rc = 0;

	if (!kids)
		return -ENOMEM;
	while (i < nold || j < in->count) {
		const struct index_dirent *de = NULL;
		const char *name = NULL;
		uint32_t node, existing = NO_NODE, name_off = 0;
		int c = -1;

		if (j < in->count) {
			de = index_layer_dirent(lm->l, in->first + j);
			name = index_layer_str(lm->l, de->name_off);
			c = i < nold ? name_cmp(m->names + old[i].name_off, old[i].name_len, name,
						de->name_len) :
				       1;
		}
		if (c < 0) {
			kids[k++] = old[i++];
			continue;
		}
		if (c == 0)
			existing = old[i].node;
		rc = entry_node(m, lm, de, existing, &node);
		if (rc < 0)
			goto out;
		if (c == 0)
			name_off = old[i++].name_off;
		else if (node != NO_NODE && (rc = add_name(m, name, de->name_len, &name_off)) < 0)
			goto out;
		j++;
		if (node == NO_NODE)
			continue;
		kids[k].name_off = name_off;
		kids[k].name_len = de->name_len;
		kids[k++].node = node;
	}
	free(old);
	m->nodes[f.mnode].kids = kids;
	m->nodes[f.mnode].nkids = (uint32_t)k;
	return 0;
out:
	free(kids);
	return rc;
}

/* Merges layer l (store seq seq) over m. Returns 0 or negative errno. */
static int merge_layer(struct fs_merged *m, const struct index_layer *l, uint32_t seq)
{
	struct lmerge lm = { .l = l, .seq = seq };
	int rc;

	lm.links = calloc(index_layer_ninodes(l), sizeof(*lm.links));
	if (!lm.links)
		return -ENOMEM;
	if (!(index_layer_inode(l, 0)->flags & INDEX_INODE_IMPLICIT))
		m->nodes[0].src = (uint64_t)seq << 32;
	rc = push(&lm.st, 0, 0);
	while (rc == 0 && lm.st.n > 0)
		rc = merge_dir(m, &lm, lm.st.v[--lm.st.n]);
	free(lm.st.v);
	free(lm.links);
	return rc;
}

/* Counts the names of every reachable non-directory and the subdirectories of each directory. */
static int count_links(struct fs_merged *m)
{
	struct stack st = { 0 };
	int rc = push(&st, 0, 0);

	for (uint32_t i = 0; i < m->nnodes; i++)
		m->nodes[i].nlink = 0;
	while (rc == 0 && st.n > 0) {
		struct fs_mnode *d = &m->nodes[st.v[--st.n].mnode];

		d->nlink = 2;
		for (uint32_t k = 0; k < d->nkids && rc == 0; k++) {
			struct fs_mnode *c = &m->nodes[d->kids[k].node];

			if (c->mode != S_IFDIR) {
				c->nlink++;
				continue;
			}
			d->nlink++;
			rc = push(&st, 0, d->kids[k].node);
		}
	}
	free(st.v);
	return rc;
}

int fs_merged_build(const struct index_layer *const *layers, const uint32_t *seqs, size_t n,
		    struct fs_merged **out)
{
	struct fs_merged *m;
	uint32_t root;
	int rc = 0;

	*out = NULL;
	if (n == 0 || n > FS_MERGE_MAX_LAYERS)
		return strata_err(EINVAL, "an image of %zu layers cannot be merged (1 to %u)", n,
				  FS_MERGE_MAX_LAYERS);
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	rc = new_node(m, 0, S_IFDIR, &root);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = merge_layer(m, layers[i], seqs[i]);
	if (rc == 0)
		rc = count_links(m);
	if (rc < 0) {
		fs_merged_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

int64_t fs_merged_lookup(const struct fs_merged *m, uint32_t dir, const char *name, size_t len)
{
	const struct fs_mnode *d = &m->nodes[dir];
	uint32_t lo = 0, hi = d->nkids;

	if (d->mode != S_IFDIR)
		return -ENOTDIR;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct fs_mkid *k = &d->kids[mid];
		int c = name_cmp(m->names + k->name_off, k->name_len, name, len);

		if (c == 0)
			return k->node;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -ENOENT;
}

void fs_merged_free(struct fs_merged *m)
{
	if (!m)
		return;
	for (uint32_t i = 0; i < m->nnodes; i++)
		free(m->nodes[i].kids);
	free(m->nodes);
	free(m->names);
	free(m);
}

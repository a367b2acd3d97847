/* SPDX-License-Identifier: Apache-2.0 */
/* Semantic comparison of two layer indexes: the same tree, attributes, xattrs, links, chunks. */
#include "compare.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layer.h"

#define NONE	  UINT32_MAX
#define MAX_DEPTH 32 /* path components named in a difference; deeper ones are elided */

struct cmp {
	const struct index_layer *a, *b;
	enum index_cmp_mode mode;
	uint32_t *ma, *mb; /* inode of a -> its inode in b, and back; NONE: not seen */
	uint32_t *via;	   /* inode of a -> the dirent of a that named it first; NONE: the root */
	uint32_t *parent;  /* inode of a -> the directory holding that dirent */
	uint32_t *queue;   /* inodes of a whose pair is still to compare (each once) */
	size_t head, tail;
	char *why;
	size_t whycap;
};

/* Writes "<path of a's inode x>: <what>" into c->why and returns 0. */
static int differ(struct cmp *c, uint32_t x, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int differ(struct cmp *c, uint32_t x, const char *fmt, ...)
{
	const struct index_dirent *parts[MAX_DEPTH];
	size_t n = 0, off = 0;
	int elided = 0;
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	for (uint32_t i = x; c->via[i] != NONE; i = c->parent[i]) {
		if (n == MAX_DEPTH) {
			elided = 1;
			break;
		}
		parts[n++] = index_layer_dirent(c->a, c->via[i]);
	}
	if (!c->whycap)
		return 0;
	c->why[0] = '\0';
	if (elided)
		off += (size_t)snprintf(c->why, c->whycap, "...");
	while (n-- > 0 && off < c->whycap)
		off += (size_t)snprintf(c->why + off, c->whycap - off, "/%.*s",
					(int)parts[n]->name_len,
					index_layer_str(c->a, parts[n]->name_off));
	if (off == 0 && off < c->whycap)
		off += (size_t)snprintf(c->why, c->whycap, "/");
	if (off < c->whycap)
		snprintf(c->why + off, c->whycap - off, ": %s", what);
	return 0;
}

/* qsort_r order of xattr indexes by name. */
static int xattr_order(const void *p, const void *q, void *ctx)
{
	const struct index_layer *l = ctx;
	const struct index_xattr *x = index_layer_xattr(l, *(const uint32_t *)p);
	const struct index_xattr *y = index_layer_xattr(l, *(const uint32_t *)q);
	size_t m = x->name_len < y->name_len ? x->name_len : y->name_len;
	int r = memcmp(index_layer_str(l, x->name_off), index_layer_str(l, y->name_off), m);

	return r ? r : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int bytes_equal(const struct index_layer *a, uint32_t aoff, uint32_t alen,
		       const struct index_layer *b, uint32_t boff, uint32_t blen)
{
	return alen == blen &&
	       memcmp(index_layer_str(a, aoff), index_layer_str(b, boff), alen) == 0;
}

/* The xattrs of inodes ia and ib as sets. Returns 1 equal, 0 not (c->why set), -ENOMEM. */
static int xattrs_equal(struct cmp *c, uint32_t x, const struct index_inode *ia,
			const struct index_inode *ib)
{
	uint32_t *sa, *sb;
	int rc = 1;

	if (ia->nxattrs != ib->nxattrs)
		return differ(c, x, "%u xattrs, not %u", ia->nxattrs, ib->nxattrs);
	if (!ia->nxattrs)
		return 1;
	sa = malloc(ia->nxattrs * sizeof(*sa));
	sb = malloc(ib->nxattrs * sizeof(*sb));
	if (!sa || !sb) {
		free(sa);
		free(sb);
		return -ENOMEM;
	}
	for (uint32_t k = 0; k < ia->nxattrs; k++) {
		sa[k] = ia->xattr_first + k;
		sb[k] = ib->xattr_first + k;
	}
	qsort_r(sa, ia->nxattrs, sizeof(*sa), xattr_order, (void *)c->a);
	qsort_r(sb, ib->nxattrs, sizeof(*sb), xattr_order, (void *)c->b);
	for (uint32_t k = 0; k < ia->nxattrs && rc == 1; k++) {
		const struct index_xattr *xa = index_layer_xattr(c->a, sa[k]);
		const struct index_xattr *xb = index_layer_xattr(c->b, sb[k]);

		if (!bytes_equal(c->a, xa->name_off, xa->name_len, c->b, xb->name_off,
				 xb->name_len))
			rc = differ(c, x, "xattr %.*s is not in the other index", (int)xa->name_len,
				    index_layer_str(c->a, xa->name_off));
		else if (!bytes_equal(c->a, xa->value_off, xa->value_len, c->b, xb->value_off,
				      xb->value_len))
			rc = differ(c, x, "xattr %.*s has another value", (int)xa->name_len,
				    index_layer_str(c->a, xa->name_off));
	}
	free(sa);
	free(sb);
	return rc;
}

/* Whether mtimes agree: exactly, or within a second for a TOC. */
static int mtime_equal(const struct cmp *c, const struct index_inode *ia,
		       const struct index_inode *ib)
{
	int64_t ds, dn;

	if (ia->mtime_sec == ib->mtime_sec && ia->mtime_nsec == ib->mtime_nsec)
		return 1;
	if (c->mode != INDEX_CMP_TOC)
		return 0;
	ds = ia->mtime_sec - ib->mtime_sec;
	dn = (int64_t)ia->mtime_nsec - (int64_t)ib->mtime_nsec;
	if (ds > 1 || ds < -1)
		return 0;
	return ds * 1000000000 + dn < 1000000000 && ds * 1000000000 + dn > -1000000000;
}

/* Compares the attributes and content of inode x of a with inode y of b (not a directory's
 * entries). Returns 1 equal, 0 not, -ENOMEM. */
static int inode_equal(struct cmp *c, uint32_t x, uint32_t y)
{
	const struct index_inode *ia = index_layer_inode(c->a, x);
	const struct index_inode *ib = index_layer_inode(c->b, y);

	if (ia->mode != ib->mode)
		return differ(c, x, "mode %o, not %o", ia->mode, ib->mode);
	if (ia->uid != ib->uid || ia->gid != ib->gid)
		return differ(c, x, "owner %u:%u, not %u:%u", ia->uid, ia->gid, ib->uid, ib->gid);
	if (ia->nlink != ib->nlink)
		return differ(c, x, "%u links, not %u", ia->nlink, ib->nlink);
	if (!mtime_equal(c, ia, ib))
		return differ(c, x, "mtime %lld.%09u, not %lld.%09u", (long long)ia->mtime_sec,
			      ia->mtime_nsec, (long long)ib->mtime_sec, ib->mtime_nsec);
	if (ia->size != ib->size)
		return differ(c, x, "size %llu, not %llu", (unsigned long long)ia->size,
			      (unsigned long long)ib->size);
	if (ia->rdev != ib->rdev)
		return differ(c, x, "another device number");
	if (S_ISLNK(ia->mode) &&
	    (ia->size > UINT32_MAX || !bytes_equal(c->a, ia->first, (uint32_t)ia->size, c->b,
						   ib->first, (uint32_t)ib->size)))
		return differ(c, x, "another symlink target");
	if (S_ISREG(ia->mode)) {
		const struct index_extent *ea, *eb;
		uint32_t na, nb;

		index_layer_file_extents(c->a, ia, &ea, &na);
		index_layer_file_extents(c->b, ib, &eb, &nb);
		if ((ia->flags & INDEX_INODE_SPARSE) != (ib->flags & INDEX_INODE_SPARSE) ||
		    na != nb || (na && memcmp(ea, eb, na * sizeof(*ea)) != 0))
			return differ(c, x, "other holes");
		if (ia->count != ib->count)
			return differ(c, x, "%u chunks, not %u", ia->count, ib->count);
		for (uint32_t k = 0; k < ia->count; k++) {
			const struct index_chunk *ka = index_layer_chunk(c->a, ia->first + k);
			const struct index_chunk *kb = index_layer_chunk(c->b, ib->first + k);

			if (ka->size != kb->size || memcmp(ka->digest, kb->digest, 32) != 0)
				return differ(c, x, "chunk %u has other content", k);
		}
	}
	return xattrs_equal(c, x, ia, ib);
}

/* A root entry of b that a TOC's index leaves out. */
static int toc_skipped(const struct cmp *c, uint32_t y, const struct index_dirent *d)
{
	static const char *const names[] = { ".prefetch.landmark", ".no.prefetch.landmark" };

	if (c->mode != INDEX_CMP_TOC || y != 0)
		return 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (d->name_len == strlen(names[i]) &&
		    memcmp(index_layer_str(c->b, d->name_off), names[i], d->name_len) == 0)
			return 1;
	}
	return 0;
}

/* Pairs the entries of directory x of a with those of directory y of b (both sorted by name) and
 * queues the pairs not seen yet. Returns 1 equal so far, 0 not. */
static int dir_equal(struct cmp *c, uint32_t x, uint32_t y)
{
	const struct index_inode *ia = index_layer_inode(c->a, x);
	const struct index_inode *ib = index_layer_inode(c->b, y);
	uint32_t j = 0;

	for (uint32_t i = 0; i <= ia->count; i++, j++) {
		const struct index_dirent *da = i < ia->count ?
							index_layer_dirent(c->a, ia->first + i) :
							NULL;
		const struct index_dirent *db = NULL;

		while (j < ib->count) {
			db = index_layer_dirent(c->b, ib->first + j);
			if (!toc_skipped(c, y, db))
				break;
			db = NULL;
			j++;
		}
		if (!da && !db)
			return 1;
		if (!da)
			return differ(c, x, "entry %.*s is not in the other index",
				      (int)db->name_len, index_layer_str(c->b, db->name_off));
		if (!db || !bytes_equal(c->a, da->name_off, da->name_len, c->b, db->name_off,
					db->name_len))
			return differ(c, x, "entry %.*s is not in the other index",
				      (int)da->name_len, index_layer_str(c->a, da->name_off));
		if (c->ma[da->ino] == NONE && c->mb[db->ino] == NONE) {
			c->ma[da->ino] = db->ino;
			c->mb[db->ino] = da->ino;
			c->via[da->ino] = ia->first + i;
			c->parent[da->ino] = x;
			c->queue[c->tail++] = da->ino;
		} else if (c->ma[da->ino] != db->ino || c->mb[db->ino] != da->ino) {
			return differ(c, x, "entry %.*s is linked to another file",
				      (int)da->name_len, index_layer_str(c->a, da->name_off));
		}
	}
	return 1;
}

int index_layer_compare(const struct index_layer *a, const struct index_layer *b,
			enum index_cmp_mode mode, char *why, size_t whycap)
{
	struct cmp c = { .a = a, .b = b, .mode = mode, .why = why, .whycap = whycap };
	uint32_t na = index_layer_ninodes(a), nb = index_layer_ninodes(b);
	int rc = 1;

	if (whycap)
		why[0] = '\0';
	c.ma = malloc(na * sizeof(*c.ma));
	c.mb = malloc(nb * sizeof(*c.mb));
	c.via = malloc(na * sizeof(*c.via));
	c.parent = malloc(na * sizeof(*c.parent));
	c.queue = malloc(na * sizeof(*c.queue));
	if (!c.ma || !c.mb || !c.via || !c.parent || !c.queue) {
		rc = -ENOMEM;
		goto out;
	}
	memset(c.ma, 0xff, na * sizeof(*c.ma));
	memset(c.mb, 0xff, nb * sizeof(*c.mb));
	memset(c.via, 0xff, na * sizeof(*c.via));
	c.ma[0] = 0;
	c.mb[0] = 0;
	c.parent[0] = 0;
	c.queue[c.tail++] = 0;
	while (rc == 1 && c.head < c.tail) {
		uint32_t x = c.queue[c.head++], y = c.ma[x];

		rc = inode_equal(&c, x, y);
		if (rc == 1 && S_ISDIR(index_layer_inode(a, x)->mode))
			rc = dir_equal(&c, x, y);
	}
out:
	free(c.ma);
	free(c.mb);
	free(c.via);
	free(c.parent);
	free(c.queue);
	return rc;
}

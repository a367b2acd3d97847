/* SPDX-License-Identifier: Apache-2.0 */
/* getxattr and listxattr of layers/ and the images/ view: from the layer index (the overlay marker
 * merge.c applied is hidden in the view). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fs_i.h"
#include "als_i.h"
#include "rootfs_i.h"
#include "index/layer.h"

/* Finds xattr name of ino. Returns 0 with *l referenced (fs_layer_put) and *x in its index, or
 * negative errno (-ENODATA: no such xattr; *l is NULL then). */
static int find_xattr(struct fs *f, fuse_ino_t ino, const char *name, struct fs_layer **l,
		      const struct index_xattr **x)
{
	const struct index_inode *in;
	uint32_t node;
	size_t nlen = strlen(name);
	int rc;

	*l = NULL;
	*x = NULL;
	if (ino <= INO_STORE)
		return -ENODATA;
	if (fs_view_ino(ino) && fs_view_hidden_xattr(name, nlen))
		return -ENODATA;
	rc = fs_view_layer_ino(f, &ino);
	if (rc < 0)
		return rc == -EISDIR ? -ENODATA : rc;
	rc = fs_layer_of(&f->eng, ino, l, &node);
	if (rc < 0)
		return rc;
	in = index_layer_inode((*l)->idx, node);
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *c = index_layer_xattr((*l)->idx, in->xattr_first + i);

		if (c->name_len != nlen ||
		    memcmp(index_layer_str((*l)->idx, c->name_off), name, nlen))
			continue;
		*x = c;
		return 0;
	}
	fs_layer_put(&f->eng, *l);
	*l = NULL;
	return -ENODATA;
}

void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *f = fuse_req_userdata(req);
	const struct index_xattr *x;
	struct fs_layer *l;
	int rc = find_xattr(f, ino, name, &l, &x);

	if (rc == 0 && size != 0 && size < x->value_len)
		rc = -ERANGE;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, x->value_len);
	else /* from the index itself: put after the reply */
		fuse_reply_buf(req, index_layer_str(l->idx, x->value_off), x->value_len);
	fs_layer_put(&f->eng, l);
}

/* The names of ino's xattrs as listxattr returns them (each NUL-terminated): their length in
 * *total and, unless size (the caller's buffer) is 0, the names in *buf (malloc'd). Returns 0,
 * -ERANGE when they do not fit size, or negative errno. */
static int list_xattrs(struct fs *f, fuse_ino_t ino, size_t size, char **buf, size_t *total)
{
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node;
	size_t pos = 0;
	int view = fs_view_ino(ino);
	int rc;

	*buf = NULL;
	*total = 0;
	if (ino <= INO_STORE)
		return 0;
	rc = fs_view_layer_ino(f, &ino);
	if (rc < 0)
		return rc == -EISDIR ? 0 : rc;
	rc = fs_layer_of(&f->eng, ino, &l, &node);
	if (rc < 0)
		return rc;
	in = index_layer_inode(l->idx, node);
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l->idx, in->xattr_first + i);

		if (!view ||
		    !fs_view_hidden_xattr(index_layer_str(l->idx, x->name_off), x->name_len))
			*total += x->name_len + 1;
	}
	if (size == 0)
		goto out;
	if (size < *total) {
		rc = -ERANGE;
		goto out;
	}
	*buf = malloc(*total ? *total : 1);
	if (!*buf) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l->idx, in->xattr_first + i);

		if (view && fs_view_hidden_xattr(index_layer_str(l->idx, x->name_off), x->name_len))
			continue;
		memcpy(*buf + pos, index_layer_str(l->idx, x->name_off), x->name_len);
		pos += x->name_len;
		(*buf)[pos++] = '\0';
	}
out:
	fs_layer_put(&f->eng, l);
	return rc;
}

void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *f = fuse_req_userdata(req);
	char *buf;
	size_t total;
	int rc = list_xattrs(f, ino, size, &buf, &total);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, total);
	else
		fuse_reply_buf(req, buf, total);
	free(buf);
}

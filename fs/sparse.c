/* SPDX-License-Identifier: Apache-2.0 */
/* Sparse files: reads across holes (zeros, never stored) and lseek's SEEK_DATA / SEEK_HOLE. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_i.h"
#include "index/layer.h"

int fs_sparse_read(const struct index_layer *idx, const struct index_inode *in, uint64_t off,
		   uint64_t end, char *buf,
		   int (*read_data)(void *ctx, uint64_t pos, uint64_t end, char *dst), void *ctx)
{
	const struct index_extent *x;
	uint32_t n, k;
	uint64_t pos = off;

	index_layer_file_extents(idx, in, &x, &n);
	for (k = index_layer_extent_find(x, n, off); pos < end; k++) {
		uint64_t hole_end = k < n && x[k].offset < end ? x[k].offset : end;
		uint64_t data_end;
		int rc;

		if (pos < hole_end) {
			memset(buf + (pos - off), 0, hole_end - pos);
			pos = hole_end;
		}
		if (k >= n || pos >= end)
			break;
		data_end = x[k].offset + x[k].len < end ? x[k].offset + x[k].len : end;
		rc = read_data(ctx, x[k].data_off + (pos - x[k].offset),
			       x[k].data_off + (data_end - x[k].offset), buf + (pos - off));
		if (rc < 0)
			return rc;
		pos = data_end;
	}
	return 0;
}

/* Where the next data (SEEK_DATA) or hole (SEEK_HOLE) at or after off is in regular file in.
 * Returns the offset, or -ENXIO at or past its end (or for data in its last hole). */
static int64_t seek_in(const struct index_layer *idx, const struct index_inode *in, uint64_t off,
		       int whence)
{
	const struct index_extent *x;
	uint32_t n, k;

	if (off >= in->size)
		return -ENXIO;
	if (!(in->flags & INDEX_INODE_SPARSE))
		return whence == SEEK_DATA ? (int64_t)off : (int64_t)in->size;
	index_layer_file_extents(idx, in, &x, &n);
	k = index_layer_extent_find(x, n, off);
	if (whence == SEEK_DATA) {
		if (k == n)
			return -ENXIO;
		return (int64_t)(x[k].offset > off ? x[k].offset : off);
	}
	if (k < n && x[k].offset <= off)
		return (int64_t)(x[k].offset +
				 x[k].len); /* extents never touch: a hole or the end */
	return (int64_t)off;
}

void fs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node;
	int64_t rc;

	(void)fi;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL); /* the kernel answers the others itself */
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	rc = fs_layer_of(&f->eng, ino, &l, &node);
	if (rc < 0) {
		fuse_reply_err(req, (int)-rc);
		return;
	}
	in = index_layer_inode(l->idx, node);
	rc = S_ISREG(in->mode) ? seek_in(l->idx, in, (uint64_t)off, whence) : -EINVAL;
	fs_layer_put(&f->eng, l);
	if (rc < 0)
		fuse_reply_err(req, (int)-rc);
	else
		fuse_reply_lseek(req, (off_t)rc);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* MNT/images/<escaped ref>/rootfs: every registered image's layers merged (rootfs.c), the hooks
 * ops.c calls for its inodes. */
#ifndef STRATA_FS_ROOTFS_I_H
#define STRATA_FS_ROOTFS_I_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

struct fs;
struct fs_rootfs;

#define INO_IMAGES  3 /* MNT/images; 4 is MNT/store (als_i.h) */
#define IMAGES_NAME "images"
#define ROOTFS_NAME "rootfs"

/*
 * Inode numbers of the images/ view carry FS_VIEW_BIT (layer seqs stay below 2^31): the image's
 * slot in bits 32..61 (bit 62 marks the layer store's inodes, als_i.h), a hash of its reference and manifest digest (so the numbers are derivable
 * from the store, across a takeover too), and in the low 32 bits 0 for the image's directory or
 * the merged node + 1.
 */
#define FS_VIEW_BIT (1ull << 63)

/* An inode of images/ or of store/ (als_i.h). */
static inline int fs_view_ino(fuse_ino_t ino)
{
	return ino == INO_IMAGES || ino == 4 || (ino & FS_VIEW_BIT);
}

/* Creates the view's state (no image is read yet). Returns 0 and *out or -ENOMEM. */
int fs_rootfs_create(struct fs_rootfs **out);

/* Frees the view's state and every merged tree (NULL ok). No request may run. */
void fs_rootfs_free(struct fs_rootfs *r);

/* The operations below serve the inodes of store/ too, through als.c. */

/* Attributes of view inode ino. Returns 0 or negative errno (-ESTALE: an image no longer in
 * the store). */
int fs_view_stat(struct fs *f, fuse_ino_t ino, struct stat *st, double *timeout);

/* Looks name up in view directory parent (INO_IMAGES or an inode of the view): the escaped
 * reference of a registered image, its rootfs, or a merged entry. The first lookup of an image's
 * rootfs merges its layers (waiting for pending ones as a lookup of layers/ does). Returns 0 and
 * *e, or negative errno with strata_err set for what is not a plain -ENOENT. */
int fs_view_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);

/* The layer inode that view inode ino shows (its content, link target, xattrs) into *src, 0 for
 * a directory of the view itself; *mode its S_IFMT. Returns 0 or negative errno. */
int fs_view_src(struct fs *f, fuse_ino_t ino, fuse_ino_t *src, uint32_t *mode);

/* Lists view directory ino from entry off into *out (malloc'd, size bytes), as readdir (plus 0)
 * or readdirplus (plus 1); *used is the length filled. Returns 0 or negative errno. */
int fs_view_readdir(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off, int plus,
		    char **out, size_t *used);

/* The escaped form of ref (a normalized reference) as a directory name of images/: '%' becomes
 * "%25" and '/' "%2F". Returns the length written (without the NUL) or -ENAMETOOLONG when it does
 * not fit cap bytes. */
int fs_ref_escape(const char *ref, char *out, size_t cap);

/* The reference a directory name of images/ stands for. Returns its length or -ENOENT (not an
 * escaped reference: a '/', or '%' not followed by 25 or 2F), -ENAMETOOLONG. */
int fs_ref_unescape(const char *name, char *out, size_t cap);

/* Whether the xattr name (len bytes) is hidden in the merged view: the overlay opaque marker,
 * which the merge applied. */
int fs_view_hidden_xattr(const char *name, size_t len);

#endif

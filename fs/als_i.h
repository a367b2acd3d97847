/* SPDX-License-Identifier: Apache-2.0 */
/* MNT/store/<base64 ref>/<layer digest>/{diff,info,blob}: the podman / CRI-O additional layer
 * store (als.c); the hooks rootfs.c and ops.c call for its inodes. */
#ifndef STRATA_FS_ALS_I_H
#define STRATA_FS_ALS_I_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

#include "rootfs_i.h"

struct fs;
struct fs_als;

#define INO_STORE  4 /* MNT/store */
#define STORE_NAME "store"

/*
 * Inodes of the layer store carry FS_VIEW_BIT and FS_ALS_BIT, a 30-bit slot in bits 32..61 (a
 * hash of the normalized reference for a reference's directory, of the reference and the layer
 * digest for a layer's) and in the low 32 bits: ALS_LOW_REF for a reference's directory; for a
 * layer 0 (its directory), 1 (info), 2 (blob), or ALS_LOW_DIFF + the layer index inode (diff/).
 */
#define FS_ALS_BIT   (1ull << 62)
#define ALS_LOW_REF  0xffffffffu
#define ALS_LOW_INFO 1u
#define ALS_LOW_BLOB 2u
#define ALS_LOW_DIFF 16u

static inline int fs_als_ino(fuse_ino_t ino)
{
	return ino == INO_STORE || ((ino & FS_VIEW_BIT) && (ino & FS_ALS_BIT));
}

/* An info or blob file of the store (served by als.c, not by a layer). */
static inline int fs_als_file(fuse_ino_t ino)
{
	return fs_als_ino(ino) && ino != INO_STORE &&
	       ((uint32_t)ino == ALS_LOW_INFO || (uint32_t)ino == ALS_LOW_BLOB);
}

/* Creates the store view's state. Returns 0 and *out or -ENOMEM. */
int fs_als_create(struct fs_als **out);

/* Frees it (NULL ok): no request may run. */
void fs_als_free(struct fs_als *a);

/* The fs_view_* operations of rootfs_i.h for inodes of the layer store (fs_als_ino). */
int fs_als_stat(struct fs *f, fuse_ino_t ino, struct stat *st, double *timeout);
int fs_als_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e);
int fs_als_src(struct fs *f, fuse_ino_t ino, fuse_ino_t *src, uint32_t *mode);
int fs_als_readdir(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off, int plus,
		   char **out, size_t *used);

/* Opens info or blob (fs_als_file) read-only. A blob's first open downloads it whole (its digest
 * checked) into an unnamed file of the store directory, kept until the mount ends. Returns 0 or
 * negative errno. */
int fs_als_open(struct fs *f, fuse_ino_t ino, struct fuse_file_info *fi);

/* Replies to a read of info or blob (fs_als_file). */
void fs_als_read(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off);

/* The notification protocol of containers/storage: creating <layer>/use counts a use, rmdir of
 * <layer> a release. Both answer -ENOENT (a notification-aware store) for a layer of the store,
 * -EROFS for anything else. */
int fs_als_use(struct fs *f, fuse_ino_t parent, const char *name);
int fs_als_release(struct fs *f, fuse_ino_t parent, const char *name);

#endif

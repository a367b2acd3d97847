/* SPDX-License-Identifier: Apache-2.0 */
/* The FUSE operations but read (read.c) and xattrs (xattr.c): lookup, attributes, links,
 * directories, open, statfs, over MNT/layers/sha256:<hex>/. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "fs_i.h"
#include "als_i.h"
#include "rootfs_i.h"
#include "index/layer.h"
#include "store/store.h"
#include "stream.h"

/* ---------------------------------------------------------------- attributes */

static void view_stat(struct fs *f, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
	st->st_blksize = 4096;
	st->st_mtim = f->start;
	st->st_ctim = f->start;
	st->st_atim = f->start;
}

void fs_node_stat(const struct fs_layer *l, uint32_t node, struct stat *st)
{
	const struct index_inode *in = index_layer_inode(l->idx, node);

	memset(st, 0, sizeof(*st));
	st->st_ino = fs_layer_ino(l, node);
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_size = (off_t)in->size;
	st->st_rdev = in->rdev;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((in->size + 511) / 512);
	if (S_ISREG(in->mode)) { /* a sparse file's holes take no blocks */
		const struct index_extent *x;
		uint32_t n;

		st->st_blocks = (blkcnt_t)((index_layer_file_extents(l->idx, in, &x, &n) + 511) /
					   512);
	}
	st->st_mtim.tv_sec = in->mtime_sec;
	st->st_mtim.tv_nsec = in->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

/* Fills st for any inode. Returns 0 or negative errno. */
static int any_stat(struct fs *f, fuse_ino_t ino, struct stat *st, double *timeout)
{
	struct fs_layer *l;
	uint32_t node;
	int rc;

	if (ino == INO_ROOT || ino == INO_LAYERS) {
		view_stat(f, ino, st);
		if (ino == INO_ROOT)
			st->st_nlink = 5;
		*timeout = FS_VIEW_TIMEOUT;
		return 0;
	}
	if (fs_view_ino(ino))
		return fs_view_stat(f, ino, st, timeout);
	rc = fs_layer_of(&f->eng, ino, &l, &node);
	if (rc < 0)
		return rc;
	fs_node_stat(l, node, st);
	fs_layer_put(&f->eng, l);
	*timeout = FS_CONTENT_TIMEOUT;
	return 0;
}

/* ---------------------------------------------------------------- lookup, getattr, readlink */

int fs_layer_load_wait(struct fs *f, const char *digest, struct fs_layer **out)
{
	int rc = fs_layer_load(&f->eng, digest, out);

	if (rc == -ENOENT && f->streamer) {
		rc = fs_streamer_wait(f->streamer, digest);
		if (rc == 0)
			rc = fs_layer_load(&f->eng, digest, out);
	}
	return rc;
}

static int do_lookup(struct fs *f, fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct fs_layer *l = NULL;
	uint32_t node;
	int64_t child;
	int rc;

	memset(e, 0, sizeof(*e));
	if (parent == INO_ROOT) {
		if (strcmp(name, LAYERS_NAME) == 0)
			e->ino = INO_LAYERS;
		else if (strcmp(name, IMAGES_NAME) == 0)
			e->ino = INO_IMAGES;
		else if (strcmp(name, STORE_NAME) == 0)
			e->ino = INO_STORE;
		else
			return -ENOENT;
		rc = any_stat(f, e->ino, &e->attr, &e->attr_timeout);
		e->entry_timeout = e->attr_timeout;
		return rc;
	}
	if (fs_view_ino(parent))
		return fs_view_lookup(f, parent, name, e);
	if (parent == INO_LAYERS) {
		if (strncmp(name, "sha256:", 7) != 0 || strlen(name) != 71)
			return -ENOENT;
		rc = fs_layer_load_wait(f, name, &l);
		if (rc < 0)
			return rc == -ENOENT ? -ENOENT : rc;
		child = 0;
	} else {
		rc = fs_layer_of(&f->eng, parent, &l, &node);
		if (rc < 0)
			return rc;
		child = index_layer_lookup(l->idx, node, name, strlen(name));
		if (child < 0) {
			fs_layer_put(&f->eng, l);
			return (int)child;
		}
	}
	/* stat through the reference held: the layer is not loaded twice */
	e->ino = fs_layer_ino(l, (uint32_t)child);
	fs_node_stat(l, (uint32_t)child, &e->attr);
	e->attr_timeout = FS_CONTENT_TIMEOUT;
	e->entry_timeout = e->attr_timeout;
	fs_layer_put(&f->eng, l);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *f = fuse_req_userdata(req);
	struct fuse_entry_param e;
	int rc = do_lookup(f, parent, name, &e);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct stat st;
	double timeout;
	int rc = any_stat(f, ino, &st, &timeout);

	(void)fi;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, timeout);
}

int fs_view_layer_ino(struct fs *f, fuse_ino_t *ino)
{
	fuse_ino_t src;
	uint32_t mode;
	int rc;

	if (!fs_view_ino(*ino))
		return 0;
	rc = fs_view_src(f, *ino, &src, &mode);
	if (rc < 0)
		return rc;
	if (!src)
		return -EISDIR;
	*ino = src;
	return 0;
}

/* The target of symlink ino, malloc'd into *target. Returns 0 or negative errno. */
static int do_readlink(struct fs *f, fuse_ino_t ino, char **target)
{
	const struct index_inode *in;
	struct fs_layer *l;
	uint32_t node;
	int link;
	int rc = fs_view_layer_ino(f, &ino);

	*target = NULL;
	if (rc < 0)
		return rc == -EISDIR ? -EINVAL : rc;
	rc = fs_layer_of(&f->eng, ino, &l, &node);
	if (rc < 0)
		return ino <= INO_STORE ? -EINVAL : rc;
	in = index_layer_inode(l->idx, node);
	link = S_ISLNK(in->mode);
	*target = link ? strndup(index_layer_str(l->idx, in->first), in->size) : NULL;
	fs_layer_put(&f->eng, l); /* in is gone from here on */
	if (!link)
		return -EINVAL;
	return *target ? 0 : -ENOMEM;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *f = fuse_req_userdata(req);
	char *target;
	int rc = do_readlink(f, ino, &target);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, target);
	free(target);
}

/* ---------------------------------------------------------------- directories */

/*
 * Handles of layers/ name a snapshot of the store's layer list, kept in a table here: fi->fh is a
 * number, never a pointer, so a handle issued by a process that handed the mount over to this one
 * is only a number we do not know. Such a handle gets a fresh snapshot on its first readdir (the
 * list is in the store's order, so offsets keep their meaning) and is forgotten on releasedir.
 */
struct dir_handle {
	uint64_t fh;
	struct digest_list list;
	struct dir_handle *next;
};

/* Returns the handle fh of layers/, creating it (a fresh snapshot) when create is set and this
 * process does not know it. NULL on error (strata_err set) or when absent. The kernel does not
 * release a handle while a readdir on it runs, so the result stays valid for the request. */
static struct dir_handle *dh_get(struct fs *f, uint64_t fh, int create, int *err)
{
	struct dir_handle *h;
	int rc;

	*err = 0;
	pthread_mutex_lock(&f->dh_mu);
	for (h = f->dh; h; h = h->next) {
		if (h->fh == fh)
			break;
	}
	pthread_mutex_unlock(&f->dh_mu);
	if (h || !create)
		return h;
	h = calloc(1, sizeof(*h));
	if (!h) {
		*err = -ENOMEM;
		return NULL;
	}
	h->fh = fh;
	/* Pending layers too (their entries wait until they have streamed), listed first: a layer
	 * that finishes in between (its record and the end of its pending record are one write) is
	 * then in both lists, never in neither. */
	rc = f->streamer ? store_pending_list(f->eng.store, fs_collect_layer_cb, &h->list) : 0;
	if (rc == 0)
		rc = store_layer_list(f->eng.store, fs_collect_new_layer_cb, &h->list);
	if (rc < 0) {
		free(h->list.names);
		free(h);
		*err = rc;
		return NULL;
	}
	pthread_mutex_lock(&f->dh_mu);
	h->next = f->dh;
	f->dh = h;
	pthread_mutex_unlock(&f->dh_mu);
	return h;
}

static void dh_drop(struct fs *f, uint64_t fh)
{
	struct dir_handle *h = NULL;

	pthread_mutex_lock(&f->dh_mu);
	for (struct dir_handle **pp = &f->dh; *pp; pp = &(*pp)->next) {
		if ((*pp)->fh == fh) {
			h = *pp;
			*pp = h->next;
			break;
		}
	}
	pthread_mutex_unlock(&f->dh_mu);
	if (h) {
		free(h->list.names);
		free(h);
	}
}

void fs_dir_handles_free(struct fs *f)
{
	while (f->dh) {
		struct dir_handle *h = f->dh;

		f->dh = h->next;
		free(h->list.names);
		free(h);
	}
}

/* Opens directory ino: fi->fh is 0, or a handle of layers/ (dh_get). Returns 0 or negative errno. */
static int do_opendir(struct fs *f, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	double t;
	int rc;

	fi->fh = 0;
	if (ino != INO_ROOT && ino != INO_LAYERS) {
		rc = any_stat(f, ino, &st, &t);
		if (rc < 0)
			return rc;
		if (!S_ISDIR(st.st_mode))
			return -ENOTDIR;
		if (ino == INO_IMAGES || ino == INO_STORE)
			return 0;
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
		return 0;
	}
	if (ino == INO_LAYERS) {
		/* Numbers from a random base: they do not repeat those of the process before us. */
		fi->fh = atomic_fetch_add_explicit(&f->dh_next, 1, memory_order_relaxed) + 1;
		if (!dh_get(f, fi->fh, 1, &rc))
			return rc;
	}
	return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	int rc = do_opendir(f, ino, fi);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_open(req, fi);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	if (ino == INO_LAYERS)
		dh_drop(f, fi->fh); /* unknown (an earlier process's, never read here): nothing */
	fuse_reply_err(req, 0);
}

/*
 * The idx-th entry of directory ino (0 ".", 1 "..", then children). Returns 1 and fills name/child,
 * 0 past the end, negative errno on error. name must hold NAME_MAX + 1 bytes. dl is ino's layer
 * (referenced by the caller) for a directory inside a layer. For an entry of layers/, *cl is set
 * to the child's layer, referenced (layer_put); otherwise it is left NULL.
 */
static int dir_entry(struct fs *f, fuse_ino_t ino, struct digest_list *d, struct fs_layer *dl,
		     uint32_t node, off_t idx, char *name, fuse_ino_t *child, struct fs_layer **cl)
{
	int rc;

	*cl = NULL;
	if (idx < 2) {
		strcpy(name, idx == 0 ? "." : "..");
		*child = ino; /* the kernel does not use the ".." inode number */
		return 1;
	}
	idx -= 2;
	if (ino == INO_ROOT) {
		static const char *const names[] = { LAYERS_NAME, IMAGES_NAME, STORE_NAME };
		static const fuse_ino_t inos[] = { INO_LAYERS, INO_IMAGES, INO_STORE };

		if (idx > 2)
			return 0;
		strcpy(name, names[idx]);
		*child = inos[idx];
		return 1;
	}
	if (ino == INO_LAYERS) {
		if (!d || (size_t)idx >= d->n)
			return 0;
		strcpy(name, d->names[idx]);
		rc = fs_layer_load_wait(f, name, cl);
		if (rc < 0)
			return rc;
		*child = fs_layer_ino(*cl, 0);
		return 1;
	}
	{
		const struct index_inode *in = index_layer_inode(dl->idx, node);
		const struct index_dirent *de;

		if ((uint64_t)idx >= in->count)
			return 0;
		de = index_layer_dirent(dl->idx, in->first + (uint32_t)idx);
		if (de->name_len > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(name, index_layer_str(dl->idx, de->name_off), de->name_len);
		name[de->name_len] = '\0';
		*child = fs_layer_ino(dl, de->ino);
	}
	return 1;
}

/* Attributes of a child listed by dir_entry: from the layer it was found through (cl for an entry
 * of layers/, else dl, the directory's), without loading anything. */
static void entry_stat(struct fs *f, fuse_ino_t child, struct fs_layer *dl, struct fs_layer *cl,
		       struct stat *st, double *timeout)
{
	if (child <= INO_STORE) {
		any_stat(f, child, st, timeout); /* cannot fail */
		return;
	}
	fs_node_stat(cl ? cl : dl, (uint32_t)child, st);
	*timeout = FS_CONTENT_TIMEOUT;
}

/* Lists directory ino from entry off on into *out (malloc'd, size bytes), as readdir (plus 0) or
 * readdirplus (plus 1) do; *used is the length filled. Returns 0 or negative errno (the entries
 * listed before an error stay in *out). */
static int readdir_fill(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi, int plus, char **out, size_t *used)
{
	struct digest_list *d = NULL;
	struct fs_layer *dl = NULL;
	uint32_t node = 0;
	char *buf;
	char name[NAME_MAX + 1];
	int rc = 0;

	if (fs_view_ino(ino))
		return fs_view_readdir(req, f, ino, size, off, plus, out, used);
	*out = NULL;
	*used = 0;
	if (ino == INO_LAYERS) {
		struct dir_handle *h = dh_get(f, fi->fh, 1, &rc);

		if (!h)
			return rc;
		d = &h->list;
	} else if (ino != INO_ROOT) {
		/* one reference for the whole request: every entry is in this layer */
		rc = fs_layer_of(&f->eng, ino, &dl, &node);
		if (rc < 0)
			return rc;
	}
	buf = malloc(size);
	if (!buf) {
		fs_layer_put(&f->eng, dl);
		return -ENOMEM;
	}
	*out = buf;
	for (off_t idx = off;; idx++) {
		struct fs_layer *cl;
		fuse_ino_t child;
		size_t need;

		rc = dir_entry(f, ino, d, dl, node, idx, name, &child, &cl);
		if (rc <= 0)
			break;
		if (plus) {
			struct fuse_entry_param e;

			memset(&e, 0, sizeof(e));
			if (idx < 2) {
				e.attr.st_ino = child;
				e.attr.st_mode = S_IFDIR;
			} else {
				e.ino = child;
				entry_stat(f, child, dl, cl, &e.attr, &e.attr_timeout);
				e.entry_timeout = e.attr_timeout;
			}
			need = fuse_add_direntry_plus(req, buf + *used, size - *used, name, &e,
						      idx + 1);
		} else {
			struct stat st;

			memset(&st, 0, sizeof(st));
			st.st_ino = child;
			if (idx < 2 || child <= INO_STORE || (child & 0xffffffffu) == 0) {
				st.st_mode = S_IFDIR;
			} else {
				double t;

				entry_stat(f, child, dl, cl, &st, &t);
			}
			need = fuse_add_direntry(req, buf + *used, size - *used, name, &st,
						 idx + 1);
		}
		fs_layer_put(&f->eng, cl);
		if (need > size - *used) {
			rc = 0;
			break;
		}
		*used += need;
	}
	fs_layer_put(&f->eng, dl);
	return rc;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, int plus)
{
	struct fs *f = fuse_req_userdata(req);
	char *buf;
	size_t used;
	int rc = readdir_fill(req, f, ino, size, off, fi, plus, &buf, &used);

	if (rc < 0 && used == 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}

/* ---------------------------------------------------------------- files */

/* Opens file ino read-only and counts it open. Returns 0 or negative errno. */
static int do_open(struct fs *f, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_layer *l;
	uint32_t node;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	if (ino <= INO_STORE)
		return -EISDIR;
	rc = fs_layer_of(&f->eng, ino, &l, &node);
	if (rc < 0)
		return rc;
	if (S_ISDIR(index_layer_inode(l->idx, node)->mode)) {
		fs_layer_put(&f->eng, l);
		return -EISDIR;
	}
	fs_layer_touch(&f->eng, l);
	fs_layer_put(&f->eng, l);
	rc = fs_open_count(f, ino, 1);
	if (rc < 0)
		return rc;
	fi->keep_cache = 1;
	return 0;
}

/* Opens ino (of the images/ view: the layer file it shows, counted open under its layer inode). */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	int rc;

	if (fs_als_file(ino)) {
		rc = fs_als_open(f, ino, fi);
		if (rc < 0)
			fuse_reply_err(req, -rc);
		else
			fuse_reply_open(req, fi);
		return;
	}
	rc = fs_view_layer_ino(f, &ino);
	if (rc == 0)
		rc = do_open(f, ino, fi);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (fuse_reply_open(req, fi) == -ENOENT) /* interrupted: no release will come */
		fs_open_count(f, ino, -1);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	(void)fi;
	if (fs_view_layer_ino(f, &ino) == 0) /* the number op_open counted */
		fs_open_count(f, ino, -1);
	fuse_reply_err(req, 0);
}

/* Reads ino (of the images/ view: the layer file it shows). */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	int rc;

	if (fs_als_file(ino)) {
		fs_als_read(req, f, ino, size, off);
		return;
	}
	rc = fs_view_layer_ino(f, &ino);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fs_op_read(req, ino, size, off, fi);
}

/* SEEK_DATA/SEEK_HOLE of ino (of layers/ or the images/ view); MNT/store's info and blob files
 * are not sparse and have no lseek of their own. */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	int rc;

	if (fs_als_file(ino)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	rc = fs_view_layer_ino(f, &ino);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fs_op_lseek(req, ino, off, whence, fi);
}

/* Creating a file is refused, but for the "use" notification of MNT/store (als.c), which is
 * answered ENOENT as containers/storage expects of a notification-aware store. Reached only
 * where the mount is not read-only to the kernel. */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)mode;
	(void)fi;
	fuse_reply_err(req, -fs_als_use(fuse_req_userdata(req), parent, name));
}

/* rmdir is refused, but for the release notification of a layer of MNT/store (als.c). */
static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -fs_als_release(fuse_req_userdata(req), parent, name));
}

/* ---------------------------------------------------------------- statfs */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *f = fuse_req_userdata(req);
	struct store_stats ss;
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	store_get_stats(f->eng.store, &ss);
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = (ss.disk_bytes + 4095) / 4096;
	sv.f_files = ss.chunks;
	sv.f_namemax = NAME_MAX;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Reads of up to a chunk: libfuse's buffer already allows 1 MiB (max_pages 256). */
	conn->max_readahead = FS_READAHEAD_BYTES;
	fs_mount_readahead(userdata);
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.open = op_open,
	.release = op_release,
	.read = op_read,
	.lseek = op_lseek,
	.create = op_create,
	.rmdir = op_rmdir,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.getxattr = fs_op_getxattr,
	.listxattr = fs_op_listxattr,
};

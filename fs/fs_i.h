/* SPDX-License-Identifier: Apache-2.0 */
/* The mount's insides (struct fs: session, /dev/fuse io, open files), shared by fs/'s files. */
#ifndef STRATA_FS_FS_I_H
#define STRATA_FS_FS_I_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include <fuse_lowlevel.h>

#include "engine_i.h"
#include "fs.h"

struct fs_streamer;
struct dir_handle;
struct fs_rootfs;
struct fs_als;

/* The two synthetic directories; a layer's inodes are numbered as fs_layer_of says (engine_i.h). */
#define INO_ROOT    FUSE_ROOT_ID
#define INO_LAYERS  2
#define LAYERS_NAME "layers"

#define FS_CONTENT_TIMEOUT 86400.0 /* layer content is immutable */
#define FS_VIEW_TIMEOUT	   1.0	   /* synthetic directories change as images are pulled */

/* The kernel's FUSE_INIT request as saved for a handover: the header and fuse_init_in (up to 64
 * bytes in 7.36+); more is not expected. */
#define INIT_MAX	 256
#define FUSE_OPCODE_INIT 26

struct in_header { /* struct fuse_in_header of <linux/fuse.h> (not installed with fuse3) */
	uint32_t len, opcode;
	uint64_t unique, nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen, padding;
};

/* What the FUSE workers read through (see io_read in devio.c). */
struct fs_io {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_key_t holding; /* a worker's: it returned a request and has not asked for the next */
	int key_ok;
	int wake;		/* eventfd, readable while readers must not poll /dev/fuse */
	int paused;		/* no new reads; protected by mu */
	int closing;		/* handed over: readers end the loop; protected by mu */
	int handed_over;	/* protected by mu */
	int busy;		/* requests read and not yet finished; protected by mu */
	uint8_t init[INIT_MAX]; /* the kernel's FUSE_INIT; protected by mu */
	size_t init_len;	/* protected by mu */
	int replay;		/* adopted: the next read returns init; protected by mu */
	int init_wait;		/* a replayed INIT is being processed; protected by mu */
	uint64_t init_unique;
};

/* An inode open on the mount, and how many times. */
struct open_ino {
	fuse_ino_t ino;
	unsigned count;
};

struct fs {
	struct fs_engine eng;
	struct fuse_session *se;
	char *mountpoint;
	int mounted;
	int signals_set;
	unsigned max_threads;
	struct timespec start;
	int bg_wanted;
	struct fs_streamer *streamer; /* streams pending layers; NULL without fetch */
	int read_timeout_ms;
	pthread_mutex_t dh_mu;
	struct dir_handle *dh;	  /* handles of layers/; protected by dh_mu */
	_Atomic uint64_t dh_next; /* the last handle number given */
	struct fs_io io;
	int adopted;		  /* serves a mount another process made (fs_adopt) */
	char *source;		  /* mount source, for a handover */
	pthread_mutex_t open_mu;  /* held by op_open/op_release briefly, by an eviction batch */
	struct open_ino *opens;	  /* files open on the mount; protected by open_mu */
	size_t nopens, capopens;  /* protected by open_mu */
	struct fs_rootfs *rootfs; /* the images/ view (rootfs.c) */
	struct fs_als *als;	  /* the store/ view (als.c) */
};

/* ---- FUSE operations (ops.c, read.c) */

/* The low-level operations a session serves (fuse_session_new's userdata is the struct fs). */
extern const struct fuse_lowlevel_ops fs_ops;

/* The read operation (read.c): a file's bytes from the chunk cache, the store or the registry. */
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);

/* ---- sparse files (sparse.c) */

/* lseek's SEEK_DATA and SEEK_HOLE on a layer's file: holes of sparse files as the index records them,
 * any other file all data. */
void fs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);

/*
 * Fills buf with bytes [off, end) of sparse file in of layer index idx (borrowed): holes as zeros,
 * the data of its extents through read_data(ctx, data_start, data_end, dst), which copies that range
 * of the file's data bytes (what its chunks hold) to dst. Returns 0 or read_data's error.
 */
int fs_sparse_read(const struct index_layer *idx, const struct index_inode *in, uint64_t off,
		   uint64_t end, char *buf,
		   int (*read_data)(void *ctx, uint64_t pos, uint64_t end, char *dst), void *ctx);
/* Fills st with the attributes of inode node of layer l (referenced by the caller). */
void fs_node_stat(const struct fs_layer *l, uint32_t node, struct stat *st);

/* fs_layer_load(), waiting for a pending layer (recorded by a pull, its blob streaming) to be
 * streamed, verified and indexed: bounded while the stream makes progress. Returns 0 and *out
 * referenced (fs_layer_put), or negative errno. */
int fs_layer_load_wait(struct fs *f, const char *digest, struct fs_layer **out);

/* One entry of a listing fs_dir_fill makes: i counts from 0 after "." and "..". Fills name
 * (NAME_MAX + 1 bytes) and attr (st_ino and st_mode; all of it when plus). Returns 1, 0 past the
 * last entry, or negative errno. */
typedef int (*fs_dir_entry_fn)(void *ctx, size_t i, int plus, char *name, struct stat *attr);

/*
 * Lists directory ino (of a view strata makes up: images/, store/) from offset off into a new
 * buffer of size bytes (*out, the caller frees it, also on error; *used the bytes filled): "." and
 * "..", then fn's entries, each valid for timeout seconds, until the buffer is full or fn ends.
 * Returns 0 or fn's error.
 */
int fs_dir_fill(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus, double timeout,
		fs_dir_entry_fn fn, void *ctx, char **out, size_t *used);

/* For an inode of the images/ view, *ino becomes the layer inode it shows (other inodes are left
 * as they are). Returns 0, -EISDIR for a directory of the view itself, or negative errno. */
int fs_view_layer_ino(struct fs *f, fuse_ino_t *ino);

/* getxattr and listxattr (xattr.c). */
void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);

/* Frees the handles of layers/ (no request may run). */
void fs_dir_handles_free(struct fs *f);

/* ---- /dev/fuse io (devio.c) */

/* Sets up f->io (f->io.wake must be -1 before, for fs_io_destroy). Returns 0 or negative errno. */
int fs_io_init(struct fs *f);

/* Serves fd through the paused-aware reader of devio.c. fd becomes the session's (closed by
 * fuse_session_destroy) only on success. Returns 0 or negative errno with strata_err set. */
int fs_io_attach(struct fs *f, int fd);

/* Frees what fs_io_init set up. */
void fs_io_destroy(struct fs_io *io);

/* Wakes the workers waiting to read a request (caller holds io->mu). */
void fs_io_kick(struct fs_io *io);

/* ---- session (session.c, handover.c) */

/* Allocates the fs for mountpoint real (absolute) and creates its session, unmounted. Returns 0 and
 * *out, or negative errno (everything freed). */
int fs_session_create(struct store *store, const struct fs_opts *opts, const char *real,
		      struct fs **out);

/* Adds delta (+1 open, -1 release) to ino's open count. Returns 0 or -ENOMEM. */
int fs_open_count(struct fs *f, fuse_ino_t ino, int delta);

/* The kernel's readahead on the mount (and the largest FUSE read): a whole default chunk, so a
 * sequential reader costs one FUSE read and one store read per chunk (128 KiB by default: eight
 * reads of each chunk). */
#define FS_READAHEAD_BYTES (1u << 20)

/* Raises the readahead of f's mount to FS_READAHEAD_BYTES (its bdi's read_ahead_kb in sysfs);
 * needs root, logs at debug level when it cannot. Called from the INIT handler: the kernel then
 * keeps the smaller of this and the INIT reply's max_readahead. */
void fs_mount_readahead(struct fs *f);

/* Detaches the mount this process adopted (handover.c), unless the kernel already ended it. */
void fs_adopted_unmount(struct fs *f);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The files of a layer of MNT/store: info (the JSON containers/storage reads) and blob (the
 * compressed layer, downloaded whole and digest-checked on first use). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "als_i.h"
#include "als_layer_i.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "fs_i.h"
#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"

#define COMPRESS_NONE 0 /* containers/storage's archive.Compression values */
#define COMPRESS_GZIP 2
#define COMPRESS_ZSTD 4

/* Loads l's layer (waiting for a pending one); sets l->seq. Returns 0 with *out referenced. */
int fs_als_layer_of(struct fs *f, struct alayer *l, struct fs_layer **out)
{
	int rc = fs_layer_load_wait(f, l->digest, out);

	if (rc == 0)
		atomic_store(&l->seq, (*out)->seq);
	return rc;
}

/* Makes l's info file (once). Returns 0 or negative errno. */
int fs_als_make_info(struct fs *f, struct alayer *l)
{
	struct fs_layer *fl;
	enum index_blob kind;
	uint64_t diff_size;
	int rc = 0;

	pthread_mutex_lock(&l->mu);
	if (l->info)
		goto out;
	rc = fs_als_layer_of(f, l, &fl);
	if (rc < 0)
		goto out;
	diff_size = index_layer_tar_size(fl->idx);
	kind = index_layer_blob_kind(fl->idx);
	fs_layer_put(&f->eng, fl);
	if (!l->diff_id[0]) {
		rc = strata_err(EIO, "layer %s of %s: no diff_id recorded", l->digest, l->ref);
		goto out;
	}
	{
		json_t *o = json_pack("{s:s, s:I, s:s, s:I, s:i}", "compressed-diff-digest",
				      l->digest, "compressed-size", (json_int_t)l->size,
				      "diff-digest", l->diff_id, "diff-size", (json_int_t)diff_size,
				      "compression",
				      kind == INDEX_BLOB_GZIP ? COMPRESS_GZIP :
				      kind == INDEX_BLOB_ZSTD ? COMPRESS_ZSTD :
								COMPRESS_NONE);

		l->info = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
	}
	if (!l->info)
		rc = -ENOMEM;
	else
		l->info_len = strlen(l->info);
out:
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* ---------------------------------------------------------------- info and blob */

/* Downloads l's blob (digest checked) into an unnamed file of the store directory. Caller holds
 * l->mu. Returns 0 or negative errno. */
static int fetch_blob(struct fs *f, struct alayer *l)
{
	struct fetch_ref *ref = NULL;
	int fd, rc;

	if (!f->eng.fetch)
		return strata_err(EIO, "blob %s: no registry access in this process", l->digest);
	rc = fetch_ref_parse(l->ref, &ref);
	if (rc < 0)
		return rc;
	fd = open(store_dir(f->eng.store), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = strata_err(errno, "blob %s: cannot make a file in %s: %s", l->digest,
				store_dir(f->eng.store), strerror(errno));
		fetch_ref_free(ref);
		return rc;
	}
	rc = fetch_blob_to_fd(f->eng.fetch, ref, l->digest, l->size, fd, NULL, NULL);
	fetch_ref_free(ref);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	l->blob_fd = fd;
	return 0;
}

int fs_als_open(struct fs *f, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct alayer *l;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	l = fs_als_by_slot(f, (uint32_t)(ino >> 32) & ALS_SLOT_MASK, 0, &rc);
	if (!l)
		return rc;
	if ((uint32_t)ino == ALS_LOW_INFO)
		return fs_als_make_info(f, l);
	pthread_mutex_lock(&l->mu);
	rc = l->blob_fd >= 0 ? 0 : fetch_blob(f, l);
	pthread_mutex_unlock(&l->mu);
	if (rc < 0)
		strata_log(LOG_ERR, "store/: %s", strata_errmsg(rc));
	fi->keep_cache = 1;
	return rc;
}

void fs_als_read(fuse_req_t req, struct fs *f, fuse_ino_t ino, size_t size, off_t off)
{
	struct alayer *l = fs_als_by_slot(f, (uint32_t)(ino >> 32) & ALS_SLOT_MASK, 0, &(int){ 0 });
	char *buf;
	ssize_t n;

	if (!l || off < 0) {
		fuse_reply_err(req, l ? EINVAL : ESTALE);
		return;
	}
	if ((uint32_t)ino == ALS_LOW_INFO) {
		int rc = fs_als_make_info(f, l);

		if (rc < 0)
			fuse_reply_err(req, -rc);
		else if ((size_t)off >= l->info_len)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_buf(req, l->info + off,
				       size < l->info_len - (size_t)off ?
					       size :
					       l->info_len - (size_t)off);
		return;
	}
	pthread_mutex_lock(&l->mu);
	n = l->blob_fd >= 0 ? 0 : fetch_blob(f, l);
	pthread_mutex_unlock(&l->mu);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = pread(l->blob_fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

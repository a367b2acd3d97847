/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshot directories: removing a tree, measuring what it holds. */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshots.h"
#include "util/log.h"

static int remove_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		return errno;
	return 0;
}

int snap_dir_remove(const char *path)
{
	int rc = nftw(path, remove_cb, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);

	if (rc < 0 && errno == ENOENT)
		return 0;
	if (rc != 0) {
		int e = rc > 0 ? rc : errno;

		return strata_err(e, "cannot remove %s: %s", path, strerror(e));
	}
	return 0;
}

/* nftw has no context argument: the walk's totals are per thread. */
static _Thread_local struct {
	int64_t size, inodes;
	ino_t seen[1024]; /* hard-linked inodes counted (a bounded set: beyond it they count again) */
	size_t nseen;
} du;

static int usage_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (type == FTW_NS)
		return 0;
	if (st->st_nlink > 1 && !S_ISDIR(st->st_mode)) {
		for (size_t i = 0; i < du.nseen; i++) {
			if (du.seen[i] == st->st_ino)
				return 0;
		}
		if (du.nseen < sizeof(du.seen) / sizeof(du.seen[0]))
			du.seen[du.nseen++] = st->st_ino;
	}
	du.size += (int64_t)st->st_blocks * 512;
	du.inodes++;
	return 0;
}

int snap_dir_usage(const char *path, int64_t *size, int64_t *inodes)
{
	int rc;

	memset(&du, 0, sizeof(du));
	rc = nftw(path, usage_cb, 32, FTW_PHYS | FTW_MOUNT);
	if (rc != 0)
		return strata_err(errno ? errno : EIO, "cannot measure %s: %s", path,
				  strerror(errno ? errno : EIO));
	*size = du.size;
	*inodes = du.inodes;
	return 0;
}

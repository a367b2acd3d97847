/* SPDX-License-Identifier: Apache-2.0 */
/* Handing the mount over to a new process: the state it needs, and adopting the mount from it. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs_i.h"
#include "util/log.h"

/*
 * The state travels as: "STRATAHS", u32 version (1), then four u32-length-prefixed fields: the
 * kernel's FUSE_INIT request, the mountpoint, the mount source, and the files open on the mount
 * (records of u64 inode, u32 open count: the quota evictor of the new process keeps their chunks
 * too). Host byte order: both ends run on one machine.
 */
#define STATE_MAGIC   "STRATAHS"
#define STATE_VERSION 1u
#define OPEN_RECORD   12 /* u64 inode, u32 count */

static int put_field(uint8_t *buf, size_t cap, size_t *o, const void *p, size_t len)
{
	uint32_t l = (uint32_t)len;

	if (*o + 4 + len > cap)
		return -ENOSPC;
	memcpy(buf + *o, &l, 4);
	memcpy(buf + *o + 4, p, len);
	*o += 4 + len;
	return 0;
}

static int get_field(const uint8_t *buf, size_t len, size_t *o, const uint8_t **p, size_t *flen)
{
	uint32_t l;

	if (*o + 4 > len)
		return -EINVAL;
	memcpy(&l, buf + *o, 4);
	if (l > len - *o - 4)
		return -EINVAL;
	*p = buf + *o + 4;
	*flen = l;
	*o += 4 + l;
	return 0;
}

ssize_t fs_handover_state(struct fs *f, int *fd, void *buf, size_t cap)
{
	const char *src = f->source ? f->source : "strata";
	uint32_t version = STATE_VERSION;
	size_t o = 12;
	int rc;

	*fd = fuse_session_fd(f->se);
	if (cap < o)
		return -ENOSPC;
	memcpy(buf, STATE_MAGIC, 8);
	memcpy((uint8_t *)buf + 8, &version, 4);
	pthread_mutex_lock(&f->io.mu);
	if (f->io.init_len == 0)
		rc = strata_err(EAGAIN, "the kernel's INIT request has not been seen yet");
	else
		rc = put_field(buf, cap, &o, f->io.init, f->io.init_len);
	pthread_mutex_unlock(&f->io.mu);
	if (rc == 0)
		rc = put_field(buf, cap, &o, f->mountpoint, strlen(f->mountpoint));
	if (rc == 0)
		rc = put_field(buf, cap, &o, src, strlen(src));
	if (rc == 0) {
		uint32_t l;

		pthread_mutex_lock(&f->open_mu);
		l = (uint32_t)(f->nopens * OPEN_RECORD);
		if (o + 4 + l > cap) {
			rc = strata_err(ENOSPC, "%zu open files do not fit the handover state",
					f->nopens);
		} else {
			memcpy((uint8_t *)buf + o, &l, 4);
			o += 4;
			for (size_t i = 0; i < f->nopens; i++, o += OPEN_RECORD) {
				uint64_t ino = f->opens[i].ino;
				uint32_t n = f->opens[i].count;

				memcpy((uint8_t *)buf + o, &ino, 8);
				memcpy((uint8_t *)buf + o + 8, &n, 4);
			}
		}
		pthread_mutex_unlock(&f->open_mu);
	}
	return rc < 0 ? rc : (ssize_t)o;
}

/* Parses a state; the strings are copied NUL-terminated into mnt/src (cap bytes each, NULL to
 * skip). */
static int state_parse(const void *state, size_t len, const uint8_t **init, size_t *init_len,
		       char *mnt, char *src, size_t cap, const uint8_t **opens, size_t *opens_len)
{
	const uint8_t *b = state, *p;
	const struct in_header *h;
	uint32_t version;
	size_t o = 12, l;

	if (len < o || memcmp(b, STATE_MAGIC, 8) != 0)
		return strata_err(EINVAL, "not a strata handover state");
	memcpy(&version, b + 8, 4);
	if (version != STATE_VERSION)
		return strata_err(EINVAL, "handover state version %u, this strata reads %u",
				  version, STATE_VERSION);
	if (get_field(b, len, &o, init, init_len) < 0 || *init_len < sizeof(*h) ||
	    *init_len > INIT_MAX)
		return strata_err(EINVAL, "bad INIT in the handover state");
	h = (const struct in_header *)*init;
	if (h->opcode != FUSE_OPCODE_INIT || h->len != *init_len)
		return strata_err(EINVAL, "bad INIT in the handover state");
	if (get_field(b, len, &o, &p, &l) < 0 || l == 0 || l >= cap || p[0] != '/')
		return strata_err(EINVAL, "bad mountpoint in the handover state");
	if (mnt) {
		memcpy(mnt, p, l);
		mnt[l] = '\0';
	}
	if (get_field(b, len, &o, &p, &l) < 0 || l >= cap)
		return strata_err(EINVAL, "bad source in the handover state");
	if (src) {
		memcpy(src, p, l);
		src[l] = '\0';
	}
	if (get_field(b, len, &o, &p, &l) < 0 || l % OPEN_RECORD)
		return strata_err(EINVAL, "bad open-file table in the handover state");
	if (opens) {
		*opens = p;
		*opens_len = l;
	}
	return 0;
}

int fs_handover_check(const void *state, size_t len, char *mnt, size_t cap)
{
	const uint8_t *init;
	size_t init_len;

	return state_parse(state, len, &init, &init_len, mnt, NULL, cap, NULL, NULL);
}

void fs_handed_over(struct fs *f)
{
	pthread_mutex_lock(&f->io.mu);
	f->io.closing = 1;
	f->io.handed_over = 1;
	fs_io_kick(&f->io);
	pthread_mutex_unlock(&f->io.mu);
}

int fs_adopt(struct store *store, const struct fs_opts *opts, int fd, const void *state, size_t len,
	     struct fs **out)
{
	char mnt[PATH_MAX], src[PATH_MAX + 16];
	/* Set by state_parse on success; initialized for -O3's maybe-uninitialized analysis, which
	 * cannot see through its early returns. */
	const uint8_t *init = NULL, *opens = NULL;
	size_t init_len = 0, opens_len = 0;
	struct fs_opts o = *opts;
	struct fs *f = NULL;
	int rc;

	*out = NULL;
	rc = state_parse(state, len, &init, &init_len, mnt, src, sizeof(mnt), &opens, &opens_len);
	if (rc < 0)
		goto fail;
	o.source = src;
	rc = fs_session_create(store, &o, mnt, &f);
	if (rc < 0)
		goto fail;
	/* Files the old process had open stay open: their releases come to us. */
	for (size_t i = 0; i + OPEN_RECORD <= opens_len && rc == 0; i += OPEN_RECORD) {
		uint64_t ino;
		uint32_t n;

		memcpy(&ino, opens + i, 8);
		memcpy(&n, opens + i + 8, 4);
		while (n-- > 0 && rc == 0)
			rc = fs_open_count(f, ino, 1);
	}
	if (rc < 0)
		goto fail;
	f->adopted = 1;
	memcpy(f->io.init, init, init_len);
	f->io.init_len = init_len;
	f->io.init_unique = ((const struct in_header *)init)->unique;
	f->io.replay = 1;
	rc = fs_io_attach(f, fd);
	if (rc < 0)
		goto fail;
	*out = f;
	return 0;
fail:
	close(fd);
	fs_free(f);
	return rc;
}

/* Detaches the mount this process adopted (it never called fuse_session_mount), unless the kernel
 * already ended it. Only the fuse.strata mount on top of the mountpoint is touched. */
void fs_adopted_unmount(struct fs *f)
{
	struct pollfd p = { fuse_session_fd(f->se), 0, 0 };
	char type[64];
	pid_t pid;
	int status;

	if (poll(&p, 1, 0) == 1 && (p.revents & POLLERR))
		return; /* unmounted, or the connection was aborted */
	if (fs_is_fuse_mount(f->mountpoint, type, sizeof(type)) <= 0 ||
	    strcmp(type, "fuse.strata") != 0)
		return;
	if (umount2(f->mountpoint, MNT_DETACH) == 0)
		return;
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", f->mountpoint, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		strata_log(LOG_ERR, "cannot unmount %s", f->mountpoint);
}

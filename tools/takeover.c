/* SPDX-License-Identifier: Apache-2.0 */
/* strata mount --takeover: the old daemon hands the mount's /dev/fuse and state to the new one. */
#include "takeover.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fs/fs.h"
#include "store/store.h"
#include "tools/cli.h"
#include "util/log.h"
#include "util/sock.h"

#define HANDOVER_STATE_MAX (4u << 20) /* the open-file table: 12 bytes per open file */
#define HANDOVER_ACK_MS	   30000

/*
 * strata mount --takeover: the new daemon connects and sends TAKEOVER_MAGIC, u32 length, the
 * mountpoint. The old daemon pauses its FUSE workers (fs_pause), then answers with one frame:
 * 'h' + u32 length + the fs state, with the /dev/fuse descriptor attached (SCM_RIGHTS), or
 * 'e' + u32 length + an error message. The new daemon checks the state and confirms with one byte
 * 'k'; only then is the mount the new daemon's: the old one exits without unmounting. Until the
 * confirmation, any failure leaves the old daemon serving.
 */

struct takeover {
	struct fs *fs; /* the mount this daemon serves */
	struct store *store;
	int drain_ms;		 /* how long a handover waits for requests being processed */
	pthread_mutex_t mu;	 /* one handover at a time */
	_Atomic int handed_over; /* the mount went to a new daemon: exit without unmounting */
};

static int send_ho_frame(int sock, char type, const void *data, uint32_t len, int fuse_fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	char hdr[5];
	struct iovec iov = { hdr, sizeof(hdr) };
	struct msghdr mh;
	ssize_t n;

	hdr[0] = type;
	memcpy(hdr + 1, &len, 4);
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fuse_fd >= 0) {
		struct cmsghdr *ch;

		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = sizeof(cm.buf);
		ch = CMSG_FIRSTHDR(&mh);
		ch->cmsg_level = SOL_SOCKET;
		ch->cmsg_type = SCM_RIGHTS;
		ch->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(ch), &fuse_fd, sizeof(int));
	}
	do {
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(hdr))
		return -1;
	return len ? util_sock_write_all(sock, data, len) : 0;
}

static void __attribute__((format(printf, 2, 3))) ho_refuse(int sock, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	strata_log(LOG_WARNING, "takeover refused: %s", msg);
	send_ho_frame(sock, 'e', msg, (uint32_t)strlen(msg), -1);
}

/* ---------------------------------------------------------------- the old daemon's side */

int takeover_new(struct fs *f, struct store *s, int drain_ms, struct takeover **out)
{
	struct takeover *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->fs = f;
	t->store = s;
	t->drain_ms = drain_ms;
	pthread_mutex_init(&t->mu, NULL);
	atomic_init(&t->handed_over, 0);
	*out = t;
	return 0;
}

int takeover_handed_over(struct takeover *t)
{
	return atomic_load(&t->handed_over);
}

void takeover_free(struct takeover *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->mu);
	free(t);
}

int takeover_serve(struct takeover *t, int fd)
{
	struct pollfd p = { fd, POLLIN, 0 };
	char mnt[PATH_MAX], ack = 0;
	char *state = NULL;
	uint32_t len;
	int fuse_fd, rc;
	ssize_t n;

	if (util_sock_read_all(fd, &len, 4) < 0 || len == 0 || len >= sizeof(mnt) ||
	    util_sock_read_all(fd, mnt, len) < 0)
		return -1;
	mnt[len] = '\0';
	if (!t->fs) {
		ho_refuse(fd, "the daemon of store %s serves no mount", store_dir(t->store));
		return 0;
	}
	if (strcmp(mnt, fs_mountpoint(t->fs)) != 0) {
		ho_refuse(fd, "the daemon of store %s serves %s, not %s", store_dir(t->store),
			  fs_mountpoint(t->fs), mnt);
		return 0;
	}
	if (pthread_mutex_trylock(&t->mu) != 0) {
		ho_refuse(fd, "another takeover of %s is under way", mnt);
		return 0;
	}
	if (atomic_load(&t->handed_over)) {
		ho_refuse(fd, "%s was already handed over", mnt);
		goto out;
	}
	state = malloc(HANDOVER_STATE_MAX);
	if (!state) {
		ho_refuse(fd, "out of memory");
		goto out;
	}
	strata_log(LOG_NOTICE, "takeover of %s: pausing FUSE requests", mnt);
	rc = fs_pause(t->fs, t->drain_ms);
	if (rc < 0) {
		ho_refuse(fd, "%s; not handing %s over", strata_errmsg(rc), mnt);
		goto resume;
	}
	n = fs_handover_state(t->fs, &fuse_fd, state, HANDOVER_STATE_MAX);
	if (n < 0) {
		ho_refuse(fd, "%s", strata_errmsg((int)n));
		goto resume;
	}
	if (send_ho_frame(fd, 'h', state, (uint32_t)n, fuse_fd) < 0) {
		strata_log(LOG_ERR, "takeover of %s: the new daemon went away; serving on", mnt);
		goto resume;
	}
	if (poll(&p, 1, HANDOVER_ACK_MS) != 1 || util_sock_read_all(fd, &ack, 1) < 0 ||
	    ack != 'k') {
		strata_log(LOG_ERR, "takeover of %s: the new daemon did not confirm; serving on",
			   mnt);
		goto resume;
	}
	atomic_store(&t->handed_over, 1);
	fs_handed_over(t->fs);
	strata_log(LOG_NOTICE, "handed %s over to the new daemon; exiting without unmounting", mnt);
	goto out;
resume:
	fs_resume(t->fs);
out:
	pthread_mutex_unlock(&t->mu);
	free(state);
	return 0;
}

/* ---------------------------------------------------------------- the new daemon's side */

int takeover_receive(const char *store_dir, const char *mnt, long wait_s, int *fuse_fd,
		     char **state, uint32_t *len)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct timeval tv = { wait_s, 0 };
	char hdr[5], smnt[PATH_MAX];
	struct iovec iov = { hdr, sizeof(hdr) };
	struct msghdr mh;
	struct cmsghdr *ch;
	uint32_t l = (uint32_t)strlen(mnt);
	char *buf = NULL;
	int fd, rfd = -1, rc;
	ssize_t n;

	*fuse_fd = -1;
	*state = NULL;
	fd = util_sock_connect(store_dir, CLI_SOCK_NAME);
	if (fd < 0)
		return strata_err(ESRCH, "no daemon serves store %s: nothing to take over",
				  store_dir);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (util_sock_write_all(fd, TAKEOVER_MAGIC, 8) < 0 || util_sock_write_all(fd, &l, 4) < 0 ||
	    util_sock_write_all(fd, mnt, l) < 0)
		goto lost;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.buf;
	mh.msg_controllen = sizeof(cm.buf);
	do {
		n = recvmsg(fd, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	for (ch = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; ch; ch = CMSG_NXTHDR(&mh, ch)) {
		if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS &&
		    ch->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&rfd, CMSG_DATA(ch), sizeof(int));
	}
	if (n != (ssize_t)sizeof(hdr) || (mh.msg_flags & MSG_CTRUNC))
		goto lost;
	memcpy(&l, hdr + 1, 4);
	if ((hdr[0] != 'e' && hdr[0] != 'h') || l > HANDOVER_STATE_MAX)
		goto lost;
	buf = malloc(l + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	if (util_sock_read_all(fd, buf, l) < 0)
		goto lost;
	buf[l] = '\0';
	if (hdr[0] == 'e') {
		rc = strata_err(EPERM, "%s", buf);
		goto out;
	}
	if (rfd < 0) {
		rc = strata_err(EPROTO, "the daemon of store %s sent no /dev/fuse descriptor",
				store_dir);
		goto out;
	}
	rc = fs_handover_check(buf, l, smnt, sizeof(smnt));
	if (rc < 0)
		goto out;
	if (strcmp(smnt, mnt) != 0) {
		rc = strata_err(EPROTO, "the daemon of store %s handed over %s, not %s", store_dir,
				smnt, mnt);
		goto out;
	}
	if (util_sock_write_all(fd, "k", 1) < 0)
		goto lost;
	*fuse_fd = rfd;
	rfd = -1;
	*state = buf;
	buf = NULL;
	*len = l;
	rc = 0;
	goto out;
lost:
	rc = strata_err(EPROTO,
			"the daemon of store %s did not hand %s over (it exited, or its strata "
			"has no takeover); it serves on if it is still running",
			store_dir, mnt);
out:
	if (rfd >= 0)
		close(rfd);
	free(buf);
	close(fd);
	return rc;
}

int takeover_store_open(const char *dir, const struct store_opts *so, long timeout_ms,
			struct store **out)
{
	for (long waited = 0;; waited += 10) {
		int rc = store_open(dir, so, out);

		if (rc != -EBUSY || waited >= timeout_ms)
			return rc;
		usleep(10 * 1000); /* reads are paused meanwhile: poll often */
	}
}

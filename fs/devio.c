/* SPDX-License-Identifier: Apache-2.0 */
/* Reading and answering /dev/fuse for the FUSE workers, so that a handover can pause them. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fs_i.h"
#include "util/log.h"
#include "util/thread.h"

/*
 * The FUSE workers read /dev/fuse through io_read, so that a handover can stop them cleanly: a
 * request read by a process that then exits is lost and its caller hangs forever. Reads are
 * nonblocking and made under io.mu after checking that the fs is not paused; a worker blocks in
 * poll() (a cancellation point, holding nothing) or on io.cv, never inside read(). A request counts
 * as busy from the read that returns it until its worker asks for the next one (or exits): then
 * it has been answered. libfuse drops a request it read after the session was flagged as exited,
 * so readers end the loop (ENODEV) only once nothing is busy.
 */

struct out_header { /* struct fuse_out_header */
	uint32_t len;
	int32_t error;
	uint64_t unique;
};

/* A request is finished. Caller holds io->mu. */
static void io_done_locked(struct fs_io *io)
{
	assert(io->busy > 0);
	if (--io->busy == 0)
		pthread_cond_broadcast(&io->cv);
}

/* A worker thread ends (libfuse retires idle workers after their request). */
static void io_thread_gone(void *arg)
{
	struct fs *f = arg;

	pthread_mutex_lock(&f->io.mu);
	io_done_locked(&f->io);
	pthread_mutex_unlock(&f->io.mu);
}

static void io_wait(struct fs_io *io, int ms)
{
	struct timespec until;

	util_deadline_in(&until, ms);
	pthread_cond_timedwait(&io->cv, &io->mu, &until);
}

static void io_hold(struct fs *f)
{
	f->io.busy++;
	pthread_setspecific(f->io.holding, f);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct fs *f = userdata;
	struct fs_io *io = &f->io;
	struct pollfd pfd[2] = { { fd, POLLIN, 0 }, { io->wake, POLLIN, 0 } };
	ssize_t n = -1;
	int cs, e = 0;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
	pthread_mutex_lock(&io->mu);
	if (pthread_getspecific(io->holding)) {
		pthread_setspecific(io->holding, NULL);
		io_done_locked(io);
	}
	for (;;) {
		if (fuse_session_exited(f->se)) {
			e = EINTR; /* a signal ends the loop */
			break;
		}
		if (io->closing && io->busy == 0) {
			e = ENODEV;
			break;
		}
		if (io->replay) {
			assert(len >= io->init_len);
			memcpy(buf, io->init, io->init_len);
			n = (ssize_t)io->init_len;
			io->replay = 0;
			io->init_wait = 1;
			io_hold(f);
			break;
		}
		if (io->paused || io->closing || io->init_wait) {
			io_wait(io, 200);
			continue;
		}
		pthread_mutex_unlock(&io->mu);
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			strata_log(LOG_ERR, "poll /dev/fuse: %s", strerror(errno));
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&io->mu);
		if (io->paused || io->closing || io->init_wait || io->replay ||
		    fuse_session_exited(f->se))
			continue;
		n = read(fd, buf, len);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ENOENT)
				continue; /* another worker took it; or interrupted: nothing was read */
			e = errno;
			break;
		}
		if (io->init_len == 0 && (size_t)n >= sizeof(struct in_header) &&
		    (size_t)n <= INIT_MAX &&
		    ((const struct in_header *)buf)->opcode == FUSE_OPCODE_INIT) {
			memcpy(io->init, buf, (size_t)n);
			io->init_len = (size_t)n;
		}
		io_hold(f);
		break;
	}
	pthread_mutex_unlock(&io->mu);
	pthread_setcancelstate(cs, NULL);
	if (n < 0)
		errno = e;
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fs *f = userdata;
	struct fs_io *io = &f->io;
	const struct out_header *oh = count > 0 ? iov[0].iov_base : NULL;
	ssize_t total = 0;
	int swallow;

	pthread_mutex_lock(&io->mu);
	swallow = io->init_wait && oh && iov[0].iov_len >= sizeof(*oh) &&
		  oh->unique == io->init_unique;
	if (swallow) {
		/* The answer to the replayed INIT: the kernel had its answer from the first process. */
		io->init_wait = 0;
		pthread_cond_broadcast(&io->cv);
	}
	pthread_mutex_unlock(&io->mu);
	if (!swallow)
		return writev(fd, iov, count);
	if (oh->error != 0)
		strata_log(LOG_ERR, "the handed-over FUSE session cannot be resumed: INIT: %s",
			   strerror(-oh->error));
	for (int i = 0; i < count; i++)
		total += (ssize_t)iov[i].iov_len;
	return total;
}

int fs_io_init(struct fs *f)
{
	struct fs_io *io = &f->io;
	int rc;

	pthread_mutex_init(&io->mu, NULL);
	pthread_cond_init(&io->cv, NULL);
	io->wake = -1;
	rc = pthread_key_create(&io->holding, io_thread_gone);
	if (rc != 0)
		return -rc;
	io->key_ok = 1;
	io->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return io->wake < 0 ? -errno : 0;
}

/* Serves fd through io_read/io_writev. fd becomes the session's (closed by fuse_session_destroy)
 * only on success. */
int fs_io_attach(struct fs *f, int fd)
{
	static const struct fuse_custom_io ops = { .writev = io_writev, .read = io_read };
	int fl = fcntl(fd, F_GETFL);
	int rc;

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return strata_err(errno, "/dev/fuse: %s", strerror(errno));
	rc = fuse_session_custom_io(f->se, &ops, fd);
	if (rc < 0)
		return strata_err(-rc, "cannot attach the FUSE session to /dev/fuse: %s",
				  strerror(-rc));
	return 0;
}

void fs_io_destroy(struct fs_io *io)
{
	if (io->wake >= 0)
		close(io->wake);
	if (io->key_ok)
		pthread_key_delete(io->holding);
	pthread_mutex_destroy(&io->mu);
	pthread_cond_destroy(&io->cv);
}

void fs_io_kick(struct fs_io *io)
{
	uint64_t one = 1;

	if (write(io->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
		strata_log(LOG_WARNING, "wake FUSE workers: %s", strerror(errno));
	pthread_cond_broadcast(&io->cv);
}

int fs_pause(struct fs *f, int timeout_ms)
{
	struct fs_io *io = &f->io;
	struct timespec now, until;
	int rc = 0;

	pthread_mutex_lock(&io->mu);
	io->paused = 1;
	fs_io_kick(io);
	util_deadline_in(&until, timeout_ms);
	while (io->busy > 0 && rc == 0) {
		pthread_cond_timedwait(&io->cv, &io->mu, &until);
		clock_gettime(CLOCK_REALTIME, &now);
		if (io->busy > 0 && (now.tv_sec > until.tv_sec ||
				     (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)))
			rc = strata_err(ETIMEDOUT, "%d request(s) still running after %d s",
					io->busy, timeout_ms / 1000);
	}
	pthread_mutex_unlock(&io->mu);
	return rc;
}

void fs_resume(struct fs *f)
{
	struct fs_io *io = &f->io;
	uint64_t v;

	pthread_mutex_lock(&io->mu);
	io->paused = 0;
	while (read(io->wake, &v, sizeof(v)) > 0)
		;
	pthread_cond_broadcast(&io->cv);
	pthread_mutex_unlock(&io->mu);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Threads of the daemon's own (workers, writer, evictor, servers). */
#ifndef STRATA_UTIL_THREAD_H
#define STRATA_UTIL_THREAD_H

#include <pthread.h>
#include <signal.h>
#include <time.h>

/* Starts fn(arg) on a new thread with every signal blocked, so that SIGTERM and friends reach the
 * FUSE loop's thread. Returns 0 or pthread_create's error number (positive). */
static inline int util_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/* *t = now + ms (ms >= 0) on CLOCK_REALTIME, the clock pthread_cond_timedwait uses by default. */
static inline void util_deadline_in(struct timespec *t, long ms)
{
	clock_gettime(CLOCK_REALTIME, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (ms % 1000) * 1000000L;
	if (t->tv_nsec >= 1000000000L) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000L;
	}
}

#endif

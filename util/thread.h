/* SPDX-License-Identifier: Apache-2.0 */
/* Threads of the daemon's own (workers, writer, evictor, servers). */
#ifndef STRATA_UTIL_THREAD_H
#define STRATA_UTIL_THREAD_H

#include <pthread.h>
#include <signal.h>

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

#endif

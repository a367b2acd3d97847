/* SPDX-License-Identifier: Apache-2.0 */
/* Logging to stderr with syslog levels, and a per-thread "last error" message. */
#ifndef STRATA_UTIL_LOG_H
#define STRATA_UTIL_LOG_H

#include <syslog.h>

/* Sets the most verbose level printed (LOG_ERR .. LOG_DEBUG). Default LOG_WARNING. */
void strata_log_set_level(int level);
int strata_log_get_level(void);

/* Prints "strata[pid]: <level>: message" to stderr when level is enabled. Thread-safe. */
void strata_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef NDEBUG
#define strata_debug(...) ((void)0)
#else
#define strata_debug(...) strata_log(LOG_DEBUG, __VA_ARGS__)
#endif

/*
 * Error detail for the caller. A function that returns a negative errno may first call strata_err()
 * with one line saying what failed and where; the caller that reports the failure (the CLI, the
 * daemon log) prints strata_errmsg(). The message is per thread and overwritten by the next call.
 * Returns -err unchanged, so callers can write `return strata_err(EIO, "...")`.
 */
int strata_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current error message with "<prefix>: ". Returns -err. */
int strata_err_prefix(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the per-thread message. */
void strata_err_clear(void);

/* The per-thread message, or strerror(err) when none was set. Never NULL. Borrowed until the next
 * strata_err*() call on this thread. */
const char *strata_errmsg(int err);

#endif

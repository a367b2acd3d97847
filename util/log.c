/* SPDX-License-Identifier: Apache-2.0 */
/* Logging to stderr and the per-thread error message. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int log_level = LOG_WARNING;
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char err_buf[1024];

void strata_log_set_level(int level)
{
	log_level = level;
}

int strata_log_get_level(void)
{
	return log_level;
}

static const char *level_name(int level)
{
	switch (level) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
	case LOG_ERR:
		return "error";
	case LOG_WARNING:
		return "warning";
	case LOG_NOTICE:
		return "notice";
	case LOG_INFO:
		return "info";
	default:
		return "debug";
	}
}

void strata_log(int level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	if (level > log_level)
		return;
	n = snprintf(line, sizeof(line), "strata[%d]: %s: ", (int)getpid(), level_name(level));
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_mutex);
	fprintf(stderr, "%s\n", line);
	fflush(stderr);
	pthread_mutex_unlock(&log_mutex);
}

int strata_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err_buf, sizeof(err_buf), fmt, ap);
	va_end(ap);
	return -err;
}

int strata_err_prefix(int err, const char *fmt, ...)
{
	char prefix[512];
	char old[sizeof(err_buf)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (err_buf[0])
		snprintf(old, sizeof(old), "%s", err_buf);
	else
		snprintf(old, sizeof(old), "%s", strerror(err));
	snprintf(err_buf, sizeof(err_buf), "%s: %s", prefix, old);
	return -err;
}

void strata_err_clear(void)
{
	err_buf[0] = '\0';
}

const char *strata_errmsg(int err)
{
	if (err_buf[0])
		return err_buf;
	return strerror(err < 0 ? -err : err);
}

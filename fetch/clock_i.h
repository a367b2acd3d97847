/* SPDX-License-Identifier: Apache-2.0 */
/* Private to fetch/: the clock of every deadline and wait in fetch/ (CLOCK_MONOTONIC, in ms). */
#ifndef STRATA_FETCH_CLOCK_I_H
#define STRATA_FETCH_CLOCK_I_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC now, in milliseconds. */
static inline int64_t fetch_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif

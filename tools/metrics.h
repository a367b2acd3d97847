/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus text exposition of a daemon's counters over HTTP (`strata mount --metrics ADDR`). */
#ifndef STRATA_TOOLS_METRICS_H
#define STRATA_TOOLS_METRICS_H

#include <stddef.h>

struct store;
struct fetch_client;
struct quota;
struct metrics;

/*
 * Renders the metrics (Prometheus text format 0.0.4) into a malloc'd NUL-terminated string:
 * cheap figures only (no store scan): the daemon's chunk reads and fetch-wait histogram, the
 * registry client's per-host counters, the store's size on disk and chunk estimate, pending
 * layers, the quota and its evictions. fc and q may be NULL. Returns NULL without memory.
 */
char *metrics_render(struct store *s, struct fetch_client *fc, struct quota *q);

/*
 * Serves GET /metrics on addr: "HOST:PORT" (an IPv4 or [IPv6] literal; "localhost" is 127.0.0.1)
 * or "unix:PATH" (a socket created mode 0660, replaced if stale). One thread answers requests one
 * at a time, each bounded (2 s to read the request). Everything borrowed must outlive
 * metrics_stop. Returns 0 and *out, or negative errno with strata_err set (bad address, bind).
 */
int metrics_start(const char *addr, struct store *s, struct fetch_client *fc, struct quota *q,
		  struct metrics **out);

/* Stops the thread, closes (and for unix:, removes) the socket. NULL ok. */
void metrics_stop(struct metrics *m);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's background evictor: a thread applying the store's quota policy (store/maint.h). */
#ifndef STRATA_TOOLS_QUOTA_H
#define STRATA_TOOLS_QUOTA_H

#include <stdint.h>

struct store;
struct store_open_files;
struct fs;
struct quota;

/* Starts the background evictor of a daemon: a thread that checks the store's size every second
 * and runs store_evict() (with fs's open files kept) when it is above quota (never in a FUSE
 * thread). low_water is a percentage (0 = STORE_EVICT_LOW_WATER_DEFAULT); fs's background
 * completion is bounded below it (fs_background_limit). store and fs are borrowed and must outlive
 * quota_stop(). Returns 0 and *out, or negative errno. */
int quota_start(struct store *s, struct fs *fs, uint64_t quota, unsigned low_water,
		struct quota **out);

/* The evictor's quota (bytes) and low-water percentage. */
uint64_t quota_bytes(const struct quota *q);
unsigned quota_low_water(const struct quota *q);

/* Stops and joins the evictor (waits for a pass under way to finish its batch); NULL ok. */
void quota_stop(struct quota *q);

/* Fills out with fs's open-file table (fs_open_lock, fs_open_unlock, fs_open_chunks) for
 * store_evict(); fs is borrowed and must be non-NULL when store_evict is given out. */
void quota_open_files(struct fs *fs, struct store_open_files *out);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* strata mount --takeover: the old daemon hands the mount's /dev/fuse and state to the new one. */
#ifndef STRATA_TOOLS_TAKEOVER_H
#define STRATA_TOOLS_TAKEOVER_H

#include <stdint.h>

struct fs;
struct store;
struct store_opts;
struct takeover;

/* A control-socket connection that starts with these 8 bytes asks for the mount (tools/ctl.c
 * hands it to takeover_serve). */
#define TAKEOVER_MAGIC "STRATAHO"

/* ---- the old daemon's side */

/* The takeover state of a daemon serving f (may be NULL: a takeover is then refused) on store s;
 * drain_ms bounds fs_pause. f and s are borrowed. Returns 0 and *out, or -ENOMEM. */
int takeover_new(struct fs *f, struct store *s, int drain_ms, struct takeover **out);

/*
 * Serves one takeover request on fd (TAKEOVER_MAGIC already read): reads the mountpoint, pauses
 * the FUSE workers, sends the fs state with the /dev/fuse descriptor and waits up to 30 s for the
 * new daemon's confirmation; then fs_run returns and takeover_handed_over() is 1. A refusal or any
 * failure before the confirmation is answered or logged, and the fs resumes serving. One takeover
 * at a time (thread-safe). Returns 0 (the outcome went to the peer), -1 on a malformed request.
 */
int takeover_serve(struct takeover *t, int fd);

/* 1 once the mount was handed over (the daemon exits without unmounting), else 0. Thread-safe. */
int takeover_handed_over(struct takeover *t);

/* Frees t (NULL ok); no takeover_serve may be running. */
void takeover_free(struct takeover *t);

/* ---- the new daemon's side */

/*
 * Takes mnt (absolute) over from the daemon of store_dir. Returns 0 with *fuse_fd and *state
 * (malloc'd, *len bytes; the caller owns both) after confirming, or negative errno with strata_err
 * set (then nothing changed: the old daemon serves on). wait_s bounds the wait for the answer.
 */
int takeover_receive(const char *store_dir, const char *mnt, long wait_s, int *fuse_fd,
		     char **state, uint32_t *len);

/* store_open, waiting up to timeout_ms while another process (the daemon handing over) holds the
 * store (-EBUSY). Returns what store_open returns. */
int takeover_store_open(const char *dir, const struct store_opts *so, long timeout_ms,
			struct store **out);

#endif

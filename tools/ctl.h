/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's control socket (<store>/strata.sock): forwarding a command to it, and serving it. */
#ifndef STRATA_TOOLS_CTL_H
#define STRATA_TOOLS_CTL_H

#include "cli.h"

struct store;
struct fetch_client;
struct fs;
struct quota;
struct ctl;

/*
 * Wire format: the client sends "STRATA01", u32 flags (1 = its stderr is a terminal), u32 argc and
 * argc strings (u32 length + bytes): the global options, "--", the command. The daemon answers
 * with frames, 'o' (stdout) or 'e' (stderr) + u32 length + bytes, and ends with 'x' + u32 4 + the
 * i32 exit code. A connection that starts with TAKEOVER_MAGIC is a takeover (tools/takeover.c).
 */

/* Sends the command (rest of the arguments, with c's global options) to the daemon serving
 * c->store_dir and relays its output to stdout/stderr. Returns the daemon's exit code, -1 when no
 * daemon listens, or 1 (or 2) after printing an error (connection lost, too many arguments). */
int ctl_forward(struct cli *c, int argc, char **argv);

/*
 * Starts the control socket of a daemon: listens on <store>/strata.sock and serves each connection
 * on its own detached thread. A command runs through dispatch with a struct cli holding the
 * daemon's store, fetch client, fs and evictor (in_daemon set, cancel set at ctl_stop); drain_ms bounds how
 * long a takeover waits for FUSE requests under way. Everything passed is borrowed and must outlive
 * ctl_stop. Returns 0 and *out, or negative errno with strata_err set (socket, thread).
 */
int ctl_start(struct store *store, struct fetch_client *fc, struct fs *f, struct quota *evictor,
	      int drain_ms, cli_cmd_fn dispatch, struct ctl **out);

/*
 * Stops accepting, sets the cancel flag of running commands and waits up to 60 s for them to end
 * (past that it logs and exits the process: closing the store under them would be worse), removes
 * the socket and frees c (NULL ok: returns 0). Returns 1 when the mount was handed over to a new
 * daemon (exit without unmounting), else 0.
 */
int ctl_stop(struct ctl *c);

/*
 * Runs `strata pull REF` inside the daemon, as a forwarded pull runs, with the global options of
 * dc (the daemon's own: store, hosts dir, config, strict cache): MNT/store's resolver. Its output
 * is dropped. Returns 0, or -ENOENT with strata_err set to the pull's error line. Thread-safe.
 */
int ctl_pull(struct ctl *srv, const struct cli *dc, const char *ref);

/* Runs `strata CMD [OPT] REF` (pull, pin; opt may be NULL) inside the daemon as ctl_pull does.
 * Returns 0 or -ENOENT with strata_err set to the command's error line. */
int ctl_run_ref(struct ctl *srv, const struct cli *dc, const char *cmd, const char *opt,
		const char *ref);

/* Sets the cancel flag long commands poll (before ctl_stop, to end ctl_run_ref calls sooner). */
void ctl_cancel(struct ctl *srv);

#endif

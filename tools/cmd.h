/* SPDX-License-Identifier: Apache-2.0 */
/* The strata commands, one function each, for main.c's command table. */
#ifndef STRATA_TOOLS_CMD_H
#define STRATA_TOOLS_CMD_H

struct cli;

/*
 * A command: argv[0] is the command name, c holds the global options and, except for the local
 * commands (mount, umount), the open store. Output goes only to c->out and c->err. Returns the exit
 * code: 0, 1 error (one line on c->err), 2 usage.
 */

/* tools/pull.c */
int cmd_pull(struct cli *c, int argc, char **argv);
int cmd_index(struct cli *c, int argc, char **argv);
/* tools/inspect.c */
int cmd_ls(struct cli *c, int argc, char **argv);
int cmd_stats(struct cli *c, int argc, char **argv);
int cmd_rm(struct cli *c, int argc, char **argv);
/* tools/pin.c */
int cmd_pin(struct cli *c, int argc, char **argv);
int cmd_unpin(struct cli *c, int argc, char **argv);
/* tools/maint.c: fsck exits 1 when it found problems (also when --repair fixed them). */
int cmd_fsck(struct cli *c, int argc, char **argv);
int cmd_gc(struct cli *c, int argc, char **argv);
/* tools/mount.c: local commands, never forwarded to a daemon */
int cmd_mount(struct cli *c, int argc, char **argv);
int cmd_umount(struct cli *c, int argc, char **argv);

#endif

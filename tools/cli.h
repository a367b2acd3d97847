/* SPDX-License-Identifier: Apache-2.0 */
/* The strata command line: shared context, option helpers and the command table. */
#ifndef STRATA_TOOLS_CLI_H
#define STRATA_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

struct store;
struct fetch_client;

/* Everything a command needs. Commands run in the CLI process, or inside the daemon on behalf of
 * a client connected to <store>/strata.sock; they print only through out/err. */
struct cli {
	const char *store_dir;
	const char *config;
	const char *hosts_dir;
	int strict_cache;
	uint64_t quota;          /* bytes; 0 = no quota (flag, else the config file) */
	unsigned low_water;      /* percent of the quota eviction goes down to; 0 = default */
	long read_timeout_s;     /* mount's read timeout from the config file; 0 = default */
	uint64_t index_cache;    /* mount's cache caps (config file, mount flags); 0 = default */
	uint64_t chunk_cache;
	uint64_t block_cache;
	char *config_hosts_dir;  /* owned: hosts_dir as the config file set it (free it) */
	int json;
	int verbose;
	int tty;                 /* err is a terminal: progress may be drawn */
	FILE *out, *err;
	struct store *store;     /* open store (the daemon's, or opened for this command) */
	struct fetch_client *fetch; /* the daemon's registry client (its counters), or NULL */
	struct fs *fs;           /* the daemon's mounted fs (open files, fetching), or NULL */
	struct quota *evictor;   /* the daemon's background evictor, or NULL */
	const char *metrics;     /* mount --metrics: HOST:PORT or unix:PATH for Prometheus, or NULL */
	int in_daemon;
	volatile int *cancel;    /* set when the daemon shuts down; long commands stop early */
	const char *cmd;         /* the command name, for error messages */
};

/* A command: argv[0] is the command name. Returns the exit code (0, 1 error, 2 usage). */
typedef int (*cli_cmd_fn)(struct cli *c, int argc, char **argv);

int cmd_pull(struct cli *c, int argc, char **argv);
int cmd_index(struct cli *c, int argc, char **argv);
int cmd_ls(struct cli *c, int argc, char **argv);
int cmd_stats(struct cli *c, int argc, char **argv);
int cmd_rm(struct cli *c, int argc, char **argv);
/* tools/quota.c */
int cmd_pin(struct cli *c, int argc, char **argv);
int cmd_unpin(struct cli *c, int argc, char **argv);
/* tools/maint.c: fsck exits 1 when it found problems (also when --repair fixed them). */
int cmd_fsck(struct cli *c, int argc, char **argv);
int cmd_gc(struct cli *c, int argc, char **argv);
int cmd_mount(struct cli *c, int argc, char **argv);
int cmd_umount(struct cli *c, int argc, char **argv);

/* Creates a registry client as the command's options say (host platform, hosts dir, strict
 * cache). Returns 0 and *out, or 1 after printing the error. */
int cli_fetch_client(struct cli *c, struct fetch_client **out);

/* Accepts the next connection on the listening socket lfd (close-on-exec) unless stop_fd becomes
 * readable first. Returns the connection's fd, or -1 when stopped (or poll failed: logged with
 * what, e.g. "control socket"). */
int cli_accept(int lfd, int stop_fd, const char *what);

/* Writes all of buf to a socket (no SIGPIPE). Returns 0, or -1 with errno. */
int cli_write_all(int fd, const void *buf, size_t len);

/* Sets set[digest] = true for every layer digest of a parsed image record (its "layers" array).
 * Returns 0 or -ENOMEM. */
int cli_image_layer_set(json_t *image, json_t *set);

/* Prints "strata: <cmd>: <message>" on c->err and returns 1. */
int cli_fail(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints a usage error and returns 2. */
int cli_usage(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a byte count as "12.3 MiB". Returns buf. */
const char *cli_bytes(uint64_t n, char *buf, size_t cap);

/* Parses "123", "64k", "10M", "2G", "1T" (binary units). Returns 0 or -EINVAL. */
int cli_parse_size(const char *s, uint64_t *out);

/* Runs a command by name in this process with c->store open. Returns the exit code. */
int cli_run(struct cli *c, int argc, char **argv);

/* 1 when the command must run in the CLI process (mount, umount), never forwarded. */
int cli_is_local(const char *cmd);



/* Takes the global options (--store, --config, --hosts-dir, --strict-cache, --quota, -v, --json)
 * from anywhere in argv into c and copies the other arguments, in order, into rest (argc + 1
 * slots, NULL-terminated). Returns 0, or 2 after printing a usage error. */
int cli_parse_globals(struct cli *c, int argc, char **argv, char **rest, int *nrest);

/* Reads c->config (when set) and fills what no flag set: quota, low water, hosts_dir,
 * strict_cache, read timeout, cache caps. On an error prints "strata: FILE:LINE: message" on c->err and
 * returns 1; returns 0 otherwise. A hosts_dir it sets is owned by c->config_hosts_dir. */
int cli_apply_config(struct cli *c);

/* Connects to the daemon socket of store_dir. Returns a connected fd, or -1 with errno. */
int cli_connect(const char *store_dir);

/* Sends the command (rest of the arguments, with c's global options) to the daemon serving
 * c->store_dir and relays its output. Returns the daemon's exit code, or -1 when no daemon listens. */
int cli_forward(struct cli *c, int argc, char **argv);

/* Binds and listens on <store_dir>/strata.sock. Returns the fd or negative errno. */
int cli_listen(const char *store_dir);
#endif

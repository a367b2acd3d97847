/* SPDX-License-Identifier: Apache-2.0 */
/* The strata command line: the context every command gets, and the option and output helpers. */
#ifndef STRATA_TOOLS_CLI_H
#define STRATA_TOOLS_CLI_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

struct store;
struct fetch_client;

/* The daemon's control socket in the store directory (tools/ctl.c, tools/takeover.c). */
#define CLI_SOCK_NAME "strata.sock"

struct cli;

/* Runs a command: argv[0] is the command name. Returns the exit code (0, 1 error, 2 usage). */
typedef int (*cli_cmd_fn)(struct cli *c, int argc, char **argv);

/* Everything a command needs. Commands run in the CLI process, or inside the daemon on behalf of
 * a client connected to <store>/strata.sock; they print only through out/err. */
struct cli {
	const char *store_dir;
	const char *config;
	const char *hosts_dir;
	int strict_cache;
	uint64_t quota;	      /* bytes; 0 = no quota (flag, else the config file) */
	unsigned low_water;   /* percent of the quota eviction goes down to; 0 = default */
	long read_timeout_s;  /* mount's read timeout from the config file; 0 = default */
	uint64_t index_cache; /* mount's cache caps (config file, mount flags); 0 = default */
	uint64_t chunk_cache;
	uint64_t block_cache;
	int allow_other;      /* mount: other users may read the mount (flag, else the config) */
	long low_speed_s;     /* registry transfers: the config's low_speed_timeout; 0 = default */
	long download_base_s; /* the config's download_deadline_base; 0 = default */
	uint64_t download_min_rate; /* the config's download_min_rate; 0 = default */
	char *config_hosts_dir;	    /* owned: hosts_dir as the config file set it (free it) */
	char artifact_trust[16]; /* config artifact_trust: "repository", "signed", "none" or "" */
	char **trusted_keys;	 /* owned: config trusted_keys (paths of PEM public keys) */
	size_t ntrusted_keys;
	const char *snapshotter_socket; /* mount: containerd snapshotter socket (flag, else config) */
	char *config_snapshotter_socket; /* owned: snapshotter_socket as the config file set it */
	char **images;			 /* owned: config images (pulled when a daemon starts) */
	size_t nimages;
	char **pins; /* owned: config pin (pulled and pinned when a daemon starts) */
	size_t npins;
	int json;
	int verbose;
	int tty; /* err is a terminal: progress may be drawn */
	FILE *out, *err;
	struct store *store;	    /* open store (the daemon's, or opened for this command) */
	struct fetch_client *fetch; /* the daemon's registry client (its counters), or NULL */
	struct fs *fs;		    /* the daemon's mounted fs (open files, fetching), or NULL */
	struct quota *evictor;	    /* the daemon's background evictor, or NULL */
	const char *metrics; /* mount --metrics: HOST:PORT or unix:PATH for Prometheus, or NULL */
	int in_daemon;
	atomic_int *cancel;  /* set when the daemon shuts down; long commands stop early */
	const char *cmd;     /* the command name, for error messages */
	cli_cmd_fn dispatch; /* runs a command by name (main.c's table); the daemon's control
				    socket runs forwarded commands through it */
};

/* Creates a registry client as the command's options say (host platform, hosts dir, strict
 * cache). Returns 0 and *out, or 1 after printing the error. */
int cli_fetch_client(struct cli *c, struct fetch_client **out);

/* Prints "strata: <cmd>: <message>" on c->err and returns 1. */
int cli_fail(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints a usage error and returns 2. */
int cli_usage(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Formats a byte count as "12.3 MiB". Returns buf. */
const char *cli_bytes(uint64_t n, char *buf, size_t cap);

/* Parses "123", "64k", "10M", "2G", "1T" (binary units). Returns 0 or -EINVAL. */
int cli_parse_size(const char *s, uint64_t *out);

/* Takes the global options (--store, --config, --hosts-dir, --strict-cache, --quota, -v, --json)
 * from anywhere in argv into c and copies the other arguments, in order, into rest (argc + 1
 * slots, NULL-terminated). Returns 0, or 2 after printing a usage error. */
int cli_parse_globals(struct cli *c, int argc, char **argv, char **rest, int *nrest);

/* Reads c->config (when set) and fills what no flag set: quota, low water, hosts_dir,
 * strict_cache, read timeout, cache caps, allow_other. On an error prints "strata: FILE:LINE: message" on c->err and
 * returns 1; returns 0 otherwise. A hosts_dir it sets is owned by c->config_hosts_dir. */
int cli_apply_config(struct cli *c);

/* Frees what cli_apply_config gave c (config_hosts_dir, trusted_keys, images, pins). */
void cli_config_free(struct cli *c);
#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* strata's entry point and command table: global options, then the command, run here or by the
 * store's daemon. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd.h"
#include "store/store.h"
#include "tools/ctl.h"
#include "util/log.h"

#define DEFAULT_STORE	  "/var/lib/strata"
#define DEFAULT_HOSTS_DIR "/etc/containerd/certs.d"

static const char usage_text[] =
	"usage: strata [options] <command> [args]\n"
	"\n"
	"commands:\n"
	"  pull [--index=auto|artifact|build] [--chunk-size N] REF...\n"
	"                                 resolve images and register them with their layer indexes:\n"
	"                                 from an index artifact in the registry (layers stay remote\n"
	"                                 until read), an eStargz TOC, else built by streaming each\n"
	"                                 layer once (in the background when a daemon serves the\n"
	"                                 store: the layer appears once its blob verified)\n"
	"  index [--push] [--chunk-size N] REF...\n"
	"                                 build the layer indexes here; --push stores them in the\n"
	"                                 registry as an artifact tagged sha256-<manifest hex>.strata\n"
	"  mount [-f] [--debug] [--background] [--read-timeout S] [--allow-other] MNT\n"
	"                                 serve MNT/layers/sha256:<hex>/ for every layer in the store;\n"
	"                                 --background fetches every missing chunk at low priority;\n"
	"                                 --allow-other lets other users read it (default: root only)\n"
	"                                 [--index-cache SIZE] [--chunk-cache SIZE] [--block-cache SIZE]\n"
	"                                 cap the decoded layer indexes (default 32M), decoded chunks\n"
	"                                 (32M) and RocksDB blocks (32M) the daemon keeps in memory\n"
	"                                 [--metrics HOST:PORT|unix:PATH]\n"
	"                                 serve Prometheus text on GET /metrics\n"
	"                                 [--snapshotter-socket PATH]\n"
	"                                 serve containerd's snapshots API (a proxy snapshotter)\n"
	"  mount --takeover [-f] [options] MNT\n"
	"                                 restart or upgrade the daemon serving MNT without unmounting:\n"
	"                                 it hands the mount over, reads pause meanwhile, then go on\n"
	"  umount MNT                     unmount and wait for the daemon to exit\n"
	"  ls                             list images in the store (and which are pinned)\n"
	"  stats                          store figures, quota, pins and evictions\n"
	"  rm REF...                      forget images (gc then frees what only they used)\n"
	"  pin REF...                     fetch every missing chunk; never evict the image\n"
	"  unpin REF...                   let the quota evict the image's chunks again\n"
	"  gc                             delete layers no image lists and chunks no layer uses;\n"
	"                                 with a quota, evict least recently used layers' chunks\n"
	"  fsck [--repair]                verify chunks, layer records and images; --repair deletes\n"
	"                                 corrupt chunks (fetched again), undecodable layers and\n"
	"                                 images whose layers are missing. Exit 1 on problems\n"
	"\n"
	"options (anywhere on the line):\n"
	"  --store DIR       store directory (default " DEFAULT_STORE ")\n"
	"  --config FILE     configuration file (key = value: quota, quota_low_water,\n"
	"                    hosts_dir, strict_cache, read_timeout, index_cache, chunk_cache,\n"
	"                    block_cache, allow_other, low_speed_timeout, download_deadline_base,\n"
	"                    download_min_rate, artifact_trust, trusted_keys); flags override it\n"
	"  --hosts-dir DIR   containerd certs.d layout for mirrors (default " DEFAULT_HOSTS_DIR
	")\n"
	"  --strict-cache    never fall back to the upstream registry\n"
	"  --quota SIZE      store size bound (e.g. 20G): a daemon evicts down to 90%\n"
	"  --json            machine-readable output\n"
	"  -v, --verbose     more logging (twice for debug)\n"
	"  -h, --help        this text;  --version  the version\n"
	"\n"
	"With a daemon running on the store (strata mount), commands are carried out by it through\n"
	"<store>/strata.sock; otherwise they open the store directly.\n"
	"Exit codes: 0 ok, 1 error, 2 usage.\n";

static const struct {
	const char *name;
	cli_cmd_fn fn;
	int local; /* runs in the CLI process (mount, umount), never forwarded to a daemon */
} commands[] = {
	{ "pull", cmd_pull, 0 },   { "index", cmd_index, 0 },	{ "ls", cmd_ls, 0 },
	{ "stats", cmd_stats, 0 }, { "rm", cmd_rm, 0 },		{ "fsck", cmd_fsck, 0 },
	{ "gc", cmd_gc, 0 },	   { "pin", cmd_pin, 0 },	{ "unpin", cmd_unpin, 0 },
	{ "mount", cmd_mount, 1 }, { "umount", cmd_umount, 1 },
};

static int is_local(const char *cmd)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, cmd) == 0)
			return commands[i].local;
	}
	return 0;
}

/* The dispatcher (struct cli's dispatch): runs a command by name in this process, with c->store
 * open unless the command is local. In the daemon (c->in_daemon), a local command is refused. */
static int run_command(struct cli *c, int argc, char **argv)
{
	c->cmd = argv[0];
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, argv[0]) != 0)
			continue;
		if (c->in_daemon && commands[i].local)
			return cli_fail(c, "cannot run '%s' through the daemon", argv[0]);
		return commands[i].fn(c, argc, argv);
	}
	c->cmd = NULL;
	return cli_usage(c, "unknown command '%s'", argv[0]);
}

int main(int argc, char **argv)
{
	struct cli c;
	char **rest = calloc((size_t)argc + 1, sizeof(*rest));
	char *abs_config = NULL, *abs_hosts = NULL;
	int nrest = 0, rc;

	if (!rest)
		return 1;
	memset(&c, 0, sizeof(c));
	c.out = stdout;
	c.err = stderr;
	c.tty = isatty(STDERR_FILENO);
	c.dispatch = run_command;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage_text, stdout);
			free(rest);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("strata %s\n", STRATA_VERSION);
			free(rest);
			return 0;
		}
	}
	rc = cli_parse_globals(&c, argc - 1, argv + 1, rest, &nrest);
	if (rc)
		goto out;
	if (nrest == 0) {
		fputs(usage_text, stderr);
		rc = 2;
		goto out;
	}
	/* A daemon resolves paths from its own directory: make ours absolute. */
	if (c.config && !(abs_config = realpath(c.config, NULL))) {
		c.cmd = rest[0];
		rc = cli_fail(&c, "config file %s: %s", c.config, strerror(errno));
		goto out;
	}
	c.config = abs_config;
	/* Flags override the file: it only fills what they left unset. */
	rc = cli_apply_config(&c);
	if (rc)
		goto out;
	if (!c.store_dir)
		c.store_dir = getenv("STRATA_STORE") ? getenv("STRATA_STORE") : DEFAULT_STORE;
	if (!c.hosts_dir)
		c.hosts_dir = DEFAULT_HOSTS_DIR;
	if ((abs_hosts = realpath(c.hosts_dir, NULL)))
		c.hosts_dir = abs_hosts;
	strata_log_set_level(c.verbose >= 2 ? LOG_DEBUG : c.verbose ? LOG_INFO : LOG_WARNING);

	if (!is_local(rest[0])) {
		rc = ctl_forward(&c, nrest, rest);
		if (rc >= 0)
			goto out;
	}
	if (is_local(rest[0])) {
		rc = run_command(&c, nrest, rest);
		goto out;
	}
	c.cmd = rest[0];
	rc = store_open(c.store_dir, NULL, &c.store);
	if (rc < 0) {
		rc = cli_fail(&c, "%s", strata_errmsg(rc));
		goto out;
	}
	rc = run_command(&c, nrest, rest);
	store_close(c.store);
out:
	cli_config_free(&c);
	free(abs_config);
	free(abs_hosts);
	free(rest);
	fflush(stdout);
	return rc;
}

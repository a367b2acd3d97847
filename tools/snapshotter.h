/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's containerd snapshotter (mount --snapshotter-socket): the snap/ service started over
 * the daemon's store and mount, with remote layers registered as `strata pull` does. */
#ifndef STRATA_TOOLS_SNAPSHOTTER_H
#define STRATA_TOOLS_SNAPSHOTTER_H

#include "cli.h"

struct snapshotter;

/*
 * Serves containerd's snapshots API on the unix socket path for the daemon mounted at mnt. daemon
 * (borrowed; outlives snapshotter_stop) holds its store, registry client, fs and options: a
 * Prepare with CRI labels runs `pull` through daemon->dispatch with them. Returns 0 and *out,
 * -ENOTSUP when strata was built without gRPC, or negative errno with strata_err set.
 */
int snapshotter_start(const char *path, const struct cli *daemon, const char *mnt,
		      struct snapshotter **out);

/* Stops serving and frees (NULL ok). Snapshot records and directories stay. */
void snapshotter_stop(struct snapshotter *s);

#endif

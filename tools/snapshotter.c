/* SPDX-License-Identifier: Apache-2.0 */
/* The daemon's containerd snapshotter: the snap/ model and gRPC service over the daemon's store and
 * mount. */
#include "snapshotter.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#ifdef STRATA_SNAPSHOTTER

#include "snap/service.h"
#include "snap/snapshots.h"

struct snapshotter {
	struct store *store;
	struct fetch_client *fc;
	struct fs *fs;
	cli_cmd_fn dispatch;
	struct snapshots *sn;
	struct snap_service *svc;
};

int snapshotter_start(const char *path, struct store *store, struct fetch_client *fc, struct fs *f,
		      const char *mnt, cli_cmd_fn dispatch, struct snapshotter **out)
{
	struct snapshotter *s = calloc(1, sizeof(*s));
	char layers[PATH_MAX];
	int rc;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->store = store;
	s->fc = fc;
	s->fs = f;
	s->dispatch = dispatch;
	if (!realpath(mnt, layers))
		snprintf(layers, sizeof(layers), "%s", mnt);
	if (strlen(layers) + sizeof("/layers") > sizeof(layers)) {
		free(s);
		return strata_err(ENAMETOOLONG, "mountpoint %s is too long", mnt);
	}
	strcat(layers, "/layers");
	rc = snapshots_new(store, layers, NULL, &s->sn);
	if (rc == 0)
		rc = snap_service_start(path, s->sn, &s->svc);
	if (rc < 0) {
		snapshotter_stop(s);
		return rc;
	}
	strata_log(LOG_NOTICE, "containerd snapshotter on %s", path);
	*out = s;
	return 0;
}

void snapshotter_stop(struct snapshotter *s)
{
	if (!s)
		return;
	snap_service_stop(s->svc);
	snapshots_free(s->sn);
	free(s);
}

#else

int snapshotter_start(const char *path, struct store *store, struct fetch_client *fc, struct fs *f,
		      const char *mnt, cli_cmd_fn dispatch, struct snapshotter **out)
{
	(void)path, (void)store, (void)fc, (void)f, (void)mnt, (void)dispatch;
	*out = NULL;
	return strata_err(ENOTSUP,
			  "this strata was built without the containerd snapshotter "
			  "(it needs libgrpc-dev, libprotobuf-c-dev and protobuf-c-compiler)");
}

void snapshotter_stop(struct snapshotter *s)
{
	(void)s;
}

#endif

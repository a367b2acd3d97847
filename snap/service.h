/* SPDX-License-Identifier: Apache-2.0 */
/* containerd's snapshots.v1 gRPC service over the snapshotter model: decoding each call, running
 * it, encoding the answer. */
#ifndef STRATA_SNAP_SERVICE_H
#define STRATA_SNAP_SERVICE_H

struct snapshots;
struct snap_service;

/* Serves sn (borrowed; outlives the service) on the unix socket path. Returns 0 and *out, or
 * negative errno with strata_err set. */
int snap_service_start(const char *path, struct snapshots *sn, struct snap_service **out);

/* Stops serving and frees (NULL ok). */
void snap_service_stop(struct snap_service *svc);

#endif

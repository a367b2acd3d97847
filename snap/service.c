/* SPDX-License-Identifier: Apache-2.0 */
/* containerd's snapshots.v1 service: each method's request decoded (protobuf-c), run against the
 * snapshotter model (snap/snapshots.c), its answer encoded; errors as gRPC status codes. */
#include "service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_server.h"
#include "snapshots.h"
#include "snapshots.pb-c.h"
#include "util/log.h"

#define PREFIX	   "/containerd.services.snapshots.v1.Snapshots/"
#define LIST_BATCH 100 /* snapshots per List message */

typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Types__Mount Mount;

struct snap_service {
	struct snapshots *sn;
	struct snap_grpc *grpc;
};

/* The status for a model error, its message from strata_err. */
static void fail(struct snap_reply *r, int rc)
{
	enum snap_status st;

	switch (-rc) {
	case ENOENT:
		st = SNAP_NOT_FOUND;
		break;
	case EEXIST:
		st = SNAP_ALREADY_EXISTS;
		break;
	case EINVAL:
		st = SNAP_INVALID_ARGUMENT;
		break;
	case EBUSY:
		st = SNAP_FAILED_PRECONDITION;
		break;
	default:
		st = SNAP_UNKNOWN;
	}
	snap_reply_status(r, st, "%s", strata_errmsg(rc));
	if (st == SNAP_UNKNOWN)
		strata_log(LOG_ERR, "snapshotter: %s", strata_errmsg(rc));
	strata_err_clear();
}

/* Packs msg as one response message. */
static void answer(struct snap_reply *r, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(len ? len : 1);

	if (!buf || protobuf_c_message_pack(msg, buf) != len || snap_reply_add(r, buf, len) < 0)
		snap_reply_status(r, SNAP_INTERNAL, "out of memory encoding the answer");
	free(buf);
}

/* Decodes the request of type desc; NULL after setting r's status. */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const uint8_t *req,
				size_t len, struct snap_reply *r)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, req);

	if (!m)
		snap_reply_status(r, SNAP_INVALID_ARGUMENT, "malformed %s message", desc->name);
	return m;
}

/* A protobuf map<string,string> (entries with key and value at the same place) as a JSON object. */
struct kv {
	ProtobufCMessage base;
	char *key, *value;
};

static json_t *labels_json(size_t n, void *entries)
{
	struct kv **e = entries;
	json_t *o = json_object();

	for (size_t i = 0; o && i < n; i++) {
		if (json_object_set_new(o, e[i]->key ? e[i]->key : "",
					json_string(e[i]->value ? e[i]->value : "")) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* ---------------------------------------------------------------- encoding helpers */

static void mounts_answer(struct snap_reply *r, const ProtobufCMessageDescriptor *desc,
			  struct snap_mount *m, size_t n)
{
	/* The three responses that carry mounts share one layout: base, n_mounts, mounts. */
	struct {
		ProtobufCMessage base;
		size_t n_mounts;
		Mount **mounts;
	} resp;
	Mount *pm = calloc(n ? n : 1, sizeof(*pm));
	Mount **pp = calloc(n ? n : 1, sizeof(*pp));

	if (!pm || !pp) {
		snap_reply_status(r, SNAP_INTERNAL, "out of memory");
		goto out;
	}
	memset(&resp, 0, sizeof(resp));
	protobuf_c_message_init(desc, &resp);
	for (size_t i = 0; i < n; i++) {
		containerd__types__mount__init(&pm[i]);
		pm[i].type = m[i].type;
		pm[i].source = m[i].source;
		pm[i].target = "";
		pm[i].n_options = m[i].noptions;
		pm[i].options = m[i].options;
		pp[i] = &pm[i];
	}
	resp.n_mounts = n;
	resp.mounts = pp;
	answer(r, &resp.base);
out:
	free(pm);
	free(pp);
}

/* The storage of one encoded Info: the message and what it points to (freed by info_pb_free). */
struct info_pb {
	Info info;
	Google__Protobuf__Timestamp created, updated;
	Containerd__Services__Snapshots__V1__Info__LabelsEntry *entries, **pentries;
};

static int info_pb(const struct snap_info *in, struct info_pb *pb)
{
	size_t n = json_object_size(in->labels), i = 0;
	const char *k;
	json_t *v;

	memset(pb, 0, sizeof(*pb));
	containerd__services__snapshots__v1__info__init(&pb->info);
	google__protobuf__timestamp__init(&pb->created);
	google__protobuf__timestamp__init(&pb->updated);
	pb->created.seconds = in->created_ns / 1000000000;
	pb->created.nanos = (int32_t)(in->created_ns % 1000000000);
	pb->updated.seconds = in->updated_ns / 1000000000;
	pb->updated.nanos = (int32_t)(in->updated_ns % 1000000000);
	pb->info.name = in->name;
	pb->info.parent = in->parent;
	pb->info.kind = (Containerd__Services__Snapshots__V1__Kind)in->kind;
	pb->info.created_at = &pb->created;
	pb->info.updated_at = &pb->updated;
	pb->entries = calloc(n ? n : 1, sizeof(*pb->entries));
	pb->pentries = calloc(n ? n : 1, sizeof(*pb->pentries));
	if (!pb->entries || !pb->pentries)
		return -ENOMEM;
	json_object_foreach (in->labels, k, v) {
		containerd__services__snapshots__v1__info__labels_entry__init(&pb->entries[i]);
		pb->entries[i].key = (char *)k;
		pb->entries[i].value = (char *)json_string_value(v);
		pb->pentries[i] = &pb->entries[i];
		i++;
	}
	pb->info.n_labels = i;
	pb->info.labels = pb->pentries;
	return 0;
}

static void info_pb_free(struct info_pb *pb)
{
	free(pb->entries);
	free(pb->pentries);
}

/* ---------------------------------------------------------------- methods */

static void do_prepare(struct snap_service *svc, const uint8_t *req, size_t len,
		       struct snap_reply *r, int view)
{
	/* Prepare and View requests share one layout too. */
	Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *q = (void *)decode(
		view ? &containerd__services__snapshots__v1__view_snapshot_request__descriptor :
		       &containerd__services__snapshots__v1__prepare_snapshot_request__descriptor,
		req, len, r);
	struct snap_mount *m = NULL;
	size_t n = 0;
	json_t *labels;
	int rc;

	if (!q)
		return;
	labels = labels_json(q->n_labels, q->labels);
	rc = labels ? snapshots_prepare(svc->sn, q->key, q->parent, labels, view, &m, &n) : -ENOMEM;
	if (rc < 0)
		fail(r, rc);
	else
		mounts_answer(
			r,
			view ? &containerd__services__snapshots__v1__view_snapshot_response__descriptor :
			       &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
			m, n);
	snap_mounts_free(m, n);
	json_decref(labels);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void do_mounts(struct snap_service *svc, const uint8_t *req, size_t len,
		      struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__MountsRequest *q =
		(void *)decode(&containerd__services__snapshots__v1__mounts_request__descriptor,
			       req, len, r);
	struct snap_mount *m = NULL;
	size_t n = 0;
	int rc;

	if (!q)
		return;
	rc = snapshots_mounts(svc->sn, q->key, &m, &n);
	if (rc < 0)
		fail(r, rc);
	else
		mounts_answer(r, &containerd__services__snapshots__v1__mounts_response__descriptor,
			      m, n);
	snap_mounts_free(m, n);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void answer_empty(struct snap_reply *r)
{
	Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;

	answer(r, &e.base);
}

static void do_commit(struct snap_service *svc, const uint8_t *req, size_t len,
		      struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__CommitSnapshotRequest *q = (void *)
		decode(&containerd__services__snapshots__v1__commit_snapshot_request__descriptor,
		       req, len, r);
	json_t *labels;
	int rc;

	if (!q)
		return;
	labels = q->n_labels ? labels_json(q->n_labels, q->labels) : NULL;
	rc = !q->n_labels || labels ? snapshots_commit(svc->sn, q->name, q->key, labels) : -ENOMEM;
	if (rc < 0)
		fail(r, rc);
	else
		answer_empty(r);
	json_decref(labels);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void do_remove(struct snap_service *svc, const uint8_t *req, size_t len,
		      struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__RemoveSnapshotRequest *q = (void *)
		decode(&containerd__services__snapshots__v1__remove_snapshot_request__descriptor,
		       req, len, r);
	int rc;

	if (!q)
		return;
	rc = snapshots_remove(svc->sn, q->key);
	if (rc < 0)
		fail(r, rc);
	else
		answer_empty(r);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* Answers a Stat or Update response (same layout: base, info) with info. */
static void info_answer(struct snap_reply *r, const ProtobufCMessageDescriptor *desc,
			const struct snap_info *info)
{
	struct {
		ProtobufCMessage base;
		Info *info;
	} resp;
	struct info_pb pb;

	memset(&resp, 0, sizeof(resp));
	protobuf_c_message_init(desc, &resp);
	if (info_pb(info, &pb) < 0) {
		snap_reply_status(r, SNAP_INTERNAL, "out of memory");
	} else {
		resp.info = &pb.info;
		answer(r, &resp.base);
	}
	info_pb_free(&pb);
}

static void do_stat(struct snap_service *svc, const uint8_t *req, size_t len, struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__StatSnapshotRequest *q = (void *)
		decode(&containerd__services__snapshots__v1__stat_snapshot_request__descriptor, req,
		       len, r);
	struct snap_info info;
	int rc;

	if (!q)
		return;
	rc = snapshots_stat(svc->sn, q->key, &info);
	if (rc < 0)
		fail(r, rc);
	else
		info_answer(r,
			    &containerd__services__snapshots__v1__stat_snapshot_response__descriptor,
			    &info);
	snap_info_clear(&info);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void do_update(struct snap_service *svc, const uint8_t *req, size_t len,
		      struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *q = (void *)
		decode(&containerd__services__snapshots__v1__update_snapshot_request__descriptor,
		       req, len, r);
	struct snap_info in, out;
	int rc;

	memset(&out, 0, sizeof(out));
	if (!q)
		return;
	if (!q->info) {
		snap_reply_status(r, SNAP_INVALID_ARGUMENT, "update without info");
		goto done;
	}
	memset(&in, 0, sizeof(in));
	in.name = q->info->name;
	in.labels = labels_json(q->info->n_labels, q->info->labels);
	rc = in.labels ?
		     snapshots_update(svc->sn, &in,
				      q->update_mask ? (const char *const *)q->update_mask->paths :
						       NULL,
				      q->update_mask ? q->update_mask->n_paths : 0, &out) :
		     -ENOMEM;
	json_decref(in.labels);
	if (rc < 0)
		fail(r, rc);
	else
		info_answer(
			r,
			&containerd__services__snapshots__v1__update_snapshot_response__descriptor,
			&out);
	snap_info_clear(&out);
done:
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

/* List: collects the infos, sends them LIST_BATCH per message. */
struct list_acc {
	struct snap_reply *r;
	struct info_pb pbs[LIST_BATCH];
	struct snap_info infos[LIST_BATCH];
	size_t n;
};

static int list_flush(struct list_acc *a)
{
	Containerd__Services__Snapshots__V1__ListSnapshotsResponse resp =
		CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
	Info *ptrs[LIST_BATCH];
	int rc = 0;

	for (size_t i = 0; i < a->n; i++) {
		if (rc == 0)
			rc = info_pb(&a->infos[i], &a->pbs[i]);
		ptrs[i] = &a->pbs[i].info;
	}
	resp.n_info = a->n;
	resp.info = ptrs;
	if (rc == 0 && a->n)
		answer(a->r, &resp.base);
	for (size_t i = 0; i < a->n; i++) {
		info_pb_free(&a->pbs[i]);
		snap_info_clear(&a->infos[i]);
	}
	a->n = 0;
	return rc;
}

static int list_cb(void *ctx, const struct snap_info *info)
{
	struct list_acc *a = ctx;
	struct snap_info *c = &a->infos[a->n++];

	c->name = strdup(info->name);
	c->parent = strdup(info->parent);
	c->kind = info->kind;
	c->created_ns = info->created_ns;
	c->updated_ns = info->updated_ns;
	c->labels = json_incref(info->labels);
	if (!c->name || !c->parent)
		return -ENOMEM;
	return a->n == LIST_BATCH ? list_flush(a) : 0;
}

static void do_list(struct snap_service *svc, const uint8_t *req, size_t len, struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__ListSnapshotsRequest *q = (void *)
		decode(&containerd__services__snapshots__v1__list_snapshots_request__descriptor,
		       req, len, r);
	struct list_acc *a;
	int rc;

	if (!q)
		return;
	/* Filters are not applied: containerd filters again (metadata/snapshot.go). */
	a = calloc(1, sizeof(*a));
	if (!a) {
		snap_reply_status(r, SNAP_INTERNAL, "out of memory");
		goto out;
	}
	a->r = r;
	rc = snapshots_list(svc->sn, list_cb, a);
	if (rc == 0)
		rc = list_flush(a);
	else
		list_flush(a);
	if (rc < 0)
		fail(r, rc);
	free(a);
out:
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void do_usage(struct snap_service *svc, const uint8_t *req, size_t len, struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__UsageRequest *q =
		(void *)decode(&containerd__services__snapshots__v1__usage_request__descriptor, req,
			       len, r);
	Containerd__Services__Snapshots__V1__UsageResponse resp =
		CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
	int rc;

	if (!q)
		return;
	rc = snapshots_usage(svc->sn, q->key, &resp.size, &resp.inodes);
	if (rc < 0)
		fail(r, rc);
	else
		answer(r, &resp.base);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void do_cleanup(struct snap_service *svc, const uint8_t *req, size_t len,
		       struct snap_reply *r)
{
	Containerd__Services__Snapshots__V1__CleanupRequest *q =
		(void *)decode(&containerd__services__snapshots__v1__cleanup_request__descriptor,
			       req, len, r);
	int rc;

	if (!q)
		return;
	rc = snapshots_cleanup(svc->sn);
	if (rc < 0)
		fail(r, rc);
	else
		answer_empty(r);
	protobuf_c_message_free_unpacked(&q->base, NULL);
}

static void handle(void *ctx, const char *method, const uint8_t *req, size_t len,
		   struct snap_reply *r)
{
	struct snap_service *svc = ctx;
	const char *name = strncmp(method, PREFIX, strlen(PREFIX)) ? NULL : method + strlen(PREFIX);

	if (!name)
		snap_reply_status(r, SNAP_UNIMPLEMENTED, "unknown method %.128s", method);
	else if (!strcmp(name, "Prepare"))
		do_prepare(svc, req, len, r, 0);
	else if (!strcmp(name, "View"))
		do_prepare(svc, req, len, r, 1);
	else if (!strcmp(name, "Mounts"))
		do_mounts(svc, req, len, r);
	else if (!strcmp(name, "Commit"))
		do_commit(svc, req, len, r);
	else if (!strcmp(name, "Remove"))
		do_remove(svc, req, len, r);
	else if (!strcmp(name, "Stat"))
		do_stat(svc, req, len, r);
	else if (!strcmp(name, "Update"))
		do_update(svc, req, len, r);
	else if (!strcmp(name, "List"))
		do_list(svc, req, len, r);
	else if (!strcmp(name, "Usage"))
		do_usage(svc, req, len, r);
	else if (!strcmp(name, "Cleanup"))
		do_cleanup(svc, req, len, r);
	else
		snap_reply_status(r, SNAP_UNIMPLEMENTED, "unknown method %.128s", method);
}

int snap_service_start(const char *path, struct snapshots *sn, struct snap_service **out)
{
	struct snap_service *svc = calloc(1, sizeof(*svc));
	int rc;

	*out = NULL;
	if (!svc)
		return -ENOMEM;
	svc->sn = sn;
	rc = snap_grpc_start(path, handle, svc, &svc->grpc);
	if (rc < 0) {
		free(svc);
		return rc;
	}
	*out = svc;
	return 0;
}

void snap_service_stop(struct snap_service *svc)
{
	if (!svc)
		return;
	snap_grpc_stop(svc->grpc);
	free(svc);
}

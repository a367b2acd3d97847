/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshotter's model: snapshot records (JSON in the store's snapshots column family), their
 * directories under <store>/snapshots/<id>/{fs,work}, and the mounts stacking them, as
 * containerd's overlay snapshotter does; a remote snapshot is a layer directory of the mount. */
#include "snapshots.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "util/log.h"

#define MAX_DEPTH	 500 /* parents of one snapshot (overlayfs stacks at most 500 lowerdirs) */
#define LABEL_TARGET	 "containerd.io/snapshot.ref"
#define MAX_LABELS_BYTES (64u << 10)

struct snapshots {
	struct store *store;
	char *layers_dir;
	struct snap_remote_ops remote;
	int has_remote;
	pthread_mutex_t mu; /* serializes every change of records and directories */
};

static const char *const kind_names[] = { "unknown", "view", "active", "committed" };

static enum snap_kind kind_parse(const char *s)
{
	for (int i = 1; i < 4; i++) {
		if (s && !strcmp(s, kind_names[i]))
			return (enum snap_kind)i;
	}
	return SNAP_KIND_UNKNOWN;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---------------------------------------------------------------- records */

/* Reads key's record. Returns 0 and *rec (new reference), -ENOENT, -EBADMSG or -EIO. */
static int rec_load(struct snapshots *sn, const char *key, json_t **rec)
{
	char *json = NULL;
	int rc = store_snap_get(sn->store, key, &json);

	*rec = NULL;
	if (rc < 0)
		return rc == -ENOENT ? strata_err(ENOENT, "snapshot %s does not exist", key) : rc;
	*rec = json_loads(json, 0, NULL);
	free(json);
	if (!json_is_object(*rec) || json_integer_value(json_object_get(*rec, "id")) <= 0) {
		json_decref(*rec);
		*rec = NULL;
		return strata_err(EBADMSG, "snapshot %s: unreadable record", key);
	}
	return 0;
}

static int rec_save(struct snapshots *sn, const char *key, json_t *rec)
{
	char *json = json_dumps(rec, JSON_COMPACT);
	int rc;

	if (!json)
		return -ENOMEM;
	rc = store_snap_put(sn->store, key, json);
	free(json);
	return rc;
}

static enum snap_kind rec_kind(json_t *rec)
{
	return kind_parse(json_string_value(json_object_get(rec, "kind")));
}

static const char *rec_str(json_t *rec, const char *field)
{
	const char *s = json_string_value(json_object_get(rec, field));

	return s ? s : "";
}

static uint64_t rec_id(json_t *rec)
{
	return (uint64_t)json_integer_value(json_object_get(rec, "id"));
}

/* Labels must be an object of strings, each pair at most 4096 bytes (containerd's rule). */
static int labels_check(json_t *labels)
{
	const char *k;
	json_t *v;

	if (!labels)
		return 0;
	if (!json_is_object(labels))
		return strata_err(EINVAL, "labels are not a map");
	json_object_foreach (labels, k, v) {
		if (!json_is_string(v))
			return strata_err(EINVAL, "label %.64s is not a string", k);
		if (strlen(k) + json_string_length(v) > 4096)
			return strata_err(EINVAL, "label %.64s is longer than 4096 bytes", k);
	}
	return 0;
}

static void info_from(const char *key, json_t *rec, struct snap_info *info)
{
	json_t *labels = json_object_get(rec, "labels");

	memset(info, 0, sizeof(*info));
	info->name = strdup(key);
	info->parent = strdup(rec_str(rec, "parent"));
	info->kind = rec_kind(rec);
	info->created_ns = json_integer_value(json_object_get(rec, "created"));
	info->updated_ns = json_integer_value(json_object_get(rec, "updated"));
	info->labels = labels ? json_deep_copy(labels) : json_object();
}

void snap_info_clear(struct snap_info *info)
{
	if (!info)
		return;
	free(info->name);
	free(info->parent);
	json_decref(info->labels);
	memset(info, 0, sizeof(*info));
}

/* ---------------------------------------------------------------- directories and mounts */

/* "<store>/snapshots/<id>/<sub>" into buf. */
static int snap_path(struct snapshots *sn, uint64_t id, const char *sub, char *buf, size_t cap)
{
	char dir[PATH_MAX];
	int rc = store_snap_dir(sn->store, id, dir, sizeof(dir));
	int n;

	if (rc < 0)
		return rc;
	n = snprintf(buf, cap, "%s%s%s", dir, sub ? "/" : "", sub ? sub : "");
	return n < 0 || (size_t)n >= cap ? strata_err(ENAMETOOLONG, "path too long: %s", dir) : 0;
}

/* The directory a snapshot's content is in: its fs dir, or its layer's dir on the mount. */
static int content_dir(struct snapshots *sn, json_t *rec, char *buf, size_t cap)
{
	const char *layer = json_string_value(json_object_get(rec, "layer"));
	int n;

	if (!layer)
		return snap_path(sn, rec_id(rec), "fs", buf, cap);
	n = snprintf(buf, cap, "%s/%s", sn->layers_dir, layer);
	return n < 0 || (size_t)n >= cap ? strata_err(ENAMETOOLONG, "layer path too long") : 0;
}

/* Appends option prefix + value to m. */
static int mount_add_opt(struct snap_mount *m, const char *prefix, const char *value)
{
	char **o = realloc(m->options, (m->noptions + 1) * sizeof(*o));

	if (!o)
		return -ENOMEM;
	m->options = o;
	if (asprintf(&o[m->noptions], "%s%s", prefix, value) < 0)
		return -ENOMEM;
	m->noptions++;
	return 0;
}

void snap_mounts_free(struct snap_mount *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		free(m[i].source);
		for (size_t j = 0; j < m[i].noptions; j++)
			free(m[i].options[j]);
		free(m[i].options);
	}
	free(m);
}

/* Appends dir to the lowerdir list lower (malloc'd, grows), escaping ':' as overlayfs reads it. */
static int lower_append(char **lower, size_t *len, const char *dir)
{
	size_t need = *len + 2 * strlen(dir) + 2;
	char *l = realloc(*lower, need);

	if (!l)
		return -ENOMEM;
	*lower = l;
	if (*len)
		l[(*len)++] = ':';
	for (const char *p = dir; *p; p++) {
		if (*p == ':' || *p == '\\')
			l[(*len)++] = '\\';
		l[(*len)++] = *p;
	}
	l[*len] = '\0';
	return 0;
}

/*
 * The mounts of snapshot rec (an active or view one), as containerd's overlay snapshotter answers:
 * no parents: a bind mount of its own directory; a view of one parent: a read-only bind mount of
 * the parent's; otherwise one overlay with the parents as lowerdirs (top first) and, for an active
 * snapshot, its fs and work dirs as upper and work dirs.
 */
static int build_mounts(struct snapshots *sn, json_t *rec, struct snap_mount **out, size_t *nout)
{
	struct snap_mount *m = calloc(1, sizeof(*m));
	enum snap_kind kind = rec_kind(rec);
	char dir[PATH_MAX], *lower = NULL, *parent = NULL;
	size_t llen = 0, nparents = 0;
	json_t *cur = NULL;
	int rc = -ENOMEM;

	if (!m)
		return -ENOMEM;
	parent = strdup(rec_str(rec, "parent"));
	while (parent && *parent) {
		if (++nparents > MAX_DEPTH) {
			rc = strata_err(ELOOP, "snapshot has more than %d parents", MAX_DEPTH);
			goto out;
		}
		json_decref(cur);
		rc = rec_load(sn, parent, &cur);
		if (rc == 0)
			rc = content_dir(sn, cur, dir, sizeof(dir));
		if (rc == 0)
			rc = lower_append(&lower, &llen, dir);
		if (rc < 0)
			goto out;
		free(parent);
		parent = strdup(rec_str(cur, "parent"));
	}
	if (!parent)
		goto out;
	if (nparents == 0 || (kind == SNAP_KIND_VIEW && nparents == 1)) {
		rc = nparents ? content_dir(sn, cur, dir, sizeof(dir)) :
				content_dir(sn, rec, dir, sizeof(dir));
		if (rc < 0)
			goto out;
		snprintf(m->type, sizeof(m->type), "bind");
		m->source = strdup(dir);
		rc = m->source ? mount_add_opt(m, "", kind == SNAP_KIND_ACTIVE ? "rw" : "ro") :
				 -ENOMEM;
		if (rc == 0)
			rc = mount_add_opt(m, "", "rbind");
		goto out;
	}
	snprintf(m->type, sizeof(m->type), "overlay");
	m->source = strdup("overlay");
	rc = m->source ? 0 : -ENOMEM;
	if (rc == 0 && access("/sys/module/overlay/parameters/index", F_OK) == 0)
		rc = mount_add_opt(m, "", "index=off");
	if (rc == 0 && kind == SNAP_KIND_ACTIVE) {
		rc = snap_path(sn, rec_id(rec), "work", dir, sizeof(dir));
		if (rc == 0)
			rc = mount_add_opt(m, "workdir=", dir);
		if (rc == 0)
			rc = snap_path(sn, rec_id(rec), "fs", dir, sizeof(dir));
		if (rc == 0)
			rc = mount_add_opt(m, "upperdir=", dir);
	}
	if (rc == 0)
		rc = mount_add_opt(m, "lowerdir=", lower);
out:
	json_decref(cur);
	free(parent);
	free(lower);
	if (rc < 0) {
		snap_mounts_free(m, 1);
		return rc;
	}
	*out = m;
	*nout = 1;
	return 0;
}

/* ---------------------------------------------------------------- the operations */

int snapshots_new(struct store *store, const char *layers_dir, const struct snap_remote_ops *remote,
		  struct snapshots **out)
{
	struct snapshots *sn = calloc(1, sizeof(*sn));
	char dir[PATH_MAX];
	int rc;

	*out = NULL;
	if (!sn || !(sn->layers_dir = strdup(layers_dir))) {
		free(sn);
		return -ENOMEM;
	}
	sn->store = store;
	if (remote) {
		sn->remote = *remote;
		sn->has_remote = 1;
	}
	pthread_mutex_init(&sn->mu, NULL);
	rc = store_snap_dir(store, 0, dir, sizeof(dir));
	if (rc == 0 && mkdir(dir, 0700) < 0 && errno != EEXIST)
		rc = strata_err(errno, "cannot create %s: %s", dir, strerror(errno));
	if (rc < 0) {
		snapshots_free(sn);
		return rc;
	}
	*out = sn;
	return 0;
}

void snapshots_free(struct snapshots *sn)
{
	if (!sn)
		return;
	pthread_mutex_destroy(&sn->mu);
	free(sn->layers_dir);
	free(sn);
}

/* A new record for key: kind, parent, labels (copied), timestamps. */
static json_t *rec_new(uint64_t id, enum snap_kind kind, const char *parent, json_t *labels)
{
	int64_t now = now_ns();

	/* "o" takes the reference: a copy of labels' reference, or the new empty object's */
	return json_pack("{s:I, s:s, s:s, s:o, s:I, s:I}", "id", (json_int_t)id, "kind",
			 kind_names[kind], "parent", parent ? parent : "", "labels",
			 labels ? json_incref(labels) : json_object(), "created", (json_int_t)now,
			 "updated", (json_int_t)now);
}

/* Checks that key is free and parent ("" none) a committed snapshot. */
static int check_new(struct snapshots *sn, const char *key, const char *parent)
{
	json_t *rec = NULL;
	int rc;

	if (!*key)
		return strata_err(EINVAL, "empty snapshot key");
	rc = rec_load(sn, key, &rec);
	json_decref(rec);
	if (rc == 0)
		return strata_err(EEXIST, "snapshot %s already exists", key);
	if (rc != -ENOENT)
		return rc;
	strata_err_clear();
	if (!*parent)
		return 0;
	rc = rec_load(sn, parent, &rec);
	if (rc == 0 && rec_kind(rec) != SNAP_KIND_COMMITTED)
		rc = strata_err(EINVAL, "parent %s is not a committed snapshot", parent);
	json_decref(rec);
	return rc;
}

/* A remote layer: records key's target as a committed snapshot of the layer. -EEXIST when done. */
static int commit_remote(struct snapshots *sn, const char *parent, json_t *labels,
			 const char *layer, const char *image)
{
	const char *target = json_string_value(json_object_get(labels, LABEL_TARGET));
	json_t *rec = NULL;
	uint64_t id;
	int rc;

	rc = rec_load(sn, target, &rec);
	json_decref(rec);
	if (rc == 0) /* already there (another namespace, or a retry) */
		return strata_err(EEXIST, "target snapshot %s exists", target);
	strata_err_clear();
	rc = store_snap_next_id(sn->store, &id);
	if (rc < 0)
		return rc;
	rec = rec_new(id, SNAP_KIND_COMMITTED, parent, labels);
	if (!rec || json_object_set_new(rec, "layer", json_string(layer)) < 0 ||
	    (*image && json_object_set_new(rec, "image", json_string(image)) < 0)) {
		json_decref(rec);
		return -ENOMEM;
	}
	rc = rec_save(sn, target, rec);
	json_decref(rec);
	if (rc < 0)
		return rc;
	strata_log(LOG_INFO, "snapshotter: %s is remote layer %s", target, layer);
	return strata_err(EEXIST, "target snapshot %s exists", target);
}

int snapshots_prepare(struct snapshots *sn, const char *key, const char *parent, json_t *labels,
		      int view, struct snap_mount **m, size_t *n)
{
	char dir[PATH_MAX], layer[512], image[512];
	json_t *rec = NULL;
	uint64_t id = 0;
	int rc, remote = 0;

	*m = NULL;
	*n = 0;
	parent = parent ? parent : "";
	rc = labels_check(labels);
	if (rc < 0)
		return rc;
	if (!view && sn->has_remote && labels &&
	    json_string_value(json_object_get(labels, LABEL_TARGET))) {
		remote = sn->remote.resolve(sn->remote.ctx, key, labels, layer, image,
					    sizeof(layer));
		if (remote < 0)
			return remote;
	}
	pthread_mutex_lock(&sn->mu);
	rc = check_new(sn, key, parent);
	if (rc < 0)
		goto out;
	if (remote) {
		rc = commit_remote(sn, parent, labels, layer, image);
		goto out;
	}
	rc = store_snap_next_id(sn->store, &id);
	if (rc < 0)
		goto out;
	/* Directories first: a crash before the record leaves only a directory Cleanup removes. */
	rc = snap_path(sn, id, NULL, dir, sizeof(dir));
	if (rc == 0 && mkdir(dir, 0700) < 0)
		rc = strata_err(errno, "cannot create %s: %s", dir, strerror(errno));
	if (rc == 0)
		rc = snap_path(sn, id, "fs", dir, sizeof(dir));
	if (rc == 0 && mkdir(dir, 0755) < 0)
		rc = strata_err(errno, "cannot create %s: %s", dir, strerror(errno));
	if (rc == 0 && !view)
		rc = snap_path(sn, id, "work", dir, sizeof(dir));
	if (rc == 0 && !view && mkdir(dir, 0711) < 0)
		rc = strata_err(errno, "cannot create %s: %s", dir, strerror(errno));
	if (rc < 0)
		goto out;
	rec = rec_new(id, view ? SNAP_KIND_VIEW : SNAP_KIND_ACTIVE, parent, labels);
	rc = rec ? rec_save(sn, key, rec) : -ENOMEM;
	if (rc == 0)
		rc = build_mounts(sn, rec, m, n);
out:
	if (rc < 0 && id && snap_path(sn, id, NULL, dir, sizeof(dir)) == 0 && rc != -EEXIST) {
		if (store_snap_del(sn->store, key) == 0)
			snap_dir_remove(dir);
	}
	pthread_mutex_unlock(&sn->mu);
	json_decref(rec);
	return rc;
}

int snapshots_mounts(struct snapshots *sn, const char *key, struct snap_mount **m, size_t *n)
{
	json_t *rec = NULL;
	int rc;

	*m = NULL;
	*n = 0;
	pthread_mutex_lock(&sn->mu);
	rc = rec_load(sn, key, &rec);
	if (rc == 0 && rec_kind(rec) == SNAP_KIND_COMMITTED)
		rc = strata_err(EINVAL, "snapshot %s is committed: it has no mounts", key);
	if (rc == 0)
		rc = build_mounts(sn, rec, m, n);
	pthread_mutex_unlock(&sn->mu);
	json_decref(rec);
	return rc;
}

int snapshots_commit(struct snapshots *sn, const char *name, const char *key, json_t *labels)
{
	json_t *rec = NULL, *other = NULL;
	char dir[PATH_MAX], *json = NULL;
	int64_t size = 0, inodes = 0;
	int rc;

	rc = labels_check(labels);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&sn->mu);
	rc = rec_load(sn, key, &rec);
	if (rc == 0 && rec_kind(rec) != SNAP_KIND_ACTIVE)
		rc = strata_err(EINVAL, "snapshot %s is not active", key);
	if (rc < 0)
		goto out;
	if (!*name) {
		rc = strata_err(EINVAL, "empty snapshot name");
		goto out;
	}
	rc = rec_load(sn, name, &other);
	if (rc == 0)
		rc = strata_err(EEXIST, "snapshot %s already exists", name);
	if (rc != -ENOENT)
		goto out;
	strata_err_clear();
	rc = snap_path(sn, rec_id(rec), "fs", dir, sizeof(dir));
	if (rc == 0)
		rc = snap_dir_usage(dir, &size, &inodes);
	if (rc < 0)
		goto out;
	json_object_set_new(rec, "kind", json_string(kind_names[SNAP_KIND_COMMITTED]));
	json_object_set_new(rec, "updated", json_integer(now_ns()));
	json_object_set_new(rec, "size", json_integer(size));
	json_object_set_new(rec, "inodes", json_integer(inodes));
	if (labels)
		json_object_set(rec, "labels", labels);
	json = json_dumps(rec, JSON_COMPACT);
	rc = json ? store_snap_rename(sn->store, key, name, json) : -ENOMEM;
	if (rc == 0) { /* the work dir is an active snapshot's only */
		if (snap_path(sn, rec_id(rec), "work", dir, sizeof(dir)) == 0)
			snap_dir_remove(dir);
	}
out:
	pthread_mutex_unlock(&sn->mu);
	free(json);
	json_decref(rec);
	json_decref(other);
	return rc;
}

/* Finds a record whose field names value. */
struct child_ctx {
	const char *field, *value;
	int found;
};

static int child_cb(void *ctx, const char *key, const char *json)
{
	struct child_ctx *cc = ctx;
	json_t *rec = json_loads(json, 0, NULL);

	(void)key;
	if (rec && !strcmp(rec_str(rec, cc->field), cc->value))
		cc->found = 1;
	json_decref(rec);
	return cc->found;
}

int snapshots_remove(struct snapshots *sn, const char *key)
{
	struct child_ctx cc = { "parent", key, 0 };
	json_t *rec = NULL;
	char dir[PATH_MAX], *image = NULL;
	int rc;

	pthread_mutex_lock(&sn->mu);
	rc = rec_load(sn, key, &rec);
	if (rc == -EBADMSG) { /* an unreadable record can still go */
		strata_err_clear();
		rc = store_snap_del(sn->store, key);
		goto out;
	}
	if (rc < 0)
		goto out;
	rc = store_snap_list(sn->store, child_cb, &cc);
	if (rc < 0)
		goto out;
	if (cc.found) {
		rc = strata_err(EBUSY, "cannot remove snapshot %s: it has children", key);
		goto out;
	}
	rc = store_snap_del(sn->store, key);
	if (rc == 0 && *rec_str(rec, "image")) {
		struct child_ctx ic = { "image", rec_str(rec, "image"), 0 };

		if (store_snap_list(sn->store, child_cb, &ic) == 0 && !ic.found)
			image = strdup(ic.value);
	}
	if (rc == 0 && !json_object_get(rec, "layer") &&
	    snap_path(sn, rec_id(rec), NULL, dir, sizeof(dir)) == 0) {
		int err = snap_dir_remove(dir);

		if (err < 0) {
			strata_log(LOG_WARNING, "snapshotter: %s (Cleanup retries)",
				   strata_errmsg(err));
			strata_err_clear();
		}
	}
out:
	pthread_mutex_unlock(&sn->mu);
	json_decref(rec);
	if (image && sn->has_remote && sn->remote.release)
		sn->remote.release(sn->remote.ctx, image);
	free(image);
	return rc;
}

int snapshots_stat(struct snapshots *sn, const char *key, struct snap_info *info)
{
	json_t *rec = NULL;
	int rc;

	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&sn->mu);
	rc = rec_load(sn, key, &rec);
	pthread_mutex_unlock(&sn->mu);
	if (rc == 0)
		info_from(key, rec, info);
	json_decref(rec);
	return rc == 0 && (!info->name || !info->parent || !info->labels) ? -ENOMEM : rc;
}

int snapshots_update(struct snapshots *sn, const struct snap_info *in, const char *const *fields,
		     size_t nfields, struct snap_info *out)
{
	json_t *rec = NULL, *labels, *src = in->labels ? in->labels : json_object();
	int rc;

	memset(out, 0, sizeof(*out));
	rc = labels_check(src);
	if (rc < 0)
		goto done;
	pthread_mutex_lock(&sn->mu);
	rc = rec_load(sn, in->name ? in->name : "", &rec);
	if (rc < 0)
		goto out;
	labels = json_object_get(rec, "labels");
	if (!json_is_object(labels)) {
		labels = json_object();
		json_object_set_new(rec, "labels", labels);
	}
	if (nfields == 0) {
		json_object_clear(labels);
		json_object_update(labels, src);
	}
	for (size_t i = 0; i < nfields; i++) {
		const char *f = fields[i];

		if (!strcmp(f, "labels")) {
			json_object_clear(labels);
			json_object_update(labels, src);
		} else if (!strncmp(f, "labels.", 7)) {
			json_t *v = json_object_get(src, f + 7);

			if (v)
				json_object_set(labels, f + 7, v);
			else
				json_object_del(labels, f + 7);
		} else {
			rc = strata_err(EINVAL, "cannot update field %.64s of snapshot %s", f,
					in->name);
			goto out;
		}
	}
	json_object_set_new(rec, "updated", json_integer(now_ns()));
	rc = rec_save(sn, in->name, rec);
	if (rc == 0)
		info_from(in->name, rec, out);
out:
	pthread_mutex_unlock(&sn->mu);
done:
	if (!in->labels)
		json_decref(src);
	json_decref(rec);
	return rc;
}

struct list_ctx {
	int (*fn)(void *ctx, const struct snap_info *info);
	void *ctx;
};

static int list_cb(void *ctx, const char *key, const char *json)
{
	struct list_ctx *lc = ctx;
	json_t *rec = json_loads(json, 0, NULL);
	struct snap_info info;
	int rc;

	if (!json_is_object(rec)) { /* fsck reports it; Remove can delete it */
		strata_log(LOG_WARNING, "snapshotter: snapshot %s: unreadable record", key);
		json_decref(rec);
		return 0;
	}
	info_from(key, rec, &info);
	json_decref(rec);
	rc = lc->fn(lc->ctx, &info);
	snap_info_clear(&info);
	return rc;
}

int snapshots_list(struct snapshots *sn, int (*fn)(void *ctx, const struct snap_info *info),
		   void *ctx)
{
	struct list_ctx lc = { fn, ctx };

	return store_snap_list(sn->store, list_cb, &lc);
}

int snapshots_usage(struct snapshots *sn, const char *key, int64_t *size, int64_t *inodes)
{
	json_t *rec = NULL;
	char dir[PATH_MAX];
	int rc;

	*size = *inodes = 0;
	pthread_mutex_lock(&sn->mu);
	rc = rec_load(sn, key, &rec);
	if (rc < 0)
		goto out;
	if (json_object_get(rec, "layer")) {
		if (sn->has_remote && sn->remote.usage)
			rc = sn->remote.usage(sn->remote.ctx, rec_str(rec, "layer"), size, inodes);
	} else if (rec_kind(rec) == SNAP_KIND_COMMITTED) {
		*size = json_integer_value(json_object_get(rec, "size"));
		*inodes = json_integer_value(json_object_get(rec, "inodes"));
	} else {
		rc = snap_path(sn, rec_id(rec), "fs", dir, sizeof(dir));
		if (rc == 0)
			rc = snap_dir_usage(dir, size, inodes);
	}
out:
	pthread_mutex_unlock(&sn->mu);
	json_decref(rec);
	return rc;
}

/* ids of every record, for cleanup */
struct ids {
	uint64_t *v;
	size_t n, cap;
};

static int ids_cb(void *ctx, const char *key, const char *json)
{
	struct ids *ids = ctx;
	json_t *rec = json_loads(json, 0, NULL);

	(void)key;
	if (rec && ids->n == ids->cap) {
		size_t cap = ids->cap ? ids->cap * 2 : 64;
		uint64_t *v = realloc(ids->v, cap * sizeof(*v));

		if (!v) {
			json_decref(rec);
			return -ENOMEM;
		}
		ids->v = v;
		ids->cap = cap;
	}
	if (rec)
		ids->v[ids->n++] = rec_id(rec);
	json_decref(rec);
	return 0;
}

int snapshots_cleanup(struct snapshots *sn)
{
	struct ids ids = { 0 };
	char dir[PATH_MAX], sub[PATH_MAX + 32];
	struct dirent *e;
	DIR *d;
	int rc, err;

	pthread_mutex_lock(&sn->mu);
	rc = store_snap_list(sn->store, ids_cb, &ids);
	if (rc == 0)
		rc = store_snap_dir(sn->store, 0, dir, sizeof(dir));
	d = rc == 0 ? opendir(dir) : NULL;
	while (d && (e = readdir(d))) {
		char *end;
		uint64_t id = strtoull(e->d_name, &end, 10);
		int named = 0;

		if (e->d_name[0] < '1' || e->d_name[0] > '9' || *end)
			continue;
		for (size_t i = 0; i < ids.n && !named; i++)
			named = ids.v[i] == id;
		if (named)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
		err = snap_dir_remove(sub);
		if (err == 0)
			strata_log(LOG_INFO, "snapshotter: removed %s (no snapshot names it)", sub);
		else if (rc == 0)
			rc = err;
	}
	if (d)
		closedir(d);
	pthread_mutex_unlock(&sn->mu);
	free(ids.v);
	return rc < 0 ? rc : 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshotter's model: containerd snapshots (active, view, committed) kept in the store, their
 * directories, and the mounts that stack them; local snapshots as containerd's overlay snapshotter
 * makes them, remote ones as layer directories of the strata mount. No gRPC, no protobuf. */
#ifndef STRATA_SNAP_SNAPSHOTS_H
#define STRATA_SNAP_SNAPSHOTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct store;
struct snapshots;

/* Values as containerd's snapshots.v1 Kind. */
enum snap_kind {
	SNAP_KIND_UNKNOWN = 0,
	SNAP_KIND_VIEW = 1,
	SNAP_KIND_ACTIVE = 2,
	SNAP_KIND_COMMITTED = 3
};

struct snap_info {
	char *name;   /* owned */
	char *parent; /* owned; "" for none */
	enum snap_kind kind;
	int64_t created_ns, updated_ns; /* since the epoch */
	json_t *labels;			/* owned reference: an object of strings */
};

/* One mount as containerd's types.Mount: type, source, options (all owned). */
struct snap_mount {
	char type[16];
	char *source;
	char **options;
	size_t noptions;
};

/* How a remote layer becomes a committed snapshot (tools/snapshotter.c fills it). */
struct snap_remote_ops {
	/* Prepare of key carries labels (borrowed): when they name a layer strata can serve lazily,
	 * register it (as `strata pull` does), write its digest ("sha256:<hex>") into layer (cap
	 * bytes) and into image the name of the image the registration created ("" when it was in
	 * the store already: not the snapshotter's to remove); return 1. 0: serve it as a local
	 * snapshot (containerd unpacks it). Negative errno: the Prepare fails with that error
	 * (strata_err set). Called without the snapshots lock. */
	int (*resolve)(void *ctx, const char *key, json_t *labels, char *layer, char *image,
		       size_t cap);
	/* Usage of a remote layer: its content bytes in the store, and its inodes. 0 or -errno. */
	int (*usage)(void *ctx, const char *layer, int64_t *size, int64_t *inodes);
	/* The last snapshot of image (as resolve named it) is gone: forget the image so that
	 * `strata gc` can reclaim its layers. Called without the snapshots lock. */
	void (*release)(void *ctx, const char *image);
	void *ctx;
};

/*
 * Opens the snapshotter model over store (borrowed; outlives it). layers_dir is the strata mount's
 * "MNT/layers" (copied), where remote layer directories are. remote may be NULL (no remote layers).
 * Returns 0 and *out, or negative errno with strata_err set.
 */
int snapshots_new(struct store *store, const char *layers_dir, const struct snap_remote_ops *remote,
		  struct snapshots **out);

/* Frees sn (NULL ok). Records and directories stay. */
void snapshots_free(struct snapshots *sn);

/*
 * Creates an active snapshot (view: a view) key above parent ("" or NULL: none), with labels
 * (borrowed, may be NULL). Returns 0 and its mounts (*m, *n; free with snap_mounts_free);
 * -EEXIST when key exists, or when a remote layer was committed as the snapshot's target (the
 * label containerd.io/snapshot.ref) instead; -ENOENT when the parent does not exist, -EINVAL when
 * it is not committed; other negative errno with strata_err set. Thread-safe, as all below.
 */
int snapshots_prepare(struct snapshots *sn, const char *key, const char *parent, json_t *labels,
		      int view, struct snap_mount **m, size_t *n);

/* The mounts of active or view snapshot key. Returns 0, -ENOENT, -EINVAL (committed). */
int snapshots_mounts(struct snapshots *sn, const char *key, struct snap_mount **m, size_t *n);

/* Commits active snapshot key as name (labels replace its own when not NULL). Returns 0, -ENOENT,
 * -EEXIST (name exists), -EINVAL (key is not active), or negative errno. */
int snapshots_commit(struct snapshots *sn, const char *name, const char *key, json_t *labels);

/* Removes snapshot key and its directory. Returns 0, -ENOENT, -EBUSY (it has children). */
int snapshots_remove(struct snapshots *sn, const char *key);

/* Fills info (clear with snap_info_clear). Returns 0, -ENOENT or negative errno. */
int snapshots_stat(struct snapshots *sn, const char *key, struct snap_info *info);

/* Updates labels of in->name: with no fields, replaces them all; else each field "labels" (all)
 * or "labels.<key>" (one; set or removed). Other fields are immutable (-EINVAL). out gets the
 * result. Returns 0, -ENOENT, -EINVAL or negative errno. */
int snapshots_update(struct snapshots *sn, const struct snap_info *in, const char *const *fields,
		     size_t nfields, struct snap_info *out);

/* Calls fn for every snapshot (info borrowed for the call); stops when fn returns non-zero and
 * returns that. Returns 0 or negative errno. */
int snapshots_list(struct snapshots *sn, int (*fn)(void *ctx, const struct snap_info *info),
		   void *ctx);

/* Disk usage of key: bytes allocated and inodes of its directory (committed: measured at commit;
 * remote: the layer's bytes in the store). Returns 0, -ENOENT or negative errno. */
int snapshots_usage(struct snapshots *sn, const char *key, int64_t *size, int64_t *inodes);

/* Removes snapshot directories no record names (left by a crash or a Remove). Returns 0 or
 * negative errno. */
int snapshots_cleanup(struct snapshots *sn);

void snap_info_clear(struct snap_info *info);
void snap_mounts_free(struct snap_mount *m, size_t n);

/* snap/dirs.c: removes path and everything under it (not crossing mounts). Returns 0 (also when
 * absent) or negative errno with strata_err set. */
int snap_dir_remove(const char *path);

/* snap/dirs.c: bytes allocated (st_blocks) and inodes under path, path included; a hard-linked
 * file counts once. Returns 0 or negative errno. */
int snap_dir_usage(const char *path, int64_t *size, int64_t *inodes);

#endif

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

#include <jansson.h>

#include "fetch/ref.h"
#include "index/layer.h"
#include "snap/service.h"
#include "snap/snapshots.h"
#include "store/store.h"

/* The labels containerd's CRI plugin puts on a layer's Prepare, and those of `ctr-remote image
 * rpull` (stargz-snapshotter 0.12: reference and layer digest, no manifest digest). */
#define LABEL_IMAGE_REF	      "containerd.io/snapshot/cri.image-ref"
#define LABEL_LAYER_DIGEST    "containerd.io/snapshot/cri.layer-digest"
#define LABEL_MANIFEST_DIGEST "containerd.io/snapshot/cri.manifest-digest"
#define LABEL_STARGZ_REF      "containerd.io/snapshot/remote/stargz.reference"
#define LABEL_STARGZ_DIGEST   "containerd.io/snapshot/remote/stargz.digest"

struct snapshotter {
	const struct cli *daemon; /* the daemon's options: a pull runs with them */
	struct snapshots *sn;
	struct snap_service *svc;
};

struct image_match {
	const char *manifest, *layer;
	int found;
};

static int image_match_cb(void *ctx, const char *ref, const char *json)
{
	struct image_match *im = ctx;
	json_t *o = json_loads(json, 0, NULL), *l;
	size_t i;

	(void)ref;
	if (o && !strcmp(json_string_value(json_object_get(o, "manifest")) ?: "", im->manifest)) {
		json_array_foreach (json_object_get(o, "layers"), i, l) {
			if (!strcmp(json_string_value(json_object_get(l, "digest")) ?: "",
				    im->layer))
				im->found = 1;
		}
	}
	json_decref(o);
	return im->found;
}

/* Runs `strata CMD REF` (pull, rm) in the daemon, as a forwarded command would; its output is
 * dropped, its error message kept. Returns 0, or -EIO with strata_err set. */
static int run_cmd(struct snapshotter *s, const char *cmd, const char *ref)
{
	struct cli c = *s->daemon;
	char *args[] = { (char *)cmd, (char *)ref, NULL };
	char *errtext = NULL;
	size_t errlen = 0;
	int code;

	c.out = fopen("/dev/null", "w");
	c.err = open_memstream(&errtext, &errlen);
	c.json = 0;
	c.tty = 0;
	c.cmd = cmd;
	/* the daemon's copies stay with the daemon */
	c.config_hosts_dir = NULL;
	c.config_snapshotter_socket = NULL;
	if (!c.out || !c.err) {
		if (c.out)
			fclose(c.out);
		if (c.err)
			fclose(c.err);
		free(errtext);
		return -ENOMEM;
	}
	code = s->daemon->dispatch(&c, 2, args);
	fclose(c.out);
	fclose(c.err);
	if (code != 0) {
		if (errtext)
			errtext[strcspn(errtext, "\n")] = '\0';
		code = strata_err(EIO, "%s", errtext && *errtext ? errtext : "command failed");
	}
	free(errtext);
	return code;
}

static void release(void *ctx, const char *image);

/* snap_remote_ops.resolve: a layer of an image containerd pulls (its CRI labels) is served from
 * the mount when `pull` gives it an index (artifact, eStargz TOC); otherwise containerd unpacks it. */
static int resolve(void *ctx, const char *key, json_t *labels, char *layer, char *image, size_t cap)
{
	struct snapshotter *s = ctx;
	const char *ref = json_string_value(json_object_get(labels, LABEL_IMAGE_REF));
	const char *digest = json_string_value(json_object_get(labels, LABEL_LAYER_DIGEST));
	const char *manifest = json_string_value(json_object_get(labels, LABEL_MANIFEST_DIGEST));
	struct image_match im = { manifest, digest, 0 };
	struct store *st = s->daemon->store;
	char *pinned = NULL, *name = NULL, *json = NULL;
	struct fetch_ref *r;
	int rc, owned = 0;

	if (!ref || !digest) {
		ref = json_string_value(json_object_get(labels, LABEL_STARGZ_REF));
		digest = json_string_value(json_object_get(labels, LABEL_STARGZ_DIGEST));
		manifest = NULL;
		im.layer = digest;
	}
	if (!ref || !digest || strlen(digest) >= cap ||
	    (manifest && strncmp(manifest, "sha256:", 7) != 0))
		return 0;
	/* this very image (manifest) registered the layer already: its source vouched for it */
	rc = manifest ? store_image_list(st, image_match_cb, &im) : 0;
	if (rc < 0)
		return rc;
	if (!im.found) {
		/* ref@manifest: the manifest containerd resolved, whatever the tag says now (without
		 * one, the reference as containerd resolved it a moment ago) */
		if (manifest ? asprintf(&pinned, "%.*s@%s", (int)strcspn(ref, "@"), ref, manifest) <
				       0 :
			       !(pinned = strdup(ref)))
			return -ENOMEM;
		/* the image record this pull makes is the snapshotter's when there was none */
		if (fetch_ref_parse(pinned, &r) == 0) {
			name = fetch_ref_string(r);
			fetch_ref_free(r);
		}
		strata_err_clear();
		owned = name && store_image_get(st, name, &json) == -ENOENT;
		free(json);
		strata_err_clear();
		rc = run_cmd(s, "pull", pinned);
		free(pinned);
		if (rc < 0) {
			free(name);
			strata_log(LOG_WARNING,
				   "snapshotter: %s: %s; containerd unpacks layer %s itself", key,
				   strata_errmsg(rc), digest);
			strata_err_clear();
			return 0;
		}
	}
	rc = store_layer_get(st, digest, NULL, NULL, NULL);
	if (rc < 0) { /* pending (streamed by the daemon) or missing: not lazily served */
		strata_err_clear();
		if (owned) /* no snapshot will name the image: do not keep it */
			release(s, name);
		free(name);
		return 0;
	}
	snprintf(layer, cap, "%s", digest);
	snprintf(image, cap, "%s", owned && strlen(name) < cap ? name : "");
	free(name);
	return 1;
}

/* snap_remote_ops.usage: the layer's content bytes whose chunks are in the store. */
static int usage(void *ctx, const char *layer, int64_t *size, int64_t *inodes)
{
	struct snapshotter *s = ctx;
	struct index_layer *l = NULL;
	void *enc = NULL;
	size_t len = 0;
	int rc = store_layer_get(s->daemon->store, layer, NULL, &enc, &len);

	if (rc == 0)
		rc = index_layer_decode(enc, len, &l);
	free(enc);
	if (rc < 0)
		return rc;
	*inodes = index_layer_ninodes(l);
	for (uint32_t i = 0; i < index_layer_nchunks(l) && rc >= 0; i++) {
		const struct index_chunk *c = index_layer_chunk(l, i);

		rc = store_chunk_has(s->daemon->store, c->digest);
		if (rc == 1)
			*size += (int64_t)c->size;
	}
	index_layer_free(l);
	return rc < 0 ? rc : 0;
}

/* snap_remote_ops.release: `strata rm IMAGE`, so gc can reclaim what only it used. */
static void release(void *ctx, const char *image)
{
	int rc = run_cmd(ctx, "rm", image);

	if (rc < 0) {
		strata_log(LOG_WARNING, "snapshotter: cannot forget image %s: %s", image,
			   strata_errmsg(rc));
		strata_err_clear();
	} else {
		strata_log(LOG_INFO, "snapshotter: forgot image %s (its last snapshot is gone)",
			   image);
	}
}

int snapshotter_start(const char *path, const struct cli *daemon, const char *mnt,
		      struct snapshotter **out)
{
	struct snapshotter *s = calloc(1, sizeof(*s));
	struct snap_remote_ops remote = { resolve, usage, release, s };
	char layers[PATH_MAX];
	int rc;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->daemon = daemon;
	if (!realpath(mnt, layers))
		snprintf(layers, sizeof(layers), "%s", mnt);
	if (strlen(layers) + sizeof("/layers") > sizeof(layers)) {
		free(s);
		return strata_err(ENAMETOOLONG, "mountpoint %s is too long", mnt);
	}
	strcat(layers, "/layers");
	rc = snapshots_new(daemon->store, layers, &remote, &s->sn);
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

int snapshotter_start(const char *path, const struct cli *daemon, const char *mnt,
		      struct snapshotter **out)
{
	(void)path, (void)daemon, (void)mnt;
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

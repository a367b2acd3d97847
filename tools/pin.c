/* SPDX-License-Identifier: Apache-2.0 */
/* strata pin and unpin: make an image fully local and keep it from quota eviction, or let it go. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "cmd.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "fs/fs.h"
#include "index/layer.h"
#include "store/maint.h"
#include "store/store.h"
#include "util/log.h"

/* Returns the normalized reference for arg (malloc'd), or NULL after printing the error. */
static char *normalize(struct cli *c, const char *arg)
{
	struct fetch_ref *r;
	char *name;
	int rc = fetch_ref_parse(arg, &r);

	if (rc < 0) {
		cli_fail(c, "%s", strata_errmsg(rc));
		return NULL;
	}
	name = fetch_ref_string(r);
	fetch_ref_free(r);
	if (!name)
		cli_fail(c, "out of memory");
	return name;
}

struct pin_progress {
	struct cli *c;
	const char *ref;
	uint64_t base, total; /* bytes of the layers before this one, of all layers */
	time_t last;
};

static void pin_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct pin_progress *p = ctx;
	time_t now = time(NULL);
	char b1[32], b2[32];

	(void)total;
	if (!p->c->tty || p->c->json || (now == p->last && done != 0))
		return;
	p->last = now;
	fprintf(p->c->err, "\r\033[Kpin %s: %s of %s local", p->ref,
		cli_bytes(p->base + done, b1, sizeof(b1)), cli_bytes(p->total, b2, sizeof(b2)));
	fflush(p->c->err);
}

/* Makes image name fully local. Returns 0 or negative errno (strata_err set). */
static int pin_fetch(struct cli *c, struct fetch_client *fc, const char *name, json_t *layers,
		     uint64_t *content)
{
	struct pin_progress p = { c, name, 0, 0, 0 };
	struct fs_engine *own = NULL, *eng;
	json_t *layer;
	size_t i;
	int rc = 0;

	json_array_foreach (layers, i, layer) {
		struct index_layer *l = NULL;
		const char *d = json_string_value(json_object_get(layer, "digest"));

		if (!d)
			return strata_err(EBADMSG, "image %s: layer %zu has no digest", name, i);
		rc = store_layer_load_index(c->store, d, &l);
		if (rc < 0)
			return rc;
		for (uint32_t k = 0; k < index_layer_nchunks(l); k++)
			p.total += index_layer_chunk(l, k)->size;
		index_layer_free(l);
	}
	/* no mount: an engine of its own, just for the fetch path */
	eng = c->fs ? fs_engine_of(c->fs) : NULL;
	if (!eng) {
		rc = fs_engine_create(c->store, fc, FS_PIN_CHUNK_CACHE, 0, &own);
		if (rc < 0)
			return rc;
		eng = own;
	}
	json_array_foreach (layers, i, layer) {
		const char *d = json_string_value(json_object_get(layer, "digest"));
		struct index_layer *l = NULL;

		rc = fs_fetch_layer(eng, d, pin_progress_cb, &p, c->cancel);
		if (rc < 0)
			break;
		if (store_layer_load_index(c->store, d, &l) == 0) {
			for (uint32_t k = 0; k < index_layer_nchunks(l); k++)
				p.base += index_layer_chunk(l, k)->size;
		}
		index_layer_free(l);
	}
	fs_engine_free(own);
	if (c->tty && !c->json) {
		fprintf(c->err, "\r\033[K");
		fflush(c->err);
	}
	*content = p.total;
	return rc;
}

static int pin_one(struct cli *c, struct fetch_client *fc, const char *arg)
{
	char *name = normalize(c, arg), *json = NULL;
	json_error_t jerr;
	json_t *o = NULL;
	uint64_t content = 0;
	int was, rc, code = 1;

	if (!name)
		return 1;
	rc = store_image_get(c->store, name, &json);
	if (rc == -ENOENT) {
		cli_fail(c, "%s: no such image in the store (pull it first)", name);
		goto out;
	}
	if (rc == 0 && !(o = json_loads(json, 0, &jerr)))
		rc = strata_err(EBADMSG, "image %s: unreadable record", name);
	if (rc < 0) {
		cli_fail(c, "%s: %s", name, strata_errmsg(rc));
		goto out;
	}
	/* Pin first, so eviction keeps what this fetches; undone when the fetch fails. */
	was = store_pin_has(c->store, name);
	rc = was < 0 ? was : store_pin_put(c->store, name);
	if (rc == 0) {
		/* An eviction pass under way chose its kept set before the pin: let it end. */
		store_evict_wait_idle();
	}
	if (rc == 0)
		rc = pin_fetch(c, fc, name, json_object_get(o, "layers"), &content);
	if (rc < 0) {
		if (was == 0)
			store_pin_del(c->store, name);
		if (rc == -ECANCELED)
			cli_fail(c, "%s: cancelled: the daemon is shutting down", name);
		else
			cli_fail(c, "%s: not pinned: %s", name, strata_errmsg(rc));
		goto out;
	}
	if (c->json) {
		json_t *r = json_pack("{s:s, s:b, s:I, s:I}", "ref", name, "pinned", 1, "layers",
				      (json_int_t)json_array_size(json_object_get(o, "layers")),
				      "content_bytes", (json_int_t)content);
		char *txt = r ? json_dumps(r, JSON_COMPACT) : NULL;

		fprintf(c->out, "%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(r);
	} else {
		char b[32];

		fprintf(c->out, "pinned %s (%zu layers, %s, all local)\n", name,
			json_array_size(json_object_get(o, "layers")),
			cli_bytes(content, b, sizeof(b)));
	}
	code = 0;
out:
	json_decref(o);
	free(json);
	free(name);
	return code;
}

int cmd_pin(struct cli *c, int argc, char **argv)
{
	struct fetch_client *fc = c->fetch;
	int failed = 0;

	if (argc < 2)
		return cli_usage(c, "pin needs at least one reference");
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			return cli_usage(c, "unknown option %s", argv[i]);
	}
	if (!c->fs) {
		if (cli_fetch_client(c, &fc))
			return 1;
	}
	for (int i = 1; i < argc; i++)
		failed |= pin_one(c, fc, argv[i]);
	if (!c->fs)
		fetch_client_free(fc);
	return failed;
}

int cmd_unpin(struct cli *c, int argc, char **argv)
{
	int failed = 0;

	if (argc < 2)
		return cli_usage(c, "unpin needs at least one reference");
	for (int i = 1; i < argc; i++) {
		char *name = normalize(c, argv[i]);
		int rc;

		if (!name) {
			failed = 1;
			continue;
		}
		rc = store_pin_has(c->store, name);
		if (rc == 0)
			failed = cli_fail(c, "%s is not pinned", name);
		else if (rc < 0 || (rc = store_pin_del(c->store, name)) < 0)
			failed = cli_fail(c, "%s: %s", name, strata_errmsg(rc));
		else if (!c->json)
			fprintf(c->out, "unpinned %s (strata gc or the quota may now evict it)\n",
				name);
		free(name);
	}
	return failed;
}

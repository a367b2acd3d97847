/* SPDX-License-Identifier: Apache-2.0 */
/* The maintenance commands fsck and gc: options, progress and output around store/maint.h. */
#include "cli.h"
#include "cmd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/maint.h"
#include "store/store.h"
#include "tools/quota.h"
#include "util/log.h"

static int cancelled(void *ctx)
{
	const struct cli *c = ctx;

	return c->cancel && atomic_load(c->cancel);
}

static void progress_line(struct cli *c, const char *what, uint64_t n, int done)
{
	if (!c->tty || c->json)
		return;
	if (done) {
		fprintf(c->err, "\r\033[K");
	} else {
		fprintf(c->err, "\r%s: %llu chunks", what, (unsigned long long)n);
	}
	fflush(c->err);
}

/* ---------------------------------------------------------------- fsck */

struct fsck_out {
	struct cli *c;
	json_t *problems; /* array of strings */
	json_t *repaired; /* array of strings */
};

static int fsck_cancelled(void *ctx)
{
	return cancelled(((struct fsck_out *)ctx)->c);
}

static void fsck_progress(void *ctx, uint64_t n, int done)
{
	progress_line(((struct fsck_out *)ctx)->c, "fsck", n, done);
}

static void fsck_problem(void *ctx, const char *msg)
{
	struct fsck_out *o = ctx;

	json_array_append_new(o->problems, json_string(msg));
	if (!o->c->json) {
		progress_line(o->c, "", 0, 1);
		fprintf(o->c->out, "problem: %s\n", msg);
	}
}

static void fsck_repaired(void *ctx, const char *msg)
{
	struct fsck_out *o = ctx;

	json_array_append_new(o->repaired, json_string(msg));
	if (!o->c->json)
		fprintf(o->c->out, "repaired: %s\n", msg);
}

static void fsck_print(struct cli *c, const struct store_fsck_result *r, const struct fsck_out *o,
		       int repair)
{
	if (c->json) {
		json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:b, s:O}",
				      "chunks", (json_int_t)r->chunks, "bad_chunks",
				      (json_int_t)r->bad, "orphan_chunks", (json_int_t)r->orphans,
				      "remote_chunks", (json_int_t)r->remote, "layers",
				      (json_int_t)r->layers, "images", (json_int_t)r->images,
				      "snapshots", (json_int_t)r->snapshots, "problems",
				      (json_int_t)json_array_size(o->problems), "problem_list",
				      o->problems, "repair", repair, "repaired", o->repaired);
		char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;

		fprintf(c->out, "%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(j);
	} else {
		fprintf(c->out, "chunks checked %llu\n", (unsigned long long)r->chunks);
		fprintf(c->out, "bad chunks     %llu\n", (unsigned long long)r->bad);
		fprintf(c->out,
			"orphan chunks  %llu (referenced by no layer; strata gc removes them)\n",
			(unsigned long long)r->orphans);
		fprintf(c->out,
			"remote chunks  %llu (referenced, not stored yet: fetched when read)\n",
			(unsigned long long)r->remote);
		fprintf(c->out, "layers         %llu\n", (unsigned long long)r->layers);
		fprintf(c->out, "images         %llu\n", (unsigned long long)r->images);
		if (r->snapshots)
			fprintf(c->out, "snapshots      %llu\n", (unsigned long long)r->snapshots);
		fprintf(c->out, "problems       %zu%s\n", json_array_size(o->problems),
			repair && json_array_size(o->repaired) ? " (repaired as listed)" : "");
	}
}

int cmd_fsck(struct cli *c, int argc, char **argv)
{
	struct fsck_out o = { c, NULL, NULL };
	struct store_maint_hooks h = { &o, fsck_cancelled, fsck_progress, fsck_problem,
				       fsck_repaired };
	struct store_fsck_result r;
	int repair = 0, rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--repair") == 0)
			repair = 1;
		else
			return cli_usage(c, "unknown argument '%s'", argv[i]);
	}
	o.problems = json_array();
	o.repaired = json_array();
	if (!o.problems || !o.repaired) {
		rc = -ENOMEM;
		goto out;
	}
	rc = store_fsck(c->store, repair, &h, &r);
	if (rc < 0)
		goto out;
	fsck_print(c, &r, &o, repair);
	rc = json_array_size(o.problems) ? 1 : 0;
	fflush(c->out);
	json_decref(o.problems);
	json_decref(o.repaired);
	return rc;
out:
	progress_line(c, "fsck", 0, 1);
	json_decref(o.problems);
	json_decref(o.repaired);
	if (rc == -ECANCELED)
		return cli_fail(c, "cancelled: the daemon is shutting down");
	return cli_fail(c, "%s", rc == -ENOMEM ? "out of memory" : strata_errmsg(rc));
}

/* ---------------------------------------------------------------- gc */

static void gc_progress(void *ctx, uint64_t n, int done)
{
	progress_line(ctx, "gc", n, done);
}

static void gc_print(struct cli *c, const struct store_gc_result *g,
		     const struct store_stats *before, const struct store_stats *after,
		     const struct store_evict_result *q)
{
	if (c->json) {
		json_t *list = json_array();
		json_t *o;
		char *txt;

		for (size_t i = 0; list && i < g->nfreed_layers; i++)
			json_array_append_new(list, json_string(g->freed_layers[i]));
		o = json_pack("{s:I, s:I, s:I, s:O, s:I, s:I, s:{s:I, s:I, s:b, s:I, s:I, s:I}}",
			      "freed_chunks", (json_int_t)g->chunks, "freed_chunk_bytes",
			      (json_int_t)g->chunk_bytes, "freed_layers",
			      (json_int_t)g->nfreed_layers, "freed_layer_list", list,
			      "disk_bytes_before", (json_int_t)before->disk_bytes,
			      "disk_bytes_after", (json_int_t)after->disk_bytes, "quota", "bytes",
			      (json_int_t)q->quota, "low_water_bytes", (json_int_t)q->target,
			      "over", q->over, "evicted_chunks", (json_int_t)q->chunks,
			      "evicted_bytes", (json_int_t)q->bytes, "evicted_layers",
			      (json_int_t)q->layers);
		txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
		fprintf(c->out, "%s\n", txt ? txt : "{}");
		free(txt);
		json_decref(o);
		json_decref(list);
	} else {
		char b1[32], b2[32], b3[32];

		for (size_t i = 0; i < g->nfreed_layers; i++)
			fprintf(c->out, "removed layer %s\n", g->freed_layers[i]);
		fprintf(c->out,
			"freed %llu chunks (%s stored), %zu layers; store on disk %s -> %s\n",
			(unsigned long long)g->chunks, cli_bytes(g->chunk_bytes, b1, sizeof(b1)),
			g->nfreed_layers, cli_bytes(before->disk_bytes, b2, sizeof(b2)),
			cli_bytes(after->disk_bytes, b3, sizeof(b3)));
		if (q->over)
			fprintf(c->out,
				"quota %s: evicted %llu chunks (%s stored) of %llu least recently "
				"used layers\n",
				cli_bytes(q->quota, b1, sizeof(b1)), (unsigned long long)q->chunks,
				cli_bytes(q->bytes, b2, sizeof(b2)), (unsigned long long)q->layers);
	}
}

int cmd_gc(struct cli *c, int argc, char **argv)
{
	struct store_maint_hooks h = { c, cancelled, gc_progress, NULL, NULL };
	struct store_open_files open;
	struct store_gc_result g;
	struct store_stats before, after;
	struct store_evict_result q;
	int rc;

	(void)argv;
	if (argc > 1)
		return cli_usage(c, "gc takes no arguments");
	memset(&g, 0, sizeof(g));
	quota_open_files(c->fs, &open);
	rc = store_get_stats(c->store, &before);
	if (rc == 0)
		rc = store_gc(c->store, &h, &g);
	/* Then the quota policy, as the daemon's evictor applies it (nothing when under quota):
	 * with this command's quota, else the daemon's. */
	if (rc == 0)
		rc = store_evict(c->store, c->fs ? &open : NULL,
				 c->quota   ? c->quota :
				 c->evictor ? quota_bytes(c->evictor) :
					      0,
				 c->quota || !c->evictor ? c->low_water :
							   quota_low_water(c->evictor),
				 &h, &q);
	if (rc == 0)
		rc = store_get_stats(c->store, &after);
	if (rc == 0)
		gc_print(c, &g, &before, &after, &q);
	store_gc_result_free(&g);
	if (rc == -ECANCELED)
		return cli_fail(c, "cancelled: the daemon is shutting down");
	if (rc == -EBADMSG)
		return cli_fail(
			c,
			"%s does not decode; nothing was deleted (run 'strata fsck --repair' first)",
			g.bad);
	if (rc == -ENOMEM)
		return cli_fail(c, "out of memory");
	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	return 0;
}

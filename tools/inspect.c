/* SPDX-License-Identifier: Apache-2.0 */
/* The commands that look at the store: ls, stats and rm. */
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "cmd.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "fs/fs.h"
#include "index/layer.h"
#include "store/maint.h"
#include "store/store.h"
#include "tools/quota.h"
#include "util/log.h"

/* ---------------------------------------------------------------- ls */

struct ls_ctx {
	struct cli *c;
	json_t *all;
	int n;
};

static int ls_cb(void *ctx, const char *ref, const char *json)
{
	struct ls_ctx *l = ctx;
	json_error_t jerr;
	json_t *o = json_loads(json, 0, &jerr);
	char size[32];
	json_int_t total = 0;
	size_t i;
	json_t *layer;
	int pinned;

	if (!o) {
		strata_log(LOG_WARNING, "image %s: unreadable record", ref);
		return 0;
	}
	l->n++;
	pinned = store_pin_has(l->c->store, ref) == 1;
	if (l->c->json) {
		json_object_set_new(o, "pinned", json_boolean(pinned));
		json_array_append_new(l->all, o);
		return 0;
	}
	json_array_foreach (json_object_get(o, "layers"), i, layer)
		total += json_integer_value(json_object_get(layer, "size"));
	fprintf(l->c->out, "%-50s %-19.19s %-12s %6zu %10s %s\n", ref,
		json_string_value(json_object_get(o, "manifest")) ?
			json_string_value(json_object_get(o, "manifest")) :
			"-",
		json_string_value(json_object_get(o, "platform")) ?
			json_string_value(json_object_get(o, "platform")) :
			"-",
		json_array_size(json_object_get(o, "layers")),
		cli_bytes((uint64_t)total, size, sizeof(size)), pinned ? "pinned" : "");
	json_decref(o);
	return 0;
}

int cmd_ls(struct cli *c, int argc, char **argv)
{
	struct ls_ctx l = { c, json_array(), 0 };
	int rc;

	(void)argv;
	if (argc > 1)
		return cli_usage(c, "ls takes no arguments");
	if (!c->json)
		fprintf(c->out, "%-50s %-19s %-12s %6s %10s %s\n", "REFERENCE", "MANIFEST",
			"PLATFORM", "LAYERS", "SIZE", "PINNED");
	rc = store_image_list(c->store, ls_cb, &l);
	if (rc < 0) {
		json_decref(l.all);
		return cli_fail(c, "%s", strata_errmsg(rc));
	}
	if (c->json) {
		char *s = json_dumps(l.all, JSON_COMPACT);

		fprintf(c->out, "%s\n", s ? s : "[]");
		free(s);
	}
	json_decref(l.all);
	return 0;
}

/* ---------------------------------------------------------------- stats */

/*
 * Figures of `strata stats` (README "stats" documents them):
 *   chunks        chunks in the store (file content and checkpoint windows, orphans included)
 *   stored_bytes  their encoded (zstd or raw) bytes: what the content costs in the store
 *   logical_bytes file content bytes referenced by every layer, counted once per reference
 *   local_bytes   the part of logical_bytes whose chunks are in the store
 *   unique_bytes  local content counted once per distinct chunk
 *   dedup_ratio   local_bytes / stored_bytes: how many bytes of layer content each stored byte
 *                 serves (dedup across files, layers and images, times compression); 0 when empty
 * One pass over the chunks (keys in digest order, values read once) and one over the layer
 * indexes; memory is 33 bytes per stored chunk.
 */
struct stats_ctx {
	struct store *store;
	uint8_t (*have)[32]; /* stored chunk digests, sorted (the scan's order) */
	uint8_t *seen;	     /* have[i] was counted in unique_bytes */
	size_t nhave, cap;
	uint64_t stored_bytes;
	uint64_t layers, tar_bytes, blob_bytes;
	uint64_t content_bytes, local_bytes, unique_bytes;
	uint64_t by_prov[STORE_PROV_VERIFIED + 1]; /* layers per provenance */
	int trim; /* running in the daemon: return freed memory to the system */
};

static int stats_chunk_cb(void *ctx, const uint8_t digest[32], size_t stored_len, int verified)
{
	struct stats_ctx *s = ctx;

	(void)verified;
	if (s->nhave == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 4096;
		uint8_t(*h)[32] = realloc(s->have, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		s->have = h;
		s->cap = cap;
	}
	assert(s->nhave == 0 || memcmp(s->have[s->nhave - 1], digest, 32) < 0);
	memcpy(s->have[s->nhave++], digest, 32);
	s->stored_bytes += stored_len;
	return 0;
}

/* Index of digest in s->have, or -1. */
static ssize_t stats_find(const struct stats_ctx *s, const uint8_t digest[32])
{
	size_t lo = 0, hi = s->nhave;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(s->have[mid], digest, 32);

		if (c == 0)
			return (ssize_t)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int stats_layer_cb(void *ctx, const struct store_layer *sl)
{
	struct stats_ctx *s = ctx;
	struct index_layer *l = NULL;
	void *enc = NULL;
	size_t len = 0;

	s->layers++;
	if ((unsigned)sl->prov <= STORE_PROV_VERIFIED)
		s->by_prov[sl->prov]++;
	s->tar_bytes += sl->tar_size;
	s->blob_bytes += sl->size;
	if (store_layer_get(s->store, sl->digest, NULL, &enc, &len) == 0 &&
	    index_layer_decode(enc, len, &l) == 0) {
		for (uint32_t i = 0; i < index_layer_nchunks(l); i++) {
			const struct index_chunk *c = index_layer_chunk(l, i);
			ssize_t k = stats_find(s, c->digest);

			s->content_bytes += c->size;
			if (k < 0)
				continue;
			s->local_bytes += c->size;
			if (!s->seen[k]) {
				s->seen[k] = 1;
				s->unique_bytes += c->size;
			}
		}
	}
	strata_err_clear();
	index_layer_free(l);
	free(enc);
	/* In the daemon, give the decoded index back at once: glibc keeps freed multi-MiB blocks in
	 * this thread's arena otherwise, and every `stats` runs on a new connection thread
	 * (bench/store measured +12 MiB RSS per call with 20 layers of 20,000 files). */
	if (s->trim)
		malloc_trim(0);
	return 0;
}

/* fetch_client_hosts() callbacks of cmd_stats: one JSON object per host, or one table line. */
static void host_json_cb(void *ctx, const struct fetch_host_stats *h)
{
	json_object_set_new(ctx, h->host,
			    json_pack("{s:I, s:I, s:I, s:I, s:I, s:s, s:I}", "requests",
				      (json_int_t)h->requests, "bytes", (json_int_t)h->bytes,
				      "retries", (json_int_t)h->retries, "http_429",
				      (json_int_t)h->throttled, "fallbacks",
				      (json_int_t)h->fallbacks, "breaker", h->breaker, "failures",
				      (json_int_t)h->failures));
}

static void host_line_cb(void *ctx, const struct fetch_host_stats *h)
{
	char b[32];

	fprintf(ctx, "  %-28s %9llu %10s %7llu %5llu %9llu  %s\n", h->host,
		(unsigned long long)h->requests, cli_bytes(h->bytes, b, sizeof(b)),
		(unsigned long long)h->retries, (unsigned long long)h->throttled,
		(unsigned long long)h->fallbacks, h->breaker);
}

static int count_cb(void *ctx, const char *ref, const char *json)
{
	(void)ref;
	(void)json;
	(*(uint64_t *)ctx)++;
	return 0;
}

/* The store's quota figures for stats. */
struct quota_figures {
	uint64_t pins, evictions, chunks, bytes;
	uint64_t quarantined; /* layers whose index did not match their blob */
};

static int pin_count_cb(void *ctx, const char *ref)
{
	(void)ref;
	(*(uint64_t *)ctx)++;
	return 0;
}

static int quota_figures(struct store *s, struct quota_figures *q)
{
	int rc;

	memset(q, 0, sizeof(*q));
	rc = store_pin_list(s, pin_count_cb, &q->pins);
	if (rc == 0)
		rc = store_counter_get(s, "evictions", &q->evictions);
	if (rc == 0)
		rc = store_counter_get(s, "evicted_chunks", &q->chunks);
	if (rc == 0)
		rc = store_counter_get(s, "evicted_bytes", &q->bytes);
	if (rc == 0)
		rc = store_counter_get(s, "quarantined_layers", &q->quarantined);
	return rc;
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0.0;
}

/* The daemon's chunk reads: {"cache", "store", "fetched", "failed", "hit_rate",
 * "fetch_latency_ms": {"count", "p50", "p90", "p99", "buckets": [[upper_us, n]...]}}. */
static json_t *reads_json(const struct fs_read_stats *r)
{
	uint64_t total = r->cache_hits + r->store_hits + r->fetched, n = 0;
	json_t *buckets = json_array();

	for (unsigned i = 0; i < FS_LAT_BUCKETS; i++) {
		if (!r->fetch_us[i])
			continue;
		n += r->fetch_us[i];
		/* [upper bound in us (-1: unbounded), count] */
		json_array_append_new(buckets,
				      json_pack("[I, I]",
						i < FS_LAT_BUCKETS - 1 ?
							(json_int_t)fs_latency_bucket_us(i) :
							-1,
						(json_int_t)r->fetch_us[i]));
	}
	return json_pack("{s:I, s:I, s:I, s:I, s:f, s:{s:I, s:f, s:f, s:f, s:o}}", "cache",
			 (json_int_t)r->cache_hits, "store", (json_int_t)r->store_hits, "fetched",
			 (json_int_t)r->fetched, "failed", (json_int_t)r->failed, "hit_rate",
			 ratio(r->cache_hits + r->store_hits, total), "fetch_latency_ms", "count",
			 (json_int_t)n, "p50", fs_latency_quantile_us(r, 0.50) / 1000.0, "p90",
			 fs_latency_quantile_us(r, 0.90) / 1000.0, "p99",
			 fs_latency_quantile_us(r, 0.99) / 1000.0, "buckets", buckets);
}

/* Everything stats prints. */
struct stats_figures {
	struct stats_ctx s;
	struct fetch_counters fcnt;
	struct fs_read_stats rs;
	struct fs_index_stats is;
	struct store_stats ss;
	struct quota_figures q;
	uint64_t images, quota;
	unsigned low_water;
};

/* One pass over the chunks, one over the layers, then the cheap figures. Returns 0 or negative
 * errno. */
static int stats_gather(struct cli *c, struct stats_figures *f)
{
	struct stats_ctx *s = &f->s;
	int rc;

	s->store = c->store;
	s->trim = c->in_daemon;
	rc = store_chunk_scan(c->store, 0, stats_chunk_cb, s);
	if (rc == 0 && s->nhave) {
		s->seen = calloc(s->nhave, 1);
		if (!s->seen)
			rc = -ENOMEM;
	}
	if (rc == 0)
		rc = store_layer_list(c->store, stats_layer_cb, s);
	if (rc == 0)
		rc = store_image_list(c->store, count_cb, &f->images);
	if (rc == 0)
		rc = store_get_stats(c->store, &f->ss);
	if (rc == 0)
		rc = quota_figures(c->store, &f->q);
	free(s->have);
	free(s->seen);
	s->have = NULL;
	s->seen = NULL;
	if (rc < 0)
		return rc;
	/* the daemon's evictor applies its quota; a command's own --quota only its gc */
	f->quota = c->evictor ? quota_bytes(c->evictor) : c->quota;
	f->low_water = c->evictor   ? quota_low_water(c->evictor) :
		       c->low_water ? c->low_water :
				      STORE_EVICT_LOW_WATER_DEFAULT;
	if (c->fetch)
		fetch_client_counters(c->fetch, &f->fcnt);
	if (c->in_daemon) {
		fs_read_stats_get(&f->rs);
		fs_index_stats_get(&f->is);
	}
	return 0;
}

static void stats_print_json(struct cli *c, const struct stats_figures *f)
{
	json_t *o = json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:b, s:{s:I, s:I, s:I, s:I}}",
		"store", store_dir(c->store), "images", (json_int_t)f->images, "layers",
		(json_int_t)f->s.layers, "chunks", (json_int_t)f->s.nhave, "logical_bytes",
		(json_int_t)f->s.content_bytes, "stored_bytes", (json_int_t)f->s.stored_bytes,
		"local_bytes", (json_int_t)f->s.local_bytes, "unique_bytes",
		(json_int_t)f->s.unique_bytes, "content_bytes", (json_int_t)f->s.content_bytes,
		"tar_bytes", (json_int_t)f->s.tar_bytes, "blob_bytes", (json_int_t)f->s.blob_bytes,
		"disk_bytes", (json_int_t)f->ss.disk_bytes, "dedup_ratio",
		ratio(f->s.local_bytes, f->s.stored_bytes), "daemon", c->in_daemon, "read_fetch",
		"requests", (json_int_t)f->fcnt.requests, "range_requests",
		(json_int_t)f->fcnt.range_requests, "bytes", (json_int_t)f->fcnt.bytes, "retries",
		(json_int_t)f->fcnt.retries);
	json_t *hosts = json_object();

	json_object_set_new(o, "quarantined_layers", json_integer((json_int_t)f->q.quarantined));
	{
		json_t *prov = json_object();

		for (int p = 0; p <= STORE_PROV_VERIFIED; p++)
			json_object_set_new(prov, store_prov_name((enum store_prov)p),
					    json_integer((json_int_t)f->s.by_prov[p]));
		json_object_set_new(o, "layer_provenance", prov);
	}
	if (c->in_daemon) {
		json_object_set_new(o, "reads", reads_json(&f->rs));
		json_object_set_new(o, "index_cache",
				    json_pack("{s:I, s:I, s:I, s:I, s:I}", "bytes",
					      (json_int_t)f->is.bytes, "layers",
					      (json_int_t)f->is.layers, "cap",
					      (json_int_t)f->is.cap, "loads",
					      (json_int_t)f->is.loads, "unloads",
					      (json_int_t)f->is.unloads));
	}
	if (c->fetch)
		fetch_client_hosts(c->fetch, host_json_cb, hosts);
	json_object_set_new(o, "hosts", hosts);
	json_object_set_new(o, "quota",
			    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "bytes",
				      (json_int_t)f->quota, "low_water_percent",
				      (json_int_t)f->low_water, "pins", (json_int_t)f->q.pins,
				      "evictions", (json_int_t)f->q.evictions, "evicted_chunks",
				      (json_int_t)f->q.chunks, "evicted_bytes",
				      (json_int_t)f->q.bytes));
	char *txt = json_dumps(o, JSON_COMPACT);

	fprintf(c->out, "%s\n", txt ? txt : "{}");
	free(txt);
	json_decref(o);
}

static void stats_print_text(struct cli *c, const struct stats_figures *f)
{
	char b1[32], b2[32], b3[32];

	fprintf(c->out, "store          %s%s\n", store_dir(c->store),
		c->in_daemon ? " (served by a running daemon)" : "");
	fprintf(c->out, "images         %llu\n", (unsigned long long)f->images);
	fprintf(c->out,
		"layers         %llu (%llu verified from their blob, %llu from an eStargz TOC, %llu "
		"from an index artifact, %llu legacy)\n",
		(unsigned long long)f->s.layers,
		(unsigned long long)f->s.by_prov[STORE_PROV_VERIFIED],
		(unsigned long long)f->s.by_prov[STORE_PROV_TOC],
		(unsigned long long)f->s.by_prov[STORE_PROV_ARTIFACT],
		(unsigned long long)f->s.by_prov[STORE_PROV_LEGACY]);
	fprintf(c->out, "chunks         %llu\n", (unsigned long long)f->s.nhave);
	fprintf(c->out, "logical bytes  %s (file content of every layer)\n",
		cli_bytes(f->s.content_bytes, b1, sizeof(b1)));
	fprintf(c->out,
		"local bytes    %s of it in the store (the rest is fetched when read), %s distinct\n",
		cli_bytes(f->s.local_bytes, b1, sizeof(b1)),
		cli_bytes(f->s.unique_bytes, b2, sizeof(b2)));
	fprintf(c->out, "stored bytes   %s (chunks, compressed; %s on disk)\n",
		cli_bytes(f->s.stored_bytes, b1, sizeof(b1)),
		cli_bytes(f->ss.disk_bytes, b2, sizeof(b2)));
	fprintf(c->out, "dedup ratio    %.2f (local bytes / stored bytes)\n",
		ratio(f->s.local_bytes, f->s.stored_bytes));
	fprintf(c->out, "layer bytes    %s as tar, %s as blobs\n",
		cli_bytes(f->s.tar_bytes, b1, sizeof(b1)),
		cli_bytes(f->s.blob_bytes, b2, sizeof(b2)));
	if (f->q.quarantined)
		fprintf(c->out,
			"quarantined    %llu layers (their index did not match their blob)\n",
			(unsigned long long)f->q.quarantined);
	if (c->in_daemon) {
		uint64_t total = f->rs.cache_hits + f->rs.store_hits + f->rs.fetched;

		fprintf(c->out,
			"chunk reads    %llu: %llu cached, %llu from the store, %llu fetched (hit rate %.1f%%)\n",
			(unsigned long long)total, (unsigned long long)f->rs.cache_hits,
			(unsigned long long)f->rs.store_hits, (unsigned long long)f->rs.fetched,
			100.0 * ratio(f->rs.cache_hits + f->rs.store_hits, total));
		if (f->rs.failed)
			fprintf(c->out, "failed reads   %llu\n", (unsigned long long)f->rs.failed);
		fprintf(c->out, "fetch wait     p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n",
			fs_latency_quantile_us(&f->rs, 0.50) / 1000.0,
			fs_latency_quantile_us(&f->rs, 0.90) / 1000.0,
			fs_latency_quantile_us(&f->rs, 0.99) / 1000.0);
		fprintf(c->out,
			"index cache    %s in %llu layers (cap %s); %llu loads, %llu unloads\n",
			cli_bytes(f->is.bytes, b1, sizeof(b1)), (unsigned long long)f->is.layers,
			cli_bytes(f->is.cap, b2, sizeof(b2)), (unsigned long long)f->is.loads,
			(unsigned long long)f->is.unloads);
	}
	fprintf(c->out, "quota          %s%s%s\n",
		f->quota ? cli_bytes(f->quota, b1, sizeof(b1)) : "none",
		f->quota ? ", evicting down to " : "",
		f->quota ? cli_bytes(f->quota / 100 * f->low_water, b2, sizeof(b2)) : "");
	fprintf(c->out, "pinned images  %llu\n", (unsigned long long)f->q.pins);
	fprintf(c->out, "evictions      %llu (%llu chunks, %s)\n",
		(unsigned long long)f->q.evictions, (unsigned long long)f->q.chunks,
		cli_bytes(f->q.bytes, b3, sizeof(b3)));
	if (c->fetch)
		fprintf(c->out,
			"read fetches   %s in %llu requests (%llu ranges, %llu retries) since the daemon started\n",
			cli_bytes(f->fcnt.bytes, b1, sizeof(b1)),
			(unsigned long long)f->fcnt.requests,
			(unsigned long long)f->fcnt.range_requests,
			(unsigned long long)f->fcnt.retries);
	if (c->fetch) {
		fprintf(c->out, "  %-28s %9s %10s %7s %5s %9s  %s\n", "host", "requests", "bytes",
			"retries", "429s", "fallbacks", "breaker");
		fetch_client_hosts(c->fetch, host_line_cb, c->out);
	}
}

int cmd_stats(struct cli *c, int argc, char **argv)
{
	struct stats_figures f;
	int rc;

	(void)argv;
	if (argc > 1)
		return cli_usage(c, "stats takes no arguments");
	memset(&f, 0, sizeof(f));
	rc = stats_gather(c, &f);
	if (rc < 0)
		return cli_fail(c, "%s", rc == -ENOMEM ? "out of memory" : strata_errmsg(rc));
	if (c->json)
		stats_print_json(c, &f);
	else
		stats_print_text(c, &f);
	return 0;
}

/* ---------------------------------------------------------------- rm */

int cmd_rm(struct cli *c, int argc, char **argv)
{
	int failed = 0;

	if (argc < 2)
		return cli_usage(c, "rm needs at least one reference");
	for (int i = 1; i < argc; i++) {
		struct fetch_ref *r;
		char *name, *json = NULL;
		int rc = fetch_ref_parse(argv[i], &r);

		if (rc < 0) {
			failed = cli_fail(c, "%s", strata_errmsg(rc));
			continue;
		}
		name = fetch_ref_string(r);
		fetch_ref_free(r);
		if (!name)
			return cli_fail(c, "out of memory");
		rc = store_image_get(c->store, name, &json);
		free(json);
		if (rc == -ENOENT) {
			failed = cli_fail(c, "%s: no such image in the store", name);
		} else if (rc == 0 && (rc = store_pin_has(c->store, name)) == 1) {
			failed = cli_fail(c, "%s is pinned; run 'strata unpin %s' first", name,
					  name);
		} else if (rc < 0 || (rc = store_image_del(c->store, name)) < 0) {
			failed = cli_fail(c, "%s: %s", name, strata_errmsg(rc));
		} else if (!c->json) {
			fprintf(c->out, "removed %s\n", name);
		}
		free(name);
	}
	return failed;
}

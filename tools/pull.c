/* SPDX-License-Identifier: Apache-2.0 */
/* strata pull: resolve images, index their layers into the store, and register them. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "artifact.h"
#include "cli.h"
#include "cmd.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "fs/stream.h"
#include "index/decomp.h"
#include "index/estargz.h"
#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sha256.h"

enum index_mode { MODE_AUTO, MODE_ARTIFACT, MODE_BUILD };

struct pull_opts {
	uint32_t chunk_size;
	enum index_mode mode;
	int push;                  /* strata index --push */
};

struct pull_layer {
	const struct fetch_layer *fl;
	struct index_layer *idx;   /* NULL when the store had it already */
	void *enc;                 /* the encoded index when it came from an artifact */
	size_t enc_len;
	struct store_layer info;
	int dup_of;                /* index of an earlier identical layer of this image, or -1 */
	const char *how;           /* "store", "artifact", "estargz", "build" or "stream" */
	int record_pending;        /* to be streamed by the daemon: record it as pending */
};

struct progress {
	struct cli *c;
	const char *ref;
	size_t layer, nlayers;
	struct timespec last;
	uint64_t fetched;
};

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	struct timespec now;
	char a[32], b[32];

	if (p->c->cancel && *p->c->cancel)
		return 1;
	if (!p->c->tty || p->c->json)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (done != total && (now.tv_sec - p->last.tv_sec) * 1000 + (now.tv_nsec - p->last.tv_nsec) / 1000000 < 100)
		return 0;
	p->last = now;
	fprintf(p->c->err, "\r\033[K%s: layer %zu/%zu %s / %s", p->ref, p->layer + 1, p->nlayers,
		cli_bytes(done, a, sizeof(a)), cli_bytes(total, b, sizeof(b)));
	fflush(p->c->err);
	return 0;
}

/* Fills pl->info with what the manifest and config say of the layer, and where it comes from. */
static void layer_info(struct pull_layer *pl, const struct fetch_ref *ref)
{
	memset(&pl->info, 0, sizeof(pl->info));
	snprintf(pl->info.digest, sizeof(pl->info.digest), "%s", pl->fl->digest);
	snprintf(pl->info.diff_id, sizeof(pl->info.diff_id), "%s", pl->fl->diff_id ? pl->fl->diff_id : "");
	snprintf(pl->info.media_type, sizeof(pl->info.media_type), "%s", pl->fl->media_type);
	pl->info.size = pl->fl->size;
	snprintf(pl->info.source, sizeof(pl->info.source), "%s/%s", ref->domain, ref->path);
}

/* Downloads, verifies and indexes one layer; chunks go to the store, the index stays in memory. */
static int index_one(struct cli *c, struct fetch_client *fc, const struct fetch_ref *ref,
		     struct pull_layer *pl, uint32_t chunk_size, struct progress *pg)
{
	int rc;

	layer_info(pl, ref);
	pl->info.chunk_size = chunk_size;
	rc = fs_layer_build(c->store, fc, ref, &pl->info, on_progress, pg, &pl->idx);
	if (rc == 0)
		pg->fetched += pl->fl->size;
	return rc;
}

/* Checks that an index from an artifact fits the layer the manifest and config describe. */
static int check_artifact_index(const struct pull_layer *pl, const struct index_layer *idx)
{
	static const enum index_blob want[] = {
		[INDEX_COMP_NONE] = INDEX_BLOB_TAR,
		[INDEX_COMP_GZIP] = INDEX_BLOB_GZIP,
		[INDEX_COMP_ZSTD] = INDEX_BLOB_ZSTD,
	};
	enum index_compression comp = INDEX_COMP_NONE;
	char diff_id[UTIL_DIGEST_STR_LEN];

	index_compression_of_media_type(pl->fl->media_type, &comp);
	util_digest_format(index_layer_diff_id(idx), diff_id);
	if (index_layer_blob_size(idx) != pl->fl->size)
		return strata_err(EBADMSG, "its index describes a blob of %llu bytes, not %llu",
				  (unsigned long long)index_layer_blob_size(idx),
				  (unsigned long long)pl->fl->size);
	if (index_layer_blob_kind(idx) != want[comp])
		return strata_err(EBADMSG, "its index is for another compression than %s",
				  pl->fl->media_type);
	if (pl->fl->diff_id && strcmp(pl->fl->diff_id, diff_id) != 0)
		return strata_err(EBADMSG, "its index has diff_id %s, the config says %s", diff_id,
				  pl->fl->diff_id);
	return 0;
}

/* Takes layer pl's index from artifact a. Returns 0, -ENOENT when a lacks it, or an error. */
static int use_artifact(struct fetch_client *fc, const struct fetch_ref *ref,
			const struct artifact *a, struct pull_layer *pl)
{
	char windows[STORE_DIGEST_LEN];
	int rc = artifact_layer(fc, ref, a, pl->fl->digest, &pl->idx, &pl->enc, &pl->enc_len,
				windows);

	if (rc == 0)
		rc = check_artifact_index(pl, pl->idx);
	if (rc < 0) {
		index_layer_free(pl->idx);
		pl->idx = NULL;
		free(pl->enc);
		pl->enc = NULL;
		return rc;
	}
	layer_info(pl, ref);
	util_digest_format(index_layer_diff_id(pl->idx), pl->info.diff_id);
	pl->info.tar_size = index_layer_tar_size(pl->idx);
	pl->info.chunk_size = index_layer_chunk_size(pl->idx);
	snprintf(pl->info.windows, sizeof(pl->info.windows), "%s", windows);
	pl->how = "artifact";
	return 0;
}

/* fetch_blob_range_verify()'s check of an eStargz TOC member: builds the index, trusting the TOC
 * only when its JSON matches the layer descriptor's TOC digest; bytes that do not (a corrupting
 * mirror) or do not parse are -EBADMSG, so that the next host is tried. */
struct toc_verify {
	uint64_t toc_off, blob_size;
	const char *toc_digest;
	struct index_layer *idx; /* the index built from the bytes that verified */
};

static int toc_verify(void *ctx, const void *buf, size_t len)
{
	struct toc_verify *tv = ctx;
	int rc;

	index_layer_free(tv->idx);
	tv->idx = NULL;
	rc = index_estargz_build_verified(buf, len, tv->toc_off, tv->blob_size, tv->toc_digest,
					  &tv->idx);
	if (rc == -EBADMSG)
		strata_log(LOG_WARNING, "eStargz TOC: %s", strata_errmsg(rc));
	return rc;
}

/*
 * Takes layer pl's index from its eStargz footer and TOC: two range reads, no layer download. The
 * TOC is trusted only when it matches the descriptor's FETCH_ANNOTATION_TOC_DIGEST (a host whose
 * TOC does not is followed by the next host); a layer without the annotation has no trustworthy
 * TOC and is indexed another way.
 * Returns 0, -ENOENT when the blob is not eStargz or its TOC cannot be verified, or an error.
 */
static int use_estargz(struct fetch_client *fc, const struct fetch_ref *ref, struct pull_layer *pl)
{
	struct toc_verify tv = { 0 };
	uint8_t tail[INDEX_ESTARGZ_TAIL];
	uint64_t size = pl->fl->size, toc_off = 0;
	size_t footer = 0, tlen = size < sizeof(tail) ? (size_t)size : sizeof(tail);
	uint8_t *toc = NULL;
	int rc;

	if (size < INDEX_ESTARGZ_LEGACY_FOOTER_SIZE)
		return -ENOENT;
	/* A failed probe is not worth a warning: streaming the layer reports what is wrong with it. */
	rc = fetch_blob_range(fc, ref, pl->fl->digest, size - tlen, tlen, tail);
	if (rc == 0)
		rc = index_estargz_footer(tail, tlen, size, &toc_off, &footer);
	if (rc < 0) {
		strata_log(LOG_INFO, "layer %s: no eStargz footer: %s", pl->fl->digest,
			   strata_errmsg(rc));
		return -ENOENT;
	}
	if (!pl->fl->toc_digest) {
		strata_log(LOG_WARNING, "layer %s: eStargz, but its descriptor has no %s annotation: "
			   "its TOC cannot be verified; indexing the layer by streaming it",
			   pl->fl->digest, FETCH_ANNOTATION_TOC_DIGEST);
		return -ENOENT;
	}
	if (size - footer - toc_off > (256u << 20))
		return strata_err(EFBIG, "eStargz TOC of %llu bytes is too large",
				  (unsigned long long)(size - footer - toc_off));
	toc = malloc(size - footer - toc_off + 1);
	if (!toc)
		return -ENOMEM;
	tv.toc_off = toc_off;
	tv.blob_size = size;
	tv.toc_digest = pl->fl->toc_digest;
	rc = fetch_blob_range_verify(fc, ref, pl->fl->digest, toc_off, size - footer - toc_off, toc,
				     toc_verify, &tv);
	free(toc);
	if (rc < 0) {
		index_layer_free(tv.idx);
		return strata_err_prefix(-rc, "eStargz TOC");
	}
	pl->idx = tv.idx;
	/* The TOC cannot prove the uncompressed digest: keep the config's (chunks are verified). */
	layer_info(pl, ref);
	pl->info.tar_size = index_layer_content_size(pl->idx); /* the real tar size is not known */
	pl->info.chunk_size = index_layer_chunk_size(pl->idx);
	pl->how = "estargz";
	return 0;
}

static char *image_json(const char *name, const struct fetch_image *img, struct pull_layer *pls)
{
	json_t *layers = json_array();
	json_t *o;
	char *s;

	for (size_t i = 0; i < img->nlayers; i++) {
		const struct fetch_layer *fl = &img->layers[i];

		json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:s}", "digest", fl->digest,
							"media_type", fl->media_type, "size",
							(json_int_t)fl->size, "diff_id",
							pls[i].info.diff_id));
	}
	o = json_pack("{s:s, s:s, s:I, s:s?, s:s, s:s, s:s, s:o, s:I}", "ref", name, "manifest",
		      img->manifest_digest, "manifest_size", (json_int_t)img->manifest_len, "index",
		      img->index_digest, "media_type", img->media_type, "config", img->config_digest,
		      "platform", img->platform ? img->platform : "", "layers", layers, "pulled",
		      (json_int_t)time(NULL));
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static int pull_one(struct cli *c, struct fetch_client *fc, const char *arg,
		    const struct pull_opts *po)
{
	struct fetch_ref *ref = NULL;
	struct fetch_image *img = NULL;
	struct pull_layer *pls = NULL;
	struct artifact *art = NULL;
	struct fetch_counters before, after;
	struct progress pg;
	char *name = NULL, *json = NULL;
	char art_digest[STORE_DIGEST_LEN] = "";
	size_t fresh = 0, missing = 0, streaming = 0;
	/* Inside the daemon, layers without an index stream in the background. */
	int stream = c->in_daemon && po->mode == MODE_AUTO;
	int locked = 0, rc;

	fetch_client_counters(fc, &before);
	memset(&pg, 0, sizeof(pg));
	rc = fetch_ref_parse(arg, &ref);
	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	name = fetch_ref_string(ref);
	if (!name) {
		rc = cli_fail(c, "out of memory");
		goto out;
	}
	if (po->push) { /* before any work: a push nowhere may go (--strict-cache) sends nothing */
		rc = fetch_push_check(fc, ref);
		if (rc < 0) {
			rc = cli_fail(c, "%s", strata_errmsg(rc));
			goto out;
		}
	}
	rc = fetch_resolve(fc, ref, &img);
	if (rc < 0) {
		rc = cli_fail(c, "%s", strata_errmsg(rc));
		goto out;
	}
	pls = calloc(img->nlayers ? img->nlayers : 1, sizeof(*pls));
	if (!pls) {
		rc = cli_fail(c, "out of memory");
		goto out;
	}
	/* Check every layer before fetching any. */
	for (size_t i = 0; i < img->nlayers; i++) {
		enum index_compression comp;

		pls[i].fl = &img->layers[i];
		pls[i].dup_of = -1;
		if (index_compression_of_media_type(img->layers[i].media_type, &comp) < 0) {
			rc = cli_fail(c, "%s: layer %s has unsupported media type %s", name,
				      img->layers[i].digest, img->layers[i].media_type);
			goto out;
		}
	}
	for (size_t i = 0; i < img->nlayers; i++) {
		struct store_layer tmp;

		if (store_layer_get(c->store, img->layers[i].digest, &tmp, NULL, NULL) == -ENOENT)
			missing++;
	}
	strata_err_clear();
	if (missing && po->mode != MODE_BUILD) {
		rc = artifact_find(fc, ref, img->manifest_digest, &art);
		if (rc < 0 && (po->mode == MODE_ARTIFACT || rc != -ENOENT)) {
			if (po->mode == MODE_ARTIFACT) {
				rc = cli_fail(c, "%s: %s", name,
					      rc == -ENOENT ? "no index artifact in the registry "
							      "(push one with 'strata index --push')" :
							      strata_errmsg(rc));
				goto out;
			}
			strata_log(LOG_WARNING, "%s: ignoring the index artifact: %s", name,
				   strata_errmsg(rc));
		}
	}
	pg.c = c;
	pg.ref = name;
	pg.nlayers = img->nlayers;
	for (size_t i = 0; i < img->nlayers; i++) {
		struct pull_layer *pl = &pls[i];

		pg.layer = i;
		pl->how = "store";
		for (size_t j = 0; j < i; j++) {
			if (strcmp(pls[j].fl->digest, pl->fl->digest) == 0) {
				pl->dup_of = (int)j;
				pl->info = pls[j].info;
				break;
			}
		}
		if (pl->dup_of >= 0)
			continue;
		rc = store_layer_get(c->store, pl->fl->digest, &pl->info, NULL, NULL);
		if (rc == 0)
			continue; /* already in the store */
		if (rc != -ENOENT) {
			rc = cli_fail(c, "%s: %s", name, strata_errmsg(rc));
			goto out;
		}
		strata_err_clear();
		if (stream && store_pending_get(c->store, pl->fl->digest, &pl->info) == 0) {
			pl->how = "stream"; /* the daemon streams it already */
			streaming++;
			continue;
		}
		strata_err_clear();
		if (art) {
			rc = use_artifact(fc, ref, art, pl);
			if (rc == 0) {
				fresh++;
				continue;
			}
			if (po->mode == MODE_ARTIFACT) {
				rc = cli_fail(c, "%s: layer %s: index artifact %s: %s", name,
					      pl->fl->digest, artifact_digest(art),
					      rc == -ENOENT ? "does not cover this layer" :
							      strata_errmsg(rc));
				goto out;
			}
			strata_log(LOG_WARNING, "%s: layer %s: not using index artifact %s: %s", name,
				   pl->fl->digest, artifact_digest(art),
				   rc == -ENOENT ? "it does not cover this layer" : strata_errmsg(rc));
			strata_err_clear();
		}
		if (po->mode == MODE_AUTO) {
			enum index_compression comp = INDEX_COMP_NONE;

			index_compression_of_media_type(pl->fl->media_type, &comp);
			rc = comp == INDEX_COMP_GZIP ? use_estargz(fc, ref, pl) : -ENOENT;
			if (rc == 0) {
				fresh++;
				continue;
			}
			if (rc != -ENOENT)
				strata_log(LOG_WARNING, "%s: layer %s: %s; indexing it by streaming",
					   name, pl->fl->digest, strata_errmsg(rc));
			strata_err_clear();
		}
		if (stream) {
			/* No index anywhere: the daemon streams the blob once in the background,
			 * lookups of the layer wait for it; this pull returns now. */
			layer_info(pl, ref);
			pl->info.chunk_size = po->chunk_size;
			pl->how = "stream";
			pl->record_pending = 1;
			streaming++;
			continue;
		}
		pl->how = "build";
		rc = index_one(c, fc, ref, pl, po->chunk_size, &pg);
		if (rc < 0) {
			if (c->tty && !c->json)
				fprintf(c->err, "\n");
			if (c->cancel && *c->cancel)
				rc = cli_fail(c, "%s: cancelled: the daemon is shutting down", name);
			else
				rc = cli_fail(c, "%s: layer %s: %s", name, pl->fl->digest,
					      strata_errmsg(rc));
			goto out;
		}
		fresh++;
	}
	if (c->tty && !c->json && fresh)
		fprintf(c->err, "\r\033[K");
	/* Every layer checked out: only now does anything become visible. */
	store_layers_rdlock(c->store);
	locked = 1;
	for (size_t i = 0; i < img->nlayers; i++) {
		void *buf;
		size_t len;

		if (pls[i].record_pending) {
			rc = store_pending_put(c->store, &pls[i].info);
			if (rc < 0) {
				rc = cli_fail(c, "%s: layer %s: %s", name, pls[i].fl->digest,
					      strata_errmsg(rc));
				goto out;
			}
			continue;
		}
		if (!pls[i].idx)
			continue;
		if (pls[i].enc) {
			rc = store_layer_put(c->store, &pls[i].info, pls[i].enc, pls[i].enc_len);
		} else {
			rc = index_layer_encode(pls[i].idx, &buf, &len);
			if (rc == 0) {
				rc = store_layer_put(c->store, &pls[i].info, buf, len);
				free(buf);
			}
		}
		if (rc < 0) {
			rc = cli_fail(c, "%s: layer %s: %s", name, pls[i].fl->digest, strata_errmsg(rc));
			goto out;
		}
	}
	json = image_json(name, img, pls);
	if (!json) {
		rc = cli_fail(c, "out of memory");
		goto out;
	}
	rc = store_image_put(c->store, name, json);
	store_layers_unlock(c->store);
	locked = 0;
	if (rc < 0) {
		rc = cli_fail(c, "%s: %s", name, strata_errmsg(rc));
		goto out;
	}
	if (art)
		snprintf(art_digest, sizeof(art_digest), "%s", artifact_digest(art));
	if (po->push) {
		const char **digests = calloc(img->nlayers ? img->nlayers : 1, sizeof(*digests));

		for (size_t i = 0; digests && i < img->nlayers; i++)
			digests[i] = img->layers[i].digest;
		rc = digests ? artifact_push(c->store, fc, ref, img->manifest_digest,
					     img->media_type, img->manifest_len, digests,
					     img->nlayers, art_digest) : -ENOMEM;
		free(digests);
		if (rc < 0) {
			rc = cli_fail(c, "%s: pushing the index artifact: %s", name,
				      strata_errmsg(rc));
			goto out;
		}
	}
	fetch_client_counters(fc, &after);
	if (c->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:[], s:[], s:I, s:I, s:I, s:I, s:s?}", "ref",
				      name, "manifest", img->manifest_digest, "platform",
				      img->platform ? img->platform : "", "layers", "index_sources",
				      "new_layers", (json_int_t)fresh, "streaming",
				      (json_int_t)streaming, "bytes_fetched",
				      (json_int_t)(after.bytes - before.bytes), "requests",
				      (json_int_t)(after.requests - before.requests), "artifact",
				      art_digest[0] ? art_digest : NULL);
		char *s;

		for (size_t i = 0; o && i < img->nlayers; i++) {
			json_array_append_new(json_object_get(o, "layers"),
					      json_string(img->layers[i].digest));
			json_array_append_new(json_object_get(o, "index_sources"),
					      json_string(pls[i].how));
		}
		s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		fprintf(c->out, "%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		char b[32];

		char sbuf[48] = "";

		if (streaming)
			snprintf(sbuf, sizeof(sbuf), ", %zu streaming in the background", streaming);
		fprintf(c->out, "pulled %s (%s, %s, %zu layers, %zu new%s%s, %s fetched)\n", name,
			img->manifest_digest, img->platform ? img->platform : "?", img->nlayers, fresh,
			art ? " from an index artifact" : "", sbuf,
			cli_bytes(after.bytes - before.bytes, b, sizeof(b)));
		if (po->push)
			fprintf(c->out, "pushed index artifact %s\n", art_digest);
		else if (art)
			fprintf(c->out, "used index artifact %s\n", art_digest);
	}
	fflush(c->out);
	rc = 0;
out:
	if (locked)
		store_layers_unlock(c->store);
	for (size_t i = 0; pls && img && i < img->nlayers; i++) {
		index_layer_free(pls[i].idx);
		free(pls[i].enc);
	}
	artifact_free(art);
	free(pls);
	free(json);
	free(name);
	fetch_image_free(img);
	fetch_ref_free(ref);
	return rc;
}

/* Shared by pull and index: options, then each reference. */
static int run_pull(struct cli *c, int argc, char **argv, struct pull_opts *po)
{
	struct fetch_client *fc = NULL;
	uint64_t chunk_size = INDEX_DEFAULT_CHUNK_SIZE;
	int nrefs = 0, failed = 0;

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--chunk-size", 12) == 0 && (!argv[i][12] || argv[i][12] == '=')) {
			const char *v = argv[i][12] == '=' ? argv[i] + 13 : (i + 1 < argc ? argv[++i] : NULL);

			if (!v || cli_parse_size(v, &chunk_size) < 0 || chunk_size < INDEX_MIN_CHUNK_SIZE ||
			    chunk_size > INDEX_MAX_CHUNK_SIZE)
				return cli_usage(c, "--chunk-size takes a size from 4K to 16M");
		} else if (strcmp(c->cmd, "pull") == 0 && strncmp(argv[i], "--index=", 8) == 0) {
			const char *v = argv[i] + 8;

			if (strcmp(v, "auto") == 0)
				po->mode = MODE_AUTO;
			else if (strcmp(v, "artifact") == 0)
				po->mode = MODE_ARTIFACT;
			else if (strcmp(v, "build") == 0)
				po->mode = MODE_BUILD;
			else
				return cli_usage(c, "--index takes auto, artifact or build");
		} else if (strcmp(c->cmd, "index") == 0 && strcmp(argv[i], "--push") == 0) {
			po->push = 1;
		} else if (argv[i][0] == '-') {
			return cli_usage(c, "unknown option %s", argv[i]);
		} else {
			argv[++nrefs] = argv[i];
		}
	}
	if (nrefs == 0)
		return cli_usage(c, "%s needs at least one reference", c->cmd);
	po->chunk_size = (uint32_t)chunk_size;
	if (cli_fetch_client(c, &fc))
		return 1;
	for (int i = 1; i <= nrefs; i++) {
		if (pull_one(c, fc, argv[i], po))
			failed = 1;
	}
	fetch_client_free(fc);
	return failed;
}

int cmd_pull(struct cli *c, int argc, char **argv)
{
	struct pull_opts po = { 0, MODE_AUTO, 0 };

	return run_pull(c, argc, argv, &po);
}

int cmd_index(struct cli *c, int argc, char **argv)
{
	struct pull_opts po = { 0, MODE_BUILD, 0 };

	return run_pull(c, argc, argv, &po);
}

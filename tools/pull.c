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
#include "sign.h"
#include "store/store.h"
#include "util/ecdsa.h"
#include "util/log.h"
#include "util/sha256.h"

enum index_mode { MODE_AUTO, MODE_ARTIFACT, MODE_BUILD };

struct pull_opts {
	uint32_t chunk_size;
	enum index_mode mode;
	int push;		   /* strata index --push */
	enum artifact_trust trust; /* which index artifacts are used */
	struct util_key **keys;	   /* trusted public keys (trust "signed") */
	size_t nkeys;
	struct util_key *sign_key; /* strata index --push --sign KEY: the private key */
};

struct pull_layer {
	const struct fetch_layer *fl;
	struct index_layer *idx; /* NULL when the store had it already */
	void *enc;		 /* the encoded index when it came from an artifact */
	size_t enc_len;
	struct store_layer info;
	int dup_of;	    /* index of an earlier identical layer of this image, or -1 */
	const char *how;    /* "store", "artifact", "estargz", "build" or "stream" */
	int record_pending; /* to be streamed by the daemon: record it as pending */
	int have_rec;	    /* the store has a record of the layer: rec */
	struct store_layer rec;
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

	if (p->c->cancel && atomic_load(p->c->cancel))
		return 1;
	if (!p->c->tty || p->c->json)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (done != total &&
	    (now.tv_sec - p->last.tv_sec) * 1000 + (now.tv_nsec - p->last.tv_nsec) / 1000000 < 100)
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
	snprintf(pl->info.diff_id, sizeof(pl->info.diff_id), "%s",
		 pl->fl->diff_id ? pl->fl->diff_id : "");
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
	if (rc == 0) {
		pl->info.prov = STORE_PROV_VERIFIED;
		pg->fetched += pl->fl->size;
	}
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
			const struct artifact *a, const char *signer, struct pull_layer *pl)
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
	pl->info.prov = STORE_PROV_ARTIFACT;
	snprintf(pl->info.prov_digest, sizeof(pl->info.prov_digest), "%s", artifact_digest(a));
	snprintf(pl->info.signer, sizeof(pl->info.signer), "%s", signer);
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
		strata_log(LOG_WARNING,
			   "layer %s: eStargz, but its descriptor has no %s annotation: "
			   "its TOC cannot be verified; indexing the layer by streaming it",
			   pl->fl->digest, FETCH_ANNOTATION_TOC_DIGEST);
		return -ENOENT;
	}
	if (size - footer - toc_off > INDEX_ESTARGZ_MAX_TOC)
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
	pl->info.prov = STORE_PROV_TOC;
	snprintf(pl->info.prov_digest, sizeof(pl->info.prov_digest), "%s", pl->fl->toc_digest);
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

		json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:s}", "digest",
							fl->digest, "media_type", fl->media_type,
							"size", (json_int_t)fl->size, "diff_id",
							pls[i].info.diff_id));
	}
	o = json_pack("{s:s, s:s, s:I, s:s?, s:s, s:s, s:s, s:o, s:I}", "ref", name, "manifest",
		      img->manifest_digest, "manifest_size", (json_int_t)img->manifest_len, "index",
		      img->index_digest, "media_type", img->media_type, "config",
		      img->config_digest, "platform", img->platform ? img->platform : "", "layers",
		      layers, "pulled", (json_int_t)time(NULL));
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

/* One image being pulled: what pull_one's phases share. Each phase returns 0, or 1 after printing
 * the error. */
struct pull {
	struct cli *c;
	struct fetch_client *fc;
	const struct pull_opts *po;
	struct fetch_ref *ref;
	struct fetch_image *img;
	struct pull_layer *pls;
	struct artifact *art;
	char *name;
	char art_digest[STORE_DIGEST_LEN];
	char art_signer[STORE_DIGEST_LEN]; /* the key that signed art, or "" */
	size_t fresh, missing, streaming;
	int stream; /* layers without an index stream in the daemon's background */
	struct fetch_counters before;
	struct progress pg;
};

/* Parses the reference and resolves it to an image manifest. */
static int resolve(struct pull *p, const char *arg)
{
	struct cli *c = p->c;
	int rc = fetch_ref_parse(arg, &p->ref);

	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	p->name = fetch_ref_string(p->ref);
	if (!p->name)
		return cli_fail(c, "out of memory");
	if (p->po->push) { /* before any work: a push nowhere may go (--strict-cache) sends nothing */
		rc = fetch_push_check(p->fc, p->ref);
		if (rc < 0)
			return cli_fail(c, "%s", strata_errmsg(rc));
	}
	rc = fetch_resolve(p->fc, p->ref, &p->img);
	if (rc < 0)
		return cli_fail(c, "%s", strata_errmsg(rc));
	p->pls = calloc(p->img->nlayers ? p->img->nlayers : 1, sizeof(*p->pls));
	if (!p->pls)
		return cli_fail(c, "out of memory");
	return 0;
}

/* artifact_trust "signed": the artifact found is used only when a trusted key signed it (its
 * cosign signature in the image's repository names it and the repository). Returns 0, or an error
 * after which the artifact is dropped (strata_err says why). */
static int check_signature(struct pull *p)
{
	const char *d = artifact_digest(p->art);
	int rc = sign_verify(p->fc, p->ref, d, p->po->keys, p->po->nkeys, p->art_signer);

	if (rc == 0) {
		strata_log(LOG_INFO, "%s: index artifact %s is signed by %s", p->name, d,
			   p->art_signer);
		return 0;
	}
	rc = strata_err_prefix(rc == -ENOENT ? EPERM : -rc,
			       "index artifact %s is not signed by a trusted key", d);
	artifact_free(p->art);
	p->art = NULL;
	p->art_signer[0] = '\0';
	return rc;
}

/* Checks every layer before fetching any, counts those missing from the store and, when some
 * are, looks for an index artifact. */
static int check_layers(struct pull *p)
{
	const struct fetch_image *img = p->img;
	int rc;

	for (size_t i = 0; i < img->nlayers; i++) {
		enum index_compression comp;

		p->pls[i].fl = &img->layers[i];
		p->pls[i].dup_of = -1;
		if (index_compression_of_media_type(img->layers[i].media_type, &comp) < 0)
			return cli_fail(p->c, "%s: layer %s has unsupported media type %s", p->name,
					img->layers[i].digest, img->layers[i].media_type);
	}
	/* Layers not in the store, or whose record only this image's own source can vouch for. */
	for (size_t i = 0; i < img->nlayers; i++) {
		struct store_layer tmp;

		const struct fetch_layer *fl = &img->layers[i];
		int toc_vouched;

		if (store_layer_get(p->c->store, fl->digest, &tmp, NULL, NULL) < 0) {
			p->missing++;
			continue;
		}
		toc_vouched = p->po->mode == MODE_AUTO && tmp.prov == STORE_PROV_TOC &&
			      fl->toc_digest && strcmp(tmp.prov_digest, fl->toc_digest) == 0;
		if (tmp.quarantine[0] || (tmp.prov != STORE_PROV_VERIFIED && !toc_vouched))
			p->missing++;
	}
	strata_err_clear();
	if (p->missing && p->po->mode != MODE_BUILD && p->po->trust != ARTIFACT_TRUST_NONE) {
		rc = artifact_find(p->fc, p->ref, img->manifest_digest, &p->art);
		if (rc == 0 && p->po->trust == ARTIFACT_TRUST_SIGNED)
			rc = check_signature(p);
		if (rc < 0 && (p->po->mode == MODE_ARTIFACT || rc != -ENOENT)) {
			if (p->po->mode == MODE_ARTIFACT)
				return cli_fail(p->c, "%s: %s", p->name,
						rc == -ENOENT ?
							"no index artifact in the registry "
							"(push one with 'strata index --push')" :
							strata_errmsg(rc));
			strata_log(LOG_WARNING, "%s: ignoring the index artifact: %s", p->name,
				   strata_errmsg(rc));
		}
	}
	return 0;
}

/* Describes record r for a log line: "verified", "artifact sha256:... from SOURCE", ... */
static const char *rec_origin(const struct store_layer *r, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s%s%s from %s", store_prov_name(r->prov), r->prov_digest[0] ? " " : "",
		 r->prov_digest, r->source[0] ? r->source : "?");
	return buf;
}

/*
 * Whether layer pl's store record may serve this image (DESIGN.md "Trust"): a verified record
 * serves anyone; another one only when this image's own source vouches for the same index bytes
 * (its index artifact lists a blob of that digest, or its eStargz TOC is the one the record was
 * made from), never for --index=build, and never a quarantined one.
 */
static int record_vouched(const struct pull *p, const struct pull_layer *pl)
{
	const struct store_layer *r = &pl->rec;
	char d[STORE_DIGEST_LEN];

	if (r->quarantine[0])
		return 0;
	if (r->prov == STORE_PROV_VERIFIED)
		return 1;
	if (p->po->mode == MODE_BUILD)
		return 0;
	if (p->art && artifact_index_digest(p->art, pl->fl->digest, d) == 0 &&
	    strcmp(d, r->index_digest) == 0)
		return 1;
	return p->po->mode == MODE_AUTO && r->prov == STORE_PROV_TOC && pl->fl->toc_digest &&
	       strcmp(r->prov_digest, pl->fl->toc_digest) == 0;
}

/* Layer pl has an index from this image's artifact or TOC and the store a record made otherwise:
 * whether the two agree (the same index bytes). */
static int agrees_with_record(struct pull_layer *pl)
{
	uint8_t md[UTIL_SHA256_LEN];
	char d[STORE_DIGEST_LEN];
	void *buf = NULL;
	size_t len = 0;

	if (!pl->have_rec)
		return 1;
	if (pl->enc) {
		util_sha256(pl->enc, pl->enc_len, md);
	} else {
		if (index_layer_encode(pl->idx, &buf, &len) < 0)
			return 0;
		util_sha256(buf, len, md);
		free(buf);
	}
	util_digest_format(md, d);
	return strcmp(d, pl->rec.index_digest) == 0;
}

/* Forgets the index pl took from an artifact or TOC. */
static void drop_index(struct pull_layer *pl)
{
	index_layer_free(pl->idx);
	pl->idx = NULL;
	free(pl->enc);
	pl->enc = NULL;
	pl->enc_len = 0;
}

/* Tries this image's artifact, then its eStargz TOC, for layer i. Returns 0 (pl->idx set), 1 when
 * neither gives an index (or one that disagrees with the store's record: *conflict set), or 1
 * after printing an error with *failed set. */
static int try_own_sources(struct pull *p, size_t i, int *conflict, int *failed)
{
	struct cli *c = p->c;
	struct pull_layer *pl = &p->pls[i];
	const char *name = p->name;
	int rc;

	if (p->art) {
		rc = use_artifact(p->fc, p->ref, p->art, p->art_signer, pl);
		if (rc == 0 && !agrees_with_record(pl)) {
			drop_index(pl);
			*conflict = 1;
			return 1;
		}
		if (rc == 0)
			return 0;
		if (p->po->mode == MODE_ARTIFACT) {
			*failed = 1;
			return cli_fail(c, "%s: layer %s: index artifact %s: %s", name,
					pl->fl->digest, artifact_digest(p->art),
					rc == -ENOENT ? "does not cover this layer" :
							strata_errmsg(rc));
		}
		strata_log(LOG_WARNING, "%s: layer %s: not using index artifact %s: %s", name,
			   pl->fl->digest, artifact_digest(p->art),
			   rc == -ENOENT ? "it does not cover this layer" : strata_errmsg(rc));
		strata_err_clear();
	}
	if (p->po->mode == MODE_AUTO) {
		enum index_compression comp = INDEX_COMP_NONE;

		index_compression_of_media_type(pl->fl->media_type, &comp);
		rc = comp == INDEX_COMP_GZIP ? use_estargz(p->fc, p->ref, pl) : -ENOENT;
		if (rc == 0 && !agrees_with_record(pl)) {
			drop_index(pl);
			*conflict = 1;
			return 1;
		}
		if (rc == 0)
			return 0;
		if (rc != -ENOENT)
			strata_log(LOG_WARNING, "%s: layer %s: %s; indexing it by streaming", name,
				   pl->fl->digest, strata_errmsg(rc));
		strata_err_clear();
	}
	return 1;
}

/* Records layer pl as pending with this image's claim: the daemon streams its blob. */
static int stream_layer(struct pull *p, struct pull_layer *pl)
{
	layer_info(pl, p->ref);
	pl->info.chunk_size = p->po->chunk_size;
	pl->how = "stream";
	pl->record_pending = 1;
	p->streaming++;
	return 0;
}

/* Finds where layer i's index comes from: the store (when the record may serve this image), an
 * earlier identical layer, the daemon's stream, the artifact, its eStargz TOC, a background
 * stream, or a build here (which fetches and verifies it). */
static int choose_source(struct pull *p, size_t i)
{
	struct cli *c = p->c;
	struct pull_layer *pl = &p->pls[i];
	const char *name = p->name;
	char origin[STORE_DIGEST_LEN * 2 + 600];
	int rc, conflict = 0, failed = 0;

	p->pg.layer = i;
	pl->how = "store";
	for (size_t j = 0; j < i; j++) {
		if (strcmp(p->pls[j].fl->digest, pl->fl->digest) == 0) {
			pl->dup_of = (int)j;
			pl->info = p->pls[j].info;
			break;
		}
	}
	if (pl->dup_of >= 0)
		return 0;
	rc = store_layer_get(c->store, pl->fl->digest, &pl->rec, NULL, NULL);
	if (rc < 0 && rc != -ENOENT)
		return cli_fail(c, "%s: %s", name, strata_errmsg(rc));
	strata_err_clear();
	pl->have_rec = rc == 0;
	if (pl->have_rec && record_vouched(p, pl)) {
		pl->info = pl->rec;
		return 0; /* already in the store */
	}
	if (pl->have_rec && pl->rec.quarantine[0])
		strata_log(LOG_WARNING, "%s: layer %s is quarantined (%s): indexing it again", name,
			   pl->fl->digest, pl->rec.quarantine);
	if (!pl->have_rec && p->stream && store_pending_get(c->store, pl->fl->digest, NULL) == 0) {
		/* The daemon streams it already: add this image's claim to the record. */
		return stream_layer(p, pl);
	}
	strata_err_clear();
	if (!pl->have_rec || (p->po->mode != MODE_BUILD && !pl->rec.quarantine[0])) {
		rc = try_own_sources(p, i, &conflict, &failed);
		if (failed)
			return 1;
		if (rc == 0) {
			p->fresh++;
			return 0;
		}
	}
	if (pl->have_rec && !pl->rec.quarantine[0])
		strata_log(conflict ? LOG_WARNING : LOG_INFO,
			   "%s: layer %s: the store's index (%s) %s: verifying the layer against its "
			   "blob",
			   name, pl->fl->digest, rec_origin(&pl->rec, origin, sizeof(origin)),
			   conflict ? "differs from what this image's own source says" :
				      "is not vouched for by this image's source");
	if (p->stream) {
		/* No index anywhere: the daemon streams the blob once in the background,
		 * lookups of the layer wait for it; this pull returns now. */
		return stream_layer(p, pl);
	}
	pl->how = "build";
	rc = index_one(c, p->fc, p->ref, pl, p->po->chunk_size, &p->pg);
	if (rc < 0) {
		if (c->tty && !c->json)
			fprintf(c->err, "\n");
		if (c->cancel && atomic_load(c->cancel))
			return cli_fail(c, "%s: cancelled: the daemon is shutting down", name);
		return cli_fail(c, "%s: layer %s: %s", name, pl->fl->digest, strata_errmsg(rc));
	}
	p->fresh++;
	return 0;
}

/* Stores layer i's record (or its pending record). Returns 0 or negative errno. */
static int commit_layer(struct pull *p, size_t i)
{
	struct pull_layer *pl = &p->pls[i];
	void *buf;
	size_t len;
	int rc;

	if (pl->record_pending)
		return store_pending_put(p->c->store, &pl->info, p->name);
	if (!pl->idx)
		return 0;
	if (pl->enc)
		return store_layer_put(p->c->store, &pl->info, pl->enc, pl->enc_len);
	rc = index_layer_encode(pl->idx, &buf, &len);
	if (rc == 0) {
		rc = store_layer_put(p->c->store, &pl->info, buf, len);
		free(buf);
	}
	return rc;
}

/* Every layer checked out: only now does anything become visible, the layers, then the image,
 * under the store's layers lock (gc waits). */
static int commit_image(struct pull *p)
{
	struct cli *c = p->c;
	char *json = NULL;
	int rc = 0;

	store_layers_rdlock(c->store);
	for (size_t i = 0; i < p->img->nlayers; i++) {
		rc = commit_layer(p, i);
		if (rc < 0) {
			rc = cli_fail(c, "%s: layer %s: %s", p->name, p->pls[i].fl->digest,
				      strata_errmsg(rc));
			goto out;
		}
	}
	json = image_json(p->name, p->img, p->pls);
	if (!json) {
		rc = cli_fail(c, "out of memory");
		goto out;
	}
	rc = store_image_put(c->store, p->name, json);
	store_layers_unlock(c->store);
	free(json);
	if (rc < 0)
		return cli_fail(c, "%s: %s", p->name, strata_errmsg(rc));
	return 0;
out:
	store_layers_unlock(c->store);
	return rc;
}

/* strata index --push: the layer indexes go to the registry as an artifact. */
static int push_index(struct pull *p)
{
	const struct fetch_image *img = p->img;
	const char **digests;
	int rc;

	if (p->art)
		snprintf(p->art_digest, sizeof(p->art_digest), "%s", artifact_digest(p->art));
	if (!p->po->push)
		return 0;
	digests = calloc(img->nlayers ? img->nlayers : 1, sizeof(*digests));
	for (size_t i = 0; digests && i < img->nlayers; i++)
		digests[i] = img->layers[i].digest;
	rc = digests ? artifact_push(p->c->store, p->fc, p->ref, img->manifest_digest,
				     img->media_type, img->manifest_len, digests, img->nlayers,
				     p->art_digest) :
		       -ENOMEM;
	free(digests);
	if (rc < 0)
		return cli_fail(p->c, "%s: pushing the index artifact: %s", p->name,
				strata_errmsg(rc));
	if (p->po->sign_key) {
		rc = sign_push(p->fc, p->ref, p->art_digest, p->po->sign_key);
		if (rc < 0)
			return cli_fail(p->c, "%s: signing index artifact %s: %s", p->name,
					p->art_digest, strata_errmsg(rc));
		util_key_fingerprint(p->po->sign_key, p->art_signer);
	}
	return 0;
}

static void print_result(struct pull *p)
{
	struct cli *c = p->c;
	const struct fetch_image *img = p->img;
	struct fetch_counters after;

	fetch_client_counters(p->fc, &after);
	if (c->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:[], s:[], s:I, s:I, s:I, s:I, s:s?}",
				      "ref", p->name, "manifest", img->manifest_digest, "platform",
				      img->platform ? img->platform : "", "layers", "index_sources",
				      "new_layers", (json_int_t)p->fresh, "streaming",
				      (json_int_t)p->streaming, "bytes_fetched",
				      (json_int_t)(after.bytes - p->before.bytes), "requests",
				      (json_int_t)(after.requests - p->before.requests), "artifact",
				      p->art_digest[0] ? p->art_digest : NULL);
		char *s;

		for (size_t i = 0; o && i < img->nlayers; i++) {
			json_array_append_new(json_object_get(o, "layers"),
					      json_string(img->layers[i].digest));
			json_array_append_new(json_object_get(o, "index_sources"),
					      json_string(p->pls[i].how));
		}
		if (o && p->art_signer[0])
			json_object_set_new(o, "signer", json_string(p->art_signer));
		s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		fprintf(c->out, "%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		char b[32];

		char sbuf[48] = "";

		if (p->streaming)
			snprintf(sbuf, sizeof(sbuf), ", %zu streaming in the background",
				 p->streaming);
		fprintf(c->out, "pulled %s (%s, %s, %zu layers, %zu new%s%s, %s fetched)\n",
			p->name, img->manifest_digest, img->platform ? img->platform : "?",
			img->nlayers, p->fresh, p->art ? " from an index artifact" : "", sbuf,
			cli_bytes(after.bytes - p->before.bytes, b, sizeof(b)));
		if (p->po->push)
			fprintf(c->out, "pushed index artifact %s\n", p->art_digest);
		else if (p->art)
			fprintf(c->out, "used index artifact %s\n", p->art_digest);
		if (p->art_signer[0])
			fprintf(c->out, "%s by key %s\n",
				p->po->push ? "signed" : "its signature verified", p->art_signer);
	}
	fflush(c->out);
}

static int pull_one(struct cli *c, struct fetch_client *fc, const char *arg,
		    const struct pull_opts *po)
{
	struct pull p;
	int rc;

	memset(&p, 0, sizeof(p));
	p.c = c;
	p.fc = fc;
	p.po = po;
	/* Inside the daemon, layers without an index stream in the background. */
	p.stream = c->in_daemon && po->mode == MODE_AUTO;
	fetch_client_counters(fc, &p.before);
	rc = resolve(&p, arg);
	if (rc == 0)
		rc = check_layers(&p);
	if (rc == 0) {
		p.pg.c = c;
		p.pg.ref = p.name;
		p.pg.nlayers = p.img->nlayers;
		for (size_t i = 0; rc == 0 && i < p.img->nlayers; i++)
			rc = choose_source(&p, i);
	}
	if (rc == 0 && c->tty && !c->json && p.fresh)
		fprintf(c->err, "\r\033[K");
	if (rc == 0)
		rc = commit_image(&p);
	if (rc == 0)
		rc = push_index(&p);
	if (rc == 0)
		print_result(&p);
	for (size_t i = 0; p.pls && p.img && i < p.img->nlayers; i++) {
		index_layer_free(p.pls[i].idx);
		free(p.pls[i].enc);
	}
	artifact_free(p.art);
	free(p.pls);
	free(p.name);
	fetch_image_free(p.img);
	fetch_ref_free(p.ref);
	return rc;
}

/* Shared by pull and index: options, then each reference. */
/* Loads the trusted public keys the configuration lists (artifact_trust "signed"). Returns 0,
 * or 1 after printing the error. */
static int load_trusted_keys(struct cli *c, struct pull_opts *po)
{
	if (!c->ntrusted_keys)
		return cli_fail(c,
				"artifact_trust \"signed\" needs trusted_keys = [\"/path/key.pub\"] "
				"in the configuration file");
	po->keys = calloc(c->ntrusted_keys, sizeof(*po->keys));
	if (!po->keys)
		return cli_fail(c, "out of memory");
	for (size_t i = 0; i < c->ntrusted_keys; i++) {
		int rc = util_key_load(c->trusted_keys[i], 0, &po->keys[po->nkeys]);

		if (rc < 0)
			return cli_fail(c, "trusted_keys: %s", strata_errmsg(rc));
		po->nkeys++;
	}
	return 0;
}

/* An option's value: "--name=V" or "--name V" (argv[*i] starts with name). NULL when missing. */
static const char *opt_value(int argc, char **argv, int *i, size_t namelen)
{
	if (argv[*i][namelen] == '=')
		return argv[*i] + namelen + 1;
	return *i + 1 < argc ? argv[++*i] : NULL;
}

static int is_opt(const char *arg, const char *name)
{
	size_t n = strlen(name);

	return strncmp(arg, name, n) == 0 && (!arg[n] || arg[n] == '=');
}

/* Parses pull's and index's options; the references are moved to argv[1..*nrefs]. Returns 0, or
 * the exit code after printing the error. */
static int parse_opts(struct cli *c, int argc, char **argv, struct pull_opts *po, int *nrefs,
		      const char **trust, const char **sign)
{
	uint64_t chunk_size = INDEX_DEFAULT_CHUNK_SIZE;
	int pull = strcmp(c->cmd, "pull") == 0;

	for (int i = 1; i < argc; i++) {
		if (is_opt(argv[i], "--chunk-size")) {
			const char *v = opt_value(argc, argv, &i, 12);

			if (!v || cli_parse_size(v, &chunk_size) < 0 ||
			    chunk_size < INDEX_MIN_CHUNK_SIZE || chunk_size > INDEX_MAX_CHUNK_SIZE)
				return cli_usage(c, "--chunk-size takes a size from 4K to 16M");
		} else if (pull && strncmp(argv[i], "--index=", 8) == 0) {
			const char *v = argv[i] + 8;

			if (strcmp(v, "auto") == 0)
				po->mode = MODE_AUTO;
			else if (strcmp(v, "artifact") == 0)
				po->mode = MODE_ARTIFACT;
			else if (strcmp(v, "build") == 0)
				po->mode = MODE_BUILD;
			else
				return cli_usage(c, "--index takes auto, artifact or build");
		} else if (pull && is_opt(argv[i], "--artifact-trust")) {
			*trust = opt_value(argc, argv, &i, 16);
			if (!*trust || artifact_trust_parse(*trust, &po->trust) < 0 || !**trust)
				return cli_usage(
					c, "--artifact-trust takes repository, signed or none");
		} else if (!pull && strcmp(argv[i], "--push") == 0) {
			po->push = 1;
		} else if (!pull && is_opt(argv[i], "--sign")) {
			*sign = opt_value(argc, argv, &i, 6);
			if (!*sign || !**sign)
				return cli_usage(c, "--sign takes the path of a PEM private key");
		} else if (argv[i][0] == '-') {
			return cli_usage(c, "unknown option %s", argv[i]);
		} else {
			argv[++*nrefs] = argv[i];
		}
	}
	if (*nrefs == 0)
		return cli_usage(c, "%s needs at least one reference", c->cmd);
	if (*sign && !po->push)
		return cli_usage(c, "--sign needs --push");
	if (*sign && c->in_daemon && (*sign)[0] != '/')
		return cli_usage(c, "--sign needs an absolute path while a daemon runs");
	po->chunk_size = (uint32_t)chunk_size;
	return 0;
}

/* Shared by pull and index: options, then each reference. */
static int run_pull(struct cli *c, int argc, char **argv, struct pull_opts *po)
{
	struct fetch_client *fc = NULL;
	const char *trust = NULL, *sign = NULL;
	int nrefs = 0, failed = 0;

	failed = parse_opts(c, argc, argv, po, &nrefs, &trust, &sign);
	if (failed)
		return failed;
	if (!trust && artifact_trust_parse(c->artifact_trust, &po->trust) < 0)
		return cli_fail(c, "artifact_trust: unknown policy '%s'", c->artifact_trust);
	if (po->trust == ARTIFACT_TRUST_NONE && po->mode == MODE_ARTIFACT)
		return cli_usage(c,
				 "--index=artifact and artifact trust \"none\" exclude each other");
	if (po->trust == ARTIFACT_TRUST_SIGNED && po->mode != MODE_BUILD)
		failed = load_trusted_keys(c, po);
	if (!failed && sign) {
		int rc = util_key_load(sign, 1, &po->sign_key);

		if (rc < 0)
			failed = cli_fail(c, "--sign: %s", strata_errmsg(rc));
	}
	if (!failed)
		failed = cli_fetch_client(c, &fc);
	if (!failed) {
		for (int i = 1; i <= nrefs; i++) {
			if (pull_one(c, fc, argv[i], po))
				failed = 1;
		}
		fetch_client_free(fc);
	}
	for (size_t i = 0; i < po->nkeys; i++)
		util_key_free(po->keys[i]);
	free(po->keys);
	util_key_free(po->sign_key);
	return failed;
}

int cmd_pull(struct cli *c, int argc, char **argv)
{
	struct pull_opts po = { .mode = MODE_AUTO };

	return run_pull(c, argc, argv, &po);
}

int cmd_index(struct cli *c, int argc, char **argv)
{
	struct pull_opts po = { .mode = MODE_BUILD };

	return run_pull(c, argc, argv, &po);
}

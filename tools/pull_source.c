/* SPDX-License-Identifier: Apache-2.0 */
/* strata pull: where each layer's index comes from (the store when its record may serve this
 * image, the image's index artifact, its eStargz TOC, the daemon's stream, or a build here), and
 * the rules that decide whether a record in the store may serve this image. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pull_i.h"
#include "fs/stream.h"
#include "index/decomp.h"
#include "index/estargz.h"
#include "index/layer.h"
#include "util/log.h"

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
int pull_choose_source(struct pull *p, size_t i)
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

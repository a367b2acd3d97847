/* SPDX-License-Identifier: Apache-2.0 */
/* Manifests and indexes: resolving a reference to the image for this platform with its config,
 * generic manifest GETs, and the OCI referrers API. */
#include "registry.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "registry_i.h"
#include "util/log.h"
#include "util/sha256.h"

#define ACCEPT_MANIFESTS                                                        \
	FETCH_MT_OCI_INDEX ", " FETCH_MT_OCI_MANIFEST ", " FETCH_MT_DOCKER_LIST \
			   ", " FETCH_MT_DOCKER_MANIFEST

/* A fetched manifest: the bytes, their digest, and the Content-Type they came with. */
struct doc {
	char *data;
	size_t len;
	char digest[UTIL_DIGEST_STR_LEN];
	char content_type[256];
};

static void doc_clear(struct doc *d)
{
	free(d->data);
	memset(d, 0, sizeof(*d));
}

/* --- manifests --- */

/* What get_manifest() checks a host's answer against. */
struct manifest_check {
	const char *refstr;
	const char *expect_digest;
	int64_t expect_size; /* -1: unknown */
	struct doc *d;
};

/* req.check of get_manifest(): the digest (into d->digest) and size. -EBADMSG tries the next host. */
static int manifest_check(struct req *r)
{
	const struct manifest_check *mc = r->check_ctx;
	uint8_t md[UTIL_SHA256_LEN];

	if (!r->mem)
		return strata_err(EBADMSG, "%s: empty manifest from %s", mc->refstr, r->url);
	util_sha256(r->mem, r->len, md);
	util_digest_format(md, mc->d->digest);
	if (mc->expect_digest && strcmp(mc->expect_digest, mc->d->digest) != 0)
		return strata_err(EBADMSG, "%s: manifest %s from %s digest mismatch (got %s)",
				  mc->refstr, mc->expect_digest, r->host, mc->d->digest);
	if (mc->expect_size >= 0 && r->len != (uint64_t)mc->expect_size)
		return strata_err(EBADMSG,
				  "%s: manifest %s from %s is %zu bytes, its descriptor says "
				  "%llu",
				  mc->refstr, mc->d->digest, r->host, r->len,
				  (unsigned long long)mc->expect_size);
	if (!mc->expect_digest && strncmp(r->docker_digest, "sha256:", 7) == 0 &&
	    strcasecmp(r->docker_digest, mc->d->digest) != 0)
		return strata_err(EBADMSG,
				  "%s: manifest digest mismatch from %s (Docker-Content-Digest "
				  "%s, got %s)",
				  mc->refstr, r->host, r->docker_digest, mc->d->digest);
	return 0;
}

/*
 * GETs the manifest `reference` (a tag or a digest) of ref's repository into d, asking for `accept`
 * (NULL: the four image manifest and index types), and computes its digest. Checks it against
 * expect_digest when given (and expect_size, exact, when >= 0), else against the Docker-Content-Digest header
 * when the registry sent a sha256 one. On failure d owns no memory (the caller clears it either way).
 */
static int get_manifest(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
			const char *reference, const char *accept, const char *expect_digest,
			int64_t expect_size, struct doc *d)
{
	struct manifest_check mc = { refstr, expect_digest, expect_size, d };
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = fetch_route_init(&r, c, ref, "manifests", reference, &url, &what);
	if (rc < 0)
		goto out;
	r.what = refstr;
	r.accept = accept ? accept : ACCEPT_MANIFESTS;
	r.kind = SINK_MEM;
	r.limit = FETCH_MANIFEST_MAX;
	if (expect_size >= 0 && (uint64_t)expect_size < r.limit) {
		r.limit = (size_t)expect_size; /* an index entry's: exact */
		r.limit_exact = 1;
	}
	r.limit_what = "manifest";
	r.check = manifest_check;
	r.check_ctx = &mc;
	rc = fetch_route_request(&r);
	if (rc < 0)
		goto out;
	d->data = r.mem;
	d->len = r.len;
	r.mem = NULL;
	snprintf(d->content_type, sizeof(d->content_type), "%s", r.content_type);
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* --- the image config --- */

/* What get_config() checks a host's answer against. */
struct config_check {
	const char *refstr;
	const char *digest;
	uint64_t size;
};

/* req.check of get_config(): digest and size. -EBADMSG tries the next host. */
static int config_check(struct req *r)
{
	const struct config_check *cc = r->check_ctx;
	uint8_t md[UTIL_SHA256_LEN];
	char got[UTIL_DIGEST_STR_LEN];

	util_sha256(r->mem ? r->mem : "", r->len, md);
	util_digest_format(md, got);
	if (strcmp(got, cc->digest) != 0)
		return strata_err(EBADMSG, "%s: config blob %s from %s digest mismatch (got %s)",
				  cc->refstr, cc->digest, r->host, got);
	if (r->len != cc->size)
		return strata_err(EBADMSG,
				  "%s: config blob %s from %s is %zu bytes, its descriptor "
				  "says %llu",
				  cc->refstr, cc->digest, r->host, r->len,
				  (unsigned long long)cc->size);
	return 0;
}

/* GETs the config blob into img, checking its digest and size. */
static int get_config(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
		      struct fetch_image *img, uint64_t size)
{
	struct config_check chk = { refstr, img->config_digest, size };
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	rc = fetch_route_init(&r, c, ref, "blobs", img->config_digest, &url, &what);
	if (rc < 0)
		goto out;
	r.kind = SINK_MEM;
	r.limit = size; /* exact, at most FETCH_CONFIG_MAX (fetch_doc_parse checked) */
	r.limit_exact = 1;
	r.limit_what = "config";
	r.check = config_check;
	r.check_ctx = &chk;
	rc = fetch_route_request(&r);
	if (rc < 0)
		goto out;
	if (!r.mem) {
		rc = strata_err(EBADMSG, "%s: empty config", what);
		goto out;
	}
	img->config = r.mem;
	img->config_len = r.len;
	r.mem = NULL;
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

/* --- resolving a reference to this platform's image --- */

void fetch_image_free(struct fetch_image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->nlayers; i++) {
		free(img->layers[i].digest);
		free(img->layers[i].media_type);
		free(img->layers[i].diff_id);
		free(img->layers[i].toc_digest);
	}
	free(img->layers);
	free(img->manifest_digest);
	free(img->index_digest);
	free(img->media_type);
	free(img->config_digest);
	free(img->platform);
	free(img->manifest);
	free(img->config);
	free(img);
}

int fetch_resolve(struct fetch_client *c, const struct fetch_ref *ref, struct fetch_image **out)
{
	const struct fetch_platform want = { c->os, c->arch, c->variant };
	struct fetch_image *img = NULL;
	struct doc d = { 0 };
	struct fetch_doc info;
	char *refstr = NULL;
	int rc;

	*out = NULL;
	img = calloc(1, sizeof(*img));
	refstr = fetch_ref_string(ref);
	if (!img || !refstr) {
		rc = -ENOMEM;
		goto out;
	}
	/* a pinned digest wins over the tag, as in containerd */
	rc = get_manifest(c, ref, refstr, ref->digest ? ref->digest : ref->tag, NULL, ref->digest,
			  -1, &d);
	if (rc == 0)
		rc = fetch_doc_parse(&want, refstr, d.data, d.len, d.content_type, 0, img, &info);
	if (rc == 0 && info.is_index) {
		char entry[UTIL_DIGEST_STR_LEN];

		img->index_digest = strdup(d.digest);
		if (!img->index_digest) {
			rc = -ENOMEM;
			goto out;
		}
		memcpy(entry, info.entry_digest, sizeof(entry));
		doc_clear(&d);
		rc = get_manifest(c, ref, refstr, entry, NULL, entry, (int64_t)info.entry_size, &d);
		if (rc == 0)
			rc = fetch_doc_parse(&want, refstr, d.data, d.len, d.content_type, 1, img,
					     &info);
	}
	if (rc < 0)
		goto out;
	img->manifest_digest = strdup(d.digest);
	if (!img->manifest_digest) {
		rc = -ENOMEM;
		goto out;
	}
	img->manifest = d.data;
	img->manifest_len = d.len;
	d.data = NULL;
	rc = get_config(c, ref, refstr, img, info.config_size);
	if (rc == 0)
		rc = fetch_config_parse(&want, refstr, img);
	if (rc < 0)
		goto out;
	*out = img;
	img = NULL;
out:
	doc_clear(&d);
	fetch_image_free(img);
	free(refstr);
	return rc;
}

/* --- generic manifest GET --- */

int fetch_manifest_get(struct fetch_client *c, const struct fetch_ref *ref, const char *accept,
		       char **body, size_t *len, char **media_type, char **digest)
{
	struct doc d = { 0 };
	char *refstr = NULL, *mt = NULL, *dg = NULL;
	int rc;

	*body = NULL;
	*len = 0;
	if (media_type)
		*media_type = NULL;
	if (digest)
		*digest = NULL;
	assert(ref->digest || ref->tag);
	if (accept && !fetch_http_header_safe(accept))
		return strata_err(EINVAL, "invalid Accept header value");
	refstr = fetch_ref_string(ref);
	if (!refstr)
		return -ENOMEM;
	rc = get_manifest(c, ref, refstr, ref->digest ? ref->digest : ref->tag, accept, ref->digest,
			  -1, &d);
	if (rc < 0)
		goto out;
	if (media_type) {
		/* any JSON will do here: the caller interprets the document */
		json_t *root = json_loadb(d.data, d.len, 0, NULL);
		const char *t = json_string_value(json_object_get(root, "mediaType"));

		mt = strdup(t && *t ? t : d.content_type);
		json_decref(root);
	}
	if (digest)
		dg = strdup(d.digest);
	if ((media_type && !mt) || (digest && !dg)) {
		rc = -ENOMEM;
		goto out;
	}
	*body = d.data;
	*len = d.len;
	d.data = NULL;
	if (media_type)
		*media_type = mt;
	if (digest)
		*digest = dg;
	mt = NULL;
	dg = NULL;
	rc = 0;
out:
	free(mt);
	free(dg);
	doc_clear(&d);
	free(refstr);
	return rc;
}

/* --- referrers --- */

/* Whether data is an OCI image index: a JSON object with a manifests array, and when it names its
 * mediaType, the index type. */
static int is_oci_index(const char *data, size_t len)
{
	json_t *root = json_loadb(data, len, 0, NULL);
	const char *mt = json_string_value(json_object_get(root, "mediaType"));
	int ok = json_is_object(root) && json_is_array(json_object_get(root, "manifests")) &&
		 (!mt || strcmp(mt, FETCH_MT_OCI_INDEX) == 0);

	json_decref(root);
	return ok;
}

int fetch_referrers(struct fetch_client *c, const struct fetch_ref *ref, const char *digest,
		    const char *artifact_type, char **body, size_t *len)
{
	char want[UTIL_DIGEST_STR_LEN];
	char *url = NULL, *what = NULL;
	struct req r = { 0 };
	int rc;

	*body = NULL;
	*len = 0;
	rc = util_digest_normalize(digest, want);
	if (rc < 0)
		return rc;
	rc = fetch_route_init(&r, c, ref, "referrers", want, &url, &what);
	if (rc < 0)
		goto out;
	if (artifact_type) {
		r.query_key = "artifactType";
		r.query_value = artifact_type;
	}
	r.accept = FETCH_MT_OCI_INDEX;
	r.kind = SINK_MEM;
	r.limit = FETCH_MANIFEST_MAX;
	r.limit_what = "referrers index";
	rc = fetch_route_request(&r);
	if (rc < 0 && (r.status == 404 || r.status == 405)) {
		/* a registry with the API answers 200 even for an unknown subject */
		if (!r.errbody || !is_oci_index(r.errbody, r.errlen)) {
			rc = strata_err(ENOTSUP,
					"%s: the registry does not support the referrers API "
					"(HTTP %ld)",
					what, r.status);
			goto out;
		}
		strata_err_clear();
		free(r.mem);
		r.mem = r.errbody;
		r.len = r.errlen;
		r.errbody = NULL;
		rc = 0;
	}
	if (rc < 0)
		goto out;
	if (!r.mem || !is_oci_index(r.mem, r.len)) {
		rc = strata_err(EBADMSG, "%s: the referrers response is not an OCI image index",
				what);
		goto out;
	}
	*body = r.mem;
	*len = r.len;
	r.mem = NULL;
	rc = 0;
out:
	free(r.mem);
	free(r.errbody);
	free(what);
	free(url);
	return rc;
}

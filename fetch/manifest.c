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

#define MANIFEST_MAX (4u << 20)
#define CONFIG_MAX   (16u << 20)
#define ACCEPT_MANIFESTS                                                        \
	FETCH_MT_OCI_INDEX ", " FETCH_MT_OCI_MANIFEST ", " FETCH_MT_DOCKER_LIST \
			   ", " FETCH_MT_DOCKER_MANIFEST
#define SCHEMA1_PREFIX "application/vnd.docker.distribution.manifest.v1+"

/* A fetched manifest: the bytes, their digest, and the Content-Type they came with. */
struct doc {
	char *data;
	size_t len;
	char digest[UTIL_DIGEST_STR_LEN];
	char content_type[256];
};

enum doc_kind { DOC_MANIFEST, DOC_INDEX };

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
	uint64_t expect_size;
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
	if (mc->expect_size > 0 && r->len != mc->expect_size)
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
 * expect_digest when given (and expect_size when > 0), else against the Docker-Content-Digest header
 * when the registry sent a sha256 one. On failure d owns no memory (the caller clears it either way).
 */
static int get_manifest(struct fetch_client *c, const struct fetch_ref *ref, const char *refstr,
			const char *reference, const char *accept, const char *expect_digest,
			uint64_t expect_size, struct doc *d)
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
	r.limit = MANIFEST_MAX;
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

static int parse_json(const char *refstr, const char *what, const char *data, size_t len,
		      json_t **out)
{
	json_error_t jerr;
	json_t *root;

	*out = NULL;
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return strata_err(EBADMSG, "%s: malformed %s JSON: %s (line %d)", refstr, what,
				  jerr.text, jerr.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return strata_err(EBADMSG, "%s: %s JSON is not an object", refstr, what);
	}
	*out = root;
	return 0;
}

/*
 * Decides what a manifest document is: its media type comes from the JSON mediaType field, else the
 * Content-Type header; when neither names a manifest type, the shape decides (an OCI document
 * without mediaType). *mt points into root or at a static string.
 */
static int classify(const char *refstr, json_t *root, const char *content_type, const char **mt,
		    enum doc_kind *kind)
{
	json_t *sv = json_object_get(root, "schemaVersion");
	const char *t = json_string_value(json_object_get(root, "mediaType"));

	if (!t || !*t)
		t = content_type;
	if ((json_is_integer(sv) && json_integer_value(sv) == 1) ||
	    strncmp(t, SCHEMA1_PREFIX, strlen(SCHEMA1_PREFIX)) == 0)
		return strata_err(ENOTSUP, "%s: schema 1 manifests are not supported", refstr);
	if (!json_is_integer(sv) || json_integer_value(sv) != 2)
		return strata_err(ENOTSUP, "%s: unsupported manifest schemaVersion (want 2)",
				  refstr);
	if (strcmp(t, FETCH_MT_OCI_INDEX) == 0 || strcmp(t, FETCH_MT_DOCKER_LIST) == 0) {
		*mt = t;
		*kind = DOC_INDEX;
		return 0;
	}
	if (strcmp(t, FETCH_MT_OCI_MANIFEST) == 0 || strcmp(t, FETCH_MT_DOCKER_MANIFEST) == 0) {
		*mt = t;
		*kind = DOC_MANIFEST;
		return 0;
	}
	if (!*t || strcmp(t, "application/json") == 0 ||
	    strcmp(t, "application/octet-stream") == 0) {
		if (json_is_array(json_object_get(root, "manifests"))) {
			*mt = FETCH_MT_OCI_INDEX;
			*kind = DOC_INDEX;
			return 0;
		}
		if (json_is_object(json_object_get(root, "config")) &&
		    json_is_array(json_object_get(root, "layers"))) {
			*mt = FETCH_MT_OCI_MANIFEST;
			*kind = DOC_MANIFEST;
			return 0;
		}
	}
	return strata_err(ENOTSUP, "%s: unsupported manifest media type '%.100s'", refstr,
			  *t ? t : "(none)");
}

/* Reads a descriptor's digest (normalized to lowercase hex) and size. */
static int descriptor(const char *refstr, const char *what, json_t *d,
		      char digest[UTIL_DIGEST_STR_LEN], uint64_t *size)
{
	uint8_t md[UTIL_SHA256_LEN];
	const char *s = json_string_value(json_object_get(d, "digest"));
	json_t *sz = json_object_get(d, "size");

	if (!json_is_object(d))
		return strata_err(EBADMSG, "%s: %s is not a descriptor object", refstr, what);
	if (!s || util_digest_parse(s, md) != 0)
		return strata_err(EBADMSG, "%s: %s has a missing or unsupported digest '%.80s'",
				  refstr, what, s ? s : "");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0)
		return strata_err(EBADMSG, "%s: %s has no valid size", refstr, what);
	util_digest_format(md, digest);
	*size = (uint64_t)json_integer_value(sz);
	return 0;
}

static char *platform_string(const char *os, const char *arch, const char *variant)
{
	char *s = NULL;

	if (asprintf(&s, "%s/%s%s%s", os, arch, variant ? "/" : "", variant ? variant : "") < 0)
		return NULL;
	return s;
}

/* Whether the ", "-separated list contains item. */
static int list_has(const char *list, const char *item)
{
	size_t n = strlen(item);

	while (*list) {
		size_t len = strcspn(list, ",");

		if (len == n && strncmp(list, item, n) == 0)
			return 1;
		list += len;
		while (*list == ',' || *list == ' ')
			list++;
	}
	return 0;
}

/*
 * Picks the first index entry for the client's os/arch (variant: unset on either side matches).
 * Returns 0 with the entry's digest, size and platform string (*platform malloc'd), -ENOENT listing
 * the platforms the index has, -ENOTSUP for a nested index, -EBADMSG for a malformed entry.
 */
static int pick_platform(const struct fetch_client *c, const char *refstr, json_t *root,
			 char digest[UTIL_DIGEST_STR_LEN], uint64_t *size, char **platform)
{
	json_t *manifests = json_object_get(root, "manifests");
	char has[512] = "";
	size_t hlen = 0, i;
	int rc, truncated = 0;
	json_t *e;

	*platform = NULL;
	if (!json_is_array(manifests))
		return strata_err(EBADMSG, "%s: index has no manifests array", refstr);
	json_array_foreach (manifests, i, e) {
		json_t *p = json_object_get(e, "platform");
		const char *os = json_string_value(json_object_get(p, "os"));
		const char *arch = json_string_value(json_object_get(p, "architecture"));
		const char *variant = json_string_value(json_object_get(p, "variant"));
		const char *mt = json_string_value(json_object_get(e, "mediaType"));
		char entry[128];

		if (!os || !arch)
			continue;
		if (strcmp(os, c->os) == 0 && strcmp(arch, c->arch) == 0 &&
		    (!c->variant || !variant || strcmp(variant, c->variant) == 0)) {
			if (mt && (strcmp(mt, FETCH_MT_OCI_INDEX) == 0 ||
				   strcmp(mt, FETCH_MT_DOCKER_LIST) == 0))
				return strata_err(ENOTSUP, "%s: nested indexes are not supported",
						  refstr);
			rc = descriptor(refstr, "index entry", e, digest, size);
			if (rc < 0)
				return rc;
			*platform = platform_string(os, arch, variant);
			return *platform ? 0 : -ENOMEM;
		}
		if (strcmp(os, "unknown") == 0) /* attestation manifests */
			continue;
		snprintf(entry, sizeof(entry), "%s/%s%s%s", os, arch, variant ? "/" : "",
			 variant ? variant : "");
		if (list_has(has, entry))
			continue;
		if (hlen + strlen(entry) + 8 >= sizeof(has)) {
			if (!truncated)
				hlen += (size_t)snprintf(has + hlen, sizeof(has) - hlen, ", ...");
			truncated = 1;
			continue;
		}
		hlen += (size_t)snprintf(has + hlen, sizeof(has) - hlen, "%s%s", hlen ? ", " : "",
					 entry);
	}
	return strata_err(ENOENT, "%s: no %s/%s%s%s image in index (has: %s)", refstr, c->os,
			  c->arch, c->variant ? "/" : "", c->variant ? c->variant : "",
			  hlen ? has : "no platform entries");
}

/* Fills the config descriptor and the layer list from an image manifest. */
static int parse_manifest(const char *refstr, json_t *root, struct fetch_image *img,
			  uint64_t *config_size)
{
	char digest[UTIL_DIGEST_STR_LEN];
	json_t *layers = json_object_get(root, "layers");
	json_t *e;
	size_t i;
	int rc;

	rc = descriptor(refstr, "manifest config", json_object_get(root, "config"), digest,
			config_size);
	if (rc < 0)
		return rc;
	img->config_digest = strdup(digest);
	if (!img->config_digest)
		return -ENOMEM;
	if (!json_is_array(layers))
		return strata_err(EBADMSG, "%s: manifest has no layers array", refstr);
	img->nlayers = json_array_size(layers);
	if (img->nlayers > 0) {
		img->layers = calloc(img->nlayers, sizeof(*img->layers));
		if (!img->layers) {
			img->nlayers = 0;
			return -ENOMEM;
		}
	}
	json_array_foreach (layers, i, e) {
		struct fetch_layer *l = &img->layers[i];
		const char *mt = json_string_value(json_object_get(e, "mediaType"));
		const char *toc;
		char what[32];

		snprintf(what, sizeof(what), "layer %zu", i);
		rc = descriptor(refstr, what, e, digest, &l->size);
		if (rc < 0)
			return rc;
		if (!mt)
			return strata_err(EBADMSG, "%s: layer %zu has no mediaType", refstr, i);
		l->digest = strdup(digest);
		l->media_type = strdup(mt);
		if (!l->digest || !l->media_type)
			return -ENOMEM;
		toc = json_string_value(json_object_get(json_object_get(e, "annotations"),
							FETCH_ANNOTATION_TOC_DIGEST));
		if (toc && util_digest_normalize(toc, digest) == 0) {
			l->toc_digest = strdup(digest);
			if (!l->toc_digest)
				return -ENOMEM;
		} else if (toc) {
			strata_err_clear();
			strata_log(LOG_WARNING,
				   "%s: layer %zu: ignoring its %s annotation: not a sha256 "
				   "digest",
				   refstr, i, FETCH_ANNOTATION_TOC_DIGEST);
		}
	}
	return 0;
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
	r.limit = CONFIG_MAX;
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

/* Reads rootfs.diff_ids (when there is one per layer) and, when no index gave it, the platform. */
static int parse_config(const struct fetch_client *c, const char *refstr, struct fetch_image *img)
{
	json_t *root = NULL, *diff_ids, *e;
	size_t i;
	int rc;

	rc = parse_json(refstr, "config", img->config, img->config_len, &root);
	if (rc < 0)
		return rc;
	diff_ids = json_object_get(json_object_get(root, "rootfs"), "diff_ids");
	if (json_is_array(diff_ids) && json_array_size(diff_ids) == img->nlayers) {
		json_array_foreach (diff_ids, i, e) {
			const char *s = json_string_value(e);

			if (!s)
				continue;
			img->layers[i].diff_id = strdup(s);
			if (!img->layers[i].diff_id) {
				rc = -ENOMEM;
				goto out;
			}
		}
	} else {
		strata_debug("%s: config has %zu diff_ids for %zu layers; ignoring them", refstr,
			     json_array_size(diff_ids), img->nlayers);
	}
	if (!img->platform) {
		const char *os = json_string_value(json_object_get(root, "os"));
		const char *arch = json_string_value(json_object_get(root, "architecture"));
		const char *variant = json_string_value(json_object_get(root, "variant"));

		img->platform = platform_string(os ? os : "unknown", arch ? arch : "unknown",
						variant);
		if (!img->platform) {
			rc = -ENOMEM;
			goto out;
		}
		if (!os || !arch || strcmp(os, c->os) != 0 || strcmp(arch, c->arch) != 0)
			strata_log(LOG_WARNING, "%s: image is for %s, this host wants %s/%s",
				   refstr, img->platform, c->os, c->arch);
	}
	rc = 0;
out:
	json_decref(root);
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
	struct fetch_image *img = NULL;
	struct doc d = { 0 };
	json_t *root = NULL;
	char *refstr = NULL;
	char entry_digest[UTIL_DIGEST_STR_LEN];
	uint64_t entry_size = 0, config_size = 0;
	const char *mt;
	enum doc_kind kind;
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
			  0, &d);
	if (rc < 0)
		goto out;
	rc = parse_json(refstr, "manifest", d.data, d.len, &root);
	if (rc < 0)
		goto out;
	rc = classify(refstr, root, d.content_type, &mt, &kind);
	if (rc < 0)
		goto out;

	if (kind == DOC_INDEX) {
		img->index_digest = strdup(d.digest);
		if (!img->index_digest) {
			rc = -ENOMEM;
			goto out;
		}
		rc = pick_platform(c, refstr, root, entry_digest, &entry_size, &img->platform);
		if (rc < 0)
			goto out;
		json_decref(root);
		root = NULL;
		doc_clear(&d);
		rc = get_manifest(c, ref, refstr, entry_digest, NULL, entry_digest, entry_size, &d);
		if (rc < 0)
			goto out;
		rc = parse_json(refstr, "manifest", d.data, d.len, &root);
		if (rc < 0)
			goto out;
		rc = classify(refstr, root, d.content_type, &mt, &kind);
		if (rc < 0)
			goto out;
		if (kind != DOC_MANIFEST) {
			rc = strata_err(ENOTSUP, "%s: nested indexes are not supported", refstr);
			goto out;
		}
	}

	img->media_type = strdup(mt);
	img->manifest_digest = strdup(d.digest);
	if (!img->media_type || !img->manifest_digest) {
		rc = -ENOMEM;
		goto out;
	}
	rc = parse_manifest(refstr, root, img, &config_size);
	if (rc < 0)
		goto out;
	img->manifest = d.data;
	img->manifest_len = d.len;
	d.data = NULL;
	rc = get_config(c, ref, refstr, img, config_size);
	if (rc < 0)
		goto out;
	rc = parse_config(c, refstr, img);
	if (rc < 0)
		goto out;
	*out = img;
	img = NULL;
out:
	json_decref(root);
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
			  0, &d);
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
	r.limit = MANIFEST_MAX;
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

/* SPDX-License-Identifier: Apache-2.0 */
/* Manifest, index and image config documents parsed and bounded: what a registry sends is
 * classified, checked against the size and count caps, and turned into a fetch_image. */
#include "registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "registry_i.h"
#include "util/log.h"
#include "util/sha256.h"

#define SCHEMA1_PREFIX "application/vnd.docker.distribution.manifest.v1+"

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
		    int *is_index)
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
		*is_index = 1;
		return 0;
	}
	if (strcmp(t, FETCH_MT_OCI_MANIFEST) == 0 || strcmp(t, FETCH_MT_DOCKER_MANIFEST) == 0) {
		*mt = t;
		*is_index = 0;
		return 0;
	}
	if (!*t || strcmp(t, "application/json") == 0 ||
	    strcmp(t, "application/octet-stream") == 0) {
		if (json_is_array(json_object_get(root, "manifests"))) {
			*mt = FETCH_MT_OCI_INDEX;
			*is_index = 1;
			return 0;
		}
		if (json_is_object(json_object_get(root, "config")) &&
		    json_is_array(json_object_get(root, "layers"))) {
			*mt = FETCH_MT_OCI_MANIFEST;
			*is_index = 0;
			return 0;
		}
	}
	return strata_err(ENOTSUP, "%s: unsupported manifest media type '%.100s'", refstr,
			  *t ? t : "(none)");
}

/* Reads a descriptor's digest (normalized to lowercase hex) and size; a size above max (the most
 * such an object may have) is refused here, before anything is fetched for it. */
static int descriptor(const char *refstr, const char *what, json_t *d, uint64_t max,
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
	if ((uint64_t)json_integer_value(sz) > max)
		return strata_err(EFBIG,
				  "%s: %s claims %llu bytes, more than the %llu strata accepts",
				  refstr, what, (unsigned long long)json_integer_value(sz),
				  (unsigned long long)max);
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
 * Picks the first index entry for want's os/arch (variant: unset on either side matches).
 * Returns 0 with the entry's digest, size and platform string (*platform malloc'd), -ENOENT listing
 * the platforms the index has, -ENOTSUP for a nested index, -EBADMSG for a malformed entry, -EFBIG
 * for an index with too many entries or an entry claiming more than a manifest may have.
 */
static int pick_platform(const struct fetch_platform *want, const char *refstr, json_t *root,
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
	if (json_array_size(manifests) > FETCH_INDEX_ENTRIES_MAX)
		return strata_err(EFBIG,
				  "%s: index lists %zu manifests, more than the %u strata accepts",
				  refstr, json_array_size(manifests), FETCH_INDEX_ENTRIES_MAX);
	json_array_foreach (manifests, i, e) {
		json_t *p = json_object_get(e, "platform");
		const char *os = json_string_value(json_object_get(p, "os"));
		const char *arch = json_string_value(json_object_get(p, "architecture"));
		const char *variant = json_string_value(json_object_get(p, "variant"));
		const char *mt = json_string_value(json_object_get(e, "mediaType"));
		char entry[128];

		if (!os || !arch)
			continue;
		if (strcmp(os, want->os) == 0 && strcmp(arch, want->arch) == 0 &&
		    (!want->variant || !variant || strcmp(variant, want->variant) == 0)) {
			if (mt && (strcmp(mt, FETCH_MT_OCI_INDEX) == 0 ||
				   strcmp(mt, FETCH_MT_DOCKER_LIST) == 0))
				return strata_err(ENOTSUP, "%s: nested indexes are not supported",
						  refstr);
			rc = descriptor(refstr, "index entry", e, FETCH_MANIFEST_MAX, digest, size);
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
	return strata_err(ENOENT, "%s: no %s/%s%s%s image in index (has: %s)", refstr, want->os,
			  want->arch, want->variant ? "/" : "", want->variant ? want->variant : "",
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

	rc = descriptor(refstr, "manifest config", json_object_get(root, "config"),
			FETCH_CONFIG_MAX, digest, config_size);
	if (rc < 0)
		return rc;
	img->config_digest = strdup(digest);
	if (!img->config_digest)
		return -ENOMEM;
	if (!json_is_array(layers))
		return strata_err(EBADMSG, "%s: manifest has no layers array", refstr);
	if (json_array_size(layers) > FETCH_LAYERS_MAX)
		return strata_err(EFBIG,
				  "%s: manifest lists %zu layers, more than the %u strata accepts",
				  refstr, json_array_size(layers), FETCH_LAYERS_MAX);
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
		rc = descriptor(refstr, what, e, FETCH_BLOB_SIZE_MAX, digest, &l->size);
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

int fetch_doc_parse(const struct fetch_platform *want, const char *refstr, const char *data,
		    size_t len, const char *content_type, int manifest_only,
		    struct fetch_image *img, struct fetch_doc *out)
{
	json_t *root = NULL;
	const char *mt = NULL;
	int rc, is_index = 0;

	memset(out, 0, sizeof(*out));
	if (len > FETCH_MANIFEST_MAX)
		return strata_err(EFBIG, "%s: manifest is larger than %u MiB", refstr,
				  FETCH_MANIFEST_MAX >> 20);
	rc = parse_json(refstr, "manifest", data, len, &root);
	if (rc == 0)
		rc = classify(refstr, root, content_type ? content_type : "", &mt, &is_index);
	if (rc < 0)
		goto out;
	out->is_index = is_index;
	if (is_index && manifest_only) {
		rc = strata_err(ENOTSUP, "%s: nested indexes are not supported", refstr);
	} else if (is_index) {
		rc = pick_platform(want, refstr, root, out->entry_digest, &out->entry_size,
				   &img->platform);
	} else {
		img->media_type = strdup(mt);
		rc = img->media_type ? parse_manifest(refstr, root, img, &out->config_size) :
				       -ENOMEM;
	}
out:
	json_decref(root);
	return rc;
}

int fetch_config_parse(const struct fetch_platform *want, const char *refstr,
		       struct fetch_image *img)
{
	json_t *root = NULL, *diff_ids, *e;
	size_t i;
	int rc;

	if (img->config_len > FETCH_CONFIG_MAX)
		return strata_err(EFBIG, "%s: config is larger than %u MiB", refstr,
				  FETCH_CONFIG_MAX >> 20);
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
		if (!os || !arch || strcmp(os, want->os) != 0 || strcmp(arch, want->arch) != 0)
			strata_log(LOG_WARNING, "%s: image is for %s, this host wants %s/%s",
				   refstr, img->platform, want->os, want->arch);
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

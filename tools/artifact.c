/* SPDX-License-Identifier: Apache-2.0 */
/* Pushing and finding strata index artifacts (OCI manifests with artifactType and subject). */
#include "artifact.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "fetch/ref.h"
#include "fetch/registry.h"
#include "index/layer.h"
#include "index/zran.h"
#include "util/log.h"
#include "util/sha256.h"

#define EMPTY_MT	  "application/vnd.oci.empty.v1+json"
#define MAX_ARTIFACT_BLOB (256u << 20)

struct artifact {
	char digest[STORE_DIGEST_LEN];
	json_t *manifest;
};

int artifact_trust_parse(const char *s, enum artifact_trust *out)
{
	if (!s[0] || strcmp(s, "repository") == 0)
		*out = ARTIFACT_TRUST_REPOSITORY;
	else if (strcmp(s, "signed") == 0)
		*out = ARTIFACT_TRUST_SIGNED;
	else if (strcmp(s, "none") == 0)
		*out = ARTIFACT_TRUST_NONE;
	else
		return -EINVAL;
	return 0;
}

char *artifact_tag(const char *manifest_digest)
{
	char *tag = NULL;

	if (strncmp(manifest_digest, "sha256:", 7) != 0)
		return NULL;
	if (asprintf(&tag, "sha256-%s.strata", manifest_digest + 7) < 0)
		return NULL;
	return tag;
}

static json_t *descriptor(const char *mt, const void *data, size_t len,
			  char digest[UTIL_DIGEST_STR_LEN])
{
	uint8_t d[32];

	util_sha256(data, len, d);
	util_digest_format(d, digest);
	return json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", digest, "size",
			 (json_int_t)len);
}

/* Builds one layer's index blob and windows blob. Both are malloc'd. */
static int layer_blobs(struct store *store, const char *layer, void **index, size_t *ilen,
		       uint8_t **windows, size_t *wlen)
{
	struct store_layer info;
	struct index_layer *l = NULL;
	void *enc = NULL;
	size_t enc_len = 0, cap = 0;
	uint8_t *raw = malloc(INDEX_ZRAN_WINDOW);
	uint8_t *packed = malloc(ZSTD_compressBound(INDEX_ZRAN_WINDOW));
	int rc;

	*windows = NULL;
	*wlen = 0;
	if (!raw || !packed) {
		rc = -ENOMEM;
		goto out;
	}
	rc = store_layer_get(store, layer, &info, &enc, &enc_len);
	if (rc < 0)
		goto out;
	rc = index_layer_decode(enc, enc_len, &l);
	if (rc < 0)
		goto out;
	if (index_layer_blob_kind(l) == INDEX_BLOB_UNKNOWN) {
		rc = strata_err(ENOTSUP, "layer %s has no random-access index (pull it again)",
				layer);
		goto out;
	}
	for (uint32_t i = 0; i < index_layer_ncheckpoints(l); i++) {
		const struct index_checkpoint *cp = index_layer_checkpoint(l, i);
		ssize_t n;
		size_t z;
		const uint8_t *src;

		if (!cp->wlen)
			continue;
		n = store_chunk_get(store, cp->window, raw, INDEX_ZRAN_WINDOW);
		if (n < 0) {
			rc = strata_err_prefix((int)-n, "layer %s: checkpoint window", layer);
			goto out;
		}
		z = ZSTD_compress(packed, ZSTD_compressBound(INDEX_ZRAN_WINDOW), raw, (size_t)n, 3);
		src = (!ZSTD_isError(z) && z < (size_t)n) ? packed : raw;
		if (src == raw)
			z = (size_t)n;
		if (*wlen + z > cap) {
			uint8_t *nw;

			cap = (*wlen + z) * 2;
			nw = realloc(*windows, cap);
			if (!nw) {
				rc = -ENOMEM;
				goto out;
			}
			*windows = nw;
		}
		memcpy(*windows + *wlen, src, z);
		index_layer_set_window_location(l, i, *wlen, (uint32_t)z);
		*wlen += z;
	}
	rc = index_layer_encode(l, index, ilen);
out:
	if (rc < 0) {
		free(*windows);
		*windows = NULL;
	}
	index_layer_free(l);
	free(enc);
	free(raw);
	free(packed);
	return rc;
}

int artifact_push(struct store *store, struct fetch_client *fc, const struct fetch_ref *ref,
		  const char *manifest_digest, const char *manifest_media_type,
		  uint64_t manifest_size, const char *const *layers, size_t nlayers,
		  char out_digest[STORE_DIGEST_LEN])
{
	json_t *blobs = json_array(), *m = NULL;
	char digest[UTIL_DIGEST_STR_LEN], *body = NULL, *tag = NULL;
	uint8_t md[32];
	int rc = 0;

	for (size_t i = 0; i < nlayers && rc == 0; i++) {
		void *index = NULL;
		uint8_t *windows = NULL;
		size_t ilen = 0, wlen = 0;
		json_t *d;

		rc = layer_blobs(store, layers[i], &index, &ilen, &windows, &wlen);
		if (rc == 0) {
			d = descriptor(ARTIFACT_INDEX_MT, index, ilen, digest);
			rc = fetch_blob_push(fc, ref, index, ilen, digest);
			json_object_set_new(d, "annotations",
					    json_pack("{s:s}", ARTIFACT_LAYER_ANNOTATION,
						      layers[i]));
			json_array_append_new(blobs, d);
		}
		if (rc == 0 && wlen) {
			d = descriptor(ARTIFACT_WINDOWS_MT, windows, wlen, digest);
			rc = fetch_blob_push(fc, ref, windows, wlen, digest);
			json_object_set_new(d, "annotations",
					    json_pack("{s:s}", ARTIFACT_LAYER_ANNOTATION,
						      layers[i]));
			json_array_append_new(blobs, d);
		}
		free(index);
		free(windows);
	}
	if (rc < 0)
		goto out;
	json_decref(descriptor(EMPTY_MT, "{}", 2, digest));
	rc = fetch_blob_push(fc, ref, "{}", 2, digest);
	if (rc < 0)
		goto out;
	m = json_pack("{s:i, s:s, s:s, s:o, s:O, s:{s:s, s:s, s:I}, s:{s:s}}", "schemaVersion", 2,
		      "mediaType", FETCH_MT_OCI_MANIFEST, "artifactType", ARTIFACT_TYPE, "config",
		      descriptor(EMPTY_MT, "{}", 2, digest), "layers", blobs, "subject",
		      "mediaType", manifest_media_type, "digest", manifest_digest, "size",
		      (json_int_t)manifest_size, "annotations", "org.strata.image.manifest",
		      manifest_digest);
	body = m ? json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	tag = artifact_tag(manifest_digest);
	if (!body || !tag) {
		rc = -ENOMEM;
		goto out;
	}
	rc = fetch_manifest_push(fc, ref, tag, FETCH_MT_OCI_MANIFEST, body, strlen(body));
	if (rc < 0)
		goto out;
	util_sha256(body, strlen(body), md);
	util_digest_format(md, out_digest);
out:
	json_decref(blobs);
	json_decref(m);
	free(body);
	free(tag);
	return rc;
}

/* Parses an artifact manifest body; checks it describes manifest_digest. */
static int parse_artifact(const char *body, size_t len, const char *digest,
			  const char *manifest_digest, struct artifact **out)
{
	json_error_t jerr;
	json_t *m = json_loadb(body, len, 0, &jerr);
	const char *type, *subject;
	struct artifact *a;

	if (!m)
		return strata_err(EBADMSG, "index artifact %s: %s", digest, jerr.text);
	type = json_string_value(json_object_get(m, "artifactType"));
	subject = json_string_value(json_object_get(json_object_get(m, "subject"), "digest"));
	if (!type || strcmp(type, ARTIFACT_TYPE) != 0 || !subject ||
	    strcmp(subject, manifest_digest) != 0 || !json_is_array(json_object_get(m, "layers"))) {
		json_decref(m);
		return strata_err(EBADMSG, "index artifact %s does not describe %s", digest,
				  manifest_digest);
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		json_decref(m);
		return -ENOMEM;
	}
	snprintf(a->digest, sizeof(a->digest), "%s", digest);
	a->manifest = m;
	*out = a;
	return 0;
}

int artifact_find(struct fetch_client *fc, const struct fetch_ref *ref, const char *manifest_digest,
		  struct artifact **out)
{
	struct fetch_ref r = *ref;
	char *body = NULL, *digest = NULL, *tag = artifact_tag(manifest_digest);
	size_t len = 0;
	int rc;

	*out = NULL;
	if (!tag)
		return -ENOMEM;
	r.tag = tag;
	r.digest = NULL;
	rc = fetch_manifest_get(fc, &r, FETCH_MT_OCI_MANIFEST, &body, &len, NULL, &digest);
	if (rc == -ENOENT) {
		/* The referrers API, where the registry has it. */
		char *idx = NULL;
		size_t ilen = 0;
		json_t *j, *e;
		json_error_t jerr;
		size_t i;

		strata_err_clear();
		rc = fetch_referrers(fc, ref, manifest_digest, ARTIFACT_TYPE, &idx, &ilen);
		if (rc < 0) {
			free(idx);
			rc = -ENOENT;
			goto out;
		}
		j = json_loadb(idx, ilen, 0, &jerr);
		free(idx);
		rc = -ENOENT;
		json_array_foreach (json_object_get(j, "manifests"), i, e) {
			const char *t = json_string_value(json_object_get(e, "artifactType"));
			const char *d = json_string_value(json_object_get(e, "digest"));

			if (t && d && strcmp(t, ARTIFACT_TYPE) == 0) {
				r.tag = NULL;
				r.digest = (char *)d;
				rc = fetch_manifest_get(fc, &r, FETCH_MT_OCI_MANIFEST, &body, &len,
							NULL, &digest);
				break;
			}
		}
		json_decref(j);
	}
	if (rc == 0)
		rc = parse_artifact(body, len, digest, manifest_digest, out);
out:
	free(body);
	free(digest);
	free(tag);
	return rc;
}

const char *artifact_digest(const struct artifact *a)
{
	return a->digest;
}

/* Downloads a (small) blob into memory through an anonymous file, verified by fetch. */
static int blob_to_mem(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
		       uint64_t size, void **buf, size_t *len)
{
	int fd, rc;
	ssize_t n;

	if (size > MAX_ARTIFACT_BLOB)
		return strata_err(EFBIG, "artifact blob %s is too large (%llu bytes)", digest,
				  (unsigned long long)size);
	fd = memfd_create("strata-artifact", MFD_CLOEXEC);
	if (fd < 0)
		return strata_err(errno, "memfd: %s", strerror(errno));
	rc = fetch_blob_to_fd(fc, ref, digest, size, fd, NULL, NULL);
	if (rc == 0) {
		*buf = malloc(size ? size : 1);
		if (!*buf) {
			rc = -ENOMEM;
		} else {
			n = pread(fd, *buf, size, 0);
			if (n != (ssize_t)size) {
				free(*buf);
				*buf = NULL;
				rc = strata_err(EIO, "artifact blob %s: short read", digest);
			}
			*len = size;
		}
	}
	close(fd);
	return rc;
}

/* Finds the index (and windows) descriptors of layer_digest in the artifact. */
static void find_layer(const struct artifact *a, const char *layer_digest,
		       const char **index_digest, json_int_t *index_size,
		       char windows[STORE_DIGEST_LEN])
{
	json_t *d;
	size_t i;

	*index_digest = NULL;
	*index_size = 0;
	windows[0] = '\0';
	json_array_foreach (json_object_get(a->manifest, "layers"), i, d) {
		const char *mt = json_string_value(json_object_get(d, "mediaType"));
		const char *dg = json_string_value(json_object_get(d, "digest"));
		const char *for_layer = json_string_value(
			json_object_get(json_object_get(d, "annotations"),
					ARTIFACT_LAYER_ANNOTATION));

		if (!mt || !dg || !for_layer || strcmp(for_layer, layer_digest) != 0)
			continue;
		if (strcmp(mt, ARTIFACT_INDEX_MT) == 0) {
			*index_digest = dg;
			*index_size = json_integer_value(json_object_get(d, "size"));
		} else if (strcmp(mt, ARTIFACT_WINDOWS_MT) == 0) {
			snprintf(windows, STORE_DIGEST_LEN, "%s", dg);
		}
	}
}

int artifact_index_digest(const struct artifact *a, const char *layer_digest,
			  char out[STORE_DIGEST_LEN])
{
	char windows[STORE_DIGEST_LEN];
	const char *index_digest;
	json_int_t index_size;

	find_layer(a, layer_digest, &index_digest, &index_size, windows);
	if (!index_digest)
		return -ENOENT;
	snprintf(out, STORE_DIGEST_LEN, "%s", index_digest);
	return 0;
}

int artifact_layer(struct fetch_client *fc, const struct fetch_ref *ref, const struct artifact *a,
		   const char *layer_digest, struct index_layer **idx, void **enc, size_t *len,
		   char windows[STORE_DIGEST_LEN])
{
	const char *index_digest = NULL;
	json_int_t index_size = 0;
	int rc;

	*idx = NULL;
	*enc = NULL;
	find_layer(a, layer_digest, &index_digest, &index_size, windows);
	if (!index_digest)
		return -ENOENT;
	if (index_size < 0)
		return strata_err(EBADMSG, "index artifact %s: negative size", a->digest);
	rc = blob_to_mem(fc, ref, index_digest, (uint64_t)index_size, enc, len);
	if (rc < 0)
		return rc;
	rc = index_layer_decode(*enc, *len, idx);
	if (rc < 0) {
		free(*enc);
		*enc = NULL;
		return strata_err_prefix(-rc, "index artifact %s", a->digest);
	}
	return 0;
}

void artifact_free(struct artifact *a)
{
	if (!a)
		return;
	json_decref(a->manifest);
	free(a);
}

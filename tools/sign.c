/* SPDX-License-Identifier: Apache-2.0 */
/* Verifying and pushing cosign signatures of index artifacts (the format is tools/cosign.c). */
#include "sign.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>

#include "cosign.h"
#include "fetch/ref.h"
#include "fetch/registry.h"
#include "util/ecdsa.h"
#include "util/log.h"
#include "util/mem.h"

/* Downloads a payload blob (size bytes, at most COSIGN_MAX_PAYLOAD) into a malloc'd buffer,
 * verified against its digest by fetch. Returns 0 or negative errno. */
static int payload_get(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
		       uint64_t size, char **buf)
{
	int fd = memfd_create("strata-signature", MFD_CLOEXEC);
	int rc;

	*buf = NULL;
	if (fd < 0)
		return strata_err(errno, "memfd: %s", strerror(errno));
	rc = fetch_blob_to_fd(fc, ref, digest, size, fd, NULL, NULL);
	if (rc == 0) {
		*buf = malloc(size + 1);
		if (!*buf)
			rc = -ENOMEM;
		else if (pread(fd, *buf, size, 0) != (ssize_t)size)
			rc = strata_err(EIO, "signature payload %s: short read", digest);
	}
	close(fd);
	if (rc < 0) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

/* Fetches the signature manifest of digest. Returns 0 with *m, -ENOENT, or negative errno. */
static int sig_manifest(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
			json_t **m)
{
	struct fetch_ref r = *ref;
	char *tag = cosign_tag(digest), *body = NULL;
	json_error_t jerr;
	size_t len = 0;
	int rc;

	*m = NULL;
	if (!tag)
		return strata_err(EINVAL, "cannot sign %.80s: not a sha256 digest", digest);
	r.tag = tag;
	r.digest = NULL;
	rc = fetch_manifest_get(fc, &r, FETCH_MT_OCI_MANIFEST, &body, &len, NULL, NULL);
	if (rc == -ENOENT)
		rc = strata_err(ENOENT, "no signature (tag %s not found in %s/%s)", tag,
				ref->domain, ref->path);
	if (rc == 0) {
		*m = json_loadb(body, len, 0, &jerr);
		if (!*m || !json_is_object(*m)) {
			json_decref(*m);
			*m = NULL;
			rc = strata_err(EBADMSG, "signature manifest %s: %s", tag,
					jerr.text[0] ? jerr.text : "not an object");
		}
	}
	free(body);
	free(tag);
	return rc;
}

int sign_verify(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
		struct util_key *const *keys, size_t nkeys, char signer[UTIL_DIGEST_STR_LEN])
{
	struct cosign_sig sigs[COSIGN_MAX_SIGNATURES];
	json_t *m = NULL;
	size_t n;
	int rc = sig_manifest(fc, ref, digest, &m);

	if (rc < 0)
		return rc;
	n = cosign_signatures(m, sigs);
	rc = strata_err(EBADMSG, "its signature manifest holds no cosign signature");
	for (size_t i = 0; i < n; i++) {
		char *payload = NULL;

		rc = payload_get(fc, ref, sigs[i].payload_digest, sigs[i].payload_size, &payload);
		if (rc == 0)
			rc = cosign_verify(payload, (size_t)sigs[i].payload_size, sigs[i].signature,
					   digest, ref->domain, ref->path, keys, nkeys, signer);
		free(payload);
		if (rc == 0 || rc == -ENOMEM)
			break;
	}
	json_decref(m);
	if (rc < 0 && rc != -ENOMEM && rc != -EBADMSG)
		rc = strata_err_prefix(-rc, "signature");
	return rc;
}

/* Pushes blob data (len bytes); its digest goes to digest. Returns 0 or negative errno. */
static int push_blob(struct fetch_client *fc, const struct fetch_ref *ref, const void *data,
		     size_t len, char digest[UTIL_DIGEST_STR_LEN])
{
	uint8_t d[UTIL_SHA256_LEN];

	util_sha256(data, len, d);
	util_digest_format(d, digest);
	return fetch_blob_push(fc, ref, data, len, digest);
}

/* The manifest pushed under the signature tag: config blob and layers. Returns a malloc'd body or
 * NULL (strata_err set). */
static char *sig_manifest_body(struct fetch_client *fc, const struct fetch_ref *ref, json_t *layers,
			       int *rc)
{
	char cdigest[UTIL_DIGEST_STR_LEN], *config = cosign_config(layers), *body = NULL;
	json_t *m;

	if (!config) {
		*rc = -ENOMEM;
		return NULL;
	}
	*rc = push_blob(fc, ref, config, strlen(config), cdigest);
	if (*rc == 0) {
		m = json_pack("{s:i, s:s, s:{s:s, s:I, s:s}, s:O}", "schemaVersion", 2, "mediaType",
			      FETCH_MT_OCI_MANIFEST, "config", "mediaType", COSIGN_CONFIG_MT,
			      "size", (json_int_t)strlen(config), "digest", cdigest, "layers",
			      layers);
		body = m ? json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		json_decref(m);
		if (!body)
			*rc = -ENOMEM;
	}
	free(config);
	return body;
}

int sign_push(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
	      const struct util_key *key)
{
	char *identity = NULL, *payload = NULL, *b64 = NULL, *body = NULL,
	     *tag = cosign_tag(digest);
	char pdigest[UTIL_DIGEST_STR_LEN];
	uint8_t *sig = NULL;
	size_t siglen = 0;
	json_t *old = NULL, *layers = NULL;
	int rc;

	if (!tag)
		return strata_err(EINVAL, "cannot sign %.80s: not a sha256 digest", digest);
	if (asprintf(&identity, "%s/%s", ref->domain, ref->path) < 0) {
		identity = NULL;
		rc = -ENOMEM;
		goto out;
	}
	payload = cosign_payload(identity, digest);
	rc = payload ? util_key_sign(key, payload, strlen(payload), &sig, &siglen) : -ENOMEM;
	if (rc == 0) {
		b64 = util_base64_encode(sig, siglen);
		rc = b64 ? push_blob(fc, ref, payload, strlen(payload), pdigest) : -ENOMEM;
	}
	if (rc < 0)
		goto out;
	/* Keep the signatures already there (other keys), as cosign does. */
	rc = sig_manifest(fc, ref, digest, &old);
	if (rc == -ENOENT || rc == -EBADMSG) {
		strata_err_clear();
		rc = 0;
	}
	if (rc < 0)
		goto out;
	layers = json_is_array(json_object_get(old, "layers")) ?
			 json_deep_copy(json_object_get(old, "layers")) :
			 json_array();
	rc = layers ? cosign_add_layer(layers, pdigest, strlen(payload), b64) : -ENOMEM;
	if (rc == 0)
		body = sig_manifest_body(fc, ref, layers, &rc);
	if (rc == 0)
		rc = fetch_manifest_push(fc, ref, tag, FETCH_MT_OCI_MANIFEST, body, strlen(body));
out:
	json_decref(old);
	json_decref(layers);
	free(identity);
	free(payload);
	free(sig);
	free(b64);
	free(body);
	free(tag);
	return rc;
}

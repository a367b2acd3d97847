/* SPDX-License-Identifier: Apache-2.0 */
/* The cosign signature format: simple-signing payloads and signature manifests, checked. */
#include "cosign.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/ecdsa.h"
#include "util/log.h"
#include "util/mem.h"

char *cosign_tag(const char *digest)
{
	char *tag = NULL;
	uint8_t d[UTIL_SHA256_LEN];

	if (strncmp(digest, "sha256:", 7) != 0 || util_digest_parse(digest, d) < 0) {
		strata_err_clear();
		return NULL;
	}
	if (asprintf(&tag, "sha256-%s.sig", digest + 7) < 0)
		return NULL;
	return tag;
}

char *cosign_payload(const char *identity, const char *digest)
{
	json_t *o = json_pack("{s:{s:{s:s}, s:{s:s}, s:s}, s:n}", "critical", "identity",
			      "docker-reference", identity, "image", "docker-manifest-digest",
			      digest, "type", COSIGN_TYPE, "optional");
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}

/* Whether docker-reference ref names repository domain/path, with an optional tag or digest. */
static int identity_matches(const char *ref, const char *domain, const char *path)
{
	const char *domains[2] = { domain,
				   strcmp(domain, "docker.io") == 0 ? "index.docker.io" : NULL };

	for (size_t i = 0; i < 2 && domains[i]; i++) {
		size_t dl = strlen(domains[i]), pl = strlen(path);

		if (strncmp(ref, domains[i], dl) != 0 || ref[dl] != '/' ||
		    strncmp(ref + dl + 1, path, pl) != 0)
			continue;
		ref += dl + 1 + pl;
		return *ref == '\0' || *ref == ':' || *ref == '@';
	}
	return 0;
}

int cosign_payload_check(const char *payload, size_t len, const char *digest, const char *domain,
			 const char *path)
{
	json_error_t jerr;
	json_t *o = json_loadb(payload, len, 0, &jerr);
	const char *type = NULL, *signed_digest = NULL, *identity = NULL;
	int rc = 0;

	if (!o || json_unpack(o, "{s:{s:{s:s}, s:{s:s}, s:s}}", "critical", "identity",
			      "docker-reference", &identity, "image", "docker-manifest-digest",
			      &signed_digest, "type", &type) < 0)
		rc = strata_err(EBADMSG, "the signed payload is no cosign simple-signing payload");
	else if (strcmp(type, COSIGN_TYPE) != 0)
		rc = strata_err(EBADMSG, "the signed payload has type '%.64s', not '%s'", type,
				COSIGN_TYPE);
	else if (strcmp(signed_digest, digest) != 0)
		rc = strata_err(EBADMSG, "the signature is for %.80s, not %s", signed_digest,
				digest);
	else if (!identity_matches(identity, domain, path))
		rc = strata_err(EBADMSG, "the signature names repository '%.200s', not %s/%s",
				identity, domain, path);
	json_decref(o);
	return rc;
}

size_t cosign_signatures(json_t *m, struct cosign_sig sigs[COSIGN_MAX_SIGNATURES])
{
	size_t i, n = 0;
	json_t *d;

	json_array_foreach (json_object_get(m, "layers"), i, d) {
		const char *mt = json_string_value(json_object_get(d, "mediaType"));
		const char *dg = json_string_value(json_object_get(d, "digest"));
		json_t *size = json_object_get(d, "size");
		const char *sig = json_string_value(
			json_object_get(json_object_get(d, "annotations"), COSIGN_SIG_ANNOTATION));

		if (n == COSIGN_MAX_SIGNATURES)
			break;
		if (!mt || strcmp(mt, COSIGN_PAYLOAD_MT) != 0 || !dg || !sig ||
		    !json_is_integer(size) || json_integer_value(size) <= 0 ||
		    json_integer_value(size) > COSIGN_MAX_PAYLOAD)
			continue;
		sigs[n].payload_digest = dg;
		sigs[n].payload_size = (uint64_t)json_integer_value(size);
		sigs[n].signature = sig;
		n++;
	}
	return n;
}

int cosign_verify(const char *payload, size_t len, const char *signature, const char *digest,
		  const char *domain, const char *path, struct util_key *const *keys, size_t nkeys,
		  char signer[UTIL_DIGEST_STR_LEN])
{
	uint8_t *sig = NULL;
	size_t siglen = 0;
	int rc = cosign_payload_check(payload, len, digest, domain, path);

	if (rc < 0)
		return rc;
	rc = util_base64_decode(signature, strlen(signature), &sig, &siglen);
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0)
		return strata_err(EBADMSG, "the signature is not base64");
	rc = strata_err(EBADMSG, "no trusted key verifies the signature");
	for (size_t i = 0; i < nkeys; i++) {
		if (util_key_verify(keys[i], payload, len, sig, siglen) == 0) {
			util_key_fingerprint(keys[i], signer);
			strata_err_clear();
			rc = 0;
			break;
		}
		strata_err(EBADMSG, "no trusted key verifies the signature");
	}
	free(sig);
	return rc;
}

char *cosign_config(json_t *layers)
{
	json_t *diff_ids = json_array(), *o, *d;
	char *s = NULL;
	size_t i;

	if (!diff_ids)
		return NULL;
	json_array_foreach (layers, i, d) {
		json_t *dg = json_object_get(d, "digest");

		if (json_is_string(dg))
			json_array_append(diff_ids, dg);
	}
	o = json_pack("{s:s, s:s, s:[{s:s}], s:s, s:{s:s, s:o}, s:{}}", "architecture", "",
		      "created", "0001-01-01T00:00:00Z", "history", "created",
		      "0001-01-01T00:00:00Z", "os", "", "rootfs", "type", "layers", "diff_ids",
		      diff_ids, "config");
	if (o)
		s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return s;
}

int cosign_add_layer(json_t *layers, const char *payload_digest, uint64_t payload_size,
		     const char *signature)
{
	size_t i;
	json_t *d;

	json_array_foreach (layers, i, d) {
		const char *dg = json_string_value(json_object_get(d, "digest"));
		const char *sig = json_string_value(
			json_object_get(json_object_get(d, "annotations"), COSIGN_SIG_ANNOTATION));

		if (dg && sig && strcmp(dg, payload_digest) == 0 && strcmp(sig, signature) == 0)
			return 0;
	}
	d = json_pack("{s:s, s:I, s:s, s:{s:s}}", "mediaType", COSIGN_PAYLOAD_MT, "size",
		      (json_int_t)payload_size, "digest", payload_digest, "annotations",
		      COSIGN_SIG_ANNOTATION, signature);
	return d && json_array_append_new(layers, d) == 0 ? 0 : -ENOMEM;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The cosign signature format (sigstore/cosign specs/SIGNATURE_SPEC.md): the simple-signing
 * payload, the signature manifest stored under tag "sha256-<hex>.sig", and checking them. No
 * network: tools/sign.c fetches and pushes. */
#ifndef STRATA_TOOLS_COSIGN_H
#define STRATA_TOOLS_COSIGN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/sha256.h"

struct util_key;

#define COSIGN_PAYLOAD_MT     "application/vnd.dev.cosign.simplesigning.v1+json"
#define COSIGN_CONFIG_MT      "application/vnd.oci.image.config.v1+json"
#define COSIGN_SIG_ANNOTATION "dev.cosignproject.cosign/signature"
#define COSIGN_TYPE	      "cosign container image signature"
#define COSIGN_MAX_PAYLOAD    (64u << 10) /* a larger payload is refused unread */
#define COSIGN_MAX_SIGNATURES 64	  /* signature layers looked at in one manifest */

/* The tag holding the signatures of manifest digest ("sha256:<hex>" -> "sha256-<hex>.sig").
 * Returns a malloc'd string, or NULL for a digest that is no sha256 digest or out of memory. */
char *cosign_tag(const char *digest);

/* The simple-signing payload signing manifest digest for repository identity ("domain/path"):
 * {"critical":{"identity":{"docker-reference":ID},"image":{"docker-manifest-digest":DIGEST},
 * "type":COSIGN_TYPE},"optional":null}. Returns a malloc'd NUL-terminated string or NULL. */
char *cosign_payload(const char *identity, const char *digest);

/*
 * Checks a payload (len bytes, borrowed): JSON in the simple-signing layout, critical.type
 * COSIGN_TYPE, critical.image.docker-manifest-digest equal to digest, and
 * critical.identity.docker-reference naming the repository domain/path (for docker.io also
 * "index.docker.io/path", as cosign writes it; a tag or digest after it is allowed). Returns 0, or
 * -EBADMSG with strata_err saying what does not match.
 */
int cosign_payload_check(const char *payload, size_t len, const char *digest, const char *domain,
			 const char *path);

/* One signature of a signature manifest: its payload blob and base64 signature (borrowed from
 * the manifest's JSON). */
struct cosign_sig {
	const char *payload_digest;
	uint64_t payload_size;
	const char *signature;
};

/*
 * Lists the signatures of a parsed signature manifest m (borrowed): its layers of media type
 * COSIGN_PAYLOAD_MT with a digest, a size up to COSIGN_MAX_PAYLOAD and the signature annotation,
 * at most COSIGN_MAX_SIGNATURES (the rest are ignored). Returns how many were written to sigs.
 */
size_t cosign_signatures(json_t *m, struct cosign_sig sigs[COSIGN_MAX_SIGNATURES]);

/*
 * Verifies one signature: payload (len bytes) must pass cosign_payload_check for digest and the
 * repository, and signature (base64 of a DER ECDSA signature over sha256(payload)) must verify
 * with one of keys[0..nkeys). Returns 0 with the verifying key's fingerprint in signer, -EBADMSG
 * with strata_err set (a bad payload, bad base64, or no key verifies it), or -ENOMEM.
 */
int cosign_verify(const char *payload, size_t len, const char *signature, const char *digest,
		  const char *domain, const char *path, struct util_key *const *keys, size_t nkeys,
		  char signer[UTIL_DIGEST_STR_LEN]);

/* The signature's config blob (what cosign writes: an image config whose rootfs lists the payload
 * digests of m's layers). Returns a malloc'd string or NULL. */
char *cosign_config(json_t *layers);

/*
 * Adds a signature layer {COSIGN_PAYLOAD_MT, payload digest and size, annotation: signature} to
 * layers (a JSON array of the signature manifest's layers, possibly from an existing manifest; an
 * identical layer is not added twice). Returns 0 or -ENOMEM.
 */
int cosign_add_layer(json_t *layers, const char *payload_digest, uint64_t payload_size,
		     const char *signature);

#endif

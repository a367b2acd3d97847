/* SPDX-License-Identifier: Apache-2.0 */
/* Cosign signatures of index artifacts in the registry: verifying them on a node (artifact_trust =
 * "signed") and writing them (strata index --push --sign KEY). */
#ifndef STRATA_TOOLS_SIGN_H
#define STRATA_TOOLS_SIGN_H

#include <stddef.h>

#include "util/sha256.h"

struct fetch_client;
struct fetch_ref;
struct util_key;

/*
 * Checks that the manifest `digest` (an index artifact) in ref's repository carries a cosign
 * signature, stored under tag cosign_tag(digest) in that repository, whose payload names digest
 * and the repository and verifies with one of keys[0..nkeys). Returns 0 with the signing key's
 * fingerprint in signer; -ENOENT when there is no signature (strata_err says so); -EBADMSG when no
 * signature verifies (strata_err says why, for the last one tried); or a fetch error.
 */
int sign_verify(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
		struct util_key *const *keys, size_t nkeys, char signer[UTIL_DIGEST_STR_LEN]);

/*
 * Signs manifest `digest` in ref's repository with private key key and pushes the signature as
 * cosign does: the simple-signing payload blob, a config blob, and an OCI manifest with the payload
 * as a layer annotated with the base64 signature, tagged cosign_tag(digest) (signatures already
 * there are kept). Returns 0 or negative errno with strata_err set.
 */
int sign_push(struct fetch_client *fc, const struct fetch_ref *ref, const char *digest,
	      const struct util_key *key);

#endif

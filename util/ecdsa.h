/* SPDX-License-Identifier: Apache-2.0 */
/* ECDSA P-256 keys (PEM) through OpenSSL: fingerprints, signing and verifying sha256 signatures. */
#ifndef STRATA_UTIL_ECDSA_H
#define STRATA_UTIL_ECDSA_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define UTIL_KEY_MAX_PEM (64u << 10) /* a key file larger than this is refused */

struct util_key;

/*
 * Parses a PEM public key ("PUBLIC KEY", SubjectPublicKeyInfo, as `openssl ec -pubout` and cosign
 * write it) or, with private set, an unencrypted PEM private key ("EC PRIVATE KEY" or "PRIVATE
 * KEY", as `openssl ecparam -genkey` writes it; never prompts for a passphrase). The key must be
 * ECDSA on P-256. pem (len bytes) is borrowed. Returns 0 and *out (util_key_free), or -EINVAL with
 * strata_err set ("not a PEM public key", "not an ECDSA P-256 key"), or -ENOMEM.
 */
int util_key_parse(const char *pem, size_t len, int private, struct util_key **out);

/* util_key_parse of the file at path (at most UTIL_KEY_MAX_PEM bytes). Errors name the path:
 * -ENOENT, -EACCES ... for the file, -EFBIG, and util_key_parse's. */
int util_key_load(const char *path, int private, struct util_key **out);

/* The key's fingerprint: "sha256:<hex>" of its DER SubjectPublicKeyInfo (the same for a private
 * key and its public key). */
void util_key_fingerprint(const struct util_key *k, char out[UTIL_DIGEST_STR_LEN]);

/* Verifies sig (DER ECDSA, siglen bytes) over sha256(data). Returns 0 when it is a valid
 * signature by k, -EBADMSG when not (strata_err set), -ENOMEM. Thread-safe. */
int util_key_verify(const struct util_key *k, const void *data, size_t len, const uint8_t *sig,
		    size_t siglen);

/* Signs sha256(data) with private key k: a DER ECDSA signature in *sig (malloc'd, *siglen bytes).
 * Returns 0, -EINVAL for a public key, or -EIO with OpenSSL's message. */
int util_key_sign(const struct util_key *k, const void *data, size_t len, uint8_t **sig,
		  size_t *siglen);

/* Frees a key (NULL ok). */
void util_key_free(struct util_key *k);

#endif

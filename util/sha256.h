/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 through OpenSSL EVP (SHA-NI where the CPU has it) and "sha256:<hex>" digest strings. */
#ifndef STRATA_UTIL_SHA256_H
#define STRATA_UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define UTIL_SHA256_LEN 32
/* "sha256:" + 64 hex + NUL */
#define UTIL_DIGEST_STR_LEN 72

struct util_sha256;

/* Returns a new context, or NULL on allocation failure. Free with util_sha256_free (NULL ok). */
struct util_sha256 *util_sha256_new(void);
void util_sha256_update(struct util_sha256 *c, const void *data, size_t len);
/* Writes the digest and resets the context for reuse. */
void util_sha256_final(struct util_sha256 *c, uint8_t out[UTIL_SHA256_LEN]);
void util_sha256_free(struct util_sha256 *c);

/* One-shot digest of a buffer. Thread-safe. */
void util_sha256(const void *data, size_t len, uint8_t out[UTIL_SHA256_LEN]);

/* Writes "sha256:<64 lowercase hex>" into out (UTIL_DIGEST_STR_LEN bytes). */
void util_digest_format(const uint8_t d[UTIL_SHA256_LEN], char out[UTIL_DIGEST_STR_LEN]);

/* Parses "sha256:<64 hex>" (lower or upper case hex). Returns 0, or -EINVAL with strata_err set. */
int util_digest_parse(const char *s, uint8_t out[UTIL_SHA256_LEN]);

/* Parses digest s and writes its canonical form (lowercase hex) into out. Returns 0 or -EINVAL
 * with strata_err set. */
int util_digest_normalize(const char *s, char out[UTIL_DIGEST_STR_LEN]);

/* The value of one hex digit (either case), or -1. */
int util_hexval(char c);

/* Writes 2*len lowercase hex characters and a NUL into out. */
void util_hex(const uint8_t *in, size_t len, char *out);

#endif

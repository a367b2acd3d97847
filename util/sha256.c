/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 helpers over OpenSSL EVP and digest string formatting. */
#include "sha256.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "log.h"

struct util_sha256 {
	EVP_MD_CTX *md;
};

struct util_sha256 *util_sha256_new(void)
{
	struct util_sha256 *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->md = EVP_MD_CTX_new();
	if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c->md);
		free(c);
		return NULL;
	}
	return c;
}

void util_sha256_update(struct util_sha256 *c, const void *data, size_t len)
{
	int ok = EVP_DigestUpdate(c->md, data, len);

	(void)ok;
}

void util_sha256_final(struct util_sha256 *c, uint8_t out[UTIL_SHA256_LEN])
{
	unsigned int n = 0;

	EVP_DigestFinal_ex(c->md, out, &n);
	EVP_DigestInit_ex(c->md, EVP_sha256(), NULL);
}

void util_sha256_free(struct util_sha256 *c)
{
	if (!c)
		return;
	EVP_MD_CTX_free(c->md);
	free(c);
}

void util_sha256(const void *data, size_t len, uint8_t out[UTIL_SHA256_LEN])
{
	unsigned int n = 0;

	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

void util_hex(const uint8_t *in, size_t len, char *out)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * len] = '\0';
}

void util_digest_format(const uint8_t d[UTIL_SHA256_LEN], char out[UTIL_DIGEST_STR_LEN])
{
	memcpy(out, "sha256:", 7);
	util_hex(d, UTIL_SHA256_LEN, out + 7);
}

int util_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int util_digest_parse(const char *s, uint8_t out[UTIL_SHA256_LEN])
{
	if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 2 * UTIL_SHA256_LEN)
		return strata_err(EINVAL, "invalid digest '%.80s' (want sha256:<64 hex>)", s);
	for (int i = 0; i < UTIL_SHA256_LEN; i++) {
		int hi = util_hexval(s[7 + 2 * i]);
		int lo = util_hexval(s[8 + 2 * i]);

		if (hi < 0 || lo < 0)
			return strata_err(EINVAL, "invalid digest '%.80s' (want sha256:<64 hex>)",
					  s);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int util_digest_normalize(const char *s, char out[UTIL_DIGEST_STR_LEN])
{
	uint8_t d[UTIL_SHA256_LEN];
	int rc = util_digest_parse(s, d);

	if (rc == 0)
		util_digest_format(d, out);
	return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* ECDSA P-256 keys through OpenSSL EVP: PEM parsing, fingerprints, sha256 signatures. */
#include "ecdsa.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"

struct util_key {
	EVP_PKEY *pkey;
	int private;
	char fingerprint[UTIL_DIGEST_STR_LEN];
};

/* OpenSSL's last error as text (the queue is cleared). */
static const char *ssl_error(char *buf, size_t cap)
{
	unsigned long e = ERR_get_error();

	if (!e)
		snprintf(buf, cap, "unknown OpenSSL error");
	else
		ERR_error_string_n(e, buf, cap);
	ERR_clear_error();
	return buf;
}

/* A passphrase callback that gives none: an encrypted key fails instead of prompting. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static int is_p256(EVP_PKEY *pkey)
{
	char group[64] = "";

	if (!EVP_PKEY_is_a(pkey, "EC") ||
	    !EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL))
		return 0;
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

int util_key_parse(const char *pem, size_t len, int private, struct util_key **out)
{
	BIO *bio = len <= UTIL_KEY_MAX_PEM ? BIO_new_mem_buf(pem, (int)len) : NULL;
	struct util_key *k = NULL;
	unsigned char *der = NULL;
	uint8_t d[UTIL_SHA256_LEN];
	char err[256];
	int n, rc;

	*out = NULL;
	if (!bio)
		return len > UTIL_KEY_MAX_PEM ? strata_err(EINVAL, "key too large") : -ENOMEM;
	k = calloc(1, sizeof(*k));
	if (!k) {
		rc = -ENOMEM;
		goto out;
	}
	k->private = private;
	k->pkey = private ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) :
			    PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (!k->pkey) {
		rc = strata_err(EINVAL, "not a PEM %s key (%s)",
				private ? "unencrypted private" : "public",
				ssl_error(err, sizeof(err)));
		goto out;
	}
	if (!is_p256(k->pkey)) {
		rc = strata_err(EINVAL, "not an ECDSA P-256 key");
		goto out;
	}
	n = i2d_PUBKEY(k->pkey, &der);
	if (n <= 0) {
		rc = strata_err(EINVAL, "cannot encode the public key (%s)",
				ssl_error(err, sizeof(err)));
		goto out;
	}
	util_sha256(der, (size_t)n, d);
	util_digest_format(d, k->fingerprint);
	*out = k;
	k = NULL;
	rc = 0;
out:
	OPENSSL_free(der);
	BIO_free(bio);
	util_key_free(k);
	ERR_clear_error();
	return rc;
}

int util_key_load(const char *path, int private, struct util_key **out)
{
	FILE *fp = fopen(path, "re");
	char *buf;
	size_t n;
	int rc;

	*out = NULL;
	if (!fp)
		return strata_err(errno, "key %s: %s", path, strerror(errno));
	buf = malloc(UTIL_KEY_MAX_PEM + 1);
	if (!buf) {
		fclose(fp);
		return -ENOMEM;
	}
	n = fread(buf, 1, UTIL_KEY_MAX_PEM + 1, fp);
	if (ferror(fp))
		rc = strata_err(EIO, "key %s: read error", path);
	else if (n > UTIL_KEY_MAX_PEM)
		rc = strata_err(EFBIG, "key %s: larger than %u bytes", path, UTIL_KEY_MAX_PEM);
	else
		rc = util_key_parse(buf, n, private, out);
	fclose(fp);
	explicit_bzero(buf, UTIL_KEY_MAX_PEM + 1); /* a private key's bytes */
	free(buf);
	if (rc == -EINVAL)
		strata_err_prefix(EINVAL, "key %s", path);
	return rc;
}

void util_key_fingerprint(const struct util_key *k, char out[UTIL_DIGEST_STR_LEN])
{
	memcpy(out, k->fingerprint, UTIL_DIGEST_STR_LEN);
}

int util_key_verify(const struct util_key *k, const void *data, size_t len, const uint8_t *sig,
		    size_t siglen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
	     EVP_DigestVerify(ctx, sig, siglen, data, len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok ? 0 :
		    strata_err(EBADMSG, "the signature does not verify with key %s",
			       k->fingerprint);
}

int util_key_sign(const struct util_key *k, const void *data, size_t len, uint8_t **sig,
		  size_t *siglen)
{
	EVP_MD_CTX *ctx;
	char err[256];
	size_t n = 0;
	int rc = 0;

	*sig = NULL;
	*siglen = 0;
	if (!k->private)
		return strata_err(EINVAL, "signing needs a private key");
	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) != 1 ||
	    EVP_DigestSign(ctx, NULL, &n, data, len) != 1) {
		rc = strata_err(EIO, "signing: %s", ssl_error(err, sizeof(err)));
		goto out;
	}
	*sig = malloc(n);
	if (!*sig) {
		rc = -ENOMEM;
		goto out;
	}
	if (EVP_DigestSign(ctx, *sig, &n, data, len) != 1) {
		rc = strata_err(EIO, "signing: %s", ssl_error(err, sizeof(err)));
		free(*sig);
		*sig = NULL;
		goto out;
	}
	*siglen = n;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

void util_key_free(struct util_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the cosign signature format (tools/cosign.c) and ECDSA P-256 keys (util/ecdsa.c):
 * payloads, their checks, signing and verifying, the signature manifest's layers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/cosign.h"
#include "util/ecdsa.h"
#include "util/log.h"
#include "util/mem.h"

/* Test keys made with `openssl ecparam -name prime256v1 -genkey -noout` and `openssl ec -pubout`
 * (for these tests only). */
static const char KEY1[] = "-----BEGIN EC PRIVATE KEY-----\n"
			   "MHcCAQEEIJrAW1IMrL5By4ZGWwxQ7HLvWfnZ4PcyDZIL/QFyxrFsoAoGCCqGSM49\n"
			   "AwEHoUQDQgAE5Vq2Er0of0ls6EaZHgXMnrkVYzTb+anqhhc+O8dOSxbjyhoUOVEn\n"
			   "pTgjM9RT2hwkZt8anf3RfHkwNN240Ri7nA==\n"
			   "-----END EC PRIVATE KEY-----\n";
static const char PUB1[] = "-----BEGIN PUBLIC KEY-----\n"
			   "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5Vq2Er0of0ls6EaZHgXMnrkVYzTb\n"
			   "+anqhhc+O8dOSxbjyhoUOVEnpTgjM9RT2hwkZt8anf3RfHkwNN240Ri7nA==\n"
			   "-----END PUBLIC KEY-----\n";
static const char PUB2[] = "-----BEGIN PUBLIC KEY-----\n"
			   "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC4t89JtBUY9IElL4cDT9Bpg8/mIA\n"
			   "3nAC0AYau3VksJR1gTCijamZPDdHeSRxcipiDLlleFRfS4FnL+ez8rbiuA==\n"
			   "-----END PUBLIC KEY-----\n";

#define DIGEST "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define OTHER  "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static void test_tag_and_payload(void **state)
{
	char *tag, *pl;

	(void)state;
	tag = cosign_tag(DIGEST);
	assert_string_equal(
		tag, "sha256-1111111111111111111111111111111111111111111111111111111111111111.sig");
	free(tag);
	assert_null(cosign_tag("sha512:00"));
	assert_null(cosign_tag("sha256:xyz"));

	pl = cosign_payload("registry.example/team/app", DIGEST);
	assert_non_null(pl);
	assert_string_equal(pl,
			    "{\"critical\":{\"identity\":{\"docker-reference\":"
			    "\"registry.example/team/app\"},\"image\":{\"docker-manifest-digest\":"
			    "\"" DIGEST "\"},\"type\":\"cosign container image signature\"},"
			    "\"optional\":null}");
	assert_int_equal(cosign_payload_check(pl, strlen(pl), DIGEST, "registry.example",
					      "team/app"),
			 0);
	/* another digest, another repository, a prefix of the repository */
	assert_int_equal(cosign_payload_check(pl, strlen(pl), OTHER, "registry.example",
					      "team/app"),
			 -EBADMSG);
	assert_non_null(strstr(strata_errmsg(-EBADMSG), "not " OTHER));
	assert_int_equal(cosign_payload_check(pl, strlen(pl), DIGEST, "registry.example",
					      "team/evil"),
			 -EBADMSG);
	assert_int_equal(cosign_payload_check(pl, strlen(pl), DIGEST, "registry.example",
					      "team/ap"),
			 -EBADMSG);
	assert_int_equal(cosign_payload_check(pl, strlen(pl), DIGEST, "other.example", "team/app"),
			 -EBADMSG);
	free(pl);
	/* a tag after the repository is allowed; docker.io also as index.docker.io */
	pl = cosign_payload("index.docker.io/library/x:1", DIGEST);
	assert_int_equal(cosign_payload_check(pl, strlen(pl), DIGEST, "docker.io", "library/x"), 0);
	free(pl);
	/* not a payload: no JSON, another type */
	assert_int_equal(cosign_payload_check("nope", 4, DIGEST, "r", "p"), -EBADMSG);
	{
		const char *t =
			"{\"critical\":{\"identity\":{\"docker-reference\":\"r/p\"},\"image\":"
			"{\"docker-manifest-digest\":\"" DIGEST "\"},\"type\":\"x\"}}";

		assert_int_equal(cosign_payload_check(t, strlen(t), DIGEST, "r", "p"), -EBADMSG);
	}
}

static void test_sign_verify(void **state)
{
	struct util_key *priv = NULL, *pub1 = NULL, *pub2 = NULL;
	char f1[UTIL_DIGEST_STR_LEN], fp[UTIL_DIGEST_STR_LEN], signer[UTIL_DIGEST_STR_LEN];
	char *pl = cosign_payload("r.example/app", DIGEST), *b64;
	uint8_t *sig = NULL;
	size_t siglen = 0;

	(void)state;
	assert_int_equal(util_key_parse(KEY1, strlen(KEY1), 1, &priv), 0);
	assert_int_equal(util_key_parse(PUB1, strlen(PUB1), 0, &pub1), 0);
	assert_int_equal(util_key_parse(PUB2, strlen(PUB2), 0, &pub2), 0);
	{
		struct util_key *k = NULL;

		/* a public key where a private one is wanted; not PEM */
		assert_int_equal(util_key_parse(PUB1, strlen(PUB1), 1, &k), -EINVAL);
		assert_int_equal(util_key_parse("junk", 4, 0, &k), -EINVAL);
		assert_null(k);
	}
	util_key_fingerprint(priv, fp);
	util_key_fingerprint(pub1, f1);
	assert_string_equal(fp, f1); /* a private key and its public key: one fingerprint */

	assert_int_equal(util_key_sign(pub1, pl, strlen(pl), &sig, &siglen), -EINVAL);
	assert_int_equal(util_key_sign(priv, pl, strlen(pl), &sig, &siglen), 0);
	assert_int_equal(util_key_verify(pub1, pl, strlen(pl), sig, siglen), 0);
	assert_int_equal(util_key_verify(pub2, pl, strlen(pl), sig, siglen), -EBADMSG);
	b64 = util_base64_encode(sig, siglen);
	{
		struct util_key *one[] = { pub1 }, *two[] = { pub2, pub1 }, *wrong[] = { pub2 };

		assert_int_equal(cosign_verify(pl, strlen(pl), b64, DIGEST, "r.example", "app", one,
					       1, signer),
				 0);
		assert_string_equal(signer, f1);
		assert_int_equal(cosign_verify(pl, strlen(pl), b64, DIGEST, "r.example", "app", two,
					       2, signer),
				 0);
		/* a wrong key, no key, a signature for another digest or repository */
		assert_int_equal(cosign_verify(pl, strlen(pl), b64, DIGEST, "r.example", "app",
					       wrong, 1, signer),
				 -EBADMSG);
		assert_int_equal(cosign_verify(pl, strlen(pl), b64, DIGEST, "r.example", "app", one,
					       0, signer),
				 -EBADMSG);
		assert_int_equal(cosign_verify(pl, strlen(pl), b64, OTHER, "r.example", "app", one,
					       1, signer),
				 -EBADMSG);
		assert_int_equal(cosign_verify(pl, strlen(pl), b64, DIGEST, "r.example", "evil",
					       one, 1, signer),
				 -EBADMSG);
		/* a payload changed after signing; a signature that is not base64 */
		pl[strlen(pl) - 2] = ' ';
		assert_int_equal(cosign_verify(pl, strlen(pl), b64, DIGEST, "r.example", "app", one,
					       1, signer),
				 -EBADMSG);
		assert_int_equal(cosign_verify(pl, strlen(pl), "!!", DIGEST, "r.example", "app",
					       one, 1, signer),
				 -EBADMSG);
	}
	free(b64);
	free(sig);
	free(pl);
	util_key_free(priv);
	util_key_free(pub1);
	util_key_free(pub2);
}

static void test_signature_manifest(void **state)
{
	struct cosign_sig sigs[COSIGN_MAX_SIGNATURES];
	json_t *layers = json_array(), *m;
	char *config;

	(void)state;
	assert_int_equal(cosign_add_layer(layers, DIGEST, 200, "c2ln"), 0);
	assert_int_equal(cosign_add_layer(layers, DIGEST, 200, "c2ln"), 0); /* not twice */
	assert_int_equal(cosign_add_layer(layers, OTHER, 300, "b3RoZXI="), 0);
	assert_int_equal(json_array_size(layers), 2);
	/* layers that are no signature are skipped */
	json_array_append_new(layers, json_pack("{s:s, s:s, s:i}", "mediaType", "x", "digest",
						DIGEST, "size", 1));
	json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:{s:s}}", "mediaType",
						COSIGN_PAYLOAD_MT, "digest", DIGEST, "size",
						(json_int_t)COSIGN_MAX_PAYLOAD + 1, "annotations",
						COSIGN_SIG_ANNOTATION, "eA=="));
	m = json_pack("{s:O}", "layers", layers);
	assert_int_equal(cosign_signatures(m, sigs), 2);
	assert_string_equal(sigs[0].payload_digest, DIGEST);
	assert_int_equal(sigs[0].payload_size, 200);
	assert_string_equal(sigs[0].signature, "c2ln");
	assert_string_equal(sigs[1].payload_digest, OTHER);
	config = cosign_config(layers);
	assert_non_null(config);
	assert_non_null(strstr(config, "\"diff_ids\":[\"" DIGEST "\",\"" OTHER "\""));
	free(config);
	json_decref(m);
	json_decref(layers);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tag_and_payload),
		cmocka_unit_test(test_sign_verify),
		cmocka_unit_test(test_signature_manifest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

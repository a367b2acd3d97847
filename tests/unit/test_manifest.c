/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fetch/manifest_parse.c: kinds, platform choice, and the size and count caps on
 * what a registry sends. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/registry.h"
#include "fetch/registry_i.h"
#include "util/log.h"

#define DG "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const struct fetch_platform amd64 = { "linux", "amd64", NULL };

/* A growable string. */
struct sb {
	char *s;
	size_t len;
};

static void sb_add(struct sb *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	b->s = realloc(b->s, b->len + (size_t)n + 1);
	assert_non_null(b->s);
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* An OCI manifest with nlayers layers of layer_size bytes and a config of config_size. */
static char *manifest(size_t nlayers, const char *layer_size, const char *config_size)
{
	struct sb b = { 0 };

	sb_add(&b,
	       "{\"schemaVersion\":2,\"mediaType\":\"" FETCH_MT_OCI_MANIFEST "\","
	       "\"config\":{\"mediaType\":\"c\",\"digest\":\"" DG "\",\"size\":%s},"
	       "\"layers\":[",
	       config_size);
	for (size_t i = 0; i < nlayers; i++)
		sb_add(&b, "%s{\"mediaType\":\"l\",\"digest\":\"" DG "\",\"size\":%s}",
		       i ? "," : "", layer_size);
	sb_add(&b, "]}");
	return b.s;
}

/* An OCI index with n entries for linux/arm64 and, last, one for linux/amd64 of entry_size. */
static char *oci_index(size_t n, const char *entry_size)
{
	struct sb b = { 0 };

	sb_add(&b, "{\"schemaVersion\":2,\"mediaType\":\"" FETCH_MT_OCI_INDEX "\",\"manifests\":[");
	for (size_t i = 0; i < n; i++)
		sb_add(&b,
		       "{\"mediaType\":\"" FETCH_MT_OCI_MANIFEST "\",\"digest\":\"" DG "\","
		       "\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},");
	sb_add(&b,
	       "{\"mediaType\":\"" FETCH_MT_OCI_MANIFEST "\",\"digest\":\"" DG "\",\"size\":%s,"
	       "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
	       entry_size);
	return b.s;
}

/* fetch_doc_parse of s; the errno, with the message checked to contain want (when given). */
static int parse(const char *s, struct fetch_doc *doc, const char *want)
{
	struct fetch_image *img = calloc(1, sizeof(*img));
	int rc;

	assert_non_null(img);
	rc = fetch_doc_parse(&amd64, "r:t", s, strlen(s), NULL, 0, img, doc);
	if (want) {
		assert_true(rc < 0);
		if (!strstr(strata_errmsg(rc), want))
			fail_msg("'%s' does not say '%s'", strata_errmsg(rc), want);
	}
	fetch_image_free(img);
	strata_err_clear();
	return rc;
}

static void test_manifest_ok(void **state)
{
	struct fetch_doc doc;
	char *m = manifest(2, "0", "7");

	(void)state;
	assert_int_equal(parse(m, &doc, NULL), 0);
	assert_false(doc.is_index);
	assert_int_equal(doc.config_size, 7);
	free(m);
}

static void test_layer_count_cap(void **state)
{
	struct fetch_doc doc;
	char *ok = manifest(FETCH_LAYERS_MAX, "1", "1");
	char *big = manifest(FETCH_LAYERS_MAX + 1, "1", "1");

	(void)state;
	assert_int_equal(parse(ok, &doc, NULL), 0);
	assert_int_equal(parse(big, &doc, "manifest lists 1001 layers, more than the 1000"),
			 -EFBIG);
	free(ok);
	free(big);
}

static void test_descriptor_size_caps(void **state)
{
	struct fetch_doc doc;
	char *m;

	(void)state;
	m = manifest(1, "1099511627776", "1"); /* 1 TiB: the cap itself */
	assert_int_equal(parse(m, &doc, NULL), 0);
	free(m);
	m = manifest(1, "1099511627777", "1");
	assert_int_equal(parse(m, &doc, "layer 0 claims 1099511627777 bytes"), -EFBIG);
	free(m);
	m = manifest(1, "9223372036854775807", "1"); /* near 2^63: no wrap anywhere */
	assert_int_equal(parse(m, &doc, "layer 0 claims"), -EFBIG);
	free(m);
	m = manifest(1, "-1", "1");
	assert_int_equal(parse(m, &doc, "layer 0 has no valid size"), -EBADMSG);
	free(m);
	m = manifest(1, "1", "16777217"); /* config above 16 MiB */
	assert_int_equal(parse(m, &doc, "manifest config claims 16777217 bytes"), -EFBIG);
	free(m);
}

static void test_index_caps(void **state)
{
	struct fetch_doc doc;
	char *ix;

	(void)state;
	ix = oci_index(3, "512");
	assert_int_equal(parse(ix, &doc, NULL), 0);
	assert_true(doc.is_index);
	assert_int_equal(doc.entry_size, 512);
	free(ix);
	ix = oci_index(FETCH_INDEX_ENTRIES_MAX, "1"); /* 1001 entries */
	assert_int_equal(parse(ix, &doc, "index lists 1001 manifests"), -EFBIG);
	free(ix);
	ix = oci_index(1, "4194305"); /* an entry above the manifest cap */
	assert_int_equal(parse(ix, &doc, "index entry claims 4194305 bytes"), -EFBIG);
	free(ix);
}

static void test_document_size_cap(void **state)
{
	struct fetch_image img = { 0 };
	struct fetch_doc doc;
	char *big = calloc(1, FETCH_MANIFEST_MAX + 2);

	(void)state;
	assert_non_null(big);
	memset(big, ' ', FETCH_MANIFEST_MAX + 1);
	assert_int_equal(fetch_doc_parse(&amd64, "r:t", big, FETCH_MANIFEST_MAX + 1, NULL, 0, &img,
					 &doc),
			 -EFBIG);
	free(big);
	strata_err_clear();
}

static void test_nested_index_refused(void **state)
{
	struct fetch_image *img = calloc(1, sizeof(*img));
	struct fetch_doc doc;
	char *ix = oci_index(0, "1");

	(void)state;
	assert_int_equal(fetch_doc_parse(&amd64, "r:t", ix, strlen(ix), NULL, 1, img, &doc),
			 -ENOTSUP);
	assert_non_null(strstr(strata_errmsg(-ENOTSUP), "nested indexes"));
	fetch_image_free(img);
	free(ix);
	strata_err_clear();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manifest_ok),
		cmocka_unit_test(test_layer_count_cap),
		cmocka_unit_test(test_descriptor_size_caps),
		cmocka_unit_test(test_index_caps),
		cmocka_unit_test(test_document_size_cap),
		cmocka_unit_test(test_nested_index_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

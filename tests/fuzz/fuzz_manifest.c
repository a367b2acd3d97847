/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: a registry's manifest or index document, then an image config (fetch/
 * manifest_parse.c), as fetch_resolve() hands them over. Input: one selector byte (bits 0-2: the
 * Content-Type it came with, bit 3: a manifest named by an index entry, bit 4: the client wants a
 * variant), the document, and after a NUL byte the config. */
#include <stdlib.h>
#include <string.h>

#include "fetch/registry.h"
#include "fetch/registry_i.h"
#include "fuzz.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[] = {
		NULL,
		"",
		"application/json",
		FETCH_MT_OCI_MANIFEST,
		FETCH_MT_OCI_INDEX,
		FETCH_MT_DOCKER_MANIFEST,
		FETCH_MT_DOCKER_LIST,
		"application/vnd.docker.distribution.manifest.v1+json"
	};
	struct fetch_platform want = { "linux", "amd64", NULL };
	struct fetch_image *img;
	struct fetch_doc doc;
	const uint8_t *doc_end;
	size_t doc_len;

	if (size < 1 || size > FETCH_MANIFEST_MAX + FETCH_CONFIG_MAX)
		return 0;
	if (data[0] & 16)
		want.variant = "v8";
	doc_end = memchr(data + 1, '\0', size - 1);
	doc_len = doc_end ? (size_t)(doc_end - (data + 1)) : size - 1;
	img = calloc(1, sizeof(*img));
	if (!img)
		return 0;
	if (fetch_doc_parse(&want, "fuzz/ref:tag", (const char *)data + 1, doc_len,
			    types[data[0] & 7], (data[0] >> 3) & 1, img, &doc) == 0 &&
	    !doc.is_index && doc_end) {
		size_t clen = size - 1 - doc_len - 1;

		img->config = malloc(clen + 1);
		if (img->config) {
			memcpy(img->config, doc_end + 1, clen);
			img->config[clen] = '\0';
			img->config_len = clen;
			fetch_config_parse(&want, "fuzz/ref:tag", img);
		}
	}
	fetch_image_free(img);
	strata_err_clear();
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: eStargz footers and TOC members (gzip + tar + JSON), then querying the index. */
#include <stdlib.h>

#include "fuzz.h"
#include "index/estargz.h"
#include "index/layer.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct index_layer *l = NULL;
	uint64_t toc_off = 0, blob_size;
	size_t footer = 0;

	/* the input is the blob's tail: a footer, and the TOC member in front of it */
	if (size >= INDEX_ESTARGZ_LEGACY_FOOTER_SIZE) {
		size_t tail = size < INDEX_ESTARGZ_TAIL ? size : INDEX_ESTARGZ_TAIL;

		index_estargz_footer(data + size - tail, tail, size, &toc_off, &footer);
	}
	/* and, as a whole, a TOC member placed at some offset of a larger blob */
	blob_size = size + (size ? (uint64_t)data[0] << 12 : 0);
	if (index_estargz_build(data, size, blob_size - size, blob_size, &l) == 0) {
		void *enc = NULL;
		size_t len = 0;

		fuzz_query_layer(l);
		if (getenv("FUZZ_DUMP_INDEX") && index_layer_encode(l, &enc, &len) == 0)
			fuzz_dump_index(enc, len);
		free(enc);
	}
	index_layer_free(l);
	strata_err_clear();
	return 0;
}

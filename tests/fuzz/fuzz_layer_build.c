/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: building a layer index from a hostile blob (tar, gzip or zstd), then encoding,
 * decoding and querying it as the read path does. */
#include <stdlib.h>

#include "fuzz.h"
#include "index/decomp.h"
#include "index/layer.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum index_blob kind[] = {
		[INDEX_COMP_NONE] = INDEX_BLOB_TAR,
		[INDEX_COMP_GZIP] = INDEX_BLOB_GZIP,
		[INDEX_COMP_ZSTD] = INDEX_BLOB_ZSTD,
	};
	struct index_build_opts o = { 0 };
	struct index_layer *l = NULL, *back = NULL;
	struct fuzz_mem m;
	void *enc = NULL;
	size_t len = 0;

	o.chunk_size = INDEX_MIN_CHUNK_SIZE;
	o.blob = kind[index_compression_detect(data, size)];
	o.span = 256; /* many checkpoints */
	if (index_layer_build_blob(fuzz_mem_reader(&m, data, size, 0), &o, &l) == 0) {
		fuzz_query_layer(l);
		if (index_layer_encode(l, &enc, &len) == 0) {
			fuzz_dump_index(enc, len);
			if (index_layer_decode(enc, len, &back) == 0)
				fuzz_query_layer(back);
		}
	}
	index_layer_free(back);
	index_layer_free(l);
	free(enc);
	strata_err_clear();
	return 0;
}

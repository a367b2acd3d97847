/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: decoding a stored or downloaded layer index record, then querying it. */
#include "fuzz.h"
#include "index/layer.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct index_layer *l = NULL;

	if (index_layer_decode(data, size, &l) == 0)
		fuzz_query_layer(l);
	index_layer_free(l);
	strata_err_clear();
	return 0;
}

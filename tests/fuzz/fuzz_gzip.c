/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: gzip inflation with checkpoints (zran), then restarting from every checkpoint. */
#include <stdlib.h>

#include "fuzz.h"
#include "index/zran.h"
#include "util/log.h"

#define OUT_MAX (8u << 20) /* a gzip bomb is cut here: the target is the decoder, not the bomb */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct index_zran *z = NULL;
	struct fuzz_mem m;
	uint8_t buf[16384], out[4096];
	uint64_t total = 0;
	ssize_t n = 0;

	if (index_zran_new(fuzz_mem_reader(&m, data, size, 0), 64, &z) < 0)
		return 0;
	while (total < OUT_MAX && (n = index_zran_read(z, buf, sizeof(buf))) > 0)
		total += (uint64_t)n;
	for (size_t i = 0; i < index_zran_count(z); i++) {
		const struct index_zran_cp *cp = index_zran_cp(z, i);
		uint64_t start = cp->coff - (cp->bits ? 1 : 0);

		if (cp->coff == 0 && cp->bits)
			continue;
		if (start > size)
			break;
		index_zran_extract(cp, cp->wlen ? index_zran_window(z, i) : NULL, data + start,
				   size - start, 0, out, sizeof(out));
	}
	index_zran_free(z);
	strata_err_clear();
	return 0;
}

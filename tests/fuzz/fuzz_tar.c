/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: the streaming tar reader (ustar, GNU, PAX headers and member data). */
#include <stdlib.h>

#include "fuzz.h"
#include "index/tar.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_mem m;
	struct index_tar *t = NULL;
	const struct index_tar_entry *e;
	uint8_t buf[4096];
	/* short reads of odd sizes reach the reader's refill paths */
	size_t step = size ? (size_t)(data[0] % 4) * 509 : 0;

	if (index_tar_open(fuzz_mem_reader(&m, data, size, step), &t) < 0)
		return 0;
	while (index_tar_next(t, &e) > 0) {
		ssize_t n;

		/* the reader never hands out more member data than the input holds */
		do
			n = index_tar_read(t, buf, sizeof(buf));
		while (n > 0);
		if (n < 0)
			break;
	}
	index_tar_free(t);
	strata_err_clear();
	return 0;
}

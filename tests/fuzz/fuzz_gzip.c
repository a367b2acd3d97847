/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: gzip inflation with checkpoints (zran), then restarting from every checkpoint, at
 * once and fed in odd pieces (as a span read gets them from the network): both must agree. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "index/zran.h"
#include "util/log.h"

#define OUT_MAX (8u << 20) /* a gzip bomb is cut here: the target is the decoder, not the bomb */

/* Decodes p[0..n) from cp fed in pieces of 1 to 97 bytes with room of 1 to 291 bytes; when the
 * one-shot extraction gave want (ok), the pieces must give the same bytes. */
static void streamed(const struct index_zran_cp *cp, const uint8_t *w, const uint8_t *p, size_t n,
		     const uint8_t *want, size_t len, int ok)
{
	struct index_zran_dec *d;
	uint8_t got[4096];
	size_t have = 0, step = 1;

	if (index_zran_dec_new(cp, w, &d) < 0)
		return;
	while (have < len) {
		size_t piece = n < step ? n : step, before = piece, made;
		size_t room = len - have < 3 * step ? len - have : 3 * step;
		int rc = index_zran_dec_feed(d, &p, &piece, got + have, room, &made);

		n -= before - piece;
		have += made;
		if (rc != 0 || (made == 0 && piece == before && n == 0))
			break;
		if (made == 0 && piece == before && before > 0)
			abort(); /* input and room, yet no progress and no error */
		step = step * 5 % 97 + 1;
	}
	if (ok && (have != len || memcmp(got, want, len) != 0))
		abort();
	index_zran_dec_free(d);
}

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
		int ok = index_zran_extract(cp, cp->wlen ? index_zran_window(z, i) : NULL,
					    data + start, size - start, 0, out, sizeof(out)) == 0;

		streamed(cp, cp->wlen ? index_zran_window(z, i) : NULL, data + start, size - start,
			 out, sizeof(out), ok);
	}
	index_zran_free(z);
	strata_err_clear();
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* What the fuzz targets ask of an index they built or decoded: the read path's questions. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"
#include "index/layer.h"

void fuzz_query_layer(const struct index_layer *l)
{
	uint32_t n = index_layer_ninodes(l);

	for (uint32_t ino = 0; ino < n; ino++) {
		const struct index_inode *in = index_layer_inode(l, ino);

		if ((in->mode & 0170000) == 0040000) {
			for (uint32_t i = 0; i < in->count; i++) {
				const struct index_dirent *d = index_layer_dirent(l, in->first + i);

				index_layer_lookup(l, ino, index_layer_str(l, d->name_off),
						   d->name_len);
			}
		} else if ((in->mode & 0170000) == 0100000) {
			for (uint32_t i = 0; i < in->count; i++) {
				const struct index_chunk *c = index_layer_chunk(l, in->first + i);
				struct index_span s;

				index_layer_span(l, c->offset, c->offset + c->size, &s);
			}
		}
	}
	for (uint32_t k = 0; k < index_layer_nchunks(l); k++)
		index_layer_chunk_by_offset(l, k);
}

void fuzz_dump_index(const void *enc, size_t len)
{
	const char *dir = getenv("FUZZ_DUMP_INDEX");
	static unsigned n;
	char path[4096];
	FILE *f;

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/index%u", dir, n++);
	f = fopen(path, "wb");
	if (f) {
		fwrite(enc, 1, len, f);
		fclose(f);
	}
}

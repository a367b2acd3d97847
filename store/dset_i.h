/* SPDX-License-Identifier: Apache-2.0 */
/* A set of 32-byte digests for the maintenance policies (gc, fsck, quota eviction). */
#ifndef STRATA_STORE_DSET_I_H
#define STRATA_STORE_DSET_I_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/layer.h"

/* An open-addressing set of 32-byte digests (sha256 output is uniform: the first bytes hash). */
struct dset {
	uint8_t (*slot)[32];
	uint8_t *used;
	size_t cap, n;
};

static inline size_t dset_pos(const uint8_t d[32], size_t cap)
{
	uint64_t h;

	memcpy(&h, d, sizeof(h));
	return (size_t)h & (cap - 1);
}

static inline int dset_has(const struct dset *s, const uint8_t d[32])
{
	if (!s->cap)
		return 0;
	for (size_t i = dset_pos(d, s->cap);; i = (i + 1) & (s->cap - 1)) {
		if (!s->used[i])
			return 0;
		if (memcmp(s->slot[i], d, 32) == 0)
			return 1;
	}
}

/* Returns 1 when added, 0 when already present, -ENOMEM. */
static inline int dset_add(struct dset *s, const uint8_t d[32])
{
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		struct dset g = { 0 };

		g.cap = s->cap ? s->cap * 2 : 1024;
		g.slot = malloc(g.cap * sizeof(*g.slot));
		g.used = calloc(g.cap, 1);
		if (!g.slot || !g.used) {
			free(g.slot);
			free(g.used);
			return -ENOMEM;
		}
		for (size_t j = 0; j < s->cap; j++) {
			if (s->used[j])
				dset_add(&g, s->slot[j]);
		}
		free(s->slot);
		free(s->used);
		*s = g;
	}
	for (i = dset_pos(d, s->cap); s->used[i]; i = (i + 1) & (s->cap - 1)) {
		if (memcmp(s->slot[i], d, 32) == 0)
			return 0;
	}
	memcpy(s->slot[i], d, 32);
	s->used[i] = 1;
	s->n++;
	return 1;
}

static inline void dset_free(struct dset *s)
{
	free(s->slot);
	free(s->used);
	memset(s, 0, sizeof(*s));
}

/* Adds every chunk and checkpoint window digest of a decoded index to s. Returns 0 or -ENOMEM. */
static inline int dset_add_layer(struct dset *s, const struct index_layer *l)
{
	for (uint32_t i = 0; i < index_layer_nchunks(l); i++) {
		if (dset_add(s, index_layer_chunk(l, i)->digest) < 0)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < index_layer_ncheckpoints(l); i++) {
		const struct index_checkpoint *cp = index_layer_checkpoint(l, i);

		if (cp->wlen > 0 && dset_add(s, cp->window) < 0)
			return -ENOMEM;
	}
	return 0;
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: a map from paths to node numbers (open addressing), the layer builder's. */
#ifndef STRATA_INDEX_PATHMAP_I_H
#define STRATA_INDEX_PATHMAP_I_H

#include <stddef.h>
#include <stdint.h>

struct index_pathmap_slot {
	char *path; /* NULL = empty, owned */
	uint32_t node;
	uint32_t pos; /* the caller's: where path's entry sits in its parent's children */
};

/* Zeroed, it is an empty map that index_pathmap_set cannot use yet: call index_pathmap_grow once.
 * Not thread-safe. */
struct index_pathmap {
	struct index_pathmap_slot *slots;
	size_t cap, used;
};

/* Doubles the table (or makes the first one, of 1024 slots). Returns 0, or -ENOMEM leaving m as it
 * was. */
int index_pathmap_grow(struct index_pathmap *m);

/* Maps path (copied) to node and pos, replacing any earlier mapping. Returns 0 or -ENOMEM. */
int index_pathmap_set(struct index_pathmap *m, const char *path, uint32_t node, uint32_t pos);

/* The node path maps to, or -ENOENT. */
int64_t index_pathmap_get(struct index_pathmap *m, const char *path);

/* Like index_pathmap_get, also setting *pos (when found) to the pos given with the mapping. */
int64_t index_pathmap_find(struct index_pathmap *m, const char *path, uint32_t *pos);

/* Removes path (absent: nothing happens). */
void index_pathmap_del(struct index_pathmap *m, const char *path);

/* Frees the table and every path in it (the struct itself is the caller's). */
void index_pathmap_free(struct index_pathmap *m);

#endif

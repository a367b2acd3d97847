/* SPDX-License-Identifier: Apache-2.0 */
/* A map from paths to node numbers: open addressing, linear probing, FNV-1a, no tombstones. */
#include "pathmap_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static struct index_pathmap_slot *map_find(struct index_pathmap *m, const char *path)
{
	size_t mask = m->cap - 1;
	size_t i = hash_str(path) & mask;

	for (;;) {
		struct index_pathmap_slot *s = &m->slots[i];

		if (!s->path || strcmp(s->path, path) == 0)
			return s;
		i = (i + 1) & mask;
	}
}

int index_pathmap_grow(struct index_pathmap *m)
{
	struct index_pathmap_slot *old = m->slots;
	size_t ocap = m->cap;

	m->cap = ocap ? ocap * 2 : 1024;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots) {
		m->slots = old;
		m->cap = ocap;
		return -ENOMEM;
	}
	for (size_t i = 0; i < ocap; i++) {
		if (old[i].path)
			*map_find(m, old[i].path) = old[i];
	}
	free(old);
	return 0;
}

int index_pathmap_set(struct index_pathmap *m, const char *path, uint32_t node, uint32_t pos)
{
	struct index_pathmap_slot *s;

	if ((m->used + 1) * 4 >= m->cap * 3 && index_pathmap_grow(m) < 0)
		return -ENOMEM;
	s = map_find(m, path);
	if (!s->path) {
		s->path = strdup(path);
		if (!s->path)
			return -ENOMEM;
		m->used++;
	}
	s->node = node;
	s->pos = pos;
	return 0;
}

int64_t index_pathmap_get(struct index_pathmap *m, const char *path)
{
	struct index_pathmap_slot *s = map_find(m, path);

	return s->path ? (int64_t)s->node : -ENOENT;
}

int64_t index_pathmap_find(struct index_pathmap *m, const char *path, uint32_t *pos)
{
	struct index_pathmap_slot *s = map_find(m, path);

	if (!s->path)
		return -ENOENT;
	*pos = s->pos;
	return (int64_t)s->node;
}

/* Tombstones are avoided by re-inserting the rest of the cluster. */
void index_pathmap_del(struct index_pathmap *m, const char *path)
{
	size_t mask = m->cap - 1;
	struct index_pathmap_slot *s = map_find(m, path);
	size_t i;

	if (!s->path)
		return;
	free(s->path);
	s->path = NULL;
	m->used--;
	i = ((size_t)(s - m->slots) + 1) & mask;
	while (m->slots[i].path) {
		struct index_pathmap_slot moved = m->slots[i];

		m->slots[i].path = NULL;
		*map_find(m, moved.path) = moved;
		i = (i + 1) & mask;
	}
}

void index_pathmap_free(struct index_pathmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].path);
	free(m->slots);
}

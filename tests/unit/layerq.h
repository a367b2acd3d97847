/* SPDX-License-Identifier: Apache-2.0 */
/* Test helpers that query a layer index by path. */
#ifndef STRATA_TESTS_LAYERQ_H
#define STRATA_TESTS_LAYERQ_H

#include <stdio.h>
#include <string.h>

#include "index/layer.h"

/* The inode at path ("a/b/c"), or a negative errno from the lookup that failed. */
static inline int64_t walk(const struct index_layer *l, const char *path)
{
	char buf[512];
	char *save = NULL, *tok;
	int64_t ino = 0;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		ino = index_layer_lookup(l, (uint32_t)ino, tok, strlen(tok));
		if (ino < 0)
			return ino;
	}
	return ino;
}

/* The value of xattr name on inode ino (its length in *len), or NULL. */
static inline const char *xattr(const struct index_layer *l, uint32_t ino, const char *name,
				uint32_t *len)
{
	const struct index_inode *in = index_layer_inode(l, ino);

	for (uint32_t i = 0; i < in->nxattrs; i++) {
		const struct index_xattr *x = index_layer_xattr(l, in->xattr_first + i);

		if (x->name_len == strlen(name) &&
		    !memcmp(index_layer_str(l, x->name_off), name, x->name_len)) {
			*len = x->value_len;
			return index_layer_str(l, x->value_off);
		}
	}
	return NULL;
}

#endif

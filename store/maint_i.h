/* SPDX-License-Identifier: Apache-2.0 */
/* What the maintenance policies (evict.c, gc.c, fsck.c) share privately. */
#ifndef STRATA_STORE_MAINT_I_H
#define STRATA_STORE_MAINT_I_H

#include <jansson.h>

#include "maint.h"

/* Every this many chunks of a chunk pass, hooks->progress is called. */
#define MAINT_PROGRESS_EVERY 4096

/* maint.c: sets set[digest] = true for every layer digest of a parsed image record (its "layers"
 * array). Returns 0 or -ENOMEM. */
int store_image_layer_set(json_t *image, json_t *set);

/* fsck.c, gc.c: whether hooks (may be NULL) asks to stop. */
static inline int maint_cancelled(const struct store_maint_hooks *h)
{
	return h && h->cancelled && h->cancelled(h->ctx);
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* What als.c and als_file.c share: a layer of MNT/store and how to find it. */
#ifndef STRATA_FS_ALS_LAYER_I_H
#define STRATA_FS_ALS_LAYER_I_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct fs;
struct fs_layer;

#define ALS_SLOT_MASK 0x3fffffffu /* the 30 slot bits of an inode number (als_i.h) */

/* A layer of a reference. */
struct alayer {
	uint32_t slot;
	char *ref;
	char digest[STORE_DIGEST_LEN];
	char diff_id[STORE_DIGEST_LEN];
	char media_type[160];
	uint64_t size;
	_Atomic uint32_t seq; /* the layer's store seq once known, else 0 */
	pthread_mutex_t mu;   /* info, blob_fd */
	char *info;	      /* the info file, once made */
	size_t info_len;
	int blob_fd; /* the verified blob in an unnamed file, or -1 */
	unsigned uses;
	struct alayer *next;
};

/* The layer (ref 0) or reference directory (ref 1, a struct aref of als.c) of a slot: one the
 * view knows, else one of the store's images (after a takeover). NULL with *rc -ESTALE when no
 * image of the store has it, or another negative errno. Entries live as long as the mount. */
void *fs_als_by_slot(struct fs *f, uint32_t slot, int ref, int *rc);

/* Loads l's layer (waiting for a pending one); sets l->seq. Returns 0 with *out referenced
 * (fs_layer_put), or negative errno. */
int fs_als_layer_of(struct fs *f, struct alayer *l, struct fs_layer **out);

/* Makes l's info file (once; l->info, l->info_len). Returns 0 or negative errno (-EIO when the
 * image record has no diff_id for it). Thread-safe (l->mu). */
int fs_als_make_info(struct fs *f, struct alayer *l);

#endif

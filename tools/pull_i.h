/* SPDX-License-Identifier: Apache-2.0 */
/* strata pull's private types, shared by pull.c (the phases of one pull, the CLI) and
 * pull_source.c (where each layer's index comes from). */
#ifndef STRATA_TOOLS_PULL_I_H
#define STRATA_TOOLS_PULL_I_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "artifact.h"
#include "cli.h"
#include "fetch/registry.h"
#include "store/store.h"
#include "util/ecdsa.h"

enum index_mode { MODE_AUTO, MODE_ARTIFACT, MODE_BUILD };

struct pull_opts {
	uint32_t chunk_size;
	enum index_mode mode;
	int push;		   /* strata index --push */
	enum artifact_trust trust; /* which index artifacts are used */
	struct util_key **keys;	   /* trusted public keys (trust "signed") */
	size_t nkeys;
	struct util_key *sign_key; /* strata index --push --sign KEY: the private key */
};

struct pull_layer {
	const struct fetch_layer *fl;
	struct index_layer *idx; /* NULL when the store had it already */
	void *enc;		 /* the encoded index when it came from an artifact */
	size_t enc_len;
	struct store_layer info;
	int dup_of;	    /* index of an earlier identical layer of this image, or -1 */
	const char *how;    /* "store", "artifact", "estargz", "build" or "stream" */
	int record_pending; /* to be streamed by the daemon: record it as pending */
	int have_rec;	    /* the store has a record of the layer: rec */
	struct store_layer rec;
};

struct progress {
	struct cli *c;
	const char *ref;
	size_t layer, nlayers;
	struct timespec last;
	uint64_t fetched;
};

/* One image being pulled: what pull_one's phases share. Each phase returns 0, or 1 after printing
 * the error. */
struct pull {
	struct cli *c;
	struct fetch_client *fc;
	const struct pull_opts *po;
	struct fetch_ref *ref;
	struct fetch_image *img;
	struct pull_layer *pls;
	struct artifact *art;
	char *name;
	char art_digest[STORE_DIGEST_LEN];
	char art_signer[STORE_DIGEST_LEN]; /* the key that signed art, or "" */
	size_t fresh, missing, streaming;
	int stream; /* layers without an index stream in the daemon's background */
	struct fetch_counters before;
	struct progress pg;
};

/* Finds where layer i's index comes from and fills p->pls[i] (see pull_source.c). Returns 0, or 1
 * after printing the error. */
int pull_choose_source(struct pull *p, size_t i);

#endif

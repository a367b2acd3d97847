/* SPDX-License-Identifier: Apache-2.0 */
/* strata index artifacts: layer indexes stored in the registry beside the image they describe. */
#ifndef STRATA_TOOLS_ARTIFACT_H
#define STRATA_TOOLS_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct fetch_client;
struct fetch_ref;
struct index_layer;
struct store;

#define ARTIFACT_TYPE		  "application/vnd.strata.index.v1"
#define ARTIFACT_INDEX_MT	  "application/vnd.strata.layer.index.v2+zstd"
#define ARTIFACT_WINDOWS_MT	  "application/vnd.strata.layer.windows.v1"
#define ARTIFACT_LAYER_ANNOTATION "org.strata.layer.digest"

/* Which index artifacts a pull uses (config artifact_trust, pull --artifact-trust): those in the
 * image's own repository (trusted as far as that repository is), only those signed by a trusted
 * key (tools/sign.c), or none (layers are indexed from their blobs or eStargz TOCs). */
enum artifact_trust { ARTIFACT_TRUST_REPOSITORY = 0, ARTIFACT_TRUST_SIGNED, ARTIFACT_TRUST_NONE };

/* Parses "repository", "signed" or "none" ("" = the default, repository). Returns 0 or -EINVAL. */
int artifact_trust_parse(const char *s, enum artifact_trust *out);

/* The tag an image manifest's artifact is pushed under: "sha256-<hex>.strata". Returns a malloc'd
 * string or NULL. */
char *artifact_tag(const char *manifest_digest);

/*
 * Pushes the artifact for an image whose layers are all indexed in store: per layer, the encoded
 * index (with window locations filled in) and a blob of zstd-compressed checkpoint windows; an OCI
 * manifest with artifactType ARTIFACT_TYPE and `subject` = the image manifest, tagged
 * artifact_tag(manifest). Returns 0 and the artifact manifest digest in out_digest, or negative
 * errno with strata_err set.
 */
int artifact_push(struct store *store, struct fetch_client *fc, const struct fetch_ref *ref,
		  const char *manifest_digest, const char *manifest_media_type,
		  uint64_t manifest_size, const char *const *layers, size_t nlayers,
		  char out_digest[STORE_DIGEST_LEN]);

struct artifact;

/* Looks for the artifact of manifest_digest in ref's repository: by tag, then via the referrers
 * API where the registry has it. Returns 0 and *out (free with artifact_free), -ENOENT when there
 * is none, or negative errno for a broken one (strata_err set). */
int artifact_find(struct fetch_client *fc, const struct fetch_ref *ref, const char *manifest_digest,
		  struct artifact **out);

/* The artifact manifest's digest. Borrowed. */
const char *artifact_digest(const struct artifact *a);

/*
 * Fetches and decodes the index of layer_digest from the artifact. The blob is verified against
 * its descriptor. Returns 0 with *idx (free with index_layer_free), the encoded bytes in *enc (*len of them)
 * (malloc'd) and the windows blob digest (or "") in windows; -ENOENT when the artifact does not
 * cover the layer; other negative errno with strata_err set.
 */
int artifact_layer(struct fetch_client *fc, const struct fetch_ref *ref, const struct artifact *a,
		   const char *layer_digest, struct index_layer **idx, void **enc, size_t *len,
		   char windows[STORE_DIGEST_LEN]);

/* The digest of the index blob the artifact lists for layer_digest (what sha256 of the encoded
 * index artifact_layer returns must be), without fetching it. Returns 0 or -ENOENT when the
 * artifact does not cover the layer. */
int artifact_index_digest(const struct artifact *a, const char *layer_digest,
			  char out[STORE_DIGEST_LEN]);

void artifact_free(struct artifact *a);

#endif

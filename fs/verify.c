/* SPDX-License-Identifier: Apache-2.0 */
/* A layer that becomes fully local is checked against its blob: verified, or quarantined. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_i.h"
#include "fs.h"
#include "stream.h"
#include "index/compare.h"
#include "index/layer.h"
#include "store/store.h"
#include "util/log.h"
#include "util/sha256.h"

/* Marks layer l quarantined: in the store (counted), in memory (reads fail with EIO from now on),
 * and says so once in the log. Returns -EIO with strata_err set. */
static int quarantine(struct fs_engine *eng, struct fs_layer *l, const char *why)
{
	int rc = store_layer_quarantine(eng->store, l->digest, l->seq, why);

	if (rc < 0 && rc != -ESTALE)
		strata_log(LOG_ERR, "layer %s: cannot record its quarantine: %s", l->digest,
			   strata_errmsg(rc));
	if (!atomic_exchange(&l->quarantined, 1))
		strata_log(LOG_ERR,
			   "layer %s quarantined: %s; its files read as EIO until it is "
			   "pulled again",
			   l->digest, why);
	return strata_err(EIO, "layer %s is quarantined: %s", l->digest, why);
}

/* Compares the record's index (enc) with v, built here from the verified blob. Returns 1 equal, 0
 * not (why says how), or negative errno. */
static int same_index(const struct store_layer *info, const void *enc, size_t len,
		      const struct index_layer *v, char *why, size_t cap)
{
	struct index_layer *s = NULL;
	int rc = index_layer_decode(enc, len, &s);

	if (rc < 0)
		return rc;
	rc = index_layer_compare(s, v,
				 info->prov == STORE_PROV_TOC ? INDEX_CMP_TOC : INDEX_CMP_EXACT,
				 why, cap);
	/* a legacy record may have come from an eStargz TOC */
	if (rc == 0 && info->prov == STORE_PROV_LEGACY)
		rc = index_layer_compare(s, v, INDEX_CMP_TOC, why, cap);
	index_layer_free(s);
	return rc;
}

int fs_layer_verify(struct fs_engine *eng, struct fs_layer *l)
{
	struct store_layer info, built;
	struct index_layer *v = NULL;
	char diff_id[STORE_DIGEST_LEN], why[STORE_WHY_LEN], what[STORE_WHY_LEN + 64];
	void *enc = NULL;
	size_t len = 0;
	int rc;

	if (atomic_load(&l->quarantined))
		return strata_err(EIO, "layer %s is quarantined", l->digest);
	rc = store_layer_get(eng->store, l->digest, &info, &enc, &len);
	if (rc < 0)
		return rc;
	if (info.seq != l->seq) {
		rc = strata_err(ESTALE, "layer %s was replaced meanwhile", l->digest);
		goto out;
	}
	if (info.quarantine[0]) {
		rc = quarantine(eng, l, info.quarantine);
		goto out;
	}
	if (info.prov == STORE_PROV_VERIFIED)
		goto out; /* built here from its blob */
	if (!eng->fetch || !l->src) {
		rc = strata_err(EIO, "layer %s has no source to verify it from", l->digest);
		goto out;
	}
	/* The whole blob through the verifying builder: its digest (and size) are checked by the
	 * download; the chunks it cuts go to the store. */
	built = info;
	built.diff_id[0] = '\0';
	strata_log(LOG_INFO, "layer %s (%s): checking its index against its blob", l->digest,
		   store_prov_name(info.prov));
	rc = fs_layer_build(eng->store, eng->fetch, l->src, &built, NULL, NULL, &v);
	if (rc < 0) {
		rc = strata_err_prefix(-rc, "layer %s: verifying it against its blob", l->digest);
		goto out;
	}
	util_digest_format(index_layer_diff_id(v), diff_id);
	if (info.diff_id[0] && strcmp(diff_id, info.diff_id) != 0) {
		snprintf(what, sizeof(what), "its blob's diff_id is %s, its record says %s",
			 diff_id, info.diff_id);
		rc = quarantine(eng, l, what);
		goto out;
	}
	rc = same_index(&info, enc, len, v, why, sizeof(why));
	if (rc == 0) {
		snprintf(what, sizeof(what), "its %s index does not match its blob: %s",
			 store_prov_name(info.prov), why);
		rc = quarantine(eng, l, what);
		goto out;
	}
	if (rc < 0)
		goto out;
	rc = store_layer_set_verified(eng->store, l->digest, l->seq, diff_id,
				      index_layer_tar_size(v));
	if (rc == 0)
		strata_log(LOG_INFO, "layer %s: its index matches its blob (diff_id %s): verified",
			   l->digest, diff_id);
out:
	index_layer_free(v);
	free(enc);
	return rc;
}

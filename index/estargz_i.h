/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/: the eStargz TOC member as estargz_toc.c unpacks it for estargz.c. */
#ifndef STRATA_INDEX_ESTARGZ_I_H
#define STRATA_INDEX_ESTARGZ_I_H

#include <stddef.h>
#include <stdint.h>

#define INDEX_ESTARGZ_TOC_NAME "stargz.index.json"

/* The TOC's own tar entry, shown in the layer as tar -x shows it. */
struct index_estargz_toc_file {
	uint32_t mode, uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t data_offset; /* where the JSON starts in the TOC member's decompressed bytes */
};

/*
 * Inflates the TOC member toc[0..len) (borrowed) and returns the JSON bytes of its tar's first
 * entry, which must be a regular file named stargz.index.json of at most INDEX_ESTARGZ_MAX_TOC bytes: *json (malloc'd,
 * NUL-ended; the caller frees it) and *json_len, and that entry's header in *tf. Returns 0, or
 * -EBADMSG "malformed eStargz TOC..." (bad gzip or tar, another first entry, a short JSON) or
 * -ENOMEM, with strata_err set.
 */
int index_estargz_read_toc(const uint8_t *toc, size_t len, char **json, size_t *json_len,
			   struct index_estargz_toc_file *tf);

/* Checks the TOC JSON against toc_digest ("sha256:<hex>"). Returns 0, -EBADMSG or -EINVAL with
 * strata_err set. */
int index_estargz_check_toc_digest(const char *json, size_t json_len, const char *toc_digest);

#endif

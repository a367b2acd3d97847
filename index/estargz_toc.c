/* SPDX-License-Identifier: Apache-2.0 */
/* Finds and unpacks an eStargz blob's table of contents: the footer that locates the TOC member,
 * the gzip'd tar holding stargz.index.json, and the check of its digest. */
#include "estargz.h"
#include "estargz_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "decomp.h"
#include "tar.h"
#include "util/log.h"
#include "util/sha256.h"

/* ---------------------------------------------------------------- footer */

/* Parses 16 hex digits followed by "STARGZ". Returns 0 or -1. */
static int parse_sg(const uint8_t *p, uint64_t *off)
{
	uint64_t v = 0;

	if (memcmp(p + 16, "STARGZ", 6) != 0)
		return -1;
	for (int i = 0; i < 16; i++) {
		int d = util_hexval((char)p[i]);

		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	*off = v;
	return 0;
}

/* A gzip member header with only FEXTRA set and an Extra field of xlen bytes. */
static int gzip_extra_header(const uint8_t *p, unsigned xlen)
{
	return p[0] == 0x1f && p[1] == 0x8b && p[2] == 8 && p[3] == 0x04 &&
	       (unsigned)(p[10] | p[11] << 8) == xlen;
}

int index_estargz_footer(const uint8_t *tail, size_t len, uint64_t blob_size, uint64_t *toc_off,
			 size_t *footer_size)
{
	uint64_t off = 0;
	size_t fs = 0;

	if (len > blob_size)
		return strata_err(EINVAL, "eStargz footer: %zu tail bytes of a %llu-byte blob", len,
				  (unsigned long long)blob_size);
	if (len < INDEX_ESTARGZ_TAIL && len != blob_size)
		return strata_err(EINVAL, "eStargz footer: %zu tail bytes of a %llu-byte blob", len,
				  (unsigned long long)blob_size);
	if (len >= INDEX_ESTARGZ_FOOTER_SIZE) {
		const uint8_t *p = tail + len - INDEX_ESTARGZ_FOOTER_SIZE;

		/* header (10), XLEN 26, subfield 'S' 'G' LEN 22, "%016xSTARGZ", empty deflate, trailer */
		if (gzip_extra_header(p, 26) && p[12] == 'S' && p[13] == 'G' && p[14] == 22 &&
		    p[15] == 0 && parse_sg(p + 16, &off) == 0)
			fs = INDEX_ESTARGZ_FOOTER_SIZE;
	}
	if (!fs && len >= INDEX_ESTARGZ_LEGACY_FOOTER_SIZE) {
		const uint8_t *p = tail + len - INDEX_ESTARGZ_LEGACY_FOOTER_SIZE;

		/* header (10), XLEN 22, "%016xSTARGZ", empty deflate, trailer */
		if (gzip_extra_header(p, 22) && parse_sg(p + 12, &off) == 0)
			fs = INDEX_ESTARGZ_LEGACY_FOOTER_SIZE;
	}
	if (!fs)
		return -ENOENT;
	if (off >= blob_size - fs)
		return strata_err(EBADMSG,
				  "eStargz footer: TOC offset %llu outside the %llu-byte blob",
				  (unsigned long long)off, (unsigned long long)blob_size);
	*toc_off = off;
	*footer_size = fs;
	return 0;
}

/* ---------------------------------------------------------------- TOC member */

struct memsrc {
	const uint8_t *p;
	size_t len, pos;
};

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct memsrc *m = ctx;
	size_t n = m->len - m->pos < len ? m->len - m->pos : len;

	memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static int malformed(int rc)
{
	return rc == -ENOMEM ? rc : strata_err_prefix(EBADMSG, "malformed eStargz TOC");
}

int index_estargz_read_toc(const uint8_t *toc, size_t len, char **json, size_t *json_len,
			   struct index_estargz_toc_file *tf)
{
	struct memsrc m = { toc, len, 0 };
	struct index_decomp *d = NULL;
	struct index_tar *t = NULL;
	const struct index_tar_entry *e;
	char *buf = NULL;
	size_t got = 0;
	int rc;

	rc = index_decomp_new(INDEX_COMP_GZIP, (struct index_reader){ mem_read, &m }, &d);
	if (rc < 0)
		goto out;
	rc = index_tar_open(index_decomp_reader(d), &t);
	if (rc < 0)
		goto out;
	rc = index_tar_next(t, &e);
	if (rc < 0) {
		rc = malformed(rc);
		goto out;
	}
	if (rc == 0 || e->type != INDEX_TAR_REG || strcmp(e->path, INDEX_ESTARGZ_TOC_NAME) != 0) {
		rc = strata_err(EBADMSG, "malformed eStargz TOC: its tar does not start with %s",
				INDEX_ESTARGZ_TOC_NAME);
		goto out;
	}
	if (e->sparse) {
		rc = strata_err(EBADMSG, "malformed eStargz TOC: %s is a sparse file",
				INDEX_ESTARGZ_TOC_NAME);
		goto out;
	}
	if (e->size > INDEX_ESTARGZ_MAX_TOC) {
		rc = strata_err(EBADMSG, "malformed eStargz TOC: %s is %llu bytes, more than %u",
				INDEX_ESTARGZ_TOC_NAME, (unsigned long long)e->size,
				INDEX_ESTARGZ_MAX_TOC);
		goto out;
	}
	tf->mode = e->mode;
	tf->uid = e->uid;
	tf->gid = e->gid;
	tf->mtime_sec = e->mtime_sec;
	tf->mtime_nsec = e->mtime_nsec;
	tf->data_offset = e->data_offset;
	buf = malloc((size_t)e->size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < e->size) {
		ssize_t n = index_tar_read(t, buf + got, (size_t)e->size - got);

		if (n == 0)
			n = strata_err(EPIPE, "truncated %s", INDEX_ESTARGZ_TOC_NAME);
		if (n < 0) {
			rc = malformed((int)n);
			goto out;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	*json = buf;
	*json_len = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	index_tar_free(t);
	index_decomp_free(d);
	return rc;
}

int index_estargz_check_toc_digest(const char *json, size_t json_len, const char *toc_digest)
{
	uint8_t want[UTIL_SHA256_LEN], got[UTIL_SHA256_LEN];
	char shown[UTIL_DIGEST_STR_LEN];
	int rc;

	rc = util_digest_parse(toc_digest, want);
	if (rc < 0)
		return rc;
	util_sha256(json, json_len, got);
	if (memcmp(want, got, sizeof(got)) != 0) {
		util_digest_format(got, shown);
		return strata_err(EBADMSG,
				  "eStargz TOC digest mismatch: %s is %s, the layer "
				  "descriptor says %s",
				  INDEX_ESTARGZ_TOC_NAME, shown, toc_digest);
	}
	return 0;
}

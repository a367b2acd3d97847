/* SPDX-License-Identifier: Apache-2.0 */
/* Private to index/'s gzip files (zran.c, zran_extract.c): the incremental gzip member header
 * parser and zlib's errors as errnos. */
#ifndef STRATA_INDEX_ZRAN_I_H
#define STRATA_INDEX_ZRAN_I_H

#include <stdint.h>
#include <sys/types.h>

#include <zlib.h>

/* Where the incremental gzip member header parser is. */
enum hdr_step {
	H_FIXED,   /* the 10 fixed bytes: magic, CM, FLG, MTIME, XFL, OS */
	H_XLEN,	   /* FEXTRA: 2-byte length */
	H_EXTRA,   /* FEXTRA: xlen bytes */
	H_NAME,	   /* FNAME: up to and including a zero byte */
	H_COMMENT, /* FCOMMENT: up to and including a zero byte */
	H_HCRC,	   /* FHCRC: low 16 bits of the CRC-32 of the header so far */
	H_DONE,
};

struct index_gzhdr {
	enum hdr_step step;
	uint8_t flg;
	uint32_t n;    /* bytes seen in the current step */
	uint32_t xlen; /* FEXTRA length */
	uint16_t hcrc; /* FHCRC value being assembled */
	uint32_t crc;  /* CRC-32 of the header bytes before FHCRC */
};

/* Makes h ready for the first byte of a member header. */
void index_gzhdr_init(struct index_gzhdr *h);

/*
 * Feeds header bytes p[0..len) to h and stops at the end of the header. Returns the number of bytes
 * consumed (h->step == H_DONE once the header is complete), or -EBADMSG with strata_err set.
 */
ssize_t index_gzhdr_feed(struct index_gzhdr *h, const uint8_t *p, size_t len);

/* A little-endian 32-bit value (gzip trailers). */
uint32_t index_get_le32(const uint8_t *p);

/* Converts a failed inflate() return into a negative errno (-ENOMEM, else -EBADMSG) with the
 * message set. */
int index_zlib_error(const z_stream *s, int zrc);

#endif

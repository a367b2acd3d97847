/* SPDX-License-Identifier: Apache-2.0 */
/* Streaming gzip (zlib), zstd and passthrough decompression over an index_reader. */
#include "decomp.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "util/log.h"

#define IN_BUF_SIZE (128 * 1024)

enum gz_state {
	GZ_MEMBER,  /* inside a member (or expecting the first one) */
	GZ_BETWEEN, /* a member just ended; next byte decides: new member, padding or end */
	GZ_PADDING, /* only zero bytes may follow */
};

struct index_decomp {
	enum index_compression comp;
	struct index_reader src; /* borrowed */
	uint8_t *in;		 /* compressed input buffer (gzip, zstd) */
	size_t in_pos, in_len;	 /* unconsumed input is in[in_pos, in_len) */
	bool src_eof;
	bool done;	   /* clean end reached: read() returns 0 from now on */
	int err;	   /* sticky negative errno after a failure, else 0 */
	uint64_t consumed; /* compressed bytes consumed by the decoder */

	/* gzip */
	z_stream z;
	bool z_init;
	enum gz_state gz;

	/* zstd */
	ZSTD_DCtx *zd;
	bool zstd_frame_end; /* the last decoder call finished a frame and flushed it */
	uint64_t produced;   /* decompressed bytes so far */
	index_frame_fn on_frame;
	void *frame_ctx;
};

void index_decomp_on_frame(struct index_decomp *d, index_frame_fn fn, void *ctx)
{
	d->on_frame = fn;
	d->frame_ctx = ctx;
}

static const struct {
	const char *media_type;
	enum index_compression comp;
} layer_types[] = {
	{ "application/vnd.oci.image.layer.v1.tar", INDEX_COMP_NONE },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", INDEX_COMP_GZIP },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", INDEX_COMP_ZSTD },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar", INDEX_COMP_NONE },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", INDEX_COMP_GZIP },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", INDEX_COMP_ZSTD },
	{ "application/vnd.docker.image.rootfs.diff.tar", INDEX_COMP_NONE },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", INDEX_COMP_GZIP },
	{ "application/vnd.docker.image.rootfs.diff.tar.zstd", INDEX_COMP_ZSTD },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", INDEX_COMP_GZIP },
};

int index_compression_of_media_type(const char *media_type, enum index_compression *out)
{
	for (size_t i = 0; media_type && i < sizeof(layer_types) / sizeof(layer_types[0]); i++) {
		if (strcmp(media_type, layer_types[i].media_type) == 0) {
			*out = layer_types[i].comp;
			return 0;
		}
	}
	return -ENOTSUP;
}

const char *index_compression_name(enum index_compression c)
{
	switch (c) {
	case INDEX_COMP_GZIP:
		return "gzip";
	case INDEX_COMP_ZSTD:
		return "zstd";
	case INDEX_COMP_NONE:
		break;
	}
	return "none";
}

enum index_compression index_compression_detect(const uint8_t *buf, size_t len)
{
	static const uint8_t zstd_magic[4] = { 0x28, 0xb5, 0x2f, 0xfd };

	if (len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b)
		return INDEX_COMP_GZIP;
	if (len >= 4 && memcmp(buf, zstd_magic, sizeof(zstd_magic)) == 0)
		return INDEX_COMP_ZSTD;
	return INDEX_COMP_NONE;
}

int index_decomp_new(enum index_compression c, struct index_reader src, struct index_decomp **out)
{
	struct index_decomp *d;
	int rc = 0;

	assert(src.read);
	*out = NULL;
	if (c != INDEX_COMP_NONE && c != INDEX_COMP_GZIP && c != INDEX_COMP_ZSTD)
		return strata_err(EINVAL, "unknown compression %d", (int)c);
	d = calloc(1, sizeof(*d));
	if (!d)
		return strata_err(ENOMEM, "out of memory creating %s decompressor",
				  index_compression_name(c));
	d->comp = c;
	d->src = src;
	if (c == INDEX_COMP_GZIP) {
		d->in = malloc(IN_BUF_SIZE);
		if (!d->in || inflateInit2(&d->z, 16 + MAX_WBITS) != Z_OK) {
			rc = -ENOMEM;
			goto out;
		}
		d->z_init = true;
		d->gz = GZ_MEMBER;
	} else if (c == INDEX_COMP_ZSTD) {
		d->in = malloc(IN_BUF_SIZE);
		d->zd = ZSTD_createDCtx();
		if (!d->in || !d->zd) {
			rc = -ENOMEM;
			goto out;
		}
	}
	*out = d;
	d = NULL;
out:
	if (rc < 0)
		strata_err(-rc, "out of memory creating %s decompressor",
			   index_compression_name(c));
	index_decomp_free(d);
	return rc;
}

/* Refills the input buffer when it is empty. Returns 0 (src_eof set at the end) or negative errno. */
static int fill(struct index_decomp *d)
{
	ssize_t n;

	if (d->in_pos < d->in_len || d->src_eof)
		return 0;
	d->in_pos = 0;
	d->in_len = 0;
	n = d->src.read(d->src.ctx, d->in, IN_BUF_SIZE);
	if (n < 0)
		return (int)n;
	if (n == 0)
		d->src_eof = true;
	d->in_len = (size_t)n;
	return 0;
}

/* Skips zero padding after the last gzip member. Returns 0 or -EBADMSG if anything else follows. */
static int gz_padding(struct index_decomp *d)
{
	while (d->in_pos < d->in_len) {
		if (d->in[d->in_pos] != 0)
			return strata_err(EBADMSG,
					  "corrupt gzip stream: data after trailing zero padding");
		d->in_pos++;
		d->consumed++;
	}
	return 0;
}

static ssize_t gz_read(struct index_decomp *d, uint8_t *buf, size_t len)
{
	size_t produced = 0;
	int rc;

	for (;;) {
		size_t in_avail, out_avail, used_in, made;
		int zrc;

		rc = fill(d);
		if (rc < 0)
			return rc;
		if (d->gz == GZ_BETWEEN || d->gz == GZ_PADDING) {
			if (d->in_pos == d->in_len) {
				/* the source ended at a member boundary (or in padding): clean end */
				d->done = true;
				return (ssize_t)produced;
			}
			if (d->gz == GZ_BETWEEN && d->in[d->in_pos] != 0) {
				if (inflateReset(&d->z) != Z_OK)
					return strata_err(
						EBADMSG,
						"corrupt gzip stream: inflateReset failed");
				d->gz = GZ_MEMBER;
			} else {
				d->gz = GZ_PADDING;
				rc = gz_padding(d);
				if (rc < 0)
					return rc;
				continue;
			}
		}

		in_avail = d->in_len - d->in_pos;
		out_avail = len - produced;
		if (out_avail > UINT_MAX)
			out_avail = UINT_MAX;
		d->z.next_in = d->in + d->in_pos;
		d->z.avail_in = (uInt)in_avail;
		d->z.next_out = buf + produced;
		d->z.avail_out = (uInt)out_avail;
		zrc = inflate(&d->z, Z_NO_FLUSH);
		used_in = in_avail - d->z.avail_in;
		made = out_avail - d->z.avail_out;
		d->in_pos += used_in;
		d->consumed += used_in;
		produced += made;

		switch (zrc) {
		case Z_STREAM_END:
			d->gz = GZ_BETWEEN;
			/* stop at the member boundary, so consumed() is exact there (eStargz) */
			if (produced > 0)
				return (ssize_t)produced;
			continue;
		case Z_OK:
		case Z_BUF_ERROR:
			break;
		case Z_MEM_ERROR:
			return strata_err(ENOMEM, "out of memory in gzip decoder");
		default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
			return strata_err(EBADMSG, "corrupt gzip stream: %s",
					  d->z.msg ? d->z.msg : zError(zrc));
		}
		if (produced == len)
			return (ssize_t)produced;
		if (used_in == 0 && made == 0 && d->in_pos == d->in_len && d->src_eof) {
			/* no progress and no more input: the member is cut short */
			if (produced > 0)
				return (ssize_t)produced;
			return strata_err(EPIPE, "truncated gzip stream");
		}
	}
}

static ssize_t zstd_read(struct index_decomp *d, uint8_t *buf, size_t len)
{
	ZSTD_outBuffer out = { buf, len, 0 };
	int rc;

	for (;;) {
		ZSTD_inBuffer in;
		size_t zrc, used_in, made;

		rc = fill(d);
		if (rc < 0)
			return rc;
		if (d->in_pos == d->in_len && d->src_eof && d->zstd_frame_end) {
			d->done = true;
			return (ssize_t)out.pos;
		}
		in.src = d->in;
		in.size = d->in_len;
		in.pos = d->in_pos;
		made = out.pos;
		zrc = ZSTD_decompressStream(d->zd, &out, &in);
		if (ZSTD_isError(zrc)) {
			if (ZSTD_getErrorCode(zrc) == ZSTD_error_memory_allocation)
				return strata_err(ENOMEM, "out of memory in zstd decoder");
			return strata_err(EBADMSG, "corrupt zstd stream: %s",
					  ZSTD_getErrorName(zrc));
		}
		used_in = in.pos - d->in_pos;
		made = out.pos - made;
		d->in_pos = in.pos;
		d->consumed += used_in;
		d->produced += made;
		d->zstd_frame_end = zrc == 0;
		if (zrc == 0 && used_in > 0 && d->on_frame)
			d->on_frame(d->frame_ctx, d->consumed, d->produced);
		if (out.pos == len)
			return (ssize_t)out.pos;
		if (used_in == 0 && made == 0 && d->in_pos == d->in_len && d->src_eof &&
		    !d->zstd_frame_end) {
			if (out.pos > 0)
				return (ssize_t)out.pos;
			return strata_err(EPIPE, "truncated zstd stream");
		}
	}
}

ssize_t index_decomp_read(struct index_decomp *d, void *buf, size_t len)
{
	ssize_t n;

	assert(d && (buf || len == 0));
	if (d->err)
		return d->err;
	if (d->done || len == 0)
		return 0;
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	switch (d->comp) {
	case INDEX_COMP_GZIP:
		n = gz_read(d, buf, len);
		break;
	case INDEX_COMP_ZSTD:
		n = zstd_read(d, buf, len);
		break;
	default:
		n = d->src.read(d->src.ctx, buf, len);
		if (n > 0)
			d->consumed += (uint64_t)n;
		else if (n == 0)
			d->done = true;
		break;
	}
	if (n < 0)
		d->err = (int)n;
	return n;
}

static ssize_t decomp_reader_read(void *ctx, void *buf, size_t len)
{
	return index_decomp_read(ctx, buf, len);
}

struct index_reader index_decomp_reader(struct index_decomp *d)
{
	struct index_reader r = { decomp_reader_read, d };

	return r;
}

uint64_t index_decomp_consumed(const struct index_decomp *d)
{
	return d->consumed;
}

void index_decomp_free(struct index_decomp *d)
{
	if (!d)
		return;
	if (d->z_init)
		inflateEnd(&d->z);
	ZSTD_freeDCtx(d->zd);
	free(d->in);
	free(d);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The layer index's binary format: packs the builder's sections, validates and decodes, encodes. */
#include "layer.h"
#include "layer_i.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zstd.h>

#include "zran.h"
#include "util/log.h"

#define MAGIC "STRATAIX"

_Static_assert(sizeof(struct index_inode) == 64, "inode record layout");
_Static_assert(sizeof(struct index_dirent) == 16, "dirent record layout");
_Static_assert(sizeof(struct index_chunk) == 48, "chunk record layout");
_Static_assert(sizeof(struct index_xattr) == 16, "xattr record layout");
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the layer index encoding is little-endian; add byte swapping for this target"
#endif

_Static_assert(sizeof(struct index_layer_header) == 112, "header layout");
_Static_assert(offsetof(struct index_layer_header, nsparse) == INDEX_HEADER_V2_SIZE,
	       "version 2 header layout");
_Static_assert(sizeof(struct index_sparse) == 24, "sparse record layout");
_Static_assert(sizeof(struct index_extent) == 24, "extent record layout");
_Static_assert(sizeof(struct index_checkpoint) == 72, "checkpoint record layout");

static int decode_raw(void *mem, size_t len, struct index_layer **out);

/* ---------------------------------------------------------------- encode */

int index_layer_pack(const struct index_layer_sections *s, struct index_layer **out)
{
	struct index_layer_header hdr;
	void *mem = NULL;
	size_t total, hsize = s->nsparse ? sizeof(hdr) : INDEX_HEADER_V2_SIZE;

	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.magic, MAGIC, 8);
	hdr.version = s->nsparse ? INDEX_FORMAT_VERSION_SPARSE : INDEX_FORMAT_VERSION;
	hdr.chunk_size = s->chunk_size;
	hdr.ninodes = (uint32_t)s->ninodes;
	hdr.ndirents = (uint32_t)s->ndirents;
	hdr.nchunks = (uint32_t)s->nchunks;
	hdr.nxattrs = (uint32_t)s->nxattrs;
	hdr.strtab_len = s->strtab_len;
	hdr.tar_size = s->tar_size;
	hdr.content_size = s->content_size;
	memcpy(hdr.diff_id, s->diff_id, 32);
	hdr.ncheckpoints = (uint32_t)s->ncps;
	hdr.blob_kind = s->blob_kind;
	hdr.blob_size = s->blob_size;
	hdr.nsparse = (uint32_t)s->nsparse;
	hdr.nextents = (uint32_t)s->nextents;
	if (s->nsparse > UINT32_MAX || s->nextents > INDEX_MAX_EXTENTS)
		return strata_err(EFBIG, "the layer has more than %u extents of sparse files",
				  INDEX_MAX_EXTENTS);
	total = hsize + s->nsparse * sizeof(*s->sparse) + s->nextents * sizeof(*s->extents) +
		s->ninodes * sizeof(*s->inodes) + s->ndirents * sizeof(*s->dirents) +
		s->nchunks * sizeof(*s->chunks) + s->nxattrs * sizeof(*s->xattrs) +
		s->ncps * sizeof(*s->cps) + s->strtab_len;
	if (total > INDEX_MAX_DECODED)
		return strata_err(EFBIG, "the layer's index would take %zu bytes, more than %llu",
				  total, (unsigned long long)INDEX_MAX_DECODED);
	mem = malloc(total);
	if (!mem)
		return -ENOMEM;
	{
		char *p = mem;

#define PUT(src, n)                        \
	do {                               \
		if ((n) > 0)               \
			memcpy(p, src, n); \
		p += (n);                  \
	} while (0)
		PUT(&hdr, hsize);
		PUT(s->inodes, s->ninodes * sizeof(*s->inodes));
		PUT(s->dirents, s->ndirents * sizeof(*s->dirents));
		PUT(s->chunks, s->nchunks * sizeof(*s->chunks));
		PUT(s->xattrs, s->nxattrs * sizeof(*s->xattrs));
		PUT(s->cps, s->ncps * sizeof(*s->cps));
		PUT(s->sparse, s->nsparse * sizeof(*s->sparse));
		PUT(s->extents, s->nextents * sizeof(*s->extents));
		PUT(s->strtab, s->strtab_len);
#undef PUT
	}
	return decode_raw(mem, total, out); /* mem is owned by *out or freed by decode_raw */
}

int index_layer_encode(const struct index_layer *l, void **buf, size_t *len)
{
	size_t raw = (size_t)(l->strtab - (const char *)l->mem) + l->hdr->strtab_len;
	size_t cap = ZSTD_compressBound(raw);
	void *out = malloc(cap);
	size_t n;

	if (!out)
		return -ENOMEM;
	n = ZSTD_compress(out, cap, l->mem, raw, 3);
	if (ZSTD_isError(n)) {
		free(out);
		return strata_err(EIO, "zstd: %s", ZSTD_getErrorName(n));
	}
	*buf = out;
	*len = n;
	return 0;
}

void index_layer_set_window_location(struct index_layer *l, uint32_t cp, uint64_t woff,
				     uint32_t wclen)
{
	struct index_checkpoint *c;

	assert(cp < l->hdr->ncheckpoints);
	c = (struct index_checkpoint *)&l->cps[cp]; /* l owns the memory */
	c->woff = woff;
	c->wclen = wclen;
}

/* ---------------------------------------------------------------- decode */

static int bad(const char *what)
{
	return strata_err(EBADMSG, "corrupt layer index: %s", what);
}

static int valid_name(const char *s, uint32_t len)
{
	if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	return memchr(s, '/', len) == NULL && memchr(s, '\0', len) == NULL;
}

static int cmp_chunk_offset(const void *a, const void *b, void *arg)
{
	const struct index_chunk *chunks = arg;
	uint64_t x = chunks[*(const uint32_t *)a].offset, y = chunks[*(const uint32_t *)b].offset;

	return (x > y) - (x < y);
}

static int in_range(uint64_t off, uint64_t len, uint64_t limit)
{
	return off <= limit && len <= limit - off;
}

/* The header's size for its version, or 0 for a version this strata does not read. */
static size_t header_size(uint32_t version)
{
	if (version == INDEX_FORMAT_VERSION)
		return INDEX_HEADER_V2_SIZE;
	if (version == INDEX_FORMAT_VERSION_SPARSE)
		return sizeof(struct index_layer_header);
	return 0;
}

/* The header in mem (len bytes): magic, version, section sizes that add up to len, and sane counts.
 * Copies it into *h (a version 2 header gets no sparse sections). */
static int check_header(const void *mem, size_t len, struct index_layer_header *h)
{
	size_t hsize;
	uint64_t need;

	memset(h, 0, sizeof(*h));
	if (len < INDEX_HEADER_V2_SIZE || memcmp(mem, MAGIC, 8) != 0)
		return bad("bad magic");
	memcpy(h, mem, INDEX_HEADER_V2_SIZE);
	hsize = header_size(h->version);
	if (!hsize)
		return strata_err(EPROTO,
				  "layer index format version %u is not supported (this strata "
				  "reads versions %u and %u)",
				  h->version, INDEX_FORMAT_VERSION, INDEX_FORMAT_VERSION_SPARSE);
	if (len < hsize)
		return bad("short header");
	memcpy(h, mem, hsize);
	need = hsize + (uint64_t)h->ninodes * sizeof(struct index_inode) +
	       (uint64_t)h->ndirents * sizeof(struct index_dirent) +
	       (uint64_t)h->nchunks * sizeof(struct index_chunk) +
	       (uint64_t)h->nxattrs * sizeof(struct index_xattr) +
	       (uint64_t)h->ncheckpoints * sizeof(struct index_checkpoint) +
	       (uint64_t)h->nsparse * sizeof(struct index_sparse) +
	       (uint64_t)h->nextents * sizeof(struct index_extent);
	if (h->strtab_len > len || need != len - h->strtab_len)
		return bad("section sizes do not add up");
	if (h->ninodes == 0 || h->chunk_size < INDEX_MIN_CHUNK_SIZE ||
	    h->chunk_size > INDEX_MAX_CHUNK_SIZE || h->nextents > INDEX_MAX_EXTENTS)
		return bad("bad header");
	return 0;
}

/* Points a new index at the sections in mem, whose header check_header copied into *h. Returns NULL
 * on ENOMEM. */
static struct index_layer *map_sections(void *mem, const struct index_layer_header *h)
{
	struct index_layer *l = calloc(1, sizeof(*l));
	const char *p;

	if (!l)
		return NULL;
	l->mem = mem;
	l->h = *h;
	l->hdr = &l->h;
	p = (const char *)mem + header_size(h->version);
	l->inodes = (const void *)p;
	p += (size_t)h->ninodes * sizeof(struct index_inode);
	l->dirents = (const void *)p;
	p += (size_t)h->ndirents * sizeof(struct index_dirent);
	l->chunks = (const void *)p;
	p += (size_t)h->nchunks * sizeof(struct index_chunk);
	l->xattrs = (const void *)p;
	p += (size_t)h->nxattrs * sizeof(struct index_xattr);
	l->cps = (const void *)p;
	p += (size_t)h->ncheckpoints * sizeof(struct index_checkpoint);
	l->sparse = (const void *)p;
	p += (size_t)h->nsparse * sizeof(struct index_sparse);
	l->extents = (const void *)p;
	p += (size_t)h->nextents * sizeof(struct index_extent);
	l->strtab = p;
	return l;
}

/* The sparse records: sorted by ino, each a regular file marked sparse (and every marked file has
 * one), taking the extents in order, each file's extents sorted, apart, non-empty, inside its size,
 * their data offsets adding up to its data size. */
static int check_sparse(const struct index_layer *l)
{
	const struct index_layer_header *h = l->hdr;
	uint64_t next = 0, marked = 0;

	for (uint32_t i = 0; i < h->ninodes; i++)
		marked += (l->inodes[i].flags & INDEX_INODE_SPARSE) != 0;
	if (marked != h->nsparse)
		return bad("sparse files do not match their records");
	for (uint32_t i = 0; i < h->nsparse; i++) {
		const struct index_sparse *sp = &l->sparse[i];
		const struct index_inode *in;
		uint64_t end = 0, data = 0;

		if (sp->ino >= h->ninodes || (i > 0 && sp->ino <= l->sparse[i - 1].ino))
			return bad("sparse file records out of order");
		in = &l->inodes[sp->ino];
		if (!S_ISREG(in->mode) || !(in->flags & INDEX_INODE_SPARSE))
			return bad("sparse record of a file that is not sparse");
		if (sp->first != next || !in_range(sp->first, sp->count, h->nextents))
			return bad("sparse extents out of range");
		next += sp->count;
		for (uint32_t j = 0; j < sp->count; j++) {
			const struct index_extent *x = &l->extents[sp->first + j];

			if (x->len == 0 || (j > 0 && x->offset <= end) ||
			    !in_range(x->offset, x->len, in->size) || x->data_off != data)
				return bad("sparse extent invalid");
			end = x->offset + x->len;
			data += x->len;
		}
		if (data != sp->data_size)
			return bad("sparse extents do not add up");
	}
	if (next != h->nextents)
		return bad("sparse extents out of range");
	return 0;
}

/* Directory i's entries: in range, valid names, no cycles, sorted. */
static int check_dirents(const struct index_layer *l, uint32_t i)
{
	const struct index_layer_header *h = l->hdr;
	const struct index_inode *in = &l->inodes[i];

	if (!in_range(in->first, in->count, h->ndirents))
		return bad("directory entries out of range");
	for (uint32_t j = 0; j < in->count; j++) {
		const struct index_dirent *d = &l->dirents[in->first + j];

		if (!in_range(d->name_off, d->name_len, h->strtab_len) ||
		    !valid_name(l->strtab + d->name_off, d->name_len) || d->ino >= h->ninodes)
			return bad("directory entry invalid");
		/* Children that are directories come later in BFS order: no cycles. */
		if (S_ISDIR(l->inodes[d->ino].mode) && d->ino <= i)
			return bad("directory cycle");
		if (j > 0) {
			const struct index_dirent *pd = d - 1;
			uint32_t m = pd->name_len < d->name_len ? pd->name_len : d->name_len;
			int c = memcmp(l->strtab + pd->name_off, l->strtab + d->name_off, m);

			if (c > 0 || (c == 0 && pd->name_len >= d->name_len))
				return bad("directory entries not sorted");
		}
	}
	return 0;
}

/* Every inode: the root a directory, known types, xattrs, entries, chunks and targets in range. */
static int check_inodes(const struct index_layer *l)
{
	const struct index_layer_header *h = l->hdr;
	uint32_t sp = 0; /* the next sparse record: check_sparse sorted them by ino */
	int rc;

	if (!S_ISDIR(l->inodes[0].mode))
		return bad("root is not a directory");
	for (uint32_t i = 0; i < h->nxattrs; i++) {
		const struct index_xattr *x = &l->xattrs[i];

		if (!in_range(x->name_off, x->name_len, h->strtab_len) ||
		    !in_range(x->value_off, x->value_len, h->strtab_len) || x->name_len == 0)
			return bad("xattr out of range");
	}
	for (uint32_t i = 0; i < h->ninodes; i++) {
		const struct index_inode *in = &l->inodes[i];

		if (!in_range(in->xattr_first, in->nxattrs, h->nxattrs))
			return bad("inode xattrs out of range");
		switch (in->mode & S_IFMT) {
		case S_IFDIR:
			rc = check_dirents(l, i);
			if (rc < 0)
				return rc;
			break;
		case S_IFREG: {
			/* the bytes the chunks hold: a sparse file's data */
			uint64_t data = in->flags & INDEX_INODE_SPARSE ? l->sparse[sp++].data_size :
									 in->size;
			/* no rounding up by addition: a size near 2^64 would wrap */
			uint64_t want = data / h->chunk_size + (data % h->chunk_size != 0);

			if (!in_range(in->first, in->count, h->nchunks) || want != in->count)
				return bad("file chunks out of range");
			for (uint32_t j = 0; j < in->count; j++) {
				uint64_t sz = data - (uint64_t)j * h->chunk_size;

				if (sz > h->chunk_size)
					sz = h->chunk_size;
				if (l->chunks[in->first + j].size != sz)
					return bad("chunk size mismatch");
				if (!in_range(l->chunks[in->first + j].offset, sz, h->tar_size))
					return bad("chunk outside the tar stream");
				/* in stream order, none overlapping: spans are planned from them */
				if (j > 0 && l->chunks[in->first + j].offset <
						     l->chunks[in->first + j - 1].offset +
							     l->chunks[in->first + j - 1].size)
					return bad("file chunks out of order");
			}
			break;
		}
		case S_IFLNK:
			if (!in_range(in->first, in->size, h->strtab_len))
				return bad("symlink target out of range");
			break;
		case S_IFCHR:
		case S_IFBLK:
		case S_IFIFO:
		case S_IFSOCK:
			break;
		default:
			return bad("unknown file type");
		}
	}
	return 0;
}

/* Every directory but the root is named exactly once (no directory hard links). */
static int check_dir_links(const struct index_layer *l)
{
	const struct index_layer_header *h = l->hdr;
	uint8_t *seen = calloc(h->ninodes, 1);
	int rc = 0;

	if (!seen)
		return -ENOMEM;
	for (uint32_t i = 0; i < h->ndirents && rc == 0; i++) {
		uint32_t ino = l->dirents[i].ino;

		/* check_dirents saw only the entries some directory lists: not every one */
		if (ino >= h->ninodes)
			rc = bad("directory entry invalid");
		else if (S_ISDIR(l->inodes[ino].mode) && (ino == 0 || seen[ino]++))
			rc = bad("directory linked twice");
	}
	free(seen);
	return rc;
}

/* The blob kind and its checkpoints: known kinds, inside the blob, uoff increasing from 0. */
static int check_checkpoints(const struct index_layer *l)
{
	const struct index_layer_header *h = l->hdr;

	if (h->blob_kind > INDEX_BLOB_ZSTD)
		return bad("unknown blob kind");
	for (uint32_t i = 0; i < h->ncheckpoints; i++) {
		const struct index_checkpoint *cp = &l->cps[i];

		if (cp->kind > INDEX_CP_ZSTD_FRAME || cp->bits > 7 ||
		    cp->wlen > INDEX_ZRAN_WINDOW || cp->coff > h->blob_size ||
		    (cp->bits && cp->coff == 0) || (i > 0 && cp->uoff <= l->cps[i - 1].uoff) ||
		    (i > 0 && cp->coff < l->cps[i - 1].coff) || cp->uoff > h->tar_size ||
		    (i == 0 && cp->uoff != 0))
			return bad("invalid checkpoint");
	}
	if ((h->blob_kind == INDEX_BLOB_GZIP || h->blob_kind == INDEX_BLOB_ZSTD) &&
	    !h->ncheckpoints)
		return bad("compressed blob without checkpoints");
	return 0;
}

/* Validates a raw (uncompressed) index in mem and takes ownership of mem in all cases. */
static int decode_raw(void *mem, size_t len, struct index_layer **out)
{
	struct index_layer *l = NULL;
	struct index_layer_header hc;
	const struct index_layer_header *h = &hc;
	int rc;

	*out = NULL;
	rc = check_header(mem, len, &hc);
	if (rc < 0)
		goto fail;
	l = map_sections(mem, &hc);
	if (!l) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = check_sparse(l);
	if (rc < 0)
		goto fail;
	rc = check_inodes(l);
	if (rc < 0)
		goto fail;
	rc = check_dir_links(l);
	if (rc < 0)
		goto fail;
	rc = check_checkpoints(l);
	if (rc < 0)
		goto fail;
	l->by_offset = malloc((h->nchunks ? h->nchunks : 1) * sizeof(*l->by_offset));
	if (!l->by_offset) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < h->nchunks; i++)
		l->by_offset[i] = i;
	l->mem_len = len;
	qsort_r(l->by_offset, h->nchunks, sizeof(*l->by_offset), cmp_chunk_offset,
		(void *)l->chunks);
	*out = l;
	return 0;
fail:
	if (l)
		free(l->by_offset);
	free(l);
	free(mem);
	return rc;
}

int index_layer_decode(const void *buf, size_t len, struct index_layer **out)
{
	unsigned long long raw = ZSTD_getFrameContentSize(buf, len);
	ZSTD_DStream *ds = NULL;
	ZSTD_inBuffer in = { buf, len, 0 };
	ZSTD_outBuffer ob = { NULL, 0, 0 };
	size_t r = 1;
	int rc;

	*out = NULL;
	if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN)
		return bad("not a zstd frame with a known size");
	if (raw > INDEX_MAX_DECODED)
		return strata_err(EBADMSG,
				  "corrupt layer index: it claims %llu bytes, more than %llu", raw,
				  (unsigned long long)INDEX_MAX_DECODED);
	/* Memory grows with what really decodes, not with what the frame header claims. */
	ds = ZSTD_createDStream();
	if (!ds)
		return -ENOMEM;
	ob.size = raw < (1u << 20) ? (size_t)raw : (1u << 20);
	ob.dst = malloc(ob.size ? ob.size : 1);
	if (!ob.dst) {
		rc = -ENOMEM;
		goto fail;
	}
	while (r != 0) {
		if (ob.pos == ob.size) {
			size_t grow = ob.size * 2 < raw ? ob.size * 2 : (size_t)raw;
			void *p;

			if (grow == ob.size) { /* more than the frame said */
				rc = bad("frame longer than its header says");
				goto fail;
			}
			p = realloc(ob.dst, grow);
			if (!p) {
				rc = -ENOMEM;
				goto fail;
			}
			ob.dst = p;
			ob.size = grow;
		}
		r = ZSTD_decompressStream(ds, &ob, &in);
		if (ZSTD_isError(r)) {
			rc = bad(ZSTD_getErrorName(r));
			goto fail;
		}
		if (r != 0 && in.pos == in.size && ob.pos < ob.size) {
			rc = bad("short frame");
			goto fail;
		}
	}
	ZSTD_freeDStream(ds);
	if (ob.pos != raw) {
		free(ob.dst);
		return bad("short frame");
	}
	return decode_raw(ob.dst, ob.pos, out);
fail:
	ZSTD_freeDStream(ds);
	free(ob.dst);
	return rc;
}

void index_layer_free(struct index_layer *l)
{
	if (!l)
		return;
	free(l->by_offset);
	free(l->mem);
	free(l);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for eStargz: footers, TOC parsing, tar semantics, and chunk extraction from the blob. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <jansson.h>
#include <zlib.h>

#include "gzipw.h"
#include "index/estargz.h"
#include "index/layer.h"
#include "layerq.h"
#include "tarw.h"
#include "util/log.h"
#include "util/sha256.h"

#define CS 4096u /* the converter's chunk size in these blobs */

/* ---------------------------------------------------------------- an in-test eStargz writer */

struct esgz {
	struct bytebuf blob; /* compressed output */
	struct bytebuf pend; /* uncompressed bytes of the open gzip member */
	uint64_t tar_off;    /* uncompressed tar offset (for padding) */
	json_t *entries;
	uint64_t member; /* compressed offset of the open member */
	uint64_t toc_off;
};

static void w_init(struct esgz *w)
{
	memset(w, 0, sizeof(*w));
	w->entries = json_array();
}

/* Closes the open gzip member (if it holds anything) and opens a new one. */
static void w_flush(struct esgz *w)
{
	if (w->pend.len)
		gzip_append(&w->blob, w->pend.p, w->pend.len, 9, 0);
	w->pend.len = 0;
	w->member = w->blob.len;
}

static void w_put(struct esgz *w, const void *p, size_t n)
{
	bytebuf_put(&w->pend, p, n);
	w->tar_off += n;
}

static void w_pad(struct esgz *w)
{
	static const uint8_t zero[512];

	if (w->tar_off % 512)
		w_put(w, zero, 512 - w->tar_off % 512);
}

static void w_header(struct esgz *w, const char *name, char type, unsigned mode, uint64_t size,
		     const char *link)
{
	struct bytebuf h = { 0 };

	tarw_header(&h, name, type, mode, size, link, 1700000000);
	w_put(w, h.p, h.len);
	free(h.p);
}

static json_t *w_entry(struct esgz *w, const char *name, const char *type, unsigned mode)
{
	json_t *e = json_object();

	json_object_set_new(e, "name", json_string(name));
	json_object_set_new(e, "type", json_string(type));
	if (mode)
		json_object_set_new(e, "mode", json_integer(mode));
	json_object_set_new(e, "modtime", json_string("2023-11-14T22:13:20Z"));
	json_array_append_new(w->entries, e);
	return e;
}

static void set_digest(json_t *e, const char *key, const void *data, size_t len)
{
	uint8_t d[32];
	char s[UTIL_DIGEST_STR_LEN];

	util_sha256(data, len, d);
	util_digest_format(d, s);
	json_object_set_new(e, key, json_string(s));
}

/* A regular file, split every CS bytes, each chunk starting a new gzip member (as the converter). */
static json_t *w_file(struct esgz *w, const char *name, const void *data, size_t size)
{
	json_t *reg = w_entry(w, name, "reg", 0644), *e = reg;

	w_header(w, name, '0', 0644, size, NULL);
	json_object_set_new(reg, "size", json_integer((json_int_t)size));
	set_digest(reg, "digest", data, size);
	for (size_t off = 0; off < size; off += CS) {
		size_t n = size - off < CS ? size - off : CS;

		w_flush(w);
		if (off) {
			e = json_object();
			json_object_set_new(e, "name", json_string(name));
			json_object_set_new(e, "type", json_string("chunk"));
			json_array_append_new(w->entries, e);
		}
		json_object_set_new(e, "offset", json_integer((json_int_t)w->member));
		if (off)
			json_object_set_new(e, "chunkOffset", json_integer((json_int_t)off));
		if (n == CS && size > CS)
			json_object_set_new(e, "chunkSize", json_integer(CS));
		set_digest(e, "chunkDigest", (const uint8_t *)data + off, n);
		w_put(w, (const uint8_t *)data + off, n);
	}
	w_pad(w);
	return reg;
}

/* A regular file in one chunk of its own, however big (as a converter with a larger chunk size
 * writes it). */
static void w_one_chunk_file(struct esgz *w, const char *name, const void *data, size_t size)
{
	json_t *e = w_entry(w, name, "reg", 0644);

	w_header(w, name, '0', 0644, size, NULL);
	w_flush(w);
	json_object_set_new(e, "size", json_integer((json_int_t)size));
	json_object_set_new(e, "offset", json_integer((json_int_t)w->member));
	set_digest(e, "chunkDigest", data, size);
	w_put(w, data, size);
	w_pad(w);
}

/* A small file packed into the open member after the previous one ("innerOffset"). */
static json_t *w_packed_file(struct esgz *w, const char *name, const void *data, size_t size)
{
	json_t *e = w_entry(w, name, "reg", 0600);

	w_header(w, name, '0', 0600, size, NULL);
	json_object_set_new(e, "size", json_integer((json_int_t)size));
	json_object_set_new(e, "offset", json_integer((json_int_t)w->member));
	json_object_set_new(e, "innerOffset", json_integer((json_int_t)w->pend.len));
	set_digest(e, "digest", data, size);
	set_digest(e, "chunkDigest", data, size);
	w_put(w, data, size);
	w_pad(w);
	return e;
}

static json_t *w_other(struct esgz *w, const char *name, const char *type, char tartype,
		       unsigned mode, const char *link)
{
	json_t *e = w_entry(w, name, type, mode);

	w_header(w, name, tartype, mode, 0, link);
	if (link)
		json_object_set_new(e, "linkName", json_string(link));
	return e;
}

static void footer(uint8_t out[51], uint64_t toc_off)
{
	static const uint8_t hdr[10] = { 0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff };
	static const uint8_t tail[13] = { 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0 };
	char sub[23];

	memcpy(out, hdr, 10);
	out[10] = 26;
	out[11] = 0;
	out[12] = 'S';
	out[13] = 'G';
	out[14] = 22;
	out[15] = 0;
	snprintf(sub, sizeof(sub), "%016llxSTARGZ", (unsigned long long)toc_off);
	memcpy(out + 16, sub, 22);
	memcpy(out + 38, tail, 13);
}

/* A TOC member: gzip of a tar whose one entry is `name` holding json. */
static void toc_member(struct bytebuf *out, const char *name, const char *json)
{
	struct bytebuf t = { 0 };

	tarw_file(&t, name, json, strlen(json));
	tarw_end(&t);
	gzip_append(out, t.p, t.len, 9, 0);
	free(t.p);
}

/* Writes the end of the tar, the TOC member and the footer. */
static void w_close(struct esgz *w)
{
	json_t *toc = json_object();
	char *s;
	uint8_t f[51];

	w_flush(w);
	w->toc_off = w->blob.len;
	json_object_set_new(toc, "version", json_integer(1));
	json_object_set(toc, "entries", w->entries);
	s = json_dumps(toc, JSON_INDENT(1));
	toc_member(&w->blob, "stargz.index.json", s);
	free(s);
	json_decref(toc);
	footer(f, w->toc_off);
	bytebuf_put(&w->blob, f, sizeof(f));
}

static void w_free(struct esgz *w)
{
	free(w->blob.p);
	free(w->pend.p);
	json_decref(w->entries);
}

/* ---------------------------------------------------------------- helpers */

static int build_blob(const struct esgz *w, struct index_layer **l)
{
	uint64_t toc_off;
	size_t fs;
	const uint8_t *tail = w->blob.p + w->blob.len - INDEX_ESTARGZ_TAIL;

	assert_int_equal(index_estargz_footer(tail, INDEX_ESTARGZ_TAIL, w->blob.len, &toc_off, &fs),
			 0);
	assert_int_equal(toc_off, w->toc_off);
	assert_int_equal(fs, 51);
	return index_estargz_build(w->blob.p + toc_off, w->blob.len - fs - toc_off, toc_off,
				   w->blob.len, l);
}

/* Plans and extracts every chunk from exactly its span's bytes and checks its digest; also decodes
 * each span's whole virtual range [ustart, uend) as fs/ does and checks every chunk inside it. */
static void check_chunks(const struct index_layer *l, const uint8_t *blob, size_t blob_len)
{
	assert_int_equal(index_layer_blob_kind(l), INDEX_BLOB_GZIP);
	assert_int_equal(index_layer_blob_size(l), blob_len);
	for (uint32_t i = 0; i < index_layer_nchunks(l); i++) {
		const struct index_chunk *c = index_layer_chunk(l, i);
		struct index_span sp;
		uint8_t *out = malloc(c->size), *all;
		uint8_t d[32];

		assert_int_equal(index_layer_span(l, c->offset, c->offset + c->size, &sp), 0);
		assert_true(sp.cstart < sp.cend && sp.cend <= blob_len);
		assert_true(sp.ustart <= c->offset && sp.uend >= c->offset + c->size);
		assert_int_equal(index_layer_checkpoint(l, sp.cp)->kind, INDEX_CP_GZIP_MEMBER);
		assert_int_equal(index_layer_extract(l, &sp, NULL, blob + sp.cstart,
						     sp.cend - sp.cstart, c->offset, out, c->size),
				 0);
		util_sha256(out, c->size, d);
		assert_memory_equal(d, c->digest, 32);
		free(out);

		all = malloc(sp.uend - sp.ustart);
		assert_int_equal(index_layer_extract(l, &sp, NULL, blob + sp.cstart,
						     sp.cend - sp.cstart, sp.ustart, all,
						     sp.uend - sp.ustart),
				 0);
		for (uint32_t k = index_layer_chunk_rank(l, sp.ustart); k < index_layer_nchunks(l);
		     k++) {
			const struct index_chunk *o =
				index_layer_chunk(l, index_layer_chunk_by_offset(l, k));

			if (o->offset + o->size > sp.uend)
				break;
			util_sha256(all + (o->offset - sp.ustart), o->size, d);
			assert_memory_equal(d, o->digest, 32);
		}
		free(all);
	}
}

/* Reads file ino's content through its chunks. */
static uint8_t *read_file(const struct index_layer *l, uint32_t ino, const uint8_t *blob)
{
	const struct index_inode *in = index_layer_inode(l, ino);
	uint8_t *buf = malloc(in->size ? in->size : 1);
	uint64_t at = 0;

	for (uint32_t k = 0; k < in->count; k++) {
		const struct index_chunk *c = index_layer_chunk(l, in->first + k);
		struct index_span sp;

		assert_int_equal(index_layer_span(l, c->offset, c->offset + c->size, &sp), 0);
		assert_int_equal(index_layer_extract(l, &sp, NULL, blob + sp.cstart,
						     sp.cend - sp.cstart, c->offset, buf + at,
						     c->size),
				 0);
		at += c->size;
	}
	assert_int_equal(at, in->size);
	return buf;
}

/* ---------------------------------------------------------------- tests */

static void test_footer(void **state)
{
	uint8_t blob[200], legacy[47];
	uint64_t off = 0;
	size_t fs = 0;

	(void)state;
	memset(blob, 0, sizeof(blob));
	footer(blob + sizeof(blob) - 51, 0x42);
	assert_int_equal(index_estargz_footer(blob + 100, 100, sizeof(blob), &off, &fs), 0);
	assert_int_equal(off, 0x42);
	assert_int_equal(fs, 51);
	/* the footer is itself a valid empty gzip member */
	{
		uint8_t out[4];
		uLongf n = sizeof(out);
		z_stream z;

		memset(&z, 0, sizeof(z));
		assert_int_equal(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
		z.next_in = blob + sizeof(blob) - 51;
		z.avail_in = 51;
		z.next_out = out;
		z.avail_out = (uInt)n;
		assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
		assert_int_equal(z.total_out, 0);
		assert_int_equal(z.avail_in, 0);
		inflateEnd(&z);
	}
	/* the whole blob may be shorter than the tail when it is tiny: not eStargz */
	assert_int_equal(index_estargz_footer(blob, 10, 10, &off, &fs), -ENOENT);
	/* too few tail bytes of a big blob */
	assert_int_equal(index_estargz_footer(blob + 190, 10, sizeof(blob), &off, &fs), -EINVAL);
	/* TOC offset past the footer */
	footer(blob + sizeof(blob) - 51, sizeof(blob) - 51);
	assert_int_equal(index_estargz_footer(blob + 100, 100, sizeof(blob), &off, &fs), -EBADMSG);
	/* wrong subfield id, bad hex: not eStargz */
	footer(blob + sizeof(blob) - 51, 0x42);
	blob[sizeof(blob) - 51 + 12] = 'X';
	assert_int_equal(index_estargz_footer(blob + 100, 100, sizeof(blob), &off, &fs), -ENOENT);
	footer(blob + sizeof(blob) - 51, 0x42);
	blob[sizeof(blob) - 51 + 16] = 'g';
	assert_int_equal(index_estargz_footer(blob + 100, 100, sizeof(blob), &off, &fs), -ENOENT);

	/* legacy stargz: XLEN 22, the extra field is "%016xSTARGZ" itself */
	{
		static const uint8_t hdr[10] = { 0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff };
		char sub[23];

		memcpy(legacy, hdr, 10);
		legacy[10] = 22;
		legacy[11] = 0;
		snprintf(sub, sizeof(sub), "%016llxSTARGZ", 0x1234ull);
		memcpy(legacy + 12, sub, 22);
		memcpy(legacy + 34, "\x01\x00\x00\xff\xff\0\0\0\0\0\0\0\0", 13);
		memset(blob, 0, sizeof(blob));
		memcpy(blob + sizeof(blob) - 47, legacy, 47);
		off = 0;
		assert_int_equal(index_estargz_footer(blob + 100, 100, 0x10000, &off, &fs), 0);
		assert_int_equal(off, 0x1234);
		assert_int_equal(fs, 47);
	}

	/* a plain gzip blob's tail */
	{
		struct bytebuf g = { 0 };
		uint8_t data[1000];

		fill_pattern(data, sizeof(data), 7);
		gzip_append(&g, data, sizeof(data), 9, 0);
		assert_int_equal(index_estargz_footer(g.p + g.len - 51, 51, g.len, &off, &fs),
				 -ENOENT);
		free(g.p);
	}
}

/* The layer of test_build: every entry type, a file in several chunks, two files in one member. */
struct sample {
	uint8_t big[3 * CS + 100], small[100], a[700], b[300];
};

/* Writes s into w (w_init'ed here; w_close'd). */
static void write_sample(struct esgz *w, struct sample *s)
{
	json_t *e;

	fill_pattern(s->big, sizeof(s->big), 1);
	fill_pattern(s->small, sizeof(s->small), 2);
	fill_pattern(s->a, sizeof(s->a), 3);
	fill_pattern(s->b, sizeof(s->b), 4);
	w_init(w);
	{
		static const uint8_t lm = 0xf;

		w_file(w, ".no.prefetch.landmark", &lm, 1);
	}
	w_other(w, "./etc/", "dir", '5', 0750, NULL);
	e = w_file(w, "./etc/big.bin", s->big, sizeof(s->big));
	json_object_set_new(e, "uid", json_integer(1000));
	json_object_set_new(e, "gid", json_integer(2000));
	json_object_set_new(e, "modtime", json_string("2021-02-03T04:05:06Z"));
	e = w_file(w, "etc/small", s->small, sizeof(s->small));
	{
		json_t *x = json_object();

		json_object_set_new(x, "user.k", json_string("dmFsdWU=")); /* "value" */
		json_object_set_new(x, "security.capability",
				    json_string("AAECAw==")); /* 00 01 02 03 */
		json_object_set_new(e, "xattrs", x);
	}
	/* two files in one member: the second one at innerOffset > 0 */
	w_file(w, "pack/a", s->a, sizeof(s->a));
	w_packed_file(w, "pack/b", s->b, sizeof(s->b));
	w_file(w, "deep/er/file", s->small, 10); /* implicit parents */
	w_other(w, "etc/link", "symlink", '2', 0644, "small");
	w_other(w, "etc/hard", "hardlink", '1', 0644, "./etc/small");
	w_other(w, "etc/.wh.gone", "reg", '0', 0644, NULL);
	w_other(w, "opq/.wh..wh..opq", "reg", '0', 0644, NULL);
	w_other(w, "opq/keep", "reg", '0', 0644, NULL);
	e = w_other(w, "dev/null", "char", '3', 0666, NULL);
	json_object_set_new(e, "devMajor", json_integer(1));
	json_object_set_new(e, "devMinor", json_integer(3));
	w_other(w, "dev/fifo", "fifo", '6', 0600, NULL);
	w_file(w, "etc/empty", NULL, 0);
	w_close(w);
}

/* The sample's regular files read back through their chunks from blob. */
static void check_sample_files(const struct index_layer *l, const struct sample *s,
			       const uint8_t *blob)
{
	const struct index_inode *in;
	int64_t ino;
	uint8_t *got;

	/* the big file: 4 chunks, content intact through the blob */
	ino = walk(l, "etc/big.bin");
	in = index_layer_inode(l, (uint32_t)ino);
	assert_int_equal(in->mode, S_IFREG | 0644);
	assert_int_equal(in->uid, 1000);
	assert_int_equal(in->gid, 2000);
	assert_int_equal(in->mtime_sec, 1612325106);
	assert_int_equal(in->mtime_nsec, 0);
	assert_int_equal(in->size, sizeof(s->big));
	assert_int_equal(in->count, 4);
	got = read_file(l, (uint32_t)ino, blob);
	assert_memory_equal(got, s->big, sizeof(s->big));
	free(got);

	/* packed files */
	got = read_file(l, (uint32_t)walk(l, "pack/a"), blob);
	assert_memory_equal(got, s->a, sizeof(s->a));
	free(got);
	ino = walk(l, "pack/b");
	in = index_layer_inode(l, (uint32_t)ino);
	assert_int_equal(in->mode, S_IFREG | 0600);
	got = read_file(l, (uint32_t)ino, blob);
	assert_memory_equal(got, s->b, sizeof(s->b));
	free(got);
	{
		const struct index_chunk *ca =
			index_layer_chunk(l,
					  index_layer_inode(l, (uint32_t)walk(l, "pack/a"))->first);
		const struct index_chunk *cb = index_layer_chunk(l, in->first);

		assert_int_equal(cb->offset - ca->offset, 1024 + 512); /* a padded, b's header */
	}
}

/* The sample's other entries: landmark and TOC, directories, xattrs, links, whiteouts, devices. */
static void check_sample_entries(const struct index_layer *l)
{
	const struct index_inode *in;
	uint32_t xl;
	const char *xv;
	int64_t ino, ino2;

	/* what tar -x of the blob shows: the landmark, and the TOC as the tar's last file */
	assert_true(walk(l, ".no.prefetch.landmark") > 0);
	in = index_layer_inode(l, (uint32_t)walk(l, "stargz.index.json"));
	assert_true(S_ISREG(in->mode));
	assert_true(in->size > 100 && in->count >= 1);
	/* dirs, modes, ownership, mtimes */
	ino = walk(l, "etc");
	assert_true(ino > 0);
	in = index_layer_inode(l, (uint32_t)ino);
	assert_int_equal(in->mode, S_IFDIR | 0750);
	assert_int_equal(in->flags, 0);
	assert_int_equal(in->mtime_sec, 1700000000);
	in = index_layer_inode(l, (uint32_t)walk(l, "deep/er"));
	assert_int_equal(in->mode, S_IFDIR | 0755);
	assert_int_equal(in->flags, INDEX_INODE_IMPLICIT);

	/* xattrs decoded from base64 */
	ino = walk(l, "etc/small");
	xv = xattr(l, (uint32_t)ino, "user.k", &xl);
	assert_non_null(xv);
	assert_int_equal(xl, 5);
	assert_memory_equal(xv, "value", 5);
	xv = xattr(l, (uint32_t)ino, "security.capability", &xl);
	assert_non_null(xv);
	assert_int_equal(xl, 4);
	assert_memory_equal(xv, "\0\1\2\3", 4);

	/* hard link shares the inode; symlink is 0777 */
	ino2 = walk(l, "etc/hard");
	assert_int_equal(ino2, ino);
	assert_int_equal(index_layer_inode(l, (uint32_t)ino)->nlink, 2);
	in = index_layer_inode(l, (uint32_t)walk(l, "etc/link"));
	assert_int_equal(in->mode, S_IFLNK | 0777);
	assert_int_equal(in->size, 5);
	assert_memory_equal(index_layer_str(l, in->first), "small", 5);

	/* whiteout and opaque dir */
	in = index_layer_inode(l, (uint32_t)walk(l, "etc/gone"));
	assert_int_equal(in->mode & S_IFMT, S_IFCHR);
	assert_int_equal(in->rdev, makedev(0, 0));
	assert_int_equal(walk(l, "etc/.wh.gone"), -ENOENT);
	ino = walk(l, "opq");
	xv = xattr(l, (uint32_t)ino, "trusted.overlay.opaque", &xl);
	assert_non_null(xv);
	assert_int_equal(xl, 1);
	assert_int_equal(xv[0], 'y');
	assert_true(walk(l, "opq/keep") > 0);
	assert_int_equal(walk(l, "opq/.wh..wh..opq"), -ENOENT);

	/* devices */
	in = index_layer_inode(l, (uint32_t)walk(l, "dev/null"));
	assert_int_equal(in->mode, S_IFCHR | 0666);
	assert_int_equal(in->rdev, makedev(1, 3));
	in = index_layer_inode(l, (uint32_t)walk(l, "dev/fifo"));
	assert_int_equal(in->mode, S_IFIFO | 0600);
	in = index_layer_inode(l, (uint32_t)walk(l, "etc/empty"));
	assert_int_equal(in->size, 0);
	assert_int_equal(in->count, 0);
}

static void test_build(void **state)
{
	struct esgz w;
	struct index_layer *l = NULL;
	struct sample *s = malloc(sizeof(*s));

	(void)state;
	assert_non_null(s);
	write_sample(&w, s);
	assert_int_equal(build_blob(&w, &l), 0);
	assert_non_null(l);
	assert_int_equal(index_layer_chunk_size(l), CS);
	check_sample_entries(l);
	check_sample_files(l, s, w.blob.p);

	/* every chunk from its own span */
	check_chunks(l, w.blob.p, w.blob.len);
	/* the last data member's span stops one byte into the TOC member */
	{
		uint32_t n = index_layer_ncheckpoints(l);
		const struct index_checkpoint *last = index_layer_checkpoint(l, n - 1);

		assert_int_equal(last->coff, w.toc_off);
		assert_int_equal(index_layer_checkpoint(l, 0)->coff, 0);
		assert_int_equal(index_layer_checkpoint(l, 0)->uoff, 0);
	}

	/* the index survives its own encoding and validation */
	{
		void *enc = NULL;
		size_t enc_len = 0;
		struct index_layer *l2 = NULL;

		assert_int_equal(index_layer_encode(l, &enc, &enc_len), 0);
		assert_int_equal(index_layer_decode(enc, enc_len, &l2), 0);
		assert_int_equal(index_layer_nchunks(l2), index_layer_nchunks(l));
		check_chunks(l2, w.blob.p, w.blob.len);
		index_layer_free(l2);
		free(enc);
	}
	index_layer_free(l);
	w_free(&w);
	free(s);
}

/* Only single-chunk files: the index chunk size is the largest one (at least the minimum). */
static void test_chunk_size(void **state)
{
	struct esgz w;
	struct index_layer *l = NULL;
	size_t n = 10000;
	uint8_t *data = malloc(n);

	(void)state;
	fill_pattern(data, n, 9);
	w_init(&w);
	/* one 10000-byte chunk, as a converter with a larger chunk size writes it */
	w_one_chunk_file(&w, "f", data, n);
	w_file(&w, "g", data, 100);
	w_close(&w);
	assert_int_equal(build_blob(&w, &l), 0);
	assert_int_equal(index_layer_chunk_size(l), n);
	check_chunks(l, w.blob.p, w.blob.len);
	index_layer_free(l);
	w_free(&w);

	/* tiny files only: the minimum chunk size */
	w_init(&w);
	w_file(&w, "g", data, 100);
	w_close(&w);
	assert_int_equal(build_blob(&w, &l), 0);
	assert_int_equal(index_layer_chunk_size(l), INDEX_MIN_CHUNK_SIZE);
	check_chunks(l, w.blob.p, w.blob.len);
	index_layer_free(l);
	w_free(&w);

	/* a split file plus a single chunk larger than the split size: irregular */
	w_init(&w);
	w_file(&w, "split", data, 2 * CS + 5);
	w_one_chunk_file(&w, "f", data, n);
	w_close(&w);
	assert_int_equal(build_blob(&w, &l), -ENOTSUP);
	assert_null(l);
	w_free(&w);
	free(data);
}

/* Builds from a TOC member holding json, as if the blob had data up to toc_off = 1000. */
static int build_json(const char *json)
{
	struct bytebuf t = { 0 };
	struct index_layer *l = NULL;
	int rc;

	toc_member(&t, "stargz.index.json", json);
	rc = index_estargz_build(t.p, t.len, 1000, 1000 + t.len + 51, &l);
	if (rc == 0) {
		assert_non_null(l);
		index_layer_free(l);
	} else {
		assert_null(l);
	}
	free(t.p);
	return rc;
}

#define D1 "\"sha256:0000000000000000000000000000000000000000000000000000000000000001\""

static void test_malformed(void **state)
{
	struct bytebuf t = { 0 };
	struct index_layer *l = NULL;

	(void)state;
	/* a minimal valid TOC */
	assert_int_equal(build_json("{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\","
				    "\"size\":5,\"offset\":100,\"chunkDigest\":" D1 "}]}"),
			 0);
	assert_int_equal(build_json("{\"version\":1,\"entries\":[]}"), 0);
	/* bad JSON */
	assert_int_equal(build_json("{\"version\":1,\"entries\":[{\"name\":"), -EBADMSG);
	assert_int_equal(build_json("[1,2]"), -EBADMSG);
	assert_int_equal(build_json("{\"version\":1}"), -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\"}]}"), -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"socket\"}]}"),
			 -EBADMSG);
	assert_int_equal(build_json(
				 "{\"entries\":[{\"name\":\"a\",\"type\":\"dir\",\"mode\":\"x\"}]}"),
			 -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"dir\","
				    "\"modtime\":\"yesterday\"}]}"),
			 -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"dir\","
				    "\"xattrs\":{\"user.a\":\"!!!\"}}]}"),
			 -EBADMSG);
	/* chunk beyond the data (at or past the TOC) */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":1000,\"chunkDigest\":" D1 "}]}"),
			 -EBADMSG);
	/* a chunk entry with no file before it, chunks that do not add up */
	assert_int_equal(build_json("{\"entries\":[{\"type\":\"chunk\",\"offset\":5}]}"), -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":9000,"
				    "\"offset\":10,\"chunkSize\":4096,\"chunkDigest\":" D1 "}]}"),
			 -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":9000,"
				    "\"offset\":10,\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":20,\"chunkOffset\":4000,"
				    "\"chunkDigest\":" D1 "}]}"),
			 -EBADMSG);
	/* a bad digest; a hard link to nothing; a path below a file */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100,\"chunkDigest\":\"sha256:12\"}]}"),
			 -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"hardlink\","
				    "\"linkName\":\"b\"}]}"),
			 -EBADMSG);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"fifo\"},"
				    "{\"name\":\"a/b\",\"type\":\"fifo\"}]}"),
			 -EBADMSG);
	/* files split at two sizes; no chunk digest at all */
	assert_int_equal(
		build_json(
			"{\"entries\":["
			"{\"name\":\"a\",\"type\":\"reg\",\"size\":9000,\"offset\":10,"
			"\"chunkSize\":8192,\"chunkDigest\":" D1 "},"
			"{\"type\":\"chunk\",\"offset\":20,\"chunkOffset\":8192,\"chunkDigest\":" D1
			"},"
			"{\"name\":\"b\",\"type\":\"reg\",\"size\":9000,\"offset\":30,"
			"\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
			"{\"type\":\"chunk\",\"offset\":40,\"chunkOffset\":4096,\"chunkSize\":4096,\"chunkDigest\":" D1
			"},"
			"{\"type\":\"chunk\",\"offset\":50,\"chunkOffset\":8192,\"chunkDigest\":" D1
			"}"
			"]}"),
		-ENOTSUP);
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100}]}"),
			 -ENOTSUP);
	/* legacy: a whole-file digest stands in for a single chunk's */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100,\"digest\":" D1 "}]}"),
			 0);

	/* not gzip; a tar whose first entry is something else */
	memset(&t, 0, sizeof(t));
	bytebuf_put(&t, "not gzip at all", 15);
	assert_int_equal(index_estargz_build(t.p, t.len, 1000, 1000 + t.len + 51, &l), -EBADMSG);
	free(t.p);
	memset(&t, 0, sizeof(t));
	toc_member(&t, "other.json", "{\"entries\":[]}");
	assert_int_equal(index_estargz_build(t.p, t.len, 1000, 1000 + t.len + 51, &l), -EBADMSG);
	/* truncated member */
	assert_int_equal(index_estargz_build(t.p, t.len / 2, 1000, 1000 + t.len + 51, &l),
			 -EBADMSG);
	/* a TOC range outside the blob */
	assert_int_equal(index_estargz_build(t.p, t.len, 1000, 1000, &l), -EINVAL);
	assert_null(l);
	free(t.p);
	/* stargz.index.json as a GNU sparse file: its holes are no JSON */
	memset(&t, 0, sizeof(t));
	{
		struct bytebuf tar = { 0 };
		struct tarw_pax p = { .len = 0 };
		struct tarw_hdr h = { .name = "stargz.index.json", .type = '0', .size = 14 };

		tarw_pax_adds(&p, "GNU.sparse.size", "100");
		tarw_pax_adds(&p, "GNU.sparse.map", "0,14,100,0");
		tarw_put_pax(&tar, 'x', &p);
		tarw_put_file(&tar, &h, "{\"entries\":[]}");
		tarw_end(&tar);
		gzip_append(&t, tar.p, tar.len, 9, 0);
		free(tar.p);
	}
	assert_int_equal(index_estargz_build(t.p, t.len, 1000, 1000 + t.len + 51, &l), -EBADMSG);
	assert_non_null(strstr(strata_errmsg(EBADMSG), "sparse"));
	free(t.p);
}

/* Finding 4: a TOC (verified against its annotation) that lists a file's chunks out of compressed
 * order, or gives two chunks the same bytes of a member, is refused when it is read, not left to
 * an assert in the span planning of a later read. */
static void test_lying_layout(void **state)
{
	uint8_t tail[10];

	(void)state;
	/* in order: fine */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":9000,"
				    "\"offset\":10,\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":20,\"chunkOffset\":4096,"
				    "\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":30,\"chunkOffset\":8192,"
				    "\"chunkDigest\":" D1 "}]}"),
			 0);
	/* the second chunk before the first in the blob */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":9000,"
				    "\"offset\":30,\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":20,\"chunkOffset\":4096,"
				    "\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":40,\"chunkOffset\":8192,"
				    "\"chunkDigest\":" D1 "}]}"),
			 -EBADMSG);
	assert_non_null(strstr(strata_errmsg(-EBADMSG),
			       "entry 1: chunk at compressed offset 20+0 is out of order"));
	/* the same member and inner offset twice in one file */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":9000,"
				    "\"offset\":30,\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":30,\"chunkOffset\":4096,"
				    "\"chunkSize\":4096,\"chunkDigest\":" D1 "},"
				    "{\"type\":\"chunk\",\"offset\":40,\"chunkOffset\":8192,"
				    "\"chunkDigest\":" D1 "}]}"),
			 -EBADMSG);
	/* two files in the same bytes of one member */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100,\"chunkDigest\":" D1 "},"
				    "{\"name\":\"b\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100,\"innerOffset\":3,\"chunkDigest\":" D1 "}]}"),
			 -EBADMSG);
	assert_non_null(strstr(strata_errmsg(-EBADMSG),
			       "two chunks overlap in the gzip member at compressed offset 100"));
	/* ... one after the other in it is fine */
	assert_int_equal(build_json("{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100,\"chunkDigest\":" D1 "},"
				    "{\"name\":\"b\",\"type\":\"reg\",\"size\":5,"
				    "\"offset\":100,\"innerOffset\":5,\"chunkDigest\":" D1 "}]}"),
			 0);
	/* a footer tail longer than the blob is an error, not an assert */
	{
		uint64_t off = 0;
		size_t fs = 0;

		memset(tail, 0, sizeof(tail));
		assert_int_equal(index_estargz_footer(tail, sizeof(tail), 5, &off, &fs), -EINVAL);
	}
}

/* Later entries replace earlier ones; ".." and "./" names are cleaned; fractional modtimes. */
static void test_semantics(void **state)
{
	struct index_layer *l = NULL;
	struct bytebuf t = { 0 };
	const struct index_inode *in;
	const char *json =
		"{\"version\":1,\"entries\":["
		"{\"name\":\"./\",\"type\":\"dir\",\"mode\":448,\"modtime\":\"2020-01-01T00:00:00+01:00\"},"
		"{\"name\":\"x\",\"type\":\"reg\",\"size\":5,\"offset\":100,\"chunkDigest\":" D1
		"},"
		"{\"name\":\"x\",\"type\":\"symlink\",\"linkName\":\"../t\"},"
		"{\"name\":\"../../y/\",\"type\":\"dir\",\"modtime\":\"2020-01-01T00:00:00.25Z\"},"
		"{\"name\":\"/y/z\",\"type\":\"block\",\"devMajor\":8,\"devMinor\":1,\"uid\":5}"
		"]}";

	(void)state;
	toc_member(&t, "stargz.index.json", json);
	assert_int_equal(index_estargz_build(t.p, t.len, 1000, 1000 + t.len + 51, &l), 0);
	in = index_layer_inode(l, 0);
	assert_int_equal(in->mode, S_IFDIR | 0700);
	assert_int_equal(in->mtime_sec, 1577833200);
	in = index_layer_inode(l, (uint32_t)walk(l, "x"));
	assert_int_equal(in->mode, S_IFLNK | 0777);
	assert_memory_equal(index_layer_str(l, in->first), "../t", 4);
	/* the replaced file's chunk is gone; what is left is stargz.index.json's */
	assert_int_equal(index_layer_nchunks(l), 1);
	assert_true(walk(l, "stargz.index.json") > 0);
	in = index_layer_inode(l, (uint32_t)walk(l, "y"));
	assert_int_equal(in->mtime_sec, 1577836800);
	assert_int_equal(in->mtime_nsec, 250000000);
	in = index_layer_inode(l, (uint32_t)walk(l, "y/z"));
	assert_int_equal(in->mode, S_IFBLK);
	assert_int_equal(in->rdev, makedev(8, 1));
	assert_int_equal(in->uid, 5);
	index_layer_free(l);
	free(t.p);
}

/* The TOC is trusted only when its JSON bytes match the descriptor's TOC digest. */
static void test_toc_digest(void **state)
{
	struct index_layer *l = NULL;
	struct bytebuf t = { 0 };
	const char *json = "{\"version\":1,\"entries\":[{\"name\":\"d/\",\"type\":\"dir\"}]}";
	uint8_t md[32];
	char good[80], bad[80];

	(void)state;
	toc_member(&t, "stargz.index.json", json);
	util_sha256(json, strlen(json), md);
	util_digest_format(md, good);
	md[0] ^= 1;
	util_digest_format(md, bad);
	assert_int_equal(index_estargz_build_verified(t.p, t.len, 1000, 1000 + t.len + 51, good,
						      &l),
			 0);
	assert_true(walk(l, "d") > 0);
	index_layer_free(l);
	l = NULL;
	assert_int_equal(index_estargz_build_verified(t.p, t.len, 1000, 1000 + t.len + 51, bad, &l),
			 -EBADMSG);
	assert_null(l);
	assert_non_null(strstr(strata_errmsg(-EBADMSG), "TOC digest mismatch"));
	assert_int_equal(index_estargz_build_verified(t.p, t.len, 1000, 1000 + t.len + 51,
						      "sha256:xyz", &l),
			 -EINVAL);
	assert_null(l);
	/* NULL: not checked */
	assert_int_equal(index_estargz_build_verified(t.p, t.len, 1000, 1000 + t.len + 51, NULL,
						      &l),
			 0);
	index_layer_free(l);
	free(t.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_footer),	     cmocka_unit_test(test_build),
		cmocka_unit_test(test_chunk_size),   cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_semantics),    cmocka_unit_test(test_toc_digest),
		cmocka_unit_test(test_lying_layout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

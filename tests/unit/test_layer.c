/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the layer index: tar semantics, whiteouts, chunking, encode/decode, validation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <zstd.h>

#include "gzipw.h"
#include "index/layer.h"
#include "layerq.h"
#include "index/compare.h"
#include "memsrc.h"
#include "tarw.h"
#include "util/sha256.h"

#define CS 4096u /* small chunks keep the tests fast */

struct chunk_log {
	int calls;
	size_t bytes;
};

static int count_chunk(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	struct chunk_log *cl = ctx;
	uint8_t check[32];

	util_sha256(data, len, check);
	assert_memory_equal(check, digest, 32);
	cl->calls++;
	cl->bytes += len;
	return 0;
}

static struct index_layer *build(struct bytebuf *t, struct chunk_log *cl, int expect_rc)
{
	struct memsrc m;
	struct index_layer *l = NULL;
	int rc = index_layer_build(memsrc_open(&m, t->p, t->len, 0), CS, count_chunk, cl, &l);

	assert_int_equal(rc, expect_rc);
	return l;
}

static void test_tree_semantics(void **state)
{
	struct bytebuf t = { 0 };
	struct chunk_log cl = { 0 };
	struct index_layer *l;
	const struct index_inode *in;
	int64_t a, b, c;
	uint32_t len;
	const char *v;
	uint8_t data[3 * CS + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	tarw_header(&t, "./", '5', 0755, 0, NULL, 1);
	tarw_header(&t, "dir/", '5', 0700, 0, NULL, 2);
	tarw_file(&t, "dir/big", data, sizeof(data));
	tarw_file(&t, "dir/empty", "", 0);
	tarw_file(&t, "implicit/deep/f", "x", 1);
	tarw_header(&t, "dir/link", '1', 0644, 0, "dir/big", 3);
	tarw_header(&t, "sym", '2', 0777, 0, "../nowhere", 4);
	tarw_file(&t, "dup", "first", 5);
	tarw_file(&t, "dup", "second!", 7);
	tarw_header(&t, "dev", '3', 0600, 0, NULL, 5);
	tarw_header(&t, "old/", '5', 0755, 0, NULL, 6);
	tarw_file(&t, "old/.wh.gone", "", 0);
	tarw_file(&t, "old/.wh..wh..opq", "", 0);
	tarw_file(&t, ".wh..wh.plnk", "", 0);
	tarw_pax(&t, "SCHILY.xattr.user.k", "v\0w", 3);
	tarw_file(&t, "withx", "1", 1);
	tarw_header(&t, "dir/", '5', 0750, 0, NULL, 9); /* named again: keeps children */
	tarw_end(&t);

	l = build(&t, &cl, 0);
	assert_non_null(l);
	/* chunks: big = 4 chunks, implicit/deep/f 1, dup x2 (first one dead), withx 1 */
	assert_int_equal(cl.calls, 4 + 1 + 1 + 1 + 1);

	in = index_layer_inode(l, 0);
	assert_true(S_ISDIR(in->mode));
	assert_int_equal(in->mode & 07777, 0755);
	assert_int_equal(in->mtime_sec, 1);

	a = walk(l, "dir/big");
	b = walk(l, "dir/link");
	assert_true(a > 0);
	assert_int_equal(a, b); /* hard link shares the inode */
	in = index_layer_inode(l, (uint32_t)a);
	assert_int_equal(in->nlink, 2);
	assert_int_equal(in->size, sizeof(data));
	assert_int_equal(in->count, 4);
	assert_int_equal(index_layer_chunk(l, in->first + 3)->size, 1);
	assert_int_equal(index_layer_chunk(l, in->first)->size, CS);

	c = walk(l, "dir");
	assert_int_equal(index_layer_inode(l, (uint32_t)c)->mode & 07777, 0750);
	assert_int_equal(index_layer_inode(l, (uint32_t)c)->count, 3);

	c = walk(l, "implicit/deep");
	in = index_layer_inode(l, (uint32_t)c);
	assert_true(S_ISDIR(in->mode));
	assert_true(in->flags & INDEX_INODE_IMPLICIT);
	assert_int_equal(in->mode & 07777, 0755);

	c = walk(l, "sym");
	in = index_layer_inode(l, (uint32_t)c);
	assert_true(S_ISLNK(in->mode));
	assert_int_equal(in->size, 10);
	assert_memory_equal(index_layer_str(l, in->first), "../nowhere", 10);

	c = walk(l, "dup");
	in = index_layer_inode(l, (uint32_t)c);
	assert_int_equal(in->size, 7);

	c = walk(l, "old/gone");
	in = index_layer_inode(l, (uint32_t)c);
	assert_true(S_ISCHR(in->mode));
	assert_int_equal(in->rdev, makedev(0, 0));
	assert_int_equal(walk(l, "old/.wh.gone"), -ENOENT);
	assert_int_equal(walk(l, "old/.wh..wh..opq"), -ENOENT);
	assert_int_equal(walk(l, ".wh..wh.plnk"), -ENOENT);
	v = xattr(l, (uint32_t)walk(l, "old"), "trusted.overlay.opaque", &len);
	assert_non_null(v);
	assert_int_equal(len, 1);
	assert_int_equal(v[0], 'y');

	v = xattr(l, (uint32_t)walk(l, "withx"), "user.k", &len);
	assert_non_null(v);
	assert_int_equal(len, 3);
	assert_memory_equal(v, "v\0w", 3);

	assert_true(S_ISCHR(index_layer_inode(l, (uint32_t)walk(l, "dev"))->mode));
	assert_int_equal(walk(l, "nope"), -ENOENT);
	assert_int_equal(index_layer_lookup(l, (uint32_t)walk(l, "dup"), "x", 1), -ENOTDIR);
	/* root: dir, implicit, old + 2 = 5 links */
	assert_int_equal(index_layer_inode(l, 0)->nlink, 5);
	assert_int_equal(index_layer_tar_size(l), t.len);
	{
		uint8_t d[32];

		util_sha256(t.p, t.len, d);
		assert_memory_equal(index_layer_diff_id(l), d, 32);
	}
	index_layer_free(l);
	free(t.p);
}

static void test_encode_decode(void **state)
{
	struct bytebuf t = { 0 };
	struct chunk_log cl = { 0 };
	struct index_layer *l, *l2;
	void *buf;
	size_t len;
	uint8_t data[CS * 2];

	(void)state;
	memset(data, 'a', sizeof(data));
	tarw_file(&t, "a/b/c", data, sizeof(data));
	tarw_header(&t, "a/h", '1', 0644, 0, "a/b/c", 0);
	tarw_header(&t, "s", '2', 0777, 0, "/abs/target", 0);
	tarw_end(&t);
	l = build(&t, &cl, 0);
	assert_int_equal(index_layer_encode(l, &buf, &len), 0);
	assert_int_equal(index_layer_decode(buf, len, &l2), 0);
	assert_int_equal(index_layer_ninodes(l2), index_layer_ninodes(l));
	assert_int_equal(index_layer_nchunks(l2), 2);
	assert_int_equal(walk(l2, "a/h"), walk(l, "a/b/c"));
	assert_int_equal(index_layer_chunk_size(l2), CS);
	assert_memory_equal(index_layer_diff_id(l2), index_layer_diff_id(l), 32);

	/* Every truncation and a flipped byte in the frame fail cleanly. */
	for (size_t cut = 0; cut < len; cut += 7) {
		struct index_layer *bad = NULL;

		assert_int_equal(index_layer_decode(buf, cut, &bad), -EBADMSG);
		assert_null(bad);
	}
	((uint8_t *)buf)[len / 2] ^= 0x55;
	{
		struct index_layer *bad = NULL;
		int rc = index_layer_decode(buf, len, &bad);

		assert_true(rc < 0 || bad != NULL);
		index_layer_free(bad);
	}
	free(buf);
	index_layer_free(l);
	index_layer_free(l2);
	free(t.p);
}

/* A small tree as a tar: variant picks one difference from variant 0. */
static struct index_layer *compare_tree(int variant)
{
	struct bytebuf t = { 0 };
	struct memsrc m;
	struct index_layer *l = NULL;
	char big[10000];

	memset(big, 'b', sizeof(big));
	if (variant == 5)
		big[9000] = 'B'; /* content in the third chunk */
	tarw_header(&t, "d", '5', variant == 1 ? 0700 : 0755, 0, NULL, 1700000000);
	if (variant == 2)
		tarw_pax(&t, "SCHILY.xattr.user.x", "1", 1);
	tarw_file(&t, "d/big", big, sizeof(big));
	tarw_header(&t, variant == 3 ? "d/other" : "d/link", '1', 0644, 0, "d/big", 1700000000);
	tarw_header(&t, "s", '2', 0777, 0, variant == 4 ? "d/bag" : "d/big", 1700000000);
	tarw_end(&t);
	assert_int_equal(index_layer_build(memsrc_open(&m, t.p, t.len, 0), 4096, NULL, NULL, &l),
			 0);
	free(t.p);
	return l;
}

static void test_compare(void **state)
{
	struct index_layer *a = compare_tree(0), *b = compare_tree(0);
	static const char *const want[] = {
		NULL,
		"/d: mode 40755, not 40700",
		"/d/big: 0 xattrs, not 1",
		"/d: entry link is not in the other index",
		"/s: another symlink target",
		"/d/big: chunk 2 has other content",
	};
	char why[256];

	(void)state;
	assert_int_equal(index_layer_compare(a, b, INDEX_CMP_EXACT, why, sizeof(why)), 1);
	assert_string_equal(why, "");
	for (int v = 1; v < 6; v++) {
		struct index_layer *c = compare_tree(v);

		assert_int_equal(index_layer_compare(a, c, INDEX_CMP_EXACT, why, sizeof(why)), 0);
		assert_string_equal(why, want[v]);
		index_layer_free(c);
	}
	index_layer_free(a);
	index_layer_free(b);
}

static void test_errors(void **state)
{
	struct bytebuf t = { 0 };
	struct chunk_log cl = { 0 };
	struct memsrc m;
	struct index_layer *l = NULL;

	(void)state;
	tarw_header(&t, "h", '1', 0644, 0, "missing", 0);
	tarw_end(&t);
	build(&t, &cl, -EINVAL);
	t.len = 0;
	tarw_file(&t, "f", "x", 1);
	tarw_file(&t, "f/child", "y", 1);
	tarw_end(&t);
	build(&t, &cl, -ENOTDIR);
	/* not a tar */
	t.len = 0;
	for (int i = 0; i < 1024; i++)
		bytebuf_put(&t, "garbage!", 8);
	build(&t, &cl, -EINVAL);
	/* chunk size bounds */
	assert_int_equal(index_layer_build(memsrc_open(&m, t.p, t.len, 0), 100, NULL, NULL, &l),
			 -EINVAL);
	free(t.p);
}

static void test_replace_dir_with_file(void **state)
{
	struct bytebuf t = { 0 };
	struct chunk_log cl = { 0 };
	struct index_layer *l;

	(void)state;
	tarw_header(&t, "d/", '5', 0755, 0, NULL, 0);
	tarw_file(&t, "d/inner", "1", 1);
	tarw_file(&t, "d", "now a file", 10);
	tarw_file(&t, "d2/x", "2", 1);
	tarw_end(&t);
	l = build(&t, &cl, 0);
	assert_true(S_ISREG(index_layer_inode(l, (uint32_t)walk(l, "d"))->mode));
	assert_int_equal(walk(l, "d/inner"), -ENOTDIR);
	assert_true(walk(l, "d2/x") > 0);
	index_layer_free(l);
	free(t.p);
}

static int count_window(void *ctx, const uint8_t digest[32], const void *data, size_t len)
{
	uint8_t check[32];

	util_sha256(data, len, check);
	assert_memory_equal(check, digest, 32);
	(*(int *)ctx)++;
	return 0;
}

/* What a span read does: the span's compressed bytes fed to a streamed decoder in pieces of 1 to
 * 9000 bytes with 1 to 70000 bytes of room; tar bytes [uoff, uoff + len) kept into out. */
static void span_dec_at(const struct index_layer *l, const struct index_span *sp,
			const uint8_t *window, const uint8_t *comp, size_t clen, uint64_t uoff,
			uint8_t *out, size_t len)
{
	static uint32_t seed = 7;
	uint8_t *room = malloc(70000);
	struct index_span_dec *d;
	uint64_t pos = sp->ustart;
	size_t got = 0;

	assert_non_null(room);
	assert_int_equal(index_span_dec_new(l, sp, window, &d), 0);
	while (got < len) {
		size_t n = 1 + rand_r(&seed) % 9000, cap = 1 + rand_r(&seed) % 70000, made;
		size_t before;
		int rc;

		if (n > clen)
			n = clen;
		before = n;
		rc = index_span_dec_feed(d, &comp, &n, room, cap, &made);
		assert_true(rc == 0 || rc == 1);
		clen -= before - n;
		for (size_t k = 0; k < made; k++, pos++)
			if (pos >= uoff && pos < uoff + len)
				out[got++] = room[k];
		assert_true(made > 0 || clen > 0 || got == len); /* never short of the span */
	}
	index_span_dec_free(d);
	free(room);
}

/* For every chunk: plan its span, decode from exactly the planned compressed bytes, check it. */
static void check_random_access(const struct index_layer *l, const uint8_t *blob, size_t blob_len,
				const uint8_t *tar)
{
	uint8_t *window = NULL;

	assert_int_equal(index_layer_blob_size(l), blob_len);
	for (uint32_t i = 0; i < index_layer_nchunks(l); i++) {
		const struct index_chunk *c = index_layer_chunk(l, i);
		struct index_span sp;
		uint8_t *out = malloc(c->size);
		uint8_t d[32];

		assert_int_equal(index_layer_span(l, c->offset, c->offset + c->size, &sp), 0);
		assert_true(sp.cstart < sp.cend && sp.cend <= blob_len);
		assert_true(sp.ustart <= c->offset && sp.uend >= c->offset + c->size);
		if (sp.cp != UINT32_MAX) {
			const struct index_checkpoint *cp = index_layer_checkpoint(l, sp.cp);

			free(window);
			window = NULL;
			if (cp->wlen) {
				/* the window is the wlen tar bytes before the checkpoint */
				window = malloc(cp->wlen);
				memcpy(window, tar + cp->uoff - cp->wlen, cp->wlen);
				util_sha256(window, cp->wlen, d);
				assert_memory_equal(d, cp->window, 32);
			}
		}
		assert_int_equal(index_layer_extract(l, &sp, window, blob + sp.cstart,
						     sp.cend - sp.cstart, c->offset, out, c->size),
				 0);
		util_sha256(out, c->size, d);
		assert_memory_equal(d, c->digest, 32);
		memset(out, 0, c->size);
		span_dec_at(l, &sp, window, blob + sp.cstart, sp.cend - sp.cstart, c->offset, out,
			    c->size);
		util_sha256(out, c->size, d);
		assert_memory_equal(d, c->digest, 32);
		free(out);
	}
	free(window);
}

static void test_random_access(void **state)
{
	struct bytebuf t = { 0 };
	size_t big = 3u << 20;
	uint8_t *data = malloc(big);
	uint32_t seed = 42;
	struct index_build_opts o;
	struct index_layer *l;
	struct memsrc m;
	struct bytebuf gz;
	uint8_t *zs;
	size_t zslen;
	int windows = 0;

	(void)state;
	for (size_t i = 0; i < big; i++) {
		seed = seed * 1103515245u + 12345u;
		/* half random, half text-like: both stored and compressed deflate blocks */
		data[i] = i < big / 2 ? (uint8_t)(seed >> 16) : (uint8_t)("strata lazily "[i % 14]);
	}
	tarw_file(&t, "small", "hello", 5);
	tarw_file(&t, "big", data, big);
	tarw_file(&t, "after", data + 7, 9000);
	tarw_end(&t);

	memset(&o, 0, sizeof(o));
	o.chunk_size = 64 * 1024;
	o.span = 128 * 1024;
	o.window_fn = count_window;
	o.ctx = &windows;

	/* uncompressed tar: identity */
	o.blob = INDEX_BLOB_TAR;
	assert_int_equal(index_layer_build_blob(memsrc_open(&m, t.p, t.len, 0), &o, &l), 0);
	assert_int_equal(index_layer_blob_kind(l), INDEX_BLOB_TAR);
	check_random_access(l, t.p, t.len, t.p);
	index_layer_free(l);

	/* gzip: zran checkpoints, windows reported */
	gz = gzip_of(t.p, t.len, 6);
	o.blob = INDEX_BLOB_GZIP;
	assert_int_equal(index_layer_build_blob(memsrc_open(&m, gz.p, gz.len, 0), &o, &l), 0);
	assert_true(index_layer_ncheckpoints(l) > 5);
	assert_true(windows > 4);
	check_random_access(l, gz.p, gz.len, t.p);
	{
		/* the index survives encode/decode with its checkpoints */
		void *enc;
		size_t elen;
		struct index_layer *l2;

		assert_int_equal(index_layer_encode(l, &enc, &elen), 0);
		assert_int_equal(index_layer_decode(enc, elen, &l2), 0);
		assert_int_equal(index_layer_ncheckpoints(l2), index_layer_ncheckpoints(l));
		check_random_access(l2, gz.p, gz.len, t.p);
		index_layer_free(l2);
		free(enc);
	}
	/* a span cut short fails cleanly */
	{
		const struct index_chunk *c = index_layer_chunk(l, index_layer_nchunks(l) - 1);
		struct index_span sp;
		uint8_t out[16];

		assert_int_equal(index_layer_span(l, c->offset, c->offset + 16, &sp), 0);
		if (index_layer_checkpoint(l, sp.cp)->wlen == 0)
			assert_int_equal(index_layer_extract(l, &sp, NULL, gz.p + sp.cstart, 10,
							     c->offset, out, sizeof(out)),
					 -EPIPE);
	}
	index_layer_free(l);

	/* zstd: one frame (a checkpoint at 0), then four frames (a checkpoint at each start) */
	zs = malloc(ZSTD_compressBound(t.len) + 4 * 64);
	zslen = ZSTD_compress(zs, ZSTD_compressBound(t.len), t.p, t.len, 3);
	assert_false(ZSTD_isError(zslen));
	o.blob = INDEX_BLOB_ZSTD;
	assert_int_equal(index_layer_build_blob(memsrc_open(&m, zs, zslen, 0), &o, &l), 0);
	assert_int_equal(index_layer_ncheckpoints(l), 1);
	check_random_access(l, zs, zslen, t.p);
	index_layer_free(l);
	zslen = 0;
	for (size_t off = 0, part = t.len / 4 + 1; off < t.len; off += part) {
		size_t n = t.len - off < part ? t.len - off : part;
		size_t z = ZSTD_compress(zs + zslen, ZSTD_compressBound(n), t.p + off, n, 3);

		assert_false(ZSTD_isError(z));
		zslen += z;
	}
	assert_int_equal(index_layer_build_blob(memsrc_open(&m, zs, zslen, 0), &o, &l), 0);
	assert_true(index_layer_ncheckpoints(l) >= 4);
	assert_true(index_layer_checkpoint(l, 1)->coff > 0);
	check_random_access(l, zs, zslen, t.p);
	{
		/* the chunk last in the tar is fetched from its own frame, not from the blob start */
		const struct index_chunk *c =
			index_layer_chunk(l, index_layer_chunk_by_offset(l, index_layer_nchunks(l) -
										    1));
		struct index_span sp;

		assert_int_equal(index_layer_span(l, c->offset, c->offset + c->size, &sp), 0);
		assert_true(sp.cstart > 0);
	}
	index_layer_free(l);

	/* an index built from a plain tar stream has no random access */
	assert_int_equal(index_layer_build(memsrc_open(&m, t.p, t.len, 0), 4096, NULL, NULL, &l),
			 0);
	{
		struct index_span sp;

		assert_int_equal(index_layer_span(l, 0, 10, &sp), -ENOTSUP);
	}
	index_layer_free(l);
	bytebuf_free(&gz);
	free(zs);
	free(data);
	free(t.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tree_semantics), cmocka_unit_test(test_encode_decode),
		cmocka_unit_test(test_errors),	       cmocka_unit_test(test_replace_dir_with_file),
		cmocka_unit_test(test_random_access),  cmocka_unit_test(test_compare),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

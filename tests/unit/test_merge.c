/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fs/merge.c: layers merged as an OCI unpack leaves them (whiteouts, opaque
 * directories, replacement by type, hard links and their nlink), deep trees, bounds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fs/merge_i.h"
#include "index/layer.h"
#include "memsrc.h"
#include "tarw.h"

static struct index_layer *build(struct bytebuf *t)
{
	struct memsrc m;
	struct index_layer *l = NULL;

	tarw_end(t);
	assert_int_equal(index_layer_build(memsrc_open(&m, t->p, t->len, 0), 4096, NULL, NULL, &l),
			 0);
	free(t->p);
	memset(t, 0, sizeof(*t));
	return l;
}

/* The merged node at path ("a/b"), or a negative errno. */
static int64_t mwalk(const struct fs_merged *m, const char *path)
{
	char buf[4096];
	char *save = NULL, *tok;
	int64_t n = 0;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
		n = fs_merged_lookup(m, (uint32_t)n, tok, strlen(tok));
		if (n < 0)
			return n;
	}
	return n;
}

/* The names in merged directory path, joined by ',' into out. */
static const char *names(const struct fs_merged *m, const char *path, char *out, size_t cap)
{
	int64_t d = mwalk(m, path);
	size_t pos = 0;

	out[0] = '\0';
	assert_true(d >= 0);
	for (uint32_t i = 0; i < m->nodes[d].nkids; i++) {
		const struct fs_mkid *k = &m->nodes[d].kids[i];

		pos += (size_t)snprintf(out + pos, cap - pos, "%s%.*s", i ? "," : "",
					(int)k->name_len, m->names + k->name_off);
	}
	return out;
}

static void test_whiteouts_opaque_replacement_links(void **state)
{
	struct bytebuf t = { 0 };
	struct index_layer *l[3];
	const uint32_t seqs[3] = { 1, 2, 3 };
	struct fs_merged *m;
	char buf[256];
	int64_t n;

	(void)state;
	tarw_header(&t, "a/", '5', 0755, 0, NULL, 1);
	tarw_file(&t, "a/x", "x", 1);
	tarw_file(&t, "a/y", "y", 1);
	tarw_file(&t, "f", "file", 4);
	tarw_header(&t, "g/", '5', 0700, 0, NULL, 2);
	tarw_file(&t, "g/old", "o", 1);
	tarw_header(&t, "d/", '5', 0755, 0, NULL, 3);
	tarw_file(&t, "d/k", "k", 1);
	tarw_file(&t, "h1", "hard", 4);
	tarw_header(&t, "h2", '1', 0644, 0, "h1", 4);
	tarw_header(&t, "h3", '1', 0644, 0, "h1", 4);
	tarw_header(&t, "p/", '5', 0700, 0, NULL, 5);
	l[0] = build(&t);

	tarw_header(&t, "a/", '5', 0711, 0, NULL, 10);
	tarw_file(&t, "a/.wh.x", "", 0);
	tarw_header(&t, "d/", '5', 0755, 0, NULL, 11);
	tarw_file(&t, "d/.wh..wh..opq", "", 0);
	tarw_file(&t, "d/n", "n", 1);
	tarw_header(&t, "f/", '5', 0755, 0, NULL, 12);
	tarw_file(&t, "f/in", "in", 2);
	tarw_file(&t, "g", "now a file", 10);
	tarw_file(&t, ".wh.h2", "", 0);
	tarw_file(&t, "h3", "new", 3);
	tarw_file(&t, "p/q", "q", 1); /* p implicit here: its attributes stay layer 0's */
	l[1] = build(&t);

	tarw_file(&t, "f", "file again", 10);
	tarw_header(&t, "g/", '5', 0755, 0, NULL, 20);
	tarw_file(&t, ".wh.a", "", 0);
	tarw_file(&t, ".wh.nothing", "", 0);
	l[2] = build(&t);

	assert_int_equal(fs_merged_build((const struct index_layer *const *)l, seqs, 3, &m), 0);
	assert_string_equal(names(m, "", buf, sizeof(buf)), "d,f,g,h1,h3,p");
	assert_string_equal(names(m, "d", buf, sizeof(buf)), "n");
	assert_string_equal(names(m, "g", buf, sizeof(buf)), ""); /* a new dir: g/old stays gone */
	assert_string_equal(names(m, "p", buf, sizeof(buf)), "q");
	assert_int_equal(mwalk(m, "a"), -ENOENT);
	assert_int_equal(mwalk(m, "f/in"), -ENOTDIR);

	n = mwalk(m, "f");
	assert_int_equal(m->nodes[n].mode, S_IFREG);
	assert_int_equal(m->nodes[n].src >> 32, 3);
	n = mwalk(m, "g");
	assert_int_equal(m->nodes[n].mode, S_IFDIR);
	assert_int_equal(m->nodes[n].src >> 32, 3);
	assert_int_equal(m->nodes[n].nlink, 2);
	n = mwalk(m, "p");
	assert_int_equal(m->nodes[n].src >> 32, 1);
	assert_int_equal(index_layer_inode(l[0], (uint32_t)m->nodes[n].src)->mode, S_IFDIR | 0700);
	n = mwalk(m, "d");
	assert_int_equal(m->nodes[n].src >> 32, 2);
	/* h1 and h3 were one inode in layer 0; h2 is whited out, h3 replaced: h1 is alone */
	n = mwalk(m, "h1");
	assert_int_equal(m->nodes[n].nlink, 1);
	assert_int_equal(m->nodes[n].src >> 32, 1);
	assert_true(mwalk(m, "h3") != n);
	assert_int_equal(m->nodes[mwalk(m, "h3")].src >> 32, 2);
	/* the root: no layer named it */
	assert_int_equal(m->nodes[0].src, 0);
	assert_int_equal(m->nodes[0].nlink, 2 + 3); /* d, g, p */
	fs_merged_free(m);
	for (int i = 0; i < 3; i++)
		index_layer_free(l[i]);
}

/* Hard links kept in the merged tree share a node, with nlink the names left. */
static void test_links_shared(void **state)
{
	struct bytebuf t = { 0 };
	struct index_layer *l[2];
	const uint32_t seqs[2] = { 7, 9 };
	struct fs_merged *m;

	(void)state;
	tarw_header(&t, "./", '5', 0755, 0, NULL, 1);
	tarw_header(&t, "dir/", '5', 0755, 0, NULL, 1);
	tarw_file(&t, "dir/t", "target", 6);
	tarw_header(&t, "dir/u", '1', 0644, 0, "dir/t", 1);
	tarw_header(&t, "v", '1', 0644, 0, "dir/t", 1);
	l[0] = build(&t);
	tarw_header(&t, "dir/", '5', 0750, 0, NULL, 2);
	tarw_file(&t, "dir/other", "o", 1);
	l[1] = build(&t);
	assert_int_equal(fs_merged_build((const struct index_layer *const *)l, seqs, 2, &m), 0);
	assert_int_equal(mwalk(m, "dir/t"), mwalk(m, "dir/u"));
	assert_int_equal(mwalk(m, "dir/t"), mwalk(m, "v"));
	assert_int_equal(m->nodes[mwalk(m, "v")].nlink, 3);
	assert_int_equal(m->nodes[0].src, 7ull << 32); /* the root named by layer 0 */
	assert_int_equal(m->nodes[mwalk(m, "dir")].src >> 32, 9);
	fs_merged_free(m);
	index_layer_free(l[0]);
	index_layer_free(l[1]);
}

/* A tree 1500 directories deep merges without recursion. */
static void test_deep(void **state)
{
	struct bytebuf t = { 0 };
	struct index_layer *l[2];
	const uint32_t seqs[2] = { 1, 2 };
	struct fs_merged *m;
	char path[3100];
	size_t pos = 0;

	(void)state;
	for (int i = 0; i < 1500; i++)
		pos += (size_t)snprintf(path + pos, sizeof(path) - pos, "d/");
	snprintf(path + pos, sizeof(path) - pos, "f");
	for (int i = 0; i < 2; i++) {
		tarw_pax(&t, "path", path, strlen(path));
		tarw_file(&t, "placeholder", i ? "two" : "one", 3);
		l[i] = build(&t);
	}
	assert_int_equal(fs_merged_build((const struct index_layer *const *)l, seqs, 2, &m), 0);
	assert_int_equal(m->nodes[mwalk(m, path)].src >> 32, 2);
	assert_int_equal(m->nnodes, 1 + 1500 + 2); /* the directories once, each layer's f */
	fs_merged_free(m);
	index_layer_free(l[0]);
	index_layer_free(l[1]);
}

static void test_no_layers(void **state)
{
	struct fs_merged *m = (struct fs_merged *)1;

	(void)state;
	assert_int_equal(fs_merged_build(NULL, NULL, 0, &m), -EINVAL);
	assert_null(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whiteouts_opaque_replacement_links),
		cmocka_unit_test(test_links_shared),
		cmocka_unit_test(test_deep),
		cmocka_unit_test(test_no_layers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

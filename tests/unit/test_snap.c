/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshotter's model (snap/snapshots.c): local snapshots and their mounts as containerd's
 * overlay snapshotter makes them, remote layers, errors, labels, removal and cleanup. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snap/snapshots.h"
#include "store/store.h"
#include "tmpdir.h"
#include "util/log.h"

static struct store *st;
static struct snapshots *sn;
static int remote_calls;

/* A remote side that serves every layer whose labels name one. */
static int fake_resolve(void *ctx, const char *key, json_t *labels, char *layer, char *image,
			size_t cap)
{
	const char *d = json_string_value(json_object_get(labels, "test/layer"));

	(void)ctx;
	(void)key;
	remote_calls++;
	if (!d)
		return 0;
	snprintf(layer, cap, "%s", d);
	snprintf(image, cap, "img");
	return 1;
}

static int setup(void **state)
{
	struct snap_remote_ops ops = { fake_resolve, NULL, NULL, NULL };

	assert_int_equal(tmpdir_setup(state), 0);
	assert_int_equal(store_open(tmpdir_path, NULL, &st), 0);
	assert_int_equal(snapshots_new(st, "/run/strata/layers", &ops, &sn), 0);
	remote_calls = 0;
	return 0;
}

static int teardown(void **state)
{
	snapshots_free(sn);
	store_close(st);
	return tmpdir_teardown(state);
}

/* The mounts of key as one line: "type source opt,opt". */
static void mounts_line(int rc, struct snap_mount *m, size_t n, char *out, size_t cap)
{
	assert_int_equal(rc, 0);
	assert_int_equal(n, 1);
	snprintf(out, cap, "%s %s ", m[0].type, m[0].source);
	for (size_t i = 0; i < m[0].noptions; i++) {
		if (!strcmp(m[0].options[i], "index=off"))
			continue; /* only where the kernel has the parameter */
		strncat(out, m[0].options[i], cap - strlen(out) - 2);
		strcat(out, ",");
	}
	snap_mounts_free(m, n);
}

static void test_local(void **state)
{
	struct snap_mount *m;
	size_t n;
	char line[4096], want[4096], dir[4096];
	struct stat sb;
	int rc;

	(void)state;
	rc = snapshots_prepare(sn, "a", "", NULL, 0, &m, &n);
	mounts_line(rc, m, n, line, sizeof(line));
	snprintf(want, sizeof(want), "bind %s/snapshots/1/fs rw,rbind,", tmpdir_path);
	assert_string_equal(line, want);
	assert_int_equal(snapshots_prepare(sn, "a", "", NULL, 0, &m, &n), -EEXIST);
	assert_int_equal(snapshots_prepare(sn, "b", "a", NULL, 0, &m, &n), -EINVAL);
	assert_int_equal(snapshots_prepare(sn, "b", "nope", NULL, 0, &m, &n), -ENOENT);
	assert_int_equal(snapshots_commit(sn, "A", "a", NULL), 0);
	assert_int_equal(snapshots_commit(sn, "A2", "A", NULL), -EINVAL);
	assert_int_equal(snapshots_mounts(sn, "A", &m, &n), -EINVAL);
	/* the committed dir keeps its content dir, loses its work dir */
	snprintf(dir, sizeof(dir), "%s/snapshots/1/work", tmpdir_path);
	assert_int_equal(stat(dir, &sb), -1);

	rc = snapshots_prepare(sn, "b", "A", NULL, 0, &m, &n);
	mounts_line(rc, m, n, line, sizeof(line));
	snprintf(want, sizeof(want),
		 "overlay overlay workdir=%s/snapshots/2/work,upperdir=%s/snapshots/2/fs,"
		 "lowerdir=%s/snapshots/1/fs,",
		 tmpdir_path, tmpdir_path, tmpdir_path);
	assert_string_equal(line, want);
	/* a view of one parent: that parent, read-only */
	rc = snapshots_prepare(sn, "v", "A", NULL, 1, &m, &n);
	mounts_line(rc, m, n, line, sizeof(line));
	snprintf(want, sizeof(want), "bind %s/snapshots/1/fs ro,rbind,", tmpdir_path);
	assert_string_equal(line, want);
	rc = snapshots_mounts(sn, "b", &m, &n);
	mounts_line(rc, m, n, line, sizeof(line));
	assert_non_null(strstr(line, "upperdir="));

	assert_int_equal(snapshots_remove(sn, "A"), -EBUSY);
	assert_int_equal(snapshots_remove(sn, "b"), 0);
	assert_int_equal(snapshots_remove(sn, "v"), 0);
	assert_int_equal(snapshots_remove(sn, "A"), 0);
	assert_int_equal(snapshots_remove(sn, "A"), -ENOENT);
	snprintf(dir, sizeof(dir), "%s/snapshots/1", tmpdir_path);
	assert_int_equal(stat(dir, &sb), -1);
	assert_int_equal(remote_calls, 0); /* no target label: never asked */
}

static void test_remote(void **state)
{
	json_t *labels = json_pack("{s:s, s:s}", "containerd.io/snapshot.ref", "chain1",
				   "test/layer", "sha256:aa");
	struct snap_mount *m;
	struct snap_info info;
	int64_t size, inodes;
	size_t n;
	char line[4096], want[4096];
	int rc;

	(void)state;
	assert_int_equal(snapshots_prepare(sn, "ns/1/extract-1", "", labels, 0, &m, &n), -EEXIST);
	assert_int_equal(snapshots_stat(sn, "ns/1/extract-1", &info), -ENOENT);
	strata_err_clear();
	assert_int_equal(snapshots_stat(sn, "chain1", &info), 0);
	assert_int_equal(info.kind, SNAP_KIND_COMMITTED);
	assert_string_equal(json_string_value(
				    json_object_get(info.labels, "containerd.io/snapshot.ref")),
			    "chain1");
	snap_info_clear(&info);
	json_object_set_new(labels, "containerd.io/snapshot.ref", json_string("chain2"));
	json_object_set_new(labels, "test/layer", json_string("sha256:bb"));
	assert_int_equal(snapshots_prepare(sn, "ns/1/extract-2", "chain1", labels, 0, &m, &n),
			 -EEXIST);
	/* no layer label: a local snapshot above the remote ones */
	json_object_del(labels, "test/layer");
	rc = snapshots_prepare(sn, "ctr", "chain2", labels, 0, &m, &n);
	mounts_line(rc, m, n, line, sizeof(line));
	snprintf(want, sizeof(want),
		 "overlay overlay workdir=%s/snapshots/3/work,upperdir=%s/snapshots/3/fs,"
		 "lowerdir=/run/strata/layers/sha256\\:bb:/run/strata/layers/sha256\\:aa,",
		 tmpdir_path, tmpdir_path);
	assert_string_equal(line, want);
	/* no usage callback: a remote layer counts 0 */
	assert_int_equal(snapshots_usage(sn, "chain1", &size, &inodes), 0);
	assert_int_equal(size, 0);
	json_decref(labels);
}

static void test_labels_cleanup(void **state)
{
	json_t *labels = json_pack("{s:s, s:s}", "x", "1", "y", "2");
	struct snap_info in = { 0 }, out;
	const char *one[] = { "labels.x" }, *bad[] = { "parent" };
	struct snap_mount *m;
	size_t n;
	char dir[4096];
	struct stat sb;

	(void)state;
	assert_int_equal(snapshots_prepare(sn, "k", "", labels, 0, &m, &n), 0);
	snap_mounts_free(m, n);
	in.name = "k";
	in.labels = json_pack("{s:s}", "x", "9");
	assert_int_equal(snapshots_update(sn, &in, one, 1, &out), 0);
	assert_string_equal(json_string_value(json_object_get(out.labels, "x")), "9");
	assert_string_equal(json_string_value(json_object_get(out.labels, "y")), "2");
	snap_info_clear(&out);
	assert_int_equal(snapshots_update(sn, &in, bad, 1, &out), -EINVAL);
	strata_err_clear();
	assert_int_equal(snapshots_update(sn, &in, NULL, 0, &out), 0);
	assert_int_equal(json_object_size(out.labels), 1);
	snap_info_clear(&out);
	json_decref(in.labels);
	/* a label pair over 4096 bytes is refused */
	{
		char *big = calloc(1, 5000);

		memset(big, 'v', 4999);
		json_object_set_new(labels, "big", json_string(big));
		free(big);
		assert_int_equal(snapshots_prepare(sn, "k2", "", labels, 0, &m, &n), -EINVAL);
		strata_err_clear();
	}
	/* a directory no record names goes at Cleanup; named ones stay */
	snprintf(dir, sizeof(dir), "%s/snapshots/77", tmpdir_path);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(snapshots_cleanup(sn), 0);
	assert_int_equal(stat(dir, &sb), -1);
	snprintf(dir, sizeof(dir), "%s/snapshots/1/fs", tmpdir_path);
	assert_int_equal(stat(dir, &sb), 0);
	json_decref(labels);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_local, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remote, setup, teardown),
		cmocka_unit_test_setup_teardown(test_labels_cleanup, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

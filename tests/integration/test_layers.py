# SPDX-License-Identifier: Apache-2.0
"""Every layer that strata serves must be exactly what GNU tar extracts from the same blob.

One store per module: corner:oci, corner:docker and corner:multi are pulled into it and mounted once.
"""

import errno
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from harness.fs import assert_erofs, force_unmount, mounts_at, pread_full
from harness.strata import Mount, Strata, public_tempdir

TAGS = ["oci", "docker", "multi"]
LAYER_NAMES = ["base", "gnu", "pax", "upper"]  # the distinct layers of the three images


@pytest.fixture(scope="module")
def corner(strata_bin, fixtures, tmp_path_factory):
    """Pulls the three corner images into one store and mounts it. Pull failures are recorded,
    not raised, so that each test reports its own image."""
    base = tmp_path_factory.mktemp("layers")
    store = base / "store"
    store.mkdir()
    run = Strata(strata_bin, store)
    pulls = {}
    for tag in TAGS:
        pulls[tag] = run("--json", "pull", fixtures.ref("corner:" + tag), check=False)
    mnt = public_tempdir("strata-layers-mnt-")
    # --allow-other: test_permissions_for_other_users reads as another user (modes enforced)
    m = Mount(strata_bin, store, mnt, base / "daemon.log", ("--allow-other",))

    class Env:
        pass

    env = Env()
    env.run, env.pulls, env.mount, env.fixtures = run, pulls, m, fixtures
    try:
        m.start()
        yield env
    finally:
        m.cleanup()
        if mounts_at(mnt):
            force_unmount(mnt)
        if not mounts_at(mnt):
            os.rmdir(mnt)
            shutil.rmtree(store, ignore_errors=True)


def assert_pulled(env, tag):
    p = env.pulls[tag]
    assert p.returncode == 0, "strata pull corner:%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        tag, p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize("tag", TAGS)
def test_pull_json_output(corner, tag):
    assert_pulled(corner, tag)
    fx = corner.fixtures
    img = fx.image("corner:" + tag)
    lines = [l for l in corner.pulls[tag].stdout.splitlines() if l.strip()]
    assert len(lines) == 1, "pull --json of one ref must print one JSON line:\n%s" % corner.pulls[tag].stdout
    obj = json.loads(lines[0])
    assert obj["ref"] == fx.ref("corner:" + tag)
    # for an index, "manifest" is the chosen platform manifest, not the index
    assert obj["manifest"] == img["manifest"]
    assert obj["layers"] == [l["digest"] for l in img["layers"]]


def test_ls_json(corner):
    for tag in TAGS:
        assert_pulled(corner, tag)
    fx = corner.fixtures
    listing = corner.run.ls()
    assert isinstance(listing, list)
    by_ref = {e["ref"]: e for e in listing}
    assert sorted(by_ref) == sorted(fx.ref("corner:" + t) for t in TAGS), listing
    for tag in TAGS:
        img = fx.image("corner:" + tag)
        e = by_ref[fx.ref("corner:" + tag)]
        assert e["manifest"] == img["manifest"], tag
        assert e["platform"] == "linux/" + fx.host_arch, tag
        got = [(l["digest"], l["size"], l["media_type"]) for l in e["layers"]]
        want = [(l["digest"], l["size"], l["media_type"]) for l in img["layers"]]
        assert got == want, tag


def test_layers_dir_lists_exactly_the_pulled_layers(corner):
    for tag in TAGS:
        assert_pulled(corner, tag)
    fx = corner.fixtures
    want = set()
    for tag in TAGS:
        want.update(fx.layer_digests("corner:" + tag))
    got = set(os.listdir(corner.mount.layers))
    assert got == want, "MNT/layers: missing %s, unexpected %s" % (sorted(want - got), sorted(got - want))
    for d in got:
        st = os.lstat(corner.mount.layer(d))
        assert stat.S_ISDIR(st.st_mode), d


def test_multi_resolved_to_host_arch(corner):
    assert_pulled(corner, "multi")
    fx = corner.fixtures
    img = fx.image("corner:multi")
    other = [m for m in img["manifests"] if m["platform"] != "linux/" + fx.host_arch]
    assert other, "fixture: corner:multi must have a non-host entry"
    other_layer = other[0]["layers"][0]["digest"]
    assert other_layer not in os.listdir(corner.mount.layers)
    assert not os.path.lexists(corner.mount.layer(other_layer))
    assert img["manifests"][0]["platform"] != "linux/" + fx.host_arch, \
        "fixture: the first index entry must be the non-host one"
    entry = [e for e in corner.run.ls() if e["ref"] == fx.ref("corner:multi")]
    assert len(entry) == 1
    assert entry[0]["manifest"] == fx.image("corner:oci")["manifest"]
    assert entry[0]["platform"] == "linux/" + fx.host_arch


def _layer_param(name):
    return pytest.param(name, id=name)


@pytest.mark.parametrize("name", [_layer_param(n) for n in LAYER_NAMES])
def test_layer_matches_tar_extraction(corner, layer_tree, name):
    fx = corner.fixtures
    users = [t for t in TAGS if fx.layers[name]["digest"] in fx.layer_digests("corner:" + t)]
    for tag in users:
        assert_pulled(corner, tag)
    tree = layer_tree(name)
    path = corner.mount.layer(tree.info["digest"])
    assert os.path.isdir(path), "%s (%s, %s) not served" % (tree.info["digest"], name,
                                                             tree.info["producer"])
    tree.compare(path, right_name="tar[%s %s %s]" % (name, tree.info["producer"],
                                                      tree.info["compression"]))


def test_inode_numbers_stable(corner):
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    base = corner.mount.layer(fx.layers["base"]["digest"])
    paths = [base, os.path.join(base, "files"), os.path.join(base, fx.paths["big_file"]),
             os.path.join(base, "links/relative"), os.path.join(base, "hard/a.txt"),
             os.path.join(base, "hard/sub/b.txt"), os.path.join(base, fx.paths["deep_file"]),
             os.path.join(base, fx.paths["unicode_file"]), os.path.join(base, "dev/char")]
    first = {p: os.lstat(p).st_ino for p in paths}
    assert {p: os.lstat(p).st_ino for p in paths} == first
    # force new lookups (best effort: needs a writable /proc/sys)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError:
        pass
    for p in paths:
        os.listdir(os.path.dirname(p))
    assert {p: os.lstat(p).st_ino for p in paths} == first
    assert first[os.path.join(base, "hard/a.txt")] == first[os.path.join(base, "hard/sub/b.txt")]
    # distinct files have distinct inode numbers, across layers too (overlayfs relies on it)
    others = [os.path.join(corner.mount.layer(fx.layers[n]["digest"]), p)
              for n, p in [("gnu", "gnu/a.txt"), ("pax", "pax/xattrs.txt"),
                           ("upper", "new-in-upper.txt")]]
    inos = [first[p] for p in paths if not p.endswith("hard/sub/b.txt")] + \
           [os.lstat(p).st_ino for p in others]
    assert len(set(inos)) == len(inos), "inode numbers collide: %s" % inos


def test_statvfs(corner):
    for path in (corner.mount.mnt, corner.mount.layers):
        sv = os.statvfs(path)
        assert sv.f_bsize > 0
        assert sv.f_namemax >= 255
        assert sv.f_flag & os.ST_RDONLY, "%s: statvfs does not report ST_RDONLY" % path


def test_mount_table_entry(corner):
    entries = mounts_at(corner.mount.mnt)
    assert len(entries) == 1, entries
    fstype, opts = entries[0]
    assert fstype == "fuse.strata"
    assert "ro" in opts
    assert {"allow_other", "default_permissions"} <= opts, opts


def test_random_reads_big_file(corner, layer_tree):
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    rel = fx.paths["big_file"]
    ref_path = os.path.join(layer_tree("base").path, rel)
    path = os.path.join(corner.mount.layer(fx.layers["base"]["digest"]), rel)
    size = os.path.getsize(ref_path)
    assert os.path.getsize(path) == size
    C = fx.chunk_size
    rng = random.Random(4242)
    reads = []
    for k in range(0, size // C + 1):  # around every chunk boundary
        reads.append((max(0, k * C - 3), 7))
    reads += [(rng.randrange(size), rng.randrange(1, 300 * 1024)) for _ in range(200)]
    reads += [(0, 1), (size - 1, 1), (size - 10, 100), (size, 10), (size + 4096, 10),
              (C - 1, 2 * C + 2)]
    rng.shuffle(reads)
    with open(ref_path, "rb") as rf, open(path, "rb") as sf:
        for off, n in reads:
            want = pread_full(rf.fileno(), off, n)
            got = pread_full(sf.fileno(), off, n)
            assert got == want, "pread(off=%d, n=%d): %d bytes, want %d; first mismatch at +%s" % (
                off, n, len(got), len(want),
                next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want))))
        # seek + read through the file object too
        for off, n in reads[:50]:
            rf.seek(off)
            sf.seek(off)
            assert sf.read(n) == rf.read(n), "seek(%d)+read(%d)" % (off, n)


def test_concurrent_reads(corner, layer_tree):
    """Several threads reading different files and offsets at once."""
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    layer = corner.mount.layer(fx.layers["base"]["digest"])
    ref = layer_tree("base").path
    files = [fx.paths["big_file"]] + fx.paths["chunk_files"]
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(60):
                rel = rng.choice(files)
                size = os.path.getsize(os.path.join(ref, rel))
                off = rng.randrange(size + 1)
                n = rng.randrange(1, 128 * 1024)
                with open(os.path.join(ref, rel), "rb") as rf, open(os.path.join(layer, rel), "rb") as sf:
                    want = pread_full(rf.fileno(), off, n)
                    got = pread_full(sf.fileno(), off, n)
                if got != want:
                    errors.append("%s off=%d n=%d" % (rel, off, n))
        except OSError as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "reader threads hung"
    assert not errors, errors[:10]


def test_writes_fail_with_erofs(corner):
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    layer = corner.mount.layer(fx.layers["base"]["digest"])
    f = os.path.join(layer, "files/one")
    assert_erofs(open, f, "w")
    assert_erofs(open, f, "r+b")
    assert_erofs(os.open, f, os.O_WRONLY | os.O_TRUNC)
    assert_erofs(os.open, os.path.join(layer, "files/new-file"), os.O_WRONLY | os.O_CREAT, 0o644)
    assert_erofs(os.mkdir, os.path.join(layer, "newdir"))
    assert_erofs(os.mkdir, os.path.join(corner.mount.layers, "sha256:" + "0" * 64))
    assert_erofs(os.unlink, f)
    assert_erofs(os.rmdir, os.path.join(layer, "dirs/empty"))
    assert_erofs(os.rename, f, os.path.join(layer, "files/renamed"))
    assert_erofs(os.symlink, "x", os.path.join(layer, "files/newlink"))
    assert_erofs(os.link, f, os.path.join(layer, "files/newhardlink"))
    assert_erofs(os.chmod, f, 0o600)
    assert_erofs(os.chown, f, 1, 1)
    assert_erofs(os.utime, f, (1, 1))
    assert_erofs(os.truncate, f, 0)
    assert_erofs(os.setxattr, f, "user.new", b"x")
    assert_erofs(os.removexattr, os.path.join(layer, "xattr/file"), "user.demo")
    assert_erofs(os.mknod, os.path.join(layer, "files/fifo2"), stat.S_IFIFO | 0o600)
    with open(f, "rb") as fh:
        assert fh.read() == b"1"


NOBODY = 65534

_AS_NOBODY = r"""
import errno, os, sys
ok, denied = sys.argv[1], sys.argv[2]
with open(ok, "rb") as f:
    f.read()
try:
    open(denied, "rb")
except PermissionError:
    pass
else:
    sys.exit("read %s as uid %d although its mode forbids it" % (denied, os.getuid()))
print("ok")
"""


def test_permissions_for_other_users(corner):
    """allow_other lets other users in; default_permissions makes the kernel enforce modes."""
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    layer = corner.mount.layer(fx.layers["base"]["digest"])
    p = subprocess.run([sys.executable, "-c", _AS_NOBODY, os.path.join(layer, "files/one"),
                        os.path.join(layer, "dirs/private/secret")],
                       user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_big_ids_and_capability(corner):
    """Spot checks with explicit values (the tree comparison covers them too)."""
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    pax = corner.mount.layer(fx.layers["pax"]["digest"])
    st = os.lstat(os.path.join(pax, fx.paths["big_ids_file"]))
    assert [st.st_uid, st.st_gid] == fx.paths["big_ids"]
    base = corner.mount.layer(fx.layers["base"]["digest"])
    cap = os.getxattr(os.path.join(base, fx.paths["cap_file"]), "security.capability",
                      follow_symlinks=False)
    assert cap.hex() == fx.paths["cap_value_hex"]
    with open(os.path.join(pax, fx.paths["dup_file"])) as f:
        assert f.read() == fx.paths["dup_winner"]
    with open(os.path.join(pax, fx.paths["dup_root_file"])) as f:
        assert f.read() == fx.paths["dup_root_winner"]
    for d in fx.paths["implicit_dirs"]:
        st = os.lstat(os.path.join(pax, d))
        assert stat.S_ISDIR(st.st_mode), d
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0), d


def test_whiteouts_and_opaque_dir(corner):
    assert_pulled(corner, "oci")
    fx = corner.fixtures
    upper = corner.mount.layer(fx.layers["upper"]["digest"])
    for rel in fx.paths["whiteouts"]:
        st = os.lstat(os.path.join(upper, rel))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, rel
        assert not os.path.lexists(os.path.join(upper, os.path.dirname(rel),
                                                ".wh." + os.path.basename(rel)))
    opq = os.path.join(upper, fx.paths["opaque_dir"])
    assert os.getxattr(opq, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    assert ".wh..wh..opq" not in os.listdir(opq)
    with pytest.raises(OSError) as ei:
        os.getxattr(os.path.join(upper, "victims"), "trusted.overlay.opaque", follow_symlinks=False)
    assert ei.value.errno == errno.ENODATA


def test_stats_json(corner):
    p = corner.run("--json", "stats")
    assert isinstance(json.loads(p.stdout), dict), p.stdout


def test_pull_again_is_idempotent(corner):
    """Runs last in this module: pulling an image that is already there changes nothing (but,
    perhaps, a pull timestamp)."""
    assert_pulled(corner, "oci")
    fx = corner.fixtures

    def images():
        return sorted(json.dumps({k: e[k] for k in ("ref", "manifest", "platform", "layers")},
                                 sort_keys=True) for e in corner.run.ls())

    before = images()
    before_layers = sorted(os.listdir(corner.mount.layers))
    objs = corner.run.pull_json(fx.ref("corner:oci"))
    assert [o["manifest"] for o in objs] == [fx.image("corner:oci")["manifest"]]
    assert images() == before
    assert sorted(os.listdir(corner.mount.layers)) == before_layers

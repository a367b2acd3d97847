# SPDX-License-Identifier: Apache-2.0
"""MNT/images/<escaped ref>/rootfs: an image's layers merged by strata itself (no overlayfs) must
be exactly what `umoci unpack` of the image leaves (whiteouts of files and directories, opaque
directories, a file replaced by a directory and back, hard links broken up by upper layers), be
read-only, and run a program with chroot from an empty store, lazily (Range requests only).

merge:gzip is base + upper (the corner layers: devices, owners, capabilities, xattrs, symlinks,
hard links, whiteouts, an opaque dir) + merge-a/b/c (mkfixture.py build_merge_layers). The roots
are not compared (umoci's rootfs directory is its own)."""

import errno
import os
import shutil
import subprocess

import pytest

from harness import treecmp
from harness.fs import bounded
from harness.nginx import not_ranged, request_context
from harness.registry import Registry
from harness.strata import Mount, Strata, new_store
from harness.timeouts import INDEX_TIMEOUT

MERGE_IMAGE = "merge:gzip"
DEMO_IMAGE = "demo:latest"


def escape(ref):
    """The directory name of ref under MNT/images (README: '%' -> %25, '/' -> %2F)."""
    return ref.replace("%", "%25").replace("/", "%2F")


def rootfs_of(m, ref):
    return os.path.join(m.mnt, "images", escape(ref), "rootfs")


@pytest.fixture(scope="module")
def env(strata_bin, fixtures, tmp_path_factory):
    base = tmp_path_factory.mktemp("rootfs")
    store = base / "store"
    store.mkdir()
    run = Strata(strata_bin, store)
    for ref in (MERGE_IMAGE, DEMO_IMAGE):
        run("pull", fixtures.ref(ref))
    m = Mount(strata_bin, store, base / "mnt", base / "daemon.log")

    class Env:
        pass

    e = Env()
    e.mount, e.fixtures, e.run = m, fixtures, run
    try:
        m.start()
        yield e
    finally:
        m.cleanup()


@pytest.fixture(scope="module")
def umoci_merge(fixtures, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("umoci-merge") / "bundle"
    p = subprocess.run(["umoci", "unpack", "--image", "%s:%s" % (fixtures.layout, MERGE_IMAGE),
                        str(bundle)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, "umoci unpack failed: %s" % p.stderr
    try:
        yield str(bundle / "rootfs")
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


def test_images_lists_pulled_images(env):
    names = bounded(env.mount, lambda: sorted(os.listdir(os.path.join(env.mount.mnt, "images"))),
                    "listdir images", 60)
    want = sorted(escape(env.fixtures.ref(r)) for r in (MERGE_IMAGE, DEMO_IMAGE))
    assert names == want
    d = os.path.join(env.mount.mnt, "images", want[0])
    assert os.listdir(d) == ["rootfs"]


def test_rootfs_matches_umoci_unpack(env, umoci_merge):
    root = rootfs_of(env.mount, env.fixtures.ref(MERGE_IMAGE))
    bounded(env.mount, lambda: treecmp.compare_layer(root, umoci_merge, whiteouts=False,
                                                     left_name="strata-rootfs",
                                                     right_name="umoci"),
            "compare " + root, 300)


def test_rootfs_corner_cases(env):
    """What the comparison covers, named: so a failure says which rule broke."""
    root = rootfs_of(env.mount, env.fixtures.ref(MERGE_IMAGE))
    j = lambda p: os.path.join(root, p)
    assert os.path.isfile(j("swap")) and not os.path.islink(j("swap"))
    with open(j("swap")) as f:
        assert f.read() == "a file again\n"
    assert os.path.isfile(j("swapdir"))
    assert os.listdir(j("op")) == ["new"]
    assert not os.path.lexists(j("wd/sub"))
    assert os.listdir(j("wd")) == ["fresh.txt"]
    assert not os.path.lexists(j("links/b"))
    assert os.lstat(j("links/a")).st_nlink == 1
    assert os.lstat(j("links/c")).st_ino != os.lstat(j("links/a")).st_ino
    assert os.lstat(j("links/n1")).st_ino == os.lstat(j("links/n2")).st_ino
    assert os.lstat(j("links/n1")).st_nlink == 2
    for rel in env.fixtures.paths["whiteouts"]:
        assert not os.path.lexists(j(rel))
    # the opaque marker was applied, not shown
    assert "trusted.overlay.opaque" not in os.listxattr(j("op"))
    assert "trusted.overlay.opaque" not in os.listxattr(j("opaque"))
    assert os.getxattr(j("files/xattr-dir-kept"), "user.merge") == b"upper"


def test_rootfs_is_read_only(env):
    root = rootfs_of(env.mount, env.fixtures.ref(MERGE_IMAGE))
    for call in (lambda: open(os.path.join(root, "swap"), "w"),
                 lambda: os.mkdir(os.path.join(root, "newdir")),
                 lambda: os.unlink(os.path.join(root, "swap"))):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno in (errno.EROFS, errno.EPERM, errno.ENOSYS), e.value


def test_unknown_names_are_enoent(env):
    images = os.path.join(env.mount.mnt, "images")
    for name in ("127.0.0.1:1%2Fnothing:here", "bad%escape", escape(env.fixtures.ref(MERGE_IMAGE))
                 + "x"):
        assert not os.path.lexists(os.path.join(images, name)), name
    d = os.path.join(images, escape(env.fixtures.ref(MERGE_IMAGE)))
    assert not os.path.lexists(os.path.join(d, "other"))


def test_chroot_from_empty_store_lazily(strata_bin, fixtures, nginx_proxy, tmp_path):
    """demo:latest with an index artifact in a registry of its own, pulled through nginx into an
    empty store (indexes only), then run with chroot from MNT/images/.../rootfs: the layers'
    bytes come only with Range requests."""
    with Registry(tmp_path / "registry") as reg:
        reg.push_indexed(fixtures.layout, DEMO_IMAGE, Strata(strata_bin,
                                                             new_store(tmp_path, "index")))
        ng = nginx_proxy(reg)
        run = Strata(strata_bin, new_store(tmp_path, "lazy"))
        ng.clear()
        run("pull", "--index=artifact", ng.ref(DEMO_IMAGE), timeout=INDEX_TIMEOUT)
        pulled = ng.requests()
        assert not ng.blob_requests(None, [r for r in pulled if r["method"] == "GET" and
                                           r["uri"].rsplit("/", 1)[-1] in
                                           fixtures.layer_digests(DEMO_IMAGE)]), \
            request_context(pulled)
        m = Mount(strata_bin, run.store, tmp_path / "mnt", tmp_path / "daemon.log")
        try:
            m.start()
            ng.clear()
            root = rootfs_of(m, ng.ref(DEMO_IMAGE))
            chroot = shutil.which("chroot") or "/usr/sbin/chroot"
            cmd = fixtures.paths["demo_cmd"]
            p = bounded(m, lambda: subprocess.run([chroot, root] + cmd, stdin=subprocess.DEVNULL,
                                                  capture_output=True, text=True, timeout=60,
                                                  env={"PATH": "/bin"}), "chroot", 90)
            assert p.returncode == 0, "chroot %s %s: exit %d: %s" % (root, cmd, p.returncode,
                                                                     p.stderr)
            assert p.stdout == fixtures.paths["demo_hello_text"]
            reqs = ng.requests()
            layer_gets = [r for r in ng.blob_requests(None, reqs, method="GET")
                          if r["uri"].rsplit("/", 1)[-1] in fixtures.layer_digests(DEMO_IMAGE)]
            assert layer_gets, "no layer bytes fetched\n" + request_context(reqs, m)
            assert not not_ranged(layer_gets), "whole-blob GETs:\n" + request_context(reqs, m)
        finally:
            m.cleanup()


def test_rootfs_inodes_survive_takeover(strata_bin, fixtures, daemons, tmp_path):
    """The kernel keeps the rootfs inode numbers across `mount --takeover`: the new daemon must
    answer for them (they derive from the reference and manifest digest, not from what the old
    process happened to load)."""
    store = tmp_path / "store"
    store.mkdir()
    ref = fixtures.ref(MERGE_IMAGE)
    Strata(strata_bin, store)("pull", ref)
    d = daemons(str(store))
    d.start()
    root = os.path.join(d.mnt, "images", escape(ref), "rootfs")
    fd = bounded(d, lambda: os.open(os.path.join(root, "links"), os.O_RDONLY | os.O_DIRECTORY),
                 "open links", 60)
    try:
        d.takeover()
        # a name never looked up before, in a directory the kernel knows by its old number
        st = bounded(d, lambda: os.stat("n1", dir_fd=fd, follow_symlinks=False), "lookup", 60)
        assert st.st_nlink == 2
        f = os.open("c", os.O_RDONLY, dir_fd=fd)
        try:
            assert os.read(f, 100) == b"c is its own file now\n"
        finally:
            os.close(f)
        assert "n2" in os.listdir(fd)
    finally:
        os.close(fd)

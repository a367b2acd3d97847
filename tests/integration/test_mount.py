# SPDX-License-Identifier: Apache-2.0
"""Mount lifecycle: offline remount, bad mountpoints, store locking, umount, live updates."""

import os
import time

from harness.fs import is_mountpoint, mounts_at
from harness.strata import one_line


def test_remount_with_registry_stopped(strata, mount, fixtures, layer_tree, running_registry):
    ref = "corner:oci"
    strata("pull", fixtures.ref(ref))
    digests = fixtures.layer_digests(ref)

    m = mount()
    for d in digests:
        layer_tree(d).compare(m.layer(d))
    p = m.umount()
    assert p.returncode == 0, p.stderr
    assert m.wait_exit() == 0, "daemon did not exit 0 after umount; stderr:\n%s" % m.stderr()

    running_registry.stop()
    # everything must come from the store now
    m2 = mount(mnt=m.mnt)
    assert sorted(os.listdir(m2.layers)) == sorted(set(digests))
    for d in digests:
        layer_tree(d).compare(m2.layer(d))
    ls = strata.ls()
    assert [e["ref"] for e in ls] == [fixtures.ref(ref)]


def test_mountpoint_missing(strata, tmp_path):
    missing = tmp_path / "does-not-exist"
    p = strata("mount", "-f", missing, check=False, timeout=30)
    assert p.returncode == 1, "exit %d, stderr: %s" % (p.returncode, p.stderr)
    line = one_line(p.stderr)
    assert str(missing) in line
    assert line.startswith("strata: mount:"), line
    assert not missing.exists()


def test_mountpoint_already_mounted(mount, tmp_path):
    """Another strata mount (of a different store, so the store lock is not what refuses it)."""
    mnt = tmp_path / "busy"
    other_store = tmp_path / "other-store"
    other_store.mkdir()
    mount(store_dir=str(other_store), mnt=str(mnt))
    before = mounts_at(mnt)
    m = mount(mnt=str(mnt), wait=False)
    rc = m.wait_exit(20)
    assert rc is not None, "strata mounted over an existing mount and kept running"
    assert rc == 1, "exit %d, stderr: %s" % (rc, m.stderr())
    line = one_line(m.stderr())
    assert line.startswith("strata: mount:"), line
    assert str(mnt) in line, line
    assert mounts_at(mnt) == before, "the mount table at %s changed" % mnt


def test_second_daemon_on_same_store(mount, store, tmp_path):
    mount(mnt=str(tmp_path / "first"))
    second = mount(mnt=str(tmp_path / "second"), wait=False)
    rc = second.wait_exit(20)
    assert rc is not None, "a second daemon on the same store kept running"
    assert rc == 1, "exit %d, stderr: %s" % (rc, second.stderr())
    line = one_line(second.stderr())
    assert "in use" in line, line
    assert not is_mountpoint(tmp_path / "second")


def test_umount_stops_daemon(strata, mount, fixtures):
    strata("pull", fixtures.ref("demo:latest"))
    m = mount()
    assert is_mountpoint(m.mnt)
    p = m.umount()
    assert p.returncode == 0, p.stderr
    assert m.wait_exit() == 0, "daemon exit code %s; stderr:\n%s" % (m.returncode, m.stderr())
    assert not is_mountpoint(m.mnt)
    assert os.listdir(m.mnt) == []


def test_umount_not_mounted(strata, tmp_path):
    p = strata.raw("umount", tmp_path, timeout=30)
    assert p.returncode == 1, p
    assert str(tmp_path) in one_line(p.stderr)


def test_pull_while_mounted_appears_at_once(strata, mount, fixtures):
    strata("pull", fixtures.ref("corner:gzip"))
    m = mount()
    first = set(fixtures.layer_digests("corner:gzip"))
    assert set(os.listdir(m.layers)) == first
    strata("pull", fixtures.ref("demo:latest"))
    demo = fixtures.layer_digests("demo:latest")
    assert set(os.listdir(m.layers)) == first | set(demo)
    hello = os.path.join(m.layer(demo[-1]), fixtures.paths["demo_hello"])
    with open(hello) as f:
        assert f.read() == fixtures.paths["demo_hello_text"]
    refs = sorted(e["ref"] for e in strata.ls())
    assert refs == sorted([fixtures.ref("corner:gzip"), fixtures.ref("demo:latest")])


def test_pull_while_mounted_after_lookup_of_missing_layer(strata, mount, fixtures):
    """A layer looked up (ENOENT) before it was pulled must appear after the pull."""
    m = mount()
    demo = fixtures.layer_digests("demo:latest")
    assert not os.path.exists(m.layer(demo[-1]))  # may leave a negative dentry behind
    assert os.listdir(m.layers) == []
    strata("pull", fixtures.ref("demo:latest"))
    deadline = time.monotonic() + 2  # allow for a short negative-entry timeout at most
    while not os.path.isdir(m.layer(demo[-1])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.isdir(m.layer(demo[-1]))
    assert set(os.listdir(m.layers)) == set(demo)

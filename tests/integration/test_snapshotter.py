# SPDX-License-Identifier: Apache-2.0
"""strata as a containerd proxy snapshotter (`strata mount --snapshotter-socket`), against a private
containerd whose config.toml has `[proxy_plugins.strata]` (type "snapshot"):

  local snapshots   `ctr images pull --snapshotter strata` unpacks each layer into a snapshot
                    strata made (Prepare, Mounts, Commit as containerd's overlay snapshotter does),
                    `ctr run --snapshotter strata` runs the image, `ctr snapshots` ls/usage/rm work
  persistence       kill -9 of the daemon, restart: containerd lists the same snapshots
  takeover          `strata mount --takeover` while a container runs: it keeps running and
                    reading, containerd keeps using the snapshotter (the new daemon's socket)
  remote layers     `ctr-remote image rpull`: strata registers the image (its index artifact) and
                    commits each layer as a snapshot itself; `ctr run` reads the layers from the
                    mount (the registry sees only ranged reads of the layer blobs), writes land in
                    the container's upper dir
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from harness.containerd import Containerd
from harness.images import Fixtures, run_mkfixture
from harness.nginx import format_requests, not_ranged
from harness.strata import Mount, Strata

SNAP = "strata"


@pytest.fixture(scope="module")
def demo(registry, tmp_path_factory):
    """demo:latest (busybox; its Cmd prints /hello.txt) pushed to the session registry."""
    layout = tmp_path_factory.mktemp("snap-demo")
    run_mkfixture("demo", "--out", layout)
    registry.push(layout)
    return Fixtures(layout, registry)


class Node:
    """A strata daemon serving the snapshotter socket, and a containerd using it."""

    def __init__(self, strata_bin, store, tmp_path):
        for tool in ("containerd", "ctr-remote", "runc"):
            if not __import__("shutil").which(tool):
                pytest.fail("missing test tool %s (tools/install-deps.sh installs it)" % tool,
                            pytrace=False)
        self.strata_bin = strata_bin
        self.store = store
        self.tmp = tmp_path
        self.ctd = Containerd()
        self.sock = self.ctd.add_proxy_snapshotter(SNAP)
        self.mounts = []
        self.daemon = None

    def start_strata(self):
        n = len(self.mounts)
        m = Mount(self.strata_bin, self.store, str(self.tmp / "mnt"),
                  self.tmp / ("daemon%d.log" % n), ["--snapshotter-socket", self.sock])
        self.mounts.append(m)
        m.start()
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(self.sock), m.stderr()
        self.daemon = m
        return m

    def takeover(self):
        """`strata mount --takeover` with the same socket: the old daemon hands the mount over and
        exits 0; the new one serves the socket."""
        old = self.daemon
        m = Mount(self.strata_bin, self.store, old.mnt, self.tmp / ("daemon%d.log" % len(self.mounts)),
                  ["--takeover", "--snapshotter-socket", self.sock])
        self.mounts.append(m)
        m.start(wait=False, create=False)
        m.mounts_before = old.mounts_before
        assert old.wait_exit(60) == 0, old.stderr() + m.stderr()
        deadline = time.monotonic() + 60
        while self.ctr("snapshots", "--snapshotter", SNAP, "ls", check=False).returncode != 0:
            assert m.proc.poll() is None, m.stderr()
            assert time.monotonic() < deadline, m.stderr()
            time.sleep(0.2)
        self.daemon = m
        return m

    def start(self):
        self.start_strata()
        reason = self.ctd.start()
        if reason:
            pytest.skip("a private containerd cannot run here: " + reason)

    def ctr(self, *args, **kw):
        return self.ctd.ctr(*args, **kw)

    def snapshots(self):
        """`ctr snapshots ls`: {key: (parent, kind)}."""
        out = self.ctr("snapshots", "--snapshotter", SNAP, "ls").stdout.splitlines()
        rows = {}
        for line in out[1:]:
            f = line.split()
            if len(f) == 3:
                rows[f[0]] = (f[1], f[2])
            elif len(f) == 2:
                rows[f[0]] = ("", f[1])
        return rows

    def stop(self):
        try:
            self.ctd.stop()
        finally:
            for m in reversed(self.mounts):
                m.cleanup()


@pytest.fixture
def node(strata_bin, store, tmp_path):
    n = Node(strata_bin, store, tmp_path)
    try:
        n.start()
        yield n
    finally:
        n.stop()


def snap_dirs(store):
    d = os.path.join(store, "snapshots")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_local_pull_run_ls_usage_rm(node, demo, strata):
    ref = demo.ref("demo:latest")
    node.ctr("images", "pull", "--plain-http", "--snapshotter", SNAP, ref)
    snaps = node.snapshots()
    # two layers, each unpacked into a committed snapshot strata made
    assert sorted(k for k, (_, kind) in snaps.items() if kind == "Committed") == sorted(snaps)
    assert len(snaps) == 2, snaps
    assert len(snap_dirs(node.store)) == 2

    p = node.ctr("run", "--rm", "--snapshotter", SNAP, ref, "snap-run-1", timeout=120)
    assert p.stdout == demo.meta["paths"]["demo_hello_text"]

    # a container's writes land in its active snapshot's upper dir
    p = node.ctr("run", "--rm", "--snapshotter", SNAP, ref, "snap-run-2", "/bin/sh", "-c",
                 "echo written > /new.txt && cat /new.txt", timeout=120)
    assert p.stdout == "written\n"

    for key in snaps:
        u = node.ctr("snapshots", "--snapshotter", SNAP, "usage", key).stdout
        assert key in u
    # the top layer holds /hello.txt: a non-zero size
    sizes = [node.ctr("snapshots", "--snapshotter", SNAP, "usage", k).stdout.splitlines()[1]
             for k in snaps]
    assert any(not line.split()[1].startswith("0") for line in sizes), sizes

    # fsck checks the records (2 layers; the containers' active snapshots go with containerd's gc)
    f = strata("fsck", check=False)
    assert re.search(r"^snapshots +[234]$", f.stdout, re.M), f.stdout + f.stderr
    assert f.returncode == 0, f.stdout + f.stderr

    # removal: image and snapshots go, and the directories with them
    node.ctr("images", "rm", "--sync", ref)
    for key, (parent, _) in sorted(snaps.items(), key=lambda kv: kv[1][0] == ""):
        node.ctr("snapshots", "--snapshotter", SNAP, "rm", key, check=False)
    deadline = time.monotonic() + 30
    while node.snapshots() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node.snapshots() == {}
    assert snap_dirs(node.store) == []


def test_kill9_restart_keeps_snapshots(node, demo):
    ref = demo.ref("demo:latest")
    node.ctr("images", "pull", "--plain-http", "--snapshotter", SNAP, ref)
    node.ctr("snapshots", "--snapshotter", SNAP, "prepare", "active-1",
             sorted(node.snapshots())[-1] if False else top_key(node))
    before = node.snapshots()
    assert "active-1" in before and before["active-1"][1] == "Active"
    node.daemon.proc.send_signal(signal.SIGKILL)
    node.daemon.proc.wait(30)
    node.daemon.cleanup()
    node.start_strata()
    deadline = time.monotonic() + 30
    while True:
        p = node.ctr("snapshots", "--snapshotter", SNAP, "ls", check=False)
        if p.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert node.snapshots() == before
    m = node.ctr("snapshots", "--snapshotter", SNAP, "mounts", "/tmp/x", "active-1").stdout
    assert "upperdir=" in m and "lowerdir=" in m, m


def top_key(node):
    """The committed snapshot no other one has as parent (the image's top layer)."""
    snaps = node.snapshots()
    parents = {p for p, _ in snaps.values()}
    tops = [k for k, (_, kind) in snaps.items() if kind == "Committed" and k not in parents]
    assert len(tops) == 1, snaps
    return tops[0]


# ----------------------------------------------------------------------------------------------
# remote layers: ctr-remote image rpull
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def indexed_demo(lazy_registry, tmp_path_factory, strata_bin):
    """demo:latest on the lazy registry with its strata index artifact (so a pull fetches no layer
    blob)."""
    layout = tmp_path_factory.mktemp("snap-demo-indexed")
    run_mkfixture("demo", "--out", layout)
    store = tmp_path_factory.mktemp("snap-index-store")
    lazy_registry.push_indexed(layout, "demo:latest", Strata(strata_bin, str(store)))
    return Fixtures(layout, lazy_registry)


def test_rpull_remote_layers_run(node, indexed_demo, nginx_proxy, strata):
    nginx = nginx_proxy(indexed_demo.registry)
    ref = nginx.ref("demo:latest")
    digests = [indexed_demo.layers[n]["digest"] for n in ("demo-base", "demo-hello")]
    nginx.clear()
    node.ctr("image", "rpull", "--plain-http", "--snapshotter", SNAP, ref, timeout=120)
    snaps = node.snapshots()
    assert len(snaps) == 2 and all(kind == "Committed" for _, kind in snaps.values()), snaps
    # strata committed them: no directory of their own, they are layers of the mount
    assert snap_dirs(node.store) == []

    p = node.ctr("run", "--rm", "--snapshotter", SNAP, ref, "snap-remote-1", timeout=120)
    assert p.stdout == indexed_demo.meta["paths"]["demo_hello_text"]

    # a container's writes land in its upper dir; the lowerdirs are the mount's layer dirs
    node.ctr("run", "--snapshotter", SNAP, ref, "snap-remote-2", "/bin/sh", "-c",
             "echo written > /new.txt", timeout=120)
    m = node.ctr("snapshots", "--snapshotter", SNAP, "mounts", "/mnt", "snap-remote-2").stdout
    layers = os.path.join(os.path.realpath(node.daemon.mnt), "layers")
    want = ":".join("%s/sha256\\:%s" % (layers, d.split(":", 1)[1]) for d in reversed(digests))
    assert "lowerdir=" + want in m, m
    upper = re.search(r"upperdir=([^,\s]+)", m).group(1)
    with open(os.path.join(upper, "new.txt")) as f:
        assert f.read() == "written\n"
    node.ctr("containers", "rm", "snap-remote-2")

    reqs = nginx.requests()
    for d in digests:
        whole = not_ranged(nginx.blob_requests(d, reqs))
        assert whole == [], "whole-layer reads of %s:\n%s" % (d, format_requests(reqs))

    # usage of a remote layer: its bytes in the store (busybox was read: its chunks are local)
    usage = {k: node.ctr("snapshots", "--snapshotter", SNAP, "usage", k).stdout.splitlines()[1]
             for k in snaps}
    assert any(not u.split()[1].startswith("0") for u in usage.values()), usage
    assert "demo" in strata("ls").stdout

    # removing the image: containerd's gc removes the snapshots, strata forgets the image it
    # registered for them (so `strata gc` can reclaim the layers)
    node.ctr("images", "rm", "--sync", ref)
    deadline = time.monotonic() + 30
    while node.snapshots() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node.snapshots() == {}
    assert "demo" not in strata("ls").stdout
    strata("gc")
    assert json.loads(strata("--json", "stats").stdout)["layers"] == 0


def test_takeover_while_a_container_runs(node, indexed_demo):
    ref = indexed_demo.ref("demo:latest")
    hello = indexed_demo.meta["paths"]["demo_hello_text"]
    node.ctr("image", "rpull", "--plain-http", "--snapshotter", SNAP, ref, timeout=120)
    node.ctr("run", "-d", "--snapshotter", SNAP, ref, "snap-long", "/bin/sh", "-c",
             "while cat /hello.txt > /dev/null; do sleep 0.1; done; echo gone", timeout=120)
    try:
        before = node.snapshots()
        node.takeover()
        # the container keeps running and reading; containerd keeps using the snapshotter
        time.sleep(1)
        tasks = node.ctr("tasks", "ls").stdout
        assert re.search(r"snap-long\s+\d+\s+RUNNING", tasks), tasks
        p = node.ctr("tasks", "exec", "--exec-id", "e1", "snap-long", "cat", "/hello.txt")
        assert p.stdout == hello
        assert node.snapshots() == before
        p = node.ctr("run", "--rm", "--snapshotter", SNAP, ref, "snap-after", timeout=120)
        assert p.stdout == hello
    finally:
        node.ctr("tasks", "rm", "-f", "snap-long", check=False)
        node.ctr("containers", "rm", "snap-long", check=False)


def test_rpull_without_index_falls_back_to_local(node, demo, strata):
    """demo:latest on the session registry has no index artifact and is no eStargz: the daemon
    streams its layers in the background, and a layer whose stream has not verified yet when
    containerd prepares it is unpacked by containerd into a local snapshot (this small image's
    later layers may have streamed already: those are served from the mount). Either way the
    image runs, and when every layer went local strata keeps no image record for it."""
    ref = demo.ref("demo:latest")
    node.ctr("image", "rpull", "--plain-http", "--snapshotter", SNAP, ref, timeout=120)
    snaps = node.snapshots()
    assert len(snaps) == 2 and all(kind == "Committed" for _, kind in snaps.values()), snaps
    local = len(snap_dirs(node.store))
    p = node.ctr("run", "--rm", "--snapshotter", SNAP, ref, "snap-fallback", timeout=120)
    assert p.stdout == demo.meta["paths"]["demo_hello_text"]
    if local == 2:
        assert "demo" not in strata("ls").stdout

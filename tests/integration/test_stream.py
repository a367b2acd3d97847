# SPDX-License-Identifier: Apache-2.0
"""Layers with no index anywhere (no artifact, not eStargz) pulled while a daemon runs: the pull
records them as pending and returns; the daemon streams each blob once, verifies it and indexes
it; lookups of such a layer wait for it (bounded while the stream makes progress, --read-timeout).

The image is mkfixture big at STREAM_MIB in a registry of this module's own (no index artifact
is ever pushed there), behind an nginx whose access log counts the blob requests.
"""

import errno
import json
import os
import shutil
import time

import pytest

from harness.fs import bounded, force_unmount, read_bytes, read_file
from harness.images import BigFixtures, run_mkfixture
from harness.nginx import SlowNginx, format_requests
from harness.registry import Registry
from harness.strata import Daemons, notes, one_json

STREAM_MIB = 48
RATE = "8m"  # nginx limit_rate: the blob streams for a few seconds, long enough to cut it
note = notes("stream")


@pytest.fixture(scope="module")
def sbig(strata_bin, tmp_path_factory):
    layout = tmp_path_factory.mktemp("stream-layout")
    reg = Registry(tmp_path_factory.mktemp("stream-registry"))
    try:
        with reg, SlowNginx(tmp_path_factory.mktemp("stream-nginx"), reg, RATE) as ng:
            run_mkfixture("big", "--out", layout, "--size-mib", str(STREAM_MIB))
            reg.push(layout)
            yield BigFixtures(layout, reg, ng)
    finally:
        shutil.rmtree(reg.storage, ignore_errors=True)
        shutil.rmtree(layout, ignore_errors=True)


@pytest.fixture(scope="module")
def sbig_tree(sbig, extract):
    return extract(sbig.blob_path("big"), sbig.layer["compression"])


def isdir(m, path):
    """os.path.isdir(path) through m, bounded (a lookup of a streaming layer waits for it)."""
    return bounded(m, lambda: os.path.isdir(path), "isdir(%s)" % path)


def assert_same_file(m, strata_path, tar_path):
    """A file read through m's mount is the tar's, bounded: a hung read kills m's daemon and fails
    the test (so its fixture unmounts) instead of holding the test, and the mount, for ever."""
    assert read_file(m, strata_path) == read_bytes(tar_path), strata_path


def pull_json(strata, ref):
    return one_json(strata("--json", "pull", ref))


def fsck_clean(strata):
    p = strata("--json", "fsck", check=False)
    assert p.returncode == 0, "fsck found problems:\n%s%s" % (p.stdout, p.stderr)


def test_pull_in_daemon_streams_and_lookup_waits(strata, mount, sbig, sbig_tree):
    m = mount()
    ng = sbig.nginx
    ng.clear()
    o = pull_json(strata, sbig.ref())
    note("pull in the daemon: %s" % {k: o.get(k) for k in ("index_sources", "streaming",
                                                           "bytes_fetched", "requests")})
    assert o["index_sources"] == ["stream"], o
    assert o["streaming"] == 1, o
    # the pull itself read manifests, the config and an eStargz footer probe: no layer download
    assert o["bytes_fetched"] < sbig.layer["size"] // 10, o
    # the lookup waits for the stream; then every file is the tar's
    layer = m.layer(sbig.digest)
    assert isdir(m, layer)
    for rel in sbig.files:
        assert_same_file(m, os.path.join(layer, rel), os.path.join(sbig_tree, rel))
    reqs = ng.requests()
    gets = [r for r in ng.blob_requests(sbig.digest, reqs, method="GET") if r["status"] in (200, 206)]
    body = sum(r["bytes"] for r in gets)
    note("blob GETs: %d, %d bytes for a %d-byte blob" % (len(gets), body, sbig.layer["size"]))
    # streamed once (a probe of the footer is a small range read)
    assert body < sbig.layer["size"] + (1 << 20), format_requests(reqs)
    assert len([r for r in gets if not r["range"]]) == 1, format_requests(reqs)
    # the layer is now an ordinary one: listed, in `ls`, fsck clean (also through the daemon)
    assert sbig.digest in bounded(m, lambda: os.listdir(m.layers), "listing layers/")
    fsck_clean(strata)
    # pulling again changes nothing and fetches no blob
    ng.clear()
    o = pull_json(strata, sbig.ref())
    assert o["index_sources"] == ["store"] and o["streaming"] == 0, o
    assert not ng.blob_requests(sbig.digest, ng.requests(), method="GET")


def test_without_daemon_pull_builds(strata, sbig):
    o = pull_json(strata, sbig.ref())
    assert o["index_sources"] == ["build"], o
    assert o["bytes_fetched"] >= sbig.layer["size"], o


def test_pending_survives_kill_and_resumes(strata, mount, sbig, sbig_tree, store):
    m = mount()
    o = pull_json(strata, sbig.ref())
    assert o["index_sources"] == ["stream"], o
    m.kill()  # SIGKILL while the blob streams (or just after)
    m.proc.wait(30)
    force_unmount(m.mnt, keep=m.mounts_before)
    fsck_clean(strata)  # a pending layer is a valid state
    assert [e["ref"] for e in strata.ls()] == [sbig.ref()]
    m2 = mount(mnt=m.mnt)
    layer = m2.layer(sbig.digest)
    assert isdir(m2, layer)
    for rel in sbig.files:
        assert_same_file(m2, os.path.join(layer, rel), os.path.join(sbig_tree, rel))
    fsck_clean(strata)


def test_stream_failure_is_bounded_and_recovers(strata, mount, sbig, sbig_tree, tmp_path):
    ng = sbig.nginx
    m = mount(args=("--read-timeout", "3"))
    o = pull_json(strata, sbig.ref())
    assert o["index_sources"] == ["stream"], o
    time.sleep(0.5)
    ng.kill()  # cuts the stream mid-body; retries find nobody
    try:
        layer = m.layer(sbig.digest)
        t0 = time.monotonic()

        def lookup():
            try:
                os.stat(layer)
                return 0
            except OSError as e:
                return e.errno

        err = bounded(m, lookup, "a lookup of the layer")
        took = time.monotonic() - t0
        note("lookup with the registry down: errno %s after %.1fs" % (err, took))
        assert err == errno.EIO, err
        log = m.stderr()
        assert "streaming failed" in log or "no progress" in log, log[-3000:]
    finally:
        ng.start()
    # the next lookup (at least 2 s after the failure) retries the stream
    time.sleep(2.2)
    layer = m.layer(sbig.digest)
    assert isdir(m, layer), m.stderr()[-3000:]
    for rel in list(sbig.files)[:3]:
        assert_same_file(m, os.path.join(layer, rel), os.path.join(sbig_tree, rel))


def test_rm_and_gc_forget_a_pending_layer(strata, mount, sbig):
    m = mount(args=("--read-timeout", "3"))
    ng = sbig.nginx
    o = pull_json(strata, sbig.ref())
    assert o["index_sources"] == ["stream"], o
    ng.kill()  # keep the layer pending (its stream fails)
    try:
        strata("rm", sbig.ref())
        p = strata("--json", "gc")
        g = json.loads(p.stdout)
        assert sbig.digest in g["freed_layer_list"], g
        assert sbig.digest not in bounded(m, lambda: os.listdir(m.layers), "listing layers/")
        fsck_clean(strata)
    finally:
        ng.start()


def test_takeover_while_streaming(strata_bin, strata, sbig, sbig_tree, store, tmp_path):
    """A daemon taking over (strata mount --takeover) finishes the stream its predecessor began."""
    d = Daemons(strata_bin, store, tmp_path / "mnt", tmp_path)
    try:
        d.start()
        o = pull_json(strata, sbig.ref())
        assert o["index_sources"] == ["stream"], o
        time.sleep(0.5)  # the old daemon is streaming (the blob takes seconds at RATE)
        d.takeover()
        layer = d.layer(sbig.digest)
        assert isdir(d, layer), d.stderr()
        for rel in sbig.files:
            assert_same_file(d, os.path.join(layer, rel), os.path.join(sbig_tree, rel))
        fsck_clean(strata)
    finally:
        d.cleanup()

# SPDX-License-Identifier: Apache-2.0
"""Pulls and lazy reads across a lossy, reordering link. This kernel has no sch_netem, so the link
is tools/netemu.py: two network namespaces made by the test, joined by tun devices and a userspace
forwarder that drops 3% of the packets at random and holds 1% back behind later ones. The registry
runs in the server namespace; strata (pull and the FUSE daemon) runs in the client namespace and
reaches it through a TCP relay on its own 127.0.0.1. Every file read through FUSE must equal GNU
tar's extraction byte for byte."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.registry import Registry, registry_config
from harness.strata import Mount, Strata
from harness.timeouts import INDEX_TIMEOUT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import netemu  # noqa: E402

PORT = 5000          # inside the namespaces
LOSS = 0.03
REORDER = 0.01
REF = "corner:oci"   # gzip, uncompressed and zstd layers


def _need_netns():
    if os.geteuid() != 0:
        return "needs root (network namespaces, tun devices)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    return None


@pytest.fixture(scope="module")
def lossy(strata_bin, fixtures, tmp_path_factory):
    """The fixture images and REF's index artifact in a registry of their own, served across a
    lossy link; yields an object with the link, the wrapper that runs strata in the client
    namespace, and the reference as the client sees it."""
    why = _need_netns()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("lossy")
    with Registry(work / "reg") as plain:
        plain.push(fixtures.layout)
        Strata(strata_bin, work / "indexer")("--json", "index", "--push", plain.ref(REF),
                                             timeout=INDEX_TIMEOUT)
    shutil.rmtree(work / "indexer", ignore_errors=True)
    cfg = work / "registry-ns.yml"
    cfg.write_text(registry_config(plain.storage, "0.0.0.0:%d" % PORT))
    link = netemu.Link("stl%d" % (os.getpid() % 100000), delay_ms=1, rate_mbit=200, loss=LOSS,
                       reorder=REORDER, seed=5, logdir=str(work))
    try:
        with open(work / "registry-ns.log", "wb") as log:
            link.spawn(link.server_cmd(["docker-registry", "serve", str(cfg)]),
                       stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        link.relay(PORT)
        deadline = time.monotonic() + 30
        while True:   # the registry answers across the wire, through the relay
            p = subprocess.run(link.client_cmd(["curl", "-fsS", "-o", "/dev/null", "--max-time",
                                                "2", "http://127.0.0.1:%d/v2/" % PORT]),
                               capture_output=True, timeout=30)
            if p.returncode == 0:
                break
            assert time.monotonic() < deadline, "registry not reachable across the link: %s" % (
                p.stderr.decode(errors="replace"))
            time.sleep(0.2)
        wrapper = work / "strata-in-ns"
        wrapper.write_text("#!/bin/sh\nexec nsenter --net=/run/netns/%s -- %s \"$@\"\n" % (
            link.ns_c, strata_bin))
        wrapper.chmod(0o755)

        class Env:
            pass
        env = Env()
        env.link, env.strata, env.work = link, str(wrapper), work
        env.ref = "127.0.0.1:%d/%s" % (PORT, REF)
        yield env
    finally:
        link.stop()
        shutil.rmtree(plain.storage, ignore_errors=True)


def test_pull_and_lazy_reads_across_a_lossy_link(lossy, fixtures, layer_tree, tmp_path):
    store = tmp_path / "store"
    p = Strata(lossy.strata, store)("--json", "pull", "--index=artifact", lossy.ref,
                                    timeout=INDEX_TIMEOUT)
    o = json.loads(p.stdout.strip().splitlines()[-1])
    assert o["manifest"] == fixtures.image(REF)["manifest"], o
    assert set(o["index_sources"]) == {"artifact"}, o
    m = Mount(lossy.strata, store, tmp_path / "mnt", tmp_path / "daemon.log",
              args=["--read-timeout", "120"])
    try:
        m.start()
        for digest in o["layers"]:
            # every file read through FUSE: lazy, verified range reads across the link
            layer_tree(digest).compare(m.layer(digest))
        st = Strata(lossy.strata, store).stats()
        assert st["daemon"] and st["read_fetch"]["range_requests"] > 0, st
        log = m.stderr()
        assert "read: layer" not in log, log[-3000:]   # fs.c's line for a failed read
    finally:
        m.cleanup()
    counters = lossy.link.read_counters()
    assert counters and counters["lost"] > 0 and counters["forwarded"] > 0, counters
    print("wire: %s" % counters)


def test_whole_layer_pull_across_a_lossy_link(lossy, fixtures, tmp_path):
    """pull --index=build streams every layer across the link (whole blobs, digest-checked) and
    registers the image."""
    before = lossy.link.read_counters() or {"lost": 0}
    store = tmp_path / "store"
    run = Strata(lossy.strata, store)
    p = run("--json", "pull", "--index=build", lossy.ref, timeout=600)
    o = json.loads(p.stdout.strip().splitlines()[-1])
    assert o["manifest"] == fixtures.image(REF)["manifest"], o
    assert set(o["index_sources"]) == {"build"}, o
    assert [i["ref"] for i in run.ls()] == [lossy.ref], run.ls()
    time.sleep(0.6)   # the wire rewrites its counters twice a second
    counters = lossy.link.read_counters()
    assert counters and counters["lost"] > before["lost"], (before, counters)
    print("wire: %s" % counters)

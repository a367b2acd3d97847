# SPDX-License-Identifier: Apache-2.0
"""Bounded memory: the daemon's cache of decoded layer indexes is capped (--index-cache, config key
index_cache) and unloads least recently used layers that no request uses; an unloaded layer is
loaded again from the store when one of its inodes is used. With a cap smaller than one layer's
index every request loads and unloads its layer: trees, reads of open files and concurrent readers
must still see exactly the tar contents."""

import os
import threading
import time

from harness.fs import read_bytes, regular_files, walk_lstat
from harness.strata import one_line
from harness.timeouts import THREADS_TIMEOUT

IMAGES = ["corner:oci", "demo:latest"]


def pulled_layers(strata, fixtures):
    digests = []
    for ref in IMAGES:
        strata("pull", fixtures.ref(ref))
        for d in fixtures.layer_digests(ref):
            if d not in digests:
                digests.append(d)
    return digests


def files_of(root):
    """Relative paths of the regular files under root (no symlinks followed), whiteout markers
    (".wh.*", which strata shows as overlay whiteouts) left out."""
    return sorted(os.path.relpath(p, root) for p in regular_files(root)
                  if not os.path.basename(p).startswith(".wh."))


def test_tiny_index_cache_serves_every_tree(strata, mount, fixtures, layer_tree):
    digests = pulled_layers(strata, fixtures)
    assert len(digests) >= 3
    m = mount(args=("--index-cache", "1"))  # smaller than any layer's index

    for d in digests:
        layer_tree(d).compare(m.layer(d))
    # and once more: every layer was unloaded and is loaded again
    for d in digests:
        layer_tree(d).compare(m.layer(d))

    s = strata.stats()
    ic = s["index_cache"]
    assert ic["cap"] == 1, ic
    assert ic["loads"] > 2 * len(digests), ic
    assert ic["unloads"] > 2 * len(digests), ic
    # nothing is in use now: nothing above the cap stays loaded
    assert ic["bytes"] <= ic["cap"] and ic["layers"] == 0, ic
    assert ic["loads"] - ic["unloads"] == ic["layers"], ic
    human = strata("stats").stdout
    assert "index cache" in human and "unloads" in human, human


def test_default_cap_keeps_small_layers_loaded(strata, mount, fixtures, layer_tree):
    digests = pulled_layers(strata, fixtures)
    m = mount()
    for d in digests:
        layer_tree(d).compare(m.layer(d))
    ic = strata.stats()["index_cache"]
    assert ic["cap"] == 32 << 20, ic
    assert ic["unloads"] == 0, ic
    assert ic["layers"] == len(digests) and ic["loads"] == len(digests), ic
    assert 0 < ic["bytes"] <= ic["cap"], ic


def test_config_keys_and_flags(strata, mount, fixtures, tmp_path):
    strata("pull", fixtures.ref("demo:latest"))
    cfg = tmp_path / "strata.toml"
    cfg.write_text('index_cache = "4M"\nchunk_cache = "2M"\nblock_cache = "8M"\n')
    m = mount(args=("--config", cfg))
    assert strata.stats()["index_cache"]["cap"] == 4 << 20
    assert m.umount().returncode == 0
    assert m.wait_exit() == 0, m.stderr()

    # a flag overrides the file
    m = mount(mnt=m.mnt, args=("--config", cfg, "--index-cache=1k", "--chunk-cache", "1M",
                               "--block-cache", "1M"))
    d = fixtures.layer_digests("demo:latest")[0]
    assert os.listdir(m.layer(d))
    assert strata.stats()["index_cache"]["cap"] == 1024


def test_bad_cache_sizes(strata, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for args in (["--index-cache", "0"], ["--chunk-cache", "12Q"], ["--block-cache"]):
        p = strata("mount", "-f", *args, mnt, check=False, timeout=30)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        line = one_line(p.stderr)
        assert args[0] in line, line
    cfg = tmp_path / "bad.toml"
    cfg.write_text('index_cache = "0"\n')
    p = strata("--config", cfg, "mount", "-f", mnt, check=False, timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)
    line = one_line(p.stderr)
    assert "bad.toml:1: index_cache" in line, line
    assert not os.listdir(mnt)


def test_concurrent_readers_with_unloads(strata, mount, fixtures, layer_tree):
    digests = pulled_layers(strata, fixtures)
    m = mount(args=("--index-cache", "1"))
    expected = {}
    for d in digests:
        root = layer_tree(d).path
        expected[d] = {rel: read_bytes(os.path.join(root, rel)) for rel in files_of(root)}
    errors = []
    stop = threading.Event()

    def reader(d):
        try:
            for _ in range(3):
                for rel, data in expected[d].items():
                    got = read_bytes(os.path.join(m.layer(d), rel))
                    if got != data:
                        errors.append("%s/%s: %d bytes differ from tar's %d" % (
                            d, rel, len(got), len(data)))
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("reader %s: %r %s" % (d, e, getattr(e, "filename", "")))

    def walker(d):
        n = 0
        try:
            while not stop.is_set() and n < 200:
                n += 1
                walk_lstat(m.layer(d))
        except Exception as e:  # noqa: BLE001
            errors.append("walker %s: %r" % (d, e))

    readers = [threading.Thread(target=reader, args=(d,)) for d in digests]
    walkers = [threading.Thread(target=walker, args=(digests[i % len(digests)],))
               for i in range(3)]
    for t in readers + walkers:
        t.start()
    deadline = time.monotonic() + THREADS_TIMEOUT
    for t in readers:
        t.join(max(1, deadline - time.monotonic()))
    stop.set()
    for t in walkers:
        t.join(max(1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in readers + walkers), "readers hung"
    assert not errors, "\n".join(errors[:10])
    ic = strata.stats()["index_cache"]
    assert ic["unloads"] > len(digests), ic
    assert ic["layers"] == 0 and ic["bytes"] <= ic["cap"], ic
    assert ": error:" not in m.stderr() and ": warning:" not in m.stderr(), m.stderr()


def test_open_file_across_unloads(strata, mount, fixtures, layer_tree):
    digests = pulled_layers(strata, fixtures)
    m = mount(args=("--index-cache", "1"))
    # the largest file of any layer, held open while every layer is walked again and again
    best = None
    for d in digests:
        root = layer_tree(d).path
        for rel in files_of(root):
            size = os.path.getsize(os.path.join(root, rel))
            if best is None or size > best[0]:
                best = (size, d, rel)
    size, d, rel = best
    assert size > 0
    want = read_bytes(os.path.join(layer_tree(d).path, rel))
    fd = os.open(os.path.join(m.layer(d), rel), os.O_RDONLY)
    try:
        piece = max(1, size // 8)
        before = strata.stats()
        for rnd in range(8):
            for other in digests:
                walk_lstat(m.layer(other))
            # drop the kernel's copy of the file: the read comes to the daemon
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            off = (rnd * piece) % size
            got = os.pread(fd, piece, off)
            assert got == want[off:off + piece], "round %d: bytes at %d differ" % (rnd, off)
        assert os.pread(fd, size + 1, 0) == want
        after = strata.stats()
    finally:
        os.close(fd)
    ic0, ic1 = before["index_cache"], after["index_cache"]
    assert ic1["unloads"] - ic0["unloads"] >= 8 * len(digests), (ic0, ic1)
    r0, r1 = before["reads"], after["reads"]
    chunk_reads = lambda r: r["cache"] + r["store"] + r["fetched"]  # noqa: E731
    assert chunk_reads(r1) - chunk_reads(r0) >= 8, (r0, r1)
    assert r1["failed"] == 0, r1

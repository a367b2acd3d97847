# SPDX-License-Identifier: Apache-2.0
"""Hostile layers (tools/mkhostile.py) pushed to a real registry: for every one, `pull` either fails
with one clear line (rc != 0, no signal) or succeeds and the layer shows exactly what `tar -x` of
its blob gives; peak RSS of `pull` and of the daemon stays under 256 MiB; the daemon's background
streamer survives a hostile layer (that layer fails, the mount and the other layers live on).

Images (see `mkhostile.py list`): deep PAX paths (stack overflow by recursion), 16 MiB PAX xattrs,
60,000 xattrs on one file, 300-byte names, a member claiming 1 TiB, hard links to missing or later
members, symlink loops, "..", a 1 GiB gzip bomb, descriptor sizes 0 and 2^63, eStargz TOCs that
verify against their annotation but lie about chunk order, offsets, members or digests, layers
of 1,000,000 and 399,000 entries (the limit is 400,000), and spans as long as the blob: a file in
one zstd frame, and a TOC putting a file in one gzip member (a read's span is the whole member).
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness import treecmp
from harness.fs import bounded, read_file
from harness.images import Fixtures
from harness.registry import Registry
from harness.strata import Strata, notes

MKHOSTILE = Path(__file__).resolve().parents[2] / "tools" / "mkhostile.py"
sys.path.insert(0, str(MKHOSTILE.parent))
import mkhostile  # noqa: E402
RSS_LIMIT_KIB = 256 << 10
PULL_TIMEOUT = 300
note = notes("hostile")

TAR_SERVE = ["symlink-loop", "toc-order", "toc-offset", "toc-overlap"]
ERRORS = ["deep-path", "xattr-bomb", "xattr-many", "long-name", "terabyte", "hardlink-missing",
          "hardlink-later"]
EITHER = ["size-zero", "size-huge"]  # the registry's lie is the fetch layer's to catch


def _layout(registry, tmp_path_factory, name, *only):
    layout = tmp_path_factory.mktemp(name)
    p = subprocess.run([sys.executable, str(MKHOSTILE), "layout", "--out", str(layout)] +
                       (["--only"] + list(only) if only else []),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    registry.push(layout)
    return layout


def _registry(tmp_path_factory, name, *only):
    """Yields Fixtures of a registry of its own holding mkhostile's images (only those named,
    when given); removes their bytes afterwards (some are large)."""
    reg = Registry(tmp_path_factory.mktemp(name + "-registry"))
    layout = None
    try:
        with reg:
            layout = _layout(reg, tmp_path_factory, name + "-layout", *only)
            yield Fixtures(layout, reg)
    finally:
        shutil.rmtree(reg.storage, ignore_errors=True)
        if layout:
            shutil.rmtree(layout, ignore_errors=True)


@pytest.fixture(scope="module")
def hostile(strata_bin, tmp_path_factory):
    yield from _registry(tmp_path_factory, "hostile")


def run_measured(cmd, timeout=PULL_TIMEOUT):
    """Runs cmd; returns (returncode, stdout, stderr, peak RSS in KiB) from wait4's rusage.
    A negative returncode is the signal that killed it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                pytest.fail("%s did not finish within %ss" % (" ".join(cmd), timeout))
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors="replace"),
                err.read().decode(errors="replace"), ru.ru_maxrss)


def pull(strata, ref, *args):
    rc, out, err, rss = run_measured([strata.binary, "--store", strata.store] + list(args) +
                                     ["pull", ref])
    assert rc >= 0, "pull %s killed by signal %d:\n%s" % (ref, -rc, err[-2000:])
    assert rss < RSS_LIMIT_KIB, "pull %s peak RSS %d KiB" % (ref, rss)
    return rc, out, err, rss


def digest_of(fx, name):
    return fx.image("hostile:" + name)["layers"][0]["digest"]


def compare(m, fx, name, extract, skip=None):
    blob = fx.blob_path(digest_of(fx, name))
    tar_dir = extract(blob, "gzip")
    entries = treecmp.list_tar_entries(str(blob), "gzip")
    bounded(m, lambda: treecmp.compare_layer(m.layer(digest_of(fx, name)), tar_dir,
                                             tar_entries=entries, skip=skip),
            "comparing %s" % name, 120)


def expect_error(fx, name, rc, err):
    img = fx.image("hostile:" + name)
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc != 0, "pull of %s succeeded" % name
    assert len(lines) == 1, "pull of %s: expected one line:\n%s" % (name, err)
    assert re.search(img["expect_error"], lines[0], re.I), lines[0]
    return lines[0]


@pytest.mark.parametrize("name", ERRORS)
def test_pull_fails_cleanly(strata, hostile, name):
    rc, _, err, rss = pull(strata, hostile.ref("hostile:" + name))
    line = expect_error(hostile, name, rc, err)
    note("%s: rc %d, %d KiB: %s" % (name, rc, rss, line))


def test_limit_messages_name_member_and_limit(strata, hostile):
    _, _, err, _ = pull(strata, hostile.ref("hostile:long-name"))
    assert "'d/nnnn" in err and "255" in err, err
    _, _, err, _ = pull(strata, hostile.ref("hostile:xattr-bomb"))
    assert "1048576" in err, err
    _, _, err, _ = pull(strata, hostile.ref("hostile:xattr-many"))
    assert "1048576" in err or "65536" in err, err


@pytest.mark.parametrize("name", TAR_SERVE)
def test_pull_serves_tar_content(strata, mount, hostile, extract, name):
    rc, out, err, rss = pull(strata, hostile.ref("hostile:" + name), "--json")
    assert rc == 0, err
    sources = json.loads(out.splitlines()[-1])["index_sources"]
    note("%s: %d KiB, index sources %s %s" % (name, rss, sources, err[-600:]))
    if name.startswith("toc-"):
        assert sources == ["build"], "the lying TOC was used: %s\n%s" % (sources, err)
    m = mount()
    if name.startswith("toc-"):
        read_last_chunk_first(m, hostile, name, extract)
    compare(m, hostile, name, extract)


def read_last_chunk_first(m, fx, name, extract):
    """Finding 4: reading big.bin's last chunk first made the daemon plan a reversed span (from the
    chunk the lying TOC put after it) and abort on an assert."""
    chunk = 128 << 10
    tar_dir = extract(fx.blob_path(digest_of(fx, name)), "gzip")
    path = os.path.join(m.layer(digest_of(fx, name)), "big.bin")
    want = Path(tar_dir, "big.bin").read_bytes()[2 * chunk:2 * chunk + 4096]
    assert read_file(m, path, 2 * chunk, 4096) == want
    assert m.proc.poll() is None


def test_dotdot_stays_inside(strata, mount, hostile):
    """GNU tar skips a member named with '..' (so it is no reference here); strata keeps it, with
    the '..' resolved inside the layer, as it does '/'-rooted names."""
    rc, _, err, _ = pull(strata, hostile.ref("hostile:dotdot"))
    assert rc == 0, err
    m = mount()
    root = m.layer(digest_of(hostile, "dotdot"))
    assert sorted(bounded(m, lambda: os.listdir(root))) == ["etc", "tmp"]
    assert read_file(m, os.path.join(root, "tmp/strata-escape")) == b"escaped\n"
    assert read_file(m, os.path.join(root, "etc/strata-escape")) == b"absolute\n"


def test_toc_digest_lie_fails_reads_only(strata, mount, hostile, extract):
    name = "toc-digest"
    rc, out, err, _ = pull(strata, hostile.ref("hostile:" + name))
    assert rc == 0, err
    m = mount()
    root = m.layer(digest_of(hostile, name))
    blob = hostile.blob_path(digest_of(hostile, name))
    tar_dir = extract(blob, "gzip")
    for f in ("a.txt", "b.txt"):
        assert read_file(m, os.path.join(root, f)) == Path(tar_dir, f).read_bytes()
    # the lying chunk is never served: its read fails, or its bytes are the blob's (verified)
    try:
        got = read_file(m, os.path.join(root, "big.bin"))
        assert got == Path(tar_dir, "big.bin").read_bytes()
    except OSError as e:
        assert e.errno == errno.EIO, e
    assert m.proc.poll() is None


def test_gzip_bomb(strata, mount, hostile):
    rc, _, err, rss = pull(strata, hostile.ref("hostile:gzip-bomb"))
    assert rc == 0, err
    note("gzip-bomb: %d KiB" % rss)
    m = mount()
    path = os.path.join(m.layer(digest_of(hostile, "gzip-bomb")), "zeros")
    size = 1 << 30
    assert bounded(m, lambda: os.stat(path).st_size) == size
    for off in (0, size // 2 + 12345, size - (1 << 20)):
        assert read_file(m, path, off, 1 << 20) == bytes(1 << 20)


@pytest.mark.parametrize("name", EITHER)
def test_lying_size_fails_or_serves(strata, mount, hostile, extract, name):
    rc, _, err, _ = pull(strata, hostile.ref("hostile:" + name))
    if rc != 0:
        assert len([l for l in err.splitlines() if l.strip()]) == 1, err
        return
    m = mount()
    compare(m, hostile, name, extract)


def daemon_peak_kib(m):
    with open("/proc/%d/status" % m.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_daemon_streamer_survives(strata, mount, hostile, extract):
    """With a daemon running, pulls record the layers and the daemon streams them: the hostile ones
    fail (their lookups fail), the mount and the good layers live on."""
    m = mount()
    bad = ["deep-path", "xattr-bomb", "xattr-many", "long-name"]
    good = ["symlink-loop", "toc-order"]
    for name in good + bad:
        rc, out, err, _ = pull(strata, hostile.ref("hostile:" + name))
        assert rc == 0, err
    for name in bad:
        layer = m.layer(digest_of(hostile, name))
        with pytest.raises(OSError) as ei:
            bounded(m, lambda: os.listdir(layer), "listing %s" % name, 120)
        assert ei.value.errno != errno.ENOTCONN, name
        assert m.proc.poll() is None, "daemon died on %s:\n%s" % (name, m.stderr()[-3000:])
    read_last_chunk_first(m, hostile, "toc-order", extract)
    for name in good:
        compare(m, hostile, name, extract)
    assert m.proc.poll() is None
    peak = daemon_peak_kib(m)
    note("daemon peak RSS %d KiB" % peak)
    assert peak < RSS_LIMIT_KIB, peak


@pytest.fixture(scope="module")
def many(strata_bin, tmp_path_factory):
    yield from _registry(tmp_path_factory, "many", "many-1m", "many-cap")


def test_million_entries(strata, mount, many):
    """1,000,000 entries fail cleanly (the limit is 400,000); 399,000 pull and serve, both under
    256 MiB."""
    t = time.monotonic()
    rc, _, err, rss = pull(strata, many.ref("hostile:many-1m"))
    line = expect_error(many, "many-1m", rc, err)
    note("1,000,000 entries: %.1f s, %d KiB: %s" % (time.monotonic() - t, rss, line))
    t = time.monotonic()
    rc, _, err, rss = pull(strata, many.ref("hostile:many-cap"))
    assert rc == 0, err
    note("399,000 entries: %.1f s, %d KiB" % (time.monotonic() - t, rss))
    m = mount()
    layer = m.layer(many.image("hostile:many-cap")["layers"][0]["digest"])
    names = bounded(m, lambda: os.listdir(layer), "listing", 120)
    assert len(names) == 399
    assert len(bounded(m, lambda: os.listdir(os.path.join(layer, "d0398")))) == 999
    assert daemon_peak_kib(m) < RSS_LIMIT_KIB


@pytest.fixture(scope="module")
def huge(strata_bin, tmp_path_factory):
    yield from _registry(tmp_path_factory, "huge", "huge-zstd", "huge-estargz")


def read_huge(m, fx, name):
    """Reads huge.bin's last MiB first (its span starts at the blob's or member's first byte:
    everything before it is decoded on the way), then its first and a middle one. Returns the
    daemon's peak RSS in KiB."""
    mib = fx.image("hostile:" + name)["huge_mib"]
    path = os.path.join(m.layer(digest_of(fx, name)), "huge.bin")
    t = time.monotonic()
    for i in (mib - 1, 0, mib // 2):
        assert read_file(m, path, i << 20, 1 << 20) == mkhostile.huge_piece(i), i
    assert m.proc.poll() is None
    peak = daemon_peak_kib(m)
    note("%s: %d MiB blob, 3 reads in %.1f s, daemon peak RSS %d KiB" % (
        name, fx.image("hostile:" + name)["layers"][0]["size"] >> 20, time.monotonic() - t, peak))
    return peak


def test_single_zstd_frame_read_is_bounded(strata, mount, huge, strata_bin, tmp_path):
    """A layer that is one zstd frame: any read's span is the whole blob. The daemon decodes it as
    it arrives and keeps a chunk at a time: its memory does not grow with the blob (it held the
    whole span before)."""
    name = "huge-zstd"
    ref = huge.ref("hostile:" + name)
    # the index comes from an artifact built by another store: this one has no chunk, so every
    # read goes to the registry
    Strata(strata_bin, tmp_path / "indexer")("--json", "index", "--push", ref, timeout=600)
    rc, out, err, _ = pull(strata, ref, "--json")
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["index_sources"] == ["artifact"], out
    peak = read_huge(mount(), huge, name)
    assert peak < RSS_LIMIT_KIB, peak


def test_toc_with_one_huge_member_read_is_bounded(strata, mount, huge):
    """An eStargz TOC (verified by its annotation) that puts a file's chunks in one huge gzip
    member: a read of its last chunk decodes the member from its start, in bounded memory."""
    name = "huge-estargz"
    rc, out, err, _ = pull(strata, huge.ref("hostile:" + name), "--json")
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["index_sources"] == ["estargz"], out
    m = mount()
    peak = read_huge(m, huge, name)
    root = m.layer(digest_of(huge, name))
    assert read_file(m, os.path.join(root, "a.txt")) == b"still served\n" * 10
    assert peak < RSS_LIMIT_KIB, peak

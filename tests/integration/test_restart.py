# SPDX-License-Identifier: Apache-2.0
"""Restarting the daemon without breaking mounts: `strata mount --takeover` hands the mount (the
/dev/fuse descriptor and the session state) over from the running daemon to a new one through the
store's control socket. The mount stays (same mount in /proc/self/mountinfo), reads issued during
the handover pause and then succeed, handles opened before keep working, and the old daemon exits
0 without unmounting.

The lazy images come from the lazy-loading fixtures (big:latest behind nginx, with an index
artifact pushed by a first store): a second store pulls from the artifact, so file content stays
in the registry until read, and the nginx access log shows which fetches happened after the
takeover.
"""

import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest

from harness.fs import bounded, file_sha256, is_mountpoint, mount_ids, mounts_at, regular_files
from harness.strata import Overlay, Strata, new_store, notes, one_line
from harness.timeouts import CMD_TIMEOUT, HANDOVER_TIMEOUT, INDEX_TIMEOUT, MiB, READ_TIMEOUT

CORNER = "corner:gzip"  # two layers: an overlay needs two lowerdirs without an upperdir
MODIFIED = "files/modified.txt"
MODIFIED_TEXT = "modified by the upper layer\n"
note = notes("restart")


@pytest.fixture(scope="module")
def artifact(strata_bin, big, tmp_path_factory):
    """big:latest indexed and its index artifact pushed, so that other stores pull lazily."""
    store = tmp_path_factory.mktemp("restart-store-A")
    Strata(strata_bin, store)("--json", "index", "--push", big.ref(), timeout=INDEX_TIMEOUT)
    return big


def lazy_store(strata_bin, big, tmp_path, name="B"):
    store = new_store(tmp_path, name)
    run = Strata(strata_bin, store)
    objs = run.pull_json(big.ref())
    assert objs[0]["index_sources"] == ["artifact"], objs
    return store, run


def corner_store(strata_bin, fixtures, tmp_path):
    """CORNER pulled into tmp_path/store: (store, Strata of it, path of MODIFIED in the top layer
    relative to a mount)."""
    store = tmp_path / "store"
    store.mkdir()
    run = Strata(strata_bin, store)
    run("pull", fixtures.ref(CORNER))
    return str(store), run, os.path.join("layers", fixtures.layer_digests(CORNER)[-1], MODIFIED)


def big_file(big):
    """The largest file of the big image (data/a.bin or data/b.bin): many chunks, many spans."""
    path = max(big.files, key=lambda p: big.files[p]["size"])
    return path, big.files[path]["size"], big.files[path]["sha256"]


# ----------------------------------------------------------------------------------------------

def test_open_file_keeps_reading_across_takeover(strata_bin, artifact, daemons, tmp_path):
    big = artifact
    store, run = lazy_store(strata_bin, big, tmp_path)
    d = daemons(store)
    d.start()
    before = mount_ids(d.mnt)
    rel, size, sha = big_file(big)
    path = os.path.join(d.layer(big.digest), rel)
    assert size > 16 * MiB, "the big image is too small for this test (%d bytes)" % size
    h = hashlib.sha256()
    f = bounded(d, lambda: open(path, "rb"), "open")
    try:
        first = bounded(d, lambda: f.read(2 * MiB), "the first read")
        assert len(first) == 2 * MiB
        h.update(first)

        d.takeover()
        assert mount_ids(d.mnt) == before, "the mount changed: %s -> %s" % (before,
                                                                             mount_ids(d.mnt))
        big.nginx.clear()

        def rest():
            n = len(first)
            while True:
                b = f.read(4 * MiB)
                if not b:
                    return n
                h.update(b)
                n += len(b)

        got = bounded(d, rest, "reading on after the takeover")
    finally:
        f.close()
    assert got == size, "read %d of %d bytes" % (got, size)
    assert h.hexdigest() == sha, "%s read across the takeover differs from the image" % rel
    gets = big.nginx.blob_requests(big.digest, method="GET")
    note("after the takeover the new daemon fetched %d span(s), %d bytes" %
         (len(gets), sum(r["bytes"] for r in gets)))
    assert gets, "no fetch after the takeover: the rest was not cold\n" + d.stderr()
    assert all(r["status"] == 206 for r in gets), gets


def test_reads_pause_and_continue_during_takeover(strata_bin, artifact, daemons, tmp_path):
    """A reader thread reads all the time (cold and cached data) while the daemon is taken over;
    every read succeeds. Handles opened before (a layers/ directory iteration, a directory fd, a
    shell's cwd) keep working."""
    big = artifact
    store, run = lazy_store(strata_bin, big, tmp_path)
    d = daemons(store)
    d.start()
    layer = d.layer(big.digest)
    rel, size, sha = big_file(big)
    hello = os.path.join(layer, big.hello_file)
    want_hello = big.hello_text.encode()
    stop = threading.Event()
    stats = {"reads": 0, "errors": [], "after": 0}
    handed = threading.Event()

    def reader():
        off = 0
        with open(os.path.join(layer, rel), "rb") as f:
            while not stop.is_set():
                try:
                    with open(hello, "rb") as g:
                        if g.read() != want_hello:
                            stats["errors"].append("hello.txt content differs")
                    # cold data: 64 KiB at offsets striding through the file
                    f.seek(off)
                    b = f.read(64 << 10)
                    if len(b) != min(64 << 10, size - off):
                        stats["errors"].append("short read at %d: %d" % (off, len(b)))
                    off = (off + 3 * MiB + 4096) % size
                    stats["reads"] += 2
                    if handed.is_set():
                        stats["after"] += 1
                except OSError as e:
                    stats["errors"].append("%s at offset %d" % (e, off))

    it = os.scandir(d.current.layers)
    first = next(it)
    dirfd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
    shell = subprocess.Popen(["sh", "-c", "read x; cat " + big.hello_file + "; ls"],
                             cwd=layer, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        d.takeover()
        handed.set()
        deadline = time.monotonic() + READ_TIMEOUT
        while stats["after"] < 20 and time.monotonic() < deadline and t.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(READ_TIMEOUT)
    if t.is_alive():
        d.kill()
        pytest.fail("the reader thread hung; logs:\n" + d.stderr())
    note("%d reads during and after the takeover, %d after" % (stats["reads"], stats["after"]))
    assert not stats["errors"], "reads failed: %s\n%s" % (stats["errors"][:5], d.stderr())
    assert stats["after"] >= 20, "too few reads after the takeover: %s" % stats

    names = [first.name] + [e.name for e in it]
    it.close()
    assert names == [big.digest], names
    try:
        assert sorted(os.listdir(dirfd)) == sorted(os.listdir(layer))
        assert os.stat(big.hello_file, dir_fd=dirfd).st_size == len(want_hello)
    finally:
        os.close(dirfd)
    out, err = shell.communicate(b"go\n", timeout=READ_TIMEOUT)
    assert shell.returncode == 0, err
    assert out.startswith(want_hello), out[:200]
    assert sorted(out[len(want_hello):].decode().split()) == sorted(os.listdir(layer))


def test_overlay_keeps_working_across_takeover(strata_bin, fixtures, daemons, tmp_path):
    store, _, _ = corner_store(strata_bin, fixtures, tmp_path)
    d = daemons(store)
    d.start()
    digests = fixtures.layer_digests(CORNER)
    o = Overlay([d.layer(x) for x in reversed(digests)], tmp_path / "rootfs")
    try:
        mod = os.path.join(o.target, MODIFIED)
        f = open(mod)
        try:
            listing = sorted(os.listdir(o.target))
            d.takeover()
            assert f.read() == MODIFIED_TEXT  # opened before, read after
        finally:
            f.close()
        d.takeover()  # and a second one with the overlay still on top
        with open(mod) as g:
            assert g.read() == MODIFIED_TEXT
        assert sorted(os.listdir(o.target)) == listing
        assert os.path.exists(os.path.join(o.target, "victims/kept.txt"))
        for rel in fixtures.paths["whiteouts"]:
            assert not os.path.lexists(os.path.join(o.target, rel)), rel
    finally:
        o.cleanup()
    assert not is_mountpoint(o.target)


def test_two_takeovers_then_umount_releases_the_store(strata_bin, fixtures, daemons, tmp_path):
    store, run, mod = corner_store(strata_bin, fixtures, tmp_path)
    d = daemons(store)
    d.start()
    before = mount_ids(d.mnt)
    assert len(before) == 1 and before[0][2] == "strata:" + store, before
    for i in range(2):
        d.takeover()
        assert mount_ids(d.mnt) == before
        with open(os.path.join(d.mnt, mod)) as f:
            assert f.read() == MODIFIED_TEXT
        # commands go to the new daemon
        assert [e["ref"] for e in run.ls()] == [fixtures.ref(CORNER)]
    last = d.current
    p = last.umount()
    assert p.returncode == 0, "strata umount: %d %s" % (p.returncode, p.stderr)
    assert last.wait_exit(HANDOVER_TIMEOUT) == 0, last.stderr()
    assert not mount_ids(d.mnt)
    # the store is free: a direct fsck opens it, and it is clean
    p = run("fsck", check=False)
    assert p.returncode == 0, "fsck after the takeovers: %d\n%s%s" % (p.returncode, p.stdout,
                                                                      p.stderr)


def test_sigterm_of_a_daemon_that_took_over_unmounts(strata_bin, fixtures, daemons, tmp_path):
    store, _, _ = corner_store(strata_bin, fixtures, tmp_path)
    d = daemons(store)
    d.start()
    m = d.takeover()
    m.proc.terminate()
    assert m.wait_exit(HANDOVER_TIMEOUT) == 0, m.stderr()
    assert not mounts_at(d.mnt), "a SIGTERM left the mount behind"
    assert not os.path.exists(os.path.join(store, "strata.sock"))


def test_takeover_errors(strata_bin, fixtures, daemons, tmp_path):
    store, run, mod = corner_store(strata_bin, fixtures, tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    # nothing to take over
    p = run("mount", "--takeover", "-f", str(mnt), check=False)
    assert p.returncode == 1
    assert "no daemon serves store" in one_line(p.stderr), p.stderr
    p = run("mount", "--takeover", str(mnt), check=False)  # daemonizing: same answer
    assert p.returncode == 1
    assert "no daemon serves store" in one_line(p.stderr), p.stderr
    assert not mounts_at(str(mnt))

    d = daemons(store, mnt)
    first = d.start()
    other = tmp_path / "other"
    other.mkdir()
    p = run("mount", "--takeover", "-f", str(other), check=False, timeout=CMD_TIMEOUT)
    assert p.returncode == 1
    line = one_line(p.stderr)
    assert "serves %s, not %s" % (mnt, other) in line, line
    assert not mounts_at(str(other))
    # a second plain mount of the store still refuses (the store lock)
    p = run("mount", "-f", str(other), check=False)
    assert p.returncode == 1
    assert "in use" in one_line(p.stderr), p.stderr
    assert not mounts_at(str(other))
    # the daemon serves on, untouched
    assert first.proc.poll() is None
    with open(os.path.join(d.mnt, mod)) as f:
        assert f.read() == MODIFIED_TEXT
    assert [e["ref"] for e in run.ls()] == [fixtures.ref(CORNER)]


def test_unconfirmed_handover_leaves_the_old_daemon_serving(strata_bin, fixtures, daemons,
                                                            tmp_path):
    """A new daemon that dies after receiving the descriptor (never confirms), and a malformed
    handover request: the old daemon serves on, and a real takeover works afterwards."""
    store, run, mod = corner_store(strata_bin, fixtures, tmp_path)
    d = daemons(store)
    first = d.start()
    mod = os.path.join(d.mnt, mod)
    want = MODIFIED_TEXT
    mnt = os.path.realpath(d.mnt).encode()
    f = open(mod)
    try:
        # malformed: a mountpoint length past the limit
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CMD_TIMEOUT)
        s.connect(os.path.join(store, "strata.sock"))
        s.sendall(b"STRATAHO" + (1 << 30).to_bytes(4, "little"))
        assert s.recv(16) == b""  # closed without an answer
        s.close()

        # a peer that takes the descriptor and goes away without confirming
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CMD_TIMEOUT)
        s.connect(os.path.join(store, "strata.sock"))
        s.sendall(b"STRATAHO" + len(mnt).to_bytes(4, "little") + mnt)
        msg, anc, _, _ = s.recvmsg(5, socket.CMSG_SPACE(4))
        assert msg[:1] == b"h", msg
        fds = [int.from_bytes(data[:4], "little") for level, typ, data in anc
               if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS]
        assert len(fds) == 1, anc
        os.close(fds[0])
        s.close()

        assert bounded(d, lambda: open(mod).read(), "a read after the failed handover") == want
        assert f.read() == want
    finally:
        f.close()
    assert first.proc.poll() is None, "the old daemon exited: " + first.stderr()
    assert [e["ref"] for e in run.ls()] == [fixtures.ref(CORNER)]
    d.takeover()
    with open(mod) as g:
        assert g.read() == want


def test_busy_mount_through_repeated_takeovers(strata_bin, fixtures, daemons, tmp_path):
    """Eight threads stat, list and read all the time through five takeovers in a row: no
    operation fails and none hangs (a request read by a daemon that then exits would hang)."""
    store, _, _ = corner_store(strata_bin, fixtures, tmp_path)
    d = daemons(store)
    d.start()
    root = d.layer(fixtures.layer_digests(CORNER)[-1])
    expect = {p: file_sha256(p) for p in regular_files(root)}
    listing = sorted(os.listdir(root))
    assert expect, "no regular file in the top layer of " + CORNER
    stop = threading.Event()
    errors, counts = [], [0] * 8

    def worker(i):
        paths = sorted(expect)
        k = i
        while not stop.is_set():
            p = paths[k % len(paths)]
            k += 1
            try:
                with open(p, "rb") as f:
                    if hashlib.sha256(f.read()).hexdigest() != expect[p]:
                        errors.append("%s: content differs" % p)
                os.stat(p)
                if sorted(os.listdir(root)) != listing:
                    errors.append("listing differs")
                os.listdir(d.current.layers)
                counts[i] += 1
            except OSError as e:
                errors.append("%s: %s" % (p, e))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            d.takeover()
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(READ_TIMEOUT)
    if any(t.is_alive() for t in threads):
        d.kill()
        pytest.fail("a worker hung; logs:\n" + d.stderr())
    note("%d loops of open/read/stat/listdir by 8 threads through 5 takeovers" % sum(counts))
    assert not errors, errors[:5]
    assert all(counts), counts

# SPDX-License-Identifier: Apache-2.0
"""Crash safety: kill -9 of the daemon (and of `strata pull`) at random moments during heavy
fetching never leaves the store inconsistent.

A lazily pulled image (mkfixture big, STRATA_CRASH_MIB MiB of incompressible data in one gzip
layer, served from its index artifact) is read by parallel readers while the daemon fetches spans
(and, with --background, every other chunk). At a random moment (seeded; the seed is printed and
can be forced with STRATA_CRASH_SEED) the daemon gets SIGKILL. Every round then checks that:
`strata umount` removes the dead FUSE mount, `strata fsck --json` exits 0 with no problem and no
bad chunk, and a new daemon opens the store and serves the layer. When the store has become fully
local, the image is removed, gc'd and pulled again, so that every round fetches. At the end every
file reads byte-exact against GNU tar's extraction.

The figures are printed with a "[crash]" prefix: run with -s to see them.
"""

import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from harness import treecmp
from harness.fs import bounded
from harness.images import Fixtures, LayerTree, extract_blob, run_mkfixture
from harness.registry import Registry
from harness.strata import Strata, notes
from harness.timeouts import COMPARE_TIMEOUT, INDEX_TIMEOUT, MiB, READ_TIMEOUT

ROUNDS = int(os.environ.get("STRATA_CRASH_ROUNDS", "20"))
PULL_KILLS = 3
IMAGE_MIB = int(os.environ.get("STRATA_CRASH_MIB", "128"))
READERS = 4
PIECE = 256 * 1024
note = notes("crash")


def seed():
    s = os.environ.get("STRATA_CRASH_SEED")
    s = int(s) if s else random.SystemRandom().randrange(1 << 32)
    note("seed %d (set STRATA_CRASH_SEED=%d to repeat)" % (s, s))
    return s


def fsck_clean(run, what):
    """`strata --json fsck` must exit 0 and report no problem, no bad chunk."""
    p = run("--json", "fsck", check=False)
    assert p.returncode == 0, "fsck %s exited %d\nstdout:\n%s\nstderr:\n%s" % (
        what, p.returncode, p.stdout, p.stderr)
    f = json.loads(p.stdout)
    assert f["problems"] == 0 and f["problem_list"] == [] and f["bad_chunks"] == 0, (what, f)
    return f


@pytest.fixture(scope="module")
def crash_image(strata_bin, tmp_path_factory):
    """big:latest (IMAGE_MIB) in a registry of its own, with its index artifact pushed, plus the
    GNU tar extraction of its layer."""
    with Registry(tmp_path_factory.mktemp("crash-registry")) as reg:
        layout = tmp_path_factory.mktemp("crash-layout")
        run_mkfixture("big", "--out", layout, "--size-mib", IMAGE_MIB)
        reg.push(layout)
        fx = Fixtures(layout, reg)
        fx.layer = fx.layers["big"]
        fx.digest = fx.layer["digest"]
        fx.files = fx.paths["files"]
        Strata(strata_bin, tmp_path_factory.mktemp("crash-indexer"))(
            "index", "--push", fx.ref("big:latest"), timeout=INDEX_TIMEOUT)
        fx.tree = LayerTree("big", fx.layer,
                            extract_blob(fx.blob_path("big"), "gzip",
                                         tmp_path_factory.mktemp("crash-extract") / "x"),
                            treecmp.list_tar_entries(str(fx.blob_path("big")), "gzip"))
        yield fx


class Readers:
    """READERS threads reading the layer's files at random pieces until stop() or until the mount
    goes away (ENOTCONN and friends end a thread quietly)."""

    def __init__(self, layer, files, rng):
        self.layer, self.files = layer, files
        self.stop_flag = threading.Event()
        self.bytes = 0
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(rng.randrange(1 << 30),),
                                         daemon=True) for _ in range(READERS)]

    def _run(self, s):
        rng = random.Random(s)
        names = sorted(self.files)
        try:
            while not self.stop_flag.is_set():
                rel = rng.choice(names)
                size = self.files[rel]["size"]
                with open(os.path.join(self.layer, rel), "rb") as f:
                    for _ in range(8):
                        off = rng.randrange(0, max(1, size - PIECE)) if size > PIECE else 0
                        self.bytes += len(os.pread(f.fileno(), PIECE, off))
                        if self.stop_flag.is_set():
                            return
        except OSError as e:
            self.errors.append(e)

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self, timeout=READ_TIMEOUT):
        self.stop_flag.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def compare(m, fx):
    """Every file of the layer, read through m, equals tar -x (bounded)."""
    bounded(m, lambda: fx.tree.compare(m.layer(fx.digest), right_name="tar -x", dir_mtime=False),
            "comparing the layer", COMPARE_TIMEOUT)


def umount_dead(m):
    """`strata umount` of a mount whose daemon was killed: must succeed and leave no mount."""
    p = m.umount(timeout=60)
    assert p.returncode == 0, "strata umount of a dead mount exited %d: %s" % (p.returncode,
                                                                             p.stderr)
    assert not m.ours_mounted(), "strata umount left the dead mount of %s" % m.mnt


def test_kill_daemon_during_fetching(strata_bin, crash_image, store, mount, tmp_path):
    fx = crash_image
    rng = random.Random(seed())
    run = Strata(strata_bin, store)
    ref = fx.ref("big:latest")
    run("pull", "--index=artifact", ref)
    resets, rounds, before = 0, [], 0
    for i in range(ROUNDS):
        args = ("--background",) if rng.random() < 0.5 else ()
        m = mount(store_dir=store, mnt=str(tmp_path / "mnt"), args=args)
        readers = Readers(m.layer(fx.digest), fx.files, rng)
        readers.start()
        delay = rng.uniform(0.05, 0.9)
        time.sleep(delay)
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(10)
        assert m.proc.returncode == -signal.SIGKILL, m.proc.returncode
        if not readers.stop():
            pytest.fail("round %d: readers still blocked 120 s after the daemon was killed" % i)
        umount_dead(m)
        m.cleanup()
        f = fsck_clean(run, "after kill %d" % i)
        st = run.stats()
        assert st["local_bytes"] >= before, "a kill lost stored content: %d -> %d bytes" % (
            before, st["local_bytes"])
        rounds.append((delay, args, f["chunks"], before, st["local_bytes"]))
        before = st["local_bytes"]
        note("round %2d: killed after %.2fs%s; fsck: %d chunks, %d remote, %d orphans; content "
             "%d of %d MiB local" % (i, delay, " (--background)" if args else "", f["chunks"],
                                     f["remote_chunks"], f["orphan_chunks"],
                                     st["local_bytes"] // MiB, st["content_bytes"] // MiB))
        if st["local_bytes"] == st["content_bytes"]:
            # fully local: start over so that the next round fetches again
            run("rm", ref)
            run("gc")
            run("pull", "--index=artifact", ref)
            resets += 1
            before = 0
    note("%d rounds, %d store resets" % (ROUNDS, resets))
    # what a killed daemon had stored survives it (chunks go through the WAL): most rounds add
    # content to the store (when chunks skipped the WAL, only a memtable flush kept any: 1 round
    # of 20 added content)
    grew = sum(1 for r in rounds if r[4] > r[3])
    assert grew >= ROUNDS // 3, "only %d of %d rounds kept what they fetched: %s" % (
        grew, ROUNDS, rounds)

    # the store still serves every file byte-exact, and stays clean
    m = mount(store_dir=store, mnt=str(tmp_path / "mnt"))
    compare(m, fx)
    m.cleanup()
    fsck_clean(run, "at the end")
    st = run.stats()
    assert st["local_bytes"] == st["content_bytes"] > 0, st
    assert [e["ref"] for e in run.ls()] == [ref]


def test_kill_pull(strata_bin, crash_image, store, mount, tmp_path):
    """kill -9 of `strata pull --index=build` (it streams the layer and stores chunks) mid-way:
    fsck stays clean, the image is registered whole or not at all, and the next pull succeeds."""
    fx = crash_image
    rng = random.Random(seed())
    run = Strata(strata_bin, store)
    ref = fx.ref("big:latest")
    os.mkdir(tmp_path / "timing")
    t0 = time.monotonic()
    run("pull", "--index=build", ref, store=str(tmp_path / "timing"), timeout=INDEX_TIMEOUT)
    full = time.monotonic() - t0
    for i in range(PULL_KILLS):
        delay = rng.uniform(0.1, max(0.2, full * 0.8))
        p = subprocess.Popen([strata_bin, "--store", store, "pull", "--index=build", ref],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        rc = p.wait(30)
        f = fsck_clean(run, "after pull kill %d" % i)
        images = run.ls()
        note("pull kill %d after %.2fs of %.2fs: rc %d, fsck %d chunks, %d orphans, %d images" % (
            i, delay, full, rc, f["chunks"], f["orphan_chunks"], len(images)))
        assert rc in (0, -signal.SIGKILL), rc
        # Killed before its last write (the image record, synced after its layers): no image.
        # Killed after it, or finished first: the whole image (fsck above found every layer).
        assert [e["ref"] for e in images] in ([], [ref]), images
        if rc == 0:
            assert images, "pull exited 0 but registered no image"
        if images:
            run("rm", ref)
            run("gc")
    run("pull", "--index=build", ref, timeout=INDEX_TIMEOUT)
    fsck_clean(run, "after the re-pull")
    st = run.stats()
    assert st["local_bytes"] == st["content_bytes"] > 0, st
    m = mount(store_dir=store)
    compare(m, fx)

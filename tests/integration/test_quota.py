# SPDX-License-Identifier: Apache-2.0
"""Store quota, pins, the configuration file, and a full disk.

The image is mkfixture big at QUOTA_MIB MiB (one gzip layer: data/a.bin and data/b.bin, each half of
it, random bytes, plus two small files) in a registry of its own behind nginx, with an index
artifact, so that a pull keeps the layer remote and reads fetch it lazily. nginx's access log
counts the blob requests; stopping nginx is "the registry is down".

The quota bounds the store directory's size (what du shows: chunks still in RocksDB's memtable
are in its WAL); after eviction it must end within SLACK of the quota.
"""

import hashlib
import json
import os
import subprocess
import time

import pytest

from harness.fs import bounded, drop_cached_pages, du, read_bytes
from harness.images import Fixtures, LayerTree, run_mkfixture
from harness.nginx import Nginx
from harness.registry import Registry
from harness.strata import Daemons, Strata, mirror_toml
from harness.timeouts import COMPARE_TIMEOUT, INDEX_TIMEOUT, MiB, SETTLE_TIMEOUT

QUOTA_MIB = 24           # the image: a.bin and b.bin are 12 MiB each
SLACK = 1 * MiB          # RocksDB's own files (LOG, MANIFEST, OPTIONS) beside the quota


def wait_for(cond, what, m=None, timeout=SETTLE_TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = cond()
        if ok:
            return last
        time.sleep(0.5)
    pytest.fail("%s did not happen within %ss: %s%s" % (
        what, timeout, last, ("\ndaemon stderr:\n" + m.stderr()[-3000:]) if m else ""))


class QEnv:
    """The quota image: its nginx, ref (through nginx), layer, digest, files and tree."""

    def __init__(self, fx, ng, extract):
        self.nginx = ng
        self.ref = ng.ref("big:latest")
        self.layer = fx.layers["big"]
        self.digest = self.layer["digest"]
        self.files = fx.paths["files"]
        self.tree = LayerTree.of_blob("big", self.layer, fx.blob_path("big"), extract)


@pytest.fixture(scope="module")
def qenv(strata_bin, tmp_path_factory, extract):
    with Registry(tmp_path_factory.mktemp("quota-registry")) as reg, \
            Nginx(tmp_path_factory.mktemp("quota-nginx"), reg) as ng:
        layout = tmp_path_factory.mktemp("quota-layout")
        run_mkfixture("big", "--out", layout, "--size-mib", str(QUOTA_MIB))
        reg.push(layout)
        e = QEnv(Fixtures(layout, reg), ng, extract)
        Strata(strata_bin, tmp_path_factory.mktemp("quota-index"))(
            "--json", "index", "--push", e.ref, timeout=INDEX_TIMEOUT)
        yield e


def blob_gets(e):
    return [r for r in e.nginx.requests() if r["method"] == "GET" and e.digest in r["uri"]]


def compare(m, e):
    bounded(m, lambda: e.tree.compare(m.layer(e.digest), right_name="tar[big]",
                                     dir_mtime=False),  # tar -x touches data/ again for b.bin
            "comparing the layer", COMPARE_TIMEOUT)


def test_quota_smaller_than_the_image(qenv, strata, store, mount):
    """Reading the whole image lazily under an 8 MiB quota: byte-exact, evictions happen, and the
    store ends within the quota (plus SLACK); evicted chunks are fetched again when read."""
    quota = 8 * MiB
    strata("pull", qenv.ref)
    m = mount(args=("--quota", "8M"))
    compare(m, qenv)

    def settled():
        s = strata.stats()
        size = du(store)
        return s["quota"]["evictions"] > 0 and size <= quota + SLACK, (size, s["quota"])

    size, q = wait_for(settled, "eviction down to the quota", m)
    print("[quota] 24 MiB image read under an 8 MiB quota: store %d bytes after eviction, %s"
          % (size, q))
    assert q["bytes"] == quota and q["evicted_bytes"] > 0 and q["evicted_chunks"] > 0, q
    s = strata.stats()
    assert s["local_bytes"] < s["content_bytes"], s  # some content is remote again

    # Evicted chunks come back on demand, byte-exact; the store stays bounded.
    before = len(blob_gets(qenv))
    for path in qenv.files:
        drop_cached_pages(os.path.join(m.layer(qenv.digest), path))
    compare(m, qenv)
    assert len(blob_gets(qenv)) >= before
    wait_for(lambda: (du(store) <= quota + SLACK, du(store)), "the store back under the quota", m)

    # gc through the daemon applies the daemon's quota
    g = json.loads(strata("--json", "gc").stdout)
    assert g["quota"]["bytes"] == quota and g["quota"]["low_water_bytes"] == quota * 90 // 100, g


def read_b_then_evict(qenv, strata, store, m, b_path, what):
    """Reads data/b.bin (byte-exact), which pushes the store over a 16 MiB quota, and waits for
    the evictor to bring it under."""
    assert bounded(m, lambda: hashlib.sha256(read_bytes(b_path)).hexdigest()) == \
        qenv.files["data/b.bin"]["sha256"]

    def evicted():
        q = strata.stats()["quota"]
        return q["evictions"] > 0 and du(store) <= 16 * MiB + SLACK, (du(store), q)

    wait_for(evicted, what, m)


def test_open_file_is_never_evicted(qenv, strata, store, mount, tmp_path):
    """a.bin (first in the layer: the first chunks eviction would take) held open while reading
    b.bin pushes the store over a 16 MiB quota: eviction runs, a.bin's chunks stay (re-read without
    any request; then with the registry down, after a restart), b.bin's go."""
    strata("pull", qenv.ref)
    m = mount(args=("--quota", "16M"))
    a_path = os.path.join(m.layer(qenv.digest), "data/a.bin")
    b_path = os.path.join(m.layer(qenv.digest), "data/b.bin")
    fd = os.open(a_path, os.O_RDONLY)
    try:
        data = bounded(m, lambda: os.pread(fd, 64 * MiB, 0))
        assert hashlib.sha256(data).hexdigest() == qenv.files["data/a.bin"]["sha256"]
        read_b_then_evict(qenv, strata, store, m, b_path, "eviction with a.bin open")
        before = len(blob_gets(qenv))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        again = bounded(m, lambda: os.pread(fd, 64 * MiB, 0))
        assert again == data
        assert len(blob_gets(qenv)) == before, "re-reading the open file fetched again"
    finally:
        os.close(fd)
    assert m.umount().returncode == 0
    assert m.wait_exit() == 0, m.stderr()

    # Registry down, no quota: a.bin is entirely in the store, b.bin is not.
    qenv.nginx.stop()
    try:
        m2 = mount(mnt=str(tmp_path / "mnt-b"), args=("--read-timeout", "5"))
        a = bounded(m2, lambda: read_bytes(os.path.join(m2.layer(qenv.digest), "data/a.bin")))
        assert a == data
        with pytest.raises(OSError):
            bounded(m2, lambda: read_bytes(os.path.join(m2.layer(qenv.digest), "data/b.bin")))
    finally:
        qenv.nginx.start()


def test_open_file_kept_across_takeover(qenv, strata_bin, strata, store, tmp_path):
    """A file opened under one daemon stays protected from eviction under the daemon that took
    the mount over (the open-file table travels with the handover)."""
    strata("pull", qenv.ref)
    d = Daemons(strata_bin, store, tmp_path / "mnt", tmp_path)
    try:
        m = d.start()
        fd = os.open(os.path.join(m.layer(qenv.digest), "data/a.bin"), os.O_RDONLY)
        try:
            data = bounded(m, lambda: os.pread(fd, 64 * MiB, 0))
            assert hashlib.sha256(data).hexdigest() == qenv.files["data/a.bin"]["sha256"]
            m2 = d.takeover(args=("--quota", "16M"))
            b_path = os.path.join(m2.layer(qenv.digest), "data/b.bin")
            read_b_then_evict(qenv, strata, store, m2, b_path,
                              "eviction with a.bin open across a takeover")
            before = len(blob_gets(qenv))
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert bounded(m2, lambda: os.pread(fd, 64 * MiB, 0)) == data
            assert len(blob_gets(qenv)) == before, \
                "the file opened before the takeover lost chunks to eviction"
        finally:
            os.close(fd)
    finally:
        d.cleanup()


def test_background_completion_stops_at_the_quota(qenv, strata, store, mount):
    """--background with a 16 MiB quota on a 24 MiB image: completion fetches until the store
    reaches the low-water mark, then waits instead of fetching what the evictor removes."""
    strata("pull", qenv.ref)
    m = mount(args=("--background", "--quota", "16M"))
    # wait until the background has fetched up to the mark
    wait_for(lambda: (du(store) >= 11 * MiB, du(store)), "background completion", m)
    time.sleep(3)  # the background is holding at the mark now
    before = len(blob_gets(qenv))
    time.sleep(4)
    after = len(blob_gets(qenv))
    assert after == before, "background completion kept fetching at the quota: %d GETs in 4 s" % (
        after - before)
    assert du(store) <= 16 * MiB + SLACK, du(store)
    compare(m, qenv)  # reads still work (what is missing is fetched on demand)


def test_least_recently_used_go_first(qenv, strata, store, mount, fixtures, tmp_path):
    """corner:oci's layers (built here, all local, never read) go before big's, which were read
    through the mount: gc under a quota that needs half of corner's bytes keeps big whole."""
    strata("pull", fixtures.ref("corner:oci"))
    corner_local = strata.stats()["local_bytes"]
    strata("pull", qenv.ref)
    m = mount()
    compare(m, qenv)
    assert m.umount().returncode == 0 and m.wait_exit() == 0, m.stderr()
    big_content = sum(f["size"] for f in qenv.files.values())
    assert strata.stats()["local_bytes"] == corner_local + big_content
    assert corner_local > 64 * 1024, corner_local

    cfg = tmp_path / "lw.toml"
    cfg.write_text("quota_low_water = 100\n")
    quota = du(store) - corner_local // 2
    g = json.loads(strata("--config", cfg, "--quota", str(quota), "--json", "gc").stdout)
    assert g["quota"]["over"] and g["quota"]["evicted_bytes"] > 0, g
    assert g["quota"]["low_water_bytes"] == quota, g
    after = strata.stats()["local_bytes"]
    assert after < corner_local + big_content, (after, g)
    # big, read most recently, is whole: readable with the registry down
    qenv.nginx.stop()
    try:
        m2 = mount(mnt=str(tmp_path / "mnt-lru"), args=("--read-timeout", "5"))
        compare(m2, qenv)
    finally:
        qenv.nginx.start()


def test_pin(qenv, strata, store, mount, fixtures, tmp_path):
    """pin fetches the whole image; with the registry down it is read byte-exact even after gc under
    a quota smaller than it; rm refuses a pinned image; unpin + gc frees it."""
    strata("pull", qenv.ref)
    strata("pull", fixtures.ref("corner:oci"))  # built here: its chunks are local and evictable
    p = strata("--json", "pin", qenv.ref)
    pin = json.loads(p.stdout)
    assert pin["pinned"] is True and pin["layers"] == 1, pin
    s = strata.stats()
    assert s["quota"]["pins"] == 1, s
    listing = {i["ref"]: i for i in strata.ls()}
    assert listing[qenv.ref]["pinned"] is True, listing
    assert listing[fixtures.ref("corner:oci")]["pinned"] is False, listing
    assert "pinned" in strata("ls").stdout

    g = json.loads(strata("--json", "--quota", "8M", "gc").stdout)
    assert g["quota"]["over"] is True and g["quota"]["evicted_chunks"] > 0, g
    fsck = json.loads(strata("--json", "fsck").stdout)
    assert fsck["problems"] == 0 and fsck["remote_chunks"] > 0, fsck  # corner's went

    p = strata("rm", qenv.ref, check=False)
    assert p.returncode == 1 and "is pinned" in p.stderr and "unpin" in p.stderr, p.stderr
    assert qenv.ref in {i["ref"] for i in strata.ls()}

    qenv.nginx.stop()
    try:
        m = mount(args=("--quota", "8M", "--read-timeout", "5"))
        compare(m, qenv)
        time.sleep(2)  # the evictor runs: nothing of the pinned image may go
        for path in qenv.files:
            drop_cached_pages(os.path.join(m.layer(qenv.digest), path))
        compare(m, qenv)
        assert m.umount().returncode == 0
        assert m.wait_exit() == 0, m.stderr()
    finally:
        qenv.nginx.start()

    p = strata("unpin", qenv.ref)
    assert "unpinned" in p.stdout
    p = strata("unpin", qenv.ref, check=False)
    assert p.returncode == 1 and "not pinned" in p.stderr, p.stderr
    g = json.loads(strata("--json", "--quota", "4M", "gc").stdout)
    assert g["quota"]["evicted_bytes"] >= 12 * MiB, g
    assert du(store) <= 4 * MiB + SLACK, du(store)
    strata("rm", qenv.ref)
    p = strata("pin", "nosuch.example:5000/none:1", check=False)
    assert p.returncode == 1 and "no such image" in p.stderr, p.stderr


def test_pin_through_the_daemon(qenv, strata, store, mount):
    """With a daemon serving the store, pin runs inside it and fetches through its fs."""
    strata("pull", qenv.ref)
    m = mount()
    assert strata.stats()["local_bytes"] == 0
    p = strata("pin", qenv.ref)
    assert "pinned" in p.stdout, p.stdout
    s = strata.stats()
    assert s["daemon"] and s["local_bytes"] == s["content_bytes"] > 0, s
    compare(m, qenv)


def test_config_file(qenv, strata, store, tmp_path):
    strata("pull", qenv.ref)
    cfg = tmp_path / "strata.toml"
    cfg.write_text('# test\nquota = "1M"\nquota_low_water = 50\nread_timeout = 7\n'
                   'strict_cache = false\n')
    g = json.loads(strata("--config", cfg, "--json", "gc").stdout)
    assert g["quota"]["bytes"] == MiB and g["quota"]["low_water_bytes"] == MiB // 2, g
    # a flag overrides the file
    g = json.loads(strata("--config", cfg, "--quota", "2M", "--json", "gc").stdout)
    assert g["quota"]["bytes"] == 2 * MiB, g
    s = strata.stats("--config", str(cfg))
    assert s["quota"]["bytes"] == MiB and s["quota"]["low_water_percent"] == 50, s

    bad = tmp_path / "bad.toml"
    bad.write_text('quota = "1M"\n\nquoat = 3\n')
    p = strata("--config", bad, "stats", check=False)
    assert p.returncode == 1, p
    assert p.stderr.strip() == "strata: %s:3: unknown key 'quoat' (known: quota, quota_low_water, " \
        "hosts_dir, strict_cache, read_timeout, index_cache, chunk_cache, block_cache, " \
        "allow_other, low_speed_timeout, download_deadline_base, download_min_rate, " \
        "artifact_trust, trusted_keys, snapshotter_socket, images, pin)" % bad, \
        p.stderr
    bad.write_text('quota = "20X"\n')
    p = strata("--config", bad, "gc", check=False)
    assert p.returncode == 1 and "%s:1: quota: expected a size" % bad in p.stderr, p.stderr
    p = strata("--config", tmp_path / "missing.toml", "ls", check=False)
    assert p.returncode == 1 and "missing.toml" in p.stderr, p.stderr

    # hosts_dir from the file: a registry that does not answer, with nginx as its mirror
    dead = "127.0.0.1:9"
    hosts = tmp_path / "certs.d" / dead
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text('server = "http://%s"\n' % dead +
                                      mirror_toml("http://" + qenv.nginx.host))
    p = strata("pull", dead + "/big:latest", check=False)
    assert p.returncode == 1, p  # without the file: no mirror
    cfg.write_text('hosts_dir = "%s"\nread_timeout = 5\n' % (tmp_path / "certs.d"))
    strata("--config", cfg, "pull", dead + "/big:latest")
    assert dead + "/big:latest" in {i["ref"] for i in strata.ls()}
    cfg.write_text('hosts_dir = "%s"\nstrict_cache = true\n' % (tmp_path / "nowhere"))
    p = strata("--config", cfg, "pull", dead + "/big:latest", check=False)
    assert p.returncode == 1, p


@pytest.fixture
def small_tmpfs(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], check=True,
                   timeout=30)
    try:
        yield d
    finally:
        for _ in range(3):
            if subprocess.run(["umount", str(d)], capture_output=True, timeout=30).returncode == 0:
                break
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


FULL_LINE = "is full: serving without caching"


def test_disk_full(qenv, strata_bin, small_tmpfs, mount, tmp_path):
    """A store on an 8 MiB tmpfs (below STORE_SPACE_RESERVE, 48 MiB, from the start), a 24 MiB
    image read whole: byte-exact, one log line, fsck clean; once the filesystem has room again the
    running daemon stores chunks again (pin), and they survive a restart."""
    store = str(small_tmpfs / "store")
    run = Strata(strata_bin, store)
    run("pull", qenv.ref)
    m = mount(store_dir=store, args=("--read-timeout", "30"))
    compare(m, qenv)
    for path in qenv.files:
        drop_cached_pages(os.path.join(m.layer(qenv.digest), path))
    compare(m, qenv)
    log = m.stderr()
    assert log.count(FULL_LINE) == 1, log
    assert "store %s %s" % (store, FULL_LINE) in log, log
    fsck = json.loads(run("--json", "fsck", check=False).stdout)
    assert fsck["problems"] == 0, fsck

    # Room again: chunk writes resume by themselves; the running daemon caches chunks again.
    subprocess.run(["mount", "-o", "remount,size=128m", str(small_tmpfs)], check=True, timeout=30)
    t0 = time.monotonic()
    for _ in range(60):
        p = run("--json", "pin", qenv.ref, check=False, timeout=INDEX_TIMEOUT)
        if p.returncode == 0:
            break
        time.sleep(1)
    print("[quota] pin stored everything %.1fs after the remount" % (time.monotonic() - t0))
    assert p.returncode == 0, (p.stdout, p.stderr, m.stderr()[-3000:])
    s = run.stats()
    assert s["local_bytes"] == s["content_bytes"], s
    assert m.umount().returncode == 0
    assert m.wait_exit() == 0, m.stderr()
    fsck = json.loads(run("--json", "fsck", check=False).stdout)
    assert fsck["problems"] == 0 and fsck["remote_chunks"] == 0, fsck

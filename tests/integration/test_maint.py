# SPDX-License-Identifier: Apache-2.0
"""Store maintenance: `strata fsck` on clean and lazy stores, `strata rm` + `strata gc` freeing only
what no remaining image uses, with and without a daemon serving the store.

corner:docker's layers (base gnu upper) are a subset of corner:oci's (base gnu pax upper): removing
corner:docker frees nothing, removing corner:oci frees exactly the pax layer. Corrupt chunks are
covered by tests/unit/test_store.c (no RocksDB binding for Python here), and a byte changed in a
RocksDB blob file on disk by test_chunk_corrupted_on_disk.
"""

import errno
import json
import os

import pytest

from harness.fs import bounded
from harness.images import Fixtures
from harness.strata import pulled_from_artifact
from harness.timeouts import COMPARE_TIMEOUT


def fsck_json(run):
    p = run("--json", "fsck", check=False)
    assert p.returncode == 0, "fsck exited %d\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def gc_json(run):
    return json.loads(run("--json", "gc").stdout)


def pull_both(run, fixtures):
    for tag in ("oci", "docker"):
        run("pull", fixtures.ref("corner:" + tag))


def compare_layers(m, fixtures, layer_tree, ref):
    for d in fixtures.layer_digests(ref):
        tree = layer_tree(d)
        bounded(m, lambda: tree.compare(m.layer(d), right_name="tar[%s]" % tree.name),
                "comparing " + tree.name, COMPARE_TIMEOUT)


def test_fsck_clean_store(strata, fixtures):
    """A freshly pulled store is clean: exit 0, every field present, nothing remote or orphaned."""
    pull_both(strata, fixtures)
    f = fsck_json(strata)
    for k in ("chunks", "bad_chunks", "orphan_chunks", "remote_chunks", "layers", "images",
              "problems", "problem_list", "repair", "repaired"):
        assert k in f, (k, f)
    assert f["chunks"] > 0, f
    # A build may store a few checkpoint windows its index does not keep: orphans, not problems.
    assert (f["bad_chunks"], f["remote_chunks"], f["problems"]) == (0, 0, 0), f
    assert (f["layers"], f["images"]) == (4, 2), f
    assert f["problem_list"] == [] and f["repaired"] == [] and f["repair"] is False, f

    p = strata("fsck")
    assert "chunks checked %d" % f["chunks"] in p.stdout, p.stdout
    assert "problems       0" in p.stdout, p.stdout
    p = strata("fsck", "--repair")
    assert "repaired:" not in p.stdout, p.stdout
    p = strata("fsck", "--bogus", check=False)
    assert p.returncode == 2, p.stderr

    g = gc_json(strata)
    assert g["freed_chunks"] == f["orphan_chunks"] and g["freed_layers"] == 0, (g, f)
    f2 = fsck_json(strata)
    assert f2["orphan_chunks"] == 0 and f2["chunks"] == f["chunks"] - f["orphan_chunks"], f2


def test_rm_gc_frees_only_unshared(strata, fixtures, layer_tree, mount):
    pull_both(strata, fixtures)
    before = strata.stats()
    chunks_before = fsck_json(strata)["chunks"]

    # corner:docker shares every layer with corner:oci: nothing to free.
    strata("rm", fixtures.ref("corner:docker"))
    g = gc_json(strata)
    assert g["freed_layers"] == 0, g
    chunks_before -= g["freed_chunks"]  # only orphaned windows of the pulls
    assert fsck_json(strata)["chunks"] == chunks_before

    # Pull it back, remove corner:oci: exactly the pax layer goes.
    strata("pull", fixtures.ref("corner:docker"))
    strata("rm", fixtures.ref("corner:oci"))
    g = gc_json(strata)
    pax = fixtures.layers["pax"]["digest"]
    assert g["freed_layer_list"] == [pax], g
    assert g["freed_layers"] == 1 and g["freed_chunks"] > 0 and g["freed_chunk_bytes"] > 0, g
    # compaction with blob GC gives the space back now, not some day
    assert g["disk_bytes_before"] - g["disk_bytes_after"] >= g["freed_chunk_bytes"] // 2, g
    p = strata("gc")
    assert "freed 0 chunks" in p.stdout, p.stdout

    f = fsck_json(strata)
    assert (f["layers"], f["images"], f["orphan_chunks"], f["problems"]) == (3, 1, 0, 0), f
    assert f["chunks"] == chunks_before - g["freed_chunks"], (f, g, chunks_before)
    st = strata.stats()
    assert st["layers"] == 3 and st["images"] == 1, st
    assert st["local_bytes"] == st["content_bytes"] > 0, st
    assert st["content_bytes"] < before["content_bytes"], (st, before)

    m = mount()
    assert sorted(os.listdir(m.layers)) == sorted(fixtures.layer_digests("corner:docker"))
    compare_layers(m, fixtures, layer_tree, "corner:docker")


def test_gc_through_running_daemon(strata, fixtures, layer_tree, mount):
    """With a daemon serving the store, rm, gc and fsck run inside it; the mount keeps serving
    the remaining image byte-exact."""
    pull_both(strata, fixtures)
    m = mount()
    strata("rm", fixtures.ref("corner:oci"))
    g = gc_json(strata)
    assert g["freed_layer_list"] == [fixtures.layers["pax"]["digest"]], g
    assert g["freed_chunks"] > 0, g
    st = strata.stats()
    assert st["daemon"] is True, st
    assert st["local_bytes"] == st["content_bytes"], st
    f = fsck_json(strata)
    assert (f["layers"], f["images"], f["orphan_chunks"], f["problems"]) == (3, 1, 0, 0), f
    compare_layers(m, fixtures, layer_tree, "corner:docker")


def test_fsck_counts_remote_chunks(strata_bin, fixtures, lazy_registry, tmp_path):
    """A store pulled from an index artifact holds no content yet: its chunks are counted as
    remote, not as problems; gc keeps the layers (an image lists them) and deletes nothing."""
    lazy_registry.push(fixtures.layout)
    fx = Fixtures(fixtures.layout, lazy_registry)
    ref = fx.ref("corner:oci")
    run = pulled_from_artifact(strata_bin, tmp_path, ref)
    f = fsck_json(run)
    assert f["remote_chunks"] > 0 and f["problems"] == 0 and f["bad_chunks"] == 0, f
    assert f["orphan_chunks"] == 0 and f["layers"] == 4 and f["images"] == 1, f
    g = gc_json(run)
    assert (g["freed_layers"], g["freed_chunks"]) == (0, 0), g
    assert fsck_json(run)["remote_chunks"] == f["remote_chunks"]

    # Without the image, gc drops the layer records; nothing is left to check.
    run("rm", ref)
    g = gc_json(run)
    assert g["freed_layers"] == 4, g
    f = fsck_json(run)
    assert (f["layers"], f["images"], f["remote_chunks"], f["problems"]) == (0, 0, 0, 0), f


def test_chunk_corrupted_on_disk(strata, fixtures, layer_tree, mount):
    """A byte of a stored chunk changed on disk (bit rot in a RocksDB blob file): a read of the
    file fails with EIO rather than serve it (the chunk's CRC-32C, checked on every store read
    instead of RocksDB's checksum and a sha256), fsck reports the chunk, and `fsck --repair`
    deletes it."""
    strata("pull", fixtures.ref("corner:oci"))
    base = fixtures.layers["base"]["digest"]
    rel = "files/size-C-minus-1"
    with open(os.path.join(layer_tree(base).path, rel), "rb") as f:
        data = f.read()
    needle = data[len(data) // 2:len(data) // 2 + 64]  # incompressible: stored raw
    hits = 0
    db = os.path.join(strata.store, "db")
    for name in sorted(os.listdir(db)):
        if not name.endswith((".blob", ".sst", ".log")):
            continue
        path = os.path.join(db, name)
        with open(path, "r+b") as f:
            buf = f.read()
            at = buf.find(needle)
            while at >= 0:
                f.seek(at + 10)
                f.write(bytes([buf[at + 10] ^ 0x01]))
                hits += 1
                at = buf.find(needle, at + 1)
    assert hits >= 1, "chunk bytes not found in %s" % os.listdir(db)

    m = mount()
    with pytest.raises(OSError) as e:
        with open(os.path.join(m.layer(base), rel), "rb") as f:
            f.read()
    assert e.value.errno == errno.EIO, e.value
    assert "is corrupt" in m.stderr(), m.stderr()[-2000:]
    assert m.umount().returncode == 0 and m.wait_exit() == 0

    p = strata("--json", "fsck", check=False)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert p.stdout.strip(), (p.returncode, p.stderr)
    f = json.loads(p.stdout)
    assert f["bad_chunks"] == 1, f
    p = strata("--json", "fsck", "--repair", check=False)
    assert json.loads(p.stdout)["bad_chunks"] == 1, p.stdout
    f = fsck_json(strata)
    assert f["bad_chunks"] == 0, f

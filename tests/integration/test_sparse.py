# SPDX-License-Identifier: Apache-2.0
"""GNU sparse files, in every form GNU tar (--format=gnu --sparse, --sparse-version=0.0, 0.1, 1.0)
and bsdtar (pax) write them: pushed to a real registry, pulled, served byte for byte as `tar -x`
of the blob (content, size, modes, times), holes reading as zeros, st_blocks counting data only,
SEEK_DATA/SEEK_HOLE from the index; by each index source: built from the blob, an index artifact
read lazily, and the daemon's stream.

The layers come from `tools/mkfixture.py sparse` (SPARSE_FILES there: sizes and data ranges).
"""

import errno
import os
import shutil

import pytest

from harness.fs import force_unmount, mounts_at
from harness.images import Fixtures, LayerTree, run_mkfixture
from harness.nginx import format_requests
from harness.strata import Mount, Strata, new_store, notes, one_json, public_tempdir
from harness.timeouts import INDEX_TIMEOUT

TAGS = ["gnu", "v00", "v01", "v10", "bsd"]
note = notes("sparse")


@pytest.fixture(scope="module")
def sparse(registry, tmp_path_factory):
    """mkfixture sparse, pushed to the session registry."""
    layout = tmp_path_factory.mktemp("sparse-layout")
    run_mkfixture("sparse", "--out", layout)
    registry.push(layout)
    try:
        yield Fixtures(layout, registry)
    finally:
        shutil.rmtree(layout, ignore_errors=True)


def layer_name(tag):
    return "sparse-" + tag


def need(fx, tag):
    if layer_name(tag) not in fx.layers:
        pytest.skip("mkfixture left %s out (bsdtar not installed: libarchive-tools)" % tag)


@pytest.fixture(scope="module")
def built(strata_bin, sparse, tmp_path_factory):
    """Every sparse:* image pulled with --index=build into one store (no daemon: the index is
    built from the blob), and that store mounted."""
    base = tmp_path_factory.mktemp("sparse-built")
    store = base / "store"
    store.mkdir()
    run = Strata(strata_bin, store)
    pulls = {t: run("--json", "pull", "--index=build", sparse.ref("sparse:" + t), check=False)
             for t in TAGS if layer_name(t) in sparse.layers}
    mnt = public_tempdir("strata-sparse-mnt-")
    m = Mount(strata_bin, store, mnt, base / "daemon.log")
    try:
        m.start()
        yield pulls, m
    finally:
        m.cleanup()
        if mounts_at(mnt):
            force_unmount(mnt)
        if not mounts_at(mnt):
            os.rmdir(mnt)
            shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="module")
def trees(sparse, extract):
    cache = {}

    def _get(tag):
        name = layer_name(tag)
        if name not in cache:
            cache[name] = LayerTree.of_blob(name, sparse.layers[name], sparse.blob_path(name),
                                            extract)
        return cache[name]

    return _get


def check_holes(layer_dir, files):
    """st_blocks, SEEK_DATA / SEEK_HOLE and reads across the boundaries of every sparse file,
    against the data ranges mkfixture wrote (tar rounds them out to its blocks)."""
    for rel, info in files.items():
        path = os.path.join(layer_dir, rel)
        size, data = info["size"], info["data"]
        st = os.stat(path)
        assert st.st_size == size, rel
        written = sum(n for _, n in data)
        # the holes take no blocks: what the layer holds, rounded to tar's 512-byte blocks, and
        # at most a 4 KiB block more per data range (GNU tar reads extents from the filesystem)
        assert st.st_blocks * 512 <= written + 4096 * (len(data) + 1), (rel, st.st_blocks)
        assert st.st_blocks * 512 >= written, (rel, st.st_blocks)
        fd = os.open(path, os.O_RDONLY)
        try:
            if not data:
                with pytest.raises(OSError) as e:
                    os.lseek(fd, 0, os.SEEK_DATA)
                assert e.value.errno == errno.ENXIO, rel
                assert os.lseek(fd, 0, os.SEEK_HOLE) == 0, rel
                assert os.pread(fd, 4096, size // 2) == bytes(4096), rel
                continue
            for off, n in data:
                # the data starts at most a block before what was written; a hole before it
                got = os.lseek(fd, max(0, off - 8192), os.SEEK_DATA)
                assert off - 4096 < got <= off or (off < 8192 and got <= off), (rel, off, got)
                assert os.lseek(fd, off, os.SEEK_HOLE) >= off + n, (rel, off)
                # a read across the start and the end of the range, as GNU tar extracted it
                lo = max(0, off - 5000)
                assert os.pread(fd, 10000, lo) == read_ref(path, lo, 10000), (rel, off)
                assert os.pread(fd, 10000, off + n - 5000) == read_ref(path, off + n - 5000,
                                                                       10000), (rel, off)
            last = data[-1][0] + data[-1][1]
            if last + 8192 < size:
                with pytest.raises(OSError) as e:
                    os.lseek(fd, last + 8192, os.SEEK_DATA)
                assert e.value.errno == errno.ENXIO, rel
                assert os.lseek(fd, last + 8192, os.SEEK_HOLE) == last + 8192, rel
            with pytest.raises(OSError) as e:
                os.lseek(fd, size, os.SEEK_HOLE)
            assert e.value.errno == errno.ENXIO, rel
        finally:
            os.close(fd)


REF_DIR = {}  # the extracted tree check_holes compares reads with, set by each test


def read_ref(path, off, n):
    rel = os.path.relpath(path, REF_DIR["layer"])
    with open(os.path.join(REF_DIR["ref"], rel), "rb") as f:
        f.seek(off)
        return f.read(n)


def check_layer(layer_dir, tree, fx):
    tree.compare(layer_dir)
    REF_DIR.update(layer=layer_dir, ref=tree.path)
    check_holes(layer_dir, fx.paths["sparse"])


@pytest.mark.parametrize("tag", TAGS)
def test_built_index_serves_tar_x(sparse, built, trees, tag):
    need(sparse, tag)
    pulls, m = built
    p = pulls[tag]
    assert p.returncode == 0, "pull sparse:%s: %s%s" % (tag, p.stdout, p.stderr)
    o = one_json(p)
    assert o["index_sources"] == ["build"], o
    check_layer(m.layer(sparse.layers[layer_name(tag)]["digest"]), trees(tag), sparse)


def test_holes_are_not_stored(strata_bin, sparse, built):
    """The 64 MiB image file holds 4 MiB of data: the store keeps about that, not its holes."""
    pulls, m = built
    st = Strata(strata_bin, m.store).stats()
    note("stats after the sparse pulls: logical %d, stored %d" % (st["logical_bytes"],
                                                                   st["stored_bytes"]))
    data = sum(n for info in sparse.paths["sparse"].values() for _, n in info["data"])
    assert st["logical_bytes"] < 2 * len(pulls) * data, st


@pytest.mark.parametrize("tag", ["gnu", "v00"])
def test_artifact_lazy(strata_bin, sparse, trees, nginx_proxy, tmp_path, tag):
    """The index artifact (format version 3) pulled into an empty store: reading one small file
    fetches a span, not the blob (gzip layers: a single-frame zstd layer decodes from its start);
    then every file is tar -x's, and a pin finds the artifact's index equal to the blob's."""
    ng = nginx_proxy(sparse.registry)
    name = layer_name(tag)
    info = sparse.layers[name]
    Strata(strata_bin, new_store(tmp_path, "index"))("index", "--push",
                                                     sparse.ref("sparse:" + tag),
                                                     timeout=INDEX_TIMEOUT)
    run = Strata(strata_bin, new_store(tmp_path, "lazy"))
    o = one_json(run("--json", "pull", "--index=artifact", ng.ref("sparse:" + tag)))
    assert o["index_sources"] == ["artifact"], o
    m = Mount(strata_bin, run.store, tmp_path / "mnt", tmp_path / "daemon.log")
    try:
        m.start()
        layer = m.layer(info["digest"])
        ng.clear()
        with open(os.path.join(layer, "sparse/plain.txt"), "rb") as f:
            assert f.read() == b"not sparse at all\n" * 100
        reqs = ng.requests()
        body = ng.bytes_for(info["digest"], reqs)
        note("%s: plain.txt read lazily: %d bytes of the %d-byte blob" % (tag, body,
                                                                           info["size"]))
        assert 0 < body < info["size"] // 2, format_requests(reqs)
        check_layer(layer, trees(tag), sparse)
        # pin checks the artifact's index (its holes included) against the whole blob
        o = one_json(run("--json", "pin", ng.ref("sparse:" + tag), timeout=INDEX_TIMEOUT))
        assert o["pinned"], o
        st = run.stats()
        assert st["layer_provenance"].get("verified") == 1, st
    finally:
        m.cleanup()


def test_stream_path(strata, mount, sparse, trees):
    """Pulled through a running daemon with no index anywhere: the daemon streams the blob and
    indexes it; the layer serves tar -x's files."""
    m = mount()
    o = one_json(strata("--json", "pull", "--index=auto", sparse.ref("sparse:v01")))
    # sparse:v01 has no artifact (test_artifact_lazy pushes gnu and v00 only)
    assert o["index_sources"] == ["stream"], o
    check_layer(m.layer(sparse.layers["sparse-v01"]["digest"]), trees("v01"), sparse)

# SPDX-License-Identifier: Apache-2.0
"""Lazy loading: index artifacts in the registry, and layer content fetched with Range requests
only when it is read.

Every registry request of these tests goes through an nginx reverse proxy whose access log
(method, URI, status, body bytes, Range header) is the evidence: a pull from an index artifact
must not GET any layer blob, and reading a file of a lazily pulled layer must fetch only a small
span of the blob, once, with Range requests.

The images live in a registry of their own (lazy_registry): big:latest (mkfixture big, one gzip -1
layer of ~200 MiB of incompressible data; STRATA_BIG_MIB shrinks it) and a copy of the corner
images, so that the artifacts pushed here do not change how the other modules' pulls behave.

The figures the report needs (bytes fetched for one small read, requests per span) are printed
with a "[lazy]" prefix: run with -s to see them.
"""

import collections
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from harness.fs import bounded, drop_cached_pages, read_file, walk_lstat
from harness.images import Fixtures
from harness.nginx import format_requests, not_ranged, request_context
from harness.strata import Strata, new_store, notes, one_json, one_line
from harness.timeouts import COMPARE_TIMEOUT, INDEX_TIMEOUT, MiB, READ_TIMEOUT

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.strata.index.v1"
note = notes("lazy")


def artifact_tag(manifest_digest):
    return "sha256-%s.strata" % manifest_digest.split(":", 1)[1]


def registry_manifest(registry, repo, reference):
    """(digest, parsed body) of a manifest in the registry, asked directly (not through nginx)."""
    try:
        with registry.get("/v2/%s/manifests/%s" % (repo, reference), accept=OCI_MANIFEST,
                          timeout=30) as r:
            body = r.read()
            digest = r.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as e:
        raise AssertionError("GET /v2/%s/manifests/%s: HTTP %d" % (repo, reference, e.code))
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    return digest, json.loads(body)


# ----------------------------------------------------------------------------------------------
# module fixtures
# ----------------------------------------------------------------------------------------------

class Indexed:
    pass


@pytest.fixture(scope="module")
def big_artifact(strata_bin, big, tmp_path_factory):
    """Store A: `strata --json index --push` of big:latest through nginx."""
    store = tmp_path_factory.mktemp("lazy-store-A")
    run = Strata(strata_bin, store)
    ng = big.nginx
    ng.clear()
    p = run("--json", "index", "--push", big.ref(), timeout=INDEX_TIMEOUT)
    env = Indexed()
    env.run, env.store, env.obj = run, store, one_json(p)
    env.requests = ng.requests()
    env.artifact = env.obj.get("artifact")
    assert env.artifact and env.artifact.startswith("sha256:"), \
        "index --push printed no artifact digest: %s" % p.stdout
    return env


@pytest.fixture(scope="module")
def lazy_corner(fixtures, lazy_registry, nginx_proxy):
    """The corner images (the session `fixtures` layout) pushed to lazy_registry too; `nginx` is
    the proxy in front of it."""
    lazy_registry.push(fixtures.layout)
    fx = Fixtures(fixtures.layout, lazy_registry)
    fx.nginx = nginx_proxy(lazy_registry)
    return fx


@pytest.fixture(scope="module")
def corner_artifact(strata_bin, lazy_corner, tmp_path_factory):
    """`strata index --push` of corner:oci (directly, not through nginx) from a fresh store."""
    store = tmp_path_factory.mktemp("lazy-corner-A")
    p = Strata(strata_bin, store)("--json", "index", "--push", lazy_corner.ref("corner:oci"),
                                  timeout=INDEX_TIMEOUT)
    obj = one_json(p)
    assert obj.get("artifact", "").startswith("sha256:"), p.stdout
    return obj["artifact"]


# ----------------------------------------------------------------------------------------------
# index --push
# ----------------------------------------------------------------------------------------------

def test_index_push_downloads_the_layer_once(big, big_artifact):
    obj = big_artifact.obj
    assert obj["manifest"] == big.image("big:latest")["manifest"]
    assert obj["layers"] == [big.digest]
    reqs = big_artifact.requests
    gets = big.nginx.blob_requests(big.digest, reqs, method="GET")
    note("index --push: %d GET(s) of the %d-byte layer blob, %d bytes sent" % (
        len(gets), big.layer["size"], big.nginx.bytes_for(big.digest, reqs)))
    assert len(gets) == 1, "the layer blob must be downloaded exactly once\n" + \
        format_requests(big.nginx.blob_requests(None, reqs))
    assert gets[0]["status"] == 200 and gets[0]["bytes"] == big.layer["size"], gets


def test_artifact_is_tagged_and_refers_to_the_image(big, big_artifact):
    manifest = big.image("big:latest")["manifest"]
    digest, art = registry_manifest(big.registry, "big", artifact_tag(manifest))
    assert digest == big_artifact.artifact
    assert art.get("artifactType") == ARTIFACT_TYPE, art
    assert art.get("subject", {}).get("digest") == manifest, art
    assert art.get("mediaType") == OCI_MANIFEST, art
    # small: the artifact's blobs are the index and the checkpoint windows, not layer data
    for d in art["layers"]:
        assert d["digest"] != big.digest
        assert d["size"] < big.layer["size"] // 10, d


def test_index_push_is_idempotent(big, big_artifact):
    """Pushing again (same store) yields the same artifact, and the tag still points at it."""
    obj = one_json(big_artifact.run("--json", "index", "--push", big.ref(), timeout=INDEX_TIMEOUT))
    assert obj.get("artifact") == big_artifact.artifact, (obj, big_artifact.obj)
    manifest = big.image("big:latest")["manifest"]
    assert registry_manifest(big.registry, "big", artifact_tag(manifest))[0] == \
        big_artifact.artifact


def test_index_artifact_same_from_any_store(strata_bin, lazy_corner, corner_artifact, tmp_path):
    """The artifact is a function of the image: a second store builds byte-identical blobs."""
    p = Strata(strata_bin, new_store(tmp_path, "A2"))("--json", "index", "--push",
                                                      lazy_corner.ref("corner:oci"),
                                                      timeout=INDEX_TIMEOUT)
    assert one_json(p).get("artifact") == corner_artifact


# ----------------------------------------------------------------------------------------------
# pull from the artifact
# ----------------------------------------------------------------------------------------------

def test_artifact_pull_fetches_no_layer_blob(strata_bin, big, big_artifact, tmp_path):
    """(Also: a second store uses the first store's artifact.)"""
    ng = big.nginx
    run = Strata(strata_bin, new_store(tmp_path, "B"))
    ng.clear()
    objs = run.pull_json(big.ref())
    reqs = ng.requests()
    assert len(objs) == 1, objs
    o = objs[0]
    total = sum(r["bytes"] for r in reqs if r["method"] == "GET")
    note("pull from the artifact: bytes_fetched=%s requests=%s; nginx: %d requests, %d body "
         "bytes" % (o.get("bytes_fetched"), o.get("requests"), len(reqs), total))
    assert o["manifest"] == big.image("big:latest")["manifest"]
    assert o["layers"] == [big.digest]
    assert o["index_sources"] == ["artifact"], o
    # "artifact" is the digest of the artifact pushed (by index --push); a pull may report the one
    # it used, or null
    assert o.get("artifact") in (None, big_artifact.artifact), o
    # it found the first store's artifact by its tag
    tag_uri = "/v2/big/manifests/" + artifact_tag(o["manifest"])
    assert any(r["method"] == "GET" and r["uri"] == tag_uri and r["status"] == 200
               for r in reqs), "no GET %s\n%s" % (tag_uri, format_requests(reqs))
    assert not ng.blob_requests(big.digest, reqs, method="GET"), \
        "a pull from the artifact downloaded the layer blob\n" + format_requests(reqs)
    assert o["bytes_fetched"] < MiB, o
    assert total < MiB, "the pull moved %d bytes through nginx\n%s" % (total, format_requests(reqs))
    assert [e["ref"] for e in run.ls()] == [big.ref()]


def test_small_read_fetches_a_small_span(strata_bin, big, big_artifact, mount, tmp_path):
    ng = big.nginx
    store = new_store(tmp_path, "B")
    run = Strata(strata_bin, store)
    assert run.pull_json(big.ref())[0]["index_sources"] == ["artifact"]
    ng.clear()
    m = mount(store_dir=store)
    reqs = ng.requests()
    assert not ng.blob_requests(big.digest, reqs, method="GET"), \
        "mounting downloaded layer data\n" + request_context(reqs, m)
    layer = m.layer(big.digest)

    # stat and readdir of the whole tree: metadata only, no blob request at all
    ng.clear()

    found = bounded(m, lambda: walk_lstat(layer), "walking " + layer)
    reqs = ng.requests()
    assert sorted(found) == sorted(["app", "data"] + list(big.files)), sorted(found)
    for rel, info in big.files.items():
        assert found[rel].st_size == info["size"], rel
    assert not ng.blob_requests(None, reqs), \
        "stat/readdir fetched blobs\n" + request_context(reqs, m)

    # one 4 KiB file in the middle of the layer
    hello = os.path.join(layer, big.hello_file)
    ng.clear()
    data = read_file(m, hello)
    reqs = ng.requests()
    assert data == big.hello_text.encode(), "%s: %d bytes, content differs" % (hello, len(data))
    gets = ng.blob_requests(big.digest, reqs)
    layer_bytes = sum(r["bytes"] for r in gets)
    all_blob_bytes = sum(r["bytes"] for r in ng.blob_requests(None, reqs) if r["method"] == "GET")
    note("reading %s (4096 bytes) from the %d-byte layer: %d request(s) for the layer blob, %d "
         "bytes; %d bytes for all blobs (incl. checkpoint windows)" % (
             big.hello_file, big.layer["size"], len(gets), layer_bytes, all_blob_bytes))
    for r in ng.blob_requests(None, reqs):
        note("  %s %s -> %s %d bytes Range=%s" % (r["method"], r["uri"].rsplit("/", 1)[-1][:19],
                                                  r["status"], r["bytes"], r["range"]))
    assert gets, "reading a file of a lazily pulled layer fetched nothing from the layer blob?\n" + \
        request_context(reqs, m)
    assert not not_ranged(gets), "layer blob requests that are not ranged GETs (206)\n" + \
        request_context(reqs, m)
    assert layer_bytes < 2 * MiB, "%d bytes of the layer blob for one 4 KiB file\n%s" % (
        layer_bytes, request_context(reqs, m))
    assert all_blob_bytes < 2 * MiB, "%d blob bytes in all for one 4 KiB file\n%s" % (
        all_blob_bytes, request_context(reqs, m))

    # again: the chunk is in the store now
    ng.clear()
    drop_cached_pages(hello)
    assert read_file(m, hello) == big.hello_text.encode()
    reqs = ng.requests()
    assert not ng.blob_requests(None, reqs), \
        "a second read fetched again\n" + request_context(reqs, m)

    # and after a remount (no page cache, a new daemon): from the store
    m.cleanup()
    m2 = mount(store_dir=store)
    ng.clear()
    assert read_file(m2, os.path.join(m2.layer(big.digest), big.hello_file)) == \
        big.hello_text.encode()
    reqs = ng.requests()
    assert not ng.blob_requests(None, reqs), \
        "a read after a remount fetched again\n" + request_context(reqs, m2)


def test_parallel_readers_share_one_request_per_span(strata_bin, big, big_artifact, mount,
                                                     tmp_path):
    ng = big.nginx
    store = new_store(tmp_path, "C")
    assert Strata(strata_bin, store).pull_json(big.ref())[0]["index_sources"] == ["artifact"]
    m = mount(store_dir=store)
    path = os.path.join(m.layer(big.digest), big.multi_file)
    size = big.files[big.multi_file]["size"]
    piece = 256 * 1024
    npieces = (size + piece - 1) // piece
    nthreads = 16
    barrier = threading.Barrier(nthreads, timeout=60)
    results = [None] * nthreads
    ng.clear()

    def worker(i):
        # every thread reads the whole file in 256 KiB pieces; half of them start at 0, the others
        # at different pieces (wrapping around), so that different chunks of one span are asked
        # for at the same time
        try:
            start = 0 if i % 2 == 0 else (i * 3) % npieces
            parts = {}
            with open(path, "rb") as f:
                barrier.wait()
                for k in range(npieces):
                    j = (start + k) % npieces
                    parts[j] = os.pread(f.fileno(), piece, j * piece)
            data = b"".join(parts[j] for j in range(npieces))
            results[i] = (len(data), hashlib.sha256(data).hexdigest())
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(READ_TIMEOUT)
    if any(t.is_alive() for t in threads):
        m.kill()
        for t in threads:
            t.join(10)
        pytest.fail("parallel readers hung; daemon killed\n" + request_context(ng.requests(), m))
    reqs = ng.requests()
    want = (size, big.multi_sha256)
    wrong = [(i, r) for i, r in enumerate(results) if r != want]
    assert not wrong, "readers got wrong data (want %s): %s\n%s" % (want, wrong[:4],
                                                                   request_context(reqs, m))
    gets = ng.blob_requests(big.digest, reqs)
    per_range = collections.Counter(r["range"] for r in gets)
    note("16 parallel readers of %s (%d bytes): %d request(s) for the layer blob (%d distinct "
         "ranges, %d bytes); %d blob requests in all" % (
             big.multi_file, size, len(gets), len(per_range), sum(r["bytes"] for r in gets),
             len(ng.blob_requests(None, reqs))))
    for r in ng.blob_requests(None, reqs):
        note("  %s %s -> %s %d bytes Range=%s" % (r["method"], r["uri"].rsplit("/", 1)[-1][:19],
                                                  r["status"], r["bytes"], r["range"]))
    assert gets, "no request for the layer blob?\n" + request_context(reqs, m)
    assert not not_ranged(gets), request_context(reqs, m)
    dups = {k: v for k, v in per_range.items() if v > 1}
    assert not dups, "the same span was fetched more than once: %s\n%s" % (dups,
                                                                          request_context(reqs, m))
    # the same holds for every other blob the daemon fetched (checkpoint windows)
    per_blob_range = collections.Counter((r["uri"], r["range"])
                                         for r in ng.blob_requests(None, reqs, method="GET"))
    dups = {k: v for k, v in per_blob_range.items() if v > 1}
    assert not dups, "a blob range was fetched more than once: %s\n%s" % (dups,
                                                                         request_context(reqs, m))
    # A file read in order is fetched in spans that cover several of its chunks, not one span per
    # chunk: consecutive chunk spans would each fetch the checkpoint interval they share, 2x the
    # file (it is incompressible: its compressed bytes are about its size). Which chunk the 16
    # readers ask for first varies; when it is not the first one, the chunks before it come in a
    # second span that shares one interval with the first: about 1.7x here, so the bound is 1.9x.
    fetched = sum(r["bytes"] for r in gets)
    assert fetched < 1.9 * size, "%d bytes fetched for a %d-byte file\n%s" % (
        fetched, size, request_context(reqs, m))


def test_pull_index_artifact_missing(strata_bin, lazy_corner, tmp_path):
    """corner:gzip has no artifact: --index=artifact fails, stores nothing, downloads no layer."""
    ng = lazy_corner.nginx
    ref = ng.ref("corner:gzip")
    run = Strata(strata_bin, new_store(tmp_path, "E"))
    ng.clear()
    p = run("pull", "--index=artifact", ref, check=False)
    reqs = ng.requests()
    assert p.returncode == 1, "pull --index=artifact %s exited %d\nstdout:%s\nstderr:%s" % (
        ref, p.returncode, p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert line.startswith("strata: pull:"), line
    assert "artifact" in line, line
    assert ref in line, line
    assert run.ls() == [], "a failed pull stored an image"
    for d in lazy_corner.layer_digests("corner:gzip"):
        assert not ng.blob_requests(d, reqs, method="GET"), \
            "pull --index=artifact downloaded a layer before failing\n" + format_requests(reqs)


def test_lazy_layers_match_tar(strata_bin, lazy_corner, corner_artifact, layer_tree, mount,
                               tmp_path):
    """corner:oci (gzip, plain tar and zstd layers) pulled from its artifact: every layer, read
    lazily through Range requests, is exactly what GNU tar extracts from the blob."""
    fx = lazy_corner
    ng = fx.nginx
    store = new_store(tmp_path, "B")
    run = Strata(strata_bin, store)
    digests = fx.layer_digests("corner:oci")
    ng.clear()
    objs = run.pull_json("--index=artifact", ng.ref("corner:oci"))
    reqs = ng.requests()
    assert len(objs) == 1 and objs[0]["layers"] == digests, objs
    assert objs[0]["index_sources"] == ["artifact"] * len(digests), objs[0]
    assert objs[0].get("artifact") in (None, corner_artifact), objs[0]
    for d in digests:
        assert not ng.blob_requests(d, reqs, method="GET"), \
            "the pull downloaded layer %s\n%s" % (d, format_requests(reqs))

    m = mount(store_dir=store)
    ng.clear()
    for d in digests:
        tree = layer_tree(d)
        path = m.layer(d)
        assert os.path.isdir(path), "%s (%s) not served" % (d, tree.name)
        bounded(m, lambda: tree.compare(path, right_name="tar[%s %s %s]" % (
            tree.name, tree.info["producer"], tree.info["compression"])),
            "comparing " + tree.name, COMPARE_TIMEOUT)
    reqs = ng.requests()
    for d in digests:
        name, info = fx.layer_by_digest(d)
        gets = ng.blob_requests(d, reqs)
        note("corner:oci layer %s (%s, %d bytes): %d request(s), %d bytes while comparing" % (
            name, info["compression"], info["size"], len(gets), sum(r["bytes"] for r in gets)))
        assert gets, "layer %s (%s) was compared without a single fetch: where did its content " \
            "come from?\n%s" % (name, info["compression"], request_context(reqs, m))
        assert not not_ranged(gets), "layer %s (%s): requests that are not ranged GETs\n%s" % (
            name, info["compression"], request_context(gets, m))


def test_background_completion_makes_the_image_local(strata_bin, lazy_corner, corner_artifact,
                                                     layer_tree, mount, tmp_path):
    """mount --background fetches every missing chunk by itself; afterwards every layer reads
    byte-exact without a single request to the registry."""
    fx = lazy_corner
    ng = fx.nginx
    store = new_store(tmp_path, "BG")
    run = Strata(strata_bin, store)
    digests = fx.layer_digests("corner:oci")
    assert run.pull_json("--index=artifact", ng.ref("corner:oci"))[0]["index_sources"] == \
        ["artifact"] * len(digests)
    before = run.stats()
    assert before["content_bytes"] > 0 and before["local_bytes"] < before["content_bytes"], before

    m = mount(store_dir=store, args=("--background",))
    deadline = time.monotonic() + 120
    while True:
        st = run.stats()
        # complete, and each layer checked against its blob (a download of its own)
        if st["local_bytes"] == st["content_bytes"] and \
                st["layer_provenance"]["verified"] == st["layers"]:
            break
        assert time.monotonic() < deadline, "background completion stalled at %s\n%s" % (
            st, m.stderr())
        time.sleep(0.5)
    assert st["read_fetch"]["range_requests"] > 0, st

    ng.clear()
    for d in digests:
        tree = layer_tree(d)
        bounded(m, lambda: tree.compare(m.layer(d), right_name="tar[%s]" % tree.name),
                "comparing " + tree.name, COMPARE_TIMEOUT)
    reqs = ng.requests()
    assert not [r for r in reqs if "/blobs/" in r["uri"]], \
        "reads after background completion still went to the registry\n" + request_context(reqs, m)

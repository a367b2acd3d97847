# SPDX-License-Identifier: Apache-2.0
"""eStargz layers: strata indexes them from their footer and TOC (no layer download) and reads
them lazily, gzip member by gzip member, with Range requests.

The eStargz images are made here, from the session's fixture images, by the real converter:
ctr-remote (stargz-snapshotter 0.12) against a private containerd (conftest `containerd`):

  ctr-remote images pull --plain-http SRC
  ctr-remote images convert --estargz [--oci] SRC DST
  ctr-remote images push --plain-http DST

Which images, and why:
  corner:gzip   -> corner:gzip-esgz   (--estargz --oci)
      The gzip-only corner image (layers base, upper): device nodes, fifo, setuid/setgid/sticky,
      foreign and big owners, xattrs incl. security.capability, hard links across directories,
      long and non-ASCII names, ns mtimes, a 50 MiB file (several 4 MiB eStargz chunks), and an
      upper layer with whiteouts and an opaque directory. The result is an OCI manifest with
      application/vnd.oci.image.layer.v1.tar+gzip layers annotated with their TOC digest.
      (Converting an OCI image WITHOUT --oci gives the very same manifest, digest included: there
      is no "plain" variant of an OCI image, hence the next one.)
  corner:docker -> corner:docker-esgz (--estargz, no --oci)
      A Docker schema 2 image (layers base, gnu = GNU-format uncompressed tar, upper). Without
      --oci ctr-remote keeps the Docker media types (manifest.v2+json, rootfs.diff.tar.gzip, the
      uncompressed gnu layer becomes gzip too) and adds NO annotations: strata has to recognise
      eStargz from the blob's footer alone. The base and upper eStargz blobs are byte-identical to
      those of corner:gzip-esgz (the conversion is deterministic).
  demo:latest   -> demo:esgz          (--estargz --oci)
      busybox: one ~1 MiB binary and symlinks; a small second layer.
  Not corner:oci / corner:multi: ctr-remote 0.12 turns their zstd layer into a gzip eStargz blob
  but keeps the +zstd media type, i.e. a broken image.

The reference for a layer is GNU tar's extraction of its eStargz blob (downloaded from the
registry directly, digest checked), compared with the existing tree comparison (treecmp), with
exactly one allowance:
  * mtimes are compared rounded to the nearest second: the eStargz TOC, strata's only source of
    metadata, stores RFC 3339 times in whole seconds (ctr-remote rounds: .666 -> +1 s), while the
    tar headers inside the blob keep the fixtures' nanoseconds (PAX mtime). strata must show
    either the exact tar mtime or the rounded one, nothing else.
The files ctr-remote adds at the layer root, .prefetch.landmark / .no.prefetch.landmark and the
TOC itself (stargz.index.json, the last tar member of the blob), are in the tar extraction and
strata shows them too, as a plain containerd unpack does: the same layer digest shows the same
tree whether strata indexed it from its TOC or by streaming it.

Every registry request goes through nginx (harness.nginx): its access log proves that a pull
reads only the footer and the TOC of each layer, and that reads are Range requests. The figures
(bytes fetched) are printed with an "[estargz]" prefix: run with -s to see them.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import urllib.request
from pathlib import Path

import pytest

from harness import treecmp
from harness.fs import bounded, read_file
from harness.nginx import format_requests, not_ranged, request_context
from harness.proxy import CorruptingProxy
from harness.strata import Strata, mirror_toml, new_store, notes, write_hosts_toml
from harness.timeouts import COMPARE_TIMEOUT, MiB

FOOTER_SIZE = 51              # eStargz footer: an empty gzip member with the TOC offset in FEXTRA
ESTARGZ_CHUNK = 4 * MiB       # ctr-remote's default chunk size (--estargz-chunk-size 0)
HIDDEN_AT_ROOT = (".prefetch.landmark", ".no.prefetch.landmark", "stargz.index.json")
LANDMARKS = (".prefetch.landmark", ".no.prefetch.landmark")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"

# key -> (source image, converted image, extra convert flags)
CONVERSIONS = {
    "oci": ("corner:gzip", "corner:gzip-esgz", ["--oci"]),
    "docker": ("corner:docker", "corner:docker-esgz", []),
    "demo": ("demo:latest", "demo:esgz", ["--oci"]),
}


note = notes("estargz")


# ----------------------------------------------------------------------------------------------
# module fixture: convert, push, download the blobs
# ----------------------------------------------------------------------------------------------

def parse_footer(tail, blob_size):
    """The TOC offset from an eStargz footer (the blob's last 51 bytes): a gzip header with
    FEXTRA whose subfield "SG" holds 16 hex digits of the offset and "STARGZ"."""
    assert len(tail) == FOOTER_SIZE
    assert tail[:4] == b"\x1f\x8b\x08\x04", "no gzip header with FEXTRA: %r" % tail[:4]
    assert tail[12:14] == b"SG" and tail[32:38] == b"STARGZ", "not an eStargz footer: %r" % tail
    off = int(tail[16:32], 16)
    assert 0 < off < blob_size - FOOTER_SIZE, off
    return off


class Layer:
    """A layer as one manifest describes it (media type, annotations: per image), with its
    downloaded blob and the TOC offset from the blob's footer."""

    def __init__(self, desc, blob):
        self.digest = desc["digest"]
        self.size = desc["size"]
        self.media_type = desc["mediaType"]
        self.annotations = desc.get("annotations", {})
        self.blob = blob
        with open(blob, "rb") as f:
            f.seek(self.size - FOOTER_SIZE)
            self.toc_offset = parse_footer(f.read(), self.size)

    @property
    def tail_size(self):
        """Bytes from the TOC's gzip member to the end: all a pull may read."""
        return self.size - self.toc_offset

    def short(self):
        return self.digest[7:19]


class Image:
    def __init__(self, key, name, manifest_digest, manifest, layers):
        self.key, self.name = key, name
        self.manifest_digest, self.manifest = manifest_digest, manifest
        self.layers = layers

    @property
    def digests(self):
        return [l.digest for l in self.layers]


class Estargz:
    pass


@pytest.fixture(scope="module")
def esgz(containerd, registry, fixtures, nginx_proxy, extract, tmp_path_factory):
    """The three converted images, pushed to the session registry; their layer blobs downloaded
    (env.images[key] -> Image); env.nginx in front of the registry; env.reference(layer) -> the
    tar extraction (cached), with eStargz's own root files checked to be there."""
    blobs = tmp_path_factory.mktemp("esgz-blobs")
    env = Estargz()
    env.registry, env.nginx, env.images = registry, nginx_proxy(registry), {}
    cache = {}

    def reference(layer):
        if layer.digest not in cache:
            path = Path(extract(layer.blob, "gzip"))
            entries = treecmp.list_tar_entries(str(layer.blob), "gzip")
            present = sorted(n for n in HIDDEN_AT_ROOT if os.path.lexists(path / n))
            # the comparison must cover them (else it would prove nothing about them)
            assert "stargz.index.json" in present, (layer.digest, present)
            assert len([n for n in present if n in LANDMARKS]) == 1, (layer.digest, present)
            cache[layer.digest] = (str(path), entries, present)
        return cache[layer.digest]

    env.reference = reference
    try:
        blob_paths = {}
        for key, (src, dst, flags) in CONVERSIONS.items():
            env.images[key] = convert(containerd, registry, key, src, dst, flags, blobs,
                                      blob_paths)
        yield env
    finally:
        shutil.rmtree(blobs, ignore_errors=True)


def convert(containerd, registry, key, src, dst, flags, blobs, blob_paths):
    """ctr-remote pull, convert, push; then the pushed manifest and its layer blobs (downloaded
    once per digest into blobs/, checked) -> Image."""
    src_ref, dst_ref = registry.ref(src), registry.ref(dst)
    containerd.ctr("images", "pull", "--plain-http", src_ref)
    containerd.ctr("images", "convert", "--estargz", *flags, src_ref, dst_ref)
    containerd.ctr("images", "push", "--plain-http", dst_ref)
    repo, tag = dst.split(":")
    with registry.get("/v2/%s/manifests/%s" % (repo, tag),
                      accept="%s, %s" % (OCI_MANIFEST, DOCKER_MANIFEST)) as r:
        body = r.read()
    mdigest = "sha256:" + hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    img_layers = []
    for desc in manifest["layers"]:
        d = desc["digest"]
        if d not in blob_paths:
            path = blobs / d.split(":", 1)[1]
            h = hashlib.sha256()
            with registry.get("/v2/%s/blobs/%s" % (repo, d)) as r, open(path, "wb") as out:
                while True:
                    b = r.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                    out.write(b)
            assert "sha256:" + h.hexdigest() == d, "blob %s: digest mismatch" % d
            assert path.stat().st_size == desc["size"], d
            blob_paths[d] = path
        img_layers.append(Layer(desc, blob_paths[d]))
    note("%s -> %s (%s): %s" % (src, dst, " ".join(["--estargz"] + flags), ", ".join(
        "%s %d bytes, TOC at %d" % (l.short(), l.size, l.toc_offset) for l in img_layers)))
    return Image(key, dst, mdigest, manifest, img_layers)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def parse_range(h, size):
    """(first, last) of a single "bytes=a-b" / "bytes=a-" / "bytes=-n" Range header, or None."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", h.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if not a:
        n = int(b)
        return max(0, size - n), size - 1
    return int(a), min(int(b), size - 1) if b else size - 1


def expected_sources(img):
    """How strata indexes each layer of img: from its TOC when the descriptor carries the TOC
    digest that verifies it, else by streaming the layer (an unverifiable TOC is not used)."""
    return ["estargz" if TOC_DIGEST_ANNOTATION in l.annotations else "build"
            for l in img.layers]


def pull(strata_bin, store, ng, img, *opts):
    """`strata --json pull` of img through nginx into store (must be empty of its layers): one
    object whose layers are the manifest's, indexed as expected_sources() says."""
    objs = Strata(strata_bin, store).pull_json(*opts, ng.ref(img.name))
    assert len(objs) == 1, objs
    o = objs[0]
    assert o["manifest"] == img.manifest_digest, (o, img.manifest_digest)
    assert o["layers"] == img.digests, o
    assert o["index_sources"] == expected_sources(img), o
    return o


ANNOTATED = [k for k in CONVERSIONS if k != "docker"]   # ctr-remote without --oci annotates none


def round_s(ns):
    """ns rounded to the nearest second (halves up, as Go's time.Round), in seconds."""
    return (ns + 500_000_000) // 1_000_000_000


def mtime_rounding(rel, st_strata, st_tar):
    """treecmp skip(): the mtime check is skipped when strata shows the tar's mtime rounded to
    the nearest second (the TOC's precision); anything else is still reported, in ns."""
    if st_strata.st_mtime_ns != st_tar.st_mtime_ns and \
            st_strata.st_mtime_ns == round_s(st_tar.st_mtime_ns) * 1_000_000_000:
        return {"mtime"}
    return set()


def compare_layer(env, m, layer, label):
    path = m.layer(layer.digest)
    assert os.path.isdir(path), "%s (%s) not served" % (layer.digest, label)
    ref, entries, present = env.reference(layer)
    names = bounded(m, lambda: os.listdir(path), "listing " + path)
    assert set(present) <= set(names), "%s: strata does not show %s" % (
        label, sorted(set(present) - set(names)))
    bounded(m, lambda: treecmp.compare_layer(path, ref, tar_entries=entries, skip=mtime_rounding,
                                             right_name="tar[%s]" % label),
            "comparing " + label, COMPARE_TIMEOUT)


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ANNOTATED)
def test_estargz_pull_uses_toc(strata_bin, esgz, key, tmp_path):
    """A pull into an empty store reads each layer's footer (51 bytes) and TOC, with Range
    requests inside the blob's tail, and never GETs a whole layer blob."""
    img = esgz.images[key]
    ng = esgz.nginx
    ng.clear()
    o = pull(strata_bin, new_store(tmp_path, key), ng, img)
    reqs = ng.requests()
    note("pull %s: bytes_fetched=%s requests=%s" % (img.name, o.get("bytes_fetched"),
                                                    o.get("requests")))
    for l in img.layers:
        lreqs = ng.blob_requests(l.digest, reqs)
        note("  layer %s (%d bytes, TOC member + footer %d bytes): %s" % (
            l.short(), l.size, l.tail_size,
            "; ".join("%s %s %d bytes Range=%s" % (r["method"], r["status"], r["bytes"],
                                                   r["range"]) for r in lreqs)))
        assert lreqs, "layer %s: no request at all? how was it indexed?\n%s" % (
            l.digest, request_context(reqs))
        bad = not_ranged(lreqs)
        assert not bad, "layer %s: requests other than ranged GETs (206):\n%s\n%s" % (
            l.digest, format_requests(bad), request_context(reqs))
        for r in lreqs:
            rng = parse_range(r["range"], l.size)
            assert rng is not None, "unparsable Range %r" % r["range"]
            assert rng[0] >= l.toc_offset, \
                "layer %s: Range %s reaches before the TOC (at %d): layer data read by a pull" \
                "\n%s" % (l.digest, r["range"], l.toc_offset, request_context(reqs))
            assert r["bytes"] == rng[1] - rng[0] + 1, r
        footer = [r for r in lreqs if parse_range(r["range"], l.size) ==
                  (l.size - FOOTER_SIZE, l.size - 1)]
        assert footer, "layer %s: no 51-byte footer read\n%s" % (l.digest, request_context(reqs))
        total = sum(r["bytes"] for r in lreqs)
        assert total <= l.tail_size + FOOTER_SIZE, \
            "layer %s: %d bytes read for a %d-byte TOC member + footer\n%s" % (
                l.digest, total, l.tail_size, request_context(reqs))
    # and nothing else: every blob GET is of a layer (ranged, above) or of the config
    others = [r for r in ng.blob_requests(None, reqs)
              if r["uri"].rsplit("/", 1)[-1] not in img.digests]
    config = img.manifest["config"]["digest"]
    assert all(r["uri"].endswith("/" + config) for r in others), request_context(others)


@pytest.mark.parametrize("key", ANNOTATED)
def test_estargz_layers_match_tar(strata_bin, esgz, key, mount, tmp_path):
    """Every layer, read lazily through Range requests only, is exactly what GNU tar extracts
    from its eStargz blob (but for the two allowances in the module docstring)."""
    img = esgz.images[key]
    ng = esgz.nginx
    store = new_store(tmp_path, key)
    pull(strata_bin, store, ng, img)
    m = mount(store_dir=store)
    ng.clear()
    for i, l in enumerate(img.layers):
        compare_layer(esgz, m, l, "%s layer %d %s" % (img.name, i, l.short()))
    reqs = ng.requests()
    for i, l in enumerate(img.layers):
        gets = ng.blob_requests(l.digest, reqs)
        note("%s layer %d %s (%d bytes): %d request(s), %d bytes while comparing" % (
            img.name, i, l.short(), l.size, len(gets), sum(r["bytes"] for r in gets)))
        assert gets, "layer %s was compared without a single fetch\n%s" % (
            l.digest, request_context(reqs, m))
        bad = not_ranged(gets)
        assert not bad, "layer %s: requests other than ranged GETs (206):\n%s\n%s" % (
            l.digest, format_requests(bad), request_context(reqs, m))


def test_estargz_plain_and_oci(strata_bin, esgz, mount, tmp_path):
    """Both conversions: OCI (annotated with the TOC digest: indexed from the TOC) and Docker media
    types (no annotations, only the footer says eStargz: the TOC cannot be verified, so the layers
    are indexed by streaming them) are served; strata keeps the manifests' media types; a few
    files, a whiteout and the opaque dir."""
    oci, docker = esgz.images["oci"], esgz.images["docker"]
    # what ctr-remote made of them (the premise of this test)
    assert oci.manifest["mediaType"] == OCI_MANIFEST, oci.manifest
    assert docker.manifest["mediaType"] == DOCKER_MANIFEST, docker.manifest
    for l in oci.layers:
        assert l.media_type == OCI_GZIP and TOC_DIGEST_ANNOTATION in l.annotations, l.__dict__
    for l in docker.layers:
        assert l.media_type == DOCKER_GZIP and not l.annotations, l.__dict__
    assert oci.digests[0] == docker.digests[0] and oci.digests[-1] == docker.digests[-1], \
        "fixture: the conversion is expected to be deterministic (same base/upper blobs)"

    ng = esgz.nginx
    mounts = {}
    for img in (oci, docker):
        store = new_store(tmp_path, img.key)
        pull(strata_bin, store, ng, img)
        listing = Strata(strata_bin, store).ls()
        assert len(listing) == 1, listing
        e = listing[0]
        assert e["media_type"] == img.manifest["mediaType"], e
        assert [(x["digest"], x["size"], x["media_type"]) for x in e["layers"]] == \
            [(l.digest, l.size, l.media_type) for l in img.layers], e
        mounts[img.key] = mount(store_dir=store)

    ng.clear()
    for img in (oci, docker):
        m = mounts[img.key]
        base, upper = m.layer(img.digests[0]), m.layer(img.digests[-1])
        checks = [(base, "files/one", b"1"),
                  (base, "files/exec.sh", b"#!/bin/sh\necho hi\n"),
                  (base, "hard/sub/b.txt", b"hard linked content\n"),
                  (upper, "new-in-upper.txt", b"new in the upper layer\n"),
                  (upper, "opaque/keep-name.txt", b"new content in the opaque dir\n")]
        if img is docker:
            checks.append((m.layer(img.digests[1]), "gnu/a.txt", b"plain a\n"))
        for layer, rel, want in checks:
            got = read_file(m, os.path.join(layer, rel))
            assert got == want, "%s: %s: %r, want %r" % (img.name, rel, got, want)
        st = os.lstat(os.path.join(base, "hard/a.txt"))
        assert st.st_nlink == 3 and stat.S_IMODE(st.st_mode) == 0o640, st
        assert os.getxattr(os.path.join(base, "xattr/file"), "user.demo") == b"file value"
        st = os.lstat(os.path.join(upper, "victims/gone-file"))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "%s: whiteout: %s" % (img.name, st)
        assert os.getxattr(os.path.join(upper, "opaque"), "trusted.overlay.opaque") == b"y"
        assert "stargz.index.json" in os.listdir(base), os.listdir(base)
    reqs = ng.requests()
    bad = not_ranged(ng.blob_requests(None, reqs))
    assert not bad, "requests other than ranged GETs (206):\n%s" % format_requests(bad)


def test_estargz_small_read_fetches_little(strata_bin, esgz, mount, tmp_path):
    """Reading one small file of the ~53 MiB base layer fetches the gzip member(s) that hold it,
    not the layer; 4 KiB in the middle of the 50 MiB file fetch at most two 4 MiB eStargz
    chunks."""
    img = esgz.images["oci"]
    base = img.layers[0]
    assert base.size > 40 * MiB, base.size
    ng = esgz.nginx
    store = new_store(tmp_path, "read")
    pull(strata_bin, store, ng, img)
    m = mount(store_dir=store)
    ref = esgz.reference(base)[0]
    layer = m.layer(base.digest)

    rel = "files/exec.sh"
    ng.clear()
    data = read_file(m, os.path.join(layer, rel))
    reqs = ng.requests()
    with open(os.path.join(ref, rel), "rb") as f:
        assert data == f.read(), rel
    gets = ng.blob_requests(base.digest, reqs)
    fetched = sum(r["bytes"] for r in gets)
    note("reading %s (%d bytes) from the %d-byte base layer: %d request(s), %d bytes: %s" % (
        rel, len(data), base.size, len(gets), fetched,
        "; ".join("%s %d bytes Range=%s" % (r["status"], r["bytes"], r["range"]) for r in gets)))
    assert gets, "the read fetched nothing from the layer blob?\n" + request_context(reqs, m)
    assert not not_ranged(gets), request_context(reqs, m)
    assert fetched < base.size // 2, "%d bytes of a %d-byte layer for a %d-byte file\n%s" % (
        fetched, base.size, len(data), request_context(reqs, m))
    assert fetched < MiB, "%d bytes for a %d-byte file (its gzip member is tiny)\n%s" % (
        fetched, len(data), request_context(reqs, m))

    # 4 KiB in the middle of the 50 MiB incompressible file: one chunk's gzip member (4 MiB)
    rel, off = "files/big-50MiB", 25 * MiB + 12345
    ng.clear()
    data = read_file(m, os.path.join(layer, rel), off, 4096)
    reqs = ng.requests()
    with open(os.path.join(ref, rel), "rb") as f:
        f.seek(off)
        assert data == f.read(4096), "%s at %d: content differs" % (rel, off)
    gets = ng.blob_requests(base.digest, reqs)
    fetched = sum(r["bytes"] for r in gets)
    note("reading 4096 bytes at %d of %s: %d request(s), %d bytes: %s" % (
        off, rel, len(gets), fetched,
        "; ".join("%s %d bytes Range=%s" % (r["status"], r["bytes"], r["range"]) for r in gets)))
    assert gets and not not_ranged(gets), request_context(reqs, m)
    assert fetched < base.size // 2, request_context(reqs, m)
    # At most two chunks' gzip members: the one holding the bytes, and the previous chunk, which
    # strata's read path takes too when it is missing (fs.c miss_range(): "concurrent readers of
    # a file arrive in any order"). Incompressible data: a member is about its chunk's size.
    assert fetched <= 2 * ESTARGZ_CHUNK + 64 * 1024, \
        "%d bytes for 4 KiB of a file stored in %d-byte chunks\n%s" % (fetched, ESTARGZ_CHUNK,
                                                                     request_context(reqs, m))


# ----------------------------------------------------------------------------------------------
# trusting the TOC: only when it matches the descriptor's TOC digest
# ----------------------------------------------------------------------------------------------

def test_toc_digest_annotation_is_the_toc_json_digest(esgz):
    """The premise of the check: ctr-remote's containerd.io/snapshot/stargz/toc.digest is the
    sha256 of stargz.index.json as stored in the TOC member (what tar -x extracts)."""
    img = esgz.images["oci"]
    for l in img.layers:
        ref = esgz.reference(l)[0]
        with open(os.path.join(ref, "stargz.index.json"), "rb") as f:
            got = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        assert l.annotations[TOC_DIGEST_ANNOTATION] == got, (l.digest, l.annotations, got)


def test_estargz_without_toc_digest_is_built(strata_bin, esgz, mount, tmp_path):
    """The Docker-typed conversion has no TOC digest annotations: its TOCs cannot be trusted, so
    each layer is indexed by streaming it (one clear warning line per eStargz layer), and the
    layers still equal tar -x."""
    img = esgz.images["docker"]
    assert not any(TOC_DIGEST_ANNOTATION in l.annotations for l in img.layers)
    ng = esgz.nginx
    ng.clear()
    store = new_store(tmp_path, "noannot")
    p = Strata(strata_bin, store)("--json", "pull", ng.ref(img.name))
    o = json.loads(p.stdout.strip().splitlines()[-1])
    assert o["index_sources"] == ["build"] * len(img.layers), o
    warned = [line for line in p.stderr.splitlines() if TOC_DIGEST_ANNOTATION in line]
    assert len(warned) == len(img.layers), p.stderr
    assert all("cannot be verified" in w and "streaming" in w for w in warned), warned
    reqs = ng.requests()
    for l in img.layers:
        whole = [r for r in ng.blob_requests(l.digest, reqs) if r["method"] == "GET" and
                 not r["range"] and r["status"] == 200]
        assert whole, "layer %s was not streamed\n%s" % (l.digest, request_context(reqs))
    m = mount(store_dir=store)
    for i, l in enumerate(img.layers):
        compare_layer(esgz, m, l, "%s layer %d %s" % (img.name, i, l.short()))


def test_estargz_corrupt_toc_from_mirror_is_not_trusted(strata_bin, esgz, mount, tmp_path):
    """A mirror that serves the footers intact but corrupts every other range (the TOCs, then
    the data): each TOC fails its check on the mirror and is read again from the registry; the
    layers are indexed from their TOC all the same and equal tar -x."""
    img = esgz.images["oci"]
    ng = esgz.nginx
    proxy = CorruptingProxy(esgz.registry.host, img.digests,
                            when=lambda req, body: len(body) > FOOTER_SIZE)
    try:
        hd = write_hosts_toml(tmp_path / "certs.d", ng.host, mirror_toml("http://" + proxy.host))
        ng.clear()
        store = new_store(tmp_path, "corrupt-toc")
        p = Strata(strata_bin, store)("--hosts-dir", hd, "--json", "pull", ng.ref(img.name))
        o = json.loads(p.stdout.strip().splitlines()[-1])
        assert o["index_sources"] == ["estargz"] * len(img.layers), (o, p.stderr)
        assert proxy.corrupted >= len(img.layers), proxy.requests
        assert "eStargz TOC" in p.stderr, p.stderr   # the warning about the mirror's TOC
        reqs = ng.requests()
        for l in img.layers:
            tocs = [r for r in ng.blob_requests(l.digest, reqs)
                    if r["range"] and parse_range(r["range"], l.size)[0] == l.toc_offset]
            assert tocs, "layer %s: the TOC was not read again from the registry\n%s" % (
                l.digest, request_context(reqs))
        m = mount(store_dir=store, args=("--hosts-dir", hd))
        for i, l in enumerate(img.layers):
            compare_layer(esgz, m, l, "%s layer %d %s" % (img.name, i, l.short()))
    finally:
        proxy.stop()


def test_estargz_wrong_toc_digest_falls_back_to_streaming(strata_bin, esgz, mount, tmp_path):
    """A manifest whose first layer names another TOC digest: no host's TOC matches it, so that
    layer is indexed by streaming it (a warning names the mismatch); the others still come from
    their TOC; every layer equals tar -x."""
    img = esgz.images["oci"]
    manifest = json.loads(json.dumps(img.manifest))
    manifest["layers"][0]["annotations"][TOC_DIGEST_ANNOTATION] = \
        "sha256:" + hashlib.sha256(b"not this TOC").hexdigest()
    body = json.dumps(manifest).encode()
    repo = img.name.split(":")[0]
    req = urllib.request.Request(esgz.registry.url + "/v2/%s/manifests/esgz-badtoc" % repo,
                                 data=body, method="PUT",
                                 headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 201, r.status
    store = new_store(tmp_path, "badtoc")
    p = Strata(strata_bin, store)("--json", "pull", esgz.nginx.ref(repo + ":esgz-badtoc"))
    o = json.loads(p.stdout.strip().splitlines()[-1])
    assert o["index_sources"] == ["build"] + ["estargz"] * (len(img.layers) - 1), (o, p.stderr)
    assert "TOC digest mismatch" in p.stderr, p.stderr
    m = mount(store_dir=store)
    for i, l in enumerate(img.layers):
        compare_layer(esgz, m, l, "esgz-badtoc layer %d %s" % (i, l.short()))

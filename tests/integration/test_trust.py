# SPDX-License-Identifier: Apache-2.0
"""Trust: no image can change another image's files (issue 11, findings 1 and 2).

The cross-repository poisoning attack: an attacker who controls only their own repository pushes an
image that lists a public layer X of someone else's image, plus their own layer Y, and an index
artifact whose entry for X is really Y's index (its size, compression and diff_id patched to X's,
copied from public metadata). A node that pulls the attacker's image and then the victim's must
still serve the victim's real files for X (tar -x equal), with `--index=build` too, and with the
pulls made inside a running daemon (pending layers streamed there).

The images are made here with the registry's HTTP API, in a registry of this module's own.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import time
import urllib.request

import pytest

from harness.fs import bounded
from harness.images import LayerTree
from harness.registry import Registry
from harness.strata import Strata, new_store, notes, one_json

note = notes("trust")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
ARTIFACT_TYPE = "application/vnd.strata.index.v1"
ARTIFACT_INDEX_MT = "application/vnd.strata.layer.index.v2+zstd"
LAYER_ANNOTATION = "org.strata.layer.digest"

# struct index_layer_header (index/layer_i.h): where diff_id and blob_size are
HDR_DIFF_ID = 56
HDR_BLOB_SIZE = 96


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tar_gz(files):
    """A deterministic gzip'd tar of {path: (bytes, mode)}: (blob, diff_id, tar bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({os.path.dirname(p) for p in files if os.path.dirname(p)})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tf.addfile(ti)
        for path, (data, mode) in sorted(files.items()):
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = len(data), mode, 1700000000
            tf.addfile(ti, io.BytesIO(data))
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), sha256(tar), tar


class Repo:
    """Pushes blobs and manifests to one repository of a registry."""

    def __init__(self, registry, name):
        self.registry, self.name = registry, name

    def _req(self, method, path, data=None, headers=None):
        req = urllib.request.Request(self.registry.url + path, data=data, method=method,
                                     headers=headers or {})
        return urllib.request.urlopen(req, timeout=60)

    def blob(self, data):
        digest = sha256(data)
        with self._req("POST", "/v2/%s/blobs/uploads/" % self.name) as r:
            loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = self.registry.url + loc
        sep = "&" if "?" in loc else "?"
        req = urllib.request.Request(loc + sep + "digest=" + digest, data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=60).close()
        return {"digest": digest, "size": len(data)}

    def manifest(self, tag, obj, media_type=OCI_MANIFEST):
        body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        with self._req("PUT", "/v2/%s/manifests/%s" % (self.name, tag), data=body,
                       headers={"Content-Type": media_type}):
            pass
        return sha256(body), len(body)

    def get_manifest(self, tag):
        with self.registry.get("/v2/%s/manifests/%s" % (self.name, tag), accept=OCI_MANIFEST) as r:
            return json.loads(r.read())

    def get_blob(self, digest):
        with self.registry.get("/v2/%s/blobs/%s" % (self.name, digest)) as r:
            return r.read()

    def image(self, tag, layers):
        """Pushes an image of layers [(blob, diff_id)]: its manifest digest."""
        descs = []
        for blob, _ in layers:
            d = self.blob(blob)
            descs.append({"mediaType": OCI_GZIP, "digest": d["digest"], "size": d["size"]})
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers",
                                        "diff_ids": [dd for _, dd in layers]}}).encode()
        c = self.blob(config)
        digest, _ = self.manifest(tag, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                        "config": {"mediaType": OCI_CONFIG, **c},
                                        "layers": descs})
        return digest

    def ref(self, tag):
        return "%s/%s:%s" % (self.registry.host, self.name, tag)


def zstd(data, decompress=False):
    # (compressing: the frame must state its content size, as strata's do)
    args = ["zstd", "-q", "-c"] + (["-d"] if decompress else
                                   ["-3", "--stream-size=%d" % len(data)])
    return subprocess.run(args, input=data, capture_output=True, check=True, timeout=60).stdout


class Attack:
    """The victim's image (X), the attacker's helper image (Y, to get Y's index from strata) and
    the attacker's image [X, Y] with a lying artifact entry for X."""

    def __init__(self, strata_bin, registry, tmp):
        self.real = {"bin/tool": (b"the real tool\n" * 50, 0o755),
                     "etc/victim.conf": (b"victim=1\n", 0o644)}
        self.evil = {"bin/tool": (b"#!/bin/sh\necho owned\n" + b"#" * 700, 0o4755),
                     "etc/victim.conf": (b"evil=1\n", 0o644)}
        self.x_blob, self.x_diff, _ = tar_gz(self.real)
        self.y_blob, self.y_diff, _ = tar_gz(self.evil)
        self.x = sha256(self.x_blob)
        self.y = sha256(self.y_blob)
        victim = Repo(registry, "victim/app")
        victim.image("1", [(self.x_blob, self.x_diff)])
        self.victim_ref = victim.ref("1")
        # the attacker's index of Y, made by strata itself and pushed as an artifact
        helper = Repo(registry, "evil/helper")
        hdigest = helper.image("1", [(self.y_blob, self.y_diff)])
        Strata(strata_bin, new_store(tmp, "attacker"))("index", "--push", helper.ref("1"))
        art = helper.get_manifest("sha256-%s.strata" % hdigest.split(":", 1)[1])
        ydesc = [l for l in art["layers"] if l["mediaType"] == ARTIFACT_INDEX_MT][0]
        raw = bytearray(zstd(helper.get_blob(ydesc["digest"]), decompress=True))
        raw[HDR_DIFF_ID:HDR_DIFF_ID + 32] = bytes.fromhex(self.x_diff.split(":", 1)[1])
        raw[HDR_BLOB_SIZE:HDR_BLOB_SIZE + 8] = struct.pack("<Q", len(self.x_blob))
        lie = zstd(bytes(raw))
        # the attacker's image: [X, Y] and an artifact whose X entry is Y's index
        evil = Repo(registry, "evil/app")
        edigest = evil.image("1", [(self.x_blob, self.x_diff), (self.y_blob, self.y_diff)])
        ld = evil.blob(lie)
        empty = evil.blob(b"{}")
        evil.manifest("sha256-%s.strata" % edigest.split(":", 1)[1], {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": OCI_EMPTY, **empty},
            "layers": [{"mediaType": ARTIFACT_INDEX_MT, **ld,
                        "annotations": {LAYER_ANNOTATION: self.x}}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": edigest,
                        "size": len(json.dumps({}))}})
        self.evil_ref = evil.ref("1")
        self.blob_path = tmp / "x.tar.gz"
        self.blob_path.write_bytes(self.x_blob)


@pytest.fixture(scope="module")
def trust_registry(strata_bin, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("trust-registry"))
    try:
        with reg:
            yield reg
    finally:
        shutil.rmtree(reg.storage, ignore_errors=True)


@pytest.fixture(scope="module")
def attack(strata_bin, trust_registry, tmp_path_factory):
    return Attack(strata_bin, trust_registry, tmp_path_factory.mktemp("attack"))


@pytest.fixture(scope="module")
def x_tree(attack, extract):
    info = {"compression": "gzip"}
    return LayerTree.of_blob("x", info, str(attack.blob_path), extract)


def test_attack_is_real(strata, attack):
    """The attacker's own image is served from their artifact: X shows Y's files there."""
    p = strata("--json", "pull", attack.evil_ref)
    o = one_json(p)
    note("attacker pull: %s" % o["index_sources"])
    assert o["index_sources"][0] == "artifact", p.stderr


@pytest.mark.parametrize("mode", ["auto", "build"])
def test_poisoned_layer_is_not_served_to_the_victim(strata, mount, attack, x_tree, mode):
    strata("pull", attack.evil_ref)
    args = ["--json", "pull"] + (["--index=build"] if mode == "build" else []) + \
        [attack.victim_ref]
    o = one_json(strata(*args))
    note("victim pull after the attacker's (%s): %s" % (mode, o["index_sources"]))
    m = mount()
    x_tree.compare(m.layer(attack.x), dir_mtime=False)  # the victim's files, not Y's
    assert o["index_sources"] == ["build"], o


def test_poisoned_layer_in_daemon_is_streamed(strata, mount, attack, x_tree):
    """Both pulls inside a running daemon: the victim's pending layer is streamed and verified."""
    m = mount()
    o = one_json(strata("--json", "pull", attack.evil_ref))
    assert o["index_sources"][0] == "artifact", o
    o = one_json(strata("--json", "pull", attack.victim_ref))
    layer = m.layer(attack.x)
    assert bounded(m, lambda: os.path.isdir(layer), "isdir(%s)" % layer)
    x_tree.compare(layer, dir_mtime=False)
    assert o["index_sources"] == ["stream"], o
    # the attacker pulling again cannot take the verified record back
    o = one_json(strata("--json", "pull", attack.evil_ref))
    assert o["index_sources"][0] == "store", o
    x_tree.compare(layer, dir_mtime=False)


# ----------------------------------------------------------------------------------------------
# artifact trust policy: repository (default), none, signed
# ----------------------------------------------------------------------------------------------

def test_policy_none_uses_no_artifact(strata, mount, attack, x_tree):
    p = strata("--json", "pull", "--artifact-trust=none", attack.evil_ref)
    o = one_json(p)
    assert o["index_sources"] == ["build", "build"], o
    assert not o.get("artifact"), o
    m = mount()
    x_tree.compare(m.layer(attack.x), dir_mtime=False)


def test_policy_none_from_config(strata, attack, tmp_path):
    cfg = tmp_path / "strata.toml"
    cfg.write_text('artifact_trust = "none"\n')
    o = one_json(strata("--config", cfg, "--json", "pull", attack.evil_ref))
    assert o["index_sources"] == ["build", "build"], o
    p = strata("--config", cfg, "pull", "--index=artifact", attack.evil_ref, check=False)
    assert p.returncode == 2 and "exclude each other" in p.stderr, p.stderr


def openssl_key(d, name):
    """A P-256 key pair made with the openssl CLI: (private PEM path, public PEM path)."""
    priv, pub = d / (name + ".pem"), d / (name + ".pub")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", priv], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "ec", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True, timeout=60)
    return priv, pub


class Signed:
    """signed/app:1 with an artifact signed by key "good" (strata index --push --sign), and the
    same image in mirror/app with an unsigned artifact of the same digest."""

    def __init__(self, strata_bin, registry, tmp):
        self.priv, self.pub = openssl_key(tmp, "good")
        _, self.other_pub = openssl_key(tmp, "other")
        blob, diff, _ = tar_gz({"srv/app.conf": (b"signed=1\n", 0o644)})
        self.layer = sha256(blob)
        self.repo = Repo(registry, "signed/app")
        self.manifest = self.repo.image("1", [(blob, diff)])
        self.ref = self.repo.ref("1")
        run = Strata(strata_bin, new_store(tmp, "signer"))
        self.push = one_json(run("--json", "index", "--push", "--sign", self.priv, self.ref))
        self.artifact = self.push["artifact"]
        self.mirror = Repo(registry, "mirror/app")
        self.mirror.image("1", [(blob, diff)])
        self.mirror_ref = self.mirror.ref("1")
        mo = one_json(run("--json", "index", "--push", self.mirror_ref))
        assert mo["artifact"] == self.artifact, (mo, self.push)

    def sig_tag(self, digest=None):
        return "sha256-%s.sig" % (digest or self.artifact).split(":", 1)[1]

    def copy_signature(self, dst, to_digest=None):
        """Copies the signature manifest (and its blobs) of the artifact into repository dst,
        tagged for to_digest (default: the same artifact)."""
        m = self.repo.get_manifest(self.sig_tag())
        for d in [m["config"]] + m["layers"]:
            dst.blob(self.repo.get_blob(d["digest"]))
        dst.manifest(self.sig_tag(to_digest), m)


@pytest.fixture(scope="module")
def signed(strata_bin, trust_registry, tmp_path_factory):
    return Signed(strata_bin, trust_registry, tmp_path_factory.mktemp("signed"))


def signed_config(tmp_path, *pubs):
    cfg = tmp_path / "signed.toml"
    cfg.write_text('artifact_trust = "signed"\ntrusted_keys = [%s]\n' %
                   ", ".join('"%s"' % p for p in pubs))
    return cfg


def test_sign_writes_a_cosign_signature(signed):
    """The layout cosign's SIGNATURE_SPEC describes: tag sha256-<hex>.sig, an OCI manifest whose
    layer is the simple-signing payload, the base64 ECDSA signature as its annotation."""
    assert signed.push.get("signer", "").startswith("sha256:"), signed.push
    m = signed.repo.get_manifest(signed.sig_tag())
    assert m["config"]["mediaType"] == OCI_CONFIG, m
    [layer] = m["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json", m
    sig = layer["annotations"]["dev.cosignproject.cosign/signature"]
    payload = signed.repo.get_blob(layer["digest"])
    body = json.loads(payload)
    assert body["critical"]["type"] == "cosign container image signature", body
    assert body["critical"]["image"]["docker-manifest-digest"] == signed.artifact, body
    assert body["critical"]["identity"]["docker-reference"] == \
        "%s/signed/app" % signed.repo.registry.host, body
    # the signature verifies with the openssl CLI (sha256 ECDSA over the payload bytes)
    d = signed.priv.parent
    (d / "payload").write_bytes(payload)
    (d / "sig").write_bytes(__import__("base64").b64decode(sig))
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", signed.pub, "-signature",
                        d / "sig", d / "payload"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


def test_signed_artifact_is_used(strata, signed, tmp_path):
    p = strata("--config", signed_config(tmp_path, signed.other_pub, signed.pub), "--json",
               "pull", signed.ref)
    o = one_json(p)
    assert o["index_sources"] == ["artifact"], (o, p.stderr)
    assert o["signer"] == signed.push["signer"], o


def signed_pull_falls_back(strata, cfg, ref, why):
    p = strata("--config", cfg, "--json", "pull", ref)
    o = one_json(p)
    assert o["index_sources"] == ["build"], (o, p.stderr)
    lines = [l for l in p.stderr.splitlines() if "not signed by a trusted key" in l]
    assert len(lines) == 1 and why in lines[0], p.stderr
    note("fallback: %s" % lines[0])


def test_signed_wrong_key_falls_back(strata, signed, tmp_path):
    signed_pull_falls_back(strata, signed_config(tmp_path, signed.other_pub), signed.ref,
                           "no trusted key verifies the signature")


def test_signed_unsigned_artifact_falls_back(strata, signed, tmp_path):
    signed_pull_falls_back(strata, signed_config(tmp_path, signed.pub), signed.mirror_ref,
                           "no signature")


def test_signed_for_another_repository_falls_back(strata, signed, trust_registry, tmp_path):
    """A valid signature of the same artifact digest, copied from signed/app: it names signed/app,
    not this repository."""
    dst = Repo(trust_registry, "copy/app")
    blob, diff, _ = tar_gz({"srv/app.conf": (b"signed=1\n", 0o644)})
    dst.image("1", [(blob, diff)])
    Strata(strata.binary, new_store(tmp_path, "copier"))("index", "--push", dst.ref("1"))
    signed.copy_signature(dst)
    signed_pull_falls_back(strata, signed_config(tmp_path, signed.pub), dst.ref("1"),
                           "names repository")


def test_signed_for_another_digest_falls_back(strata, signed, attack, trust_registry, tmp_path):
    """The signature of signed/app's artifact stored under the tag of another artifact: its
    payload names the other digest."""
    evil = Repo(trust_registry, "evil/app")
    art = one_json(strata("--json", "pull", attack.evil_ref,
                          store=new_store(tmp_path, "look")))["artifact"]
    # copy the signed payload (for signed/app's artifact) into evil/app under art's tag
    m = signed.repo.get_manifest(signed.sig_tag())
    for d in [m["config"]] + m["layers"]:
        evil.blob(signed.repo.get_blob(d["digest"]))
    evil.manifest(signed.sig_tag(art), m)
    store2 = new_store(tmp_path, "fresh")
    p = strata("--config", signed_config(tmp_path, signed.pub), "--json", "pull",
               attack.evil_ref, store=store2)
    o = one_json(p)
    assert o["index_sources"] == ["build", "build"], (o, p.stderr)
    assert "not signed by a trusted key" in p.stderr and \
        "the signature is for %s" % signed.artifact in p.stderr, p.stderr


# ----------------------------------------------------------------------------------------------
# quarantine: a layer that becomes fully local is checked against its blob
# ----------------------------------------------------------------------------------------------

def quarantined(strata):
    return strata.stats()["quarantined_layers"]


def assert_reads_eio(m, path):
    def read():
        try:
            with open(path, "rb") as f:
                f.read()
        except OSError as e:
            return e.errno
        return 0
    assert bounded(m, read, "read(%s)" % path) == errno.EIO


def test_pin_quarantines_a_lying_index(strata, mount, attack, x_tree):
    strata("pull", attack.evil_ref)
    assert quarantined(strata) == 0
    p = strata("pin", attack.evil_ref, check=False)
    assert p.returncode == 1 and "quarantined" in p.stderr, p.stderr
    note("pin: %s" % p.stderr.strip().splitlines()[-1])
    assert quarantined(strata) == 1
    m = mount()
    assert_reads_eio(m, os.path.join(m.layer(attack.x), "bin/tool"))
    assert quarantined(strata) == 1  # counted once
    # pulling again (any image that lists X) replaces the record with a verified build
    o = one_json(strata("--json", "pull", attack.evil_ref))
    assert o["index_sources"][0] in ("build", "stream"), o
    layer = m.layer(attack.x)
    assert bounded(m, lambda: os.path.isdir(layer), "isdir(%s)" % layer)
    x_tree.compare(layer, dir_mtime=False)
    assert quarantined(strata) == 0


def test_background_quarantines_a_lying_index(strata, mount, attack):
    strata("pull", attack.evil_ref)
    m = mount(args=("--background",))
    deadline = time.monotonic() + 60
    while quarantined(strata) == 0:
        assert time.monotonic() < deadline, m.stderr()[-3000:]
        time.sleep(0.5)
    assert_reads_eio(m, os.path.join(m.layer(attack.x), "bin/tool"))
    time.sleep(2)  # more background passes: still one line
    lines = [l for l in m.stderr().splitlines() if "quarantined:" in l and attack.x in l]
    assert len(lines) == 1, m.stderr()[-3000:]
    note("daemon: %s" % lines[0])


def test_pin_verifies_an_honest_artifact(strata, signed, x_tree):
    o = one_json(strata("--json", "pull", signed.ref))
    assert o["index_sources"] == ["artifact"], o
    strata("pin", signed.ref)
    assert quarantined(strata) == 0
    s = strata.stats()
    assert s["local_bytes"] == s["content_bytes"] > 0, s


def test_pending_claims_are_checked_each(strata, mount, attack, trust_registry, x_tree):
    """An image whose config lies about X's diff_id registers X as pending first (its stream
    fails); the victim's later claim is streamed and checked on its own: no first pull wins."""
    liar = Repo(trust_registry, "liar/app")
    liar.image("1", [(attack.x_blob, attack.y_diff)])
    m = mount()
    o = one_json(strata("--json", "pull", liar.ref("1")))
    assert o["index_sources"] == ["stream"], o
    deadline = time.monotonic() + 30
    while "does not match the image config's diff_id" not in m.stderr():
        assert time.monotonic() < deadline, m.stderr()[-3000:]
        time.sleep(0.2)
    o = one_json(strata("--json", "pull", attack.victim_ref))
    assert o["index_sources"] == ["stream"], o
    layer = m.layer(attack.x)
    deadline = time.monotonic() + 60

    def isdir():
        try:
            return os.path.isdir(layer)
        except OSError:
            return False
    while not bounded(m, isdir, "isdir(%s)" % layer):
        assert time.monotonic() < deadline, m.stderr()[-3000:]
        time.sleep(0.5)
    x_tree.compare(layer, dir_mtime=False)

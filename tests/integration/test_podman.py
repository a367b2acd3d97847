# SPDX-License-Identifier: Apache-2.0
"""MNT/store: the podman / CRI-O additional layer store (containers/storage
`additionallayerstores = ["MNT/store:ref"]`).

First the layout itself, from an empty store, lookup-driven: MNT/store/<base64 ref>/<digest>/ with
diff/ (the layer tree), info (the JSON containers/storage reads; diff-digest is mandatory) and blob
(the compressed layer, its digest checked); tag and digest references; unknown references ENOENT
quickly. Then the real podman (Debian's 4.3.1, runc, an isolated root/runroot under the test's tmp
dir, registries.conf marking the loopback registry insecure, the ulimit flags podman needs in this
sandbox): `podman run` prints the program's output with no whole-layer download in the registry's
log (nginx in front of it), a second run reuses the layers, `podman rmi` leaves strata consistent
(`strata fsck` clean); for an image with an index artifact and for an eStargz image."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness.fs import bounded
from harness.nginx import not_ranged, request_context
from harness.registry import Registry
from harness.strata import Mount, Strata, new_store
from harness.timeouts import INDEX_TIMEOUT

DEMO_IMAGE = "demo:latest"
PODMAN_TIMEOUT = 180


def b64(ref):
    return base64.b64encode(ref.encode()).decode()


def layer_path(m, ref, digest, *rest):
    return os.path.join(m.mnt, "store", b64(ref), digest, *rest)


class Env:
    pass


@pytest.fixture(scope="module")
def env(strata_bin, fixtures, nginx_proxy, tmp_path_factory):
    """A registry of its own with the fixture images and an index artifact of demo:latest, nginx
    in front of it, and a strata mount of an empty store."""
    base = tmp_path_factory.mktemp("podman")
    e = Env()
    e.base, e.fixtures, e.strata_bin = base, fixtures, strata_bin
    e.registry = Registry(base / "registry")
    e.registry.start()
    e.mount = None
    try:
        e.registry.push_indexed(fixtures.layout, DEMO_IMAGE, Strata(strata_bin,
                                                                    new_store(base, "index")))
        e.nginx = nginx_proxy(e.registry)
        e.run = Strata(strata_bin, new_store(base, "als"))
        e.mount = Mount(strata_bin, e.run.store, base / "mnt", base / "daemon.log")
        e.mount.start()
        yield e
    finally:
        if e.mount:
            e.mount.cleanup()
        e.registry.stop()


def test_layout_from_an_empty_store(env):
    fx, m = env.fixtures, env.mount
    ref = env.nginx.ref(DEMO_IMAGE)
    env.nginx.clear()
    img = fx.image(DEMO_IMAGE)
    for layer in img["layers"]:
        d = layer["digest"]
        for name in ("diff", "info", "blob"):
            assert bounded(m, lambda: os.path.exists(layer_path(m, ref, d, name)),
                           "stat " + name, 120), layer_path(m, ref, d, name)
        info = json.loads(open(layer_path(m, ref, d, "info")).read())
        assert info["compressed-diff-digest"] == d
        assert info["compressed-size"] == layer["size"]
        assert info["diff-digest"] == layer["diff_id"]
        assert info["compression"] == 2
        assert info["diff-size"] > 0
        # diff/ is the layer's tree, as layers/<digest> shows it
        assert sorted(os.listdir(layer_path(m, ref, d, "diff"))) == \
            sorted(os.listdir(m.layer(d)))
        assert os.lstat(layer_path(m, ref, d, "blob")).st_size == layer["size"]
    reqs = env.nginx.requests()
    layer_gets = [r for r in env.nginx.blob_requests(None, reqs, method="GET")
                  if r["uri"].rsplit("/", 1)[-1] in fx.layer_digests(DEMO_IMAGE)]
    assert not not_ranged(layer_gets), "whole-blob GETs:\n" + request_context(reqs, m)
    # the ref is registered as a pull registers it
    assert ref in [i["ref"] for i in env.run.ls()]


def test_blob_is_the_compressed_layer(env):
    fx, m = env.fixtures, env.mount
    ref = env.nginx.ref(DEMO_IMAGE)
    d = fx.image(DEMO_IMAGE)["layers"][-1]["digest"]
    with open(layer_path(m, ref, d, "blob"), "rb") as f:
        data = f.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == d


def test_digest_reference(env):
    fx, m = env.fixtures, env.mount
    ref = "%s@%s" % (env.nginx.ref(DEMO_IMAGE).rsplit(":", 1)[0], fx.image(DEMO_IMAGE)["digest"])
    d = fx.image(DEMO_IMAGE)["layers"][0]["digest"]
    assert bounded(m, lambda: os.path.isdir(layer_path(m, ref, d, "diff")), "stat", 120)


def test_unknown_refs_are_enoent_quickly(env):
    m = env.mount
    for ref in (env.nginx.ref("no-such-image:latest"), "127.0.0.1:1/nothing:here"):
        for _ in range(2):
            t0 = time.monotonic()
            assert not os.path.exists(os.path.join(m.mnt, "store", b64(ref)))
            assert time.monotonic() - t0 < 5, ref
    assert not os.path.exists(os.path.join(m.mnt, "store", "not base64!"))
    good = env.nginx.ref(DEMO_IMAGE)
    assert not os.path.exists(layer_path(m, good, "sha256:" + "0" * 64))
    d = env.fixtures.image(DEMO_IMAGE)["layers"][0]["digest"]
    assert not os.path.exists(layer_path(m, good, d, "other"))


# ----------------------------------------------------------------------------------------------
# the real podman
# ----------------------------------------------------------------------------------------------

class Podman:
    """podman with its own root, runroot and configuration under base: overlay storage with
    MNT/store as an additional layer store, runc, cgroupfs, no network; the registries in
    `insecure` plain HTTP."""

    def __init__(self, base, mnt, insecure):
        self.base = base
        # podman refuses a runroot of 50 characters or more
        self.root, self.runroot = base / "root", Path(tempfile.mkdtemp(prefix="strata-pr-"))
        base.mkdir(parents=True, exist_ok=True)
        (base / "storage.conf").write_text(
            '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n'
            '[storage.options]\nadditionallayerstores = ["%s/store:ref"]\n'
            % (self.root, self.runroot, mnt))
        (base / "registries.conf").write_text(
            "".join('[[registry]]\nlocation = "%s"\ninsecure = true\n' % h for h in insecure))
        (base / "containers.conf").write_text(
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            'events_logfile_path = "%s/events.log"\n[containers]\nnetns = "none"\n' % base)
        self.env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(base / "storage.conf"),
                        CONTAINERS_REGISTRIES_CONF=str(base / "registries.conf"),
                        CONTAINERS_CONF=str(base / "containers.conf"))

    def __call__(self, *args, check=True, timeout=PODMAN_TIMEOUT):
        # (root and runroot come from storage.conf: with --root/--runroot on the command line,
        # podman 4.3 drops the storage.conf options, the additional layer store among them)
        p = subprocess.run(["podman"] + [str(a) for a in args], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, errors="replace", timeout=timeout, env=self.env)
        if check:
            assert p.returncode == 0, "podman %s: exit %d\n%s" % (" ".join(map(str, args)),
                                                                   p.returncode, p.stderr[-3000:])
        return p

    def run(self, ref, *cmd):
        return self("run", "--rm", "--network=none", "--ulimit", "nofile=1024:1024", "--ulimit",
                    "nproc=1024:1024", ref, *cmd)

    def cleanup(self):
        try:
            self("rmi", "-a", "-f", check=False, timeout=60)
        except subprocess.TimeoutExpired:
            pass
        # overlay mounts podman left under its root
        for target in sorted(subprocess.run(["findmnt", "-rn", "-o", "TARGET"],
                                            capture_output=True, text=True).stdout.split(),
                             reverse=True):
            if target.startswith((str(self.base), str(self.runroot))):
                subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def podman(env, tmp_path):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (tools/install-deps.sh installs it)", pytrace=False)
    p = Podman(tmp_path / "podman", env.mount.mnt, [env.nginx.host, env.registry.host])
    try:
        yield p
    finally:
        p.cleanup()


def layer_gets(env, reqs, digests):
    return [r for r in env.nginx.blob_requests(None, reqs, method="GET")
            if r["uri"].rsplit("/", 1)[-1] in digests]


def run_twice(env, podman, ref, digests, cmd, want):
    """podman run twice: the output, no whole-layer GET, the second run without any layer
    request; then rmi and a clean fsck."""
    m = env.mount
    env.nginx.clear()
    p = bounded(m, lambda: podman.run(ref, *cmd), "podman run", PODMAN_TIMEOUT + 30)
    assert p.stdout == want, p.stderr
    reqs = env.nginx.requests()
    gets = layer_gets(env, reqs, digests)
    assert gets, "no layer bytes fetched: not served by strata?\n" + request_context(reqs, m)
    assert not not_ranged(gets), "whole-layer GETs:\n" + request_context(reqs, m)
    env.nginx.clear()
    p = bounded(m, lambda: podman.run(ref, *cmd), "podman run", PODMAN_TIMEOUT + 30)
    assert p.stdout == want, p.stderr
    reqs = env.nginx.requests()
    assert not layer_gets(env, reqs, digests), "the second run fetched layers again:\n" + \
        request_context(reqs, m)
    podman("rmi", ref)
    f = env.run("fsck", check=False)
    assert f.returncode == 0, "fsck after podman rmi: %s%s" % (f.stdout, f.stderr)


def test_podman_run_with_index_artifact(env, podman):
    fx = env.fixtures
    run_twice(env, podman, env.nginx.ref(DEMO_IMAGE), fx.layer_digests(DEMO_IMAGE),
              fx.paths["demo_cmd"], fx.paths["demo_hello_text"])


ESGZ_IMAGE = "demo-esgz:latest"


@pytest.fixture(scope="module")
def esgz_digests(env, containerd):
    """demo:latest converted to eStargz by ctr-remote (--oci: the TOC digests annotated) and
    pushed to the module's registry: its layer digests."""
    src, dst = env.registry.ref(DEMO_IMAGE), env.registry.ref(ESGZ_IMAGE)
    containerd.ctr("images", "pull", "--plain-http", src)
    containerd.ctr("images", "convert", "--estargz", "--oci", src, dst)
    containerd.ctr("images", "push", "--plain-http", dst)
    with env.registry.get("/v2/demo-esgz/manifests/latest",
                          accept="application/vnd.oci.image.manifest.v1+json") as r:
        manifest = json.loads(r.read())
    return [d["digest"] for d in manifest["layers"]]


def test_podman_run_estargz(env, podman, esgz_digests):
    fx = env.fixtures
    run_twice(env, podman, env.nginx.ref(ESGZ_IMAGE), esgz_digests, fx.paths["demo_cmd"],
              fx.paths["demo_hello_text"])

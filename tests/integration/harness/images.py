# SPDX-License-Identifier: Apache-2.0
"""The test images: mkfixture layouts (built, pushed, described by their fixture.json) and GNU
tar's extraction of their layer blobs, the reference strata's layers are compared with."""

import json
import os
import subprocess
import sys
from pathlib import Path

from . import treecmp
from .timeouts import CMD_TIMEOUT

MKFIXTURE = Path(__file__).resolve().parents[3] / "tools" / "mkfixture.py"
DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-q", "-dc"], "none": ["cat"]}


def run_mkfixture(*args, timeout=300):
    """tools/mkfixture.py ARGS (build, bad, big, dedup, push: see the script)."""
    p = subprocess.run([sys.executable, str(MKFIXTURE)] + [str(a) for a in args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("mkfixture.py %s failed (%d):\n%s%s" % (
            " ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
    return p


class Fixtures:
    """A built and pushed layout: fixture.json data plus paths."""

    def __init__(self, layout, registry):
        self.layout = Path(layout)
        self.registry = registry
        with open(self.layout / "fixture.json") as f:
            self.meta = json.load(f)
        self.layers = self.meta["layers"]
        self.images = {img["ref"]: img for img in self.meta["images"]}
        self.paths = self.meta.get("paths", {})
        self.chunk_size = self.meta["chunk_size"]
        self.host_arch = self.meta["host_arch"]
        self.blobs = {name: self.layout / info["blob"] for name, info in self.layers.items()}

    def image(self, ref):
        return self.images[ref]

    def ref(self, ref):
        """The pullable reference: 127.0.0.1:PORT/corner:oci."""
        return self.registry.ref(ref)

    def blob_path(self, layer):
        """Path of a layer blob, by short name ("base") or digest."""
        if layer in self.layers:
            return self.layout / self.layers[layer]["blob"]
        return self.layout / "blobs" / "sha256" / layer.split(":", 1)[1]

    def layer_by_digest(self, digest):
        for name, info in self.layers.items():
            if info["digest"] == digest:
                return name, info
        raise KeyError(digest)

    def layer_digests(self, ref):
        return [l["digest"] for l in self.images[ref]["layers"]]


class BigFixtures(Fixtures):
    """mkfixture big: big:latest with one gzip layer, pushed to a registry, plus an nginx in front
    of that registry (`nginx`; `ref()` goes through it, `direct_ref()` does not)."""

    def __init__(self, layout, registry, nginx):
        super().__init__(layout, registry)
        self.nginx = nginx
        self.layer = self.layers["big"]
        self.digest = self.layer["digest"]
        self.files = self.paths["files"]
        self.hello_file = self.paths["hello_file"]
        self.hello_text = self.paths["hello_text"]
        self.multi_file = self.paths["multi_file"]
        self.multi_sha256 = self.paths["multi_sha256"]

    def ref(self, ref="big:latest"):
        return self.nginx.ref(ref)

    def direct_ref(self, ref="big:latest"):
        return self.registry.ref(ref)


def extract_blob(blob_path, compression, dest):
    """Extracts a layer blob with GNU tar as root (xattrs, numeric owners, exact permissions).
    Parents without a tar entry are created 0755 (umask 022)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with open(blob_path, "rb") as src:
        dec = subprocess.Popen(DECOMPRESS[compression], stdin=src, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "--xattrs", "--xattrs-include=*", "--numeric-owner",
                              "-p", "-f", "-", "-C", str(dest)], stdin=dec.stdout,
                             capture_output=True, timeout=CMD_TIMEOUT,
                             preexec_fn=lambda: os.umask(0o022))
        dec.stdout.close()
        dec_err = dec.stderr.read()
        dec.stderr.close()
        dec.wait(timeout=CMD_TIMEOUT)
    if dec.returncode != 0 or tar.returncode != 0:
        raise RuntimeError("extracting %s (%s) failed: %s %s" % (
            blob_path, compression, dec_err.decode(errors="replace"),
            tar.stderr.decode(errors="replace")))
    return str(dest)


class LayerTree:
    """A layer's GNU tar extraction (path) and its tar member list (entries), to compare a strata
    layer directory with."""

    def __init__(self, name, info, path, entries):
        self.name, self.info, self.path, self.entries = name, info, path, entries

    @classmethod
    def of_blob(cls, name, info, blob, extract):
        """The LayerTree of a blob, extracted by extract(blob, compression) (conftest `extract`)."""
        return cls(name, info, extract(blob, info["compression"]),
                   treecmp.list_tar_entries(str(blob), info["compression"]))

    def compare(self, strata_dir, **kw):
        treecmp.compare_layer(strata_dir, self.path, tar_entries=self.entries, **kw)

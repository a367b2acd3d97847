#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fixture image generator for strata's integration tests (stdlib only).

Subcommands:
  build --out DIR [--chunk-size N]   the corner-case images (corner:*, demo:latest) as an OCI layout
  demo  --out DIR                    only demo:latest (busybox + /hello.txt) as an OCI layout
  bad   --out DIR                    broken images (bad:*) for error tests, as an OCI layout
  big   --out DIR [--size-mib N]     big:latest, one gzip -1 layer of ~N MiB of incompressible data
                                     with a small text file and a 3 MiB file in the middle (lazy
                                     loading tests), as an OCI layout
  coldstart --out DIR [--data-mib N]
                                     cold:latest for bench/cold-start: the host's python3.11 with
                                     its stdlib and shared libraries (gzip layer), and /app/start.py
                                     (prints "ready") with /data/model.bin, N MiB (default 300) of
                                     random bytes it never reads (gzip -1 layer), as an OCI layout
  dedup --out DIR [--size-mib N]     dedup:gzip, dedup:zstd, dedup:rebuilt: one shared base layer and
                                     the same N MiB of files (default 8) in three top layers that
                                     differ as blobs: gzip -6, zstd, and rebuilt with other mtimes as
                                     gzip -1 (bench/store, test_dedup.py), as an OCI layout
  many  --out DIR [--images N] [--files N]
                                     many:0 .. many:N-1 (default 20 images), one gzip layer each
                                     with N small files (default 20000) in 100 directories, for the
                                     daemon memory figures of bench/store, as an OCI layout
  push  --layout DIR --registry 127.0.0.1:PORT
                                     pushes every tagged image of a layout with a small built-in
                                     registry client (plain HTTP)

Every layout gets a fixture.json next to index.json that describes its images and layers (see
FIXTURE_SCHEMA below). `build` must run as root: the base layer is made by GNU tar from a staging
tree on disk that holds device nodes, foreign owners and security.capability.

The tar writer in this file (TarWriter) is the project's own ustar+PAX writer; the tarfile module is
deliberately not used for writing, so that the fixtures do not depend on Python's tar dialect.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_CHUNK = 1 << 20
BIG_FILE_SIZE = 50 << 20

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_UNKNOWN = "application/vnd.example.unknown"
REF_NAME = "org.opencontainers.image.ref.name"

OCI_LAYER_MT = {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD, "none": MT_OCI_LAYER}
DOCKER_LAYER_MT = {"gzip": MT_DOCKER_LAYER_GZIP, "none": MT_DOCKER_LAYER}

FIXTURE_SCHEMA = """
fixture.json (schema 1):
{
  "schema": 1,
  "kind": "build" | "demo" | "bad" | "big" | "coldstart",
  "chunk_size": int,                 # C; the base layer has files of 0, 1, C-1, C, C+1 bytes
  "host_arch": "amd64", "other_arch": "arm64",
  "layers": {                        # every layer blob of the layout, by short name
    NAME: {"digest": "sha256:..", "size": int, "diff_id": "sha256:..",
           "compression": "gzip" | "zstd" | "none",
           "producer": "gnu-tar-posix" | "gnu-tar-gnu" | "mkfixture-pax" | "raw",
           "blob": "blobs/sha256/<hex>", "description": str}
  },
  "images": [                        # every tag of index.json, in index.json order
    {"ref": "corner:oci", "repository": "corner", "tag": "oci",
     "media_type": <media type of what the tag points at: manifest or index>,
     "digest": <digest of what the tag points at>, "size": int,
     "manifest": <digest of the manifest for the host platform (== digest unless an index)>,
     "manifest_media_type": <media type of that manifest>,
     "platform": "linux/amd64",
     "config": {"digest", "media_type", "size"},
     "layers": [{"name", "digest", "size", "media_type", "compression", "producer", "diff_id"}],
                                     # the host platform's layers, bottom first, as in the manifest
     "manifests": [{"digest", "media_type", "size", "platform", "config", "layers": [...]}],
                                     # only for an index: its entries in order
     "description": str,
     "exercises": str, "expect_error": regex   # only for bad:* images
    }
  ],
  "paths": {...}                     # well-known paths inside the layers used by the tests
}

For kind "big" (one image big:latest, one layer "big": GNU `gzip -1 -n` of a tar written by
TarWriter), "paths" is:
  {"size_mib": N,
   "hello_file": "app/hello.txt", "hello_text": str (exactly 4096 ASCII bytes),
   "multi_file": "app/multi.bin", "multi_size": 3 MiB + 123, "multi_sha256": hex,
   "files": {PATH: {"size": int, "sha256": hex, "tar_offset": int}}}
                                     # every regular file, in archive order: data/a.bin (N/2 MiB),
                                     # app/hello.txt, app/multi.bin, data/b.bin (N/2 MiB);
                                     # tar_offset = offset of its data in the uncompressed tar

For kind "coldstart" (one image cold:latest, layers "cold-runtime" and "cold-app"), "paths" is:
  {"data_mib": N, "cmd": [...], "env": [...], "ready": "ready", "start_file": "app/start.py",
   "model_file": "data/model.bin", "model_size": int, "model_sha256": hex,
   "runtime_files": int, "runtime_bytes": int}
"""

# --------------------------------------------------------------------------------------------
# Tar writer (ustar + PAX)
# --------------------------------------------------------------------------------------------

BLOCK = 512
TYPE_FLAGS = {"file": b"0", "hardlink": b"1", "symlink": b"2", "char": b"3", "block": b"4",
              "dir": b"5", "fifo": b"6"}


def _octal(value, width):
    """A NUL-terminated octal field of `width` bytes, or None when value does not fit."""
    if value < 0 or value >= 8 ** (width - 1):
        return None
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _fmt_mtime(mtime_ns):
    sec, nsec = divmod(mtime_ns, 10 ** 9)
    return "%d.%09d" % (sec, nsec)


def _split_ustar_name(path_b):
    """(prefix, name) for ustar, or None when the path cannot be stored in the ustar fields."""
    if len(path_b) <= 100:
        return b"", path_b
    # split at a '/' so that prefix <= 155 and name <= 100 (name may end with the dir slash)
    for i in range(len(path_b) - 1, 0, -1):
        if path_b[i:i + 1] == b"/" and i <= 155 and len(path_b) - i - 1 <= 100 and i < len(path_b) - 1:
            if len(path_b) - i - 1 == 0:
                continue
            return path_b[:i], path_b[i + 1:]
    return None


class TarWriter:
    """Writes a tar stream: every member as a ustar header, preceded by a PAX 'x' header when needed.

    pax="auto": a PAX header only when ustar cannot represent the member exactly (long or non-ASCII
    names, big ids, nanosecond mtimes, xattrs); pax="always": always, with path, uid, gid, mtime
    (9-digit fraction), size for regular files, linkpath for links; pax="never": plain ustar (the
    caller guarantees everything fits).
    """

    def __init__(self, fileobj):
        self.f = fileobj
        self.members = []  # paths in archive order (for the record)

    def _header(self, name_b, prefix_b, mode, uid, gid, size, mtime, typeflag, linkname_b,
                devmajor=0, devminor=0, uname=b"", gname=b""):
        h = bytearray(BLOCK)

        def put(off, width, data):
            data = data[:width]
            h[off:off + len(data)] = data

        put(0, 100, name_b)
        put(100, 8, _octal(mode, 8) or _octal(0, 8))
        put(108, 8, _octal(uid, 8) or _octal(0, 8))
        put(116, 8, _octal(gid, 8) or _octal(0, 8))
        put(124, 12, _octal(size, 12) or _octal(0, 12))
        put(136, 12, _octal(mtime, 12) or _octal(0, 12))
        put(148, 8, b" " * 8)
        put(156, 1, typeflag)
        put(157, 100, linkname_b)
        put(257, 6, b"ustar\0")
        put(263, 2, b"00")
        put(265, 32, uname)
        put(297, 32, gname)
        put(329, 8, _octal(devmajor, 8) or _octal(0, 8))
        put(337, 8, _octal(devminor, 8) or _octal(0, 8))
        put(345, 155, prefix_b)
        chksum = sum(h)
        h[148:156] = b"%06o\0 " % chksum
        return bytes(h)

    def _write_data(self, data):
        self.f.write(data)
        pad = (-len(data)) % BLOCK
        if pad:
            self.f.write(b"\0" * pad)

    def add(self, path, kind="file", data=b"", mode=None, uid=0, gid=0, mtime_ns=0,
            linkname=None, devmajor=0, devminor=0, xattrs=None, pax="auto", uname="", gname=""):
        if kind not in TYPE_FLAGS:
            raise ValueError("unknown member kind %r" % kind)
        if mode is None:
            mode = {"dir": 0o755, "symlink": 0o777}.get(kind, 0o644)
        if kind == "dir" and not path.endswith("/"):
            path += "/"
        if kind != "file":
            data = b""
        xattrs = xattrs or {}
        path_b = path.encode("utf-8")
        link_b = (linkname or "").encode("utf-8")
        size = len(data)
        mtime_sec = mtime_ns // 10 ** 9

        records = []
        split = _split_ustar_name(path_b)
        need_path = split is None or not path.isascii()
        need_link = len(link_b) > 100 or not (linkname or "").isascii()
        need_uid = _octal(uid, 8) is None
        need_gid = _octal(gid, 8) is None
        need_mtime = mtime_ns % 10 ** 9 != 0 or _octal(mtime_sec, 12) is None
        need_size = _octal(size, 12) is None
        if pax == "never":
            if need_path or need_link or need_uid or need_gid or need_mtime or need_size or xattrs:
                raise ValueError("%s cannot be stored without PAX" % path)
        always = pax == "always"
        if need_path or always:
            records.append(_pax_record("path", path))
        if linkname is not None and (need_link or always):
            records.append(_pax_record("linkpath", linkname))
        if need_uid or always:
            records.append(_pax_record("uid", str(uid)))
        if need_gid or always:
            records.append(_pax_record("gid", str(gid)))
        if need_mtime or always:
            records.append(_pax_record("mtime", _fmt_mtime(mtime_ns)))
        if need_size or (always and kind == "file"):
            records.append(_pax_record("size", str(size)))
        for name in sorted(xattrs):
            records.append(_pax_record("SCHILY.xattr." + name, xattrs[name]))

        if records:
            body = b"".join(records)
            base = path.rstrip("/").rsplit("/", 1)[-1]
            xname = ("PaxHeaders/" + base).encode("ascii", "replace")[:100]
            self.f.write(self._header(xname, b"", 0o644, 0, 0, len(body), max(mtime_sec, 0), b"x", b""))
            self._write_data(body)

        if split is None:
            prefix_b, name_b = b"", path_b[-100:]
        else:
            prefix_b, name_b = split
        self.f.write(self._header(name_b, prefix_b, mode & 0o7777, uid, gid, size, mtime_sec,
                                  TYPE_FLAGS[kind], link_b, devmajor, devminor,
                                  uname.encode(), gname.encode()))
        if kind == "file":
            self._write_data(data)
        self.members.append(path)

    def close(self):
        self.f.write(b"\0" * (2 * BLOCK))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def host_arch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def other_arch():
    return "arm64" if host_arch() != "arm64" else "amd64"


def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def prng_bytes(seed, n):
    return random.Random(seed).randbytes(n)


def mtime(i, frac=None):
    """A deterministic nanosecond mtime (2020-09-13 + i hours) with a non-zero fraction."""
    if frac is None:
        frac = (123456789 * (i + 1)) % 10 ** 9 or 1
    return (1_600_000_000 + i * 3600) * 10 ** 9 + frac


def gzip_bytes(data):
    return gzip.compress(data, compresslevel=6, mtime=0)


def zstd_bytes(data):
    p = subprocess.run(["zstd", "-q", "-3", "-c", "-"], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError("zstd failed: %s" % p.stderr.decode(errors="replace"))
    return p.stdout


def compress(data, compression):
    if compression == "gzip":
        return gzip_bytes(data)
    if compression == "zstd":
        return zstd_bytes(data)
    if compression == "none":
        return data
    raise ValueError(compression)


class Layout:
    """An OCI image layout being written."""

    def __init__(self, out, kind, chunk_size):
        self.out = os.path.abspath(out)
        self.blobdir = os.path.join(self.out, "blobs", "sha256")
        os.makedirs(self.blobdir, exist_ok=True)
        self.index = []      # descriptors of index.json
        self.layers = {}     # name -> info
        self.images = []     # fixture.json image records
        self.meta = {"schema": 1, "kind": kind, "chunk_size": chunk_size, "host_arch": host_arch(),
                     "other_arch": other_arch(), "layers": self.layers, "images": self.images,
                     "paths": {}}

    def put_blob(self, data):
        hexd = sha256_hex(data)
        p = os.path.join(self.blobdir, hexd)
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.rename(p + ".tmp", p)
        return "sha256:" + hexd, len(data)

    def add_layer(self, name, tar_bytes, compression, producer, description, blob=None):
        """Stores a layer blob (tar_bytes compressed, or `blob` as given) and records it."""
        if blob is None:
            blob = compress(tar_bytes, compression)
        digest, size = self.put_blob(blob)
        self.layers[name] = {"digest": digest, "size": size,
                             "diff_id": "sha256:" + sha256_hex(tar_bytes),
                             "compression": compression, "producer": producer,
                             "blob": "blobs/sha256/" + digest[7:], "description": description}
        return self.layers[name]

    def put_json(self, obj):
        data = json.dumps(obj, indent=2, sort_keys=False).encode() + b"\n"
        digest, size = self.put_blob(data)
        return digest, size

    def make_config(self, layer_names, arch, docker=False, cmd=None, diff_ids=None):
        cfg = {
            "created": "2020-09-13T12:26:40Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "WorkingDir": "/"},
            "rootfs": {"type": "layers",
                       "diff_ids": diff_ids or [self.layers[n]["diff_id"] for n in layer_names]},
            "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "mkfixture.py layer " + n}
                        for n in layer_names],
        }
        if cmd:
            cfg["config"]["Cmd"] = cmd
        digest, size = self.put_json(cfg)
        return {"mediaType": MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG, "digest": digest, "size": size}

    def make_manifest(self, layer_names, arch, docker=False, cmd=None, overrides=None):
        """Writes config + manifest blobs; returns (descriptor, record). overrides: per-layer dicts
        {index: {"mediaType":..., "size":...}} to build broken manifests."""
        overrides = overrides or {}
        config = self.make_config(layer_names, arch, docker=docker, cmd=cmd)
        layer_descs, layer_recs = [], []
        for i, n in enumerate(layer_names):
            info = self.layers[n]
            comp = info["compression"]
            mt = (DOCKER_LAYER_MT if docker else OCI_LAYER_MT)[comp]
            d = {"mediaType": mt, "digest": info["digest"], "size": info["size"]}
            d.update(overrides.get(i, {}))
            layer_descs.append(d)
            layer_recs.append({"name": n, "digest": d["digest"], "size": d["size"],
                               "media_type": d["mediaType"], "compression": comp,
                               "producer": info["producer"], "diff_id": info["diff_id"]})
        mt = MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST
        manifest = {"schemaVersion": 2, "mediaType": mt, "config": config, "layers": layer_descs}
        digest, size = self.put_json(manifest)
        desc = {"mediaType": mt, "digest": digest, "size": size}
        rec = {"digest": digest, "media_type": mt, "size": size, "platform": "linux/" + arch,
               "config": {"digest": config["digest"], "media_type": config["mediaType"],
                          "size": config["size"]},
               "layers": layer_recs}
        return desc, rec

    def make_index(self, entries):
        """entries: list of (descriptor, record); returns (descriptor, index JSON)."""
        manifests = []
        for desc, rec in entries:
            d = dict(desc)
            os_, arch = rec["platform"].split("/", 1)
            d["platform"] = {"architecture": arch, "os": os_}
            manifests.append(d)
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}
        digest, size = self.put_json(index)
        return {"mediaType": MT_OCI_INDEX, "digest": digest, "size": size}

    def tag(self, ref, desc, rec, description, index_entries=None, **extra):
        repo, tag = ref.split(":", 1)
        d = dict(desc)
        d["annotations"] = {REF_NAME: ref}
        self.index.append(d)
        image = {"ref": ref, "repository": repo, "tag": tag, "media_type": desc["mediaType"],
                 "digest": desc["digest"], "size": desc["size"], "manifest": rec["digest"],
                 "manifest_media_type": rec["media_type"], "platform": rec["platform"],
                 "config": rec["config"], "layers": rec["layers"], "description": description}
        if index_entries is not None:
            image["manifests"] = [r for _, r in index_entries]
        image.update(extra)
        self.images.append(image)
        return image

    def finish(self):
        with open(os.path.join(self.out, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(self.out, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self.index}, f,
                      indent=2)
        with open(os.path.join(self.out, "fixture.json"), "w") as f:
            json.dump(self.meta, f, indent=2, ensure_ascii=False)
            f.write("\n")


# --------------------------------------------------------------------------------------------
# layer 1: base, GNU tar --format=posix from a staging tree
# --------------------------------------------------------------------------------------------

CAP_NET_BIND_SERVICE_V2 = bytes([0x01, 0x00, 0x00, 0x02,   # VFS_CAP_REVISION_2 | EFFECTIVE
                                 0x00, 0x04, 0x00, 0x00,   # permitted[0]: 1 << 10
                                 0x00, 0x00, 0x00, 0x00,   # inheritable[0]
                                 0x00, 0x00, 0x00, 0x00,   # permitted[1]
                                 0x00, 0x00, 0x00, 0x00])  # inheritable[1]

UNICODE_NAME = "héllo-wörld-日本.txt"
LONG_COMPONENT = "L" * 251 + ".txt"  # 255 bytes: NAME_MAX
DEEP_DIR = "deep/" + "d" * 60 + "/" + "e" * 60
DEEP_FILE = DEEP_DIR + "/file-with-a-rather-long-name-" + "x" * 40 + ".txt"


class Stager:
    """Builds a tree on disk with exact metadata (as root). Directory mtimes are set at the end."""

    def __init__(self, root):
        self.root = root
        self.dirs = []

    def p(self, rel):
        return os.path.join(self.root, rel)

    def _meta(self, path, mode, uid, gid, xattrs, mtime_ns, symlink=False):
        os.lchown(path, uid, gid)
        if not symlink:
            os.chmod(path, mode)
        for k, v in (xattrs or {}).items():
            os.setxattr(path, k, v, follow_symlinks=False)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def dir(self, rel, mode=0o755, uid=0, gid=0, mtime_ns=None, xattrs=None):
        path = self.p(rel)
        os.makedirs(path, exist_ok=True)
        self.dirs.append((rel, mode, uid, gid, xattrs, mtime_ns))

    def file(self, rel, data, mode=0o644, uid=0, gid=0, mtime_ns=None, xattrs=None):
        path = self.p(rel)
        with open(path, "wb") as f:
            f.write(data)
        self._meta(path, mode, uid, gid, xattrs, mtime_ns)

    def symlink(self, rel, target, uid=0, gid=0, mtime_ns=None):
        path = self.p(rel)
        os.symlink(target, path)
        self._meta(path, 0, uid, gid, None, mtime_ns, symlink=True)

    def hardlink(self, rel, target_rel):
        os.link(self.p(target_rel), self.p(rel))

    def node(self, rel, kind, major=0, minor=0, mode=0o644, uid=0, gid=0, mtime_ns=None):
        fmt = {"char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}[kind]
        os.mknod(self.p(rel), fmt | mode, os.makedev(major, minor))
        self._meta(self.p(rel), mode, uid, gid, None, mtime_ns)

    def finish(self):
        # deepest first, so that setting a child's mtime does not disturb its parent's
        for rel, mode, uid, gid, xattrs, mtime_ns in sorted(self.dirs, key=lambda d: -d[0].count("/")):
            self._meta(self.p(rel), mode, uid, gid, xattrs, mtime_ns)


def stage_base(root, chunk):
    s = Stager(root)
    n = iter(range(1000))

    s.dir("files", mtime_ns=mtime(next(n)))
    s.file("files/empty", b"", mtime_ns=mtime(next(n)))
    s.file("files/one", b"1", mtime_ns=mtime(next(n)))
    s.file("files/size-C-minus-1", prng_bytes(11, chunk - 1), mtime_ns=mtime(next(n)))
    s.file("files/size-C", prng_bytes(12, chunk), mtime_ns=mtime(next(n)))
    s.file("files/size-C-plus-1", prng_bytes(13, chunk + 1), mtime_ns=mtime(next(n)))
    s.file("files/big-50MiB", prng_bytes(14, BIG_FILE_SIZE), mtime_ns=mtime(next(n)))
    s.file("files/modified.txt", b"original content from the base layer\n", mtime_ns=mtime(next(n)))
    s.file("files/exec.sh", b"#!/bin/sh\necho hi\n", mode=0o755, mtime_ns=mtime(next(n)))
    s.file("files/setuid-bin", b"\x7fELF-not-really", mode=0o4755, mtime_ns=mtime(next(n)))
    s.file("files/setgid-bin", b"setgid", mode=0o2711, mtime_ns=mtime(next(n)))
    s.file("files/readonly", b"read only\n", mode=0o444, mtime_ns=mtime(next(n)))
    s.file("files/no-perms", b"nobody may read\n", mode=0o000, mtime_ns=mtime(next(n)))
    s.file("files/name with spaces & symbols (1).txt", b"spaces\n", mtime_ns=mtime(next(n)))
    s.file("files/whole-second-mtime", b"whole\n", mtime_ns=mtime(next(n), frac=0))
    s.file("files/ns-edge-1", b"one ns\n", mtime_ns=mtime(next(n), frac=1))
    s.file("files/ns-edge-999999999", b"almost a second\n", mtime_ns=mtime(next(n), frac=999999999))

    s.dir("dirs", mtime_ns=mtime(next(n)))
    s.dir("dirs/private", mode=0o700, mtime_ns=mtime(next(n)))
    s.file("dirs/private/secret", b"secret\n", mode=0o600, mtime_ns=mtime(next(n)))
    s.dir("dirs/sticky", mode=0o1777, mtime_ns=mtime(next(n)))
    s.file("dirs/sticky/tmpfile", b"tmp\n", uid=1000, gid=1000, mtime_ns=mtime(next(n)))
    s.dir("dirs/setuid", mode=0o4755, mtime_ns=mtime(next(n)))
    s.dir("dirs/setgid", mode=0o2755, gid=50, mtime_ns=mtime(next(n)))
    s.file("dirs/setgid/inherits", b"g\n", gid=50, mtime_ns=mtime(next(n)))
    s.dir("dirs/empty", mtime_ns=mtime(next(n)))

    s.dir("links", mtime_ns=mtime(next(n)))
    s.symlink("links/relative", "../files/one", mtime_ns=mtime(next(n)))
    s.symlink("links/absolute", "/files/one", mtime_ns=mtime(next(n)))
    s.symlink("links/dangling", "../does/not/exist", mtime_ns=mtime(next(n)))
    s.symlink("links/to-dir", "../dirs", mtime_ns=mtime(next(n)))
    s.symlink("links/loop", "loop", mtime_ns=mtime(next(n)))
    s.symlink("links/owned", "files/one", uid=1000, gid=1001, mtime_ns=mtime(next(n)))

    s.dir("hard", mtime_ns=mtime(next(n)))
    s.dir("hard/sub", mtime_ns=mtime(next(n)))
    s.dir("hard/deep", mtime_ns=mtime(next(n)))
    s.dir("hard/deep/er", mtime_ns=mtime(next(n)))
    s.dir("hard/deep/er/nested", mtime_ns=mtime(next(n)))
    # three names for one inode, across directories (nlink 3)
    s.file("hard/a.txt", b"hard linked content\n", mode=0o640, uid=1000, gid=1000,
           mtime_ns=mtime(next(n)), xattrs={"user.linked": b"shared"})
    s.hardlink("hard/sub/b.txt", "hard/a.txt")
    s.hardlink("hard/sub/c.txt", "hard/a.txt")
    # a shallow name for a file in a deeper directory (archived later: "z" sorts after "deep")
    s.file("hard/deep/er/nested/target.txt", b"deep target\n", mtime_ns=mtime(next(n)))
    s.hardlink("hard/z-link-to-deep", "hard/deep/er/nested/target.txt")

    s.dir("dev", mtime_ns=mtime(next(n)))
    s.node("dev/char", "char", 10, 200, mode=0o620, gid=5, mtime_ns=mtime(next(n)))
    s.node("dev/block", "block", 7, 77, mode=0o660, gid=6, mtime_ns=mtime(next(n)))
    s.node("dev/fifo", "fifo", mode=0o644, mtime_ns=mtime(next(n)))

    s.dir("xattr", mtime_ns=mtime(next(n)))
    s.file("xattr/file", b"has a user xattr\n", mtime_ns=mtime(next(n)),
           xattrs={"user.demo": b"file value"})
    s.dir("xattr/dir", mode=0o750, mtime_ns=mtime(next(n)), xattrs={"user.demo": b"dir value"})
    s.file("xattr/cap-bin", b"\x7fELF-capability", mode=0o755, mtime_ns=mtime(next(n)),
           xattrs={"security.capability": CAP_NET_BIND_SERVICE_V2})
    s.file("xattr/multi", b"several\n", mtime_ns=mtime(next(n)),
           xattrs={"user.a": b"alpha", "user.b": b"beta", "user.bin": b"\x00\x01\x02\xff"})
    # No empty-valued xattr: in PAX an empty record value means "delete the keyword", so GNU tar
    # (restores an empty xattr) and Go's archive/tar (drops it; containerd, umoci) disagree.

    s.dir("deep", mtime_ns=mtime(next(n)))
    s.dir("deep/" + "d" * 60, mtime_ns=mtime(next(n)))
    s.dir(DEEP_DIR, mtime_ns=mtime(next(n)))
    s.file(DEEP_FILE, b"deep and long\n", mtime_ns=mtime(next(n)))
    s.file("deep/" + LONG_COMPONENT, b"255-byte name\n", mtime_ns=mtime(next(n)))

    s.dir("unicode", mtime_ns=mtime(next(n)))
    s.file("unicode/" + UNICODE_NAME, "unicode content ✓\n".encode(), mtime_ns=mtime(next(n)))
    s.dir("unicode/ディレクトリ", mtime_ns=mtime(next(n)))
    s.file("unicode/ディレクトリ/ファイル.txt", b"nihongo\n", mtime_ns=mtime(next(n)))
    s.symlink("unicode/link-ü", UNICODE_NAME, mtime_ns=mtime(next(n)))

    s.dir("owners", mtime_ns=mtime(next(n)))
    s.file("owners/big-ids", b"uid 100000 gid 200000\n", uid=100000, gid=200000,
           mtime_ns=mtime(next(n)))
    s.file("owners/nobody", b"nobody\n", uid=65534, gid=65534, mtime_ns=mtime(next(n)))
    s.dir("owners/dir-big", mode=0o750, uid=100000, gid=200000, mtime_ns=mtime(next(n)))
    s.file("owners/dir-big/inside", b"in\n", uid=100001, gid=200001, mtime_ns=mtime(next(n)))

    # deleted / replaced by the upper layer
    s.dir("victims", mtime_ns=mtime(next(n)))
    s.file("victims/gone-file", b"whited out by the upper layer\n", mtime_ns=mtime(next(n)))
    s.dir("victims/gone-dir", mtime_ns=mtime(next(n)))
    s.file("victims/gone-dir/inner.txt", b"inner\n", mtime_ns=mtime(next(n)))
    s.dir("victims/gone-dir/sub", mtime_ns=mtime(next(n)))
    s.file("victims/gone-dir/sub/x", b"x\n", mtime_ns=mtime(next(n)))
    s.file("victims/kept.txt", b"kept\n", mtime_ns=mtime(next(n)))
    s.dir("opaque", mtime_ns=mtime(next(n)))
    s.file("opaque/old1.txt", b"hidden by the opaque dir\n", mtime_ns=mtime(next(n)))
    s.file("opaque/keep-name.txt", b"old content\n", mtime_ns=mtime(next(n)))
    s.dir("opaque/sub", mtime_ns=mtime(next(n)))
    s.file("opaque/sub/old2.txt", b"hidden too\n", mtime_ns=mtime(next(n)))
    s.finish()
    return sorted(os.listdir(root))


def gnu_tar_create(root, names, fmt):
    args = ["tar", "--format=" + fmt, "--numeric-owner", "--sort=name", "-C", root, "-cf", "-"]
    if fmt == "posix":
        args[1:1] = ["--xattrs", "--xattrs-include=*",
                     "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]
    p = subprocess.run(args + ["--"] + names, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, LC_ALL="C.UTF-8"))
    if p.returncode != 0:
        raise RuntimeError("tar failed: %s" % p.stderr.decode(errors="replace"))
    return p.stdout


# --------------------------------------------------------------------------------------------
# layer 2: GNU tar --format=gnu
# --------------------------------------------------------------------------------------------

GNU_LONG_NAME = "gnu/" + "long-gnu-name-" + "g" * 120 + ".txt"
GNU_LONG_TARGET = "../" + "t" * 60 + "/" + "u" * 60 + "/missing-target"


def stage_gnu(root):
    s = Stager(root)
    sec = lambda i: mtime(200 + i, frac=0)  # GNU format stores whole seconds
    s.dir("gnu", mtime_ns=sec(0))
    s.dir("gnu/private", mode=0o700, mtime_ns=sec(1))
    s.file("gnu/private/secret.txt", b"gnu secret\n", mode=0o600, mtime_ns=sec(2))
    s.file(GNU_LONG_NAME, b"a GNU long name (././@LongLink 'L')\n", mtime_ns=sec(3))
    s.dir("gnu/" + "m" * 90, mtime_ns=sec(4))
    s.file("gnu/" + "m" * 90 + "/" + "n" * 90 + ".bin", prng_bytes(21, 70000), mtime_ns=sec(5))
    s.symlink("gnu/long-symlink", GNU_LONG_TARGET, mtime_ns=sec(6))
    s.file("gnu/a.txt", b"plain a\n", mtime_ns=sec(7))
    s.file("gnu/b.bin", prng_bytes(22, 4096 * 3 + 17), mode=0o600, mtime_ns=sec(8))
    s.file("gnu/big-uid", b"base-256 uid\n", uid=3000000, gid=3000001, mtime_ns=sec(9))
    # a hard link whose target name is > 100 bytes (GNU 'K' record); "z" sorts after "long-gnu"
    s.hardlink("gnu/zz-hardlink-to-long-name", GNU_LONG_NAME)
    s.finish()
    return ["gnu"]


# --------------------------------------------------------------------------------------------
# layer 3: own PAX writer, zstd
# --------------------------------------------------------------------------------------------

PAX_LONG_PATH = "pax/" + "p" * 120 + "/" + "q" * 120 + ".txt"
PAX_PREFIX_PATH = "pax/" + "s" * 100 + "/file-in-prefix-split.txt"
PAX_LONG_TARGET = "/" + "/".join(["w" * 50] * 4) + "/target"
BIG_UID, BIG_GID = 4000000000, 4000000001


def build_pax_layer():
    buf = io.BytesIO()
    w = TarWriter(buf)
    m = lambda i, frac=None: mtime(300 + i, frac)
    # no entries for implicit/, implicit/a, implicit/a/b
    w.add("implicit/a/b/file.txt", data=b"parents are implicit\n", mtime_ns=m(0), pax="always")
    w.add("dup", "dir", mode=0o755, mtime_ns=m(1), pax="always")
    w.add("dup/file.txt", data=b"first version\n", mode=0o600, mtime_ns=m(2), pax="always")
    w.add("dup/file.txt", data=b"second version, which wins\n", mode=0o640, mtime_ns=m(19),
          pax="always")
    w.add("dup.txt", data=b"first version of a root file\n", mode=0o600, mtime_ns=m(21))
    w.add("pax", "dir", mode=0o755, mtime_ns=m(3), pax="always")
    w.add("pax/ns-mtime-small", data=b"1 ns\n", mtime_ns=m(4, frac=1), pax="always")
    w.add("pax/ns-mtime-large", data=b"999999999 ns\n", mtime_ns=m(5, frac=999999999), pax="always")
    w.add("pax/xattrs.txt", data=b"xattrs via SCHILY.xattr\n", mtime_ns=m(6), pax="always",
          xattrs={"user.one": b"1", "user.binary": b"\x00\x01\xfe\xff",
                  "user.utf8": "ünïcödé".encode(), "user.long": b"v" * 1000})
    w.add("pax/xdir", "dir", mode=0o750, mtime_ns=m(7), xattrs={"user.dirattr": b"on a dir"})
    w.add("pax/bigids.txt", data=b"uid/gid above 2^31\n", uid=BIG_UID, gid=BIG_GID, mtime_ns=m(8),
          pax="always")
    w.add(PAX_LONG_PATH, data=b"long name via the PAX path record\n", mtime_ns=m(9))
    w.add(PAX_PREFIX_PATH, data=b"ustar prefix/name split, no PAX\n", mtime_ns=m(10, frac=0),
          pax="never")
    w.add("pax/ustar-only.txt", data=b"plain ustar\n", mode=0o640, uid=12, gid=34,
          mtime_ns=m(11, frac=0), pax="never")
    w.add("pax/long-symlink", "symlink", linkname=PAX_LONG_TARGET, mtime_ns=m(12))
    # a symlink whose header says 0644: Linux shows every symlink as 0777 (tar extraction too)
    w.add("pax/odd-mode-symlink", "symlink", linkname="xattrs.txt", mode=0o644, mtime_ns=m(20))
    w.add("pax/fifo", "fifo", mode=0o600, mtime_ns=m(13))
    w.add("pax/chr", "char", mode=0o600, devmajor=1, devminor=7, mtime_ns=m(14))
    w.add("pax/" + UNICODE_NAME, data="pax utf-8 name\n".encode(), mtime_ns=m(15))
    w.add("hl", "dir", mode=0o755, mtime_ns=m(16), pax="always")
    w.add("hl/target.txt", data=b"target of a hard link\n", mode=0o644, mtime_ns=m(17), pax="always")
    w.add("hl/link.txt", "hardlink", linkname="hl/target.txt", mode=0o644, mtime_ns=m(17),
          pax="always")
    w.add("big/random.bin", data=prng_bytes(31, 3 * 1024 * 1024 + 12345), mtime_ns=m(18))
    # the same path again, far from the first: the later member wins. (At the root, because
    # GNU tar, the reference, would give the parent dir the extraction time as mtime.)
    w.add("dup.txt", data=b"the root file, second version\n", mode=0o644, uid=7, gid=8,
          mtime_ns=m(22))
    w.close()
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# layer 4: own PAX writer, gzip, whiteouts on top of the base layer
# --------------------------------------------------------------------------------------------

def build_upper_layer():
    buf = io.BytesIO()
    w = TarWriter(buf)
    m = lambda i, frac=None: mtime(400 + i, frac)
    w.add("files", "dir", mode=0o755, mtime_ns=m(0))
    w.add("files/modified.txt", data=b"modified by the upper layer\n", mode=0o600, uid=1000,
          gid=1000, mtime_ns=m(1))
    w.add("new-in-upper.txt", data=b"new in the upper layer\n", mtime_ns=m(2))
    w.add("opaque", "dir", mode=0o755, mtime_ns=m(3))
    w.add("opaque/.wh..wh..opq", data=b"", mode=0o644, mtime_ns=m(4))
    w.add("opaque/keep-name.txt", data=b"new content in the opaque dir\n", mtime_ns=m(5))
    w.add("opaque/new.txt", data=b"new\n", mtime_ns=m(6))
    w.add("upper-only", "dir", mode=0o711, mtime_ns=m(7))
    w.add("upper-only/file", data=b"upper only\n", mtime_ns=m(8))
    w.add("victims", "dir", mode=0o755, mtime_ns=m(9))
    w.add("victims/.wh.gone-dir", data=b"", mode=0o644, mtime_ns=m(10))
    w.add("victims/.wh.gone-file", data=b"", mode=0o644, mtime_ns=m(11))
    w.close()
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# merge:gzip, for the merged rootfs view: base, upper, then three layers that replace by type,
# white out directories, make a directory opaque and break up hard links
# --------------------------------------------------------------------------------------------

def build_merge_layers():
    """[(name, tar bytes, description)] of the three layers of merge:gzip over base and upper."""
    out = []
    m = lambda i: mtime(700 + i, frac=(i * 7919) % 10 ** 9)
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add("swap", data=b"a file that becomes a directory\n", mtime_ns=m(0))
    w.add("swapdir", "dir", mode=0o750, mtime_ns=m(1))
    w.add("swapdir/inner.txt", data=b"in a directory that becomes a file\n", mtime_ns=m(2))
    w.add("links", "dir", mode=0o755, mtime_ns=m(3))
    w.add("links/a", data=b"three names, one inode\n", mode=0o640, uid=5, gid=6, mtime_ns=m(4))
    w.add("links/b", "hardlink", linkname="links/a", mtime_ns=m(4))
    w.add("links/c", "hardlink", linkname="links/a", mtime_ns=m(4))
    w.add("wd", "dir", mode=0o755, mtime_ns=m(5))
    w.add("wd/sub", "dir", mode=0o700, mtime_ns=m(6))
    w.add("wd/sub/deep.txt", data=b"whited out with its directory\n", mtime_ns=m(7))
    w.add("op", "dir", mode=0o755, mtime_ns=m(8))
    w.add("op/old1", data=b"hidden by the opaque dir\n", mtime_ns=m(9))
    w.add("op/old2", data=b"hidden too\n", mtime_ns=m(10))
    w.add("files", "dir", mode=0o755, mtime_ns=m(11))
    w.add("files/xattr-dir-kept", "dir", mode=0o755, mtime_ns=m(12),
          xattrs={"user.merge": b"lower"})
    w.close()
    out.append(("merge-a", buf.getvalue(), "merge:gzip layer 3: a file and a dir to swap, three "
                "hard links, a dir tree to white out, a dir to make opaque"))
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add("swap", "dir", mode=0o755, mtime_ns=m(20))
    w.add("swap/inner.txt", data=b"the file became a directory\n", mtime_ns=m(21))
    w.add("swapdir", data=b"the directory became a file\n", mtime_ns=m(22))
    w.add("links", "dir", mode=0o755, mtime_ns=m(23))
    w.add("links/.wh.b", data=b"", mtime_ns=m(24))
    w.add("links/c", data=b"c is its own file now\n", mtime_ns=m(25))
    w.add("links/n1", data=b"a new pair\n", mtime_ns=m(26))
    w.add("links/n2", "hardlink", linkname="links/n1", mtime_ns=m(26))
    w.add(".wh.wd", data=b"", mtime_ns=m(27))
    w.add("op", "dir", mode=0o711, mtime_ns=m(28))
    w.add("op/.wh..wh..opq", data=b"", mtime_ns=m(29))
    w.add("op/new", data=b"the only entry of the opaque dir\n", mtime_ns=m(30))
    w.add("files", "dir", mode=0o755, mtime_ns=m(31))
    w.add("files/xattr-dir-kept", "dir", mode=0o700, uid=3, mtime_ns=m(32),
          xattrs={"user.merge": b"upper"})
    w.close()
    out.append(("merge-b", buf.getvalue(), "merge:gzip layer 4: file->dir, dir->file, a hard "
                "link whited out and one replaced, a dir whited out, an opaque dir"))
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add("swap", data=b"a file again\n", mode=0o600, mtime_ns=m(40))
    w.add("wd", "dir", mode=0o755, mtime_ns=m(41))
    w.add("wd/fresh.txt", data=b"a new wd after the whiteout\n", mtime_ns=m(42))
    w.close()
    out.append(("merge-c", buf.getvalue(), "merge:gzip layer 5: the dir becomes a file again, "
                "the whited out dir comes back empty but for one file"))
    return out


def build_arch_layer(arch):
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add("arch", "dir", mtime_ns=mtime(500))
    w.add("arch/" + arch + ".txt", data=("only in the %s image\n" % arch).encode(), mtime_ns=mtime(501))
    w.close()
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# demo image
# --------------------------------------------------------------------------------------------

DEMO_HELLO = "Hello from the strata demo image!\n"


def add_demo(lay):
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    buf = io.BytesIO()
    w = TarWriter(buf)
    m = lambda i: mtime(600 + i, frac=0)
    w.add("bin", "dir", mode=0o755, mtime_ns=m(0))
    w.add("bin/busybox", data=busybox, mode=0o755, mtime_ns=m(1))
    for i, name in enumerate(["cat", "echo", "ls", "sh"]):
        w.add("bin/" + name, "symlink", linkname="busybox", mtime_ns=m(2 + i))
    w.add("etc", "dir", mode=0o755, mtime_ns=m(6))
    w.add("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
          mtime_ns=m(7))
    w.add("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n", mtime_ns=m(8))
    w.add("tmp", "dir", mode=0o1777, mtime_ns=m(9))
    w.close()
    lay.add_layer("demo-base", buf.getvalue(), "gzip", "mkfixture-pax",
                  "demo: /bin/busybox (static) with sh/ls/cat/echo symlinks, /etc/passwd")
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add("hello.txt", data=DEMO_HELLO.encode(), mtime_ns=m(10))
    w.close()
    lay.add_layer("demo-hello", buf.getvalue(), "gzip", "mkfixture-pax", "demo: /hello.txt")
    desc, rec = lay.make_manifest(["demo-base", "demo-hello"], host_arch(),
                                  cmd=["/bin/sh", "-c", "cat /hello.txt"])
    lay.tag("demo:latest", desc, rec, "busybox demo; Cmd prints /hello.txt")
    lay.meta["paths"]["demo_hello"] = "hello.txt"
    lay.meta["paths"]["demo_hello_text"] = DEMO_HELLO
    lay.meta["paths"]["demo_cmd"] = ["/bin/sh", "-c", "cat /hello.txt"]


# --------------------------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------------------------

def require_root(what):
    if os.geteuid() != 0:
        sys.exit("mkfixture.py: %s must run as root (device nodes, owners, security.capability)" % what)


def prepare_out(out):
    if os.path.exists(os.path.join(out, "index.json")):
        for name in ("index.json", "oci-layout", "fixture.json"):
            try:
                os.unlink(os.path.join(out, name))
            except FileNotFoundError:
                pass
        shutil.rmtree(os.path.join(out, "blobs"), ignore_errors=True)
    os.makedirs(out, exist_ok=True)


def cmd_build(args):
    require_root("build")
    chunk = args.chunk_size
    if chunk < 2:
        sys.exit("mkfixture.py: --chunk-size must be >= 2")
    prepare_out(args.out)
    lay = Layout(args.out, "build", chunk)
    old_umask = os.umask(0o022)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=lay.out)
    try:
        base_root = os.path.join(staging, "base")
        os.mkdir(base_root)
        names = stage_base(base_root, chunk)
        base_tar = gnu_tar_create(base_root, names, "posix")
        lay.add_layer("base", base_tar, "gzip", "gnu-tar-posix",
                      "GNU tar --format=posix --xattrs: sizes 0/1/C-1/C/C+1/50MiB, modes, setuid/"
                      "setgid/sticky dirs, symlinks, hard links, devices, fifo, xattrs incl. "
                      "security.capability, long and non-ASCII names, big ids, ns mtimes")
        shutil.rmtree(base_root)
        gnu_root = os.path.join(staging, "gnu")
        os.mkdir(gnu_root)
        gnu_tar = gnu_tar_create(gnu_root, stage_gnu(gnu_root), "gnu")
        lay.add_layer("gnu", gnu_tar, "none", "gnu-tar-gnu",
                      "GNU tar --format=gnu, uncompressed: LongLink names and link targets, "
                      "base-256 uid/gid, a 0700 dir")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.umask(old_umask)
    lay.add_layer("pax", build_pax_layer(), "zstd", "mkfixture-pax",
                  "own PAX writer, zstd: implicit parent dirs, a path twice (later wins), ns mtimes, "
                  "user xattrs, uid/gid 4000000000/4000000001, PAX long path and linkpath, ustar "
                  "prefix split, hard link")
    lay.add_layer("upper", build_upper_layer(), "gzip", "mkfixture-pax",
                  "own PAX writer, gzip, upper layer over base: .wh. whiteouts of a file and a dir, "
                  "an opaque dir, a modified file, new files")
    arch = host_arch()
    other = other_arch()
    lay.add_layer("other-arch", build_arch_layer(other), "gzip", "mkfixture-pax",
                  "the only layer of the %s entry of corner:multi" % other)

    oci_desc, oci_rec = lay.make_manifest(["base", "gnu", "pax", "upper"], arch)
    lay.tag("corner:oci", oci_desc, oci_rec, "OCI manifest, layers base(gzip) gnu(tar) pax(zstd) upper(gzip)")
    dk_desc, dk_rec = lay.make_manifest(["base", "gnu", "upper"], arch, docker=True)
    lay.tag("corner:docker", dk_desc, dk_rec, "Docker schema 2 manifest, layers base gnu upper")
    other_desc, other_rec = lay.make_manifest(["other-arch"], other)
    entries = [(other_desc, other_rec), (oci_desc, oci_rec)]
    idx_desc = lay.make_index(entries)
    lay.tag("corner:multi", idx_desc, oci_rec,
            "OCI index: first linux/%s (layer other-arch), then linux/%s (= corner:oci)" % (other, arch),
            index_entries=entries)
    gz_desc, gz_rec = lay.make_manifest(["base", "upper"], arch)
    lay.tag("corner:gzip", gz_desc, gz_rec,
            "OCI manifest, gzip layers only (base, upper): for umoci 0.4.7, which lacks zstd")
    for name, data, desc in build_merge_layers():
        lay.add_layer(name, data, "gzip", "mkfixture-pax", desc)
    mg_desc, mg_rec = lay.make_manifest(["base", "upper", "merge-a", "merge-b", "merge-c"], arch)
    lay.tag("merge:gzip", mg_desc, mg_rec,
            "OCI manifest, gzip layers base, upper, merge-a/b/c: the merged rootfs view's corner "
            "cases (umoci unpack is the reference)")
    add_demo(lay)
    lay.meta["paths"].update({
        "big_file": "files/big-50MiB",
        "chunk_files": ["files/empty", "files/one", "files/size-C-minus-1", "files/size-C",
                        "files/size-C-plus-1"],
        "unicode_file": "unicode/" + UNICODE_NAME,
        "deep_file": DEEP_FILE,
        "cap_file": "xattr/cap-bin",
        "cap_value_hex": CAP_NET_BIND_SERVICE_V2.hex(),
        "whiteouts": {"victims/gone-file": "file", "victims/gone-dir": "dir"},
        "opaque_dir": "opaque",
        "dup_file": "dup/file.txt",
        "dup_winner": "second version, which wins\n",
        "dup_root_file": "dup.txt",
        "dup_root_winner": "the root file, second version\n",
        "implicit_dirs": ["implicit", "implicit/a", "implicit/a/b"],
        "big_ids_file": "pax/bigids.txt", "big_ids": [BIG_UID, BIG_GID],
    })
    lay.finish()
    print("wrote %s: %d images, %d layers" % (lay.out, len(lay.images), len(lay.layers)))


def cmd_demo(args):
    prepare_out(args.out)
    lay = Layout(args.out, "demo", DEFAULT_CHUNK)
    add_demo(lay)
    lay.finish()
    print("wrote %s: demo:latest" % lay.out)


def _small_tar(seed, label):
    buf = io.BytesIO()
    w = TarWriter(buf)
    w.add(label, "dir", mtime_ns=mtime(700))
    w.add(label + "/data.bin", data=prng_bytes(seed, 200 * 1024), mtime_ns=mtime(701))
    w.close()
    return buf.getvalue()


def cmd_bad(args):
    prepare_out(args.out)
    lay = Layout(args.out, "bad", DEFAULT_CHUNK)
    arch = host_arch()
    lay.add_layer("bad-good", _small_tar(41, "good"), "gzip", "mkfixture-pax",
                  "a valid layer placed before the broken one in every bad:* image")
    lay.add_layer("bad-sized", _small_tar(42, "sized"), "gzip", "mkfixture-pax",
                  "valid blob, referenced with a wrong size by bad:digest")
    junk = prng_bytes(43, 64 * 1024)
    lay.add_layer("bad-nottar", junk, "gzip", "raw", "gzip of random bytes: not a tar archive")
    full_tar = _small_tar(44, "trunc")
    full_gz = gzip_bytes(full_tar)
    lay.add_layer("bad-truncgz", full_tar, "gzip", "raw",
                  "a gzip stream cut in half (digest is of the cut bytes)",
                  blob=full_gz[:len(full_gz) // 2])
    lay.add_layer("bad-unknown", _small_tar(45, "unknown"), "gzip", "mkfixture-pax",
                  "valid gzip tar, announced with media type %s" % MT_UNKNOWN)

    sized = lay.layers["bad-sized"]
    desc, rec = lay.make_manifest(["bad-good", "bad-sized"], arch,
                                  overrides={1: {"size": sized["size"] + 4096}})
    lay.tag("bad:digest", desc, rec, "size mismatch on the second layer",
            exercises="the second layer descriptor's digest names an existing blob, but its size is "
                      "%d bytes larger than the blob: the download must be rejected (a registry "
                      "verifies digests on upload, so a digest/content mismatch cannot be stored; "
                      "a size mismatch is the closest)" % 4096,
            expect_error=r"size|mismatch|length|digest")
    desc, rec = lay.make_manifest(["bad-good", "bad-nottar"], arch)
    lay.tag("bad:nottar", desc, rec, "second layer is gzip of random bytes",
            exercises="a layer whose digest and gzip stream are valid but whose content is not a tar",
            expect_error=r"tar|checksum|header")
    desc, rec = lay.make_manifest(["bad-good", "bad-truncgz"], arch)
    lay.tag("bad:truncgz", desc, rec, "second layer is a truncated gzip stream",
            exercises="a layer whose digest is valid (of the cut bytes) but whose gzip stream ends "
                      "in the middle",
            expect_error=r"truncat|gzip|unexpected end|corrupt")
    desc, rec = lay.make_manifest(["bad-good", "bad-unknown"], arch,
                                  overrides={1: {"mediaType": MT_UNKNOWN}})
    lay.tag("bad:mediatype", desc, rec, "second layer has an unknown media type",
            exercises="a layer with media type %s must be refused" % MT_UNKNOWN,
            expect_error=r"media.?type|unsupported|unknown|vnd\.example")
    lay.finish()
    print("wrote %s: %d bad images" % (lay.out, len(lay.images)))


BIG_DEFAULT_MIB = 200
BIG_HELLO = "app/hello.txt"
BIG_MULTI = "app/multi.bin"
BIG_MULTI_SIZE = 3 * 1024 * 1024 + 123
BIG_HELLO_SIZE = 4096


def big_hello_text():
    """Exactly 4096 bytes of known ASCII text, every line numbered."""
    lines, n, i = [], 0, 0
    while n < BIG_HELLO_SIZE:
        line = "strata lazy-loading fixture, %s, line %04d: the quick brown fox\n" % (BIG_HELLO, i)
        lines.append(line)
        n += len(line)
        i += 1
    text = "".join(lines)[:BIG_HELLO_SIZE - 1] + "\n"
    assert len(text.encode()) == BIG_HELLO_SIZE
    return text


class _TeeHash:
    """A write-only file object that hashes and counts what goes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        self.f.write(b)
        return len(b)


def cmd_big(args):
    mib = args.size_mib
    if mib < 2:
        sys.exit("mkfixture.py: --size-mib must be >= 2")
    prepare_out(args.out)
    lay = Layout(args.out, "big", DEFAULT_CHUNK)
    half = (mib << 20) // 2
    text = big_hello_text()
    tmp = os.path.join(lay.blobdir, ".big-layer.tmp")
    files = {}
    with open(tmp, "wb") as out:
        gz = subprocess.Popen(["gzip", "-1", "-n", "-c"], stdin=subprocess.PIPE, stdout=out)
        try:
            tee = _TeeHash(gz.stdin)
            w = TarWriter(tee)

            def add_file(path, data, i):
                # the data follows the header block(s): the TarWriter writes no PAX header here
                w.add(path, data=data, mtime_ns=mtime(800 + i, frac=0), pax="never")
                files[path] = {"size": len(data), "sha256": sha256_hex(data),
                               "tar_offset": tee.n - len(data) - ((-len(data)) % BLOCK)}

            w.add("data", "dir", mtime_ns=mtime(800, frac=0), pax="never")
            add_file("data/a.bin", prng_bytes(81, half), 1)
            w.add("app", "dir", mtime_ns=mtime(802, frac=0), pax="never")
            add_file(BIG_HELLO, text.encode(), 3)
            add_file(BIG_MULTI, prng_bytes(82, BIG_MULTI_SIZE), 4)
            add_file("data/b.bin", prng_bytes(83, half), 5)
            w.close()
            gz.stdin.close()
        finally:
            if gz.stdin and not gz.stdin.closed:
                gz.stdin.close()
            rc = gz.wait()
        if rc != 0:
            raise RuntimeError("gzip -1 exited %d" % rc)
    h = hashlib.sha256()
    size = 0
    with open(tmp, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
            size += len(b)
    digest = "sha256:" + h.hexdigest()
    os.rename(tmp, os.path.join(lay.blobdir, h.hexdigest()))
    lay.layers["big"] = {"digest": digest, "size": size, "diff_id": "sha256:" + tee.h.hexdigest(),
                         "compression": "gzip", "producer": "mkfixture-pax",
                         "blob": "blobs/sha256/" + h.hexdigest(),
                         "description": "gzip -1 of own-PAX-writer tar: data/a.bin (%d random "
                                        "bytes), app/hello.txt (4096 bytes of text), app/multi.bin "
                                        "(%d random bytes), data/b.bin (%d random bytes)"
                                        % (half, BIG_MULTI_SIZE, half)}
    desc, rec = lay.make_manifest(["big"], host_arch())
    lay.tag("big:latest", desc, rec, "one %d MiB gzip layer for the lazy-loading tests" % mib)
    lay.meta["paths"].update({"size_mib": mib, "hello_file": BIG_HELLO, "hello_text": text,
                              "multi_file": BIG_MULTI, "multi_size": BIG_MULTI_SIZE,
                              "multi_sha256": files[BIG_MULTI]["sha256"], "files": files})
    lay.finish()
    print("wrote %s: big:latest, layer %s (%d bytes)" % (lay.out, digest, size))


# --------------------------------------------------------------------------------------------
# coldstart: a Python runtime + an unread 300 MiB data file, for bench/cold-start
# --------------------------------------------------------------------------------------------

COLD_DEFAULT_MIB = 300
COLD_PYTHON = "/usr/bin/python3.11"
COLD_STDLIB = "/usr/lib/python3.11"
COLD_START = "app/start.py"
COLD_MODEL = "data/model.bin"
COLD_CMD = [COLD_PYTHON, "/" + COLD_START]
COLD_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE=1"]
COLD_READY = "ready"
COLD_MTIME = 1_600_000_000 * 10 ** 9
# stdlib directories left out: test suites, bytecode caches, the static-build configuration and
# the host's site packages
COLD_SKIP_DIRS = {"__pycache__", "test", "tests", "idle_test", "site-packages", "dist-packages"}
COLD_SKIP_PREFIXES = ("config-3.",)
COLD_SKIP_DYNLOAD = ("_test", "_xxtest", "_ctypes_test", "xxlimited", "xxsubtype")
COLD_START_PY = '''\
# strata cold-start benchmark app: starts, proves the runtime works, says "ready", exits.
# It never opens /data/model.bin (the 300 MiB the image carries but the program does not need).
import json
import os
import sys

print("ready", flush=True)
'''


class _ColdTree:
    """The runtime layer's entries, as replicated from the host: rel path -> entry dict."""

    def __init__(self):
        self.entries = {}

    def _dir(self, rel, host):
        if rel and rel not in self.entries:
            self.entries[rel] = {"kind": "dir", "mode": stat.S_IMODE(os.stat(host).st_mode)}

    def host_path(self, path, depth=0):
        """Adds `path` as the host resolves it: every directory on the way, every symlink met
        (kept as a symlink with its target as-is) and the final regular file."""
        if depth > 40:
            raise RuntimeError("coldstart: symlink loop at %s" % path)
        parts = [p for p in path.split("/") if p]
        cur = ""
        for i, part in enumerate(parts):
            cur += "/" + part
            st = os.lstat(cur)
            rel = cur[1:]
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(cur)
                self.entries[rel] = {"kind": "symlink", "linkname": target}
                rest = "/".join(parts[i + 1:])
                nxt = os.path.normpath(os.path.join(os.path.dirname(cur), target))
                return self.host_path(nxt + ("/" + rest if rest else ""), depth + 1)
            if stat.S_ISDIR(st.st_mode):
                self._dir(rel, cur)
            elif stat.S_ISREG(st.st_mode) and i == len(parts) - 1:
                self.entries[rel] = {"kind": "file", "mode": stat.S_IMODE(st.st_mode), "src": cur}
            else:
                raise RuntimeError("coldstart: %s is neither a directory, a file nor a symlink" % cur)
        return cur

    def stdlib(self, root):
        """Adds the stdlib tree: files as they are, symlinks to files as copies of their target
        (dangling ones and symlinked directories are left out)."""
        self.host_path(root)
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in COLD_SKIP_DIRS
                             and not x.startswith(COLD_SKIP_PREFIXES)
                             and not os.path.islink(os.path.join(d, x)))
            self._dir(os.path.relpath(d, "/"), d)
            for name in sorted(files):
                host = os.path.join(d, name)
                if os.path.basename(d) == "lib-dynload" and name.startswith(COLD_SKIP_DYNLOAD):
                    continue
                if not os.path.isfile(host):
                    continue  # dangling symlink, socket, ...
                real = os.path.realpath(host)
                self.entries[os.path.relpath(host, "/")] = {
                    "kind": "file", "mode": stat.S_IMODE(os.stat(real).st_mode), "src": real}


def _ldd(paths):
    """Absolute paths of the shared libraries (and the loader) that ldd lists for `paths`."""
    libs = set()
    for i in range(0, len(paths), 64):
        p = subprocess.run(["ldd"] + paths[i:i + 64], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           check=False)
        for line in p.stdout.decode(errors="replace").splitlines():
            line = line.strip()
            if "=>" in line:
                target = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
                if target.startswith("/"):
                    libs.add(target)
                elif target == "not found":
                    raise RuntimeError("coldstart: ldd: %s" % line)
            elif line.startswith("/") and not line.endswith(":"):  # the loader, not a header
                libs.add(line.split(" (", 1)[0].strip())
    return sorted(libs)


def _cold_runtime_tar(tree):
    buf = io.BytesIO()
    w = TarWriter(buf)
    nbytes = 0
    for rel in sorted(tree.entries):
        e = tree.entries[rel]
        if e["kind"] == "dir":
            w.add(rel, "dir", mode=e["mode"], mtime_ns=COLD_MTIME)
        elif e["kind"] == "symlink":
            w.add(rel, "symlink", linkname=e["linkname"], mtime_ns=COLD_MTIME)
        else:
            with open(e["src"], "rb") as f:
                data = f.read()
            nbytes += len(data)
            w.add(rel, data=data, mode=e["mode"], mtime_ns=COLD_MTIME)
    w.close()
    return buf.getvalue(), nbytes


def _cold_app_layer(lay, name, data_mib):
    """Streams the app layer (app/start.py, data/model.bin) through `gzip -1 -n` into the layout."""
    rng, model = random.Random(1), bytearray()
    for _ in range(data_mib):  # randbytes of more than 256 MiB at once overflows getrandbits
        model += rng.randbytes(1 << 20)
    model_sha = sha256_hex(model)
    tmp = os.path.join(lay.blobdir, ".cold-app.tmp")
    with open(tmp, "wb") as out:
        gz = subprocess.Popen(["gzip", "-1", "-n", "-c"], stdin=subprocess.PIPE, stdout=out)
        try:
            tee = _TeeHash(gz.stdin)
            w = TarWriter(tee)
            w.add("app", "dir", mtime_ns=COLD_MTIME)
            w.add(COLD_START, data=COLD_START_PY.encode(), mtime_ns=COLD_MTIME)
            w.add("data", "dir", mtime_ns=COLD_MTIME)
            w.add(COLD_MODEL, data=model, mtime_ns=COLD_MTIME)
            w.close()
            gz.stdin.close()
        finally:
            if gz.stdin and not gz.stdin.closed:
                gz.stdin.close()
            rc = gz.wait()
    if rc != 0:
        raise RuntimeError("gzip -1 exited %d" % rc)
    del model
    h, size = hashlib.sha256(), 0
    with open(tmp, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
            size += len(b)
    os.rename(tmp, os.path.join(lay.blobdir, h.hexdigest()))
    lay.layers[name] = {"digest": "sha256:" + h.hexdigest(), "size": size,
                        "diff_id": "sha256:" + tee.h.hexdigest(), "compression": "gzip",
                        "producer": "mkfixture-pax", "blob": "blobs/sha256/" + h.hexdigest(),
                        "description": "gzip -1: /app/start.py and /data/model.bin (%d MiB of "
                                       "random.Random(1).randbytes, never read at start)" % data_mib}
    return model_sha


def cmd_coldstart(args):
    if args.data_mib < 1:
        sys.exit("mkfixture.py: --data-mib must be >= 1")
    if not os.access(COLD_PYTHON, os.X_OK) or not os.path.isdir(COLD_STDLIB):
        sys.exit("mkfixture.py coldstart: needs the host's %s and %s" % (COLD_PYTHON, COLD_STDLIB))
    prepare_out(args.out)
    lay = Layout(args.out, "coldstart", DEFAULT_CHUNK)
    arch = host_arch()

    tree = _ColdTree()
    tree.host_path(COLD_PYTHON)
    tree.stdlib(COLD_STDLIB)
    elves = [COLD_PYTHON] + sorted(e["src"] for rel, e in tree.entries.items()
                                   if e["kind"] == "file" and rel.endswith(".so"))
    for lib in _ldd(elves):
        tree.host_path(lib)
    tree.entries["usr/bin/python3"] = {"kind": "symlink", "linkname": os.path.basename(COLD_PYTHON)}
    for d in ("etc", "tmp"):
        tree.entries.setdefault(d, {"kind": "dir", "mode": 0o1777 if d == "tmp" else 0o755})
    runtime_tar, runtime_bytes = _cold_runtime_tar(tree)
    lay.add_layer("cold-runtime", runtime_tar, "gzip", "mkfixture-pax",
                  "%s, its stdlib (no tests, no __pycache__) and the shared libraries ldd lists, "
                  "gzip -6" % COLD_PYTHON)
    nfiles = sum(1 for e in tree.entries.values() if e["kind"] == "file")
    del runtime_tar

    model_sha = _cold_app_layer(lay, "cold-app", args.data_mib)

    names = ["cold-runtime", "cold-app"]
    cfg = {"created": "2020-09-13T12:26:40Z", "architecture": arch, "os": "linux",
           "config": {"Env": COLD_ENV, "Cmd": COLD_CMD, "WorkingDir": "/"},
           "rootfs": {"type": "layers", "diff_ids": [lay.layers[n]["diff_id"] for n in names]},
           "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "mkfixture.py layer " + n}
                       for n in names]}
    cdigest, csize = lay.put_json(cfg)
    config = {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": csize}
    ldescs = [{"mediaType": MT_OCI_LAYER_GZIP, "digest": lay.layers[n]["digest"],
               "size": lay.layers[n]["size"]} for n in names]
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": config, "layers": ldescs}
    mdigest, msize = lay.put_json(manifest)
    desc = {"mediaType": MT_OCI_MANIFEST, "digest": mdigest, "size": msize}
    rec = {"digest": mdigest, "media_type": MT_OCI_MANIFEST, "size": msize, "platform": "linux/" + arch,
           "config": {"digest": cdigest, "media_type": MT_OCI_CONFIG, "size": csize},
           "layers": [{"name": n, "digest": lay.layers[n]["digest"], "size": lay.layers[n]["size"],
                       "media_type": MT_OCI_LAYER_GZIP, "compression": "gzip",
                       "producer": "mkfixture-pax", "diff_id": lay.layers[n]["diff_id"]}
                      for n in names]}
    lay.tag("cold:latest", desc, rec, "Python runtime + %d MiB of data the program never reads; "
            "Cmd prints %r" % (args.data_mib, COLD_READY))
    lay.meta["paths"].update({"data_mib": args.data_mib, "cmd": COLD_CMD, "env": COLD_ENV,
                              "ready": COLD_READY, "start_file": COLD_START,
                              "model_file": COLD_MODEL, "model_size": args.data_mib << 20,
                              "model_sha256": model_sha, "runtime_files": nfiles,
                              "runtime_bytes": runtime_bytes})
    lay.finish()
    print("wrote %s: cold:latest, runtime layer %s (%d files, %d bytes), app layer %s (%d bytes)"
          % (lay.out, lay.layers["cold-runtime"]["digest"], nfiles, lay.layers["cold-runtime"]["size"],
             lay.layers["cold-app"]["digest"], lay.layers["cold-app"]["size"]))


# --------------------------------------------------------------------------------------------
# push: a minimal OCI distribution client
# --------------------------------------------------------------------------------------------

class Registry:
    def __init__(self, host, timeout=120):
        self.base = "http://" + host
        self.timeout = timeout

    def request(self, method, url, data=None, headers=None, ok=(200, 201, 202, 204)):
        if not url.startswith("http"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            if e.code in ok:
                return e.code, e.headers, body
            raise RuntimeError("%s %s: HTTP %d: %s" % (method, url, e.code,
                                                       body.decode(errors="replace")[:500]))

    def blob_exists(self, repo, digest):
        try:
            status, _, _ = self.request("HEAD", "/v2/%s/blobs/%s" % (repo, digest), ok=(200,))
            return status == 200
        except RuntimeError:
            return False

    def push_blob(self, repo, digest, data):
        if self.blob_exists(repo, digest):
            return False
        _, headers, _ = self.request("POST", "/v2/%s/blobs/uploads/" % repo, data=b"",
                                     headers={"Content-Length": "0"}, ok=(202,))
        loc = headers.get("Location")
        if not loc:
            raise RuntimeError("upload of %s: no Location header" % digest)
        loc = urllib.parse.urljoin(self.base + "/v2/%s/blobs/uploads/" % repo, loc)
        parts = urllib.parse.urlsplit(loc)
        q = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        q.append(("digest", digest))
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))
        self.request("PUT", url, data=data, headers={"Content-Type": "application/octet-stream",
                                                     "Content-Length": str(len(data))}, ok=(201,))
        return True

    def push_manifest(self, repo, reference, media_type, data):
        _, headers, _ = self.request("PUT", "/v2/%s/manifests/%s" % (repo, reference), data=data,
                                     headers={"Content-Type": media_type}, ok=(201,))
        return headers.get("Docker-Content-Digest")


# --------------------------------------------------------------------------------------------
# dedup: the same files in layers that differ as blobs (bench/store, test_dedup.py)
# --------------------------------------------------------------------------------------------

DEDUP_DEFAULT_MIB = 8


def _dedup_tar(files, mtime_base):
    """A tar of files (list of (path, bytes)) with mtimes from mtime_base."""
    buf = io.BytesIO()
    w = TarWriter(buf)
    dirs = sorted({p.rsplit("/", 1)[0] for p, _ in files})
    for i, d in enumerate(dirs):
        w.add(d, "dir", mtime_ns=mtime(mtime_base + i, frac=0), pax="never")
    for i, (p, data) in enumerate(files):
        w.add(p, data=data, mtime_ns=mtime(mtime_base + 100 + i, frac=0), pax="never")
    w.close()
    return buf.getvalue()


def cmd_dedup(args):
    mib = args.size_mib
    if mib < 1:
        sys.exit("mkfixture.py: --size-mib must be >= 1")
    prepare_out(args.out)
    lay = Layout(args.out, "dedup", DEFAULT_CHUNK)
    # the content: a few large incompressible files (whole chunks) and many small text files
    files = []
    big = (mib << 20) * 3 // 4
    for i in range(4):
        files.append(("app/data/part%d.bin" % i, prng_bytes(900 + i, big // 4 + 1000 * i)))
    small_total, i = 0, 0
    while small_total < (mib << 20) - big:
        text = ("dedup fixture file %d: " % i + "lorem ipsum dolor sit amet " * (20 + i % 50) +
                "\n").encode()
        files.append(("app/text/f%05d.txt" % i, text))
        small_total += len(text)
        i += 1
    base_files = [("base/etc/os-release", b"NAME=dedup-base\n"),
                  ("base/lib/libbase.so", prng_bytes(950, 512 * 1024))]
    base_tar = _dedup_tar(base_files, 1000)
    lay.add_layer("dedup-base", base_tar, "gzip", "mkfixture-pax", "shared base layer")
    tar = _dedup_tar(files, 2000)
    lay.add_layer("dedup-gzip", tar, "gzip", "mkfixture-pax",
                  "%d files, %d bytes, gzip -6" % (len(files), sum(len(d) for _, d in files)))
    lay.add_layer("dedup-zstd", tar, "zstd", "mkfixture-pax", "the same tar as dedup-gzip, zstd")
    rebuilt = _dedup_tar(files, 5000)
    lay.add_layer("dedup-rebuilt", rebuilt, "gzip", "mkfixture-pax",
                  "the same files with other mtimes, gzip -1",
                  blob=gzip.compress(rebuilt, compresslevel=1, mtime=0))
    for tag in ("gzip", "zstd", "rebuilt"):
        desc, rec = lay.make_manifest(["dedup-base", "dedup-" + tag], host_arch())
        lay.tag("dedup:" + tag, desc, rec, "shared base + the dedup files as %s" % tag)
    lay.meta["paths"].update({"files": {p: {"size": len(d), "sha256": sha256_hex(d)}
                                        for p, d in files},
                              "content_bytes": sum(len(d) for _, d in files)})
    lay.finish()
    print("wrote %s: dedup:gzip, dedup:zstd, dedup:rebuilt (%d files)" % (lay.out, len(files)))


# --------------------------------------------------------------------------------------------
# many: many images of many small files (bench/store memory figures)
# --------------------------------------------------------------------------------------------

def cmd_many(args):
    if args.images < 1 or args.files < 1:
        sys.exit("mkfixture.py: --images and --files must be >= 1")
    prepare_out(args.out)
    lay = Layout(args.out, "many", DEFAULT_CHUNK)
    for k in range(args.images):
        buf = io.BytesIO()
        w = TarWriter(buf)
        ndirs = 100
        for d in range(ndirs):
            w.add("srv/d%03d" % d, "dir", mtime_ns=mtime(d, frac=0), pax="never")
        for i in range(args.files):
            # small, distinct per image, compressible: about 600 bytes on average
            data = ("image %d file %d\n" % (k, i)).encode() * (1 + (i * 7919) % 60)
            w.add("srv/d%03d/file-%06d.txt" % (i % ndirs, i), data=data,
                  mtime_ns=mtime(100 + k, frac=0), pax="never")
        w.close()
        tar = buf.getvalue()
        lay.add_layer("many-%d" % k, tar, "gzip", "mkfixture-pax",
                      "%d small files" % args.files,
                      blob=gzip.compress(tar, compresslevel=1, mtime=0))
        desc, rec = lay.make_manifest(["many-%d" % k], host_arch())
        lay.tag("many:%d" % k, desc, rec, "%d small files" % args.files)
    lay.meta["paths"].update({"files_per_image": args.files, "dirs_per_image": 100})
    lay.finish()
    print("wrote %s: %d images of %d files" % (lay.out, args.images, args.files))


# --------------------------------------------------------------------------------------------
# sparse: GNU sparse files as GNU tar (every --sparse-version, old GNU) and bsdtar write them
# --------------------------------------------------------------------------------------------

# path -> (real size, [(offset, length) of data]); the rest is holes
SPARSE_FILES = {
    "sparse/many": (60 * 65536 + 100000, [(i * 65536 + 8192, 4096 + 7 * i) for i in range(60)]),
    "sparse/allhole": (1 << 20, []),
    "sparse/head": (3 << 20, [(0, 8192)]),
    "sparse/tail": ((1 << 20) + 4096, [(1 << 20, 4096)]),
    # data across chunk boundaries, 1.5 MiB and 2.5 MiB of random bytes, in 64 MiB
    "sparse/big.img": (64 << 20, [(10 << 20, 3 << 19), ((40 << 20) + 12345, 5 << 19)]),
}
# (layer name, tool, arguments, compression)
SPARSE_LAYERS = [
    ("sparse-gnu", "tar", ["--format=gnu", "--sparse"], "gzip"),
    ("sparse-v00", "tar", ["--format=posix", "--sparse", "--sparse-version=0.0"], "gzip"),
    ("sparse-v01", "tar", ["--format=posix", "--sparse", "--sparse-version=0.1"], "none"),
    ("sparse-v10", "tar", ["--format=posix", "--sparse", "--sparse-version=1.0"], "zstd"),
    ("sparse-bsd", "bsdtar", ["--format=pax"], "gzip"),
]


def stage_sparse(root):
    """The sparse files (written with holes), a plain file, a hard link to a sparse file and a
    symlink, with fixed modes and times. Returns the data ranges written, by path."""
    os.makedirs(os.path.join(root, "sparse"))
    for i, (path, (size, data)) in enumerate(sorted(SPARSE_FILES.items())):
        full = os.path.join(root, path)
        with open(full, "wb") as f:
            for k, (off, n) in enumerate(data):
                f.seek(off)
                f.write(prng_bytes(3000 + 17 * i + k, n))
            f.truncate(size)
        os.chmod(full, 0o640 if i % 2 else 0o755)
        os.utime(full, ns=(mtime(400 + i, frac=0), mtime(400 + i, frac=0)))
    with open(os.path.join(root, "sparse/plain.txt"), "wb") as f:
        f.write(b"not sparse at all\n" * 100)
    os.link(os.path.join(root, "sparse/head"), os.path.join(root, "sparse/head-link"))
    os.symlink("big.img", os.path.join(root, "sparse/big-link"))
    for p in ("sparse/plain.txt", "sparse/big-link", "sparse"):
        os.utime(os.path.join(root, p), ns=(mtime(450, frac=0), mtime(450, frac=0)),
                 follow_symlinks=False)


def sparse_tar(root, tool, args):
    cmd = [tool] + args + ["--numeric-owner", "-C", root, "-cf", "-", "sparse"]
    if tool == "tar":
        cmd[1:1] = ["--sort=name"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, LC_ALL="C.UTF-8"))
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (tool, p.stderr.decode(errors="replace")))
    return p.stdout


def cmd_sparse(args):
    prepare_out(args.out)
    lay = Layout(args.out, "sparse", DEFAULT_CHUNK)
    with tempfile.TemporaryDirectory(prefix="mkfixture-sparse-") as root:
        stage_sparse(root)
        names = []
        for name, tool, targs, comp in SPARSE_LAYERS:
            if shutil.which(tool) is None:
                print("%s: %s not installed, left out" % (name, tool))
                continue
            tar = sparse_tar(root, tool, targs)
            lay.add_layer(name, tar, comp, tool + " " + " ".join(targs),
                          "GNU sparse files written by %s %s" % (tool, " ".join(targs)))
            desc, rec = lay.make_manifest([name], host_arch())
            lay.tag("sparse:" + name[len("sparse-"):], desc, rec, "one layer: " + name)
            names.append(name)
    lay.meta["paths"]["sparse"] = {p: {"size": size, "data": data}
                                   for p, (size, data) in SPARSE_FILES.items()}
    lay.finish()
    print("wrote %s: %s" % (lay.out, ", ".join("sparse:" + n[7:] for n in names)))


def cmd_push(args):
    layout = os.path.abspath(args.layout)
    reg = Registry(args.registry)

    def blob(digest):
        with open(os.path.join(layout, "blobs", digest.replace(":", "/", 1)), "rb") as f:
            return f.read()

    stats = {"blobs": 0, "skipped": 0, "manifests": 0}

    def push_desc(repo, desc, reference):
        data = blob(desc["digest"])
        doc = json.loads(data)
        mt = desc["mediaType"]
        if mt in (MT_OCI_INDEX, MT_DOCKER_LIST):
            for child in doc["manifests"]:
                push_desc(repo, child, child["digest"])
        else:
            for d in [doc["config"]] + doc["layers"]:
                if reg.push_blob(repo, d["digest"], blob(d["digest"])):
                    stats["blobs"] += 1
                else:
                    stats["skipped"] += 1
        got = reg.push_manifest(repo, reference, mt, data)
        if got and got != desc["digest"]:
            raise RuntimeError("registry stored %s as %s" % (desc["digest"], got))
        stats["manifests"] += 1

    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for desc in index["manifests"]:
        ref = desc.get("annotations", {}).get(REF_NAME)
        if not ref or ":" not in ref:
            continue
        repo, tag = ref.split(":", 1)
        push_desc(repo, desc, tag)
        print("pushed %s/%s:%s (%s)" % (args.registry, repo, tag, desc["digest"]))
    print("%d blobs uploaded, %d already present, %d manifests" %
          (stats["blobs"], stats["skipped"], stats["manifests"]))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mkfixture.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="corner-case images + demo as an OCI layout")
    b.add_argument("--out", required=True)
    b.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    d = sub.add_parser("demo", help="demo:latest only")
    d.add_argument("--out", required=True)
    x = sub.add_parser("bad", help="broken images for error tests")
    x.add_argument("--out", required=True)
    g = sub.add_parser("big", help="big:latest, one big gzip layer for the lazy-loading tests")
    g.add_argument("--out", required=True)
    g.add_argument("--size-mib", type=int, default=BIG_DEFAULT_MIB,
                   help="approximate uncompressed size (default %(default)s)")
    c = sub.add_parser("coldstart", help="cold:latest, a Python runtime + unread data (bench)")
    c.add_argument("--out", required=True)
    c.add_argument("--data-mib", type=int, default=COLD_DEFAULT_MIB,
                   help="size of /data/model.bin in MiB (default %(default)s)")
    dd = sub.add_parser("dedup", help="dedup:*, the same files in differing layers (bench/store)")
    dd.add_argument("--out", required=True)
    dd.add_argument("--size-mib", type=int, default=DEDUP_DEFAULT_MIB,
                    help="content size in MiB (default %(default)s)")
    mn = sub.add_parser("many", help="many:*, many images of many small files (bench/store)")
    mn.add_argument("--out", required=True)
    mn.add_argument("--images", type=int, default=20, help="images (default %(default)s)")
    mn.add_argument("--files", type=int, default=20000, help="files per image (default %(default)s)")
    sp = sub.add_parser("sparse", help="sparse:*, GNU sparse files in every tar format")
    sp.add_argument("--out", required=True)
    p = sub.add_parser("push", help="push every tagged image of a layout")
    p.add_argument("--layout", required=True)
    p.add_argument("--registry", required=True, help="HOST:PORT (plain HTTP)")
    sub.add_parser("schema", help="print the fixture.json schema")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "schema":
            print(FIXTURE_SCHEMA)
        else:
            {"build": cmd_build, "demo": cmd_demo, "bad": cmd_bad, "big": cmd_big,
             "coldstart": cmd_coldstart, "dedup": cmd_dedup, "many": cmd_many,
             "sparse": cmd_sparse,
             "push": cmd_push}[args.cmd](args)
    except (RuntimeError, OSError) as e:
        sys.exit("mkfixture.py %s: %s" % (args.cmd, e))


if __name__ == "__main__":
    main()

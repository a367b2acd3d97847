#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from small, valid inputs.

Run from the repository root after building (the layer_decode seeds are indexes that
build/fuzz_layer_build writes when FUZZ_DUMP_INDEX names a directory). Deterministic: the same
inputs every run, so the committed corpus only changes when this script does."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(ROOT, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar_bytes(fmt, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            info.mtime = 1600000000
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name, kind=tarfile.REGTYPE, data=None, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = kw.pop("mode", 0o644)
    if data is not None:
        ti.size = len(data)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def trees():
    long = "d/" + "x" * 120 + "/" + "y" * 120
    common = [
        member("d", tarfile.DIRTYPE, mode=0o755),
        member("d/a.txt", data=b"hello\n" * 40),
        member("d/big", data=bytes(range(256)) * 40),
        member("d/link", tarfile.SYMTYPE, linkname="a.txt"),
        member("d/hard", tarfile.LNKTYPE, linkname="d/a.txt"),
        member("d/fifo", tarfile.FIFOTYPE),
        member("d/chr", tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("d/.wh.gone", data=b""),
        member("e/.wh..wh..opq", data=b""),
        member(long, data=b"long name\n"),
    ]
    pax = list(common)
    xi, xd = member("d/xattr", data=b"x")
    xi.pax_headers = {"SCHILY.xattr.user.k": "v", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    pax.append((xi, xd))
    return {
        "pax": tar_bytes(tarfile.PAX_FORMAT, pax),
        "gnu": tar_bytes(tarfile.GNU_FORMAT, common),
        "ustar": tar_bytes(tarfile.USTAR_FORMAT, [m for m in common if m[0].name != long]),
        "empty": b"\0" * 1024,
    }


def estargz_toc(entries, toc_off):
    """A TOC member (gzip of a tar holding stargz.index.json) followed by the eStargz footer."""
    js = json.dumps({"version": 1, "entries": entries}).encode()
    toc = gzip.compress(tar_bytes(tarfile.USTAR_FORMAT, [member("stargz.index.json", data=js)]), mtime=0)
    extra = b"SG" + (22).to_bytes(2, "little") + b"%016xSTARGZ" % toc_off
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    footer = (b"\x1f\x8b\x08\x04" + b"\0" * 4 + b"\0\xff" + len(extra).to_bytes(2, "little") + extra +
              c.compress(b"") + c.flush() + (0).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    return toc + footer


def dg(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def registry_docs():
    """Seeds of the manifest target (selector byte, document, NUL, config) and of retry_after."""
    d = lambda c: "sha256:" + hashlib.sha256(c).hexdigest()
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                      "diff_ids": [d(b"l0"), d(b"l1")]}, "config": {"Cmd": ["/bin/sh"]}}).encode()
    layer = lambda mt, c, **kw: dict({"mediaType": mt, "digest": d(c), "size": len(c)}, **kw)
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    oci = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(cfg),
                      "size": len(cfg)},
           "layers": [layer(gz, b"l0"), layer(gz, b"l1", annotations={
               "containerd.io/snapshot/stargz/toc.digest": d(b"toc")})]}
    docker = dict(oci, mediaType="application/vnd.docker.distribution.manifest.v2+json")
    bare = {k: v for k, v in oci.items() if k != "mediaType"}
    plat = lambda os_, arch, var=None: dict({"os": os_, "architecture": arch},
                                            **({"variant": var} if var else {}))
    entry = lambda p: {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": d(json.dumps(p).encode()), "size": 500, "platform": p}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [entry(plat("linux", "arm64", "v8")), entry(plat("unknown", "unknown")),
                           entry(plat("linux", "amd64")), entry(plat("windows", "amd64"))]}
    lst = dict(index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
    docs = [(0, oci), (5, docker), (2, bare), (4, index), (6, lst), (16 | 4, index), (8, index),
            (7, {"schemaVersion": 1, "name": "x", "fsLayers": []})]
    seeds = [bytes([sel]) + json.dumps(doc).encode() + (b"\0" + cfg if "layers" in doc else b"")
             for sel, doc in docs]
    retry = [b"0", b"120", b"86401", b"Wed, 21 Oct 2015 07:28:00 GMT",
             b"Sunday, 06-Nov-94 08:49:37 GMT", b"Sun Nov  6 08:49:37 1994", b"Fri, 31 Dec 9999 23:59:59 GMT",
             b"18446744073709551616"]
    return {"manifest": seeds, "retry_after": retry}


def _hdr(name, size, typ=b"0", gnu=False, extra=None):
    """One 512-byte header (ustar, or old GNU with gnu=True); extra: {offset: bytes}."""
    b = bytearray(512)
    b[0:len(name)] = name.encode()
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"%011o\0" % 1600000000
    b[156:157] = typ
    b[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    for off, v in (extra or {}).items():
        b[off:off + len(v)] = v
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)


def _pad(data):
    return data + bytes(-len(data) % 512)


def _pax(records):
    body = b""
    for k, v in records:
        rec = " %s=%s\n" % (k, v)
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n += 1
        body += (str(n) + rec).encode()
    return _hdr("PaxHeaders/x", len(body), b"x") + _pad(body)


def sparse_tars():
    """GNU sparse members in each form: old GNU 'S' (with an extension block), PAX 0.0, 0.1, 1.0;
    each a 20000-byte file holding "abc..." at 512 and at 8192 (tar-rounded), holes elsewhere."""
    data = _pad(b"a" * 512 + b"b" * 512)
    ent = [(512, 512), (8192, 512), (20000, 0)]
    num = lambda v: b"%011o\0" % v
    sp = {386 + 24 * i: num(o) + num(n) for i, (o, n) in enumerate(ent[:2])}
    sp.update({482: b"\x01", 483: num(20000)})
    ext = bytearray(512)
    ext[0:24] = num(ent[2][0]) + num(ent[2][1])
    end = bytes(1024)
    gnu = _hdr("s/gnu", len(data), b"S", gnu=True, extra=sp) + bytes(ext) + data
    v00 = _pax([("GNU.sparse.size", 20000), ("GNU.sparse.numblocks", 3)] +
               [kv for o, n in ent for kv in (("GNU.sparse.offset", o), ("GNU.sparse.numbytes", n))])
    v01 = _pax([("GNU.sparse.size", 20000), ("GNU.sparse.numblocks", 3), ("GNU.sparse.name", "s/v01"),
                ("GNU.sparse.map", ",".join("%d,%d" % e for e in ent))])
    v10 = _pax([("GNU.sparse.major", 1), ("GNU.sparse.minor", 0), ("GNU.sparse.name", "s/v10"),
                ("GNU.sparse.realsize", 20000)])
    map10 = _pad(("%d\n" % len(ent) + "".join("%d\n%d\n" % e for e in ent)).encode())
    return {
        "sparse-gnu": gnu + end,
        "sparse-pax00": v00 + _hdr("s/v00", len(data)) + data + end,
        "sparse-pax01": v01 + _hdr("s/GNUSparseFile.1/v01", len(data)) + data + end,
        "sparse-pax10": v10 + _hdr("s/GNUSparseFile.1/v10", len(map10) + len(data)) + map10 + data + end,
    }


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    for target, items in registry_docs().items():
        for i, data in enumerate(items):
            put(target, "seed%d" % i, data)
    t = trees()
    for name, data in list(t.items()) + list(sparse_tars().items()):
        put("tar", name, data)
        put("layer_build", name + ".tar", data)
        put("layer_build", name + ".tar.gz", gzip.compress(data, 6, mtime=0))
        if shutil.which("zstd"):
            z = subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE, check=True)
            put("layer_build", name + ".tar.zst", z.stdout)
    pax = t["pax"]
    put("gzip", "one.gz", gzip.compress(pax, 9, mtime=0))
    put("gzip", "fast.gz", gzip.compress(pax * 3, 1, mtime=0))
    put("gzip", "members.gz", gzip.compress(pax[:3000], 6, mtime=0) + gzip.compress(pax[3000:], 6, mtime=0))
    put("gzip", "stored.gz", gzip.compress(bytes(range(256)) * 8, 0, mtime=0))
    # eStargz: data members before the TOC at offset 126976 (what fuzz_estargz places it at for '\x1f')
    a, b = b"hello\n" * 40, bytes(range(256)) * 40
    ents = [
        {"name": "d/", "type": "dir", "mode": 493, "modtime": "2020-09-13T12:26:40Z"},
        {"name": "d/a.txt", "type": "reg", "mode": 420, "size": len(a), "offset": 100, "chunkDigest": dg(a)},
        {"name": "d/big", "type": "reg", "mode": 420, "size": len(b), "offset": 300, "chunkSize": 8192,
         "chunkDigest": dg(b[:8192])},
        {"type": "chunk", "offset": 900, "chunkOffset": 8192, "chunkSize": len(b) - 8192, "chunkDigest": dg(b[8192:])},
        {"name": "d/link", "type": "symlink", "linkName": "a.txt"},
        {"name": "d/hard", "type": "hardlink", "linkName": "d/a.txt"},
        {"name": "d/.wh.gone", "type": "reg", "size": 0},
        {"name": "d/x", "type": "reg", "size": 1, "offset": 1200, "chunkDigest": dg(b"x"),
         "xattrs": {"user.k": "dg=="}},
    ]
    put("estargz", "toc", estargz_toc(ents, 126976))
    put("estargz", "toc-legacy", estargz_toc([{"name": "f", "type": "reg", "size": 5, "offset": 10, "digest": dg(b"abcde")}], 126976))
    # layer_decode: indexes the build target writes for the layer_build seeds
    exe = os.environ.get("FUZZ_BUILD", "build")
    for target in ("layer_build", "estargz"):
        tmp = os.path.join(CORPUS, "tmp-" + target)
        os.makedirs(tmp)
        subprocess.run([os.path.join(exe, "fuzz_" + target), os.path.join(CORPUS, target)],
                       env=dict(os.environ, FUZZ_DUMP_INDEX=tmp), check=True, stdout=subprocess.DEVNULL)
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                put("layer_decode", target + "-" + name, f.read())
        shutil.rmtree(tmp)
    texts = {
        "hosts": [
            'server = "https://registry.example:5000"\n\n[host."https://mirror.example"]\n'
            '  capabilities = ["pull", "resolve"]\n  ca = ["/etc/ca.pem"]\n  skip_verify = false\n'
            '  override_path = true\n  [host."https://mirror.example".header]\n    x-a = ["b", "c"]\n',
            '[host."http://127.0.0.1:5001"]\ncapabilities = ["pull"]\nclient = [["/c.pem", "/k.pem"]]\n'
            "dial_timeout = '3s'\n# comment\n",
            'server = "https://r"\n[host]\n[host."https://m".header]\nk = "v"\n',
        ],
        "config": [
            'quota = "20G"\nquota_low_water = 90\nhosts_dir = "/etc/containerd/certs.d"\nstrict_cache = false\n'
            'read_timeout = 30\nindex_cache = "32M"\nchunk_cache = "64M"\nblock_cache = "32M"\n',
            '# c\nquota = 1048576 # bytes\nhosts_dir = "a\\"b\\\\c\\t"\n',
        ],
        "challenge": [
            'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
            'Basic realm="x", Bearer realm="http://127.0.0.1:1/t", error="invalid_token"',
            'Negotiate abc==, Basic realm="r\\"q"',
        ],
        "ref": [
            "ubuntu", "docker.io/library/ubuntu:22.04", "127.0.0.1:5000/a/b-c__d.e:tag",
            "[::1]:5000/x@sha256:" + "a" * 64, "localhost/x:y@sha256:" + "0" * 64, "Upper/Case",
        ],
    }
    for target, items in texts.items():
        for i, s in enumerate(items):
            put(target, "seed%d" % i, s.encode())


if __name__ == "__main__":
    sys.exit(main())

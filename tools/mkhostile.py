#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile image generator for strata's hostile-input tests (stdlib + the zstd CLI).

  mkhostile.py layout --out DIR [--only NAME ...]   hostile:* images as an OCI layout (pushed with
                                                     `mkfixture.py push`), described in fixture.json
  mkhostile.py list                                  the images and what each one attacks

Every image is small on the wire and built to hurt a layer reader: unbounded paths, memory bombs,
lying sizes, eStargz tables of contents that verify against their annotation but lie about offsets
or chunk order. fixture.json records, per image, "expect": "error" (pull must fail with a message
matching "expect_error") or "serve" (pull succeeds; reads either match "files" or fail with EIO),
so one test can walk them all. Writing is deterministic.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkfixture  # noqa: E402
from mkfixture import BLOCK, TarWriter, Layout, host_arch, mtime  # noqa: E402

TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"


def sha256_digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tar_of(build):
    buf = io.BytesIO()
    w = TarWriter(buf)
    build(w)
    w.close()
    return buf.getvalue()


def raw_header(name, size, typeflag=b"0", size_field=None, linkname=b""):
    """A ustar header written by hand: size_field (12 bytes) overrides the octal size, so that a
    header can claim what its data is not (base-256 terabytes)."""
    h = bytearray(BLOCK)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"%011o\0" % 1600000000
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:157 + len(linkname)] = linkname
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pax_member(records, name=b"PaxHeaders/x"):
    """A PAX 'x' header carrying records (bytes), padded to blocks."""
    body = b"".join(records)
    return raw_header(name, len(body), b"x") + body + b"\0" * ((-len(body)) % BLOCK)


def file_member(name, data):
    return raw_header(name, len(data)) + data + b"\0" * ((-len(data)) % BLOCK)


END = b"\0" * (2 * BLOCK)


# ---------------------------------------------------------------------------- the attacks


def deep_path():
    """One PAX path of 250,000 components: a recursive directory maker overflows its stack."""
    path = "a/" * 250000 + "f"
    return pax_member([mkfixture._pax_record("path", path)]) + file_member(b"f", b"x\n") + END


def xattr_bomb(members=100, size=(16 << 20) - 4096):
    """members files, each with one PAX xattr of size bytes: gigabytes held while indexing."""
    out = io.BytesIO()
    value = b"A" * size
    for i in range(members):
        out.write(pax_member([mkfixture._pax_record("SCHILY.xattr.user.bomb", value)]))
        out.write(file_member(b"f%d" % i, b""))
    out.write(END)
    return out.getvalue()


def xattr_many(count=60000):
    """One file with count distinct small xattrs: quadratic duplicate checks, a huge xattr list."""
    recs = [mkfixture._pax_record("SCHILY.xattr.user.k%06d" % i, "v") for i in range(count)]
    return pax_member(recs) + file_member(b"f", b"") + END


def long_component():
    """A path component of 300 bytes (NAME_MAX is 255)."""
    return pax_member([mkfixture._pax_record("path", "d/" + "n" * 300)]) + file_member(b"f", b"x") + END


def terabyte():
    """A member whose header claims 1 TiB of data (base-256 size field) followed by 1 KiB."""
    size_field = b"\x80" + (1 << 40).to_bytes(11, "big")
    return raw_header(b"huge", 0, size_field=size_field) + b"y" * 1024


def hardlink_missing():
    return tar_of(lambda w: (w.add("a", "file", data=b"a"), w.add("b", "hardlink", linkname="missing")))


def hardlink_later():
    """A hard link to a file that only appears after it."""
    return tar_of(lambda w: (w.add("link", "hardlink", linkname="later"), w.add("later", "file", data=b"l")))


def symlink_loop():
    def build(w):
        w.add("loop", "dir")
        w.add("loop/a", "symlink", linkname="b")
        w.add("loop/b", "symlink", linkname="a")
        w.add("loop/self", "symlink", linkname="self")
        w.add("loop/up", "symlink", linkname="../../../../../../../../etc/shadow")
        w.add("ok.txt", "file", data=b"still served\n")
    return tar_of(build)


def dotdot_escape():
    """Names with .. and absolute paths: they must stay inside the layer."""
    return (file_member(b"../../../../tmp/strata-escape", b"escaped\n") +
            file_member(b"/etc/strata-escape", b"absolute\n") + END)


def many_entries(n):
    """n members (1,000 per directory: a directory, then 999 empty files), gzip -1 on the wire."""
    out = []
    per = 1000
    for d in range(n // per):
        out.append(raw_header(b"d%04d/" % d, 0, typeflag=b"5"))
        for i in range(per - 1):
            out.append(raw_header(b"d%04d/f%05d" % (d, i), 0))
    out.append(END)
    tar = b"".join(out)
    return gzip.compress(tar, 1, mtime=0), sha256_digest(tar)


def gzip_bomb_blob(gib=1):
    """A tar holding one file of gib GiB of zeros, gzip -9: about 1 MiB per GiB on the wire."""
    size = gib << 30
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(raw_header(b"zeros", size))]
    zero = b"\0" * (1 << 20)
    for _ in range(size >> 20):
        out.append(comp.compress(zero))
    out.append(comp.compress(END))
    out.append(comp.flush())
    tar_hash = hashlib.sha256(raw_header(b"zeros", size))
    for _ in range(size >> 20):
        tar_hash.update(zero)
    tar_hash.update(END)
    return b"".join(out), "sha256:" + tar_hash.hexdigest()


# ---------------------------------------------------------------------------- lying eStargz


class Estargz:
    """A minimal eStargz writer: each file's content in its own gzip member, then the TOC member
    (a tar holding stargz.index.json) and the 51-byte footer. `lie` rewrites the TOC entries just
    before they are serialized (the TOC digest annotation is taken of what was written, so the
    lie verifies)."""

    def __init__(self):
        self.blob = io.BytesIO()
        self.tar = io.BytesIO()   # the uncompressed tar, for the diff_id
        self.entries = []

    def _member(self, data):
        off = self.blob.tell()
        self.blob.write(gzip.compress(data, 6, mtime=0))
        self.tar.write(data)
        return off

    def add_file(self, name, data, chunk=0):
        hdr = raw_header(name.encode(), len(data))
        off = self._member(hdr)
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
        first = True
        pos = 0
        for p in pieces:
            pad = b"\0" * ((-len(data)) % BLOCK) if pos + len(p) == len(data) else b""
            off = self._member(p + pad)
            e = {"type": "reg" if first else "chunk", "offset": off, "chunkOffset": pos,
                 "chunkSize": len(p), "chunkDigest": sha256_digest(p)}
            if first:
                e.update({"name": name, "mode": 0o644, "size": len(data), "modtime": "2020-09-13T12:26:40Z"})
            if not chunk:
                e.pop("chunkSize")
            self.entries.append(e)
            first = False
            pos += len(p)

    def finish(self, lie=None):
        entries = json.loads(json.dumps(self.entries))
        if lie:
            lie(entries)
        toc_json = json.dumps({"version": 1, "entries": entries}).encode()
        toc_off = self.blob.tell()
        toc_tar = (raw_header(b"stargz.index.json", len(toc_json)) + toc_json +
                   b"\0" * ((-len(toc_json)) % BLOCK) + END)
        self.tar.write(toc_tar)
        self.blob.write(gzip.compress(toc_tar, 6, mtime=0))
        extra = b"SG" + (22).to_bytes(2, "little") + b"%016xSTARGZ" % toc_off
        c = zlib.compressobj(0, zlib.DEFLATED, -15)  # a stored empty block: the footer is 51 bytes
        self.blob.write(b"\x1f\x8b\x08\x04" + b"\0" * 4 + b"\0\xff" + len(extra).to_bytes(2, "little") +
                        extra + c.compress(b"") + c.flush() + b"\0" * 8)
        return self.blob.getvalue(), sha256_digest(self.tar.getvalue()), sha256_digest(toc_json)


BIG_CHUNK = 128 << 10


def noise(n):
    """n deterministic incompressible bytes."""
    return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range((n + 31) // 32))[:n]


def estargz_lie(kind):
    w = Estargz()
    w.add_file("a.txt", b"first file\n" * 100)
    # 384 KiB in 3 incompressible chunks: a read of the last one first plans its span from the
    # one before it (their members overlap by more than 64 KiB), which the lie puts after it
    w.add_file("big.bin", noise(3 * BIG_CHUNK), chunk=BIG_CHUNK)
    w.add_file("b.txt", b"second file\n" * 100)

    def lie(entries):
        chunks = [e for e in entries if e.get("name") == "big.bin" or e["type"] == "chunk"]
        if kind == "order":      # a file's chunks listed out of compressed order
            chunks[1]["offset"], chunks[2]["offset"] = chunks[2]["offset"], chunks[1]["offset"]
        elif kind == "offset":   # a chunk placed past the TOC
            chunks[1]["offset"] = 1 << 40
        elif kind == "digest":   # a chunk digest that its bytes do not have
            chunks[1]["chunkDigest"] = sha256_digest(b"not these bytes")
        elif kind == "overlap":  # two files sharing one member
            [e for e in entries if e.get("name") == "b.txt"][0]["offset"] = chunks[0]["offset"]
    return w.finish(lie)


# ---------------------------------------------------------------------------- huge spans

HUGE_CHUNK = 1 << 20


def huge_content(mib):
    """The pieces (1 MiB each) of the huge file: a line naming the MiB, then zeros. Compressible,
    distinct per chunk, cheap to make; huge_piece(i) is piece i."""
    return (huge_piece(i) for i in range(mib))


def huge_piece(i):
    head = b"MiB %08d of the huge file\n" % i
    return head + bytes(HUGE_CHUNK - len(head))


class BlobFile:
    """A blob written to the layout as it is made (never whole in memory), hashed as it goes, and
    the sha256 of the tar it holds (the diff_id), fed separately."""

    def __init__(self, lay):
        self.lay = lay
        self.path = os.path.join(lay.blobdir, "incoming.tmp")
        self.f = open(self.path, "wb")
        self.sha = hashlib.sha256()
        self.tar_sha = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.f.write(b)
        self.sha.update(b)
        self.size += len(b)

    def tell(self):
        return self.size

    def finish(self):
        self.f.close()
        hexd = self.sha.hexdigest()
        os.rename(self.path, os.path.join(self.lay.blobdir, hexd))
        return "sha256:" + hexd, self.size, "sha256:" + self.tar_sha.hexdigest()


def zstd_raw_frame_writer(out):
    """Writes one zstd frame of raw (stored) blocks to out.write, by hand (RFC 8878): what any
    zstd encoder gives for data it cannot shrink, here made cheaply of data that would shrink.
    Returns (put(bytes), end())."""
    out.write(b"\x28\xb5\x2f\xfd" + b"\x00" + bytes([(20 - 10) << 3]))  # no size, 1 MiB window
    pending = bytearray()
    block = 128 << 10

    def put(b):
        pending.extend(b)
        while len(pending) > block:  # at least one byte stays for the last block
            out.write((block << 3).to_bytes(3, "little") + bytes(pending[:block]))
            del pending[:block]

    def end():
        out.write(((len(pending) << 3) | 1).to_bytes(3, "little") + bytes(pending))
        pending.clear()

    return put, end


def huge_zstd(lay, mib):
    """A tar of one file of mib MiB in one zstd frame of raw blocks: mib MiB on the wire, and a
    span of the whole blob for any read (a frame is the only place zstd decoding can start)."""
    b = BlobFile(lay)
    put, end = zstd_raw_frame_writer(b)

    def tar(x):
        b.tar_sha.update(x)
        put(x)
    tar(raw_header(b"huge.bin", mib * HUGE_CHUNK))
    for piece in huge_content(mib):
        tar(piece)
    tar(END)
    end()
    return b.finish()


def huge_estargz(lay, mib):
    """An eStargz blob whose TOC (verified by its annotation) puts a file of mib MiB, in 1 MiB
    chunks, all in one gzip member (innerOffset), stored blocks: mib MiB on the wire, and one span
    of the whole member for a read of any chunk. Returns (digest, size, diff_id, toc digest)."""
    b = BlobFile(lay)
    entries = []

    def member(pieces):
        off = b.tell()
        c = zlib.compressobj(0, zlib.DEFLATED, 31)
        for x in pieces:
            b.tar_sha.update(x)
            b.write(c.compress(x))
        b.write(c.flush())
        return off

    small = b"still served\n" * 10
    member([raw_header(b"a.txt", len(small))])
    off = member([small + bytes((-len(small)) % BLOCK)])
    entries.append({"type": "reg", "name": "a.txt", "mode": 0o644, "size": len(small),
                     "modtime": "2020-09-13T12:26:40Z", "offset": off,
                     "chunkDigest": sha256_digest(small)})
    member([raw_header(b"huge.bin", mib * HUGE_CHUNK)])
    off = member(huge_content(mib))
    for i in range(mib):
        e = {"type": "reg" if i == 0 else "chunk", "offset": off, "innerOffset": i * HUGE_CHUNK,
             "chunkOffset": i * HUGE_CHUNK, "chunkSize": HUGE_CHUNK,
             "chunkDigest": sha256_digest(huge_piece(i))}
        if i == 0:
            e.update({"name": "huge.bin", "mode": 0o644, "size": mib * HUGE_CHUNK,
                      "modtime": "2020-09-13T12:26:40Z"})
        entries.append(e)
    toc_json = json.dumps({"version": 1, "entries": entries}).encode()
    toc_off = b.tell()
    member([raw_header(b"stargz.index.json", len(toc_json)) + toc_json +
            b"\0" * ((-len(toc_json)) % BLOCK) + END])
    extra = b"SG" + (22).to_bytes(2, "little") + b"%016xSTARGZ" % toc_off
    c = zlib.compressobj(0, zlib.DEFLATED, -15)
    b.write(b"\x1f\x8b\x08\x04" + b"\0" * 4 + b"\0\xff" + len(extra).to_bytes(2, "little") +
            extra + c.compress(b"") + c.flush() + b"\0" * 8)
    digest, size, diff_id = b.finish()
    return digest, size, diff_id, sha256_digest(toc_json)


# ---------------------------------------------------------------------------- the layout

# name -> (builder, what it attacks, expect, expect_error regex)
TAR_ATTACKS = {
    "deep-path": (deep_path, "one PAX path of 250,000 components (stack overflow by recursion)",
                  "error", r"path|long|deep"),
    "xattr-bomb": (xattr_bomb, "100 members each with a (16 MiB - 4 KiB) PAX xattr (5 GB while indexing)",
                   "error", r"xattr|extended attribute|too (large|long|big)"),
    "xattr-many": (xattr_many, "one file with 60,000 xattrs (quadratic duplicate checks)",
                   "error", r"xattr|extended attribute|too many|too (large|long|big)"),
    "long-name": (long_component, "a 300-byte path component (NAME_MAX is 255)",
                  "error", r"name|long"),
    "terabyte": (terabyte, "a member claiming 1 TiB of data, 1 KiB present",
                 "error", r"truncat|short|size|end"),
    "hardlink-missing": (hardlink_missing, "a hard link to nothing", "error", r"hard link|missing"),
    "hardlink-later": (hardlink_later, "a hard link to a file that appears later", "error",
                       r"hard link|missing"),
    "symlink-loop": (symlink_loop, "symlink loops and a symlink out of the layer", "serve", None),
    "dotdot": (dotdot_escape, "member names with .. and absolute paths", "serve", None),
}

# The blob itself is a valid layer: a TOC that lies about it is refused and the layer is indexed
# from the blob as for an unverifiable TOC ("serve"); only a lie its digests catch reaches reads.
ESTARGZ_ATTACKS = {
    "toc-order": ("a verified TOC listing a file's chunks out of compressed order", "serve", None),
    "toc-offset": ("a verified TOC placing a chunk past the TOC", "serve", None),
    "toc-overlap": ("a verified TOC giving two files the same gzip member", "serve", None),
    "toc-digest": ("a verified TOC whose chunk digest does not match the chunk (reads fail)", "serve",
                   None),
}


def cmd_layout(args):
    mkfixture.prepare_out(args.out)
    lay = Layout(args.out, "hostile", mkfixture.DEFAULT_CHUNK)
    arch = host_arch()
    only = set(args.only or [])

    def want(name):
        return not only or name in only

    for name, (build, what, expect, err) in TAR_ATTACKS.items():
        if not want(name):
            continue
        tar = build()
        lay.add_layer("hostile-" + name, tar, "gzip", "mkhostile", what)
        desc, rec = lay.make_manifest(["hostile-" + name], arch)
        lay.tag("hostile:" + name, desc, rec, what, expect=expect, expect_error=err)
    if want("gzip-bomb"):
        blob, diff_id = gzip_bomb_blob(args.bomb_gib)
        digest, size = lay.put_blob(blob)
        lay.layers["hostile-gzip-bomb"] = {"digest": digest, "size": size, "diff_id": diff_id,
                                           "compression": "gzip", "producer": "mkhostile",
                                           "blob": "blobs/sha256/" + digest[7:],
                                           "description": "%d GiB of zeros in one file" % args.bomb_gib}
        desc, rec = lay.make_manifest(["hostile-gzip-bomb"], arch)
        lay.tag("hostile:gzip-bomb", desc, rec, "a gzip bomb: %d GiB from %d bytes" % (args.bomb_gib, size),
                expect="serve", expect_error=None)
    if want("size-zero"):
        tar = tar_of(lambda w: w.add("z.txt", "file", data=b"zero\n" * 1000))
        lay.add_layer("hostile-size-zero", tar, "gzip", "mkhostile", "a layer announced with size 0")
        desc, rec = lay.make_manifest(["hostile-size-zero"], arch, overrides={0: {"size": 0}})
        lay.tag("hostile:size-zero", desc, rec, "descriptor size 0 for a non-empty blob",
                expect="error", expect_error=r"size|length|mismatch|0 bytes")
    if want("size-huge"):
        tar = tar_of(lambda w: w.add("h.txt", "file", data=b"huge\n" * 1000))
        lay.add_layer("hostile-size-huge", tar, "gzip", "mkhostile", "a layer announced with size 2^63-1")
        desc, rec = lay.make_manifest(["hostile-size-huge"], arch, overrides={0: {"size": (1 << 63) - 1}})
        lay.tag("hostile:size-huge", desc, rec, "descriptor size near 2^63 for a small blob",
                expect="error", expect_error=r"size|large|length|mismatch")
    for name, count in (("many-1m", 1000000), ("many-cap", 399000)):
        if name not in only:  # large: only when asked for by name
            continue
        blob, diff_id = many_entries(count)
        digest, size = lay.put_blob(blob)
        lay.layers["hostile-" + name] = {"digest": digest, "size": size, "diff_id": diff_id,
                                         "compression": "gzip", "producer": "mkhostile",
                                         "blob": "blobs/sha256/" + digest[7:],
                                         "description": "%d entries" % count}
        desc, rec = lay.make_manifest(["hostile-" + name], arch)
        lay.tag("hostile:" + name, desc, rec, "%d entries" % count,
                expect="error" if count > 400000 else "serve",
                expect_error=r"more than 400000 entries" if count > 400000 else None)
    if "huge-zstd" in only:  # large: only when asked for by name
        digest, size, diff_id = huge_zstd(lay, args.huge_mib)
        what = "one file of %d MiB in one zstd frame of raw blocks" % args.huge_mib
        lay.layers["hostile-huge-zstd"] = {"digest": digest, "size": size, "diff_id": diff_id,
                                           "compression": "zstd", "producer": "mkhostile",
                                           "blob": "blobs/sha256/" + digest[7:], "description": what}
        desc, rec = lay.make_manifest(["hostile-huge-zstd"], arch)
        lay.tag("hostile:huge-zstd", desc, rec, what, expect="serve", expect_error=None,
                huge_mib=args.huge_mib)
    if "huge-estargz" in only:
        digest, size, diff_id, toc_digest = huge_estargz(lay, args.huge_mib)
        what = "an eStargz TOC putting a %d MiB file in one gzip member" % args.huge_mib
        lay.layers["hostile-huge-estargz"] = {"digest": digest, "size": size, "diff_id": diff_id,
                                              "compression": "gzip",
                                              "producer": "mkhostile-estargz",
                                              "blob": "blobs/sha256/" + digest[7:],
                                              "description": what}
        desc, rec = lay.make_manifest(["hostile-huge-estargz"], arch, overrides={0: {
            "annotations": {TOC_DIGEST_ANNOTATION: toc_digest}}})
        lay.tag("hostile:huge-estargz", desc, rec, what, expect="serve", expect_error=None,
                huge_mib=args.huge_mib)
    for name, (what, expect, err) in ESTARGZ_ATTACKS.items():
        if not want(name):
            continue
        blob, diff_id, toc_digest = estargz_lie(name.split("-", 1)[1])
        digest, size = lay.put_blob(blob)
        lay.layers["hostile-" + name] = {"digest": digest, "size": size, "diff_id": diff_id,
                                         "compression": "gzip", "producer": "mkhostile-estargz",
                                         "blob": "blobs/sha256/" + digest[7:], "description": what}
        desc, rec = lay.make_manifest(["hostile-" + name], arch, overrides={0: {"annotations": {
            TOC_DIGEST_ANNOTATION: toc_digest}}})
        lay.tag("hostile:" + name, desc, rec, what, expect=expect, expect_error=err)
    lay.finish()
    print("wrote %s: %d hostile images" % (lay.out, len(lay.images)))


def cmd_list(_args):
    for name, (_, what, expect, _) in TAR_ATTACKS.items():
        print("hostile:%-18s %-6s %s" % (name, expect, what))
    print("hostile:%-18s %-6s %s" % ("gzip-bomb", "serve", "GiB of zeros in one file, ~1 MiB per GiB"))
    print("hostile:%-18s %-6s %s" % ("size-zero", "error", "descriptor size 0 for a non-empty blob"))
    print("hostile:%-18s %-6s %s" % ("size-huge", "error", "descriptor size near 2^63"))
    print("hostile:%-18s %-6s %s" % ("many-1m", "error", "1,000,000 entries (only with --only)"))
    print("hostile:%-18s %-6s %s" % ("many-cap", "serve", "399,000 entries (only with --only)"))
    print("hostile:%-18s %-6s %s" % ("huge-zstd", "serve",
                                     "a file in one zstd frame of --huge-mib MiB (only with --only)"))
    print("hostile:%-18s %-6s %s" % ("huge-estargz", "serve",
                                     "a TOC with a --huge-mib MiB gzip member (only with --only)"))
    for name, (what, expect, _) in ESTARGZ_ATTACKS.items():
        print("hostile:%-18s %-6s %s" % (name, expect, what))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="mkhostile.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("layout", help="hostile:* images as an OCI layout")
    lo.add_argument("--out", required=True)
    lo.add_argument("--only", nargs="*", help="only these attacks (names without hostile:)")
    lo.add_argument("--bomb-gib", type=int, default=1, help="GiB of zeros in the gzip bomb")
    lo.add_argument("--huge-mib", type=int, default=512,
                    help="MiB of the file in huge-zstd and huge-estargz (and of their blobs)")
    sub.add_parser("list", help="the images and what each attacks")
    args = ap.parse_args(argv)
    try:
        {"layout": cmd_layout, "list": cmd_list}[args.cmd](args)
    except (RuntimeError, OSError) as e:
        sys.exit("mkhostile.py %s: %s" % (args.cmd, e))


if __name__ == "__main__":
    main()

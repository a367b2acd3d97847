# SPDX-License-Identifier: Apache-2.0
"""Entry-by-entry comparison of two directory trees (a strata layer or overlay vs. a reference).

compare_layer(strata_dir, tar_dir) walks both trees with os.lstat and checks, for every entry:
type, permission bits (S_IMODE), uid, gid, mtime_ns, size and sha256 of regular files, the full set
of xattrs (security.selinux ignored), symlink targets, rdev of devices, hard-link identity (names
sharing an inode on one side share it on the other) and st_nlink of non-directories.

With whiteouts=True (the default: comparing one layer with its own tar extraction) the tar side's
overlay conventions are mapped: a file ".wh.NAME" must appear in strata as a char device 0:0 called
NAME (only its type and rdev are checked), and ".wh..wh..opq" in a directory D must appear as the
xattr trusted.overlay.opaque=y on D (and not as an entry).

The roots themselves are not compared (a layer's root has no tar entry of its own), only what is in
them. A directory that had no entry in the tar (tar creates such parents implicitly, with the
current time) is compared without its mtime: pass the archive's member paths as tar_entries.
"""

import os
import stat
import subprocess
import tarfile

from .fs import file_sha256

IGNORED_XATTRS = frozenset({"security.selinux"})
OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_KIND = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char",
         stat.S_IFBLK: "block", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


def kind_of(st):
    return _KIND.get(stat.S_IFMT(st.st_mode), "type %o" % stat.S_IFMT(st.st_mode))


def normalize_member(name):
    """A tar member name as a relative path: no leading './' or '/', no trailing '/'."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


def list_tar_entries(blob_path, compression):
    """Set of normalized member paths of a (compressed) layer blob, read with the tarfile module."""
    cmd = {"gzip": ["gzip", "-dc", "--", blob_path], "zstd": ["zstd", "-q", "-dc", "--", blob_path],
           "none": ["cat", "--", blob_path]}[compression]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    names = set()
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|", encoding="utf-8",
                          errors="surrogateescape") as tf:
            for m in tf:
                names.add(normalize_member(m.name))
    finally:
        proc.stdout.close()
        proc.wait(timeout=60)
    names.discard("")
    return names


def read_xattrs(path, ignore=IGNORED_XATTRS):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        return {"<listxattr error>": str(e).encode()}
    out = {}
    for n in names:
        if n in ignore:
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = ("<getxattr error: %s>" % e).encode()
    return out


def _mode(m):
    return "%04o" % m


def _rdev(r):
    return "%d:%d" % (os.major(r), os.minor(r))


def _mtime(ns):
    return "%d.%09d" % divmod(ns, 10 ** 9)


class TreeDiff:
    """Collects differences; raises one AssertionError listing the first `limit`."""

    def __init__(self, left, right, left_name, right_name, limit=20):
        self.left, self.right = left, right
        self.left_name, self.right_name = left_name, right_name
        self.limit = limit
        self.items = []

    def add(self, rel, what, left=None, right=None, raw=None):
        if raw is not None:
            self.items.append("%s: %s" % (rel or "/", raw))
        else:
            self.items.append("%s: %s: %s=%r %s=%r" % (rel or "/", what, self.left_name, left,
                                                       self.right_name, right))

    def message(self):
        n = len(self.items)
        head = "%d difference%s between %s (%s) and %s (%s)" % (
            n, "" if n == 1 else "s", self.left_name, self.left, self.right_name, self.right)
        shown = self.items[:self.limit]
        more = "" if n <= self.limit else "\n  ... and %d more" % (n - self.limit)
        return head + (", first %d" % self.limit if n > self.limit else "") + ":\n  " + \
            "\n  ".join(shown) + more

    def check(self):
        if self.items:
            raise AssertionError(self.message())


def diff_trees(strata_dir, ref_dir, *, whiteouts=True, tar_entries=None, dir_mtime=True,
               ignore_xattrs=IGNORED_XATTRS, skip=None, left_name="strata", right_name="tar",
               limit=20):
    """Returns a TreeDiff (empty .items when equal). See compare_layer."""
    strata_dir, ref_dir = os.fspath(strata_dir), os.fspath(ref_dir)
    d = TreeDiff(strata_dir, ref_dir, left_name, right_name, limit)
    links_l, links_r = {}, {}  # (dev, ino) -> [rel]
    ino_l, ino_r = {}, {}      # rel -> (dev, ino)
    skip = skip or (lambda rel, st_l, st_r: set())

    def join(base, rel):
        return os.path.join(base, rel) if rel else base

    def listdir(path, side):
        try:
            return sorted(os.listdir(path))
        except OSError as e:
            d.add("", None, raw="listdir(%s) on %s failed: %s" % (path, side, e))
            return []

    def compare_entry(rel, expect_whiteout, extra_xattrs):
        lp, rp = join(strata_dir, rel), join(ref_dir, rel)
        try:
            sl = os.lstat(lp)
        except OSError as e:
            d.add(rel, None, raw="lstat on %s failed: %s" % (left_name, e))
            return None
        if expect_whiteout:
            if not stat.S_ISCHR(sl.st_mode) or sl.st_rdev != 0:
                got = kind_of(sl)
                if stat.S_ISCHR(sl.st_mode):
                    got += " " + _rdev(sl.st_rdev)
                d.add(rel, "whiteout", got, "char 0:0")
            return None
        sr = os.lstat(rp)
        kl, kr = kind_of(sl), kind_of(sr)
        if kl != kr:
            d.add(rel, "type", kl, kr)
            return None
        skipped = skip(rel, sl, sr)
        if "mode" not in skipped and stat.S_IMODE(sl.st_mode) != stat.S_IMODE(sr.st_mode):
            d.add(rel, "mode", _mode(stat.S_IMODE(sl.st_mode)), _mode(stat.S_IMODE(sr.st_mode)))
        if "uid" not in skipped and sl.st_uid != sr.st_uid:
            d.add(rel, "uid", sl.st_uid, sr.st_uid)
        if "gid" not in skipped and sl.st_gid != sr.st_gid:
            d.add(rel, "gid", sl.st_gid, sr.st_gid)
        check_mtime = "mtime" not in skipped
        if kl == "dir":
            if not dir_mtime or (tar_entries is not None and rel not in tar_entries):
                check_mtime = False
        if check_mtime and sl.st_mtime_ns != sr.st_mtime_ns:
            d.add(rel, "mtime", _mtime(sl.st_mtime_ns), _mtime(sr.st_mtime_ns))
        if kl == "file":
            if sl.st_size != sr.st_size:
                d.add(rel, "size", sl.st_size, sr.st_size)
            elif "content" not in skipped:
                try:
                    hl = file_sha256(lp)
                except OSError as e:
                    hl = "<read error: %s>" % e
                hr = file_sha256(rp)
                if hl != hr:
                    d.add(rel, "content sha256", hl[:16], hr[:16])
        elif kl == "symlink":
            tl, tr = os.readlink(lp), os.readlink(rp)
            if tl != tr:
                d.add(rel, "symlink target", tl, tr)
        elif kl in ("char", "block"):
            if sl.st_rdev != sr.st_rdev:
                d.add(rel, "rdev", _rdev(sl.st_rdev), _rdev(sr.st_rdev))
        if "xattrs" not in skipped:
            xl = read_xattrs(lp, ignore_xattrs)
            xr = read_xattrs(rp, ignore_xattrs)
            xr.update(extra_xattrs)
            if xl != xr:
                for name in sorted(set(xl) | set(xr)):
                    if xl.get(name) != xr.get(name):
                        d.add(rel, "xattr " + name, xl.get(name), xr.get(name))
        if kl != "dir":
            if "nlink" not in skipped and sl.st_nlink != sr.st_nlink:
                d.add(rel, "nlink", sl.st_nlink, sr.st_nlink)
            links_l.setdefault((sl.st_dev, sl.st_ino), []).append(rel)
            links_r.setdefault((sr.st_dev, sr.st_ino), []).append(rel)
            ino_l[rel] = (sl.st_dev, sl.st_ino)
            ino_r[rel] = (sr.st_dev, sr.st_ino)
        return kl

    def walk(rel):
        names_l = listdir(join(strata_dir, rel), left_name)
        names_r = listdir(join(ref_dir, rel), right_name)
        expected = {}  # name -> "whiteout" | "entry"
        opaque = False
        for n in names_r:
            if whiteouts and n == OPAQUE_MARKER:
                opaque = True
            elif whiteouts and n.startswith(WHITEOUT_PREFIX):
                expected[n[len(WHITEOUT_PREFIX):]] = "whiteout"
            else:
                expected.setdefault(n, "entry")
        if whiteouts and rel == "":
            # the root is not compared as an entry; other dirs get the xattr via compare_entry
            lx = read_xattrs(strata_dir, ignore_xattrs).get(OPAQUE_XATTR)
            if lx != (b"y" if opaque else None):
                d.add(rel, "xattr " + OPAQUE_XATTR, lx, b"y" if opaque else None)
        for n in sorted(set(names_l) - set(expected)):
            d.add(join(rel, n) if rel else n, None, raw="only in %s" % left_name)
        for n in sorted(set(expected) - set(names_l)):
            what = "whiteout" if expected[n] == "whiteout" else "entry"
            d.add(join(rel, n) if rel else n, None, raw="%s missing in %s" % (what, left_name))
        for n in sorted(set(names_l) & set(expected)):
            child = (rel + "/" + n) if rel else n
            extra = {}
            if whiteouts and expected[n] == "entry":
                rp = os.path.join(ref_dir, child)
                if os.path.isdir(rp) and not os.path.islink(rp) and \
                        os.path.lexists(os.path.join(rp, OPAQUE_MARKER)):
                    extra[OPAQUE_XATTR] = b"y"
            k = compare_entry(child, expected[n] == "whiteout", extra)
            if k == "dir":
                walk(child)

    walk("")

    # hard-link identity: the set of names sharing an inode must be the same on both sides
    seen = set()
    for rel in sorted(ino_l):
        if rel not in ino_r or rel in seen:
            continue
        group_l = sorted(links_l[ino_l[rel]])
        group_r = sorted(links_r[ino_r[rel]])
        seen.update(group_l)
        seen.update(group_r)
        if group_l != group_r:
            d.add(rel, "hard-link group", group_l, group_r)
    return d


def compare_layer(strata_dir, tar_dir, *, whiteouts=True, tar_entries=None, dir_mtime=True,
                  ignore_xattrs=IGNORED_XATTRS, skip=None, left_name="strata", right_name="tar",
                  limit=20):
    """Asserts that strata_dir shows exactly what tar_dir holds (see the module docstring).

    whiteouts: map .wh.* files and .wh..wh..opq of tar_dir to overlay whiteouts/opaque xattrs.
    tar_entries: member paths of the archive (normalized); directories not among them are
      compared without mtime. None: compare every mtime.
    dir_mtime: False to compare no directory mtimes at all.
    skip: callable(rel, lstat_left, lstat_right) -> set of checks to skip for that entry
      ("mode", "uid", "gid", "mtime", "content", "xattrs", "nlink").
    """
    diff_trees(strata_dir, tar_dir, whiteouts=whiteouts, tar_entries=tar_entries,
               dir_mtime=dir_mtime, ignore_xattrs=ignore_xattrs, skip=skip, left_name=left_name,
               right_name=right_name, limit=limit).check()

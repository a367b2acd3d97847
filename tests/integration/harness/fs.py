# SPDX-License-Identifier: Apache-2.0
"""Filesystem helpers: /proc/self/mountinfo with its octal escapes undone, unmounting what a test
left behind, calls through a FUSE mount bounded in time, and plain reads and walks of a tree."""

import collections
import errno
import hashlib
import os
import subprocess
import threading

import pytest

from .timeouts import READ_TIMEOUT

# ----------------------------------------------------------------------------------------------
# mountinfo
# ----------------------------------------------------------------------------------------------

# one line of /proc/self/mountinfo: id, dev (major:minor), mountpoint and source unescaped, opts
# the mount options and the super options together
MountEntry = collections.namedtuple("MountEntry", "id dev mountpoint fstype source opts")


def unescape_mountinfo(s):
    """Undoes the kernel's octal escapes (\\040 for a space, \\134 for a backslash, ...)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mountinfo():
    """[MountEntry] of every mount this process sees (reads no filesystem but /proc)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.rstrip("\n").partition(" - ")
            fields = pre.split(" ")
            if len(fields) < 6:
                continue
            pfields = post.split(" ")
            opts = set(fields[5].split(","))
            if len(pfields) >= 3:
                opts |= set(pfields[2].split(","))
            source = unescape_mountinfo(pfields[1]) if len(pfields) >= 2 else ""
            found.append(MountEntry(fields[0], fields[2], unescape_mountinfo(fields[4]),
                                    pfields[0], source, opts))
    return found


def mounts_at(path):
    """[(fstype, mount options + super options)] of the mounts stacked on `path` (no FS access)."""
    path = os.path.realpath(path)
    return [(e.fstype, e.opts) for e in mountinfo() if e.mountpoint == path]


def mount_ids(path):
    """[(mount id, major:minor, source)] of the mounts stacked on path."""
    path = os.path.realpath(path)
    return [(e.id, e.dev, e.source) for e in mountinfo() if e.mountpoint == path]


def mounts_under(prefix):
    """Mountpoints that start with prefix."""
    return [e.mountpoint for e in mountinfo() if e.mountpoint.startswith(prefix)]


def is_mountpoint(path):
    return bool(mounts_at(path))


def force_unmount(path, keep=0):
    """Best-effort: lazily unmounts the topmost mounts on path until at most `keep` remain."""
    for _ in range(8):
        if len(mounts_at(path)) <= keep:
            return
        for cmd in (["fusermount3", "-u", "-z", str(path)], ["umount", "-l", str(path)]):
            n = len(mounts_at(path))
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20)
            if len(mounts_at(path)) < n:
                break


# ----------------------------------------------------------------------------------------------
# calls through a mount, bounded
# ----------------------------------------------------------------------------------------------

def run_bounded(fn, timeout, on_timeout):
    """Runs fn() in a thread; when it does not finish within timeout, calls on_timeout() (which
    must unblock it, e.g. by killing a FUSE daemon) and raises TimeoutError."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        on_timeout()
        t.join(10)
        raise TimeoutError("operation did not finish within %ss" % timeout)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def bounded(m, fn, what="a call through the mount", timeout=READ_TIMEOUT):
    """fn() through the mount that m serves (a Mount, or the Daemons of a mount), bounded: a hung
    FUSE request kills m's daemons and fails the test with their logs."""
    try:
        return run_bounded(fn, timeout, m.kill)
    except TimeoutError:
        pytest.fail("%s hung for %ss; daemon killed; stderr:\n%s" % (what, timeout, m.stderr()))


def read_file(m, path, offset=0, size=-1, timeout=READ_TIMEOUT):
    """Reads through the mount of m (a Mount or Daemons), bounded as bounded() is."""
    def _read():
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read() if size < 0 else f.read(size)

    return bounded(m, _read, "reading %s" % path, timeout)


def assert_erofs(fn, *args, **kw):
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == errno.EROFS, "%s%r: expected EROFS, got %s" % (
        getattr(fn, "__name__", fn), args, ei.value)


# ----------------------------------------------------------------------------------------------
# reads and walks (unbounded: wrap them in bounded() when they go through a mount)
# ----------------------------------------------------------------------------------------------

def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def pread_full(fd, off, n):
    """n bytes at off (fewer at the end of the file), however many preads that takes."""
    out = b""
    while len(out) < n:
        b = os.pread(fd, n - len(out), off + len(out))
        if not b:
            break
        out += b
    return out


def file_sha256(path):
    """The hex sha256 of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def drop_cached_pages(path):
    """Evicts path's pages from the page cache, so that the next read goes to the filesystem."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def regular_files(root, nonempty=False):
    """Paths of the regular files under root (symlinks neither followed nor listed; with nonempty,
    only files of at least one byte), in os.walk order, names sorted within a directory."""
    out = []
    for d, _, names in os.walk(root):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p) and \
                    (not nonempty or os.path.getsize(p) > 0):
                out.append(p)
    return out


def largest_file(root):
    """The largest regular file under root (the first of equals), or None when it has none of at
    least one byte. Through a lazy mount, readdir and stat need no fetch: its content is cold."""
    best = None
    for p in regular_files(root, nonempty=True):
        size = os.lstat(p).st_size
        if best is None or size > best[0]:
            best = (size, p)
    return best[1] if best else None


def walk_lstat(root):
    """{path relative to root: os.lstat} of every entry below root."""
    found = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            found[os.path.relpath(p, root)] = os.lstat(p)
    return found


def du(path):
    """Bytes allocated to the files under path (st_blocks, as du shows)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total

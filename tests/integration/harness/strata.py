# SPDX-License-Identifier: Apache-2.0
"""strata itself: the binary and the tools the tests need, the CLI, mount daemons and takeovers of
their mounts, read-only overlays of layer directories, and the hosts.toml files strata reads."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .fs import bounded, force_unmount, is_mountpoint, mounts_at
from .timeouts import CMD_TIMEOUT, HANDOVER_TIMEOUT, INDEX_TIMEOUT, READY_TIMEOUT, STOP_TIMEOUT

REPO = Path(__file__).resolve().parents[3]
REQUIRED_TOOLS = ["docker-registry", "tar", "gzip", "zstd", "fusermount3", "mount", "umount",
                  "umoci", "chroot"]


def strata_binary():
    return Path(os.environ.get("STRATA_BIN") or REPO / "build" / "strata")


def skip_reason():
    """Why no integration test can run here (None when they can)."""
    b = strata_binary()
    if not b.is_file() or not os.access(b, os.X_OK):
        return "strata binary not found at %s (build it, or set STRATA_BIN)" % b
    if os.geteuid() != 0:
        return "integration tests need root (FUSE mounts, overlayfs, device nodes, foreign owners)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


def missing_tools():
    """The external tools the tests need that are not installed."""
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if not os.path.exists("/bin/busybox"):
        missing.append("/bin/busybox (busybox-static)")
    return missing


def notes(tag):
    """A print function for a module's figures: note("x") prints "[tag] x" (shown with -s)."""
    def note(msg):
        print("[%s] %s" % (tag, msg), flush=True)
    return note


# ----------------------------------------------------------------------------------------------
# the CLI
# ----------------------------------------------------------------------------------------------

class Strata:
    """Runs `strata --store STORE ARGS...`; returns a text CompletedProcess."""

    def __init__(self, binary, store):
        self.binary = str(binary)
        self.store = str(store)

    def __call__(self, *args, store=None, check=True, timeout=CMD_TIMEOUT, env=None):
        cmd = [self.binary, "--store", str(store or self.store)] + [str(a) for a in args]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           errors="replace", timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise AssertionError("%s exited %d\n--- stdout:\n%s--- stderr:\n%s" % (
                " ".join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def raw(self, *args, timeout=CMD_TIMEOUT):
        """Without --store (e.g. `strata umount MNT`)."""
        cmd = [self.binary] + [str(a) for a in args]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)

    def ls(self, store=None):
        p = self("--json", "ls", store=store)
        return json.loads(p.stdout)

    def pull_json(self, *refs, store=None):
        p = self("--json", "pull", *refs, store=store)
        return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]

    def stats(self, *opts, env=None):
        """`strata --json [opts] stats`, parsed."""
        return json.loads(self("--json", *opts, "stats", env=env).stdout)


def one_line(stderr):
    """The stderr of a failed command must be exactly one non-empty line."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one line on stderr, got %d:\n%s" % (len(lines), stderr)
    return lines[0]


def one_json(p):
    """The one JSON object a `strata --json` command printed (e.g. a pull of one reference)."""
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    assert len(objs) == 1, "expected one JSON line:\n%s" % p.stdout
    return objs[0]


def new_store(tmp_path, name):
    """An empty store directory tmp_path/store-NAME."""
    d = tmp_path / ("store-" + name)
    d.mkdir()
    return str(d)


def pulled_from_artifact(strata_bin, tmp_path, ref):
    """ref indexed by a store of its own (tmp_path/store-index) that pushes the index artifact,
    then pulled from that artifact into tmp_path/store-lazy, which holds no layer content yet:
    the Strata of store-lazy."""
    Strata(strata_bin, new_store(tmp_path, "index"))("index", "--push", ref, timeout=INDEX_TIMEOUT)
    run = Strata(strata_bin, new_store(tmp_path, "lazy"))
    run("pull", "--index=artifact", ref)
    return run


def public_tempdir(prefix):
    """A directory other users can traverse (pytest's tmp base is 0700): for mountpoints that a
    non-root test process must reach."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def mirror_toml(url, extra=""):
    """A hosts.toml [host] table: url serves pulls and resolves (plus the lines in extra)."""
    return '[host."%s"]\n  capabilities = ["pull", "resolve"]\n%s' % (url, extra)


def write_hosts_toml(hosts_dir, registry_host, text):
    """Writes <hosts_dir>/<registry_host>/hosts.toml (replacing any) and returns hosts_dir."""
    d = Path(hosts_dir) / registry_host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return str(hosts_dir)


# ----------------------------------------------------------------------------------------------
# mount daemons
# ----------------------------------------------------------------------------------------------

_ACTIVE_DAEMONS = set()
_ACTIVE_LOCK = threading.Lock()


def active_daemons():
    """The Mounts started and not cleaned up yet (for the watchdog that kills hung tests)."""
    with _ACTIVE_LOCK:
        return list(_ACTIVE_DAEMONS)


class Mount:
    """A `strata mount -f --store S MNT` daemon."""

    def __init__(self, binary, store, mnt, log, args=()):
        self.binary = str(binary)
        self.args = [str(a) for a in args]
        self.store = str(store)
        self.mnt = str(mnt)
        self.log = str(log)
        self.proc = None
        self.returncode = None
        self.mounts_before = 0

    @property
    def layers(self):
        return os.path.join(self.mnt, "layers")

    def layer(self, digest):
        return os.path.join(self.mnt, "layers", digest)

    def stderr(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, wait=True, create=True):
        if create:
            os.makedirs(self.mnt, exist_ok=True)
        self.mounts_before = len(mounts_at(self.mnt))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "mount", "-f", "--store", self.store] +
                                         self.args + [self.mnt],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        with _ACTIVE_LOCK:
            _ACTIVE_DAEMONS.add(self)
        if wait:
            self.wait_ready()
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                pytest.fail("strata mount %s exited with %d before the mount was ready; stderr:\n%s"
                            % (self.mnt, rc, self.stderr()))
            if self.ours_mounted():
                if bounded(self, lambda: os.path.isdir(self.layers), "stat(%s)" % self.layers,
                           max(1.0, deadline - time.monotonic())):
                    return
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("strata mount %s: %s/layers did not appear within %ss; stderr:\n%s"
                            % (self.mnt, self.mnt, timeout, self.stderr()))
            time.sleep(0.05)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Waits for the daemon to exit; returns its exit code, or None if it is still running."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def umount(self, timeout=30):
        """`strata umount MNT`; returns the CompletedProcess."""
        return subprocess.run([self.binary, "umount", self.mnt], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=timeout)

    def ours_mounted(self):
        """True while a mount beyond those that were there before start() is on mnt."""
        return len(mounts_at(self.mnt)) > self.mounts_before

    def cleanup(self):
        """Unmounts (strata umount, then fusermount3 -u -z / umount -l) what this daemon mounted,
        and stops it (kill after STOP_TIMEOUT). Mounts that were there before are left alone."""
        try:
            if self.proc is not None and self.proc.poll() is None and self.ours_mounted():
                try:
                    self.umount(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            if self.ours_mounted():
                force_unmount(self.mnt, keep=self.mounts_before)
            if self.proc is not None and self.proc.returncode is None:
                if self.wait_exit(STOP_TIMEOUT) is None:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT)
                    self.returncode = self.proc.returncode
            # a daemon killed while mounted leaves a dead mount behind
            if self.ours_mounted():
                force_unmount(self.mnt, keep=self.mounts_before)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE_DAEMONS.discard(self)


def socket_answers(store):
    """True when something accepts a connection on the store's control socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(os.path.join(store, "strata.sock"))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Daemons:
    """The daemons serving one mount, in order: the one that mounted, then each that took over
    (`strata mount --takeover`). kill() and stderr() cover them all, so that bounded() and
    read_file() take a Daemons as they take a Mount."""

    def __init__(self, strata_bin, store, mnt, tmp_path):
        self.bin, self.store, self.mnt, self.tmp = str(strata_bin), str(store), str(mnt), tmp_path
        self.all = []

    @property
    def current(self):
        return self.all[-1]

    def layer(self, digest):
        return self.current.layer(digest)

    def _new(self, args):
        m = Mount(self.bin, self.store, self.mnt, self.tmp / ("daemon%d.log" % len(self.all)), args)
        self.all.append(m)
        return m

    def start(self, args=()):
        return self._new(args).start()

    def takeover(self, args=()):
        """`strata mount -f --takeover` and waits until the old daemon exited 0 and the new one
        listens on the store's socket. Returns the new Mount."""
        old = self.current
        m = self._new(("--takeover",) + tuple(args))
        m.start(wait=False, create=False)
        m.mounts_before = old.mounts_before  # the mount it serves now is "ours" for cleanup
        rc = old.wait_exit(HANDOVER_TIMEOUT)
        if rc is None:
            self.kill()
            pytest.fail("the old daemon did not exit within %ss of the takeover; logs:\n%s"
                        % (HANDOVER_TIMEOUT, self.stderr()))
        assert rc == 0, "the old daemon exited %d; logs:\n%s" % (rc, self.stderr())
        deadline = time.monotonic() + HANDOVER_TIMEOUT
        while not socket_answers(self.store):
            if m.proc.poll() is not None:
                pytest.fail("the new daemon exited %d; logs:\n%s" % (m.proc.returncode,
                                                                      self.stderr()))
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("the new daemon did not listen within %ss; logs:\n%s"
                            % (HANDOVER_TIMEOUT, self.stderr()))
            time.sleep(0.05)
        return m

    def kill(self):
        for m in self.all:
            m.kill()

    def stderr(self):
        """The logs of every daemon, the last 3000 bytes of each."""
        return "\n".join("--- daemon %d:\n%s" % (i, m.stderr()[-3000:])
                         for i, m in enumerate(self.all))

    def cleanup(self):
        for m in reversed(self.all):
            m.cleanup()


# ----------------------------------------------------------------------------------------------
# overlays of layer directories
# ----------------------------------------------------------------------------------------------

class Overlay:
    """A read-only overlayfs of lowerdirs (top first), with more mount options in extra (e.g.
    "nosuid,nodev")."""

    def __init__(self, lowers, target, extra=""):
        self.lowers = [str(l) for l in lowers]
        self.target = str(target)
        os.makedirs(self.target, exist_ok=True)
        # "sha256:<hex>" has a colon, overlayfs's lowerdir separator: escape it (and \\ and ,)
        esc = [l.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")
               for l in self.lowers]
        opts = "ro,%slowerdir=%s" % (extra + "," if extra else "", ":".join(esc))
        p = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, self.target],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError("mount -t overlay -o %s failed: %s" % (opts, p.stderr.strip()))

    def cleanup(self):
        if is_mountpoint(self.target):
            p = subprocess.run(["umount", self.target], capture_output=True, timeout=30)
            if p.returncode != 0:
                subprocess.run(["umount", "-l", self.target], capture_output=True, timeout=30)

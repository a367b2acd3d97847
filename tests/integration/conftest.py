# SPDX-License-Identifier: Apache-2.0
"""Fixtures for strata's integration tests.

Everything here runs as root against a local docker-registry (CNCF Distribution) on 127.0.0.1 and
real FUSE mounts. The whole session is skipped, with the reason, when the strata binary, root or
/dev/fuse is missing; a missing external tool (docker-registry, umoci, zstd, ...) fails the tests.

Environment:
  STRATA_BIN             the binary to test (default: <repo>/build/strata)
  STRATA_TEST_TIMEOUT    seconds after which a test's strata daemons are killed so that a hung FUSE
                         request fails instead of hanging the run (default 300)
  STRATA_BIG_MIB         size of the lazy-loading tests' big image (mkfixture big; default 200)
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MKFIXTURE = REPO / "tools" / "mkfixture.py"
sys.path.insert(0, str(HERE))

import treecmp  # noqa: E402

CMD_TIMEOUT = 120          # one strata command
READY_TIMEOUT = 20         # mount readiness, registry readiness
STOP_TIMEOUT = 10          # daemon exit after umount
TEST_TIMEOUT = int(os.environ.get("STRATA_TEST_TIMEOUT", "300"))
REQUIRED_TOOLS = ["docker-registry", "tar", "gzip", "zstd", "fusermount3", "mount", "umount",
                  "umoci", "chroot"]


# ----------------------------------------------------------------------------------------------
# session-wide skip
# ----------------------------------------------------------------------------------------------

def strata_binary():
    return Path(os.environ.get("STRATA_BIN") or REPO / "build" / "strata")


def _skip_reason():
    b = strata_binary()
    if not b.is_file() or not os.access(b, os.X_OK):
        return "strata binary not found at %s (build it, or set STRATA_BIN)" % b
    if os.geteuid() != 0:
        return "integration tests need root (FUSE mounts, overlayfs, device nodes, foreign owners)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    return None


def _missing_tools():
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if not os.path.exists("/bin/busybox"):
        missing.append("/bin/busybox (busybox-static)")
    return missing


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason:
        mark = pytest.mark.skip(reason=reason)
        for item in items:
            item.add_marker(mark)


@pytest.fixture(scope="session")
def strata_bin():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    missing = _missing_tools()
    if missing:  # not a skip: CI installs them (tools/install-deps.sh), so this is a real failure
        pytest.fail("missing test tools: %s" % ", ".join(missing), pytrace=False)
    return str(strata_binary())


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts_at(path):
    """[(fstype, mount options + super options)] of the mounts stacked on `path` (no FS access)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.rstrip("\n").partition(" - ")
            fields = pre.split(" ")
            if len(fields) < 6 or _unescape_mountinfo(fields[4]) != path:
                continue
            pfields = post.split(" ")
            fstype = pfields[0]
            opts = set(fields[5].split(","))
            if len(pfields) >= 3:
                opts |= set(pfields[2].split(","))
            found.append((fstype, opts))
    return found


def is_mountpoint(path):
    return bool(mounts_at(path))


def one_line(stderr):
    """The stderr of a failed command must be exactly one non-empty line."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one line on stderr, got %d:\n%s" % (len(lines), stderr)
    return lines[0]


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


def read_file(m, path, offset=0, size=-1, timeout=120):
    """Reads through the mount of daemon m (a Mount), bounded: a hung FUSE request kills the
    daemon and fails the test."""
    def _read():
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read() if size < 0 else f.read(size)

    try:
        return run_bounded(_read, timeout, m.kill)
    except TimeoutError:
        pytest.fail("reading %s hung for %ss; daemon killed; stderr:\n%s" % (path, timeout,
                                                                            m.stderr()))


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
# registry
# ----------------------------------------------------------------------------------------------

class Registry:
    """docker-registry (Distribution) on 127.0.0.1 with filesystem storage in workdir."""

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.storage = self.workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.config = self.workdir / "config.yml"
        self.log = self.workdir / "registry.log"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            "http:\n  addr: %s\n  secret: strata-tests\n" % (self.storage, self.host))
        self.proc = None

    @property
    def url(self):
        return "http://" + self.host

    def _ping(self):
        try:
            with urllib.request.urlopen(self.url + "/v2/", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None

    def start(self):
        if self.proc and self.proc.poll() is None:
            return
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited with %s:\n%s" % (self.proc.returncode,
                                                                           self.log_tail()))
            if self._ping() == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("docker-registry not ready on %s within %ss:\n%s" %
                           (self.host, READY_TIMEOUT, self.log_tail()))

    def stop(self):
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._ping() is not None:
            time.sleep(0.1)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def ref(self, name):
        return "%s/%s" % (self.host, name)


@pytest.fixture(scope="session")
def registry(strata_bin, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(reg.storage, ignore_errors=True)


@pytest.fixture
def running_registry(registry):
    """The session registry, guaranteed to be running again after the test (for stop() tests)."""
    registry.start()
    try:
        yield registry
    finally:
        registry.start()


# ----------------------------------------------------------------------------------------------
# fixture images
# ----------------------------------------------------------------------------------------------

def run_mkfixture(*args, timeout=300):
    p = subprocess.run([sys.executable, str(MKFIXTURE)] + [str(a) for a in args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("mkfixture.py %s failed (%d):\n%s%s" % (" ".join(map(str, args)),
                                                                   p.returncode, p.stdout, p.stderr))
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


@pytest.fixture(scope="session")
def fixtures(registry, tmp_path_factory):
    """mkfixture build + push, once per session."""
    layout = tmp_path_factory.mktemp("layout")
    run_mkfixture("build", "--out", layout)
    run_mkfixture("push", "--layout", layout, "--registry", registry.host)
    try:
        yield Fixtures(layout, registry)
    finally:
        shutil.rmtree(layout, ignore_errors=True)


@pytest.fixture(scope="session")
def bad_fixtures(registry, tmp_path_factory):
    """mkfixture bad + push, once per session."""
    layout = tmp_path_factory.mktemp("bad-layout")
    run_mkfixture("bad", "--out", layout)
    run_mkfixture("push", "--layout", layout, "--registry", registry.host)
    try:
        yield Fixtures(layout, registry)
    finally:
        shutil.rmtree(layout, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# layer extraction with GNU tar (the reference)
# ----------------------------------------------------------------------------------------------

DECOMPRESS = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-q", "-dc"], "none": ["cat"]}


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


@pytest.fixture(scope="session")
def extract(tmp_path_factory):
    """extract(blob_path, compression) -> directory with the GNU tar extraction (session temp)."""
    base = tmp_path_factory.mktemp("extract")
    counter = [0]

    def _extract(blob_path, compression):
        counter[0] += 1
        return extract_blob(blob_path, compression, base / ("x%d" % counter[0]))

    try:
        yield _extract
    finally:
        shutil.rmtree(base, ignore_errors=True)


class LayerTree:
    def __init__(self, name, info, path, entries):
        self.name, self.info, self.path, self.entries = name, info, path, entries

    def compare(self, strata_dir, **kw):
        treecmp.compare_layer(strata_dir, self.path, tar_entries=self.entries, **kw)


@pytest.fixture(scope="session")
def layer_tree(fixtures, extract):
    """layer_tree(name or digest) -> LayerTree (extraction + member list), cached per session."""
    cache = {}

    def _get(layer):
        name = layer if layer in fixtures.layers else fixtures.layer_by_digest(layer)[0]
        if name not in cache:
            info = fixtures.layers[name]
            blob = fixtures.blob_path(name)
            cache[name] = LayerTree(name, info, extract(blob, info["compression"]),
                                    treecmp.list_tar_entries(str(blob), info["compression"]))
        return cache[name]

    return _get


# ----------------------------------------------------------------------------------------------
# strata commands and daemons
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


_ACTIVE_DAEMONS = set()
_ACTIVE_LOCK = threading.Lock()


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
            if self._ours_mounted():
                try:
                    if run_bounded(lambda: os.path.isdir(self.layers),
                                   max(1.0, deadline - time.monotonic()), self.kill):
                        return
                except TimeoutError:
                    pytest.fail("stat(%s) hung; daemon killed; stderr:\n%s" % (self.layers,
                                                                             self.stderr()))
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

    def _ours_mounted(self):
        """True while a mount beyond those that were there before start() is on mnt."""
        return len(mounts_at(self.mnt)) > self.mounts_before

    def cleanup(self):
        """Unmounts (strata umount, then fusermount3 -u -z / umount -l) what this daemon mounted,
        and stops it (kill after STOP_TIMEOUT). Mounts that were there before are left alone."""
        try:
            if self.proc is not None and self.proc.poll() is None and self._ours_mounted():
                try:
                    self.umount(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            if self._ours_mounted():
                force_unmount(self.mnt, keep=self.mounts_before)
            if self.proc is not None and self.proc.returncode is None:
                if self.wait_exit(STOP_TIMEOUT) is None:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT)
                    self.returncode = self.proc.returncode
            # a daemon killed while mounted leaves a dead mount behind
            if self._ours_mounted():
                force_unmount(self.mnt, keep=self.mounts_before)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE_DAEMONS.discard(self)


@pytest.fixture(autouse=True)
def _fuse_watchdog(request):
    """Kills the strata daemons when a test runs past TEST_TIMEOUT: a hung FUSE request then fails
    with ENOTCONN instead of blocking the whole run."""
    def fire():
        with _ACTIVE_LOCK:
            daemons = list(_ACTIVE_DAEMONS)
        for d in daemons:
            sys.stderr.write("\n[watchdog] %s ran over %ss: killing strata daemon pid %s (%s)\n"
                             % (request.node.nodeid, TEST_TIMEOUT, d.proc.pid if d.proc else "-",
                                d.mnt))
            d.kill()

    t = threading.Timer(TEST_TIMEOUT, fire)
    t.daemon = True
    t.start()
    try:
        yield
    finally:
        t.cancel()


@pytest.fixture
def store(tmp_path):
    """An empty store directory, removed after the test (after its daemons are stopped)."""
    d = tmp_path / "store"
    d.mkdir()
    try:
        yield str(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def strata(strata_bin, store):
    """strata(*args, store=..., check=True) -> CompletedProcess (text); --store defaults to `store`."""
    return Strata(strata_bin, store)


def public_tempdir(prefix):
    """A directory other users can traverse (pytest's tmp base is 0700): for mountpoints that a
    non-root test process must reach."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def mount(strata_bin, store, tmp_path):
    """mount(store_dir=None, mnt=None, wait=True, create=True, args=()) -> Mount (started; with
    wait, ready). args are extra `strata mount` options. All daemons are stopped and their mounts
    removed at teardown."""
    mounts = []

    def _mount(store_dir=None, mnt=None, wait=True, create=True, args=()):
        n = len(mounts)
        mnt = mnt or str(tmp_path / ("mnt%d" % n))
        m = Mount(strata_bin, store_dir or store, mnt, tmp_path / ("daemon%d.log" % n), args)
        mounts.append(m)
        m.start(wait=wait, create=create)
        return m

    try:
        yield _mount
    finally:
        for m in reversed(mounts):
            m.cleanup()


class Overlay:
    """A read-only overlayfs of lowerdirs (top first)."""

    def __init__(self, lowers, target):
        self.lowers = [str(l) for l in lowers]
        self.target = str(target)
        os.makedirs(self.target, exist_ok=True)
        # "sha256:<hex>" has a colon, overlayfs's lowerdir separator: escape it (and \\ and ,)
        esc = [l.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")
               for l in self.lowers]
        opts = "ro,lowerdir=" + ":".join(esc)
        p = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, self.target],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError("mount -t overlay -o %s failed: %s" % (opts, p.stderr.strip()))

    def cleanup(self):
        if is_mountpoint(self.target):
            p = subprocess.run(["umount", self.target], capture_output=True, timeout=30)
            if p.returncode != 0:
                subprocess.run(["umount", "-l", self.target], capture_output=True, timeout=30)


def assert_erofs(fn, *args, **kw):
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == errno.EROFS, "%s%r: expected EROFS, got %s" % (
        getattr(fn, "__name__", fn), args, ei.value)


# ----------------------------------------------------------------------------------------------
# nginx in front of a registry: an access log of every request (method, URI, status, bytes, Range)
# ----------------------------------------------------------------------------------------------

NGINX_LOG_FORMAT = ('\'{"method":"$request_method","uri":"$request_uri","status":$status,'
                    '"bytes":$body_bytes_sent,"range":"$http_range","msec":"$msec",'
                    '"conn":$connection,"request_time":"$request_time"}\'')


class Nginx:
    """`nginx -p PREFIX -c PREFIX/nginx.conf -g 'daemon off;'` on 127.0.0.1:PORT, a transparent
    reverse proxy to registry (a Registry or "127.0.0.1:PORT"), logging one JSON object per request
    to PREFIX/access.log (unbuffered: a line appears when its request completes)."""

    def __init__(self, workdir, registry, port=None):
        self.prefix = Path(workdir)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.upstream = registry if isinstance(registry, str) else registry.host
        self.port = port or free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.conf = self.prefix / "nginx.conf"
        self.access_log = self.prefix / "access.log"
        self.error_log = self.prefix / "error.log"
        self.pid_file = self.prefix / "nginx.pid"
        self.stdio_log = self.prefix / "nginx.out"
        self.proc = None
        self._offset = 0
        tmp = self.prefix / "tmp"
        tmp.mkdir(exist_ok=True)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            "%s"
            "worker_processes 1;\n"
            "error_log %s info;\n"
            "pid %s;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "  log_format strata escape=json %s;\n"
            "  access_log %s strata;\n"
            "  client_body_temp_path %s/body;\n"
            "  proxy_temp_path %s/proxy;\n"
            "  fastcgi_temp_path %s/fastcgi;\n"
            "  uwsgi_temp_path %s/uwsgi;\n"
            "  scgi_temp_path %s/scgi;\n"
            "  server {\n"
            "    listen %s;\n"
            "    client_max_body_size 0;\n"
            "    location / {\n"
            "      proxy_pass http://%s;\n"
            "      proxy_set_header Host $http_host;\n"
            "      proxy_request_buffering off;\n"
            "      proxy_buffering off;\n"
            "      proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\";\n"
            "      proxy_read_timeout 300s;\n"
            "      proxy_send_timeout 300s;\n"
            "    }\n"
            "  }\n"
            "}\n" % (user, self.error_log, self.pid_file, NGINX_LOG_FORMAT, self.access_log,
                     tmp, tmp, tmp, tmp, tmp, self.host, self.upstream))

    @property
    def url(self):
        return "http://" + self.host

    def ref(self, name):
        """A reference through this proxy: 127.0.0.1:PORT/big:latest."""
        return "%s/%s" % (self.host, name)

    def _connectable(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log_tail(self, n=30):
        out = []
        for p in (self.stdio_log, self.error_log):
            try:
                out += p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(out)

    def start(self):
        if self.proc and self.proc.poll() is None:
            return self
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                          else None)
        if nginx is None:
            pytest.fail("nginx is not installed (apt-get install nginx; tools/install-deps.sh "
                        "installs it): the lazy-loading tests log registry requests through it",
                        pytrace=False)
        self.access_log.touch()
        with open(self.stdio_log, "ab") as log:
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log),
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with %s:\n%s" % (self.proc.returncode,
                                                                 self.log_tail()))
            if self._connectable():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx not listening on %s within %ss:\n%s" % (self.host, READY_TIMEOUT,
                                                                          self.log_tail()))

    def stop(self):
        if not self.proc:
            return
        graceful = True
        if self.proc.poll() is None:
            # SIGQUIT: graceful (the workers finish and exit first); then SIGTERM, then SIGKILL
            for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
                if sig != signal.SIGQUIT:
                    graceful = False
                if sig == signal.SIGKILL:
                    # the workers are in the master's process group (start_new_session): kill
                    # them with it, while the group still exists
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(STOP_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if not graceful:
            try:  # a worker that outlived its master
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None

    # -- the access log --

    def _read_from(self, offset):
        try:
            with open(self.access_log, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        # only complete lines (nginx writes a line with one write(2), but be safe)
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            if line.strip():
                out.append(json.loads(line.decode("utf-8", "replace")))
        return out

    def settle(self, quiet=0.3, timeout=5.0):
        """Waits until the access log has not grown for `quiet` seconds (bounded by timeout): a
        request's line is written when nginx finishes it, a moment after the client has its
        response."""
        deadline = time.monotonic() + timeout
        last = -1
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                size = self.access_log.stat().st_size
            except FileNotFoundError:
                size = 0
            now = time.monotonic()
            if size != last:
                last, stable_since = size, now
            elif now - stable_since >= quiet:
                return
            time.sleep(0.05)

    def requests(self, settle=True, since=None):
        """The requests logged since the last clear() (or since offset `since`), oldest first, as
        dicts: method, uri, status (int), bytes ($body_bytes_sent, int), range ($http_range, "" when
        absent), msec, conn, request_time."""
        if settle:
            self.settle()
        return self._read_from(self._offset if since is None else since)

    def clear(self):
        """Forgets the requests logged so far (remembers the log's size)."""
        self.settle()
        try:
            self._offset = self.access_log.stat().st_size
        except FileNotFoundError:
            self._offset = 0
        return self._offset

    @staticmethod
    def is_blob_uri(uri, digest=None):
        path = uri.split("?", 1)[0]
        if not path.startswith("/v2/") or "/blobs/" not in path:
            return False
        tail = path.rsplit("/blobs/", 1)[1]
        if tail.startswith("uploads"):
            return False
        return digest is None or tail == digest

    def blob_requests(self, digest=None, reqs=None, method=None):
        """Requests (since clear()) for /v2/<repo>/blobs/<digest> (any blob when digest is None;
        upload URLs excluded), optionally only those with `method`."""
        reqs = self.requests() if reqs is None else reqs
        return [r for r in reqs if self.is_blob_uri(r["uri"], digest) and
                (method is None or r["method"] == method)]

    def bytes_for(self, digest, reqs=None):
        """Body bytes nginx sent (since clear()) for GETs of blob `digest`."""
        return sum(r["bytes"] for r in self.blob_requests(digest, reqs, method="GET"))


def format_requests(reqs, limit=60):
    lines = ["%s %s -> %s, %d bytes%s" % (r["method"], r["uri"], r["status"], r["bytes"],
                                           ", Range: " + r["range"] if r["range"] else "")
             for r in reqs[:limit]]
    if len(reqs) > limit:
        lines.append("... and %d more" % (len(reqs) - limit))
    return "\n".join(lines) or "(no requests)"


@pytest.fixture(scope="session")
def nginx_proxy(strata_bin, tmp_path_factory):
    """nginx_proxy(registry) -> a started Nginx in front of registry (one per registry for the
    session; stopped at the end)."""
    proxies = {}

    def _get(registry):
        host = registry if isinstance(registry, str) else registry.host
        if host not in proxies:
            proxies[host] = Nginx(tmp_path_factory.mktemp("nginx"), host).start()
        return proxies[host]

    try:
        yield _get
    finally:
        for n in proxies.values():
            n.stop()


@pytest.fixture(scope="session")
def lazy_registry(strata_bin, tmp_path_factory):
    """A registry of its own for the lazy-loading tests (big:latest, index artifacts), so that
    artifacts pushed there do not change how the other tests' pulls behave."""
    reg = Registry(tmp_path_factory.mktemp("lazy-registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(reg.storage, ignore_errors=True)


class BigFixtures(Fixtures):
    """mkfixture big: big:latest with one gzip layer, pushed to its own registry, plus an nginx
    in front of that registry (`nginx`; `ref()` goes through it, `direct_ref()` does not)."""

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


@pytest.fixture(scope="session")
def big(lazy_registry, nginx_proxy, tmp_path_factory):
    """mkfixture big (STRATA_BIG_MIB MiB, default 200) pushed to lazy_registry, once per
    session."""
    layout = tmp_path_factory.mktemp("big-layout")
    mib = os.environ.get("STRATA_BIG_MIB", "200")
    run_mkfixture("big", "--out", layout, "--size-mib", mib)
    run_mkfixture("push", "--layout", layout, "--registry", lazy_registry.host)
    try:
        yield BigFixtures(layout, lazy_registry, nginx_proxy(lazy_registry))
    finally:
        shutil.rmtree(layout, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# a private containerd, for ctr-remote (stargz-snapshotter): eStargz conversion of fixture images
# ----------------------------------------------------------------------------------------------

CONTAINERD_NAMESPACE = "strata-test"
CTR_TIMEOUT = 120      # one ctr-remote command (convert of a ~50 MiB layer takes a few seconds)


def _local_no_proxy_env():
    """The environment for Go clients talking to 127.0.0.1: never through a proxy."""
    env = dict(os.environ)
    for k in ("NO_PROXY", "no_proxy"):
        env[k] = ",".join(x for x in (env.get(k, ""), "127.0.0.1,localhost") if x)
    return env


class Containerd:
    """`containerd --config CFG --root R --state S --address A` in a directory of its own under /tmp
    (/tmp/strata-ctd-XXXXXXXX: a unix socket path must stay below 108 bytes, pytest's tmp paths can
    be longer), with the CRI plugin disabled. ctr() runs `ctr-remote --address A -n strata-test`."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="strata-ctd-", dir="/tmp"))
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.address = str(self.dir / "c.sock")
        self.config = self.dir / "config.toml"
        self.log = self.dir / "containerd.log"
        self.proc = None
        # opt: the plugin otherwise creates /opt/containerd; the debug/metrics endpoints are off
        self.config.write_text(
            'version = 2\n'
            'root = "%s"\n'
            'state = "%s"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            '[grpc]\n'
            '  address = "%s"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            '  path = "%s"\n' % (self.root, self.state, self.address, self.dir / "opt"))

    def log_tail(self, n=20):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self):
        """Starts containerd and waits (bounded) until `ctr-remote version` answers. Returns None,
        or the reason why containerd cannot run here (its own last log lines)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config), "--root", str(self.root), "--state",
                 str(self.state), "--address", self.address],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "containerd exited with %s at startup:\n%s" % (self.proc.returncode,
                                                                     self.log_tail())
            if os.path.exists(self.address):
                try:
                    p = self.ctr("version", timeout=10, check=False)
                except subprocess.TimeoutExpired:
                    p = None
                if p is not None and p.returncode == 0 and "Server:" in p.stdout:
                    return None
            time.sleep(0.1)
        return "containerd did not answer on %s within %ss:\n%s" % (self.address, READY_TIMEOUT,
                                                                    self.log_tail())

    def ctr(self, *args, timeout=CTR_TIMEOUT, check=True):
        cmd = ["ctr-remote", "--address", self.address, "-n", CONTAINERD_NAMESPACE] + \
            [str(a) for a in args]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           errors="replace", timeout=timeout, env=_local_no_proxy_env())
        if check and p.returncode != 0:
            raise AssertionError("%s exited %d\n--- stdout:\n%s--- stderr:\n%s--- containerd log:\n"
                                 "%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:],
                                         p.stderr[-3000:], self.log_tail()))
        return p

    def stop(self):
        """terminate, bounded wait, kill; then removes its directory (after unmounting anything
        left mounted under it: a snapshot mount must not be deleted through)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT)
        finally:
            self.proc = None
            prefix = str(self.dir) + "/"
            with open("/proc/self/mountinfo") as f:
                left = [_unescape_mountinfo(l.split(" ")[4]) for l in f]
            left = [m for m in left if m.startswith(prefix)]
            for m in sorted(left, key=len, reverse=True):
                subprocess.run(["umount", "-l", m], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            with open("/proc/self/mountinfo") as f:
                still = [l for l in f if _unescape_mountinfo(l.split(" ")[4]).startswith(prefix)]
            if not still:
                shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def containerd(strata_bin):
    """A private containerd for ctr-remote (stargz-snapshotter 0.12: `ctr-remote images convert
    --estargz`), stopped and removed at the end of the session. A missing binary fails (tools/
    install-deps.sh installs containerd and stargz-snapshotter); a containerd that cannot start
    here skips, with its own error."""
    missing = [t for t in ("containerd", "ctr-remote") if shutil.which(t) is None]
    if missing:
        pytest.fail("missing test tools: %s (apt-get install containerd stargz-snapshotter; "
                    "tools/install-deps.sh installs them)" % ", ".join(missing), pytrace=False)
    ctd = Containerd()
    try:
        reason = ctd.start()
        if reason:
            pytest.skip("a private containerd cannot run here: " + reason)
        yield ctd
    finally:
        ctd.stop()


# ----------------------------------------------------------------------------------------------
# mirrors (hosts.toml): TLS nginx, a corrupting proxy, certificates
# ----------------------------------------------------------------------------------------------

class Pki:
    """A test CA, a server certificate for IP 127.0.0.1 and a client certificate, made with the
    openssl CLI in workdir: ca.crt, server.crt/.key, client.crt/.key."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.crt"
        self.server_cert, self.server_key = self.dir / "server.crt", self.dir / "server.key"
        self.client_cert, self.client_key = self.dir / "client.crt", self.dir / "client.key"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                      "-keyout", self.dir / "ca.key", "-out", self.ca,
                      "-subj", "/CN=strata test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._leaf("server", "/CN=127.0.0.1",
                   "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        self._leaf("client", "/CN=strata test client", "extendedKeyUsage=clientAuth\n")

    def _openssl(self, *args):
        p = subprocess.run(["openssl"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("openssl %s failed:\n%s" % (args[0], p.stderr))

    def _leaf(self, name, subj, ext):
        ext_file = self.dir / (name + ".ext")
        ext_file.write_text(ext)
        csr = self.dir / (name + ".csr")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.dir / (name + ".key"),
                      "-out", csr, "-subj", subj)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.dir / "ca.key",
                      "-CAcreateserial", "-days", "2", "-out", self.dir / (name + ".crt"),
                      "-extfile", ext_file)


class TlsNginx(Nginx):
    """An Nginx that serves HTTPS with pki's server certificate; with verify_client, it requires a
    client certificate signed by pki's CA."""

    def __init__(self, workdir, registry, pki, verify_client=False):
        super().__init__(workdir, registry)
        tls = ("    listen %s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n" %
               (self.host, pki.server_cert, pki.server_key))
        if verify_client:
            tls += "    ssl_client_certificate %s;\n    ssl_verify_client on;\n" % pki.ca
        conf = self.conf.read_text()
        plain = "    listen %s;\n" % self.host
        assert plain in conf
        self.conf.write_text(conf.replace(plain, tls))

    @property
    def url(self):
        return "https://" + self.host


class ProxiedRequest:
    """What a ForwardingProxy's body hook gets about one request and its upstream response."""

    def __init__(self, command, path, headers, status, resp_headers):
        self.command = command
        self.path = path                              # with the query
        self.bare_path = path.split("?", 1)[0]
        self.digest = (self.bare_path.rsplit("/blobs/", 1)[1]
                       if "/blobs/" in self.bare_path else None)
        self.range = headers.get("Range")
        self.status = status
        self.resp_headers = resp_headers


class ForwardingProxy:
    """A small HTTP reverse proxy on 127.0.0.1 to upstream ("127.0.0.1:PORT") for GET and HEAD
    (Range, Accept and Authorization are forwarded). Each response body goes through
    on_body(req, body) (a ProxiedRequest) before it is sent, which returns the body to send, or
    (body, n) to send the full body's Content-Length but only its first n bytes and then close the
    connection (a body cut short). Subclasses override on_body; it runs on the proxy's threads
    (take self.lock for shared state). Records (command, path, status) in requests."""

    def __init__(self, upstream):
        import http.client
        import http.server

        self.upstream = upstream
        self.requests = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                host, port = proxy.upstream.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                hdrs = {k: v for k, v in self.headers.items()
                        if k.lower() in ("range", "accept", "authorization")}
                try:
                    conn.request(self.command, self.path, headers=hdrs)
                    resp = conn.getresponse()
                    body = resp.read()
                finally:
                    conn.close()
                req = ProxiedRequest(self.command, self.path, hdrs, resp.status,
                                     resp.getheaders())
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, resp.status))
                out = proxy.on_body(req, body)
                cut = None
                if isinstance(out, tuple):
                    out, cut = out
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                if cut is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if cut is not None:
                    self.wfile.write(out[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(out)

            do_GET = _forward
            do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on_body(self, req, body):
        return body

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(STOP_TIMEOUT)


class CorruptingProxy(ForwardingProxy):
    """A ForwardingProxy that flips one byte in the middle of every 2xx GET body of a blob in
    `corrupt` (digests) for which when(req, body) holds (default: always), for mirror tests: what
    it serves must never be stored or served by strata. Counts the bodies it corrupted."""

    def __init__(self, upstream, corrupt, when=None):
        self.corrupt = set(corrupt)
        self.when = when
        self.corrupted = 0
        super().__init__(upstream)

    def on_body(self, req, body):
        if (req.command == "GET" and req.digest in self.corrupt and 200 <= req.status < 300 and
                body and (self.when is None or self.when(req, body))):
            b = bytearray(body)
            b[len(b) // 2] ^= 0xFF
            with self.lock:
                self.corrupted += 1
            return bytes(b)
        return body


def write_hosts_toml(hosts_dir, registry_host, text):
    """Writes <hosts_dir>/<registry_host>/hosts.toml (replacing any) and returns hosts_dir."""
    d = Path(hosts_dir) / registry_host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return str(hosts_dir)

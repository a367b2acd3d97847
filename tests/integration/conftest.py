# SPDX-License-Identifier: Apache-2.0
"""Fixtures for strata's integration tests; the servers and helpers they use are in harness/.

Everything here runs as root against a local docker-registry (CNCF Distribution) on 127.0.0.1 and
real FUSE mounts. The whole session is skipped, with the reason, when the strata binary, root or
/dev/fuse is missing; a missing external tool (docker-registry, umoci, zstd, ...) fails the tests.

Environment:
  STRATA_BIN             the binary to test (default: <repo>/build/strata)
  STRATA_TEST_TIMEOUT    seconds after which a test's strata daemons are killed so that a hung FUSE
                         request fails instead of hanging the run (default 300)
  STRATA_BIG_MIB         size of the lazy-loading tests' big image (mkfixture big; default 200)
"""

import contextlib
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.containerd import Containerd  # noqa: E402
from harness.images import (BigFixtures, Fixtures, LayerTree, extract_blob,  # noqa: E402
                            run_mkfixture)
from harness.nginx import Nginx  # noqa: E402
from harness.registry import Registry  # noqa: E402
from harness.strata import (Daemons, Mount, Strata, active_daemons, missing_tools,  # noqa: E402
                            skip_reason, strata_binary)
from harness.timeouts import TEST_TIMEOUT  # noqa: E402


# ----------------------------------------------------------------------------------------------
# session-wide skip
# ----------------------------------------------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    reason = skip_reason()
    if reason:
        mark = pytest.mark.skip(reason=reason)
        for item in items:
            item.add_marker(mark)


@pytest.fixture(scope="session")
def strata_bin():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    missing = missing_tools()
    if missing:  # not a skip: CI installs them (tools/install-deps.sh), so this is a real failure
        pytest.fail("missing test tools: %s" % ", ".join(missing), pytrace=False)
    return str(strata_binary())


# ----------------------------------------------------------------------------------------------
# registries and images
# ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _removed_at_end(path):
    """path, removed (with all below it) when the with block ends."""
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _session_registry(tmp_path_factory, name):
    """A started Registry in a new session directory; stopped, its storage removed, at the end."""
    reg = Registry(tmp_path_factory.mktemp(name))
    with _removed_at_end(reg.storage), reg:
        yield reg


@pytest.fixture(scope="session")
def registry(strata_bin, tmp_path_factory):
    with _session_registry(tmp_path_factory, "registry") as reg:
        yield reg


@pytest.fixture
def running_registry(registry):
    """The session registry, guaranteed to be running again after the test (for stop() tests)."""
    registry.start()
    try:
        yield registry
    finally:
        registry.start()


@pytest.fixture(scope="session")
def lazy_registry(strata_bin, tmp_path_factory):
    """A registry of its own for the lazy-loading tests (big:latest, index artifacts), so that
    artifacts pushed there do not change how the other tests' pulls behave."""
    with _session_registry(tmp_path_factory, "lazy-registry") as reg:
        yield reg


@contextlib.contextmanager
def _pushed_layout(registry, tmp_path_factory, name, *mkfixture_args):
    """mkfixture MKFIXTURE_ARGS --out LAYOUT, pushed to registry: the layout, removed at the
    end."""
    layout = tmp_path_factory.mktemp(name)
    run_mkfixture(*mkfixture_args, "--out", layout)
    registry.push(layout)
    with _removed_at_end(layout):
        yield layout


@pytest.fixture(scope="session")
def fixtures(registry, tmp_path_factory):
    """mkfixture build + push, once per session."""
    with _pushed_layout(registry, tmp_path_factory, "layout", "build") as layout:
        yield Fixtures(layout, registry)


@pytest.fixture(scope="session")
def bad_fixtures(registry, tmp_path_factory):
    """mkfixture bad + push, once per session."""
    with _pushed_layout(registry, tmp_path_factory, "bad-layout", "bad") as layout:
        yield Fixtures(layout, registry)


@pytest.fixture(scope="session")
def big(lazy_registry, nginx_proxy, tmp_path_factory):
    """mkfixture big (STRATA_BIG_MIB MiB, default 200) pushed to lazy_registry, once per
    session."""
    mib = os.environ.get("STRATA_BIG_MIB", "200")
    with _pushed_layout(lazy_registry, tmp_path_factory, "big-layout", "big",
                        "--size-mib", mib) as layout:
        yield BigFixtures(layout, lazy_registry, nginx_proxy(lazy_registry))


@pytest.fixture(scope="session")
def extract(tmp_path_factory):
    """extract(blob_path, compression) -> directory with the GNU tar extraction (session temp)."""
    base = tmp_path_factory.mktemp("extract")
    counter = [0]

    def _extract(blob_path, compression):
        counter[0] += 1
        return extract_blob(blob_path, compression, base / ("x%d" % counter[0]))

    with _removed_at_end(base):
        yield _extract


@pytest.fixture(scope="session")
def layer_tree(fixtures, extract):
    """layer_tree(name or digest) -> LayerTree (extraction + member list), cached per session."""
    cache = {}

    def _get(layer):
        name = layer if layer in fixtures.layers else fixtures.layer_by_digest(layer)[0]
        if name not in cache:
            cache[name] = LayerTree.of_blob(name, fixtures.layers[name], fixtures.blob_path(name),
                                            extract)
        return cache[name]

    return _get


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
# stores, commands and daemons
# ----------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _fuse_watchdog(request):
    """Kills the strata daemons when a test runs past TEST_TIMEOUT: a hung FUSE request then fails
    with ENOTCONN instead of blocking the whole run."""
    def fire():
        for d in active_daemons():
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
    with _removed_at_end(d):
        yield str(d)


@pytest.fixture
def strata(strata_bin, store):
    """strata(*args, store=..., check=True) -> CompletedProcess (text); --store defaults to `store`."""
    return Strata(strata_bin, store)


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


@pytest.fixture
def daemons(strata_bin, tmp_path):
    """daemons(store, mnt=None) -> Daemons (for takeovers); all stopped and unmounted at
    teardown."""
    made = []

    def _make(store, mnt=None):
        d = Daemons(strata_bin, store, mnt or tmp_path / ("mnt%d" % len(made)), tmp_path)
        made.append(d)
        return d

    try:
        yield _make
    finally:
        for d in reversed(made):
            d.cleanup()

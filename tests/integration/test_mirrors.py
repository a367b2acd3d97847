# SPDX-License-Identifier: Apache-2.0
"""Mirrors from containerd's hosts.toml (--hosts-dir): the order hosts are tried in, falling back to
the next host and to the upstream registry, --strict-cache, TLS (ca, skip_verify, client
certificates), and mirrors that send corrupted bytes.

Everything runs on 127.0.0.1. The upstream is the session registry behind an nginx (its access log
proves whether the upstream was asked); the mirror is a second Distribution registry holding the
same images, behind a plain nginx, an HTTPS nginx (a test CA made with openssl), an HTTPS nginx
that requires a client certificate, or a small Python proxy that flips a byte of layer blobs.
A reference names the upstream (127.0.0.1:PORT/corner:oci); hosts.toml lives in
<hosts dir>/127.0.0.1:PORT/.
"""

import os

import pytest

from harness.fs import bounded
from harness.servers import free_port
from harness.nginx import Nginx, TlsNginx, format_requests
from harness.pki import Pki
from harness.proxy import CorruptingProxy
from harness.registry import Registry
from harness.strata import Strata, mirror_toml, one_line, write_hosts_toml
from harness.timeouts import COMPARE_TIMEOUT, INDEX_TIMEOUT

IMAGE = "corner:oci"


@pytest.fixture(scope="module")
def upstream(fixtures, nginx_proxy):
    """The session registry (with the corner images) behind nginx: the registry references name."""
    return nginx_proxy(fixtures.registry)


@pytest.fixture(scope="module")
def mirror_registry(strata_bin, fixtures, tmp_path_factory):
    """A second registry holding the same images."""
    with Registry(tmp_path_factory.mktemp("mirror-registry")) as reg:
        reg.push(fixtures.layout)
        yield reg


@pytest.fixture(scope="module")
def mirror(mirror_registry, tmp_path_factory):
    """Plain HTTP nginx in front of the mirror registry."""
    with Nginx(tmp_path_factory.mktemp("mirror-nginx"), mirror_registry) as ng:
        yield ng


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_mirror(mirror_registry, pki, tmp_path_factory):
    with TlsNginx(tmp_path_factory.mktemp("tls-nginx"), mirror_registry, pki) as ng:
        yield ng


@pytest.fixture(scope="module")
def mtls_mirror(mirror_registry, pki, tmp_path_factory):
    with TlsNginx(tmp_path_factory.mktemp("mtls-nginx"), mirror_registry, pki,
                  verify_client=True) as ng:
        yield ng


@pytest.fixture
def hosts_dir(tmp_path):
    d = tmp_path / "certs.d"
    d.mkdir()
    return d


@pytest.fixture
def pull(strata_bin, upstream, hosts_dir, tmp_path):
    """pull(toml, *opts, mirror=None) -> (Strata of the store, the finished process): hosts.toml
    `toml` for upstream in hosts_dir, the access logs of upstream (and of the nginx mirror)
    cleared, then `strata --hosts-dir HOSTS [opts] pull` of IMAGE through upstream into a new
    store; --index=build unless opts choose: an artifact lookup misses on every host, which would
    ask the upstream too."""
    def _pull(toml, *opts, mirror=None):
        hd = write_hosts_toml(hosts_dir, upstream.host, toml)
        upstream.clear()
        if mirror is not None:
            mirror.clear()
        if not any(o.startswith("--index") for o in opts):
            opts += ("--index=build",)
        store = tmp_path / "store-s"
        store.mkdir(exist_ok=True)
        run = Strata(strata_bin, store)
        glob = [o for o in opts if o == "--strict-cache"]
        local = [o for o in opts if o != "--strict-cache"]
        return run, run("--hosts-dir", hd, *glob, "pull", *local, upstream.ref(IMAGE),
                        check=False)

    return _pull


def assert_ok(p):
    assert p.returncode == 0, "pull exited %d\nstdout:%s\nstderr:%s" % (p.returncode, p.stdout,
                                                                       p.stderr)


def test_mirror_is_used_first(pull, fixtures, upstream, mirror):
    run, p = pull(mirror_toml(mirror.url), mirror=mirror)
    assert_ok(p)
    up, mr = upstream.requests(), mirror.requests()
    assert not up, "the upstream was asked although the mirror has everything\n" + \
        format_requests(up)
    assert mr, "the mirror was not asked"
    assert all("ns=127.0.0.1" in r["uri"] for r in mr), \
        "mirror requests without ?ns=<registry>\n" + format_requests(mr)
    for d in fixtures.layer_digests(IMAGE):
        assert mirror.blob_requests(d, mr, method="GET"), "layer %s not from the mirror" % d
    assert [i["ref"] for i in run.ls()] == [upstream.ref(IMAGE)], run.ls()


def test_mirror_down_falls_back_to_upstream(pull, upstream):
    _, p = pull(mirror_toml("http://127.0.0.1:%d" % free_port()))
    assert_ok(p)
    assert upstream.requests(), "the upstream was not asked after the mirror failed"


def test_strict_cache_mirror_down_fails_without_upstream(pull, upstream):
    dead = "127.0.0.1:%d" % free_port()
    run, p = pull(mirror_toml("http://" + dead), "--strict-cache")
    assert p.returncode == 1, (p.returncode, p.stderr)
    line = one_line(p.stderr)
    assert "no mirror could serve it" in line, line
    assert "--strict-cache forbids the upstream registry %s" % upstream.host in line, line
    assert dead in line, "the error does not name the mirror that failed: " + line
    assert not upstream.requests(), "--strict-cache contacted the upstream\n" + \
        format_requests(upstream.requests())
    assert run.ls() == []


def test_strict_cache_with_working_mirror(pull, upstream, mirror):
    _, p = pull(mirror_toml(mirror.url), "--strict-cache")
    assert_ok(p)
    assert not upstream.requests()


def test_strict_cache_artifact_lookup_miss_still_pulls(pull, upstream, mirror):
    """pull (auto): the mirror has no index artifact; with --strict-cache that is a miss, not a
    failure, and the index is built from the mirror's blobs."""
    _, p = pull(mirror_toml(mirror.url), "--strict-cache", "--index=auto")
    assert_ok(p)
    assert not upstream.requests()


def test_strict_cache_refuses_index_push(strata_bin, upstream, mirror, hosts_dir, tmp_path):
    """Pushes go to the upstream server (mirrors take pulls and resolves, as in containerd):
    with --strict-cache, `index --push` fails up front with one line and asks no host at all."""
    hd = write_hosts_toml(hosts_dir, upstream.host, mirror_toml(mirror.url))
    upstream.clear()
    mirror.clear()
    store = tmp_path / "store"
    store.mkdir()
    run = Strata(strata_bin, store)
    p = run("--hosts-dir", hd, "--strict-cache", "index", "--push", upstream.ref(IMAGE),
            check=False, timeout=INDEX_TIMEOUT)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert "--strict-cache forbids pushing to the upstream registry %s" % upstream.host in line, \
        line
    assert not upstream.requests(), "--strict-cache contacted the upstream\n" + \
        format_requests(upstream.requests())
    assert not mirror.requests(), "work was done for a push that cannot happen\n" + \
        format_requests(mirror.requests())
    assert run.ls() == []


def test_tls_mirror_with_ca(pull, upstream, tls_mirror, pki):
    _, p = pull(mirror_toml(tls_mirror.url, '  ca = "%s"\n' % pki.ca), mirror=tls_mirror)
    assert_ok(p)
    assert tls_mirror.requests(), "the TLS mirror was not used"
    assert not upstream.requests(), format_requests(upstream.requests())


def test_tls_mirror_relative_ca_path(pull, upstream, tls_mirror, pki, hosts_dir):
    """A relative `ca` is taken relative to the hosts.toml directory."""
    (hosts_dir / upstream.host).mkdir()
    (hosts_dir / upstream.host / "ca.pem").write_bytes(pki.ca.read_bytes())
    _, p = pull(mirror_toml(tls_mirror.url, '  ca = "ca.pem"\n'))
    assert_ok(p)
    assert not upstream.requests()


def test_tls_mirror_without_ca_falls_back(pull, upstream, tls_mirror):
    _, p = pull(mirror_toml(tls_mirror.url), mirror=tls_mirror)
    assert_ok(p)
    assert upstream.requests(), "an untrusted mirror certificate did not hand over to upstream"
    assert not tls_mirror.requests(), "a request went through an unverified TLS connection"


def test_tls_mirror_without_ca_strict_fails_clearly(pull, upstream, tls_mirror):
    _, p = pull(mirror_toml(tls_mirror.url), "--strict-cache")
    assert p.returncode == 1, (p.returncode, p.stderr)
    line = one_line(p.stderr)
    assert "--strict-cache forbids the upstream registry" in line, line
    assert tls_mirror.host in line, line
    assert "certificate" in line.lower() or "ssl" in line.lower(), line
    assert not upstream.requests()


def test_tls_mirror_skip_verify(pull, upstream, tls_mirror):
    _, p = pull(mirror_toml(tls_mirror.url, "  skip_verify = true\n"),
                "--strict-cache", mirror=tls_mirror)
    assert_ok(p)
    assert tls_mirror.requests()
    assert not upstream.requests()


def test_mirror_client_certificate(pull, upstream, mtls_mirror, pki):
    client = '  ca = "%s"\n  client = [["%s", "%s"]]\n' % (pki.ca, pki.client_cert,
                                                           pki.client_key)
    _, p = pull(mirror_toml(mtls_mirror.url, client), mirror=mtls_mirror)
    assert_ok(p)
    reqs = mtls_mirror.requests()
    assert reqs and all(r["status"] < 400 for r in reqs), format_requests(reqs)
    assert not upstream.requests(), format_requests(upstream.requests())


def test_mirror_client_certificate_missing_falls_back(pull, upstream, mtls_mirror, pki):
    _, p = pull(mirror_toml(mtls_mirror.url, '  ca = "%s"\n' % pki.ca), mirror=mtls_mirror)
    assert_ok(p)
    assert all(r["status"] >= 400 for r in mtls_mirror.requests()), \
        format_requests(mtls_mirror.requests())
    assert upstream.requests(), "a mirror refusing the client did not hand over to upstream"


# ----------------------------------------------------------------------------------------------
# a mirror that corrupts layer bytes
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def corrupting_mirror(fixtures, mirror_registry):
    proxy = CorruptingProxy(mirror_registry.host, fixtures.layer_digests(IMAGE))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def artifact_registry(strata_bin, fixtures, tmp_path_factory):
    """A registry of its own with the corner images and an index artifact of corner:oci (so the
    artifact changes no other test's pulls)."""
    with Registry(tmp_path_factory.mktemp("artifact-registry")) as reg:
        reg.push_indexed(fixtures.layout, IMAGE,
                            Strata(strata_bin, tmp_path_factory.mktemp("artifact-store")))
        yield reg


def compare_layers(layer_tree, m, digests):
    for d in digests:
        tree = layer_tree(d)
        path = m.layer(d)
        assert os.path.isdir(path), "%s not served" % d
        bounded(m, lambda: tree.compare(path, right_name="strata[%s]" % tree.name),
                "comparing " + tree.name, COMPARE_TIMEOUT)


def test_corrupt_mirror_whole_blob_pull(pull, fixtures, upstream, corrupting_mirror, layer_tree,
                                        mount, hosts_dir):
    """pull --index=build: every layer the mirror corrupts is taken from upstream instead, and what
    is stored (read back through a mount) is exactly the layer."""
    digests = fixtures.layer_digests(IMAGE)
    run, p = pull(mirror_toml("http://" + corrupting_mirror.host), "--index=build")
    assert_ok(p)
    assert corrupting_mirror.corrupted >= len(digests), corrupting_mirror.requests
    up = upstream.requests()
    for d in digests:
        assert upstream.blob_requests(d, up, method="GET"), \
            "layer %s was not refetched from upstream\n%s" % (d, format_requests(up))
    m = mount(store_dir=run.store, args=("--hosts-dir", hosts_dir, "--strict-cache"))
    compare_layers(layer_tree, m, digests)


def test_corrupt_mirror_lazy_reads(pull, fixtures, artifact_registry, upstream, layer_tree, mount,
                                   hosts_dir):
    """pull --index=artifact, then lazy reads: each range the mirror corrupts is read again from
    upstream; the files read are exactly the layer's, and nothing corrupt is stored (the store
    serves them again with upstream gone from the host list)."""
    digests = fixtures.layer_digests(IMAGE)
    proxy = CorruptingProxy(artifact_registry.host, digests)
    try:
        run, p = pull(mirror_toml("http://" + proxy.host), "--index=artifact")
        assert_ok(p)
        assert proxy.corrupted == 0, "the pull downloaded a layer: " + repr(proxy.requests)
        upstream.clear()
        m = mount(store_dir=run.store, args=("--hosts-dir", hosts_dir))
        compare_layers(layer_tree, m, digests)
        up = upstream.requests()
        assert proxy.corrupted > 0, "no range read went to the mirror: %r" % proxy.requests
        assert any(upstream.blob_requests(d, up, method="GET") for d in digests), \
            "no range read fell back to upstream\n" + format_requests(up)
        m.cleanup()
    finally:
        proxy.stop()
    # a second daemon on the same store, which may only use the (now stopped) mirror: everything
    # read above comes from the store, verified
    m2 = mount(store_dir=run.store, args=("--hosts-dir", hosts_dir, "--strict-cache"))
    compare_layers(layer_tree, m2, digests)


def test_invalid_hosts_toml_fails_clearly(pull, upstream):
    run, p = pull('[host."http://127.0.0.1:1"]\n  capabilities = 7\n')
    assert p.returncode == 1, (p.returncode, p.stderr)
    line = one_line(p.stderr)
    assert "hosts.toml:2:" in line, line
    assert not upstream.requests()
    assert run.ls() == []

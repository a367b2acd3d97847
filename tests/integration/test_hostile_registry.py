# SPDX-License-Identifier: Apache-2.0
"""A hostile registry (harness.hostile.HostileFront on 127.0.0.1 in front of a real registry):
descriptor size 0 is an exact size, endless bodies and headers are cut off, slowloris hosts are
cut off by the low-speed limit, redirect loops end (each pull below 256 MiB of RSS), a 206 whose Content-Range does not match is
an error whose bytes are never served, a token challenge from a redirect target is ignored, and a
plain-http token realm off loopback is refused. Each ends in a clear one-line error, quickly,
and a daemon serving the mount lives on."""

import base64
import errno
import json
import os
import socket
import subprocess
import time

import pytest

from harness.fs import largest_file, read_file
from harness.hostile import HostileFront, RecordingServer
from harness.images import Fixtures
from harness.registry import Registry
from harness.strata import Strata, new_store, one_line

IMAGE = "corner:oci"


@pytest.fixture(scope="module")
def reg(strata_bin, fixtures, tmp_path_factory):
    """A registry of this module's own with the corner images and an index artifact of IMAGE."""
    with Registry(tmp_path_factory.mktemp("hostile-registry")) as r:
        r.push_indexed(fixtures.layout, IMAGE,
                          Strata(strata_bin, tmp_path_factory.mktemp("hostile-index")))
        r.fx = Fixtures(fixtures.layout, r)
        yield r


@pytest.fixture
def front(reg):
    f = HostileFront(reg.host)
    try:
        yield f
    finally:
        f.stop()


RSS_LIMIT_KIB = 256 << 10


def pull_fails(strata_bin, store, ref, *args, timeout=60, config=None, env=None):
    """`strata pull ARGS REF` must exit 1 within timeout, its peak RSS below 256 MiB (GNU time):
    (its one line of stderr, seconds)."""
    extra = ["--config", str(config)] if config else []
    cmd = ["/usr/bin/time", "-f", "maxrss-kib %M", str(strata_bin), "--store", str(store)] + \
        extra + ["pull"] + list(args) + [ref]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       errors="replace", timeout=timeout, env=env)
    took = time.monotonic() - t0
    lines = [l for l in p.stderr.splitlines()
             if not l.startswith("Command exited with non-zero status")]
    err, rss = "\n".join(lines[:-1]), lines[-1]
    assert rss.startswith("maxrss-kib "), p.stderr
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert int(rss.split()[1]) < RSS_LIMIT_KIB, rss
    return one_line(err + "\n"), took


def test_size_zero_is_an_exact_size(strata_bin, reg, front, tmp_path):
    """A manifest whose layers claim 0 bytes: the first byte of a layer beyond 0 is refused (it
    used to disable the bound, so a host could stream until the disk was full)."""
    front.mode = "size0"
    line, _ = pull_fails(strata_bin, new_store(tmp_path, "s"), "%s/%s" % (front.host, IMAGE),
                         "--index=build")
    assert front.hits >= 1
    assert "is larger than its descriptor says (0 bytes)" in line, line


def test_endless_blob_is_cut_off(strata_bin, reg, front, tmp_path):
    front.mode = "endless_blob"
    line, took = pull_fails(strata_bin, new_store(tmp_path, "b"), "%s/%s" % (front.host, IMAGE),
                            "--index=build")
    assert "is larger than its descriptor says" in line, line
    assert front.sent < (32 << 20), front.sent


def test_endless_manifest_is_cut_off(strata_bin, reg, front, tmp_path):
    front.mode = "endless_manifest"
    line, _ = pull_fails(strata_bin, new_store(tmp_path, "m"), "%s/%s" % (front.host, IMAGE))
    assert "manifest is larger than 4 MiB" in line, line


def test_endless_headers_are_cut_off(strata_bin, reg, front, tmp_path):
    front.mode = "endless_headers"
    line, took = pull_fails(strata_bin, new_store(tmp_path, "h"), "%s/%s" % (front.host, IMAGE))
    assert "header" in line.lower(), line
    assert front.sent < (16 << 20), front.sent


@pytest.mark.parametrize("mode", ["slow_body", "slow_headers"])
def test_slowloris_is_cut_off(strata_bin, reg, front, tmp_path, mode):
    """5 bytes a second passes a 1 byte/s floor for ever; the 1 KiB/s floor cuts it off after
    low_speed_timeout (2 s here) on every attempt."""
    conf = tmp_path / "strata.toml"
    conf.write_text("low_speed_timeout = 2\n")
    front.mode = mode
    line, took = pull_fails(strata_bin, new_store(tmp_path, "sl"), "%s/%s" % (front.host, IMAGE),
                            config=conf, timeout=90)
    assert front.hits >= 1
    assert "too slow" in line.lower() or "timed out" in line.lower(), line
    assert took < 45, took


def test_trickled_download_meets_its_deadline(strata_bin, reg, front, tmp_path):
    """A layer trickled at 2 KiB/s stays above the 1 KiB/s low-speed floor for ever (a 1 GiB
    layer would take six days); a whole-blob download has a deadline scaled to its size,
    download_deadline_base + size / download_min_rate: 3 s + size / 64 MiB/s here."""
    conf = tmp_path / "strata.toml"
    conf.write_text('download_deadline_base = 3\ndownload_min_rate = "64M"\n')
    front.mode = "slow_blob"
    line, took = pull_fails(strata_bin, new_store(tmp_path, "dl"), "%s/%s" % (front.host, IMAGE),
                            "--index=build", config=conf, timeout=90)
    assert front.hits >= 1, line
    assert "download deadline of 3s" in line and "download_min_rate" in line, line
    assert took < 30, took


def test_redirect_loop_ends(strata_bin, reg, front, tmp_path):
    front.mode = "redirect_loop"
    line, _ = pull_fails(strata_bin, new_store(tmp_path, "r"), "%s/%s" % (front.host, IMAGE),
                         "--index=build")
    assert "redirects" in line.lower(), line
    assert front.hits <= 11 * 3, front.hits


@pytest.mark.parametrize("mode", ["range_missing", "range_shifted", "range_lying"])
def test_partial_response_that_is_not_the_range_is_an_error(strata_bin, reg, front, mount,
                                                            tmp_path, mode):
    """A lazy read whose 206 has no Content-Range, the wrong one, or the wrong bytes under the
    right one fails with EIO (logged naming the range); after the host behaves again the same
    read returns the right bytes: the mount lives on."""
    store = new_store(tmp_path, "lazy")
    Strata(strata_bin, store)("pull", "--index=artifact", "%s/%s" % (front.host, IMAGE))
    m = mount(store_dir=store)
    files = [f for f in (largest_file(m.layer(d)) for d in reg.fx.layer_digests(IMAGE)) if f]
    assert files
    front.mode = mode
    with pytest.raises(OSError) as e:
        read_file(m, files[0])
    assert e.value.errno == errno.EIO
    assert front.hits >= 1
    want = {"range_missing": "without a valid Content-Range",
            "range_shifted": "server returned range",
            "range_lying": "do not verify"}[mode]
    assert want in m.stderr(), m.stderr()[-2000:]
    front.mode = None
    for f in files:
        read_file(m, f)


def docker_env(tmp_path, host, user, password):
    """The environment of a strata run whose docker config has user:password for host."""
    cfg = tmp_path / "docker"
    cfg.mkdir()
    basic = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {host: {"auth": basic}}}))
    return dict(os.environ, DOCKER_CONFIG=str(cfg))


def test_challenge_from_a_redirect_target_is_ignored(strata_bin, reg, front, tmp_path):
    """The registry's own 401 challenges are answered; a 401 from where it redirected a blob (its
    storage, say) is not: its realm never gets a request, let alone the registry's credentials."""
    issuer = RecordingServer()
    try:
        front.realm = issuer.url + "/token"
        front.mode = "challenge_redirect"
        env = docker_env(tmp_path, front.host, "alice", "s3cret-redirect")
        basic = base64.b64encode(b"alice:s3cret-redirect").decode()
        # the front sees an Authorization header only when strata sends one: make the registry
        # side ask for it by pulling through a front that requires it
        front.require_auth = True
        p = Strata(strata_bin, new_store(tmp_path, "c"))("pull", "--index=build",
                                                         "%s/%s" % (front.host, IMAGE),
                                                         check=False, env=env)
        assert p.returncode == 1, (p.stdout, p.stderr)
        line = one_line(p.stderr)
        assert front.hits >= 1, line
        assert issuer.requests == [], issuer.requests
        assert "its challenge is ignored" in line, line
        assert "s3cret-redirect" not in p.stdout + p.stderr and basic not in p.stderr
    finally:
        issuer.stop()


def non_loopback_address():
    """An IPv4 address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            a = s.getsockname()[0]
        except OSError:
            return None
    return None if a.startswith("127.") else a


def test_plain_http_token_realm_off_loopback_is_refused(strata_bin, reg, tmp_path):
    """A registry whose challenge sends clients to a token issuer over plain http on a network
    address: the issuer would get the credentials in clear; it is never asked."""
    addr = non_loopback_address()
    if not addr:
        pytest.skip("no non-loopback IPv4 address")
    issuer = RecordingServer(addr)
    front = HostileFront(reg.host)
    try:
        front.realm = issuer.url + "/token"
        front.challenge_all = True
        env = docker_env(tmp_path, front.host, "alice", "s3cret-realm")
        line, _ = pull_fails(strata_bin, new_store(tmp_path, "p"), "%s/%s" % (front.host, IMAGE),
                             env=env)
        assert issuer.requests == [], issuer.requests
        assert "plain http" in line, line
    finally:
        front.stop()
        issuer.stop()

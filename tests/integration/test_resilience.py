# SPDX-License-Identifier: Apache-2.0
"""Resilience of the fetch client against registries that throttle, go down or cut transfers:
Retry-After kept per host (a 429 delays every request of the process to that host), the circuit
breaker that stops trying a dead mirror, the daemon's --read-timeout, and retries of bodies cut
short. Packet loss (netem) is not tested: the sch_netem module is not available on this kernel.
"""

import subprocess
import time

import pytest

from harness.fs import largest_file, read_file, regular_files
from harness.images import Fixtures
from harness.nginx import Nginx, ThrottlingNginx, format_requests
from harness.proxy import CountingListener, CuttingProxy
from harness.registry import Registry
from harness.strata import Strata, mirror_toml, new_store, write_hosts_toml
from harness.timeouts import INDEX_TIMEOUT

IMAGE = "corner:oci"
RETRY_AFTER = 2


@pytest.fixture(scope="module")
def reg(strata_bin, fixtures, tmp_path_factory):
    """A registry of this module's own (it is stopped and throttled here) with the corner images
    and an index artifact of corner:oci."""
    with Registry(tmp_path_factory.mktemp("resilience-registry")) as r:
        r.push_indexed(fixtures.layout, IMAGE,
                          Strata(strata_bin, tmp_path_factory.mktemp("resilience-index")))
        r.fx = Fixtures(fixtures.layout, r)
        yield r


# ----------------------------------------------------------------------------------------------
# Retry-After
# ----------------------------------------------------------------------------------------------

def test_concurrent_pulls_honor_retry_after(strata_bin, reg, tmp_path):
    """8 stores pull the same image at once through nginx limiting to 20 requests/s (429 with
    Retry-After: 2 beyond). All pulls succeed; on every connection (a connection belongs to one
    process), no request follows a 429 before Retry-After elapsed; the upstream sees a bounded
    number of requests."""
    ng = ThrottlingNginx(tmp_path / "throttle", reg, rate=20, retry_after=RETRY_AFTER).start()
    try:
        ref = ng.ref(IMAGE)
        # the requests one pull needs, without throttling (the first requests of a fresh
        # limiter pass)
        one = Strata(strata_bin, new_store(tmp_path, "one"))
        ng.clear()
        one("pull", "--index=build", ref)
        time.sleep(1.5)
        n_one = len([r for r in ng.requests() if r["status"] != 429])
        assert n_one > 0

        ng.clear()
        procs = []
        for i in range(8):
            store = new_store(tmp_path, "p%d" % i)
            procs.append(subprocess.Popen(
                [strata_bin, "--store", store, "pull", "--index=build", ref],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, errors="replace"))
        outs = [p.communicate(timeout=INDEX_TIMEOUT) for p in procs]
        reqs = ng.requests()
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, "a throttled pull failed (%d):\n%s%s\n%s" % (
                p.returncode, out, err, format_requests(reqs))
        throttled = [r for r in reqs if r["status"] == 429]
        assert throttled, "nginx never throttled: the test proves nothing\n" + \
            format_requests(reqs)
        early = []
        for i, t in enumerate(reqs):
            if t["status"] != 429:
                continue
            t_end = float(t["msec"])
            # nginx (one worker) logs a connection's requests in order: those after the 429
            # were sent after it; $msec is when a response was logged
            for r in reqs[i + 1:]:
                start = float(r["msec"]) - float(r["request_time"])
                if r["conn"] == t["conn"] and start < t_end + RETRY_AFTER - 0.01:
                    early.append((t, r))
        assert not early, "requests sent on a connection before its Retry-After elapsed:\n" + \
            "\n".join("%s -> %s" % e for e in early[:10])
        assert len(reqs) <= 8 * n_one * 3, "%d upstream requests for 8 pulls of %d each\n%s" % (
            len(reqs), n_one, format_requests(reqs))
    finally:
        ng.stop()


# ----------------------------------------------------------------------------------------------
# circuit breaker
# ----------------------------------------------------------------------------------------------

def test_breaker_stops_trying_a_dead_mirror(strata_bin, reg, tmp_path):
    """A mirror that accepts connections and closes them, listed first: after 5 failures its
    circuit opens and the rest of the pull goes straight to the upstream."""
    dead = CountingListener()
    try:
        hd = write_hosts_toml(tmp_path / "certs.d", reg.host,
                              mirror_toml("http://" + dead.host))
        run = Strata(strata_bin, new_store(tmp_path, "b"))
        p = run("--hosts-dir", hd, "pull", "--index=build", reg.ref(IMAGE), check=False)
        assert p.returncode == 0, p.stderr
        # manifest, config and layers: without a breaker each request tries the mirror 3 times
        assert 5 <= dead.accepts <= 5 + 8, "mirror tried %d times\n%s" % (dead.accepts, p.stderr)
        assert "circuit open after 5 failures" in p.stderr, p.stderr
    finally:
        dead.stop()


def test_breaker_state_in_daemon_stats(strata_bin, reg, mount, tmp_path):
    """The daemon's reads open the circuit of a dead mirror; `stats --json` shows it per host,
    and the reads still succeed through the upstream."""
    dead = CountingListener()
    try:
        hd = write_hosts_toml(tmp_path / "certs.d", reg.host,
                              mirror_toml("http://" + dead.host))
        store = new_store(tmp_path, "d")
        run = Strata(strata_bin, store)
        run("pull", "--index=artifact", reg.ref(IMAGE))
        m = mount(store_dir=store, args=("--hosts-dir", hd))
        for d in reg.fx.layer_digests(IMAGE):
            f = largest_file(m.layer(d))
            if f:
                read_file(m, f)
        st = run.stats()
        assert dead.host in st["hosts"], st
        assert st["hosts"][dead.host]["breaker"] == "open", st
        assert st["hosts"][reg.host]["requests"] > 0, st
        before = dead.accepts
        for d in reg.fx.layer_digests(IMAGE):
            for f in regular_files(m.layer(d)):
                read_file(m, f)
        assert dead.accepts == before, "requests still went to the open mirror"
        human = run("stats").stdout
        assert dead.host in human and "open" in human, human
    finally:
        dead.stop()


# ----------------------------------------------------------------------------------------------
# --read-timeout
# ----------------------------------------------------------------------------------------------

def test_read_fails_with_eio_while_registry_down_then_recovers(strata_bin, reg, mount, tmp_path):
    """A lazy mount with --read-timeout 3: with the registry's proxy stopped, reading a cold file
    fails with EIO within the timeout plus a few seconds, logged once; once the proxy is back the
    same read succeeds."""
    ng = Nginx(tmp_path / "down", reg).start()
    try:
        store = new_store(tmp_path, "r")
        run = Strata(strata_bin, store)
        run("pull", "--index=artifact", ng.ref(IMAGE))
        m = mount(store_dir=store, args=("--read-timeout", "3"))
        files = [largest_file(m.layer(d)) for d in reg.fx.layer_digests(IMAGE)]
        files = [f for f in files if f]
        assert files
        target = files[0]
        ng.stop()
        log_before = m.stderr()
        t0 = time.monotonic()
        with pytest.raises(OSError) as ei:
            read_file(m, target)
        took = time.monotonic() - t0
        assert ei.value.errno == 5, ei.value
        assert took < 3 + 5, "the failed read took %.1fs" % took
        new = m.stderr()[len(log_before):]
        lines = [l for l in new.splitlines() if "read:" in l or "timeout" in l]
        assert len(lines) == 1, "expected one log line about the failed read:\n" + new
        # more failed reads, so that the host's circuit opens (5 failures)
        for f in files[1:3] + [target]:
            with pytest.raises(OSError):
                read_file(m, f)
        hosts = run.stats()["hosts"]
        assert hosts[ng.host]["breaker"] != "closed", hosts
        ng.start()
        # The registry is its only endpoint: an open circuit must not fail the next read fast
        # (the issue: the next read after the registry recovers succeeds).
        assert read_file(m, target)
        hosts = run.stats()["hosts"]
        assert hosts[ng.host]["breaker"] == "closed", hosts
    finally:
        ng.stop()


def test_read_timeout_option_is_validated(strata_bin, store, tmp_path):
    p = Strata(strata_bin, store)("mount", "-f", "--read-timeout", "x", str(tmp_path),
                                  check=False)
    assert p.returncode != 0 and "--read-timeout" in p.stderr, p.stderr


# ----------------------------------------------------------------------------------------------
# bodies cut short
# ----------------------------------------------------------------------------------------------

def test_pull_survives_bodies_cut_short(strata_bin, reg, tmp_path):
    """Every blob's first response is cut after 100 bytes: the pull retries and succeeds."""
    px = CuttingProxy(reg.host)
    try:
        run = Strata(strata_bin, new_store(tmp_path, "c"))
        ref = "%s/%s" % (px.host, IMAGE)
        p = run("--json", "pull", "--index=build", ref, check=False)
        assert p.returncode == 0, p.stderr
        assert px.cuts > 0, "nothing was cut: the test proves nothing"
    finally:
        px.stop()


def test_lazy_read_survives_bodies_cut_short(strata_bin, reg, mount, tmp_path):
    """A lazy read whose range response is cut short is retried and returns the right bytes."""
    store = new_store(tmp_path, "lc")
    run = Strata(strata_bin, store)
    px = CuttingProxy(reg.host, cut=10)
    try:
        run("pull", "--index=artifact", "%s/%s" % (px.host, IMAGE))
        px.seen.clear()
        px.cuts = 0
        m = mount(store_dir=store)
        for d in reg.fx.layer_digests(IMAGE):
            f = largest_file(m.layer(d))
            if f:
                read_file(m, f)
        assert "read:" not in m.stderr(), m.stderr()
    finally:
        px.stop()

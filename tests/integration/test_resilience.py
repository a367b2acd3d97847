# SPDX-License-Identifier: Apache-2.0
"""Resilience of the fetch client against registries that throttle, go down or cut transfers:
Retry-After kept per host (a 429 delays every request of the process to that host), the circuit
breaker that stops trying a dead mirror, the daemon's --read-timeout, and retries of bodies cut
short. Packet loss (netem) is not tested: the sch_netem module is not available on this kernel.
"""

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (Fixtures, ForwardingProxy, Nginx, Registry, Strata, format_requests, run_bounded,
                      run_mkfixture, write_hosts_toml)

IMAGE = "corner:oci"
CAPS = '  capabilities = ["pull", "resolve"]\n'
RETRY_AFTER = 2


@pytest.fixture(scope="module")
def reg(strata_bin, fixtures, tmp_path_factory):
    """A registry of this module's own (it is stopped and throttled here) with the corner images
    and an index artifact of corner:oci."""
    r = Registry(tmp_path_factory.mktemp("resilience-registry"))
    r.start()
    try:
        run_mkfixture("push", "--layout", fixtures.layout, "--registry", r.host)
        Strata(strata_bin, tmp_path_factory.mktemp("resilience-index"))(
            "--json", "index", "--push", r.ref(IMAGE), timeout=300)
        r.fx = Fixtures(fixtures.layout, r)
        yield r
    finally:
        r.stop()


class ThrottlingNginx(Nginx):
    """Nginx in front of a registry that answers 429 with Retry-After beyond `rate` requests/s."""

    def __init__(self, workdir, registry, rate):
        super().__init__(workdir, registry)
        conf = self.conf.read_text()
        conf = conf.replace("  server {\n", "  limit_req_zone $binary_remote_addr zone=strata:1m rate=%dr/s;\n"
                            "  server {\n" % rate, 1)
        conf = conf.replace("    location / {\n", "    location / {\n"
                            "      limit_req zone=strata;\n"  # burst 0 (the default; "burst=0" is rejected)
                            "      limit_req_status 429;\n"
                            "      add_header Retry-After %d always;\n" % RETRY_AFTER, 1)
        self.conf.write_text(conf)


class CountingListener:
    """A TCP listener on 127.0.0.1 that accepts connections, counts them and closes them at once:
    a mirror that is 'up' at the TCP level and answers nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.host = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepts = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            conn.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


class CuttingProxy(ForwardingProxy):
    """An HTTP proxy to upstream that cuts the first response of every blob GET after `cut` body
    bytes (the Content-Length promises the whole body) and closes the connection."""

    def __init__(self, upstream, cut=100):
        self.cut = cut
        self.seen = set()
        self.cuts = 0
        super().__init__(upstream)

    def on_body(self, req, body):
        with self.lock:
            if (req.command == "GET" and req.digest and req.status in (200, 206) and
                    len(body) > self.cut and req.bare_path not in self.seen):
                self.seen.add(req.bare_path)
                self.cuts += 1
                return body, self.cut
        return body


def new_store(tmp_path, name):
    d = tmp_path / ("store-" + name)
    d.mkdir()
    return str(d)


def cold_file(root):
    """The largest regular file under root (readdir and stat need no fetch)."""
    best = None
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if os.path.isfile(p) and not os.path.islink(p) and st.st_size > 0 and \
                    (best is None or st.st_size > best[0]):
                best = (st.st_size, p)
    return best[1] if best else None


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


# ----------------------------------------------------------------------------------------------
# Retry-After
# ----------------------------------------------------------------------------------------------

def test_concurrent_pulls_honor_retry_after(strata_bin, reg, tmp_path):
    """8 stores pull the same image at once through nginx limiting to 20 requests/s (429 with
    Retry-After: 2 beyond). All pulls succeed; on every connection (a connection belongs to one
    process), no request follows a 429 before Retry-After elapsed; the upstream sees a bounded
    number of requests."""
    ng = ThrottlingNginx(tmp_path / "throttle", reg, rate=20).start()
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
        outs = [p.communicate(timeout=300) for p in procs]
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
                              '[host."http://%s"]\n%s' % (dead.host, CAPS))
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
                              '[host."http://%s"]\n%s' % (dead.host, CAPS))
        store = new_store(tmp_path, "d")
        run = Strata(strata_bin, store)
        run("pull", "--index=artifact", reg.ref(IMAGE))
        m = mount(store_dir=store, args=("--hosts-dir", hd))
        mnt = Path(m.mnt)
        proc = m.proc
        if True:
            for d in reg.fx.layer_digests(IMAGE):
                f = cold_file(str(mnt / "layers" / d))
                if f:
                    run_bounded(lambda: read_all(f), 60, proc.kill)
            st = json.loads(run("--json", "stats").stdout)
            assert dead.host in st["hosts"], st
            assert st["hosts"][dead.host]["breaker"] == "open", st
            assert st["hosts"][reg.host]["requests"] > 0, st
            before = dead.accepts
            for d in reg.fx.layer_digests(IMAGE):
                for dirpath, _, files in os.walk(str(mnt / "layers" / d)):
                    for fn in files:
                        p = os.path.join(dirpath, fn)
                        if os.path.isfile(p) and not os.path.islink(p):
                            run_bounded(lambda: read_all(p), 60, proc.kill)
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
        files = [cold_file(m.layer(d)) for d in reg.fx.layer_digests(IMAGE)]
        files = [f for f in files if f]
        assert files
        target = files[0]
        ng.stop()
        log_before = m.stderr()
        t0 = time.monotonic()
        with pytest.raises(OSError) as ei:
            run_bounded(lambda: read_all(target), 60, m.kill)
        took = time.monotonic() - t0
        assert ei.value.errno == 5, ei.value
        assert took < 3 + 5, "the failed read took %.1fs" % took
        new = m.stderr()[len(log_before):]
        lines = [l for l in new.splitlines() if "read:" in l or "timeout" in l]
        assert len(lines) == 1, "expected one log line about the failed read:\n" + new
        # more failed reads, so that the host's circuit opens (5 failures)
        for f in files[1:3] + [target]:
            with pytest.raises(OSError):
                run_bounded(lambda: read_all(f), 60, m.kill)
        hosts = json.loads(run("--json", "stats").stdout)["hosts"]
        assert hosts[ng.host]["breaker"] != "closed", hosts
        ng.start()
        # The registry is its only endpoint: an open circuit must not fail the next read fast
        # (the issue: the next read after the registry recovers succeeds).
        assert run_bounded(lambda: read_all(target), 60, m.kill)
        hosts = json.loads(run("--json", "stats").stdout)["hosts"]
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
            f = cold_file(m.layer(d))
            if f:
                run_bounded(lambda: read_all(f), 60, m.kill)
        assert "read:" not in m.stderr(), m.stderr()
    finally:
        px.stop()

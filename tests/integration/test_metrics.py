# SPDX-License-Identifier: Apache-2.0
"""`strata mount --metrics ADDR`: Prometheus text over HTTP on a loopback port or a unix socket."""

import os
import re
import socket

import pytest

from harness.servers import free_port
from harness.strata import one_line
from harness.timeouts import SOCKET_TIMEOUT


def scrape_tcp(port, path="/metrics"):
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as s:
        s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
        return recv_all(s)


def scrape_unix(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(SOCKET_TIMEOUT)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        return recv_all(s)


def recv_all(s):
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def samples(body):
    """{(name, labels): value} of a text exposition; checks every sample has HELP and TYPE."""
    out, typed = {}, set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$', line)
        assert m, "not a sample line: %r" % line
        name = m.group(1)
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in typed or base in typed, "no TYPE for %s" % name
        out[(name, m.group(2) or "")] = float(m.group(3))
    return out


def test_metrics_over_tcp(strata, mount, fixtures):
    port = free_port()
    m = mount(args=("--metrics", "127.0.0.1:%d" % port))
    strata("pull", fixtures.ref("demo:latest"))  # through the daemon: its streamer fetches
    demo = fixtures.layer_digests("demo:latest")
    hello = os.path.join(m.layer(demo[-1]), fixtures.paths["demo_hello"])
    with open(hello) as f:
        assert f.read() == fixtures.paths["demo_hello_text"]
    for d in demo:  # every layer streamed (a lookup waits for its layer)
        assert os.path.isdir(m.layer(d))
    status, body = scrape_tcp(port)
    assert status == "HTTP/1.0 200 OK", status
    s = samples(body)
    reads = sum(v for (n, l), v in s.items() if n == "strata_chunk_reads_total")
    assert reads >= 1, body
    host = fixtures.registry.host
    assert s[("strata_registry_requests_total", '{host="%s"}' % host)] >= 1, body
    assert s[("strata_registry_bytes_total", '{host="%s"}' % host)] > 0, body
    assert s[("strata_layers_streaming", "")] == 0, body
    assert s[("strata_store_disk_bytes", "")] > 0, body
    # the histogram is cumulative and its count is the fetched chunks
    buckets = [v for (n, l), v in sorted(s.items()) if n == "strata_fetch_wait_seconds_bucket"]
    assert buckets and s[("strata_fetch_wait_seconds_count", "")] == \
        s[("strata_chunk_reads_total", '{source="fetched"}')]
    assert s[("strata_fetch_wait_seconds_bucket", '{le="+Inf"}')] == \
        s[("strata_fetch_wait_seconds_count", "")]
    status, _ = scrape_tcp(port, "/nope")
    assert status.startswith("HTTP/1.0 404"), status


def test_metrics_over_unix_socket(strata, mount, fixtures, tmp_path):
    sock = str(tmp_path / "metrics.sock")
    mount(args=("--metrics", "unix:" + sock))
    status, body = scrape_unix(sock)
    assert status == "HTTP/1.0 200 OK", status
    assert ("strata_quota_bytes", "") in samples(body)


@pytest.mark.parametrize("addr,msg", [("127.0.0.1:0x", "bad port"),
                                      ("example.org:9100", "must be an IP address"),
                                      ("9100", "expected HOST:PORT")])
def test_bad_metrics_address(strata, tmp_path, addr, msg):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = strata("mount", "--metrics", addr, mnt, check=False, timeout=SOCKET_TIMEOUT)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert msg in one_line(p.stderr), p.stderr
    assert not os.path.ismount(mnt)

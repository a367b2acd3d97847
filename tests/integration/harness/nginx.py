# SPDX-License-Identifier: Apache-2.0
"""nginx as a transparent reverse proxy in front of a registry, with an access log of every request
(method, URI, status, body bytes, Range) that tests read as evidence of what strata fetched; over
TLS, throttling with 429 + Retry-After, or sending at a limited rate."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .servers import connectable, free_port
from .timeouts import READY_TIMEOUT, STOP_TIMEOUT

NGINX_LOG_FORMAT = ('\'{"method":"$request_method","uri":"$request_uri","status":$status,'
                    '"bytes":$body_bytes_sent,"range":"$http_range","msec":"$msec",'
                    '"conn":$connection,"request_time":"$request_time"}\'')


class Nginx:
    """`nginx -p PREFIX -c PREFIX/nginx.conf -g 'daemon off;'` on 127.0.0.1:PORT, a transparent
    reverse proxy to registry (a Registry or "127.0.0.1:PORT"), logging one JSON object per request
    to PREFIX/access.log (unbuffered: a line appears when its request completes). A context
    manager too: `with Nginx(d, reg) as ng:` starts it and stops it."""

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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "http://" + self.host

    def ref(self, name):
        """A reference through this proxy: 127.0.0.1:PORT/big:latest."""
        return "%s/%s" % (self.host, name)

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
            if connectable(self.port):
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

    def kill(self):
        """SIGKILL of the master and its workers (a graceful stop would finish the transfers
        under way); start() starts it again."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
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
    """Access log entries as text lines, for failure messages."""
    lines = ["%s %s -> %s, %d bytes%s" % (r["method"], r["uri"], r["status"], r["bytes"],
                                           ", Range: " + r["range"] if r["range"] else "")
             for r in reqs[:limit]]
    if len(reqs) > limit:
        lines.append("... and %d more" % (len(reqs) - limit))
    return "\n".join(lines) or "(no requests)"




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


class ThrottlingNginx(Nginx):
    """Nginx in front of a registry that answers 429 with Retry-After: retry_after beyond `rate`
    requests/s."""

    def __init__(self, workdir, registry, rate, retry_after):
        super().__init__(workdir, registry)
        conf = self.conf.read_text()
        conf = conf.replace("  server {\n", "  limit_req_zone $binary_remote_addr zone=strata:1m "
                            "rate=%dr/s;\n  server {\n" % rate, 1)
        # burst 0 (the default; "burst=0" is rejected)
        conf = conf.replace("    location / {\n", "    location / {\n"
                            "      limit_req zone=strata;\n"
                            "      limit_req_status 429;\n"
                            "      add_header Retry-After %d always;\n" % retry_after, 1)
        self.conf.write_text(conf)


class SlowNginx(Nginx):
    """Nginx in front of a registry that sends its client at most `rate` (nginx limit_rate, e.g.
    "8m" bytes/s)."""

    def __init__(self, workdir, registry, rate):
        super().__init__(workdir, registry)
        conf = self.conf.read_text()
        assert "proxy_buffering off;" in conf
        # limit_rate applies to what nginx sends its client; unbuffered proxying bypasses it
        self.conf.write_text(conf.replace("proxy_buffering off;",
                                          "proxy_buffering on;\n      limit_rate %s;" % rate))


def not_ranged(reqs):
    """Requests that are not a GET with a Range header answered 206."""
    return [r for r in reqs if r["method"] != "GET" or not r["range"] or r["status"] != 206]


def request_context(reqs, m=None):
    """Diagnostics for a failed assertion: the nginx log lines and the daemon's stderr."""
    out = "nginx requests:\n" + format_requests(reqs)
    if m is not None:
        out += "\ndaemon stderr:\n" + (m.stderr()[-4000:] or "(empty)")
    return out

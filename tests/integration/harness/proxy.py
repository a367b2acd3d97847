# SPDX-License-Identifier: Apache-2.0
"""Small HTTP servers of the tests' own on 127.0.0.1 that stand between strata and a registry and
misbehave on purpose: a forwarding proxy with a hook on every body (corrupting it, cutting it
short), a front that redirects blob GETs to another host, and a listener that accepts and closes
every connection."""

import http.client
import http.server
import socket
import threading

from .servers import free_port
from .timeouts import STOP_TIMEOUT


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


def _empty_response(handler, status, headers=()):
    handler.send_response(status)
    for k, v in headers:
        handler.send_header(k, v)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


class ForwardingProxy:
    """A small HTTP reverse proxy on 127.0.0.1 to upstream ("127.0.0.1:PORT") for GET and HEAD
    (Range, Accept and Authorization are forwarded). on_request(handler) may answer a request
    itself (returning True) before it is forwarded. Each response body goes through
    on_body(req, body) (a ProxiedRequest) before it is sent, which returns the body to send, or
    (body, n) to send the full body's Content-Length but only its first n bytes and then close the
    connection (a body cut short). Subclasses override the hooks; they run on the proxy's threads
    (take self.lock for shared state). Records (command, path, status) in requests."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.requests = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                if proxy.on_request(self):
                    return
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

    def on_request(self, handler):
        return False

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


class CuttingProxy(ForwardingProxy):
    """A ForwardingProxy that cuts the first response of every blob GET after `cut` body bytes
    (the Content-Length promises the whole body) and closes the connection."""

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


class RedirectingFront(ForwardingProxy):
    """A ForwardingProxy in front of registry reg that answers an authorized blob GET with a 307
    to http://localhost:Q/ (another host, like a registry's object storage), where the blob is
    served from reg's storage directory. Records the Authorization header (or None) of every
    request the storage side gets in storage_auth."""

    def __init__(self, reg):
        self.reg = reg
        self.storage_auth = []
        front = self

        class Storage(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                front.storage_auth.append(self.headers.get("Authorization"))
                try:
                    data = reg.blob_file(self.path.lstrip("/")).read_bytes()
                except (OSError, IndexError):
                    _empty_response(self, 404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.storage = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Storage)
        self.sport = self.storage.server_address[1]
        threading.Thread(target=self.storage.serve_forever, daemon=True).start()
        super().__init__(reg.host)

    def on_request(self, handler):
        parts = handler.path.split("?")[0].split("/")
        if (handler.command == "GET" and len(parts) >= 5 and parts[-2] == "blobs" and
                parts[-1].startswith("sha256:") and handler.headers.get("Authorization")):
            _empty_response(handler, 307,
                            [("Location", "http://localhost:%d/%s" % (self.sport, parts[-1]))])
            return True
        return False

    def stop(self):
        super().stop()
        self.storage.shutdown()
        self.storage.server_close()


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
        self.thread.join(STOP_TIMEOUT)

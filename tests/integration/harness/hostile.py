# SPDX-License-Identifier: Apache-2.0
"""A hostile registry front for the fetch tests: a ForwardingProxy on 127.0.0.1 in front of a real
registry that, per `mode`, lies about descriptor sizes, streams endless bodies or headers, trickles
bytes (slowloris), loops redirects, answers ranges with a wrong or missing Content-Range, or sends a
token challenge from a redirect target; and a RecordingServer that only records who asked it."""

import http.client
import http.server
import json
import threading
import time

from .proxy import ForwardingProxy, _empty_response
from .servers import free_port

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")


class RecordingServer:
    """An HTTP server on addr ("127.0.0.1" or another local address) that answers every GET
    with 200 {"token": "leaked"} and records (path, Authorization header) in requests."""

    def __init__(self, addr="127.0.0.1"):
        self.requests = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rec.requests.append((self.path, self.headers.get("Authorization")))
                body = b'{"token": "leaked"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer((addr, 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://%s:%d" % (addr, self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class HostileFront(ForwardingProxy):
    """A ForwardingProxy to `upstream` that misbehaves for the requests `mode` names (None:
    forwards everything). Modes:
      size0            an image manifest fetched by tag lists every layer with size 0
      endless_blob     a blob GET gets 200, no Content-Length, and zeros until the client leaves
      endless_manifest a manifest GET gets 200 and zeros until the client leaves
      endless_headers  a manifest GET gets 200 and 1 KiB headers until the client leaves
      slow_body        a manifest GET gets its real headers and then 5 bytes a second
      slow_headers     a manifest GET gets a status line and then 5 header bytes a second
      slow_blob        a whole-blob GET gets its real headers and then 2 KiB a second (above
                       the 1 KiB/s low-speed floor: only a deadline on the whole download ends it)
      redirect_loop    a blob GET is redirected to itself, forever
      range_missing    a ranged blob GET gets 206 without Content-Range (the right bytes)
      range_shifted    a ranged blob GET gets 206 with the bytes and Content-Range one byte later
      range_lying      a ranged blob GET gets 206 with the right Content-Range and the bytes one
                       byte later
      challenge_redirect an authorized blob GET is redirected to another host that answers 401
                       with a Bearer challenge whose realm is `realm`
    With require_auth a request without Authorization gets a Basic challenge first; with
    challenge_all every request gets a Bearer challenge for `realm`. `hits` counts the requests a
    mode took over; `sent` the bytes an endless or slow mode sent."""

    def __init__(self, upstream):
        self.mode = None
        self.realm = None
        self.require_auth = False   # ask for Basic credentials first (any are taken)
        self.challenge_all = False  # answer everything 401 with a Bearer challenge for realm
        self.hits = 0
        self.sent = 0
        front = self

        class Target(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(401)
                self.send_header("WWW-Authenticate",
                                 'Bearer realm="%s",service="storage"' % front.realm)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.target = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Target)
        self.target.daemon_threads = True
        threading.Thread(target=self.target.serve_forever, daemon=True).start()
        super().__init__(upstream)

    def stop(self):
        self.mode = None
        super().stop()
        self.target.shutdown()
        self.target.server_close()

    # -- helpers --

    def _upstream(self, handler, byte_range=None):
        """handler's GET asked of the upstream registry (its Range, or bytes first-last when
        byte_range is given): (status, headers, body)."""
        host, port = self.upstream.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        hdrs = {k: v for k, v in handler.headers.items()
                if k.lower() in ("range", "accept", "authorization")}
        if byte_range:
            hdrs = {k: v for k, v in hdrs.items() if k.lower() != "range"}
            hdrs["Range"] = "bytes=%d-%d" % byte_range
        try:
            conn.request("GET", handler.path, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _endless(self, handler, chunk, headers=False):
        """Status 200, then `chunk` forever (as headers when headers), until the client leaves or
        64 MiB went out."""
        handler.close_connection = True
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n")
            if not headers:
                handler.wfile.write(b"Content-Type: application/octet-stream\r\n\r\n")
            while self.sent < (64 << 20) and self.mode is not None:
                handler.wfile.write(chunk)
                self.sent += len(chunk)
        except OSError:
            pass

    def _relay_trickled(self, h, **trickle):
        """Answers with the upstream's status and headers at once, then its body trickled."""
        status, headers, body = self._upstream(h)
        self.hits += 1
        h.send_response(status)
        for k, v in headers:
            if k.lower() not in ("connection", "transfer-encoding"):
                h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()
        self._trickle(h, body, **trickle)

    def _trickle(self, handler, data, rate=5, limit_s=120):
        """data, `rate` bytes a second, until the client leaves (at most limit_s)."""
        handler.close_connection = True
        end = time.monotonic() + limit_s
        try:
            for i in range(0, len(data), rate):
                if time.monotonic() > end or self.mode is None:
                    return
                handler.wfile.write(data[i:i + rate])
                handler.wfile.flush()
                self.sent += rate
                time.sleep(1)
        except OSError:
            pass

    def _respond(self, handler, status, headers, body):
        handler.send_response(status)
        for k, v in headers:
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    # -- the modes --

    def on_request(self, h):
        mode = self.mode
        path = h.path.split("?")[0]
        is_blob = h.command == "GET" and "/blobs/sha256:" in path
        is_manifest = h.command == "GET" and "/manifests/" in path
        if self.challenge_all:
            self.hits += 1
            _empty_response(h, 401, [("WWW-Authenticate",
                                      'Bearer realm="%s",service="front"' % self.realm)])
            return True
        if self.require_auth and not h.headers.get("Authorization"):
            _empty_response(h, 401, [("WWW-Authenticate", 'Basic realm="front"')])
            return True
        if mode is None:
            return False
        if mode == "size0" and is_manifest and "/manifests/sha256:" not in path:
            status, headers, body = self._upstream(h)
            doc = json.loads(body) if status == 200 else {}
            if doc.get("mediaType") not in MANIFEST_TYPES:
                return False
            for layer in doc["layers"]:
                layer["size"] = 0
            self.hits += 1
            self._respond(h, 200, [(k, v) for k, v in headers
                                   if k.lower() != "docker-content-digest"],
                          json.dumps(doc).encode())
            return True
        if mode == "endless_blob" and is_blob:
            self.hits += 1
            self._endless(h, b"\0" * 65536)
            return True
        if mode == "endless_manifest" and is_manifest:
            self.hits += 1
            self._endless(h, b" " * 65536)
            return True
        if mode == "endless_headers" and is_manifest:
            self.hits += 1
            self._endless(h, b"X-Pad: " + b"a" * 1017 + b"\r\n", headers=True)
            return True
        if mode == "slow_body" and is_manifest:
            self._relay_trickled(h)
            return True
        if mode == "slow_blob" and is_blob and not h.headers.get("Range"):
            self._relay_trickled(h, rate=2048)
            return True
        if mode == "slow_headers" and is_manifest:
            self.hits += 1
            h.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._trickle(h, b"X-Pad: " + b"a" * 4000 + b"\r\n\r\n")
            return True
        if mode == "redirect_loop" and is_blob:
            self.hits += 1
            _empty_response(h, 307, [("Location", "http://%s%s" % (self.host, h.path))])
            return True
        if mode.startswith("range_") and is_blob and h.headers.get("Range"):
            return self._bad_range(h, mode)
        if mode == "challenge_redirect" and is_blob and h.headers.get("Authorization"):
            self.hits += 1
            _empty_response(h, 307, [("Location", "http://localhost:%d/%s" % (
                self.target.server_address[1], path.rsplit("/", 1)[1]))])
            return True
        return False

    def _bad_range(self, h, mode):
        first, last = (int(x) for x in h.headers["Range"].split("=", 1)[1].split("-"))
        status, headers, body = self._upstream(h)
        if status != 206:
            return False
        total = [v for k, v in headers if k.lower() == "content-range"][0].split("/", 1)[1]
        headers = [(k, v) for k, v in headers if k.lower() != "content-range"]
        if mode == "range_missing":
            out = body
        else:
            # the same length one byte later (the registry cuts the last one off at the blob's end)
            _, _, later = self._upstream(h, (first + 1, last + 1))
            out = later
            first, last = ((first + 1, first + len(later)) if mode == "range_shifted"
                           else (first, first + len(later) - 1))
            headers.append(("Content-Range", "bytes %d-%d/%s" % (first, last, total)))
        self.hits += 1
        self._respond(h, 206, headers, out)
        return True


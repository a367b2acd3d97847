# SPDX-License-Identifier: Apache-2.0
"""Distribution (docker-registry) on 127.0.0.1 with filesystem storage: plain, with token auth
(and the token issuer it trusts: RS256 JWTs signed with the openssl CLI), or with an htpasswd
file (Basic auth)."""

import base64
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .images import run_mkfixture
from .servers import free_port, stop_process
from .timeouts import INDEX_TIMEOUT, READY_TIMEOUT, STOP_TIMEOUT


def registry_config(storage, addr, auth=""):
    """A Distribution config.yml: storage in the directory `storage`, listening on addr, with the
    `auth:` section given (none: anonymous pull and push)."""
    return ("version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            "%s"
            "http:\n  addr: %s\n  secret: strata-tests\n" % (storage, auth, addr))


class Registry:
    """docker-registry (Distribution) on 127.0.0.1 with filesystem storage in workdir. A context
    manager too: `with Registry(d) as reg:` starts it and stops it."""

    auth = ""      # the config's auth: section (subclasses)

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.storage = self.workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1:%d" % self.port
        self.config = self.workdir / "config.yml"
        self.log = self.workdir / "registry.log"
        self.config.write_text(registry_config(self.storage, self.host, self.auth))
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

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

    def _ready(self):
        return self._ping() == 200

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
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("docker-registry not ready on %s within %ss:\n%s" %
                           (self.host, READY_TIMEOUT, self.log_tail()))

    def stop(self):
        if not self.proc:
            return
        stop_process(self.proc)
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

    def push(self, layout):
        """Pushes a mkfixture layout's images here."""
        run_mkfixture("push", "--layout", layout, "--registry", self.host)

    def push_indexed(self, layout, image, strata):
        """Pushes a mkfixture layout's images here and, with strata (a harness.strata.Strata),
        an index artifact of image."""
        self.push(layout)
        strata("--json", "index", "--push", self.ref(image), timeout=INDEX_TIMEOUT)

    def get(self, path, accept=None, timeout=60):
        """urlopen of GET url+path (a context manager), asked directly (not through a proxy)."""
        req = urllib.request.Request(self.url + path, headers={"Accept": accept} if accept else {})
        return urllib.request.urlopen(req, timeout=timeout)

    def blob_file(self, digest):
        """Where the storage keeps a blob's bytes."""
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


# ----------------------------------------------------------------------------------------------
# token auth
# ----------------------------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """GET /token?service=..&scope=.. on 127.0.0.1: Basic user:password gets pull+push on every
    repository, anonymous gets pull on public_repo only (a token with no access otherwise, as
    Docker Hub does); wrong credentials get 401. Tokens are RS256 JWTs with the signing cert in
    x5c. Knobs (take lock): lifetime, advertised, hang (requests wait up to HANG_MAX s for
    unhang). Records requests as (user or None, [scopes], status), and the tokens it issued."""

    SERVICE = "strata-test"
    ISSUER = "strata-test-issuer"
    # Distribution 2.8 accepts a token until 60 s after its exp: the issuer moves exp back by that
    # much, so that a token of lifetime L is refused L seconds after it was issued
    REGISTRY_LEEWAY = 60
    HANG_MAX = 90               # longest a hanging token issuer holds a request

    def __init__(self, workdir, user, password, public_repo):
        self.user, self.password, self.public_repo = user, password, public_repo
        self.workdir = workdir
        self.key = os.path.join(workdir, "key.pem")
        self.cert = os.path.join(workdir, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=" + self.ISSUER],
                       check=True, capture_output=True, timeout=60)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True, timeout=30).stdout
        self.x5c = base64.b64encode(der).decode()
        self.lifetime = 300        # seconds from issue until the registry refuses the token
        self.advertised = None     # expires_in sent (None: lifetime)
        self.lock = threading.Lock()
        self.requests = []         # (user or None, [scopes], status)
        self.tokens = []
        self.hang = False          # token requests wait (up to HANG_MAX s) for `unhang`
        self.unhang = threading.Event()
        self.hung = 0              # token requests that hung
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                issuer._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.realm = "http://127.0.0.1:%d/token" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self):
        with self.lock:
            return len(self.requests)

    def _sign(self, data):
        p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=data,
                           check=True, capture_output=True, timeout=30)
        return p.stdout

    @staticmethod
    def _empty(h, status):
        h.send_response(status)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _access(self, user, scopes):
        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            want = parts[2].split(",")
            if user == self.user:
                allowed = [a for a in want if a in ("pull", "push")]
            else:
                allowed = [a for a in want if a == "pull" and parts[1] == self.public_repo]
            access.append({"type": "repository", "name": parts[1], "actions": allowed})
        return access

    def _token(self, user, access, now, lifetime):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.ISSUER, "sub": user or "", "aud": self.SERVICE,
                  "exp": now + lifetime - self.REGISTRY_LEEWAY,
                  "nbf": now - 5, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        return signing_input + "." + b64url(self._sign(signing_input.encode()))

    def _handle(self, h):
        with self.lock:
            hang = self.hang
            if hang:
                self.hung += 1
        if hang:   # an issuer that accepted the connection and does not answer
            self.unhang.wait(self.HANG_MAX)
        u = urllib.parse.urlsplit(h.path)
        q = urllib.parse.parse_qs(u.query)
        scopes = q.get("scope", [])
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                user, pw = "?", ""
            if user != self.user or pw != self.password:
                with self.lock:
                    self.requests.append((user, scopes, 401))
                self._empty(h, 401)
                return
        if u.path != "/token" or q.get("service") != [self.SERVICE]:
            self._empty(h, 400)
            return
        now = int(time.time())
        with self.lock:
            lifetime = self.lifetime
            advertised = self.advertised if self.advertised is not None else lifetime
        token = self._token(user, self._access(user, scopes), now, lifetime)
        body = json.dumps({"token": token, "access_token": token, "expires_in": advertised,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})
        with self.lock:
            self.requests.append((user, scopes, 200))
            self.tokens.append(token)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body.encode())


class _AuthRegistry(Registry):
    """A Registry that asks for credentials: ready when /v2/ answers 401."""

    def _ready(self):
        return self._ping() == 401


class TokenAuthRegistry(_AuthRegistry):
    """A registry on workdir's storage served with token auth by issuer (a TokenIssuer)."""

    def __init__(self, workdir, issuer):
        self.auth = ("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n"
                     "    rootcertbundle: %s\n" % (issuer.realm, issuer.SERVICE, issuer.ISSUER,
                                                   issuer.cert))
        super().__init__(workdir)


class HtpasswdRegistry(_AuthRegistry):
    """A registry on workdir's storage served with htpasswd (Basic) auth in realm."""

    def __init__(self, workdir, htpasswd, realm):
        self.auth = "auth:\n  htpasswd:\n    realm: %s\n    path: %s\n" % (realm, htpasswd)
        super().__init__(workdir)

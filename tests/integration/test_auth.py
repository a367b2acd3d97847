# SPDX-License-Identifier: Apache-2.0
"""Registry authentication against a real Distribution registry with token auth: a local token
issuer (stdlib HTTP server, RS256 JWTs signed with the openssl CLI, x5c chain), anonymous pulls of
a public repository, a private repository refused without credentials, docker config.json `auths`
and a credential helper, a token expiring during lazy reads by the daemon, no token sent on a
redirect to another host, and no secret in any strata output.
"""

import base64
import errno
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Registry, Strata, free_port, one_line, run_bounded, run_mkfixture

USER, PASSWORD = "alice", "s3cret"
BASIC = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
SERVICE = "strata-test"
ISSUER = "strata-test-issuer"
PUBLIC_REPO = "pubcorner"   # anonymous pull
PRIVATE_REPO = "corner"     # alice only (pull, push)
READ_TIMEOUT = 60
# Distribution 2.8 accepts a token until 60 s after its exp: the issuer moves exp back by that much,
# so that a token of lifetime L is refused L seconds after it was issued
REGISTRY_LEEWAY = 60
CMD_TIMEOUT = 120
HANG_MAX = 90               # longest a hanging token issuer holds a request


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """GET /token?service=..&scope=..: Basic alice:s3cret gets pull+push on every repository,
    anonymous gets pull on PUBLIC_REPO only (a token with no access otherwise, as Docker Hub
    does); wrong credentials get 401. Tokens are RS256 JWTs with the signing cert in x5c."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.key = os.path.join(workdir, "key.pem")
        self.cert = os.path.join(workdir, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=" + ISSUER],
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

    def _handle(self, h):
        with self.lock:
            hang = self.hang
            if hang:
                self.hung += 1
        if hang:   # an issuer that accepted the connection and does not answer
            self.unhang.wait(HANG_MAX)
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
            if user != USER or pw != PASSWORD:
                with self.lock:
                    self.requests.append((user, scopes, 401))
                h.send_response(401)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        if u.path != "/token" or q.get("service") != [SERVICE]:
            h.send_response(400)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            want = parts[2].split(",")
            if user == USER:
                allowed = [a for a in want if a in ("pull", "push")]
            else:
                allowed = [a for a in want if a == "pull" and parts[1] == PUBLIC_REPO]
            access.append({"type": "repository", "name": parts[1], "actions": allowed})
        now = int(time.time())
        with self.lock:
            lifetime = self.lifetime
            advertised = self.advertised if self.advertised is not None else lifetime
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE,
                  "exp": now + lifetime - REGISTRY_LEEWAY,
                  "nbf": now - 5, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        token = signing_input + "." + b64url(self._sign(signing_input.encode()))
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


class AuthRegistry(Registry):
    """The same storage served with token auth (ready when /v2/ answers 401)."""

    def __init__(self, workdir, issuer):
        super().__init__(workdir)
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n"
            "    rootcertbundle: %s\n"
            "http:\n  addr: %s\n  secret: strata-tests\n" % (
                self.storage, issuer.realm, SERVICE, ISSUER, issuer.cert, self.host))

    def _ping(self):
        code = super()._ping()
        return 200 if code == 401 else code


class AuthEnv:
    pass


@pytest.fixture(scope="module")
def authreg(strata_bin, fixtures, tmp_path_factory):
    """The fixture images pushed to a plain registry, then served by a token-auth registry on the
    same storage, with PUBLIC_REPO a copy of PRIVATE_REPO."""
    work = tmp_path_factory.mktemp("auth")
    plain = Registry(work / "reg")
    plain.start()
    try:
        run_mkfixture("push", "--layout", fixtures.layout, "--registry", plain.host)
    finally:
        plain.stop()
    repos = plain.storage / "docker" / "registry" / "v2" / "repositories"
    shutil.copytree(repos / PRIVATE_REPO, repos / PUBLIC_REPO, symlinks=True)
    issuer = TokenIssuer(str(work))
    reg = AuthRegistry(work / "reg", issuer)
    try:
        reg.start()
        env = AuthEnv()
        env.reg, env.issuer, env.work, env.fixtures = reg, issuer, work, fixtures
        env.outputs = []   # every strata stdout/stderr of this module, for the secrets check
        yield env
    finally:
        reg.stop()
        issuer.stop()
        shutil.rmtree(plain.storage, ignore_errors=True)


def docker_config(tmp_path, name, config):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return str(d)


def run_env(docker_cfg, path_prepend=None):
    env = dict(os.environ)
    env["DOCKER_CONFIG"] = docker_cfg
    if path_prepend:
        env["PATH"] = path_prepend + os.pathsep + env.get("PATH", "")
    return env


def run(authreg, strata_bin, store, *args, env=None, check=True, timeout=CMD_TIMEOUT):
    p = Strata(strata_bin, store)("-v", "-v", *args, env=env, check=check, timeout=timeout)
    authreg.outputs.append(p.stdout + p.stderr)
    return p


def pulled(p):
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    assert len(objs) == 1, p.stdout
    return objs[0]


def test_anonymous_pull_of_public_repo(authreg, strata_bin, tmp_path):
    env = run_env(docker_config(tmp_path, "empty", {}))
    n = authreg.issuer.count()
    ref = authreg.reg.ref(PUBLIC_REPO + ":oci")
    o = pulled(run(authreg, strata_bin, tmp_path / "store", "--json", "pull", "--index=build",
                   ref, env=env))
    assert o["manifest"] == authreg.fixtures.image("corner:oci")["manifest"], o
    reqs = authreg.issuer.requests[n:]
    assert reqs and all(u is None for u, _, _ in reqs), reqs


def test_private_repo_without_credentials_is_denied(authreg, strata_bin, tmp_path):
    env = run_env(docker_config(tmp_path, "empty", {}))
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    p = Strata(strata_bin, tmp_path / "store")("pull", ref, env=env, check=False)
    authreg.outputs.append(p.stdout + p.stderr)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert "access denied" in line and authreg.reg.host in line, line


def test_private_repo_with_wrong_password_is_denied(authreg, strata_bin, tmp_path):
    bad = base64.b64encode(b"alice:wrong-pw").decode()
    env = run_env(docker_config(tmp_path, "bad", {"auths": {authreg.reg.host: {"auth": bad}}}))
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    p = Strata(strata_bin, tmp_path / "store")("pull", ref, env=env, check=False)
    authreg.outputs.append(p.stdout + p.stderr)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert "access denied" in line, line
    assert "wrong-pw" not in p.stderr + p.stdout and bad not in p.stderr + p.stdout


def test_private_repo_with_config_auths(authreg, strata_bin, tmp_path):
    env = run_env(docker_config(tmp_path, "auths",
                                {"auths": {authreg.reg.host: {"auth": BASIC}}}))
    n = authreg.issuer.count()
    ref = authreg.reg.ref(PRIVATE_REPO + ":gzip")
    o = pulled(run(authreg, strata_bin, tmp_path / "store", "--json", "pull", "--index=build",
                   ref, env=env))
    assert o["manifest"] == authreg.fixtures.image("corner:gzip")["manifest"], o
    reqs = authreg.issuer.requests[n:]
    assert reqs and all(u == USER and st == 200 for u, _, st in reqs), reqs


def test_private_repo_with_credential_helper(authreg, strata_bin, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text("#!/bin/sh\n"
                      "[ \"$1\" = get ] || exit 1\n"
                      "read -r url\n"
                      "printf '{\"ServerURL\":\"%%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' "
                      "\"$url\"\n" % (USER, PASSWORD))
    helper.chmod(0o755)
    env = run_env(docker_config(tmp_path, "helper",
                                {"credHelpers": {authreg.reg.host: "test"}}), str(bindir))
    n = authreg.issuer.count()
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    o = pulled(run(authreg, strata_bin, tmp_path / "store", "--json", "pull", "--index=build",
                   ref, env=env))
    assert o["manifest"] == authreg.fixtures.image("corner:oci")["manifest"], o
    reqs = authreg.issuer.requests[n:]
    assert reqs and all(u == USER and st == 200 for u, _, st in reqs), reqs


def _read(m, path):
    def _r():
        with open(path, "rb") as f:
            return f.read()
    return run_bounded(_r, READ_TIMEOUT, m.kill)


def _files(root):
    out = []
    for d, _, names in os.walk(root):
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0:
                out.append(p)
    return out


def test_token_expires_during_lazy_reads(authreg, strata_bin, mount, tmp_path, monkeypatch):
    cfg = docker_config(tmp_path, "auths", {"auths": {authreg.reg.host: {"auth": BASIC}}})
    env = run_env(cfg)
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    # store A builds the index and pushes it as an artifact (alice may push)
    run(authreg, strata_bin, tmp_path / "A", "--json", "index", "--push", ref, env=env,
        timeout=300)
    # tokens the registry stops accepting after 3 s while the issuer says they last 5 min: the
    # daemon's cached token is refused in the middle of its lazy reads
    issuer = authreg.issuer
    with issuer.lock:
        issuer.lifetime, issuer.advertised = 3, 300
    try:
        store = tmp_path / "B"
        o = pulled(run(authreg, strata_bin, store, "--json", "pull", "--index=artifact", ref,
                       env=env))
        assert o["index_sources"] and set(o["index_sources"]) == {"artifact"}, o
        monkeypatch.setenv("DOCKER_CONFIG", cfg)   # the daemon inherits it
        m = mount(store_dir=str(store), args=["-v", "-v"])
        layers = o["layers"]
        assert len(layers) >= 2, o
        first = _files(m.layer(layers[0]))
        second = _files(m.layer(layers[-1]))
        assert first and second, (first, second)
        n0 = issuer.count()
        _read(m, first[0])
        n1 = issuer.count()
        assert n1 > n0, "the first cold read asked no token"
        time.sleep(4.5)   # past the token lifetime
        data = _read(m, second[-1])
        assert data is not None
        n2 = issuer.count()
        assert n2 > n1, "no second token request after the token expired\n" + m.stderr()[-3000:]
        authreg.outputs.append(m.stderr())
        p = Strata(strata_bin, store)("stats", env=env)
        authreg.outputs.append(p.stdout + p.stderr)
    finally:
        with issuer.lock:
            issuer.lifetime, issuer.advertised = 300, None


def test_hanging_token_issuer_fails_the_read_within_the_read_timeout(authreg, strata_bin, mount,
                                                                       layer_tree, tmp_path,
                                                                       monkeypatch):
    """The daemon's first lazy read needs a token and the issuer hangs: the read fails with EIO
    once --read-timeout has passed (not after the issuer request's own 30 s timeout), and the next
    read after the issuer recovered succeeds with the right bytes."""
    cfg = docker_config(tmp_path, "auths", {"auths": {authreg.reg.host: {"auth": BASIC}}})
    env = run_env(cfg)
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    run(authreg, strata_bin, tmp_path / "A", "--json", "index", "--push", ref, env=env,
        timeout=300)
    store = tmp_path / "B"
    o = pulled(run(authreg, strata_bin, store, "--json", "pull", "--index=artifact", ref,
                   env=env))
    monkeypatch.setenv("DOCKER_CONFIG", cfg)
    read_timeout = 3
    m = mount(store_dir=str(store), args=["-v", "--read-timeout", str(read_timeout)])
    path = _files(m.layer(o["layers"][0]))[0]
    issuer = authreg.issuer
    with issuer.lock:
        issuer.hang = True
        issuer.unhang.clear()
    try:
        # bounded well below the issuer request's own 30 s timeout: a read that waited for it
        # would be killed here and fail the test
        try:
            run_bounded(lambda: open(path, "rb").read(), read_timeout + 12, m.kill)
            pytest.fail("the read succeeded although the token issuer hangs")
        except OSError as e:
            assert e.errno == errno.EIO, e
        assert issuer.hung > 0, "the read did not ask the issuer: the test proves nothing"
    finally:
        with issuer.lock:
            issuer.hang = False
        issuer.unhang.set()
    data = _read(m, path)
    tree = layer_tree(o["layers"][0])
    with open(os.path.join(tree.path, os.path.relpath(path, m.layer(o["layers"][0]))), "rb") as f:
        assert data == f.read(), path
    log = m.stderr()
    authreg.outputs.append(log)
    assert "read timeout of %ds expired" % read_timeout in log, log[-3000:]


class RedirectingFront:
    """127.0.0.1:P in front of the registry that answers an authorized blob GET with a 307 to
    http://localhost:Q/ (another host, like a registry's object storage), where the blob is
    served from the registry's storage directory. Records the Authorization header of every
    request the storage side gets."""

    def __init__(self, reg):
        self.reg = reg
        self.storage_auth = []   # Authorization header (or None) of each storage request
        front = self
        blobs = reg.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"

        class Front(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _proxy(self):
                parts = self.path.split("?")[0].split("/")
                if (self.command == "GET" and len(parts) >= 5 and parts[-2] == "blobs" and
                        parts[-1].startswith("sha256:") and self.headers.get("Authorization")):
                    self.send_response(307)
                    self.send_header("Location", "http://localhost:%d/%s" % (front.sport,
                                                                             parts[-1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=30)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, headers=hdrs)
                r = conn.getresponse()
                body = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            do_GET = do_HEAD = _proxy

        class Storage(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                front.storage_auth.append(self.headers.get("Authorization"))
                hexd = self.path.rsplit(":", 1)[-1]
                try:
                    data = (blobs / hexd[:2] / hexd / "data").read_bytes()
                except OSError:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), Front),
                        ThreadingHTTPServer(("127.0.0.1", free_port()), Storage)]
        self.port = self.servers[0].server_address[1]
        self.sport = self.servers[1].server_address[1]
        self.host = "127.0.0.1:%d" % self.port
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def stop(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


def test_token_not_sent_on_redirect_to_another_host(authreg, strata_bin, tmp_path):
    front = RedirectingFront(authreg.reg)
    try:
        env = run_env(docker_config(tmp_path, "auths", {"auths": {front.host: {"auth": BASIC}}}))
        ref = "%s/%s:gzip" % (front.host, PRIVATE_REPO)
        o = pulled(run(authreg, strata_bin, tmp_path / "store", "--json", "pull",
                       "--index=build", ref, env=env))
        assert o["manifest"] == authreg.fixtures.image("corner:gzip")["manifest"], o
    finally:
        front.stop()
    assert front.storage_auth, "no blob went through the redirect"
    assert all(a is None for a in front.storage_auth), \
        "Authorization sent to the other host: %s" % [a and a[:12] for a in front.storage_auth]


def test_no_secret_in_any_output(authreg):
    """Runs last in this module: everything strata printed (commands, daemon log) so far."""
    assert authreg.outputs, "no output collected"
    secrets = [PASSWORD, BASIC] + list(authreg.issuer.tokens)
    secrets += [t.split(".")[2] for t in authreg.issuer.tokens]   # the signatures alone
    for i, out in enumerate(authreg.outputs):
        for s in secrets:
            assert s not in out, "output %d contains a secret (%s...):\n%s" % (i, s[:6], out)


# ----------------------------------------------------------------------------------------------
# Basic auth: Distribution with an htpasswd file (bcrypt entries made by `htpasswd -B`).
# Distribution 2.8 serves htpasswd auth over plain HTTP too (its docs only advise TLS), so the
# registry runs without TLS here, on 127.0.0.1.
# ----------------------------------------------------------------------------------------------

BASIC_REALM = "strata-basic-test"


class HtpasswdRegistry(Registry):
    """The same storage served with htpasswd (Basic) auth: alice may pull and push."""

    def __init__(self, workdir, htpasswd):
        super().__init__(workdir)
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            "auth:\n  htpasswd:\n    realm: %s\n    path: %s\n"
            "http:\n  addr: %s\n  secret: strata-tests\n" % (
                self.storage, BASIC_REALM, htpasswd, self.host))

    def _ping(self):
        code = super()._ping()
        return 200 if code == 401 else code


@pytest.fixture(scope="module")
def basicreg(strata_bin, fixtures, tmp_path_factory):
    if not shutil.which("htpasswd"):
        pytest.skip("htpasswd (apache2-utils) is not installed")
    work = tmp_path_factory.mktemp("basic")
    plain = Registry(work / "reg")
    plain.start()
    try:
        run_mkfixture("push", "--layout", fixtures.layout, "--registry", plain.host)
    finally:
        plain.stop()
    htpasswd = work / "htpasswd"
    p = subprocess.run(["htpasswd", "-B", "-i", "-n", USER], input=PASSWORD, text=True,
                       capture_output=True, timeout=60, check=True)
    assert p.stdout.startswith(USER + ":$2"), "not a bcrypt entry: %r" % p.stdout[:12]
    htpasswd.write_text(p.stdout)
    reg = HtpasswdRegistry(work / "reg", htpasswd)
    try:
        reg.start()
        env = AuthEnv()
        env.reg, env.work, env.fixtures = reg, work, fixtures
        env.outputs = []
        yield env
    finally:
        reg.stop()
        shutil.rmtree(plain.storage, ignore_errors=True)


def test_basic_auth_registry_refuses_anonymous(basicreg):
    """The registry itself: /v2/ asks for Basic credentials, and takes alice's."""
    conn = http.client.HTTPConnection("127.0.0.1", basicreg.reg.port, timeout=30)
    conn.request("GET", "/v2/")
    r = conn.getresponse()
    r.read()
    assert r.status == 401 and r.getheader("WWW-Authenticate", "").startswith("Basic "), r.status
    conn.request("GET", "/v2/", headers={"Authorization": "Basic " + BASIC})
    r = conn.getresponse()
    r.read()
    conn.close()
    assert r.status == 200, r.status


def test_basic_auth_pull_and_lazy_read(basicreg, strata_bin, mount, layer_tree, tmp_path,
                                       monkeypatch):
    cfg = docker_config(tmp_path, "auths", {"auths": {basicreg.reg.host: {"auth": BASIC}}})
    env = run_env(cfg)
    store = tmp_path / "store"
    ref = basicreg.reg.ref(PRIVATE_REPO + ":gzip")
    # store A builds the indexes and pushes them (Basic credentials on POST/PUT too); store B
    # pulls only the indexes, so that every file read through FUSE fetches ranges lazily
    run(basicreg, strata_bin, tmp_path / "A", "--json", "index", "--push", ref, env=env,
        timeout=300)
    o = pulled(run(basicreg, strata_bin, store, "--json", "pull", "--index=artifact", ref,
                   env=env))
    assert o["index_sources"] and set(o["index_sources"]) == {"artifact"}, o
    want = basicreg.fixtures.image("corner:gzip")
    assert o["manifest"] == want["manifest"], o
    monkeypatch.setenv("DOCKER_CONFIG", cfg)   # the daemon inherits it
    m = mount(store_dir=str(store), args=["-v", "-v"])
    try:
        for digest in o["layers"]:
            # every file read through FUSE: lazy range reads with Basic credentials
            layer_tree(digest).compare(m.layer(digest))
    finally:
        basicreg.outputs.append(m.stderr())
    p = Strata(strata_bin, store)("--json", "stats", env=env)   # served by the daemon
    basicreg.outputs.append(p.stdout + p.stderr)
    st = json.loads(p.stdout)
    assert st["daemon"] and st["read_fetch"]["range_requests"] > 0, st


@pytest.mark.parametrize("case", ["wrong-password", "no-credentials"])
def test_basic_auth_refused(basicreg, strata_bin, tmp_path, case):
    if case == "wrong-password":
        bad = base64.b64encode(("%s:wrong-pw" % USER).encode()).decode()
        cfg = {"auths": {basicreg.reg.host: {"auth": bad}}}
    else:
        cfg = {"auths": {"127.0.0.1:1": {"auth": BASIC}}}   # credentials for another registry
    env = run_env(docker_config(tmp_path, case, cfg))
    store = tmp_path / "store"
    ref = basicreg.reg.ref(PRIVATE_REPO + ":gzip")
    p = Strata(strata_bin, store)("pull", ref, env=env, check=False)
    basicreg.outputs.append(p.stdout + p.stderr)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    line = one_line(p.stderr)
    assert "access denied" in line and "401" in line and basicreg.reg.host in line, line
    assert "wrong-pw" not in p.stdout + p.stderr
    if case == "wrong-password":
        assert bad not in p.stdout + p.stderr
    if os.path.isdir(store):   # nothing registered
        assert not Strata(strata_bin, store).ls(), "an image was registered"


def test_basic_auth_no_secret_in_any_output(basicreg):
    """Runs last among the Basic auth tests: everything strata printed (commands, daemon log,
    stats --json)."""
    assert len(basicreg.outputs) >= 3, "no output collected"
    for i, out in enumerate(basicreg.outputs):
        for s in (PASSWORD, BASIC):
            assert s not in out, "output %d contains a secret (%s...):\n%s" % (i, s[:3], out)

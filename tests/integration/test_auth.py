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
import time

import pytest

from harness.fs import largest_file, read_bytes, read_file, regular_files, run_bounded
from harness.proxy import RedirectingFront
from harness.registry import HtpasswdRegistry, Registry, TokenAuthRegistry, TokenIssuer
from harness.strata import Strata, one_json, one_line
from harness.timeouts import CMD_TIMEOUT, INDEX_TIMEOUT

USER, PASSWORD = "alice", "s3cret"
BASIC = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
PUBLIC_REPO = "pubcorner"   # anonymous pull
PRIVATE_REPO = "corner"     # alice only (pull, push)
BASIC_REALM = "strata-basic-test"


class AuthEnv:
    """What a module fixture yields: the registry (reg), its work directory, the fixture images,
    and every strata stdout/stderr of the module (outputs), for the secrets check."""

    def __init__(self, reg, work, fixtures, issuer=None):
        self.reg, self.work, self.fixtures, self.issuer = reg, work, fixtures, issuer
        self.outputs = []


def plain_storage(work, fixtures):
    """The fixture images pushed to a plain registry in work/reg, stopped: its storage is what
    the registries with auth serve."""
    with Registry(work / "reg") as plain:
        plain.push(fixtures.layout)
    return plain


@pytest.fixture(scope="module")
def authreg(strata_bin, fixtures, tmp_path_factory):
    """The fixture images pushed to a plain registry, then served by a token-auth registry on the
    same storage, with PUBLIC_REPO a copy of PRIVATE_REPO."""
    work = tmp_path_factory.mktemp("auth")
    plain = plain_storage(work, fixtures)
    repos = plain.storage / "docker" / "registry" / "v2" / "repositories"
    shutil.copytree(repos / PRIVATE_REPO, repos / PUBLIC_REPO, symlinks=True)
    issuer = TokenIssuer(str(work), USER, PASSWORD, PUBLIC_REPO)
    reg = TokenAuthRegistry(work / "reg", issuer)
    try:
        reg.start()
        yield AuthEnv(reg, work, fixtures, issuer)
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


def alice_env(authenv, tmp_path):
    """(DOCKER_CONFIG directory, environment) with alice's credentials for authenv's registry."""
    cfg = docker_config(tmp_path, "auths", {"auths": {authenv.reg.host: {"auth": BASIC}}})
    return cfg, run_env(cfg)


def run(authenv, strata_bin, store, *args, env=None, check=True, timeout=CMD_TIMEOUT):
    """strata -v -v ARGS; its output joins authenv.outputs."""
    p = Strata(strata_bin, store)("-v", "-v", *args, env=env, check=check, timeout=timeout)
    authenv.outputs.append(p.stdout + p.stderr)
    return p


def pull_lazily(authenv, strata_bin, tmp_path, store, ref, env):
    """Store A builds ref's indexes and pushes them (alice may push); store then pulls only the
    indexes, so that every file read through FUSE fetches ranges lazily. The pull's JSON."""
    run(authenv, strata_bin, tmp_path / "A", "--json", "index", "--push", ref, env=env,
        timeout=INDEX_TIMEOUT)
    return one_json(run(authenv, strata_bin, store, "--json", "pull", "--index=artifact", ref,
                        env=env))


def pull_built(authreg, strata_bin, tmp_path, repo, tag, env):
    """`strata --json pull --index=build REPO:TAG` from the token-auth registry into a new store
    must get corner:TAG's manifest. The token requests it made: [(user, scopes, status)]."""
    n = authreg.issuer.count()
    o = one_json(run(authreg, strata_bin, tmp_path / "store", "--json", "pull", "--index=build",
                     authreg.reg.ref(repo + ":" + tag), env=env))
    assert o["manifest"] == authreg.fixtures.image("corner:" + tag)["manifest"], o
    return authreg.issuer.requests[n:]


def pull_refused(authenv, strata_bin, store, ref, env):
    """`strata pull REF` (not verbose) must exit 1: (the process, its one line of stderr)."""
    p = Strata(strata_bin, store)("pull", ref, env=env, check=False)
    authenv.outputs.append(p.stdout + p.stderr)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    return p, one_line(p.stderr)


def test_anonymous_pull_of_public_repo(authreg, strata_bin, tmp_path):
    env = run_env(docker_config(tmp_path, "empty", {}))
    reqs = pull_built(authreg, strata_bin, tmp_path, PUBLIC_REPO, "oci", env)
    assert reqs and all(u is None for u, _, _ in reqs), reqs


def test_private_repo_without_credentials_is_denied(authreg, strata_bin, tmp_path):
    env = run_env(docker_config(tmp_path, "empty", {}))
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    p, line = pull_refused(authreg, strata_bin, tmp_path / "store", ref, env)
    assert "access denied" in line and authreg.reg.host in line, line


def test_private_repo_with_wrong_password_is_denied(authreg, strata_bin, tmp_path):
    bad = base64.b64encode(b"alice:wrong-pw").decode()
    env = run_env(docker_config(tmp_path, "bad", {"auths": {authreg.reg.host: {"auth": bad}}}))
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    p, line = pull_refused(authreg, strata_bin, tmp_path / "store", ref, env)
    assert "access denied" in line, line
    assert "wrong-pw" not in p.stderr + p.stdout and bad not in p.stderr + p.stdout


def test_private_repo_with_config_auths(authreg, strata_bin, tmp_path):
    _, env = alice_env(authreg, tmp_path)
    reqs = pull_built(authreg, strata_bin, tmp_path, PRIVATE_REPO, "gzip", env)
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
    reqs = pull_built(authreg, strata_bin, tmp_path, PRIVATE_REPO, "oci", env)
    assert reqs and all(u == USER and st == 200 for u, _, st in reqs), reqs


def test_token_expires_during_lazy_reads(authreg, strata_bin, mount, tmp_path, monkeypatch):
    cfg, env = alice_env(authreg, tmp_path)
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    # tokens the registry stops accepting after 3 s while the issuer says they last 5 min: the
    # daemon's cached token is refused in the middle of its lazy reads
    issuer = authreg.issuer
    with issuer.lock:
        issuer.lifetime, issuer.advertised = 3, 300
    try:
        store = tmp_path / "B"
        o = pull_lazily(authreg, strata_bin, tmp_path, store, ref, env)
        assert o["index_sources"] and set(o["index_sources"]) == {"artifact"}, o
        monkeypatch.setenv("DOCKER_CONFIG", cfg)   # the daemon inherits it
        m = mount(store_dir=str(store), args=["-v", "-v"])
        layers = o["layers"]
        assert len(layers) >= 2, o
        first = regular_files(m.layer(layers[0]), nonempty=True)
        second = regular_files(m.layer(layers[-1]), nonempty=True)
        assert first and second, (first, second)
        n0 = issuer.count()
        read_file(m, first[0])
        n1 = issuer.count()
        assert n1 > n0, "the first cold read asked no token"
        time.sleep(4.5)   # past the token lifetime
        data = read_file(m, second[-1])
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
    cfg, env = alice_env(authreg, tmp_path)
    ref = authreg.reg.ref(PRIVATE_REPO + ":oci")
    o = pull_lazily(authreg, strata_bin, tmp_path, tmp_path / "B", ref, env)
    monkeypatch.setenv("DOCKER_CONFIG", cfg)
    read_timeout = 3
    m = mount(store_dir=str(tmp_path / "B"), args=["-v", "--read-timeout", str(read_timeout)])
    path = regular_files(m.layer(o["layers"][0]), nonempty=True)[0]
    issuer = authreg.issuer
    with issuer.lock:
        issuer.hang = True
        issuer.unhang.clear()
    try:
        # bounded well below the issuer request's own 30 s timeout: a read that waited for it
        # would be killed here and fail the test
        try:
            run_bounded(lambda: read_bytes(path), read_timeout + 12, m.kill)
            pytest.fail("the read succeeded although the token issuer hangs")
        except OSError as e:
            assert e.errno == errno.EIO, e
        assert issuer.hung > 0, "the read did not ask the issuer: the test proves nothing"
    finally:
        with issuer.lock:
            issuer.hang = False
        issuer.unhang.set()
    data = read_file(m, path)
    tree = layer_tree(o["layers"][0])
    with open(os.path.join(tree.path, os.path.relpath(path, m.layer(o["layers"][0]))), "rb") as f:
        assert data == f.read(), path
    log = m.stderr()
    authreg.outputs.append(log)
    assert "read timeout of %ds expired" % read_timeout in log, log[-3000:]


def test_token_not_sent_on_redirect_to_another_host(authreg, strata_bin, tmp_path):
    front = RedirectingFront(authreg.reg)
    try:
        env = run_env(docker_config(tmp_path, "auths", {"auths": {front.host: {"auth": BASIC}}}))
        ref = "%s/%s:gzip" % (front.host, PRIVATE_REPO)
        o = one_json(run(authreg, strata_bin, tmp_path / "store", "--json", "pull",
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

@pytest.fixture(scope="module")
def basicreg(strata_bin, fixtures, tmp_path_factory):
    if not shutil.which("htpasswd"):
        pytest.skip("htpasswd (apache2-utils) is not installed")
    work = tmp_path_factory.mktemp("basic")
    plain = plain_storage(work, fixtures)
    htpasswd = work / "htpasswd"
    p = subprocess.run(["htpasswd", "-B", "-i", "-n", USER], input=PASSWORD, text=True,
                       capture_output=True, timeout=60, check=True)
    assert p.stdout.startswith(USER + ":$2"), "not a bcrypt entry: %r" % p.stdout[:12]
    htpasswd.write_text(p.stdout)
    reg = HtpasswdRegistry(work / "reg", htpasswd, BASIC_REALM)
    try:
        reg.start()
        yield AuthEnv(reg, work, fixtures)
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
    cfg, env = alice_env(basicreg, tmp_path)
    store = tmp_path / "store"
    ref = basicreg.reg.ref(PRIVATE_REPO + ":gzip")
    # Basic credentials on the index push's POST/PUT too
    o = pull_lazily(basicreg, strata_bin, tmp_path, store, ref, env)
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
    p, line = pull_refused(basicreg, strata_bin, store, ref, env)
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


# ----------------------------------------------------------------------------------------------
# Every file a session with credentials writes: no secret in any of them
# ----------------------------------------------------------------------------------------------

def written_files(root, skip):
    """Every regular file under root but those under the directories skip (the docker configs):
    (path, bytes)."""
    skip = [os.path.abspath(d) + os.sep for d in skip]
    for dirpath, dirs, files in os.walk(root):
        if any((os.path.abspath(dirpath) + os.sep).startswith(d) for d in skip):
            continue
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    yield p, f.read()


def secrets_of(authenv):
    """The session's secrets: the password, the Basic value, every token issued and its
    signature alone."""
    out = [PASSWORD, BASIC]
    if authenv.issuer:
        out += list(authenv.issuer.tokens) + [t.split(".")[2] for t in authenv.issuer.tokens]
    return out


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_no_secret_in_any_file_a_session_writes(request, scheme, strata_bin, mount, tmp_path,
                                                monkeypatch):
    """Index push, artifact pull, a mount with --background at -v -v, lazy reads, a pull
    forwarded to the daemon, --json stats, a refused pull with a wrong password: then every file
    under the test's directory (stdout, stderr and --json of every command, the daemon log, the
    store itself) is searched for the password, the Basic value and every token issued."""
    env_ = request.getfixturevalue("authreg" if scheme == "bearer" else "basicreg")
    cfg, env = alice_env(env_, tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    ref = env_.reg.ref(PRIVATE_REPO + ":gzip")
    ran = []

    def run_logged(store, *args, check=True):
        p = Strata(strata_bin, store)("-v", "-v", *args, env=env, check=check,
                                      timeout=INDEX_TIMEOUT)
        n = len(ran)
        (logs / ("%d.stdout" % n)).write_text(p.stdout)
        (logs / ("%d.stderr" % n)).write_text(p.stderr)
        ran.append(args)
        return p

    store = tmp_path / "store"
    run_logged(tmp_path / "A", "--json", "index", "--push", ref)
    run_logged(store, "--json", "pull", "--index=artifact", ref)
    monkeypatch.setenv("DOCKER_CONFIG", cfg)   # the daemon inherits it
    m = mount(store_dir=str(store), args=["-v", "-v", "--background"])
    try:
        for d in env_.fixtures.layer_digests("corner:gzip"):
            f = largest_file(m.layer(d))
            if f:
                read_file(m, f)
        run_logged(store, "--json", "pull", "--index=build", env_.reg.ref(PRIVATE_REPO + ":oci"))
        run_logged(store, "--json", "stats")
    finally:
        m.umount()
    bad = base64.b64encode(b"alice:wrong-pw").decode()
    bad_cfg = docker_config(tmp_path, "bad", {"auths": {env_.reg.host: {"auth": bad}}})
    p = Strata(strata_bin, tmp_path / "C")("-v", "-v", "pull", ref, env=run_env(bad_cfg),
                                           check=False)
    (logs / "refused.stderr").write_text(p.stdout + p.stderr)
    assert p.returncode == 1
    assert os.path.getsize(m.log) > 0 and len(ran) == 4
    secrets = secrets_of(env_) + ["wrong-pw", bad]
    if scheme == "bearer":
        assert env_.issuer.tokens, "no token was issued: the test proves nothing"
    checked = 0
    for path, data in written_files(tmp_path, skip=(tmp_path / "auths", tmp_path / "bad")):
        checked += 1
        for s in secrets:
            assert s.encode() not in data, "%s contains a secret (%s...)" % (path, s[:6])
    assert checked > 10, checked

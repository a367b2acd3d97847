# SPDX-License-Identifier: Apache-2.0
"""Who may read the mount: by default only root (the mounting user), so that no local user can
read the layers of private images; `mount --allow-other` (config `allow_other = true`) lets
everyone read it as far as the files' modes allow. Either way an overlay that root stacks on the
layer directories serves its files to any user inside it (overlayfs reads its lower layers with
the credentials of whoever mounted it), which is how container runtimes use strata."""

import os
import shutil
import subprocess

import pytest

from harness.fs import force_unmount, mounts_at
from harness.strata import Mount, Overlay, Strata, public_tempdir

IMAGE = "demo:latest"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def as_nobody(*cmd, timeout=60):
    """Runs cmd as uid/gid 65534 with no supplementary groups."""
    return subprocess.run(NOBODY + [str(c) for c in cmd], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace", timeout=timeout)


@pytest.fixture(scope="module")
def perm_env(strata_bin, fixtures, tmp_path_factory):
    """demo:latest pulled into a store served twice: by a default mount and by one with
    --allow-other (the second through the config file, the flag is tested apart), each with a
    root-mounted overlay of its layer directories, all in directories uid 65534 can traverse."""
    base = tmp_path_factory.mktemp("perm")
    store = base / "store"
    store.mkdir()
    Strata(strata_bin, store)("pull", fixtures.ref(IMAGE))
    top = public_tempdir("strata-perm-")
    conf = base / "strata.toml"
    conf.write_text("allow_other = true\n")

    class Env:
        pass

    env = Env()
    env.fixtures = fixtures
    env.mounts = {}
    env.overlays = {}
    env.cleanups = []
    try:
        for mode, args in (("private", ()), ("allow_other", ("--config", conf))):
            m = Mount(strata_bin, store if mode == "private" else base / "store2",
                      os.path.join(top, "mnt-" + mode), base / ("daemon-%s.log" % mode), args)
            if mode != "private":  # a store of its own: one daemon per store
                (base / "store2").mkdir()
                Strata(strata_bin, base / "store2")("pull", fixtures.ref(IMAGE))
            env.cleanups.append(m.cleanup)
            m.start()
            env.mounts[mode] = m
            lowers = [m.layer(d) for d in reversed(fixtures.layer_digests(IMAGE))]
            # as the README's example mounts it
            o = Overlay(lowers, os.path.join(top, "rootfs-" + mode), "nosuid,nodev")
            env.cleanups.append(o.cleanup)
            env.overlays[mode] = o
        yield env
    finally:
        for c in reversed(env.cleanups):
            c()
        for d in os.listdir(top):
            p = os.path.join(top, d)
            if mounts_at(p):
                force_unmount(p)
        if not any(mounts_at(os.path.join(top, d)) for d in os.listdir(top)):
            shutil.rmtree(top, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)


def hello_path(env, mode):
    digest = env.fixtures.layers["demo-hello"]["digest"]
    return os.path.join(env.mounts[mode].layer(digest), env.fixtures.paths["demo_hello"])


def test_default_mount_is_private(perm_env):
    m = perm_env.mounts["private"]
    # root (the mounting user) reads everything
    assert os.listdir(m.layers)
    with open(hello_path(perm_env, "private")) as f:
        assert f.read() == perm_env.fixtures.paths["demo_hello_text"]
    # nobody else gets in: not the list of layers, not a world-readable file in one
    p = as_nobody("ls", m.layers)
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    p = as_nobody("cat", hello_path(perm_env, "private"))
    assert p.returncode != 0 and "Permission denied" in p.stderr, p
    assert "allow_other" not in mount_options(m.mnt)


def test_allow_other_lets_users_read(perm_env):
    m = perm_env.mounts["allow_other"]
    assert "allow_other" in mount_options(m.mnt)
    p = as_nobody("ls", m.layers)
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.split()) == sorted(perm_env.fixtures.layer_digests(IMAGE))
    p = as_nobody("cat", hello_path(perm_env, "allow_other"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == perm_env.fixtures.paths["demo_hello_text"]


def test_allow_other_flag(strata_bin, fixtures, tmp_path):
    """The flag does what the config key does."""
    store = tmp_path / "store"
    store.mkdir()
    Strata(strata_bin, store)("pull", fixtures.ref(IMAGE))
    top = public_tempdir("strata-perm-flag-")
    m = Mount(strata_bin, store, os.path.join(top, "mnt"), tmp_path / "daemon.log",
              ("--allow-other",))
    try:
        m.start()
        assert "allow_other" in mount_options(m.mnt)
        p = as_nobody("ls", m.layers)
        assert p.returncode == 0, p.stderr
    finally:
        m.cleanup()
        if not mounts_at(m.mnt):
            shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("mode", ["private", "allow_other"])
def test_overlay_serves_any_user(perm_env, mode):
    """A container runtime's case: root stacks the layers with overlayfs and the container's
    processes, whatever their uid, read and execute files through the overlay."""
    rootfs = perm_env.overlays[mode].target
    fx = perm_env.fixtures
    p = as_nobody("cat", os.path.join(rootfs, fx.paths["demo_hello"]))
    assert p.returncode == 0, p.stderr
    assert p.stdout == fx.paths["demo_hello_text"]
    p = as_nobody("ls", os.path.join(rootfs, "bin"))
    assert p.returncode == 0, p.stderr
    # exec (mmap of a file served by strata) as uid 65534 inside the image, as a runtime does
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    p = subprocess.run([chroot, "--userspec=65534:65534", rootfs] + fx.paths["demo_cmd"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                       env={"PATH": "/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout == fx.paths["demo_hello_text"]


def mount_options(mnt):
    """The super-block options of the mount on mnt (from /proc/self/mountinfo)."""
    real = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == real:
                opts = line.split(" - ", 1)[1].split()[2]
    return opts

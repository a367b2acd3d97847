# SPDX-License-Identifier: Apache-2.0
"""systemd readiness (Type=notify, tools/strata.service): the daemon sends READY=1 with its pid
to $NOTIFY_SOCKET once the mount is served, in the foreground and detached, and STOPPING=1 when
it is unmounted."""

import json
import os
import socket
import subprocess

import pytest

from harness.strata import Mount


def receive(sock, timeout=30):
    sock.settimeout(timeout)
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines() if "=" in line)


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield s
    finally:
        s.close()


def test_ready_and_stopping_in_the_foreground(strata_bin, tmp_path, notify_socket):
    store = tmp_path / "store"
    store.mkdir()
    m = Mount(strata_bin, store, tmp_path / "mnt", tmp_path / "daemon.log")
    try:
        m.start()
        msg = receive(notify_socket)
        assert msg.get("READY") == "1", msg
        assert msg.get("MAINPID") == str(m.proc.pid), msg
        assert os.path.isdir(os.path.join(m.mnt, "layers"))
        p = m.umount()
        assert p.returncode == 0, p.stderr
        assert receive(notify_socket).get("STOPPING") == "1"
    finally:
        m.cleanup()


def test_ready_when_detached(strata_bin, tmp_path, notify_socket):
    """Without -f the daemon detaches: MAINPID names the daemon, not the command that started
    it, and the mount is up when READY arrives."""
    store = tmp_path / "store"
    store.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run([strata_bin, "--store", str(store), "mount", str(mnt)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    try:
        assert p.returncode == 0, p.stderr
        msg = receive(notify_socket)
        assert msg.get("READY") == "1", msg
        pid = int(msg["MAINPID"])
        assert os.path.exists("/proc/%d" % pid)
        assert os.path.isdir(mnt / "layers")
    finally:
        subprocess.run([strata_bin, "umount", str(mnt)], capture_output=True, timeout=60)


def test_configured_images_are_there_when_ready(strata_bin, fixtures, tmp_path, notify_socket):
    """images = [...] and pin = [...] in the config: pulled (and pinned) by the daemon at start,
    before READY=1, so a unit ordered after strata finds their rootfs."""
    store = tmp_path / "store"
    store.mkdir()
    demo, merge = fixtures.ref("demo:latest"), fixtures.ref("merge:gzip")
    cfg = tmp_path / "strata.toml"
    cfg.write_text('images = ["%s", "127.0.0.1:1/absent:x"]\npin = ["%s"]\n' % (merge, demo))
    m = Mount(strata_bin, store, tmp_path / "mnt", tmp_path / "daemon.log",
              args=("--config", cfg))
    try:
        m.start()
        msg = receive(notify_socket, timeout=120)
        assert msg.get("READY") == "1", msg
        for ref in (demo, merge):
            root = os.path.join(m.mnt, "images", ref.replace("/", "%2F"), "rootfs")
            assert os.path.isdir(root), (root, m.stderr())
        ls = json.loads(subprocess.run([strata_bin, "--store", str(store), "--json", "ls"],
                                       capture_output=True, text=True, timeout=60).stdout)
        pinned = {i["ref"]: i.get("pinned", False) for i in ls}
        assert pinned == {demo: True, merge: False}, pinned
        assert "images: 127.0.0.1:1/absent:x" in m.stderr()
    finally:
        m.cleanup()

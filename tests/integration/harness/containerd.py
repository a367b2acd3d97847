# SPDX-License-Identifier: Apache-2.0
"""A private containerd for ctr-remote (stargz-snapshotter), which converts fixture images to
eStargz."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .fs import mounts_under
from .servers import local_no_proxy_env, stop_process
from .timeouts import CTR_TIMEOUT, READY_TIMEOUT

CONTAINERD_NAMESPACE = "strata-test"


class Containerd:
    """`containerd --config CFG --root R --state S --address A` in a directory of its own under /tmp
    (/tmp/strata-ctd-XXXXXXXX: a unix socket path must stay below 108 bytes, pytest's tmp paths can
    be longer), with the CRI plugin disabled. ctr() runs `ctr-remote --address A -n strata-test`."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="strata-ctd-", dir="/tmp"))
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.address = str(self.dir / "c.sock")
        self.config = self.dir / "config.toml"
        self.log = self.dir / "containerd.log"
        self.proc = None
        # opt: the plugin otherwise creates /opt/containerd; the debug/metrics endpoints are off
        self.config.write_text(
            'version = 2\n'
            'root = "%s"\n'
            'state = "%s"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            '[grpc]\n'
            '  address = "%s"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            '  path = "%s"\n' % (self.root, self.state, self.address, self.dir / "opt"))

    def add_proxy_snapshotter(self, name="strata"):
        """Adds `[proxy_plugins.NAME]` (type "snapshot") to the config (before start()); returns the
        socket path containerd will dial, in this containerd's own directory."""
        address = str(self.dir / ("%s.sock" % name))
        with open(self.config, "a") as f:
            f.write('[proxy_plugins]\n'
                    '  [proxy_plugins.%s]\n'
                    '    type = "snapshot"\n'
                    '    address = "%s"\n' % (name, address))
        return address

    def log_tail(self, n=20):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self):
        """Starts containerd and waits (bounded) until `ctr-remote version` answers. Returns None,
        or the reason why containerd cannot run here (its own last log lines)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(self.config), "--root", str(self.root), "--state",
                 str(self.state), "--address", self.address],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "containerd exited with %s at startup:\n%s" % (self.proc.returncode,
                                                                     self.log_tail())
            if os.path.exists(self.address):
                try:
                    p = self.ctr("version", timeout=10, check=False)
                except subprocess.TimeoutExpired:
                    p = None
                if p is not None and p.returncode == 0 and "Server:" in p.stdout:
                    return None
            time.sleep(0.1)
        return "containerd did not answer on %s within %ss:\n%s" % (self.address, READY_TIMEOUT,
                                                                    self.log_tail())

    def ctr(self, *args, timeout=CTR_TIMEOUT, check=True):
        cmd = ["ctr-remote", "--address", self.address, "-n", CONTAINERD_NAMESPACE] + \
            [str(a) for a in args]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           errors="replace", timeout=timeout, env=local_no_proxy_env())
        if check and p.returncode != 0:
            raise AssertionError("%s exited %d\n--- stdout:\n%s--- stderr:\n%s--- containerd log:\n"
                                 "%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:],
                                         p.stderr[-3000:], self.log_tail()))
        return p

    def stop(self):
        """terminate, bounded wait, kill; then removes its directory (after unmounting anything
        left mounted under it: a snapshot mount must not be deleted through)."""
        try:
            if self.proc is not None:
                stop_process(self.proc)
        finally:
            self.proc = None
            prefix = str(self.dir) + "/"
            for m in sorted(mounts_under(prefix), key=len, reverse=True):
                subprocess.run(["umount", "-l", m], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            if not mounts_under(prefix):
                shutil.rmtree(self.dir, ignore_errors=True)

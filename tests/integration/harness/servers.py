# SPDX-License-Identifier: Apache-2.0
"""What the harness's servers share: free loopback ports, a check that one listens, stopping one's
process within a bound, and the environment of clients that must reach them directly."""

import os
import socket
import subprocess

from .timeouts import STOP_TIMEOUT


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connectable(port, timeout=1):
    """True when something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def local_no_proxy_env():
    """The environment for Go clients talking to 127.0.0.1: never through a proxy."""
    env = dict(os.environ)
    for k in ("NO_PROXY", "no_proxy"):
        env[k] = ",".join(x for x in (env.get(k, ""), "127.0.0.1,localhost") if x)
    return env


def stop_process(proc, timeout=STOP_TIMEOUT):
    """SIGTERM, then SIGKILL when proc has not exited within timeout; waits for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A userspace link emulator for kernels without sch_netem (tc netem fails there).

Two network namespaces joined by a pair of tun devices; a forwarder process (`netemu.py wire`)
moves every packet from one device to the other, and on the way
  - serialises it at RATE in each direction and delivers it DELAY later (a FIFO per direction),
  - drops it beyond a netem-like backlog of 1000 packets,
  - drops it at random with probability LOSS,
  - delivers it REORDER_GAP later than its turn with probability REORDER, so that the packets
    behind it overtake it.
A TCP relay (`netemu.py relay`) lets clients in one namespace reach a server across the wire on
their own 127.0.0.1 (strata speaks plain HTTP only to loopback registries).

Used by bench/cold-start (delay and rate) and by the integration tests (loss and reordering):
    import netemu
    cmd = netemu.wire_command(ns_c, ns_s, tag, delay_ms=1, rate_mbit=200, loss=0.03)
or, for tests, netemu.Link (namespaces, wire and relay in one object). Run as root.
On SIGTERM the wire prints one JSON line of counters on stdout:
    {"forwarded": N, "lost": N, "reordered": N, "backlog_drops": N}
and with --stats FILE it also keeps them in FILE (rewritten twice a second while it runs).
"""

import argparse
import fcntl
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

NETEMU = os.path.abspath(__file__)
PY = "/usr/bin/python3"
WIRE_NET = "10.213.0.%d"     # client .1, server .2 (inside the namespaces only)
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
BACKLOG_PACKETS = 1000
T_SHORT = 30


def tun_open(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def save_counters(path, n):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(n, f)
    os.replace(tmp, path)


def wire_main(args):
    """The forwarder: sets up sbc<tag> (client side) and sbs<tag> (server side), prints "up",
    forwards until SIGTERM/SIGINT, then prints its counters as one JSON line."""
    delay = args.delay_ms / 1000.0
    rate = args.rate_mbit * 1e6
    mtu = args.mtu
    limit_s = BACKLOG_PACKETS * mtu * 8 / rate
    gap = args.reorder_gap_ms / 1000.0
    rnd = random.Random(args.seed)
    names = {"c": "sbc" + args.tag, "s": "sbs" + args.tag}
    fds = {k: tun_open(n) for k, n in names.items()}
    for k, ns, ip in (("c", args.ns_c, args.net % 1), ("s", args.ns_s, args.net % 2)):
        subprocess.run(["ip", "link", "set", names[k], "netns", ns], check=True, timeout=T_SHORT)
        subprocess.run(["ip", "-n", ns, "addr", "add", ip + "/24", "dev", names[k]], check=True,
                       timeout=T_SHORT)
        subprocess.run(["ip", "-n", ns, "link", "set", names[k], "mtu", str(mtu), "up"],
                       check=True, timeout=T_SHORT)
    print("up", flush=True)
    other = {fds["c"]: fds["s"], fds["s"]: fds["c"]}
    queue = {fd: [] for fd in other}    # by destination: heap of (deliver_at, seq, packet)
    busy = {fd: 0.0 for fd in other}    # by destination: end of serialization
    n = {"forwarded": 0, "lost": 0, "reordered": 0, "backlog_drops": 0}
    seq = 0
    saved = 0.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    rd = list(other)
    while not stop:
        now = time.monotonic()
        timeout = 0.2
        for q in queue.values():
            if q:
                timeout = min(timeout, max(0.0, q[0][0] - now))
        try:
            ready, _, _ = select.select(rd, [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in ready:
            dst = other[fd]
            for _ in range(256):
                try:
                    pkt = os.read(fd, 65536)
                except (BlockingIOError, InterruptedError):
                    break
                if args.loss > 0 and rnd.random() < args.loss:
                    n["lost"] += 1
                    continue
                start = max(now, busy[dst])
                if start - now > limit_s:
                    n["backlog_drops"] += 1
                    continue
                busy[dst] = start + len(pkt) * 8 / rate
                at = busy[dst] + delay
                if args.reorder > 0 and rnd.random() < args.reorder:
                    at += gap
                    n["reordered"] += 1
                seq += 1
                heapq.heappush(queue[dst], (at, seq, pkt))
        now = time.monotonic()
        for dst, q in queue.items():
            while q and q[0][0] <= now:
                try:
                    os.write(dst, heapq.heappop(q)[2])
                    n["forwarded"] += 1
                except OSError:
                    pass
        if args.stats and now - saved >= 0.5:
            save_counters(args.stats, n)
            saved = now
    if args.stats:
        save_counters(args.stats, n)
    print(json.dumps(n), flush=True)
    print("wire: %d packets dropped (backlog), %d lost at random, %d reordered"
          % (n["backlog_drops"], n["lost"], n["reordered"]), file=sys.stderr, flush=True)
    return 0


def relay_main(args):
    """TCP relay listen -> upstream (a thread pair per connection); prints "up" when listening."""
    lhost, lport = args.listen.rsplit(":", 1)
    uhost, uport = args.upstream.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((lhost, int(lport)))
    srv.listen(128)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    print("up", flush=True)

    def pump(a, b):
        try:
            while True:
                data = a.recv(1 << 18)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def serve(c):
        try:
            u = socket.create_connection((uhost, int(uport)), timeout=30)
            u.settimeout(None)
        except OSError:
            c.close()
            return
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=pump, args=(u, c), daemon=True)
        t.start()
        pump(c, u)
        t.join()
        c.close()
        u.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def wire_command(ns_c, ns_s, tag, delay_ms, rate_mbit, mtu=1500, loss=0.0, reorder=0.0,
                 reorder_gap_ms=None, seed=None, net=WIRE_NET, stats=None):
    """argv of a wire process between namespaces ns_c and ns_s (tag: <= 12 characters, names
    the tun devices sbc<tag> and sbs<tag>)."""
    cmd = [PY, NETEMU, "wire", "--ns-c", ns_c, "--ns-s", ns_s, "--tag", tag,
           "--delay-ms", str(delay_ms), "--rate-mbit", str(rate_mbit), "--mtu", str(mtu),
           "--loss", str(loss), "--reorder", str(reorder), "--net", net]
    if reorder_gap_ms is not None:
        cmd += ["--reorder-gap-ms", str(reorder_gap_ms)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if stats:
        cmd += ["--stats", stats]
    return cmd


def relay_command(listen, upstream):
    return [PY, NETEMU, "relay", "--listen", listen, "--upstream", upstream]


def in_netns(ns, cmd):
    """cmd run in network namespace ns (nsenter keeps /sys and the mount namespace)."""
    return ["nsenter", "--net=/run/netns/" + ns, "--"] + list(cmd)


def wait_line(p, token, timeout, what):
    """Waits for a line `token` on p's stdout (a pipe). Raises RuntimeError on exit or timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError("%s exited (%s) before it was up" % (what, p.poll()))
            buf += chunk
            if token.encode() in buf.split(b"\n"):
                return
        elif p.poll() is not None:
            raise RuntimeError("%s exited (%d) before it was up" % (what, p.returncode))
    raise RuntimeError("%s not up within %ss" % (what, timeout))


def _stop(p, timeout=10):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


class Link:
    """For tests: namespaces `<name>-c` (clients) and `<name>-s` (a server), joined by a wire.
    Start the server in the server namespace on 0.0.0.0:PORT (server_cmd()), then relay(PORT):
    clients (client_cmd()) reach it on their own 127.0.0.1:PORT. stop() tears everything down and
    returns the wire's counters. Bounded: every wait has a timeout."""

    def __init__(self, name, delay_ms=1, rate_mbit=200, mtu=1500, loss=0.0, reorder=0.0,
                 reorder_gap_ms=None, seed=None, logdir="/tmp"):
        self.ns_c, self.ns_s = name + "-c", name + "-s"
        self.tag = name[-12:]
        self.logdir = logdir
        self.procs = []
        self.wire = None
        self.counters = None
        self.stats = None
        self.namespaces = []
        try:
            for ns in (self.ns_c, self.ns_s):
                subprocess.run(["ip", "netns", "add", ns], check=True, timeout=T_SHORT,
                               capture_output=True)
                self.namespaces.append(ns)
                subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True,
                               timeout=T_SHORT, capture_output=True)
            self.wire_log = os.path.join(logdir, "wire-%s.log" % self.tag)
            self.stats = os.path.join(logdir, "wire-%s.json" % self.tag)
            with open(self.wire_log, "wb") as log:
                self.wire = subprocess.Popen(
                    wire_command(self.ns_c, self.ns_s, self.tag, delay_ms, rate_mbit, mtu, loss,
                                 reorder, reorder_gap_ms, seed, stats=self.stats),
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                    start_new_session=True)
            wait_line(self.wire, "up", T_SHORT, "the wire")
        except BaseException:
            self.stop()
            raise

    def read_counters(self):
        """The wire's counters so far (at most half a second old), or None before the first."""
        if not self.stats:
            return None
        try:
            with open(self.stats) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @property
    def server_addr(self):
        return WIRE_NET % 2

    def client_cmd(self, cmd):
        return in_netns(self.ns_c, cmd)

    def server_cmd(self, cmd):
        return in_netns(self.ns_s, cmd)

    def relay(self, port):
        """A relay on the clients' 127.0.0.1:port to the server namespace's port."""
        p = subprocess.Popen(self.client_cmd(relay_command("127.0.0.1:%d" % port, "%s:%d" % (
            self.server_addr, port))), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        wait_line(p, "up", T_SHORT, "the relay")
        return p

    def spawn(self, cmd, **kw):
        """A process of the test (e.g. a server) stopped by stop()."""
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        """Stops the relays, spawned processes and the wire (whose counters are returned), and
        deletes the namespaces. Idempotent."""
        for p in reversed(self.procs):
            _stop(p)
        self.procs = []
        if self.wire is not None:
            if self.wire.poll() is None:
                self.wire.send_signal(signal.SIGTERM)
            try:
                out, _ = self.wire.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.wire.kill()
                out, _ = self.wire.communicate(timeout=10)
            for line in (out or b"").decode(errors="replace").splitlines():
                if line.startswith("{"):
                    self.counters = json.loads(line)
            self.wire = None
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], timeout=T_SHORT, check=False,
                           capture_output=True)
        self.namespaces = []
        return self.counters


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="netemu.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wire", help="the forwarder between two namespaces")
    for a in ("--ns-c", "--ns-s", "--tag"):
        w.add_argument(a, required=True)
    w.add_argument("--delay-ms", type=float, required=True, help="one way")
    w.add_argument("--rate-mbit", type=float, required=True, help="each way")
    w.add_argument("--mtu", type=int, default=1500)
    w.add_argument("--loss", type=float, default=0.0, help="random loss probability (0..1)")
    w.add_argument("--reorder", type=float, default=0.0,
                   help="probability that a packet is held back behind later ones (0..1)")
    w.add_argument("--reorder-gap-ms", type=float, default=None,
                   help="how much longer a reordered packet takes (default: 2 x delay, >= 1 ms)")
    w.add_argument("--seed", type=int, default=None)
    w.add_argument("--stats", help="keep the counters in this file (JSON)")
    w.add_argument("--net", default=WIRE_NET, help="addresses, '%%d' is 1 (client), 2 (server)")
    r = sub.add_parser("relay", help="TCP relay listen -> upstream")
    r.add_argument("--listen", required=True)
    r.add_argument("--upstream", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "wire":
        if not 0 <= args.loss < 1 or not 0 <= args.reorder < 1:
            ap.error("--loss and --reorder take a probability in [0, 1)")
        if len(args.tag) > 12:
            ap.error("--tag has at most 12 characters (tun device names)")
        if args.reorder_gap_ms is None:
            args.reorder_gap_ms = max(1.0, 2 * args.delay_ms)
        return wire_main(args)
    return relay_main(args)


if __name__ == "__main__":
    sys.exit(main())

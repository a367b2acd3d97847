# SPDX-License-Identifier: Apache-2.0
"""A test PKI made with the openssl CLI: a CA, a server certificate for IP 127.0.0.1 and a client
certificate (for TLS mirrors and client-certificate checks)."""

import subprocess
from pathlib import Path


class Pki:
    """A test CA, a server certificate for IP 127.0.0.1 and a client certificate, made with the
    openssl CLI in workdir: ca.crt, server.crt/.key, client.crt/.key."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.crt"
        self.server_cert, self.server_key = self.dir / "server.crt", self.dir / "server.key"
        self.client_cert, self.client_key = self.dir / "client.crt", self.dir / "client.key"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                      "-keyout", self.dir / "ca.key", "-out", self.ca,
                      "-subj", "/CN=strata test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._leaf("server", "/CN=127.0.0.1",
                   "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        self._leaf("client", "/CN=strata test client", "extendedKeyUsage=clientAuth\n")

    def _openssl(self, *args):
        p = subprocess.run(["openssl"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("openssl %s failed:\n%s" % (args[0], p.stderr))

    def _leaf(self, name, subj, ext):
        ext_file = self.dir / (name + ".ext")
        ext_file.write_text(ext)
        csr = self.dir / (name + ".csr")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.dir / (name + ".key"),
                      "-out", csr, "-subj", subj)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.dir / "ca.key",
                      "-CAcreateserial", "-days", "2", "-out", self.dir / (name + ".crt"),
                      "-extfile", ext_file)

# SPDX-License-Identifier: Apache-2.0
"""The integration tests' harness: the servers and helpers that conftest.py's fixtures and the test
modules share, one module per component.

  timeouts    every timeout and size the tests bound their waits with
  fs          mountinfo, unmounting leftovers, bounded calls through a mount, reads and walks
  servers     free loopback ports, stopping a server, clients that bypass proxies
  strata      the CLI, mount daemons (and takeovers), overlays, hosts.toml files
  registry    Distribution (plain, token auth with its token issuer, htpasswd)
  nginx       nginx in front of a registry (access log), over TLS, throttled, rate-limited
  proxy       small Python HTTP proxies and listeners that misbehave on purpose
  pki         a test CA with server and client certificates
  containerd  a private containerd for ctr-remote (eStargz conversion)
  images      mkfixture layouts and GNU tar's extraction of their layers
  treecmp     entry-by-entry comparison of two directory trees
"""

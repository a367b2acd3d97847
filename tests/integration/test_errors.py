# SPDX-License-Identifier: Apache-2.0
"""Failed pulls: exit 1, one clear line on stderr, and nothing left in the store."""

import os
import re
import time

import pytest

from harness.servers import free_port
from harness.registry import Registry
from harness.strata import one_line

BAD_IMAGES = ["bad:digest", "bad:nottar", "bad:truncgz", "bad:mediatype"]


def assert_store_empty(strata, mount=None):
    listing = strata.ls()
    assert listing == [], "a failed pull left images behind: %s" % listing
    if mount is not None:
        m = mount()
        assert os.listdir(m.layers) == [], "a failed pull left layers behind"


def assert_pull_fails_naming_ref(strata, ref):
    p = strata("pull", ref, check=False)
    assert p.returncode == 1, p
    line = one_line(p.stderr)
    assert line.startswith("strata: pull:"), line
    assert ref in line, line
    assert_store_empty(strata)


def test_unknown_repository(strata, fixtures):
    assert_pull_fails_naming_ref(strata, fixtures.ref("nosuchrepo:latest"))


def test_unknown_tag(strata, fixtures):
    assert_pull_fails_naming_ref(strata, fixtures.ref("corner:nosuchtag"))


@pytest.mark.parametrize("ref", BAD_IMAGES)
def test_bad_image(strata, mount, bad_fixtures, ref):
    img = bad_fixtures.image(ref)
    p = strata("pull", bad_fixtures.ref(ref), check=False)
    assert p.returncode == 1, "pull %s (%s) exited %d\nstderr: %s" % (ref, img["exercises"],
                                                                     p.returncode, p.stderr)
    line = one_line(p.stderr)
    assert line.startswith("strata: pull:"), line
    assert re.search(img["expect_error"], line, re.I), \
        "%s exercises: %s\nmessage %r does not match /%s/" % (ref, img["exercises"], line,
                                                             img["expect_error"])
    assert_store_empty(strata, mount)


def test_bad_image_does_not_spoil_good_ones(strata, mount, bad_fixtures, fixtures):
    """A failed pull next to a good one: the good image is complete, the bad one absent."""
    strata("pull", fixtures.ref("demo:latest"))
    p = strata("pull", bad_fixtures.ref("bad:nottar"), check=False)
    assert p.returncode == 1
    assert [e["ref"] for e in strata.ls()] == [fixtures.ref("demo:latest")]
    m = mount()
    assert sorted(os.listdir(m.layers)) == sorted(fixtures.layer_digests("demo:latest"))


def test_registry_down(strata):
    port = free_port()  # nothing listens there
    host = "127.0.0.1:%d" % port
    t0 = time.monotonic()
    p = strata("pull", host + "/corner:oci", check=False, timeout=90)
    elapsed = time.monotonic() - t0
    assert p.returncode == 1, p
    line = one_line(p.stderr)
    assert host in line, line
    assert elapsed < 60, "a refused connection took %.0fs to report" % elapsed
    assert_store_empty(strata)


@pytest.mark.parametrize("ref", [
    "127.0.0.1:1/UPPER/case:tag",
    "127.0.0.1:1/repo:bad tag",
    "127.0.0.1:1/repo:",
    "127.0.0.1:1/repo@sha256:1234",
    "127.0.0.1:1//repo",
    "127.0.0.1:1/repo/:tag",
    "127.0.0.1:1/-repo:tag",
    "127.0.0.1:1/repo:" + "t" * 129,
    "",
])
def test_malformed_reference(strata, ref):
    p = strata("pull", ref, check=False, timeout=30)
    assert p.returncode in (1, 2), "exit %d for %r" % (p.returncode, ref)
    line = one_line(p.stderr)
    assert "invalid reference" in line, line
    assert_store_empty(strata)


def test_failed_pull_keeps_previous_images(strata, fixtures):
    strata("pull", fixtures.ref("demo:latest"))
    before = strata.ls()
    p = strata("pull", fixtures.ref("corner:nosuchtag"), check=False)
    assert p.returncode == 1
    assert strata.ls() == before


def test_blob_corrupted_in_registry(strata, mount, fixtures, tmp_path):
    """A registry serving bytes that do not match the layer digest: exit 1, nothing stored.

    Distribution verifies uploads, so the corruption is done on its disk after the push, in a
    registry of this test's own (the session registry stays intact)."""
    with Registry(tmp_path / "reg") as reg:
        reg.push(fixtures.layout)
        layer = fixtures.image("demo:latest")["layers"][-1]["digest"]
        data = reg.blob_file(layer)
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # same size, different content
        data.write_bytes(bytes(raw))
        p = strata("pull", reg.ref("demo:latest"), check=False)
        assert p.returncode == 1, p
        line = one_line(p.stderr)
        assert "digest mismatch" in line and layer in line, line
        assert_store_empty(strata, mount)

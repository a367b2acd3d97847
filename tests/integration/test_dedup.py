# SPDX-License-Identifier: Apache-2.0
"""One store for many images: identical content is stored once, and `strata stats` says so.

mkfixture dedup gives three images over one shared base layer whose top layers hold the same files
but differ as blobs: gzip -6, zstd (the same tar), and rebuilt (other mtimes, gzip -1). Pulled into
one store, the second and third top layers add (almost) nothing to the stored chunk bytes.

Also the daemon's read counters in `strata stats`: hit rate and the fetch-wait histogram.
The figures are printed with a "[dedup]" prefix: run with -s to see them.
"""

import json
import os

import pytest

from harness.fs import bounded, drop_cached_pages, file_sha256
from harness.images import Fixtures, run_mkfixture
from harness.registry import Registry
from harness.strata import notes, pulled_from_artifact

note = notes("dedup")


@pytest.fixture(scope="module")
def dedup(strata_bin, tmp_path_factory):
    """mkfixture dedup pushed to a registry of its own (index artifacts pushed there stay there)."""
    with Registry(tmp_path_factory.mktemp("dedup-registry")) as reg:
        layout = tmp_path_factory.mktemp("dedup-layout")
        run_mkfixture("dedup", "--out", layout)
        reg.push(layout)
        yield Fixtures(layout, reg)


def read_sha256(m, path):
    """The sha256 of a file read through m, bounded."""
    return bounded(m, lambda: file_sha256(path), "reading %s" % path)


def test_same_files_in_other_layers_are_stored_once(dedup, strata, mount):
    fx = dedup
    content = fx.paths["content_bytes"]
    st0 = strata.stats()
    assert (st0["images"], st0["chunks"], st0["stored_bytes"], st0["logical_bytes"]) == \
        (0, 0, 0, 0), st0
    assert st0["dedup_ratio"] == 0, st0

    strata("pull", fx.ref("dedup:gzip"))
    st1 = strata.stats()
    assert st1["images"] == 1 and st1["layers"] == 2, st1
    assert st1["local_bytes"] == st1["logical_bytes"] == st1["unique_bytes"] > content, st1
    assert 0 < st1["stored_bytes"], st1
    prev = st1
    for tag in ("zstd", "rebuilt"):
        strata("pull", fx.ref("dedup:" + tag))
        st = strata.stats()
        layer = fx.layers["dedup-" + tag]
        grew = st["stored_bytes"] - prev["stored_bytes"]
        note("dedup:%s: top layer %d bytes as a blob; stored bytes %d -> %d (+%d), logical %d, "
             "dedup ratio %.2f" % (tag, layer["size"], prev["stored_bytes"], st["stored_bytes"],
                                   grew, st["logical_bytes"], st["dedup_ratio"]))
        # the files are stored already: only what differs (gzip checkpoint windows) may be added
        assert 0 <= grew < layer["size"] // 20, (tag, grew, layer["size"], st)
        # the shared base layer counts once per layer record, not once per image
        assert st["logical_bytes"] - prev["logical_bytes"] == content, (prev, st)
        assert st["unique_bytes"] == st1["unique_bytes"], st
        assert st["local_bytes"] == st["logical_bytes"], st
        prev = st
    assert prev["images"] == 3 and prev["layers"] == 4, prev
    assert prev["dedup_ratio"] > 2.5, prev
    assert prev["dedup_ratio"] == pytest.approx(prev["local_bytes"] / prev["stored_bytes"]), prev
    human = strata("stats").stdout
    assert "dedup ratio    %.2f" % prev["dedup_ratio"] in human, human

    # every copy reads byte-exact from the one stored set of chunks
    m = mount()
    files = fx.paths["files"]
    for tag in ("gzip", "zstd", "rebuilt"):
        root = m.layer(fx.layers["dedup-" + tag]["digest"])
        for rel, info in sorted(files.items())[:: max(1, len(files) // 50)] + \
                [(p, i) for p, i in files.items() if p.endswith(".bin")]:
            assert read_sha256(m, os.path.join(root, rel)) == info["sha256"], (tag, rel)


def test_stats_hit_rate_and_fetch_latency(strata_bin, dedup, tmp_path, mount):
    """A lazily pulled image: no chunk reads before reading; a cold read fetches (and the fetch-wait
    histogram counts every fetched chunk read); reading again is served locally."""
    fx = dedup
    ref = fx.ref("dedup:gzip")
    run = pulled_from_artifact(strata_bin, tmp_path, ref)
    offline = run.stats()
    assert "reads" not in offline and offline["daemon"] is False, offline
    assert offline["local_bytes"] == 0 < offline["logical_bytes"], offline

    m = mount(store_dir=run.store)
    st = run.stats()
    r = st["reads"]
    assert st["daemon"] is True, st
    assert (r["cache"], r["store"], r["fetched"], r["failed"], r["hit_rate"]) == (0, 0, 0, 0, 0), r
    assert r["fetch_latency_ms"]["count"] == 0 and r["fetch_latency_ms"]["buckets"] == [], r

    root = m.layer(fx.layers["dedup-gzip"]["digest"])
    bins = sorted(p for p in fx.paths["files"] if p.endswith(".bin"))
    for rel in bins:
        assert read_sha256(m, os.path.join(root, rel)) == fx.paths["files"][rel]["sha256"], rel
    r1 = run.stats()["reads"]
    lat = r1["fetch_latency_ms"]
    note("cold read of %d files: %s" % (len(bins), json.dumps(r1)))
    assert r1["fetched"] > 0 and r1["failed"] == 0, r1
    assert lat["count"] == r1["fetched"] == sum(n for _, n in lat["buckets"]), r1
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"], r1
    assert r1["hit_rate"] < 1, r1

    # again, past the page cache: the chunks come from the daemon's cache or the store
    for rel in bins:
        drop_cached_pages(os.path.join(root, rel))
        assert read_sha256(m, os.path.join(root, rel)) == fx.paths["files"][rel]["sha256"], rel
    r2 = run.stats()["reads"]
    note("second read: %s" % json.dumps(r2))
    assert r2["fetched"] == r1["fetched"], (r1, r2)
    assert r2["cache"] + r2["store"] > r1["cache"] + r1["store"], (r1, r2)
    assert r2["hit_rate"] > r1["hit_rate"], (r1, r2)
    human = run("stats").stdout
    assert "hit rate" in human and "p99" in human, human

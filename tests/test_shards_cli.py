"""`bridge shards verify|info|ls` on good and damaged sets (text and JSON, exit codes)."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from bridgedepth.data import shards as S


def sample(i: int) -> dict:
    return {"__key__": f"k{i:02d}", "rgb": np.full((4, 5, 3), i, np.uint8), "depth": np.ones((4, 5), np.float32),
            "meta": {"i": i}}


@pytest.fixture
def good(tmp_path):
    d = tmp_path / "set"
    S.write_dataset(d, 7, lambda i: None if i == 3 else sample(i), samples_per_shard=3, meta={"name": "cli"},
                    progress=False)
    return d


def test_verify_good_text_and_json(run_cli, good):
    r = run_cli("shards", "verify", good)
    assert r.code == 0, r
    assert "3 shard(s), 3 complete and valid, 6 sample(s), 1 skipped" in r.out
    assert "OK: no problems found" in r.out
    r = run_cli("shards", "verify", good, "--json")
    assert r.code == 0, r
    rep = json.loads(r.out)
    assert rep["ok"] is True and rep["num_shards"] == 3 and rep["num_samples"] == 6 and rep["problems"] == []
    assert [s["samples"] for s in rep["shards"]] == [3, 2, 1]


def test_verify_reports_every_problem(run_cli, good):
    (good / "shard-000000.tar").unlink()  # missing
    p = good / "shard-000001.tar"  # bad checksum
    data = bytearray(p.read_bytes())
    data[600] ^= 0xFF
    p.write_bytes(bytes(data))
    (good / "shard-000002.tar.json").unlink()  # incomplete (no status)
    (good / "shard-000009.tar.tmp-0123abcd").write_bytes(b"x")  # interrupted writer
    r = run_cli("shards", "verify", good)
    assert r.code == 1, r
    assert "4 problem(s)" in r.out
    for kind, name in [("missing", "shard-000000.tar"), ("checksum", "shard-000001.tar"),
                       ("incomplete", "shard-000002.tar"), ("temporary", "shard-000009.tar.tmp-0123abcd")]:
        assert f"[{kind}] {name}" in r.out, (kind, r.out)
    r = run_cli("shards", "verify", good, "--json")
    assert r.code == 1
    rep = json.loads(r.out)
    assert rep["ok"] is False and rep["num_complete"] == 0
    assert sorted(p["kind"] for p in rep["problems"]) == ["checksum", "incomplete", "missing", "temporary"]


def test_verify_unreadable_member_and_unlisted_shard(run_cli, good, tmp_path):
    # re-pack shard 1 with a member that does not decode, and record its checksum: only decoding finds it
    p = good / "shard-000001.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [("k04.rgb.png", b"not a png"), ("k04.meta.json", b"{}")]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    p.write_bytes(buf.getvalue())
    status = json.loads((good / "shard-000001.tar.json").read_text())
    status.update(sha256=S.sha256_file(p), samples=1)
    (good / "shard-000001.tar.json").write_text(json.dumps(status))
    (good / "shard-000005.tar").write_bytes((good / "shard-000000.tar").read_bytes())
    r = run_cli("shards", "verify", good, "--json")
    assert r.code == 1, r
    kinds = {p["kind"]: p for p in json.loads(r.out)["problems"]}
    assert set(kinds) == {"unreadable", "unlisted"}
    assert "k04.rgb.png: cannot decode" in kinds["unreadable"]["message"]
    assert run_cli("shards", "verify", good, "--no-decode", "--json").code == 1  # still unlisted


def test_verify_refuses_unsafe_tar(run_cli, good):
    p = good / "shard-000002.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("../../escape.x.txt")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"1"))
    p.write_bytes(buf.getvalue())
    status = json.loads((good / "shard-000002.tar.json").read_text())
    status.update(sha256=S.sha256_file(p))
    (good / "shard-000002.tar.json").write_text(json.dumps(status))
    r = run_cli("shards", "verify", good)
    assert r.code == 1 and "[unreadable]" in r.out and "outside the shard" in r.out, r


def test_verify_not_a_dataset(run_cli, tmp_path, good):
    r = run_cli("shards", "verify", tmp_path / "missing")
    assert r.code == 2 and "not a directory" in r.err
    (tmp_path / "empty").mkdir()
    r = run_cli("shards", "verify", tmp_path / "empty")
    assert r.code == 2 and "not a shard dataset" in r.err
    (good / "manifest.json").unlink()  # shards and status files are intact: only the manifest is missing
    r = run_cli("shards", "verify", good, "--json")
    rep = json.loads(r.out)
    assert r.code == 1 and [p["kind"] for p in rep["problems"]] == ["manifest"] and rep["num_samples"] == 6
    S.rebuild_manifest(good)
    assert run_cli("shards", "verify", good).code == 0


def test_info_and_ls(run_cli, good):
    r = run_cli("shards", "info", good)
    assert r.code == 0, r
    assert "complete" in r.out and "samples 6" in r.out and "skipped shard-000001.tar 3" in r.out
    assert '"name": "cli"' in r.out
    man = json.loads(run_cli("shards", "info", good, "--json").out)
    assert man["num_samples"] == 6 and man["meta"] == {"name": "cli"}
    r = run_cli("shards", "ls", good)
    assert r.code == 0
    lines = r.out.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("shard-000000.tar  k00  depth.npy meta.json rgb.png")
    r = run_cli("shards", "ls", good, "--json", "--limit", "2")
    recs = [json.loads(x) for x in r.out.strip().splitlines()]
    assert [x["key"] for x in recs] == ["k00", "k01"] and recs[0]["fields"] == ["depth.npy", "meta.json", "rgb.png"]
    assert run_cli("shards").code == 2  # an action is required

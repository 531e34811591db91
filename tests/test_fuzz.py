"""Property-based fuzzing (hypothesis) of every depth / image reader, the shard reader and the config
loader: whatever the bytes, the only exceptions are ours (BridgeError / ConfigError), no call hangs
(a per-example deadline) and memory stays bounded (the pixel limit; peak RSS checked at the end).

Inputs are random bytes and mutations (bit flips, truncation, splices, header digit edits) of valid
seeds: the real fixtures in ../shared/data/rgbd and files written by our writers. The budget is
``BRIDGE_FUZZ_EXAMPLES`` examples per target (default 25: a few seconds in ``make test``);
``make fuzz`` runs 2000 per target and prints the number of cases tried.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import REAL_DEPTH, REAL_IMAGES, SYNTH_DEPTH, _ramp, png_with_size  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402

from bridgedepth.config import ConfigError  # noqa: E402
from bridgedepth.errors import BridgeError  # noqa: E402
from bridgedepth.io import get_codec, write_depth  # noqa: E402

EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "25"))
DEADLINE_MS = int(os.environ.get("BRIDGE_FUZZ_DEADLINE_MS", "3000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=DEADLINE_MS, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture], database=None)
OURS = (BridgeError, ConfigError)
COUNTS: dict[str, int] = {}
RSS_LIMIT_MB = 1500  # growth of the peak RSS over the whole module


@pytest.fixture(scope="module", autouse=True)
def _report():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    yield
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(COUNTS.values())
    print(f"\nfuzz: {total} cases tried over {len(COUNTS)} targets ({EXAMPLES} examples each); "
          f"peak RSS {peak:.0f} MB (+{peak - start:.0f} MB)")
    out = os.environ.get("BRIDGE_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps({"total": total, "examples_per_target": EXAMPLES, "targets": COUNTS,
                                         "peak_rss_mb": peak}, indent=1))
    assert peak - start < RSS_LIMIT_MB, f"peak RSS grew by {peak - start:.0f} MB"


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


# ------------------------------------------------------------------------------ mutations


@st.composite
def mutated(draw, seeds: list[bytes]):
    """A seed (or random bytes) with a few random edits."""
    if not seeds or draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "digits", "splice-header"]))
        n = len(data)
        if n == 0:
            data += draw(st.binary(min_size=1, max_size=64))
            continue
        pos = draw(st.integers(0, n - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos: pos + len(chunk)] = chunk
        elif op == "digits":  # the headers of PFM / PGM are text: make the sizes absurd
            big = str(draw(st.sampled_from([0, -1, 1, 7, 65535, 2**31, 10**12, 10**30]))).encode()
            j = next((i for i in range(min(pos, 64), min(n, 64)) if chr(data[i]).isdigit()), None)
            if j is not None:
                data[j: j + 1] = big
        else:  # keep the first bytes (magic) and replace the rest
            data[min(pos, 16):] = draw(st.binary(max_size=256))
    return bytes(data)


def _depth_seeds() -> dict[str, tuple[list[bytes], dict]]:
    seeds: dict[str, tuple[list[bytes], dict]] = {}
    for rel, (enc, params) in REAL_DEPTH.items():
        p = SHARED_DATA / "rgbd" / rel
        if p.exists():
            data = p.read_bytes()
            if len(data) > 200_000:  # keep examples small: the header and a slice of the body
                data = data[:200_000]
            seeds.setdefault(enc, ([], params))[0].append(data)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for enc, params in SYNTH_DEPTH.items():
            f = Path(d) / f"seed.{enc}"
            write_depth(f, _ramp(24, 32), enc, **params)
            seeds.setdefault(enc, ([], params))[0].append(f.read_bytes())
        for enc in ("png-mm", "png-kitti", "npz", "pfm"):
            f = Path(d) / f"small.{enc}"
            write_depth(f, _ramp(4, 3), enc)
            seeds.setdefault(enc, ([], {}))[0].append(f.read_bytes())
    return seeds


DEPTH_SEEDS = _depth_seeds()


@pytest.mark.parametrize("enc", sorted(DEPTH_SEEDS))
def test_fuzz_depth_reader(enc, tmp_path):
    codec = get_codec(enc)
    seeds, params = DEPTH_SEEDS[enc]
    path = tmp_path / f"fuzz.{enc}"  # the EXR and HDF5 libraries open the file by name

    @FUZZ
    @given(data=mutated(seeds))
    def run(data):
        _count(f"depth:{enc}")
        path.write_bytes(data)
        try:
            depth, valid = codec.decode(str(path), data, dict(params))
        except OURS:
            return
        depth, valid = np.asarray(depth), np.asarray(valid)
        assert depth.ndim == 2 and depth.shape == valid.shape and valid.dtype == bool
        assert np.all(np.isfinite(depth[valid])) and np.all(depth[valid] > 0)

    run()


def _image_seeds() -> list[bytes]:
    out = []
    for rel in REAL_IMAGES:
        p = SHARED_DATA / "rgbd" / rel
        if p.exists():
            out.append(p.read_bytes()[:100_000])
    from PIL import Image

    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM"):
        buf = io.BytesIO()
        Image.fromarray((np.arange(48, dtype=np.uint8).reshape(4, 4, 3))).save(buf, format=fmt)
        out.append(buf.getvalue())
    out.append(png_with_size(5, 5, 8, 2))
    return out


def test_fuzz_image_reader(tmp_path):
    from bridgedepth.io import read_image

    seeds = _image_seeds()
    path = tmp_path / "fuzz.img"

    @FUZZ
    @given(data=mutated(seeds))
    def run(data):
        _count("image")
        path.write_bytes(data)
        try:
            rgb = read_image(path)
        except OURS:
            return
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8

    run()


# ------------------------------------------------------------------------------ shards


def _shard_seed() -> bytes:
    from bridgedepth.data.shards import _ShardWriter  # the real writer's bytes

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        w = _ShardWriter(Path(d), "shard-000000.tar")
        for i in range(2):
            w.write({"__key__": f"k{i}", "rgb": np.full((3, 4, 3), i, np.uint8), "depth": _ramp(3, 4),
                     "valid": np.ones((3, 4), bool), "meta": {"i": i}, "name": "x"})
        w.commit()
        return (Path(d) / "shard-000000.tar").read_bytes()


SHARD_SEEDS = [_shard_seed()]

NAMES = st.one_of(
    st.sampled_from(["k.rgb.png", "k.depth.npy", "k.meta.json", "k2.x.txt", "../e.x.txt", "/abs.x.txt", "a/b.c.d",
                     "k.x", "k..json", ".x.y", "k.x.bin", "k.x.JPG", "k.x.pickle", "k.meta.json"]),
    st.text(alphabet="ab./\\-_0.", min_size=1, max_size=12),
)
TYPES = st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE,
                                                 tarfile.FIFOTYPE, tarfile.CHRTYPE])


@st.composite
def built_tar(draw):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for _ in range(draw(st.integers(0, 5))):
            ti = tarfile.TarInfo(draw(NAMES))
            ti.type = draw(TYPES)
            data = draw(st.one_of(st.binary(max_size=64), st.sampled_from([b"{}", b"[1,", b"\x93NUMPY", b"\x89PNG"])))
            ti.linkname = "k.rgb.png" if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
            tar.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def test_fuzz_shard_reader(tmp_path):
    from bridgedepth.data.shards import IndexedShard, iter_shard

    path = tmp_path / "shard-000000.tar"

    @FUZZ
    @given(data=st.one_of(mutated(SHARD_SEEDS), built_tar()), indexed=st.booleans())
    def run(data, indexed):
        _count("shard")
        path.write_bytes(data)
        try:
            if indexed:
                with IndexedShard(path) as sh:
                    for i in range(len(sh)):
                        sh.sample(i)
            else:
                for s in iter_shard(path):
                    assert isinstance(s["__key__"], str)
        except OURS:
            return

    run()


def test_fuzz_verify_dataset(tmp_path):
    """verify_dataset never raises for a bad shard: it reports problems."""
    from bridgedepth.data.shards import rebuild_manifest, sha256_file, verify_dataset

    d = tmp_path / "ds"
    d.mkdir()

    @FUZZ
    @given(data=st.one_of(mutated(SHARD_SEEDS), built_tar()), status=st.booleans())
    def run(data, status):
        _count("verify")
        p = d / "shard-000000.tar"
        p.write_bytes(data)
        st_ = {"name": p.name, "complete": True, "samples": 2, "sha256": sha256_file(p) if status else "0" * 64}
        (d / "shard-000000.tar.json").write_text(json.dumps(st_))
        rebuild_manifest(d, [p.name])
        rep = verify_dataset(d)
        assert isinstance(rep.ok, bool)

    run()


# ------------------------------------------------------------------------------ config


def _config_keys() -> list[str]:
    from bridgedepth.config import load_config, to_dict

    flat = []

    def walk(prefix, node):
        for k, v in node.items():
            key = f"{prefix}{k}"
            flat.append(key)
            if isinstance(v, dict):
                walk(key + ".", v)

    walk("", to_dict(load_config("tiny")))
    return flat


CONFIG_KEYS = _config_keys()
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=12), st.just("1e-5"), st.just(".inf"))
VALUES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                    st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=6)


@st.composite
def config_text(draw):
    if draw(st.integers(0, 4)) == 0:
        return draw(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
    doc: dict = {}
    if draw(st.booleans()):
        doc["base"] = draw(st.sampled_from(["tiny", "tiny-fast", "paper", "nope", 3]))
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=8)))
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = draw(VALUES)
    import yaml

    return yaml.safe_dump(doc)


def test_fuzz_config_loader(tmp_path):
    from bridgedepth.config import load_config

    path = tmp_path / "fuzz.yaml"

    @FUZZ
    @given(text=config_text(), overrides=st.lists(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(CONFIG_KEYS + ["nope", "train.nope", ""]),
                  st.one_of(st.text(max_size=10), st.sampled_from(["[1, 2", "{a: 1}", "!!python/none", "1e-5",
                                                                  "null", "-3", "yes"]))), max_size=3))
    def run(text, overrides):
        _count("config")
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_config(path, overrides)
        except OURS:
            return

    run()

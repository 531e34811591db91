"""Generated shards reference their source sample instead of copying it (issue 13, item 12): the
reference resolves to exactly what the embedded form stores, through `bridge label`, the hybrid
reader, the training reader and `bridge shards verify`; a missing or changed source is a clear error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bridgedepth.config import load_config
from bridgedepth.d2i.generate import generate
from bridgedepth.d2i.pretrain import pretrain
from bridgedepth.d2i.synthetic import toy_scene
from bridgedepth.data.refs import SOURCE_FIELDS, SourceRefError
from bridgedepth.data.shards import iter_samples, iter_shard_members, load_manifest, verify_dataset, write_dataset
from bridgedepth.data.targets import sample_target
from bridgedepth.labels.hybrid import iter_hybrid

SMALL = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=2", "d2i.pretrain_batch_size=4",
         "generate.batch_size=3", "model.input_size=70"]
SIZE = 32


def scene(i: int) -> dict:
    s = toy_scene(i, SIZE)
    s["sky"] = np.zeros((SIZE, SIZE), bool)
    s["sky"][:2] = True
    s["valid"][:2] = False
    s["depth"][:2] = 0.0
    return s


def fields_of(d) -> set[str]:
    out = set()
    for name in sorted(p.name for p in d.glob("shard-*.tar")):
        for members in iter_shard_members(d / name):
            out |= {m.split(".")[1] for m in members}
    return out


def set_bytes(d) -> int:
    return sum(s.bytes for s in load_manifest(d).shards)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """src (5 scenes, shards of 2), a tiny d2i model and a micro teacher; generated and labelled sets
    in both forms (references and embedded)."""
    from bridgedepth.labels.label import label
    from bridgedepth.mde import build_model, save_model

    root = tmp_path_factory.mktemp("refs")
    cfg = load_config("tiny", SMALL)
    write_dataset(root / "src", 5, scene, samples_per_shard=2, desc="toy", progress=False)
    pretrain(cfg, root / "src", root / "d2i", steps=2, progress=False)
    save_model(build_model("micro", seed=0), root / "teacher")
    for form, embed in (("ref", False), ("emb", True)):
        generate(cfg, root / "d2i", root / "src", root / f"gen_{form}", images_per_depth=2, seed=5,
                 embed_source=embed, progress=False)
        label(cfg, root / "teacher", root / f"gen_{form}", root / f"lab_{form}", progress=False)
    return root


def test_referencing_sets_store_no_source_copies_and_read_like_embedded(tree):
    src = {s["__key__"]: s for s in iter_samples(tree / "src")}
    copies = set(SOURCE_FIELDS)
    assert fields_of(tree / "gen_ref") == {"rgb", "meta", "source_ref"}
    assert fields_of(tree / "gen_emb") >= copies and "source_ref" not in fields_of(tree / "gen_emb")
    assert fields_of(tree / "lab_ref") == {"rgb", "meta", "source_ref", "pseudo", "mask"}
    assert fields_of(tree / "lab_emb") >= copies
    assert set_bytes(tree / "gen_ref") < set_bytes(tree / "gen_emb") / 2
    for gen in ("gen", "lab"):
        ref = {s["__key__"]: s for s in iter_samples(tree / f"{gen}_ref")}
        emb = {s["__key__"]: s for s in iter_samples(tree / f"{gen}_emb")}
        assert sorted(ref) == sorted(emb) and len(ref) == 10
        for k, e in emb.items():
            r = ref[k]
            assert set(r) - {"source_ref"} == set(e), k
            for f, v in e.items():
                if isinstance(v, np.ndarray):
                    np.testing.assert_array_equal(r[f], v, err_msg=f"{k}.{f}")
                    assert r[f].dtype == v.dtype
                else:
                    assert r[f] == v, (k, f)
            np.testing.assert_array_equal(r["depth"], src[r["meta"]["source_key"]]["depth"])
            np.testing.assert_array_equal(r["source_rgb"], src[r["meta"]["source_key"]]["rgb"])
        # the labelled reference points at the source set itself, relative to the labelled folder
        if gen == "lab":
            assert all(s["source_ref"]["dir"] == "../src" for s in ref.values())
    # the hybrid reader: identical targets from both forms
    hyb_ref = {s["__key__"]: s for s in iter_hybrid(tree / "lab_ref")}
    hyb_emb = {s["__key__"]: s for s in iter_hybrid(tree / "lab_emb")}
    assert sorted(hyb_ref) == sorted(hyb_emb)
    for k in hyb_emb:
        for f in ("rgb", "target", "valid", "source"):
            np.testing.assert_array_equal(hyb_ref[k][f], hyb_emb[k][f], err_msg=f"{k}.{f}")
    # only the decoded fields that are asked for (plus what the source supplies for them)
    few = next(iter_samples(tree / "lab_ref", fields=["depth", "meta"]))
    assert set(few) == {"__key__", "depth", "meta", "source_ref"}
    assert set(next(iter_samples(tree / "lab_ref", fields=["meta"]))) == {"__key__", "meta"}


def test_training_reader_resolves_references(tree):
    from bridgedepth.data.loader import ShardDataset

    def read(d, group):
        ds = ShardDataset(d, shuffle=True, seed=3, shuffle_group=group, rank=0, world_size=1)
        return {s["__key__"]: sample_target(s, "hybrid") for s in ds}

    for group in (0, 2):
        ref, emb = read(tree / "lab_ref", group), read(tree / "lab_emb", group)
        assert sorted(ref) == sorted(emb) and len(ref) == 10
        for k in emb:
            for a, b in zip(ref[k], emb[k]):
                np.testing.assert_array_equal(a, b)
    # through a DataLoader worker process (the trainer's path): each worker resolves with its own LRU
    from torch.utils.data import DataLoader

    from bridgedepth.data.loader import ShardStream

    ds = ShardDataset(tree / "lab_ref", shuffle=True, seed=3, shuffle_group=2, rank=0, world_size=1)
    stream = ShardStream(ds, num_workers=1, transform=lambda s, e: (s["__key__"], sample_target(s, "hybrid")))
    got = dict(x for _, x in zip(range(10), DataLoader(stream, batch_size=None, num_workers=1)))
    emb = read(tree / "lab_emb", 2)
    assert sorted(got) == sorted(emb)
    for k in emb:
        for a, b in zip(got[k], emb[k]):
            np.testing.assert_array_equal(np.asarray(a), b)
    with pytest.raises(Exception, match="no 'depth' field"):  # resolution off: the copies are not there
        sample_target(next(iter(ShardDataset(tree / "lab_ref", resolve=False))), "hybrid")


def test_training_decodes_only_what_its_target_reads(tree, tmp_path):
    """The trainer's reader asks for TARGET_FIELDS[kind]: the same targets as reading everything, no
    source RGB decoded, and for pseudo-label targets the referenced source shards are not read at all
    (training on them works with the source set gone)."""
    from bridgedepth.data.loader import ShardDataset
    from bridgedepth.data.targets import TARGET_FIELDS
    from bridgedepth.mde.trainer import TrainData, train

    for kind in ("hybrid", "pseudo"):
        full = {s["__key__"]: sample_target(s, kind) for s in ShardDataset(tree / "lab_ref")}
        some = list(ShardDataset(tree / "lab_ref", fields=TARGET_FIELDS[kind]))
        assert len(some) == len(full) == 10
        for smp in some:
            assert set(smp) <= set(TARGET_FIELDS[kind]) | {"__key__", "source_ref"} and "source_rgb" not in smp
            assert ("source_ref" in smp) == (kind == "hybrid")  # pseudo: the reference is not even decoded
            for a, b in zip(sample_target(smp, kind), full[smp["__key__"]]):
                np.testing.assert_array_equal(a, b)
    for kind in ("gt", "metric"):
        full = {s["__key__"]: sample_target(s, kind) for s in ShardDataset(tree / "src")}
        some = list(ShardDataset(tree / "src", fields=TARGET_FIELDS[kind]))
        assert len(some) == len(full) == 5
        for smp in some:
            assert "sky" in smp and "intrinsics" not in smp  # sky marks far pixels; intrinsics are not read
            for a, b in zip(sample_target(smp, kind), full[smp["__key__"]]):
                np.testing.assert_array_equal(a, b)

    t = _copy_tree(tree, tmp_path)
    shutil.rmtree(t / "src")
    cfg = load_config("tiny", SMALL + ["train.stage=student-pseudo", "train.steps=2", "model.name=micro",
                                       "train.crop_size=28", "train.batch_size=2", "train.warmup_steps=0"])
    res = train(cfg, [TrainData(str(t / "lab_ref"), "pseudo")], tmp_path / "run", progress=False)
    assert np.isfinite(res.final_loss)
    with pytest.raises(SourceRefError, match="does not exist"):  # a hybrid target needs the source's depth
        train(load_config("tiny", SMALL + ["train.stage=student-hybrid", "train.steps=1", "model.name=micro",
                                           "train.crop_size=28", "train.batch_size=2"]),
              [TrainData(str(t / "lab_ref"), "hybrid")], tmp_path / "run2", progress=False)


def test_verify_checks_references(tree, run_cli):
    for d in ("gen_ref", "lab_ref"):
        rep = verify_dataset(tree / d)
        assert rep.ok, rep.problems
        assert rep.num_refs == 10
    assert verify_dataset(tree / "gen_emb").num_refs == 0
    r = run_cli("shards", "verify", tree / "lab_ref")
    assert r.code == 0 and "10 source reference(s) checked" in r.out, r


def _copy_tree(tree, dst):
    for d in ("src", "gen_ref", "lab_ref"):
        shutil.copytree(tree / d, dst / d)
    return dst


def test_moved_tree_still_resolves(tree, tmp_path):
    moved = _copy_tree(tree, tmp_path / "elsewhere" / "deeper")
    a = {s["__key__"]: s["depth"] for s in iter_samples(moved / "lab_ref")}
    b = {s["__key__"]: s["depth"] for s in iter_samples(tree / "lab_ref")}
    assert sorted(a) == sorted(b)
    assert verify_dataset(moved / "gen_ref").ok


def test_missing_or_changed_source_is_a_clear_error(tree, tmp_path, run_cli):
    from bridgedepth.labels.label import label

    t = _copy_tree(tree, tmp_path)
    first = sorted(p.name for p in (t / "src").glob("shard-*.tar"))[0]

    # 1. the source shard was rewritten with other content (its status file agrees with the new file)
    write_dataset(t / "src2", 5, lambda i: scene(i + 100), samples_per_shard=2, desc="toy", progress=False)
    for suffix in ("", ".json"):
        shutil.copy(t / "src2" / f"{first}{suffix}", t / "src" / f"{first}{suffix}")
    with pytest.raises(SourceRefError) as e:
        list(iter_samples(t / "lab_ref"))
    msg = str(e.value)
    assert str(t / "lab_ref" / first) in msg and "changed since this sample was made" in msg
    assert "sample '" in msg and str(t / "src" / first) in msg
    rep = verify_dataset(t / "gen_ref")
    assert not rep.ok and [p.kind for p in rep.problems] == ["reference"]
    assert rep.problems[0].shard == first and "changed since" in rep.problems[0].message
    assert "and 3 more" in rep.problems[0].message  # one problem per shard, not one per sample
    r = run_cli("shards", "verify", t / "gen_ref")
    assert r.code == 1 and "[reference]" in r.out, r
    assert run_cli("shards", "verify", "--no-refs", t / "gen_ref").code == 0
    cfg = load_config("tiny", SMALL)
    with pytest.raises(SourceRefError, match="changed since"):
        label(cfg, tree / "teacher", t / "gen_ref", t / "lab_again", progress=False)

    # 2. the bytes changed behind the status file's back (corruption): refused on open, found by verify
    shutil.copy(tree / "src" / f"{first}.json", t / "src" / f"{first}.json")
    data = bytearray((tree / "src" / first).read_bytes())
    data[700] ^= 0xFF
    (t / "src" / first).write_bytes(bytes(data))
    with pytest.raises(SourceRefError, match="checksum mismatch"):
        list(iter_samples(t / "lab_ref"))
    assert "changed since" in verify_dataset(t / "gen_ref").problems[0].message

    # 3. the source shard is gone, then the whole source set
    (t / "src" / first).unlink()
    with pytest.raises(SourceRefError, match="the source shard is missing"):
        list(iter_samples(t / "lab_ref"))
    shutil.rmtree(t / "src")
    with pytest.raises(SourceRefError, match="source dataset directory does not exist"):
        list(iter_samples(t / "gen_ref"))
    rep = verify_dataset(t / "lab_ref")
    assert {p.kind for p in rep.problems} == {"reference"} and len(rep.problems) == 3  # one per shard
    r = run_cli("label", "--teacher", tree / "teacher", "--generated", t / "gen_ref", "--out", t / "lab3",
                "--no-progress", *[a for o in SMALL for a in ("--set", o)])
    assert r.code == 2 and "does not exist" in r.err, r


def test_label_embed_source_makes_a_self_contained_set(tree, tmp_path):
    from bridgedepth.labels.label import label

    label(load_config("tiny", SMALL), tree / "teacher", tree / "gen_ref", tmp_path / "lab", progress=False,
          embed_source=True)
    assert "source_ref" not in fields_of(tmp_path / "lab") and fields_of(tmp_path / "lab") >= set(SOURCE_FIELDS)
    a = {s["__key__"]: s for s in iter_hybrid(tmp_path / "lab")}
    b = {s["__key__"]: s for s in iter_hybrid(tree / "lab_emb")}
    for k in b:
        np.testing.assert_array_equal(a[k]["target"], b[k]["target"])


def test_cli_generate_embed_source_flag(tree, tmp_path, run_cli):
    sets = [a for o in SMALL for a in ("--set", o)]
    for flag, want in (([], {"rgb", "meta", "source_ref"}), (["--embed-source"], {"rgb", "meta", *SOURCE_FIELDS})):
        out = tmp_path / ("emb" if flag else "ref")
        r = run_cli("generate", "--d2i", tree / "d2i", "--source", tree / "src", "--out", out,
                    "--images-per-depth", "1", "--steps", "1", *flag, *sets)
        assert r.code == 0, r
        assert fields_of(out) == want
        assert load_manifest(out).meta["embed_source"] == bool(flag)

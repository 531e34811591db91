"""`bridge generate` and the d2i CLI on tiny shards: schema, seeds, determinism across ranks, resume."""

import json

import numpy as np
import pytest

from bridgedepth.config import load_config
from bridgedepth.d2i.common import derive_seed
from bridgedepth.d2i.generate import generate
from bridgedepth.d2i.pretrain import pretrain
from bridgedepth.d2i.synthetic import toy_scene
from bridgedepth.data.shards import iter_samples, write_dataset

SMALL = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=2", "d2i.pretrain_batch_size=4",
         "generate.batch_size=3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    src = root / "src"
    write_dataset(src, 5, lambda i: toy_scene(i, 24), samples_per_shard=2, desc="toy")
    d2i = root / "d2i"
    pretrain(load_config("tiny", SMALL), src, d2i, steps=2, progress=False)
    return root, src, d2i


def test_generate_schema_and_seeds(setup):
    root, src, d2i = setup
    cfg = load_config("tiny", SMALL)
    s = generate(cfg, d2i, src, root / "g1", images_per_depth=2, seed=7, progress=False)
    assert s["images"] == 10 and s["samples_total"] == 10
    out = {x["__key__"]: x for x in iter_samples(root / "g1")}
    srcs = {x["__key__"]: x for x in iter_samples(src)}
    assert sorted(out) == sorted(f"{k}_g{i}" for k in srcs for i in range(2))
    for key, x in out.items():
        sk = x["meta"]["source_key"]
        i = int(key.rsplit("_g", 1)[1])
        assert x["meta"]["seed"] == derive_seed(7, sk, i)
        assert x["rgb"].dtype == np.uint8 and x["rgb"].shape == (24, 24, 3)  # resized to the source size
        assert x["meta"]["generated_size"] == [16, 16]
        np.testing.assert_array_equal(x["source_rgb"], srcs[sk]["rgb"])
        np.testing.assert_array_equal(x["depth"], srcs[sk]["depth"])
        np.testing.assert_array_equal(x["valid"], srcs[sk]["valid"])
        np.testing.assert_allclose(x["intrinsics"], srcs[sk]["intrinsics"])
    k0 = sorted(srcs)[0]
    assert not np.array_equal(out[f"{k0}_g0"]["rgb"], out[f"{k0}_g1"]["rgb"])
    # two ranks (a different split of the work) give byte-identical images
    for r in (0, 1):
        generate(cfg, d2i, src, root / "g2", images_per_depth=2, seed=7, rank=r, world_size=2, progress=False)
    out2 = {x["__key__"]: x for x in iter_samples(root / "g2")}
    assert sorted(out2) == sorted(out)
    for k in out:
        np.testing.assert_array_equal(out2[k]["rgb"], out[k]["rgb"])
    # rerun: complete shards are skipped
    s3 = generate(cfg, d2i, src, root / "g1", images_per_depth=2, seed=7, progress=False)
    assert s3["images"] == 0
    # --overwrite under several ranks would let one rank clear what another writes: refused
    from bridgedepth.errors import InputError

    with pytest.raises(InputError, match="remove the folder first"):
        generate(cfg, d2i, src, root / "g2", images_per_depth=2, seed=8, rank=1, world_size=2, overwrite=True,
                 progress=False)


def test_cli_pretrain_and_generate(setup, run_cli, tmp_path):
    root, src, _ = setup
    sets = [a for o in SMALL for a in ("--set", o)]
    r = run_cli("d2i", "pretrain", "--source", src, "--out", tmp_path / "m", "--steps", "1", *sets)
    assert r.code == 0, r
    assert (tmp_path / "m" / "pretrain_config.yaml").exists()
    r = run_cli("generate", "--d2i", tmp_path / "m", "--source", src, "--out", tmp_path / "g",
                "--images-per-depth", "1", "--seed", "3", "--steps", "1", *sets)
    assert r.code == 0, r
    assert json.loads(r.out[r.out.index("{"):])["images"] == 5
    r = run_cli("generate", "--d2i", tmp_path / "nope", "--source", src, "--out", tmp_path / "g3", *sets)
    assert r.code == 2 and "nope" in r.err


def test_cli_finetune_then_generate_from_lora(setup, run_cli, tmp_path):
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.teacher import tiny_teacher_config

    root, src, d2i = setup
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(tiny_teacher_config()).save_pretrained(tmp_path / "teacher")
    sets = [a for o in SMALL + ["finetune.heldout=2", "finetune.batch_size=2", "finetune.lora_rank=2",
                                "finetune.lora_alpha=2", "finetune.sample_every=0"] for a in ("--set", o)]
    r = run_cli("d2i", "finetune", "--d2i", d2i, "--teacher", tmp_path / "teacher", "--source", src,
                "--out", tmp_path / "ft", "--steps", "1", *sets)
    assert r.code == 0, r
    assert "reward 'aesthetic' is OFF" in r.out and "held-out depth reward" in r.out
    assert (tmp_path / "ft" / "pytorch_lora_weights.safetensors").exists()
    r = run_cli("generate", "--d2i", tmp_path / "ft", "--source", src, "--out", tmp_path / "g",
                "--images-per-depth", "1", *sets)
    assert r.code == 0, r
    assert {x["meta"]["generator"] for x in iter_samples(tmp_path / "g")} == {"tiny"}


def test_generate_carries_the_source_sky_mask(setup, tmp_path):
    root, _, d2i = setup

    def with_sky(i):
        s = toy_scene(i, 24)
        s["sky"] = np.zeros((24, 24), bool)
        s["sky"][:3] = ~s["valid"][:3]
        return s

    write_dataset(tmp_path / "src", 2, with_sky, samples_per_shard=2, desc="toy")
    generate(load_config("tiny", SMALL), d2i, tmp_path / "src", tmp_path / "gen", images_per_depth=2, progress=False)
    srcs = {x["__key__"]: x for x in iter_samples(tmp_path / "src")}
    out = list(iter_samples(tmp_path / "gen"))
    assert len(out) == 4
    for x in out:
        assert x["sky"].dtype == bool
        np.testing.assert_array_equal(x["sky"], srcs[x["meta"]["source_key"]]["sky"])


def test_generated_meta_describes_the_generated_image(setup, tmp_path):
    """The source's meta travels with its generated images, except what describes the source's own
    render: its ``look`` becomes ``source_look`` and the image's look is ``generated``."""
    root, src, d2i = setup
    looked = tmp_path / "looked"
    write_dataset(looked, 2, lambda i: {**toy_scene(i, 24), "meta": {"look": "synthetic", "seed": i, "kind": "room"}},
                  samples_per_shard=2, desc="toy")
    cfg = load_config("tiny", SMALL)
    generate(cfg, d2i, looked, tmp_path / "g", images_per_depth=1, seed=3, progress=False)
    for x in iter_samples(tmp_path / "g"):
        m = x["meta"]
        assert m["look"] == "generated" and m["source_look"] == "synthetic" and m["kind"] == "room"
        assert m["source_seed"] in (0, 1) and "seed" in m
    for x in iter_samples(root / "g1"):  # sources without a look get none
        assert "look" not in x["meta"] and "source_look" not in x["meta"]

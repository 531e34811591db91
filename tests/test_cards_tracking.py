"""Model cards in every saved checkpoint; TensorBoard logs through accelerate's trackers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bridgedepth.config import load_config
from bridgedepth.data.shards import write_dataset
from bridgedepth.mde.model import ScaleHead, build_model, save_model
from bridgedepth.mde.trainer import TrainData, train

H, W = 48, 64


def _scene(i):
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = (1.0 + 3.0 * yy / H + rng.uniform(0, 2)).astype(np.float32)
    rgb = np.stack([(depth * 50) % 255, (xx * 4) % 255, np.full_like(depth, rng.integers(0, 255))], -1).astype(np.uint8)
    return {"__key__": f"s{i:04d}", "rgb": rgb, "depth": depth, "valid": np.ones((H, W), bool), "meta": {"i": i}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    write_dataset(root / "src", 8, _scene, samples_per_shard=4, desc="src")
    return root


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    block = text.split("---\n")[1]
    import yaml

    return yaml.safe_load(block)


def test_save_model_writes_a_model_card(tmp_path):
    save_model(build_model("micro", seed=0), tmp_path / "rel", extra={"stage": "teacher", "license": "cc-by-4.0"})
    card = (tmp_path / "rel" / "README.md").read_text()
    fm = _front_matter(card)
    assert fm["license"] == "cc-by-4.0" and fm["pipeline_tag"] == "depth-estimation"
    assert "relative disparity" in card and "No evaluation recorded" in card and "teacher" in card
    save_model(build_model("micro", head="metric", seed=0), tmp_path / "met", scale_head=None)
    card = (tmp_path / "met" / "README.md").read_text()
    assert _front_matter(card)["license"] == "apache-2.0" and "metric depth in metres" in card
    save_model(build_model("micro", seed=0), tmp_path / "sh", scale_head=ScaleHead(32, hidden=8))
    assert "scale head" in (tmp_path / "sh" / "README.md").read_text()


def test_train_card_has_data_and_last_evaluation_and_tensorboard(shards, tmp_path, run_cli):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = ["train.steps=3", "model.name=micro", "train.crop_size=42", "train.batch_size=2", "device=cpu",
            "train.warmup_steps=0", "train.val_limit=4"]
    cfg = load_config("tiny", over)
    res = train(cfg, [TrainData(str(shards / "src"))], tmp_path / "t", progress=False, log_with="tensorboard",
                validate=lambda m: {"abs_rel": 0.25, "delta1": 0.75})
    card = (tmp_path / "t" / "last" / "README.md").read_text()
    assert str(shards / "src") in card and "target `gt`" in card
    assert "At step 3" in card and "| abs_rel | 0.25 |" in card and "| delta1 | 0.75 |" in card
    assert (tmp_path / "t" / "best" / "README.md").exists()
    events = list((tmp_path / "t" / "train").rglob("events.out.tfevents.*"))
    assert events, list((tmp_path / "t").rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss", "lr", "val_abs_rel"} <= set(tags)
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3]
    logged = [json.loads(x)["loss"] for x in res.log_path.read_text().splitlines() if "loss" in json.loads(x)]
    assert np.allclose([e.value for e in acc.Scalars("loss")], logged, rtol=1e-5)
    # the CLI flag, and a tracker that is not installed / unknown
    r = run_cli("train", "--data", shards / "src", "--out", tmp_path / "c", "--steps", "1", "--no-progress",
                "--log-with", "nonsense", *[a for o in over[1:] for a in ("--set", o)])
    assert r.code == 2 and "unknown tracker" in r.err


def test_d2i_finetune_logs_to_tensorboard(tmp_path, run_cli):
    pytest.importorskip("tensorboard")
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.pretrain import pretrain
    from bridgedepth.d2i.synthetic import toy_scenes
    from bridgedepth.d2i.teacher import tiny_teacher_config
    from bridgedepth.data.shards import write_dataset as wd

    small = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=2", "d2i.pretrain_batch_size=4",
             "finetune.batch_size=2", "finetune.heldout=2", "finetune.sample_every=0", "finetune.save_every=0",
             "finetune.lora_rank=2", "finetune.lora_alpha=2"]
    cfg = load_config("tiny", small)
    pretrain(cfg, toy_scenes(8, 24), tmp_path / "d2i", steps=1, progress=False)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(tiny_teacher_config()).save_pretrained(tmp_path / "teacher")
    scenes = toy_scenes(6, 24)
    wd(tmp_path / "src", len(scenes), lambda i: {"__key__": f"k{i}", **{k: v for k, v in scenes[i].items()
                                                                          if not k.startswith("__")}},
       samples_per_shard=8, desc="src")
    r = run_cli("d2i", "finetune", "--d2i", tmp_path / "d2i", "--teacher", tmp_path / "teacher", "--source",
                tmp_path / "src", "--out", tmp_path / "ft", "--steps", "2", "--log-with", "tensorboard",
                *[a for o in small for a in ("--set", o)])
    assert r.code == 0, r
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((tmp_path / "ft" / "d2i_finetune").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "loss" in acc.Tags()["scalars"] and [e.step for e in acc.Scalars("loss")] == [1, 2]

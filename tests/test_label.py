"""`bridge label`: pseudo-labels + similarity masks on generated shards; the hybrid reader."""

import json

import cv2
import numpy as np
import pytest

from bridgedepth.config import load_config
from bridgedepth.data.shards import iter_samples, verify_dataset, write_dataset
from bridgedepth.data.targets import SOURCE_GT, SOURCE_PSEUDO, hybrid_target
from bridgedepth.io import read_image


@pytest.fixture(scope="module")
def generated(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    imgs = [cv2.resize(read_image(p), (256, 192), interpolation=cv2.INTER_AREA)
            for p in sorted((shared_data / "rgbd/nyu_sync/rgb").glob("*.jpg"))]

    def make(i):
        orig = imgs[i % 3]
        if i % 3 == 0:
            gen = orig.copy()  # a faithful generation
        elif i % 3 == 1:
            gen = np.roll(orig, 6, axis=1)  # shifted: registration should recover it
        else:
            gen = imgs[(i + 1) % 3]  # unrelated image
        depth = np.full((192, 256), 2.0, np.float32) + np.linspace(0, 1, 256, dtype=np.float32)
        return {"__key__": f"src{i}_g0", "rgb": gen, "source_rgb": orig, "depth": depth,
                "valid": np.ones((192, 256), bool), "meta": {"source_key": f"src{i}", "seed": i}}

    write_dataset(root / "gen", 6, make, samples_per_shard=3, desc="gen", progress=False)
    from bridgedepth.mde import build_model, save_model

    save_model(build_model("micro", seed=0), root / "teacher")
    return root


def test_label_end_to_end_and_resume(generated, tmp_path):
    from bridgedepth.labels.label import label

    cfg = load_config("tiny", ["model.input_size=70", "device=cpu"])
    s = label(cfg, generated / "teacher", generated / "gen", tmp_path / "lab", progress=False)
    assert s.samples == 6 and s.skipped == 0
    assert verify_dataset(tmp_path / "lab").ok
    samples = {x["__key__"]: x for x in iter_samples(tmp_path / "lab")}
    for key, x in samples.items():
        assert x["pseudo"].dtype == np.float16 and x["pseudo"].shape == (192, 256)
        assert np.isfinite(x["pseudo"].astype(np.float32)).all()
        assert x["mask"].dtype == bool and x["mask"].shape == (192, 256)
        m = x["meta"]
        assert {"mask", "accepted", "crop", "teacher", "label_version"} <= m.keys()
        assert m["mask"]["final_fraction"] == pytest.approx(x["mask"].mean(), abs=0.02)
    assert samples["src0_g0"]["meta"]["accepted"] and samples["src3_g0"]["meta"]["accepted"]
    assert not samples["src2_g0"]["meta"]["accepted"] and not samples["src5_g0"]["meta"]["accepted"]
    assert samples["src1_g0"]["meta"]["mask"]["registered_fraction"] > 0.5
    # label version 2: the mask is moved into the generated frame with the registration (np.roll by 6:
    # generated -> original is x - 6, so the first 6 generated columns show nothing of the original)
    shifted = samples["src1_g0"]
    assert shifted["meta"]["label_version"] == 2 and shifted["meta"]["mask"]["model"] == "similarity"
    np.testing.assert_allclose(np.array(shifted["meta"]["mask"]["target_homography"])[:2, 2], [-6, 0], atol=0.3)
    assert not shifted["mask"][:, :6].any() and shifted["mask"][:, 6:].mean() > 0.5
    assert s.accepted >= 2 and json.loads((tmp_path / "lab" / "label_summary.json").read_text())["samples"] == 6
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "lab").glob("*.tar")}
    again = label(cfg, generated / "teacher", generated / "gen", tmp_path / "lab", progress=False)
    assert again.samples == 6
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "lab").glob("*.tar")}


def test_label_cli_two_workers(generated, tmp_path, run_cli):
    r = run_cli("label", "--teacher", generated / "teacher", "--generated", generated / "gen", "--out",
                tmp_path / "lab2", "--workers", "2", "--json", "--no-progress", "--set", "model.input_size=70",
                "--set", "device=cpu")
    assert r.code == 0, r
    out = json.loads(r.out)
    assert out["samples"] == 6 and set(out) >= {"accepted_fraction", "mask_fraction_histogram", "samples_per_s"}
    bad = run_cli("label", "--teacher", tmp_path / "none", "--generated", generated / "gen", "--out", tmp_path / "x")
    assert bad.code == 2 and "teacher" in bad.err


def test_hybrid_target_uses_gt_inside_mask_and_aligned_pseudo_elsewhere():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (20, 30)).astype(np.float32)
    valid = np.ones_like(depth, bool)
    valid[0] = False
    gt_disp = np.where(valid, 1 / depth, 0)
    pseudo = 7.0 * (1 / depth) + 0.3  # the teacher is right up to scale and shift
    mask = np.zeros_like(valid)
    mask[:, :15] = True
    target, v, src = hybrid_target(pseudo, depth, valid, mask, accepted=True)
    inside = mask & valid
    np.testing.assert_allclose(target[inside], gt_disp[inside], rtol=1e-6)
    np.testing.assert_allclose(target[~mask], (1 / depth)[~mask], rtol=1e-4)  # aligned pseudo = GT frame
    assert (src[inside] == SOURCE_GT).all() and (src[~mask] == SOURCE_PSEUDO).all()
    t2, _, src2 = hybrid_target(pseudo, depth, valid, mask, accepted=False)
    assert (src2 != SOURCE_GT).all() and np.allclose(t2, pseudo)


def test_label_batches_equal_size_images_with_the_one_by_one_result(generated, tmp_path, monkeypatch):
    """label.batch_size images of one size share a teacher call; pseudo-labels equal the one-at-a-time
    ones up to float rounding (stored as float16), masks and metadata exactly."""
    from bridgedepth.labels import label as lm
    from bridgedepth.mde import predictor

    calls = []
    real = predictor.predict_tensor

    def spy(model, x, *a, **k):
        calls.append(x.shape[0])
        return real(model, x, *a, **k)

    from bridgedepth.labels import masks as mm

    thread_counts = []
    real_pairs = mm.similarity_mask_pairs

    def spy_pairs(pairs, cfg=None, *, threads=1):
        thread_counts.append(threads)
        return real_pairs(pairs, cfg, threads=threads)

    monkeypatch.setattr(predictor, "predict_tensor", spy)
    monkeypatch.setattr(mm, "similarity_mask_pairs", spy_pairs)
    base = ["model.input_size=70", "device=cpu"]
    one = lm.label(load_config("tiny", base + ["label.batch_size=1", "label.mask_threads=1"]), generated / "teacher",
                   generated / "gen", tmp_path / "one", progress=False)
    assert calls == [1] * 6 and thread_counts == [1] * 6
    calls.clear()
    thread_counts.clear()
    # the masks of a batch on 2 threads: the same masks and statistics as one thread
    many = lm.label(load_config("tiny", base + ["label.batch_size=3", "label.mask_threads=2"]), generated / "teacher",
                    generated / "gen", tmp_path / "many", progress=False)
    assert calls == [3, 3]  # two shards of 3 equal-size images
    assert thread_counts == [2, 2]
    assert one.samples == many.samples == 6
    a = {x["__key__"]: x for x in iter_samples(tmp_path / "one")}
    b = {x["__key__"]: x for x in iter_samples(tmp_path / "many")}
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k]["pseudo"].astype(np.float32), a[k]["pseudo"].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)
        assert np.array_equal(a[k]["mask"], b[k]["mask"]) and a[k]["meta"]["mask"] == b[k]["meta"]["mask"]


def test_label_rerun_with_other_settings_is_refused_or_overwritten(generated, tmp_path, run_cli):
    """A rerun into the same --out skipped its finished shards, so a relabel at another SSIM threshold
    (or with a retrained teacher) kept the old labels under a config.yaml that named the new ones."""
    from bridgedepth.errors import InputError
    from bridgedepth.labels.label import label
    from bridgedepth.mde import build_model, save_model

    cfg = load_config("tiny", ["model.input_size=70", "device=cpu"])
    out = tmp_path / "lab"
    first = label(cfg, generated / "teacher", generated / "gen", out, progress=False)
    # how the work is spread may change: resumed
    label(load_config("tiny", ["model.input_size=70", "device=cpu", "label.workers=2", "label.batch_size=1"]),
          generated / "teacher", generated / "gen", out, progress=False)
    loose = load_config("tiny", ["model.input_size=70", "device=cpu", "label.ssim_threshold=0.05"])
    with pytest.raises(InputError, match=r"label.ssim_threshold: 0.85 in the folder, 0.05 now.*--overwrite"):
        label(loose, generated / "teacher", generated / "gen", out, progress=False)
    with pytest.raises(InputError, match="input_size"):
        label(load_config("tiny", ["model.input_size=56", "device=cpu"]), generated / "teacher", generated / "gen", out,
              progress=False)
    save_model(build_model("micro", seed=1), tmp_path / "teacher")  # retrained: same place, other weights
    import shutil

    moved = tmp_path / "t2"
    shutil.copytree(generated / "teacher", moved)
    for f in (tmp_path / "teacher").glob("*.safetensors"):
        shutil.copy2(f, moved / f.name)
    with pytest.raises(InputError, match="teacher's weights"):
        label(cfg, moved, generated / "gen", out, progress=False)
    again = label(loose, generated / "teacher", generated / "gen", out, progress=False, overwrite=True)
    assert again.accepted > first.accepted  # labelled afresh at the looser threshold, not resumed
    assert all(x["meta"]["accepted"] for x in iter_samples(out, fields=["meta"]))
    r = run_cli("label", "--teacher", generated / "teacher", "--generated", generated / "gen", "--out", out,
                "--no-progress", "--set", "model.input_size=70", "--set", "device=cpu")
    assert r.code == 2 and "label.ssim_threshold: 0.05 in the folder, 0.85 now" in r.err
    r = run_cli("label", "--teacher", generated / "teacher", "--generated", generated / "gen", "--out", out,
                "--no-progress", "--set", "model.input_size=70", "--set", "device=cpu", "--overwrite", "--json")
    assert r.code == 0 and json.loads(r.out)["accepted"] == first.accepted

    # a folder labelled before settings were recorded: compared on its teacher path and label settings
    from bridgedepth.data.shards import MANIFEST

    man = json.loads((out / MANIFEST).read_text())
    man["meta"].pop("settings")
    (out / MANIFEST).write_text(json.dumps(man))
    label(cfg, generated / "teacher", generated / "gen", out, progress=False)
    with pytest.raises(InputError, match="ssim_threshold"):
        label(loose, generated / "teacher", generated / "gen", out, progress=False)
    with pytest.raises(InputError, match="teacher"):
        label(cfg, moved, generated / "gen", out, progress=False)
    other = tmp_path / "other"  # a folder holding another kind of dataset
    write_dataset(other, 1, lambda i: {"__key__": "a", "meta": {}}, desc="x", progress=False)
    with pytest.raises(InputError, match="not labels"):
        label(cfg, generated / "teacher", generated / "gen", other, progress=False)


def test_label_overwrite_with_several_processes_asks_to_clear_the_folder(generated, tmp_path):
    """--overwrite under torchrun: one rank clearing the folder while another writes into it would lose
    shards; with several processes the folder is to be removed first."""
    from bridgedepth.errors import InputError
    from bridgedepth.labels.label import label

    cfg = load_config("tiny", ["model.input_size=70", "device=cpu"])
    out = tmp_path / "lab"
    label(cfg, generated / "teacher", generated / "gen", out, progress=False)
    with pytest.raises(InputError, match="remove the folder first"):
        label(cfg, generated / "teacher", generated / "gen", out, progress=False, overwrite=True, rank=1, world_size=2)

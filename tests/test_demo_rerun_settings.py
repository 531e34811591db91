"""A demo folder rerun with other settings remakes exactly the stages whose settings changed, and the
stages that read their outputs (the whole-pipeline check is in test_demo.py); free settings (seeds,
threads, batch sizes, cadences) remake nothing; the aesthetic scorer and the foundations count by
their files; folders from before stages recorded their settings take them from their config.yaml."""

import json

import pytest

from bridgedepth.config import load_config, save_resolved
from bridgedepth.errors import InputError
from bridgedepth.pipeline import (CONSISTENCY_STAGE, LABEL_STAGES, RERUN_FREE, SCENES_STAGE, adopt_old_settings,
                                  evaluate_stage, model_identity, row_stage, stage_settings)
from bridgedepth.stages import StageRunner
from bridgedepth.zoo import MODELS, model_path

SHIPPED = {name: str(model_path(name)) for name in MODELS}
D2I = "2 D2I reward fine-tune (depth 0.9 + aesthetic 0.1)"


def _model(folder, weights=b"w", calibration="{}", card="{}"):
    folder.mkdir(parents=True)
    (folder / "scorer.json").write_text(calibration)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "card.json").write_text(card)
    return str(folder)


def _changed(a: dict, b: dict) -> set[str]:
    """Names of the stages whose settings differ between two stage_settings results."""
    assert set(a) == set(b)
    return {n for n in a if json.dumps(a[n], sort_keys=True, default=str) != json.dumps(b[n], sort_keys=True, default=str)}


def test_free_settings_are_in_no_stage_and_change_nothing():
    base = stage_settings(load_config("tiny"), SHIPPED)
    for name, values in base.items():
        assert not [k for k in values if any(k == f or k.startswith(f + ".") for f in RERUN_FREE)], name
    free = load_config("tiny", ["demo.stage_workers=1", "demo.threads=1", "label.mask_threads=1", "label.batch_size=2",
                                "generate.batch_size=3", "train.save_every=5", "finetune.log_every=3", "device=cpu"])
    assert not _changed(base, stage_settings(free, SHIPPED))


@pytest.mark.parametrize("override, remade", [
    ("label.ssim_threshold=0.5", {"4a label", "4b label (untuned D2I)"}),
    ("demo.hybrid_steps=30", {row_stage("finetune_pseudo", 0), row_stage("finetune_hybrid", 0)}),
    ("demo.metric_steps=30", {"6a metric fine-tune"}),
    ("finetune.reward.anchor_weight=0", {D2I}),
    ("demo.test_scenes=10", {SCENES_STAGE}),
    ("eval.disparity_floor=0.01", {evaluate_stage(1), CONSISTENCY_STAGE}),
    ("zoo.depth_steps=10", set()),  # read by no stage (only `bridge zoo build` and --from-scratch)
])
def test_a_changed_setting_changes_the_settings_of_the_stages_that_read_it(override, remade):
    """The stages named here change; those reading their outputs follow at run time (StageRunner)."""
    assert _changed(stage_settings(load_config("tiny"), SHIPPED), stage_settings(load_config("tiny", [override]), SHIPPED)) == remade


def test_the_train_settings_reach_every_trained_row():
    a, b = (stage_settings(load_config("tiny", o), SHIPPED) for o in ([], ["train.lr=1e-3"]))
    assert _changed(a, b) == {n for n in a if n.startswith(("5 row", "6"))}


def test_scorer_and_foundations_count_by_their_files(tmp_path):
    """The shipped scorer seen from another checkout (byte-identical files) is the same; another
    calibration or other weights are another scorer and remake the D2I fine-tune."""
    def with_scorer(path):
        cfg = load_config("tiny")
        cfg.finetune.reward.aesthetic_model = path
        return stage_settings(cfg, SHIPPED)

    one = with_scorer(_model(tmp_path / "checkout1" / "aesthetic"))
    assert not _changed(one, with_scorer(_model(tmp_path / "checkout2" / "aesthetic", card='{"wall_seconds": 3}')))
    assert _changed(one, with_scorer(_model(tmp_path / "w" / "aesthetic", weights=b"other"))) == {D2I}
    assert _changed(one, with_scorer(_model(tmp_path / "c" / "aesthetic", calibration='{"scale": 2}'))) == {D2I}
    assert model_identity(None) is None and model_identity("clip") == "clip"

    # another depth foundation: everything it labels, starts or is evaluated with
    other = {**SHIPPED, "depth": _model(tmp_path / "depth", weights=b"another teacher")}
    changed = _changed(stage_settings(load_config("tiny"), SHIPPED), stage_settings(load_config("tiny"), other))
    assert {D2I, *LABEL_STAGES.values(), evaluate_stage(1), CONSISTENCY_STAGE, row_stage("source_only", 0)} <= changed
    assert SCENES_STAGE not in changed and "3a generate (reward-tuned D2I)" not in changed
    assert row_stage("finetune_hybrid", 0) not in changed  # starts from a row: remade through that row's output


def _old_folder(tmp_path, overrides=()):
    """A demo folder as the versions before recorded settings left it: config.yaml, records without settings."""
    out = tmp_path / "demo"
    cfg = load_config("tiny", list(overrides))
    cfg.finetune.reward.aesthetic_model = "/old/checkout/models/aesthetic"
    save_resolved(cfg, out)
    names = [SCENES_STAGE, D2I, "4a label", row_stage("source_only", 0), row_stage("source_only", 1)]
    (out / "stages.json").write_text(json.dumps({n: {"seconds": 1.0, "summary": {}} for n in names}))
    return out


def test_an_old_folder_takes_its_settings_from_its_config(tmp_path):
    out = _old_folder(tmp_path, ["finetune.reward.anchor_weight=0", "finetune.lr=3e-3", "demo.seeds=1"])
    runner = StageRunner(out, lambda m: None)
    adopt_old_settings(runner, out / "config.yaml", SHIPPED, from_scratch=False, fixtures={}, log=lambda m: None)
    assert all("settings" in r for r in runner.done.values())  # seed 1's row too, though config says 1 seed
    new = stage_settings(load_config("tiny"), SHIPPED)
    verdict = runner._verdict(D2I, (), (), new[D2I])
    assert verdict[0] == "changed" and "finetune.lr: 0.003 -> 0.006" in verdict[1] and "anchor_weight: 0.0 -> 20.0" in verdict[1]
    # the scorer recorded by a path that no longer exists (another checkout) is taken to be this run's
    assert "aesthetic_model" not in verdict[1]
    assert runner._verdict(SCENES_STAGE, (), (), new[SCENES_STAGE]) is None
    assert runner._verdict("4a label", (), (), new["4a label"]) is None


def test_a_key_missing_from_an_old_config_compares_as_its_default(tmp_path):
    out = _old_folder(tmp_path, ["finetune.reward.anchor_weight=0"])
    text = (out / "config.yaml").read_text()
    text = text.replace("    anchor_weight: 0.0\n", "").replace("overrides:\n- finetune.reward.anchor_weight=0\n", "")
    assert "anchor_weight" not in text  # the folder's config as an older version wrote it
    (out / "config.yaml").write_text(text)
    runner = StageRunner(out, lambda m: None)
    adopt_old_settings(runner, out / "config.yaml", SHIPPED, from_scratch=False, fixtures={}, log=lambda m: None)
    same = stage_settings(load_config("tiny", ["finetune.reward.anchor_weight=0"]), SHIPPED)[D2I]
    assert runner._verdict(D2I, (), (), same) is None
    assert "anchor_weight: 0.0 -> 20.0" in runner._verdict(D2I, (), (), stage_settings(load_config("tiny"), SHIPPED)[D2I])[1]


def test_an_unreadable_old_config_is_an_error_naming_it(tmp_path):
    out = _old_folder(tmp_path)
    (out / "config.yaml").write_text("finetune: [unclosed\n")
    with pytest.raises(InputError, match="cannot be read as a configuration"):
        adopt_old_settings(StageRunner(out, lambda m: None), out / "config.yaml", SHIPPED, from_scratch=False,
                           fixtures={}, log=lambda m: None)
    # records that have their settings need no configuration
    (out / "stages.json").write_text(json.dumps({SCENES_STAGE: {"seconds": 1.0, "settings": {}}}))
    adopt_old_settings(StageRunner(out, lambda m: None), out / "config.yaml", SHIPPED, from_scratch=False,
                       fixtures={}, log=lambda m: None)


def test_pseudo_label_identity_follows_images_and_labels_not_masks(tmp_path):
    """A row trained on pseudo-labels depends on the labelled set's images and labels only: a relabel
    that changes masks, crops or acceptance keeps its identity, another label or image does not."""
    import numpy as np

    from bridgedepth.data.shards import write_dataset
    from bridgedepth.pipeline import pseudo_labels_identity, reads_pseudo_only, row_recipes

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    pseudo = rng.random((3, 8, 8)).astype(np.float16)

    def labelled(name, mask_value=True, accepted=False, bump=0.0, shade=0):
        def make(i):
            p = pseudo[i] + np.float16(bump if i == 1 else 0)
            return {"__key__": f"s{i}", "rgb": rgb[i] + np.uint8(shade if i == 2 else 0), "pseudo": p,
                    "mask": np.full((8, 8), mask_value), "meta": {"accepted": accepted}}
        write_dataset(tmp_path / name, 3, make, samples_per_shard=2, progress=False)
        return pseudo_labels_identity(tmp_path / name)

    base = labelled("a")
    assert labelled("b", mask_value=False, accepted=True) == base
    assert labelled("c", bump=0.5) != base and labelled("d", shade=1) != base
    recipes = row_recipes(tmp_path, load_config("tiny").demo)
    assert [r for r, (data, *_) in recipes.items() if reads_pseudo_only(data, "labelled")] == \
        ["generated_pseudo", "finetune_pseudo"]
    assert not reads_pseudo_only(recipes["finetune_hybrid"][0], "labelled")
    assert reads_pseudo_only(recipes["no_rl_d2i"][0], "labelled_no_rl")


def test_a_pseudo_label_row_recorded_before_the_identity_keeps_the_folder_rule(tmp_path):
    """A row recorded without ``labels.<set>`` does not know which labels it was made with: the labelled
    folder stays its input (a relabel retrains it once, then it is recorded with the identity); a new
    row, or one recorded with it, depends on the identity alone."""
    from bridgedepth.pipeline import depends_on_labels_identity

    r = StageRunner(tmp_path, lambda m: None)
    key = "labels.labelled"
    assert depends_on_labels_identity(r, "new row", key)  # no record
    r.run("old row", lambda: None, settings={"train.lr": 1e-4})
    r.run("row", lambda: None, settings={"train.lr": 1e-4, key: "abc"})
    assert r.recorded_settings("old row") == {"train.lr": 1e-4} and r.recorded_settings("nope") is None
    assert not depends_on_labels_identity(r, "old row", key)
    assert depends_on_labels_identity(r, "row", key)

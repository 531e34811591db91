"""A demo folder is only resumed with the settings its finished stages were made with (--seeds may change)."""

import pytest

from bridgedepth.config import load_config, save_resolved
from bridgedepth.errors import InputError
from bridgedepth.pipeline import check_same_settings


def _folder(tmp_path, overrides=()):
    out = tmp_path / "demo"
    cfg = load_config("tiny", list(overrides))
    cfg.finetune.reward.aesthetic_model = "/old/checkout/models/aesthetic"
    save_resolved(cfg, out)
    (out / "stages.json").write_text("{}")
    return out


def test_same_settings_more_seeds_or_another_checkout_resume(tmp_path):
    out = _folder(tmp_path)
    cfg = load_config("tiny", ["demo.seeds=3", "demo.stage_workers=1", "label.mask_threads=1", "label.batch_size=2"])
    cfg.finetune.reward.aesthetic_model = "/new/checkout/models/aesthetic"
    check_same_settings(cfg, out)  # no error


def test_other_settings_are_refused_with_the_keys_named(tmp_path):
    out = _folder(tmp_path, ["finetune.reward.anchor_weight=0", "finetune.lr=3e-3"])
    with pytest.raises(InputError) as e:
        check_same_settings(load_config("tiny"), out)
    msg = str(e.value)
    assert str(out) in msg and "finetune.lr: 0.003 -> 0.006" in msg and "anchor_weight: 0.0 -> 20.0" in msg
    assert "another --out" in msg


def test_a_key_missing_from_an_old_config_compares_as_its_default(tmp_path):
    out = _folder(tmp_path, ["finetune.reward.anchor_weight=0"])
    text = (out / "config.yaml").read_text()
    text = text.replace("    anchor_weight: 0.0\n", "").replace("overrides:\n- finetune.reward.anchor_weight=0\n", "")
    assert "anchor_weight=0" not in text  # the folder's config as an older version wrote it
    (out / "config.yaml").write_text(text)
    assert "    anchor_weight: 0.0\n" not in (out / "config.yaml").read_text()
    check_same_settings(load_config("tiny", ["finetune.reward.anchor_weight=0"]), out)
    with pytest.raises(InputError, match="anchor_weight: 0.0 -> 20.0"):
        check_same_settings(load_config("tiny"), out)


def test_no_finished_stages_or_an_unreadable_config(tmp_path):
    out = _folder(tmp_path, ["finetune.lr=1e-4"])
    (out / "stages.json").unlink()
    check_same_settings(load_config("tiny"), out)  # nothing finished: nothing to mix
    (out / "stages.json").write_text("{}")
    (out / "config.yaml").write_text("finetune: [unclosed\n")
    with pytest.raises(InputError, match="cannot be read as a configuration"):
        check_same_settings(load_config("tiny"), out)


def _scorer(folder, weights=b"w", calibration="{}"):
    folder.mkdir(parents=True)
    (folder / "scorer.json").write_text(calibration)
    (folder / "model.safetensors").write_bytes(weights)
    return str(folder)


def test_another_aesthetic_scorer_is_refused_the_same_one_elsewhere_resumes(tmp_path):
    """A rerun with ``--set finetune.reward.aesthetic_model=OTHER`` used to skip every finished stage and
    record the new scorer beside results made with the old one; the scorer is now compared by its files."""
    out = tmp_path / "demo"
    cfg = load_config("tiny")
    cfg.finetune.reward.aesthetic_model = _scorer(tmp_path / "checkout1" / "aesthetic")
    save_resolved(cfg, out)
    (out / "stages.json").write_text("{}")

    same = load_config("tiny")  # the shipped scorer seen from another checkout: byte-identical files
    same.finetune.reward.aesthetic_model = _scorer(tmp_path / "checkout2" / "aesthetic")
    check_same_settings(same, out)

    for name, kw in (("weights", {"weights": b"other"}), ("calibration", {"calibration": '{"scale": 2}'})):
        other = load_config("tiny")
        other.finetune.reward.aesthetic_model = _scorer(tmp_path / name / "aesthetic", **kw)
        with pytest.raises(InputError, match="aesthetic_model") as e:
            check_same_settings(other, out)
        assert "another --out" in str(e.value)
    none = load_config("tiny")  # the term switched to CLIP or off
    with pytest.raises(InputError, match="aesthetic_model"):
        check_same_settings(none, out)

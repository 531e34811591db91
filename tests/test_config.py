import pytest

from bridgedepth.config import Config, ConfigError, load_config, preset_names, save_resolved, from_dict
import yaml


def test_every_preset_loads_and_validates():
    names = preset_names()
    assert "tiny" in names and "paper" in names
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        assert cfg.name


def test_dotted_overrides_are_typed():
    cfg = load_config("tiny", ["train.lr=1e-5", "train.steps=7", "scenes.size=[64, 96]", "d2i.backend=sd-controlnet"])
    assert cfg.train.lr == pytest.approx(1e-5) and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7
    assert cfg.scenes.size == [64, 96]
    assert cfg.d2i.backend == "sd-controlnet"


def test_unknown_key_names_key_and_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        load_config("tiny", ["train.learning_rate=1e-5"])
    msg = str(e.value)
    assert "train.learning_rate" in msg and "lr" in msg and "batch_size" in msg


def test_wrong_type_is_rejected_with_key():
    with pytest.raises(ConfigError, match=r"train\.steps"):
        load_config("tiny", ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"train\.hflip"):
        load_config("tiny", ["train.hflip=3"])
    with pytest.raises(ConfigError, match=r"d2i\.backend"):
        load_config("tiny", ["d2i.backend=dalle"])


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("no-such-preset")


def test_base_chain_and_resolved_roundtrip(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: tiny\ntrain:\n  steps: 3\n")
    cfg = load_config(child)
    assert cfg.train.steps == 3 and cfg.name == "tiny"
    path = save_resolved(cfg, tmp_path / "run")
    again = from_dict(Config, yaml.safe_load(path.read_text()))
    assert again == cfg


def test_cli_config_show(run_cli):
    r = run_cli("config", "show", "paper", "--set", "train.steps=5")
    assert r.code == 0, r
    data = yaml.safe_load(r.out)
    assert data["train"]["steps"] == 5 and data["d2i"]["backend"] == "flux-depth"
    bad = run_cli("config", "show", "tiny", "--set", "nope=1")
    assert bad.code == 2 and "unknown key 'nope'" in bad.err


def test_save_resolved_leaves_no_temporary_file_when_interrupted(tmp_path, monkeypatch):
    """A SIGTERM (KeyboardInterrupt) between writing the temporary file and renaming it leaves neither
    a half-written config nor a stray temporary file; an earlier config.yaml stays as it was."""
    import bridgedepth.config as config_mod

    cfg = load_config("tiny")
    first = save_resolved(cfg, tmp_path / "run")
    before = first.read_text()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(config_mod.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_resolved(load_config("tiny", ["train.steps=7"]), tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]
    assert first.read_text() == before


def test_changed_settings_compares_the_keys_both_sides_know():
    """The one comparison behind every rerun check: nested keys dotted, sorted; a key only one side has
    (a setting added by a later version) is not a change; lists and digests compare as values."""
    from bridgedepth.config import changed_settings, describe_changes

    old = {"train": {"lr": 1e-4, "loss": {"trim": 0.1}}, "data": [1, 2], "w": "abc"}
    new = {"train": {"lr": 1e-3, "loss": {"trim": 0.1, "added_later": True}}, "data": [1, 3], "w": "abc",
           "new_section": {"x": 1}}
    assert changed_settings(old, new) == [("data", [1, 2], [1, 3]), ("train.lr", 1e-4, 1e-3)]
    assert changed_settings(old, old) == []
    text = describe_changes(changed_settings(old, new), limit=1, named={"data": "the data"})
    assert text == "the data (and 1 more)"
    assert describe_changes([("k", 1, 2)], form="{key}: {old!r} in the folder, {new!r} now") == \
        "k: 1 in the folder, 2 now"
    # weight digests (a model's identity) are shown by their first digits, other text as it is
    a, b = "13fe2d95" + "0" * 56, "8047b34c" + "f" * 56
    assert describe_changes([("foundation.depth", a, b), ("name", "x" * 64, "y")]) == \
        f"foundation.depth: sha256:{a[:12]} -> sha256:{b[:12]}; name: {'x' * 64!r} -> 'y'"

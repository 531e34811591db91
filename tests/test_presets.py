"""Every shipped preset validates; `base` chains resolve; paper.yaml carries the paper's key numbers;
the ablation presets are CPU-sized and differ from the tiny default exactly where they should.

Paths in the paper presets are placeholders for a cluster's local copies; types and keys are not.
"""

from __future__ import annotations

import json

import pytest
import yaml

from bridgedepth.config import (
    PRESET_DIR,
    Config,
    ConfigError,
    dump_yaml,
    from_dict,
    load_config,
    load_raw,
    preset_names,
    to_dict,
)

PRESETS = preset_names()
PAPER_STAGES = {
    "paper-teacher": "teacher",
    "paper-student-pseudo": "student-pseudo",
    "paper-student-hybrid": "student-hybrid",
    "paper-metric-indoor": "metric",
    "paper-metric-outdoor": "metric",
    "paper-scale-head": "scale-head",
}
ABLATIONS = [
    "ablation-baseline",
    "ablation-pseudo",
    "ablation-hybrid",
    "ablation-no-rl",
    "ablation-depth-reward-only",
]
SEVEN_SOURCES = ["hypersim", "tartanair", "vkitti2", "irs", "blendedmvs", "spring", "folder"]


def _own(name: str) -> dict:
    """The preset file's own mapping (without following `base`)."""
    data = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())
    assert isinstance(data, dict), f"{name}.yaml is not a mapping"
    return data


def _chain(name: str) -> list[str]:
    """[name, its base, the base's base, ...] by preset name; fails on a cycle or a path base."""
    chain = [name]
    while True:
        base = _own(chain[-1]).get("base")
        if base is None:
            return chain
        assert isinstance(base, str) and base in PRESETS, (
            f"{chain[-1]}.yaml: base {base!r} is not a shipped preset ({', '.join(PRESETS)})"
        )
        assert base not in chain, f"circular base chain: {' -> '.join(chain + [base])}"
        chain.append(base)


def test_expected_presets_are_shipped():
    for name in ["tiny", "paper", *PAPER_STAGES, *ABLATIONS]:
        assert name in PRESETS, f"missing preset configs/{name}.yaml"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_and_round_trips(name):
    # Each file on its own: every key and type is valid even before the base is merged in.
    own = {k: v for k, v in _own(name).items() if k != "base"}
    from_dict(Config, own)
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert cfg.name == name, f"{name}.yaml: name is {cfg.name!r}; it should be the file's stem"
    assert cfg.description.strip(), f"{name}.yaml has no description"
    # The resolved configuration written next to a run reads back identically.
    assert from_dict(Config, yaml.safe_load(dump_yaml(cfg))) == cfg


@pytest.mark.parametrize("name", PRESETS)
def test_base_chain_resolves_to_a_root_preset(name):
    chain = _chain(name)
    root = chain[-1]
    assert root in ("tiny", "paper"), f"{name}: chain {' -> '.join(chain)} does not end at tiny or paper"
    if name.startswith("paper"):
        assert root == "paper", f"{name} must build on paper.yaml"
    if name.startswith("ablation"):
        assert root == "tiny", f"{name} must build on tiny.yaml (CPU-sized)"
    # load_raw follows the same chain: every key of every file in it survives unless a child overrides it.
    raw = load_raw(name)
    assert "base" not in raw
    assert raw["name"] == name


def test_children_override_and_inherit():
    outdoor, indoor, paper = load_config("paper-metric-outdoor"), load_config("paper-metric-indoor"), load_config("paper")
    assert _chain("paper-metric-outdoor") == ["paper-metric-outdoor", "paper-metric-indoor", "paper"]
    assert outdoor.model.max_depth == 80.0 and indoor.model.max_depth == 20.0
    assert outdoor.train == indoor.train  # inherited from indoor
    assert outdoor.d2i == paper.d2i and outdoor.label == paper.label  # inherited from paper
    hybrid, pseudo = load_config("paper-student-hybrid"), load_config("paper-student-pseudo")
    assert _chain("paper-student-hybrid") == ["paper-student-hybrid", "paper-student-pseudo", "paper"]
    assert hybrid.model.encoder_init == pseudo.model.encoder_init
    assert hybrid.model.init_from and hybrid.model.init_from.startswith(pseudo.out)
    assert hybrid.train.stage == "student-hybrid" and hybrid.train.steps != pseudo.train.steps


def test_paper_key_numbers():
    cfg = load_config("paper")
    # D2I: FLUX.1-Depth-dev, LoRA reward fine-tuning with L = 0.9 L_depth - 0.1 R_aesthetic, lr 1e-5, K = 1.
    assert cfg.d2i.backend == "flux-depth"
    assert "FLUX.1-Depth-dev" in cfg.d2i.path
    ft = cfg.finetune
    assert ft.reward.depth_weight == pytest.approx(0.9)
    assert ft.reward.aesthetic_weight == pytest.approx(0.1)
    assert ft.lr == pytest.approx(1e-5)
    assert ft.grad_steps == 1 and ft.grad_clip == pytest.approx(1.0)
    assert ft.lora_rank > 0 and ft.lora_alpha > 0
    assert {"to_q", "to_k", "to_v", "to_out.0"} <= set(ft.lora_targets)
    assert ft.reward.clip_path and ft.reward.aesthetic_head  # the aesthetic term is on at paper scale
    # Generation: 4 images per source depth map.
    assert cfg.generate.images_per_depth == 4
    # Labels: SSIM > 0.85, >= 10 ORB matches, > 50 % coverage, 518 crops.
    lab = cfg.label
    assert lab.ssim_threshold == pytest.approx(0.85)
    assert lab.min_matches == 10
    assert lab.accept_fraction == pytest.approx(0.5)
    assert lab.crop_size == 518
    assert cfg.d2i.resolution % 16 == 0, "FLUX packs 2x2 latent patches of an 8x-downsampled image"
    # Depth model: DINOv2-G teacher/student at 518, SSI : GM = 1 : 4, 10 % trimming, SiLog 0.5.
    assert cfg.model.name == "vitg" and cfg.model.input_size == 518
    assert cfg.train.crop_size == 518
    loss = cfg.train.loss
    assert (loss.ssi_weight, loss.gm_weight, loss.gm_scales) == (1.0, 4.0, 4)
    assert loss.trim == pytest.approx(0.1) and loss.silog_lambda == pytest.approx(0.5)
    assert (loss.trim_sources, loss.alignment, loss.mask_beyond_max_depth) == ("pseudo", "median_mad", True)
    assert cfg.train.decoder_lr_mult == pytest.approx(10.0)
    assert cfg.train.mixed_precision == "bf16"
    # The seven source datasets.
    assert [s.name for s in cfg.data.sources] == SEVEN_SOURCES


def test_paper_sources_match_the_adapters(tmp_path):
    from bridgedepth.data.sources import adapter_names, get_adapter, get_adapter_class

    cfg = load_config("paper")
    for src in cfg.data.sources:
        assert src.name in adapter_names(), f"data.sources: no adapter named {src.name!r}"
        cls = get_adapter_class(src.name)
        assert set(src.options) <= set(cls.options), f"{src.name}: unknown options {set(src.options) - set(cls.options)}"
        assert src.weight > 0
        assert src.count is None or src.count > 0
        # Option values are checked up front by the adapter (an empty folder stands in for the root).
        get_adapter(src.name, tmp_path, encoding=src.encoding, **src.options)


def test_paper_placeholders_are_absolute_paths():
    cfg = load_config("paper")
    paths = [cfg.model.encoder_init, cfg.d2i.path, cfg.finetune.reward.clip_path,
             cfg.finetune.reward.aesthetic_head, cfg.data.root] + [s.root for s in cfg.data.sources]
    for p in paths:
        assert isinstance(p, str) and p.startswith("/"), f"placeholder path {p!r} should be absolute"


@pytest.mark.parametrize("name,stage", sorted(PAPER_STAGES.items()))
def test_paper_stage_presets(name, stage):
    cfg, paper = load_config(name), load_config("paper")
    assert cfg.train.stage == stage
    assert cfg.model.name == "vitg" and cfg.d2i == paper.d2i and cfg.finetune == paper.finetune
    assert cfg.out.startswith(paper.out + "/") and cfg.out != paper.out
    if stage in ("student-hybrid", "metric", "scale-head"):
        assert cfg.model.init_from, f"{name}: a later stage starts from the previous stage's checkpoint"
    if stage == "metric":
        assert cfg.model.max_depth == {"paper-metric-indoor": 20.0, "paper-metric-outdoor": 80.0}[name]
        assert cfg.train.lr == pytest.approx(5e-6) and cfg.train.loss.silog_lambda == pytest.approx(0.5)


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_presets_are_cpu_sized(name):
    cfg, tiny = load_config(name), load_config("tiny")
    assert cfg.model.name in ("tiny", "toy", "micro")
    assert cfg.d2i.backend == "tiny" and cfg.d2i.path is None
    assert cfg.device in ("auto", "cpu")
    assert cfg.model.encoder_init is None and cfg.finetune.reward.clip_path is None  # nothing to download
    assert cfg.out != tiny.out  # each ablation writes its own run folder
    assert cfg.scenes == tiny.scenes and cfg.model == tiny.model  # same data and model as the demo


def test_ablations_differ_where_intended():
    tiny = load_config("tiny")
    stages = {n: load_config(n).train.stage for n in ("ablation-baseline", "ablation-pseudo", "ablation-hybrid")}
    assert stages == {"ablation-baseline": "teacher", "ablation-pseudo": "student-pseudo",
                      "ablation-hybrid": "student-hybrid"}
    no_rl = load_config("ablation-no-rl")
    assert no_rl.finetune.steps == 0 and tiny.finetune.steps > 0
    assert no_rl.train == tiny.train and no_rl.generate == tiny.generate
    depth_only = load_config("ablation-depth-reward-only")
    assert depth_only.finetune.reward.aesthetic_weight == 0.0
    assert depth_only.finetune.reward.depth_weight == pytest.approx(tiny.finetune.reward.depth_weight)
    assert depth_only.finetune.steps == tiny.finetune.steps
    # Everything else about the reward run is the default's.
    a, b = to_dict(depth_only.finetune), to_dict(tiny.finetune)
    del a["reward"]["aesthetic_weight"]
    del b["reward"]["aesthetic_weight"]
    assert a == b


def test_a_bad_key_in_a_preset_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: paper\nfinetune:\n  lora_rnak: 4\n")
    with pytest.raises(ConfigError, match=r"finetune\.lora_rnak") as e:
        load_config(bad)
    assert "lora_rank" in str(e.value)
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("base: paper\ngenerate:\n  images_per_depth: four\n")
    with pytest.raises(ConfigError, match=r"generate\.images_per_depth"):
        load_config(wrong_type)
    missing_base = tmp_path / "orphan.yaml"
    missing_base.write_text("base: no-such-preset\n")
    with pytest.raises(ConfigError):
        load_config(missing_base)


@pytest.mark.parametrize("name", PRESETS)
def test_cli_config_show(run_cli, name):
    r = run_cli("config", "show", name, "--json")
    assert r.code == 0, r
    assert json.loads(r.out) == to_dict(load_config(name))
    y = run_cli("config", "show", name)
    assert y.code == 0, y
    assert yaml.safe_load(y.out)["name"] == name


def test_cli_config_list_shows_every_preset(run_cli):
    r = run_cli("config", "list")
    assert r.code == 0, r
    lines = {line.split()[0]: line for line in r.out.splitlines() if line.strip()}
    for name in PRESETS:
        assert name in lines, f"`bridge config list` does not show {name}"
        assert load_config(name).description.split()[0] in lines[name]

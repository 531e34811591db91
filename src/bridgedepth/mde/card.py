"""The model card (``README.md``, Hugging Face style: YAML front matter + Markdown) written into every
checkpoint folder by :func:`bridgedepth.mde.model.save_model`, from its ``bridge.json``."""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_LICENSE = "apache-2.0"  # the code's licence; training data may carry its own terms (see Data)

_STAGES = {
    "teacher": "teacher: trained on synthetic RGB-D with ground truth (SSI + gradient matching)",
    "student-pseudo": "student, stage 1: teacher pseudo-labels on generated images",
    "student-hybrid": "student, stage 2: pseudo-labels + similarity-masked ground truth",
    "metric": "metric fine-tune (SiLog, metres)",
    "scale-head": "scale head on a frozen relative model (metres)",
    "untrained": "untrained (randomly initialised)",
}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render_card(meta: dict, params: int | None = None) -> str:
    extra = meta.get("extra") or {}
    stage = extra.get("stage")
    head = meta.get("head", "relative")
    metric = head == "metric" or "scale_head" in meta
    lic = extra.get("license", DEFAULT_LICENSE)
    front = ["---", f"license: {lic}", "library_name: transformers", "pipeline_tag: depth-estimation",
             "tags:", "- depth-estimation", "- bridgedepth", f"- {'metric' if metric else 'relative'}-depth", "---"]
    lines = [*front, "", f"# bridgedepth depth model ({meta.get('arch') or 'custom'}, {head} head)", ""]
    lines += ["## Output convention", ""]
    if head == "metric":
        lines.append("`predicted_depth` is **metric depth in metres** (larger = farther), "
                     f"at most {meta.get('max_depth')} m.")
    else:
        lines.append("`predicted_depth` is **relative disparity**: affine-invariant inverse depth (larger = "
                     "nearer; unknown scale and shift per image). Align it (least squares in disparity) before "
                     "comparing with metric depth.")
    if "scale_head" in meta:
        lines.append("A scale head (`scale_head.safetensors`) turns it into metres: "
                     "`bridge predict --metric`.")
    lines += ["", f"Input: RGB, ImageNet-normalised, shorter side {meta.get('input_size')} px (multiple of the "
              "patch size), as `bridgedepth.mde.predictor` prepares it.", ""]
    lines += ["## Training", "", f"- stage: {_STAGES.get(stage, stage or 'not recorded')}"]
    if params:
        lines.append(f"- parameters: {params / 1e6:.2f} M")
    t = (extra.get("config") or {}).get("train") or {}
    if t:
        lines.append(f"- steps {t.get('steps')}, batch {t.get('batch_size')}, lr {t.get('lr')}, "
                     f"crop {t.get('crop_size')}, seed {t.get('seed')}")
    lines += ["", "## Data", ""]
    data = extra.get("data") or []
    if data:
        lines += [f"- `{d.get('path')}` (target `{d.get('target')}`, weight {d.get('weight')})" for d in data]
    else:
        lines.append("- not recorded")
    lines += ["", "## Evaluation (the last one during training)", ""]
    ev = extra.get("eval")
    if ev and ev.get("metrics"):
        lines += [f"At step {ev.get('step')} on `{ev.get('data') or 'the validation set'}`:", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in ev["metrics"].items()]
    else:
        lines.append("No evaluation recorded. Run `bridge eval --model THIS_FOLDER --dataset ...`.")
    lines += ["", "## Use", "", "```python", "import bridgedepth", "res = bridgedepth.load(\"THIS_FOLDER\").predict(\"image.jpg\")",
              "res.values, res.kind  # float32 (H, W); 'disparity' or 'depth'", "```", "",
              "or `transformers.pipeline(\"depth-estimation\", model=\"THIS_FOLDER\")`.", "",
              f"Licence: {lic}.", ""]
    return "\n".join(lines)


def write_card(ckpt_dir, params: int | None = None) -> Path:
    d = Path(ckpt_dir)
    meta = json.loads((d / "bridge.json").read_text())
    out = d / "README.md"
    out.write_text(render_card(meta, params))
    return out

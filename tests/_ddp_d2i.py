"""Run under `accelerate launch --cpu --num_processes 2` by tests/test_d2i_scale.py: two reward
fine-tuning steps of tiny FLUX and tiny SD backends on 2 gloo processes. Each rank writes the checksum
of its final LoRA weights to OUT/<name>-rank<r>.txt. Usage: _ddp_d2i.py OUT FLUX_DIR SD_DIR TEACHER"""

import sys
from pathlib import Path

from bridgedepth.config import load_config
from bridgedepth.d2i.finetune import finetune
from bridgedepth.d2i.synthetic import toy_scenes

out, flux, sd, teacher = sys.argv[1:5]
common = ["device=cpu", "finetune.batch_size=1", "finetune.heldout=2", "finetune.sample_every=0",
          "finetune.save_every=0", "finetune.lora_rank=2", "finetune.lora_alpha=2", "finetune.lr=1e-2",
          "finetune.lora_targets=[to_q,to_k,to_v]", "finetune.open_shards=2"]
for name, d in (("flux", flux), ("sd", sd)):
    cfg = load_config("tiny", common)  # the model folders' own settings: 32 px, 3 steps
    s = finetune(cfg, d, teacher, toy_scenes(8, 32), Path(out) / name, steps=2, progress=False)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    (Path(out) / f"{name}-rank{rank}.txt").write_text(f"{s['lora_sha256']} {s['processes']}\n")

"""Run under torchrun by tests/test_train.py: the same 4-step training once uninterrupted and once
stopped after 2 steps and resumed, in two output folders (one launch, so the test pays the start-up of
the processes once). Usage: _ddp_resume.py OUT SRC GEN"""

import sys

from bridgedepth.config import load_config
from bridgedepth.mde.trainer import TrainData, train

out, src, gen = sys.argv[1:4]
cfg = load_config("tiny", ["train.stage=teacher", "train.steps=4", "model.name=micro", "train.crop_size=42",
                           "train.batch_size=2", "train.lr=1e-4", "device=cpu", "train.warmup_steps=0",
                           "data.num_workers=1", "data.shuffle_group=2"])
data = [TrainData(src, "gt", 1.0), TrainData(gen, "gt", 1.0)]
train(cfg, data, f"{out}/full", progress=False)
train(cfg, data, f"{out}/resumed", stop_after=2, progress=False)
train(cfg, data, f"{out}/resumed", progress=False)

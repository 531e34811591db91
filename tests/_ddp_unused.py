"""Run by test_train_data.py in a fresh interpreter: DDP with and without the frozen unused parameters.

Prints the results as JSON and leaves with os._exit: destroying a gloo process group whose reducer saw
a failed reduction can block forever in ~ProcessGroupGloo (seen once, hanging the whole test run)."""

import json
import os
import sys
import tempfile

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from bridgedepth.mde import build_model

unused = json.loads(sys.argv[1])
f = tempfile.NamedTemporaryFile(delete=False)
f.close()
dist.init_process_group("gloo", init_method=f"file://{f.name}", rank=0, world_size=1)
results = {}
for freeze in (False, True):
    model = build_model("micro", seed=0)
    if freeze:
        for n in unused:
            model.get_parameter(n).requires_grad_(False)
    ddp = DDP(model, find_unused_parameters=False)
    try:
        for _ in range(2):
            ddp(pixel_values=torch.randn(1, 3, 28, 28)).predicted_depth.sum().backward()
        results[str(freeze)] = "ok"
    except RuntimeError as e:
        results[str(freeze)] = str(e)
print(json.dumps(results), flush=True)
os.unlink(f.name)
os._exit(0)

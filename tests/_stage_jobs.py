"""Module-level stage functions for tests/test_stages_parallel.py (worker processes import them)."""

import json
import os
import time
from pathlib import Path


def timed(name: str, folder: str, sleep: float) -> dict:
    t0 = time.time()
    time.sleep(sleep)
    rec = {"name": name, "start": t0, "end": time.time(), "pid": os.getpid()}
    (Path(folder) / f"{name}.json").write_text(json.dumps(rec))
    return {"pid": rec["pid"]}


def failing(name: str) -> dict:
    raise ValueError(f"stage {name} failed on purpose")


def spin(name: str, seconds: float) -> dict:
    """Keep one core busy for ``seconds`` of CPU time."""
    t0 = time.process_time()
    n = 0
    while time.process_time() - t0 < seconds:
        n += 1
    return {"name": name, "loops": n}

"""Named, resumable stages of a long job (`bridge demo`, `bridge zoo build`).

A finished stage leaves a record (seconds, JSON summary) in ``stages.json``; a rerun skips it. Each
stage's own outputs are resumable too, so an interrupted stage continues where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class StageRecord:
    name: str
    seconds: float
    skipped: bool
    summary: dict = field(default_factory=dict)


class StageRunner:
    """Runs named stages once: a finished stage leaves a record in ``stages.json`` and is skipped on a
    rerun (its own outputs are resumable too, so an interrupted stage continues where it stopped)."""

    def __init__(self, out: Path, log: Callable[[str], None] = print):
        self.out = out
        self.path = out / "stages.json"
        self.log = log
        self.done: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.records: list[StageRecord] = []

    def run(self, name: str, fn: Callable[[], dict | None]) -> dict:
        if name in self.done:
            rec = self.done[name]
            self.log(f"[{name}] done already ({rec['seconds']:.0f} s): skipped")
            self.records.append(StageRecord(name, rec["seconds"], True, rec.get("summary", {})))
            return rec.get("summary", {})
        self.log(f"[{name}] running ...")
        t0 = time.perf_counter()
        summary = fn() or {}
        dt = time.perf_counter() - t0
        self.done[name] = {"seconds": dt, "summary": _jsonable(summary)}
        tmp = self.path.with_name("stages.json.tmp")
        tmp.write_text(json.dumps(self.done, indent=1))
        os.replace(tmp, self.path)
        self.records.append(StageRecord(name, dt, False, summary))
        self.log(f"[{name}] finished in {dt:.1f} s")
        return summary

    def timing_table(self) -> list[list]:
        rows = [[r.name, r.seconds, "skipped (done before)" if r.skipped else "ran"] for r in self.records]
        rows.append(["total", sum(r.seconds for r in self.records), ""])
        return rows


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)

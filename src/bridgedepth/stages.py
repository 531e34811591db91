"""Named, resumable stages of a long job (`bridge demo`, `bridge zoo build`).

A finished stage leaves a record (seconds, JSON summary) in ``stages.json``; a rerun skips it. Each
stage's own outputs are resumable too, so an interrupted stage continues where it stopped.
:meth:`StageRunner.run_parallel` runs a group of stages with dependencies between them, in order in
this process or side by side in worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
    overlapped: bool = False  # ran beside other stages (run_parallel): not added to the total
    cpu_seconds: float | None = None  # CPU time of this process and its finished children during it

    @property
    def cores_busy(self) -> float | None:
        """Average number of busy cores (CPU seconds over wall seconds): where it is well below the
        core count, the cores idle."""
        ok = self.cpu_seconds is not None and self.seconds >= 0.25  # shorter: clock granularity dominates
        return self.cpu_seconds / self.seconds if ok else None


@dataclass
class ParallelStage:
    """A stage for :meth:`StageRunner.run_parallel`: ``fn(*args)`` runs in a worker process (``fn`` a
    module-level function, ``args`` picklable); ``after`` names stages that must finish first."""

    name: str
    fn: Callable[..., dict | None]
    args: tuple = ()
    after: tuple[str, ...] = ()


class StageRunner:
    """Runs named stages once: a finished stage leaves a record in ``stages.json`` and is skipped on a
    rerun (its own outputs are resumable too, so an interrupted stage continues where it stopped)."""

    def __init__(self, out: Path, log: Callable[[str], None] = print):
        self.out = out
        self.path = out / "stages.json"
        self.log = log
        self.done: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.records: list[StageRecord] = []

    def run(self, name: str, fn: Callable[[], dict | None], outputs: tuple = (), inputs: tuple = ()) -> dict:
        """Run ``fn`` unless ``name`` has finished before. ``outputs``: the paths the stage makes;
        ``inputs``: the paths it reads (outputs of earlier stages). A finished stage runs again when one
        of its outputs is gone (deleted to rebuild it), or when one of its inputs was remade by a stage
        that finished after it (in this run or an interrupted earlier one: the records say so); in the
        second case its outputs inside this folder are removed first, so that they are made afresh from
        the new input rather than resumed."""
        rec = self.done.get(name)
        if rec is not None and "remaking" not in rec:
            stale = [Path(p) for p in inputs if self._remade_after(name, Path(p))]
            gone = [Path(p) for p in outputs if not Path(p).exists()]
            if stale:
                self.log(f"[{name}] done before, but its input {stale[0]} was remade since: running it again")
                base = self.out.resolve()
                for p in outputs:
                    q = Path(p).resolve()
                    if q.exists() and base in q.parents:  # never anything outside this folder
                        self.log(f"[{name}] removing {p}: made from the old input")
                        shutil.rmtree(q) if q.is_dir() else q.unlink()
                rec["remaking"] = [self._rel(p) for p in outputs]
            elif gone:
                self.log(f"[{name}] done before, but {gone[0]} is missing: running it again")
                rec["remaking"] = [self._rel(p) for p in gone]
            if stale or gone:
                self._write()  # remembered until the stage finishes: an interruption does not lose it
        if rec is not None and "remaking" not in rec:
            self.log(f"[{name}] done already ({rec['seconds']:.0f} s): skipped")
            self.records.append(StageRecord(name, rec["seconds"], True, rec.get("summary", {}),
                                            bool(rec.get("overlapped")), rec.get("cpu_seconds")))
            return rec.get("summary", {})
        self.log(f"[{name}] running ...")
        t0, c0 = time.perf_counter(), _cpu_seconds()
        summary = fn() or {}
        dt = time.perf_counter() - t0
        self._record(name, dt, summary, cpu=_cpu_seconds() - c0, remade=(rec or {}).get("remaking"))
        self.log(f"[{name}] finished in {dt:.1f} s")
        return summary

    def _rel(self, p) -> str:
        """A path as recorded: relative to this folder when inside it."""
        q, base = Path(p).resolve(), self.out.resolve()
        return str(q.relative_to(base)) if base in q.parents else str(q)

    def _remade_after(self, name: str, path: Path) -> bool:
        """Whether a stage recorded after ``name`` remade ``path`` (or a folder inside or around it)."""
        names = list(self.done)
        q = path.resolve()
        for later in names[names.index(name) + 1:]:
            for r in self.done[later].get("remade", []):
                r = (self.out / r).resolve()
                if q == r or r in q.parents or q in r.parents:
                    return True
        return False

    def _record(self, name: str, dt: float, summary: dict, overlapped: bool = False, cpu: float | None = None,
                remade: list | None = None) -> None:
        rec = StageRecord(name, dt, False, summary, overlapped, cpu)
        self.done.pop(name, None)  # a stage that ran again goes to the end: after the stages that read it
        self.done[name] = {"seconds": dt, "summary": _jsonable(summary), **({"overlapped": True} if overlapped else {}),
                           **({"cpu_seconds": cpu, "cores_busy": rec.cores_busy} if cpu is not None else {}),
                           **({"remade": remade} if remade else {})}
        self._write()
        self.records.append(rec)

    def _write(self) -> None:
        tmp = self.path.with_name("stages.json.tmp")
        tmp.write_text(json.dumps(self.done, indent=1))
        os.replace(tmp, self.path)

    def run_parallel(self, group: str, stages: list[ParallelStage], workers: int,
                     heartbeat: float | None = 60.0) -> dict[str, dict]:
        """Run ``stages`` (skipping finished ones) on ``workers`` spawned processes, each stage as soon as
        the stages it comes ``after`` have finished; ``workers <= 1`` runs them in order in this process.
        Worker processes show no progress bars; every ``heartbeat`` seconds (None: never) a line says
        what is running and for how long.
        Each stage is recorded when it finishes (an interrupted group resumes with the missing ones);
        the group's wall time is recorded as ``group`` (its stages are marked as overlapped, so the
        timing total counts the wall time once). A failing stage raises after the running ones end."""
        out: dict[str, dict] = {}
        todo: list[ParallelStage] = []
        for st in stages:
            if st.name in self.done:
                out[st.name] = self.run(st.name, lambda: None)  # logs "skipped", keeps the record
            else:
                todo.append(st)
        known = {st.name for st in stages} | set(self.done)
        for st in todo:
            missing = [a for a in st.after if a not in known]
            if missing:
                raise ValueError(f"stage {st.name!r} comes after unknown stages {missing}")
        if not todo:
            if group in self.done:
                self.run(group, lambda: None)  # its wall time, for the timing total
            return out
        workers = max(1, int(workers))
        t_group, c_group = time.perf_counter(), _cpu_seconds()
        if workers == 1 or len(todo) == 1:
            finished, pending = set(self.done), list(todo)
            while pending:  # in list order, but never before what a stage comes after
                st = next((s for s in pending if all(a in finished for a in s.after)), None)
                if st is None:
                    raise ValueError(f"stages {[s.name for s in pending]} wait on each other")
                pending.remove(st)
                out[st.name] = self.run(st.name, lambda st=st: st.fn(*st.args))
                finished.add(st.name)
        else:
            import multiprocessing as mp

            finished = set(self.done)
            pending = list(todo)
            running: dict = {}
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn")) as ex:
                try:
                    while pending or running:
                        for st in list(pending):
                            if len(running) >= workers:
                                break
                            if all(a in finished for a in st.after):
                                self.log(f"[{st.name}] running (worker process) ...")
                                running[ex.submit(st.fn, *st.args)] = (st, time.perf_counter())
                                pending.remove(st)
                        if not running:  # a cycle among the remaining stages
                            raise ValueError(f"stages {[s.name for s in pending]} wait on each other")
                        done_now, _ = wait(running, timeout=heartbeat, return_when=FIRST_COMPLETED)
                        if not done_now:
                            now = time.perf_counter()
                            busy = ", ".join(f"{st.name} for {now - t0:.0f} s" for st, t0 in running.values())
                            self.log(f"[{group}] {len(finished & {s.name for s in todo})} of {len(todo)} "
                                     f"done; running: {busy}")
                        for f in done_now:
                            st, t0 = running.pop(f)
                            summary = f.result() or {}
                            dt = time.perf_counter() - t0
                            self._record(st.name, dt, summary, overlapped=True)
                            finished.add(st.name)
                            out[st.name] = summary
                            self.log(f"[{st.name}] finished in {dt:.1f} s")
                except BaseException:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise
            wall = time.perf_counter() - t_group  # the pool has joined its workers: their CPU time is in
            self._record(group, wall, {"stages": [st.name for st in todo], "workers": workers},
                         cpu=_cpu_seconds() - c_group)
            self.log(f"[{group}] {len(todo)} stages on {workers} processes in {wall:.1f} s")
        return out

    def timing_table(self) -> list[list]:
        """Rows ``[stage, seconds, cores busy (CPU s / wall s, None where unknown), status]`` and a
        ``total`` row (wall time of the stages that did not overlap, their average busy cores)."""
        def busy(r):
            b = r.cores_busy
            return round(b, 2) if b is not None else None

        rows = [[r.name, r.seconds, busy(r), "skipped (done before)" if r.skipped else
                 ("ran (beside others)" if r.overlapped else "ran")] for r in self.records]
        counted = [r for r in self.records if not r.overlapped]
        wall = sum(r.seconds for r in counted)
        cpu = [r.cpu_seconds for r in counted if r.cpu_seconds is not None]
        total_busy = round(sum(cpu) / wall, 2) if wall > 0 and len(cpu) == len(counted) else None
        rows.append(["total", wall, total_busy, ""])
        return rows


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for
    (render workers, DataLoader workers, spawned stage workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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

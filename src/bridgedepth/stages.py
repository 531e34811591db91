"""Named, resumable stages of a long job (`bridge demo`, `bridge zoo build`).

A finished stage leaves a record (seconds, JSON summary) in ``stages.json``; a rerun skips it. Each
stage's own outputs are resumable too, so an interrupted stage continues where it stopped.
:meth:`StageRunner.run_parallel` runs a group of stages with dependencies between them, in order in
this process or side by side in worker processes.

A finished stage runs again, rather than being skipped, when what it made can no longer be trusted:

- one of its ``outputs`` is gone (deleted by the user to rebuild it);
- one of its ``inputs`` was remade by a stage that finished after it;
- its ``settings`` (the configuration values it reads) differ from those it was made with.

In the last two cases its outputs inside the runner's folder are removed first, so that it starts
afresh instead of resuming from work made from the old input or with the old settings; the stages
that read those outputs are then remade in turn.

The runner also stops, with :class:`SourceChanged`, before a stage that would run on other code than
the stages before it: bridgedepth's own source files (``.py``, ``.yaml``) are compared with what they
were when the runner was made, before every stage and again in every worker process as the stage
starts (a worker imports the package afresh). A source file edited under a running ``bridge demo``
once made its evaluation stage import half old, half new code.
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

from .config import changed_settings, describe_changes
from .errors import BridgeError


SOURCE_ROOT = Path(__file__).resolve().parent  # the bridgedepth package
SOURCE_SUFFIXES = (".py", ".yaml")


class SourceChanged(BridgeError, RuntimeError):
    """bridgedepth's source files changed while a staged job was running (the CLI prints it, exit 2)."""


def source_state(root: Path = SOURCE_ROOT) -> dict[str, tuple[int, int]]:
    """``{relative path: (mtime in ns, size)}`` of the source files under ``root`` (a stat per file:
    about 1 ms for the package)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        for f in filenames:
            if f.endswith(SOURCE_SUFFIXES):
                q = os.path.join(dirpath, f)
                try:
                    st = os.stat(q)
                except OSError:
                    continue
                out[os.path.relpath(q, root)] = (st.st_mtime_ns, st.st_size)
    return out


def check_source(expected: dict, root: Path = SOURCE_ROOT, before: str = "") -> None:
    """Raise :class:`SourceChanged` naming the files that differ from ``expected`` (see
    :func:`source_state`); ``before`` names the stage that was about to run."""
    now = source_state(root)
    if now == expected:
        return
    changed = sorted(k for k in set(now) | set(expected) if now.get(k) != expected.get(k))
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    where = f" (stopped before {before})" if before else ""
    raise SourceChanged(
        f"bridgedepth's source changed while this run was going: {', '.join(changed[:3])}{more} under {root}"
        f"{where}. The stages so far ran the old code and the next would import the new, mixing two versions "
        "in one result. Run the same command again to go on with the new code (finished stages are kept; "
        "remake any whose code changed, e.g. by deleting its output).")


def _checked(expected: dict, root: str, name: str, fn: Callable[..., dict | None], *args) -> dict | None:
    """A worker process's stage: ``fn(*args)`` after checking that the source it imported is the one
    the runner started with."""
    check_source(expected, Path(root), before=name)
    return fn(*args)


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
    # as for StageRunner.run; an input made by a stage of the same group must come from one it is `after`
    outputs: tuple = ()
    inputs: tuple = ()
    settings: dict | None = None


class StageRunner:
    """Runs named stages once: a finished stage leaves a record in ``stages.json`` and is skipped on a
    rerun (its own outputs are resumable too, so an interrupted stage continues where it stopped)."""

    def __init__(self, out: Path, log: Callable[[str], None] = print, source_root: Path | None = SOURCE_ROOT):
        self.out = out
        self.path = out / "stages.json"
        self.log = log
        self.done: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.records: list[StageRecord] = []
        # the source the stages must all run (None: not watched); see the module doc
        self.source_root = None if source_root is None else Path(source_root)
        self.source = None if source_root is None else source_state(self.source_root)

    def _check_source(self, name: str) -> None:
        if self.source is not None:
            check_source(self.source, self.source_root, before=name)

    def run(self, name: str, fn: Callable[[], dict | None], outputs: tuple = (), inputs: tuple = (),
            settings: dict | None = None) -> dict:
        """Run ``fn`` unless ``name`` has finished before. ``outputs``: the paths the stage makes;
        ``inputs``: the paths it reads (outputs of earlier stages); ``settings``: the configuration
        values it reads (flat ``{key: value}``, JSON-able). A finished stage runs again when one of its
        outputs is gone (deleted to rebuild it), when one of its inputs was remade by a stage that
        finished after it (in this run or an interrupted earlier one: the records say so), or when its
        settings differ from those recorded; in the last two cases its outputs inside this folder are
        removed first, so that they are made afresh rather than resumed."""
        if not self._needs_run(name, outputs, inputs, settings):
            return self._skip(name)
        self._check_source(name)
        rec = self.done.get(name)
        self.log(f"[{name}] running ...")
        t0, c0 = time.perf_counter(), _cpu_seconds()
        summary = fn() or {}
        dt = time.perf_counter() - t0
        self._record(name, dt, summary, cpu=_cpu_seconds() - c0, remade=(rec or {}).get("remaking"),
                     settings=settings)
        self.log(f"[{name}] finished in {dt:.1f} s")
        return summary

    def adopt_settings(self, name: str, settings: dict) -> bool:
        """Give a record from before settings were recorded the settings it was made with (read by the
        caller from the configuration saved with that build), so that :meth:`run` can compare them.
        Whether it did (False: no such record, or it has its settings)."""
        rec = self.done.get(name)
        if rec is not None and "settings" not in rec:
            rec["settings"] = _jsonable(settings)
            self._write()
            return True
        return False

    def rename(self, match: Callable[[str], bool], name: str) -> None:
        """Give the record of a stage whose name varies with its settings (``match`` tells its names
        apart from the others') the name it has now, in its place among the records, so that
        :meth:`run` compares its settings instead of taking it for a new stage beside the old one's
        outputs. Where records under several such names exist, the one named ``name`` stays (or else
        the latest) and the others go."""
        found = [n for n in self.done if match(n)]
        if not found or found == [name]:
            return
        keep = name if name in found else found[-1]
        self.done = {(name if n == keep else n): r for n, r in self.done.items() if n == keep or n not in found}
        self._write()

    def recorded_settings(self, name: str) -> dict | None:
        """The settings the finished stage ``name`` was recorded with (None: no record, or none kept)."""
        rec = self.done.get(name)
        return None if rec is None or "settings" not in rec else dict(rec["settings"])

    def _skip(self, name: str) -> dict:
        rec = self.done[name]
        self.log(f"[{name}] done already ({rec['seconds']:.0f} s): skipped")
        self.records.append(StageRecord(name, rec["seconds"], True, rec.get("summary", {}),
                                        bool(rec.get("overlapped")), rec.get("cpu_seconds")))
        return rec.get("summary", {})

    def _remove_outputs(self, name: str, outputs: tuple, why: str) -> None:
        base = self.out.resolve()
        for p in outputs:
            q = Path(p).resolve()
            if q.exists() and base in q.parents:  # never anything outside this folder
                self.log(f"[{name}] removing {p}: {why}")
                shutil.rmtree(q) if q.is_dir() else q.unlink()

    def _verdict(self, name: str, outputs: tuple, inputs: tuple, settings: dict | None) -> tuple[str, str] | None:
        """Why ``name`` must run, without changing anything: ``(kind, detail)`` with kind ``new``,
        ``interrupted`` (a rerun that did not finish), ``changed`` (other settings), ``stale`` (an input
        remade since) or ``gone`` (an output missing); None when its record can be trusted."""
        rec = self.done.get(name)
        if rec is None:
            return "new", ""
        if "remaking" in rec:
            return "interrupted", ""
        if settings is not None and "settings" in rec:
            changes = changed_settings(rec["settings"], _jsonable(settings))
            if changes:
                return "changed", describe_changes(changes, limit=3)
        stale = next((p for p in inputs if self._remade_after(name, Path(p))), None)
        if stale is not None:
            return "stale", str(stale)
        gone = next((p for p in outputs if not Path(p).exists()), None)
        return ("gone", str(gone)) if gone is not None else None

    def _needs_run(self, name: str, outputs: tuple, inputs: tuple, settings: dict | None) -> bool:
        """Whether ``name`` must run (see :meth:`run`); removes what must be made afresh and remembers
        in ``stages.json`` that the stage is being remade, so that an interruption does not lose it."""
        verdict = self._verdict(name, outputs, inputs, settings)
        rec = self.done.get(name)
        want = _jsonable(settings) if settings is not None else None
        if verdict is None:
            if want is not None and "settings" not in rec:
                rec["settings"] = want  # a record from before settings were kept, with no saved configuration
                self._write()
            return False
        kind, detail = verdict
        if kind == "new":
            return True
        if kind == "interrupted":
            if want is not None and changed_settings(rec.get("remaking_settings", want), want):
                # the settings changed again since that rerun began: what it made so far is stale too
                self._remove_outputs(name, outputs, "made with other settings")
                rec["remaking"], rec["remaking_settings"] = [self._rel(p) for p in outputs], want
                self._write()
            return True
        if kind == "changed":
            self.log(f"[{name}] done before with other settings ({detail}): running it again")
            self._remove_outputs(name, outputs, "made with other settings")
        elif kind == "stale":
            self.log(f"[{name}] done before, but its input {detail} was remade since: running it again")
            self._remove_outputs(name, outputs, "made from the old input")
        else:
            self.log(f"[{name}] done before, but {detail} is missing: running it again")
        gone_only = [p for p in outputs if not Path(p).exists()]
        rec["remaking"] = [self._rel(p) for p in (gone_only if kind == "gone" else outputs)]
        if want is not None:
            rec["remaking_settings"] = want
        self._write()  # remembered until the stage finishes: an interruption does not lose it
        return True

    def _may_run(self, stages: list[ParallelStage]) -> set[str]:
        """Names of ``stages`` that may run (without deciding or changing anything): those with a
        :meth:`_verdict`, and those after a stage that may run."""
        out = {st.name for st in stages if self._verdict(st.name, st.outputs, st.inputs, st.settings)}
        grew = True
        while grew:
            grew = False
            for st in stages:
                if st.name not in out and any(a in out for a in st.after):
                    out.add(st.name)
                    grew = True
        return out

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
                remade: list | None = None, settings: dict | None = None) -> None:
        rec = StageRecord(name, dt, False, summary, overlapped, cpu)
        self.done.pop(name, None)  # a stage that ran again goes to the end: after the stages that read it
        self.done[name] = {"seconds": dt, "summary": _jsonable(summary), **({"overlapped": True} if overlapped else {}),
                           **({"cpu_seconds": cpu, "cores_busy": rec.cores_busy} if cpu is not None else {}),
                           **({"remade": remade} if remade else {}),
                           **({"settings": _jsonable(settings)} if settings is not None else {})}
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
        Whether a finished stage runs again (its ``outputs``, ``inputs`` and ``settings``, as for
        :meth:`run`) is decided when the stages it comes after have settled, so that a stage reading a
        rerun stage's output runs again too.
        Worker processes show no progress bars; every ``heartbeat`` seconds (None: never) a line says
        what is running and for how long.
        Each stage is recorded when it finishes (an interrupted group resumes with the missing ones);
        the group's wall time is recorded as ``group`` (its stages are marked as overlapped, so the
        timing total counts the wall time once). A failing stage raises after the running ones end."""
        out: dict[str, dict] = {}
        names = {st.name for st in stages}
        before = set(self.done) - names  # finished stages outside this group
        for st in stages:
            missing = [a for a in st.after if a not in names and a not in before]
            if missing:
                raise ValueError(f"stage {st.name!r} comes after unknown stages {missing}")
        may = self._may_run(stages)
        if not may:
            for st in stages:
                out[st.name] = self._skip(st.name)
            if group in self.done:
                self._skip(group)  # its wall time, for the timing total
            return out
        workers = max(1, int(workers))
        t_group, c_group = time.perf_counter(), _cpu_seconds()
        finished, pending = set(before), list(stages)
        ran: list[str] = []

        def ready(st: ParallelStage) -> bool:
            return all(a in finished for a in st.after)

        if workers == 1 or len(may) == 1:
            while pending:  # in list order, but never before what a stage comes after
                st = next((s for s in pending if ready(s)), None)
                if st is None:
                    raise ValueError(f"stages {[s.name for s in pending]} wait on each other")
                pending.remove(st)
                out[st.name] = self.run(st.name, lambda st=st: st.fn(*st.args), st.outputs, st.inputs, st.settings)
                if not self.records[-1].skipped:
                    ran.append(st.name)
                finished.add(st.name)
        else:
            import multiprocessing as mp

            running: dict = {}
            with ProcessPoolExecutor(min(workers, len(may)), mp_context=mp.get_context("spawn")) as ex:
                try:
                    while pending or running:
                        for st in list(pending):
                            if len(running) >= workers:
                                break
                            if not ready(st):
                                continue
                            pending.remove(st)
                            if not self._needs_run(st.name, st.outputs, st.inputs, st.settings):
                                out[st.name] = self._skip(st.name)
                                finished.add(st.name)
                                continue
                            self._check_source(st.name)
                            self.log(f"[{st.name}] running (worker process) ...")
                            job = (ex.submit(_checked, self.source, str(self.source_root), st.name, st.fn, *st.args)
                                   if self.source is not None else ex.submit(st.fn, *st.args))
                            running[job] = (st, time.perf_counter())
                        if not running:
                            if pending and not any(ready(s) for s in pending):  # a cycle among the rest
                                raise ValueError(f"stages {[s.name for s in pending]} wait on each other")
                            continue
                        done_now, _ = wait(running, timeout=heartbeat, return_when=FIRST_COMPLETED)
                        if not done_now:
                            now = time.perf_counter()
                            busy = ", ".join(f"{st.name} for {now - t0:.0f} s" for st, t0 in running.values())
                            self.log(f"[{group}] {len(finished & names)} of {len(stages)} "
                                     f"done; running: {busy}")
                        for f in done_now:
                            st, t0 = running.pop(f)
                            summary = f.result() or {}
                            dt = time.perf_counter() - t0
                            self._record(st.name, dt, summary, overlapped=True,
                                         remade=self.done.get(st.name, {}).get("remaking"), settings=st.settings)
                            finished.add(st.name)
                            ran.append(st.name)
                            out[st.name] = summary
                            self.log(f"[{st.name}] finished in {dt:.1f} s")
                except BaseException:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise
        if workers > 1 and len(may) > 1 and ran:
            wall = time.perf_counter() - t_group  # the pool has joined its workers: their CPU time is in
            self._record(group, wall, {"stages": ran, "workers": workers}, cpu=_cpu_seconds() - c_group)
            self.log(f"[{group}] {len(ran)} stages on {workers} processes in {wall:.1f} s")
        elif group in self.done:
            self._skip(group)
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

"""StageRunner.run_parallel: stages in worker processes, in dependency order, resumable, failing loudly."""

import json
import os
import sys
from pathlib import Path

import pytest

from bridgedepth.stages import ParallelStage, StageRunner

sys.path.insert(0, str(Path(__file__).parent))
import _stage_jobs as jobs  # noqa: E402


def _stages(folder):
    f = str(folder)
    return [ParallelStage("a", jobs.timed, ("a", f, 0.6)),
            ParallelStage("b", jobs.timed, ("b", f, 0.0), after=("a",)),
            ParallelStage("c", jobs.timed, ("c", f, 0.3))]


def test_run_parallel_respects_dependencies_uses_workers_and_resumes(tmp_path):
    logs = []
    r = StageRunner(tmp_path, logs.append)
    out = r.run_parallel("group", _stages(tmp_path), workers=2)
    assert set(out) == {"a", "b", "c"}
    rec = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc"}
    assert rec["b"]["start"] >= rec["a"]["end"]  # b waited for a
    assert rec["c"]["start"] < rec["a"]["end"]  # c ran beside a
    assert os.getpid() not in {rec[n]["pid"] for n in "abc"}  # in worker processes
    done = json.loads((tmp_path / "stages.json").read_text())
    assert {"a", "b", "c", "group"} <= set(done) and done["a"]["overlapped"]
    total = r.timing_table()[-1]
    assert total[0] == "total" and total[1] == pytest.approx(done["group"]["seconds"])  # wall time counted once
    assert total[1] < done["a"]["seconds"] + done["b"]["seconds"] + done["c"]["seconds"]

    for n in "abc":
        (tmp_path / f"{n}.json").unlink()
    again = StageRunner(tmp_path, logs.append)
    again.run_parallel("group", _stages(tmp_path), workers=2)
    assert not any((tmp_path / f"{n}.json").exists() for n in "abc")  # nothing reran
    assert again.timing_table()[-1][1] == pytest.approx(done["group"]["seconds"])

    # one finished stage forgotten: only it reruns, after its dependency (already done)
    d = json.loads((tmp_path / "stages.json").read_text())
    del d["b"]
    (tmp_path / "stages.json").write_text(json.dumps(d))
    StageRunner(tmp_path, logs.append).run_parallel("group", _stages(tmp_path), workers=2)
    assert (tmp_path / "b.json").exists() and not (tmp_path / "a.json").exists()


def test_run_parallel_one_worker_runs_in_process_and_errors_propagate(tmp_path):
    r = StageRunner(tmp_path, lambda m: None)
    out = r.run_parallel("group", _stages(tmp_path), workers=1)
    assert {v["pid"] for v in out.values()} == {os.getpid()}
    r2 = StageRunner(tmp_path / "x", lambda m: None)
    (tmp_path / "x").mkdir()
    bad = [ParallelStage("ok", jobs.timed, ("ok", str(tmp_path / "x"), 0.0)),
           ParallelStage("bad", jobs.failing, ("bad",))]
    with pytest.raises(ValueError, match="on purpose"):
        r2.run_parallel("g", bad, workers=2)
    rec = tmp_path / "x" / "stages.json"  # "ok" is recorded only if it finished before "bad" failed
    assert not rec.exists() or "bad" not in json.loads(rec.read_text())
    # dependency order holds in-process too: "b" is listed first but comes after "a"
    order = StageRunner(tmp_path / "y", lambda m: None)
    (tmp_path / "y").mkdir()
    res = order.run_parallel("g", [ParallelStage("b", jobs.timed, ("b", str(tmp_path / "y"), 0.0), after=("a",)),
                                   ParallelStage("a", jobs.timed, ("a", str(tmp_path / "y"), 0.0))], workers=1)
    assert list(res) == ["a", "b"]
    for w in (1, 2):
        cyc = [ParallelStage("p", jobs.timed, ("p", str(tmp_path), 0.0), after=("q",)),
               ParallelStage("q", jobs.timed, ("q", str(tmp_path), 0.0), after=("p",))]
        with pytest.raises(ValueError, match="wait on each other"):
            StageRunner(tmp_path / f"c{w}", lambda m: None).run_parallel("g", cyc, workers=w)
    with pytest.raises(ValueError, match="unknown"):
        r2.run_parallel("g", [ParallelStage("z", jobs.timed, ("z", str(tmp_path), 0.0), after=("nope",))], 2)


def test_stage_records_cpu_time_and_busy_cores(tmp_path):
    """stages.json and the timing table say where the cores idle: CPU seconds of the stage (this
    process plus its finished children, worker processes included) over its wall seconds."""
    import time

    r = StageRunner(tmp_path, lambda m: None)
    r.run("sleep", lambda: time.sleep(0.4))
    r.run("spin", lambda: jobs.spin("spin", 0.4))
    r.run_parallel("group", [ParallelStage("w1", jobs.spin, ("w1", 0.4)),
                             ParallelStage("w2", jobs.spin, ("w2", 0.4))], workers=2)
    done = json.loads((tmp_path / "stages.json").read_text())
    assert done["sleep"]["cores_busy"] < 0.3
    assert done["spin"]["cpu_seconds"] >= 0.35 and done["spin"]["cores_busy"] > 0.3
    assert done["group"]["cpu_seconds"] >= 0.7  # both workers' CPU time, counted once the pool joined them
    assert "cpu_seconds" not in done["w1"]  # overlapped stages in workers: only their group is accounted
    table = {row[0]: row for row in r.timing_table()}
    assert table["spin"][2] == pytest.approx(done["spin"]["cores_busy"], abs=0.01)
    assert table["w1"][2] is None and table["total"][2] is not None
    # a rerun skips the stage and shows its recorded figure
    r2 = StageRunner(tmp_path, lambda m: None)
    r2.run("spin", lambda: None)
    assert r2.timing_table()[0][2] == table["spin"][2]


def test_run_parallel_says_what_is_running_while_it_waits(tmp_path):
    """Worker processes show no progress bars, so the runner logs a heartbeat line while it waits."""
    logs = []
    f = str(tmp_path)
    StageRunner(tmp_path, logs.append).run_parallel(
        "group", [ParallelStage("slow", jobs.timed, ("slow", f, 3.0)), ParallelStage("quick", jobs.timed, ("quick", f, 0.0))],
        workers=2, heartbeat=0.3)
    beats = [m for m in logs if m.startswith("[group]") and "running:" in m]
    assert beats and any("slow for" in m for m in beats)
    assert any("1 of 2 done" in m for m in beats)  # quick finished first, slow still going


def test_a_deleted_output_is_rebuilt_and_only_its_readers_are_made_afresh(tmp_path):
    """`rm -r runs/zoo/d2i`, then the same `bridge zoo build`: the D2I stage runs again, the stages that
    read the D2I remove what they made from the old one and run again, the others stay skipped."""
    made = []
    a, b, c, d = (tmp_path / n for n in "abcd")

    def stage(name, path):
        def fn():
            made.append(name)
            path.mkdir()
            (path / "made").write_text(name)
            return {"name": name}
        return fn

    plan = [("1", a, ()), ("2", b, (a,)), ("3", c, ()), ("4", d, (b, c))]  # 4 reads 2 and 3; 3 reads nothing

    def build(log):
        r = StageRunner(tmp_path, log=log)
        for n, p, ins in plan:
            r.run(n, stage(n, p), outputs=(p,), inputs=ins)

    build(lambda m: None)
    assert made == ["1", "2", "3", "4"]
    build(lambda m: None)
    assert made == ["1", "2", "3", "4"]  # nothing missing: all skipped
    import shutil

    shutil.rmtree(b)
    made.clear()
    lines = []
    build(lines.append)
    assert made == ["2", "4"]  # 1 and 3 skipped; 4 read the rebuilt 2
    assert any("b is missing: running it again" in m for m in lines), lines
    assert any(m.startswith("[4] done before, but its input") and "remade since" in m for m in lines), lines
    assert any(m.startswith("[4] removing") for m in lines), lines  # made afresh: its old folder was removed
    assert list(json.loads((tmp_path / "stages.json").read_text())) == ["1", "3", "2", "4"]
    build(lambda m: None)
    assert made == ["2", "4"]  # settled: nothing runs again

    # interrupted after the rebuild and before its reader: the next run still remakes the reader
    shutil.rmtree(b)
    made.clear()
    r = StageRunner(tmp_path, log=lambda m: None)
    r.run("1", stage("1", a), outputs=(a,))
    r.run("2", stage("2", b), outputs=(b,), inputs=(a,))  # ... and the job stops here
    build(lambda m: None)
    assert made == ["2", "4"]


def test_a_rebuild_never_removes_outputs_outside_the_folder(tmp_path):
    out, outside = tmp_path / "build", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("not the runner's")
    r = StageRunner(out, log=lambda m: None)
    r.run("1", lambda: (out / "a").mkdir(), outputs=(out / "a",))
    r.run("2", lambda: (out / "b").write_text("x"), outputs=(out / "b", outside), inputs=(out / "a",))
    (out / "a").rmdir()
    r2 = StageRunner(out, log=lambda m: None)
    r2.run("1", lambda: (out / "a").mkdir(), outputs=(out / "a",))
    r2.run("2", lambda: (out / "b").write_text("y"), outputs=(out / "b", outside), inputs=(out / "a",))
    assert (out / "b").read_text() == "y" and (outside / "keep.txt").exists()


def test_other_settings_remake_the_stage_and_its_readers_only(tmp_path):
    """`bridge zoo build --set zoo.d2i_steps=...` in the same folder: the stage reading that setting
    starts afresh (its old checkpoints removed, not resumed), the stages reading its output follow, the
    others stay skipped; an interrupted rerun whose settings change again starts afresh again."""
    made = []
    a, b, c = (tmp_path / n for n in "abc")

    def stage(name, path):
        def fn():
            made.append(name)
            path.mkdir(exist_ok=True)
            (path / name).write_text(name)
        return fn

    def build(steps, log=lambda m: None, stop_after=None):
        r = StageRunner(tmp_path, log=log)
        r.run("1", stage("1", a), outputs=(a,), settings={"seed": 0})
        if stop_after == "1":
            return
        r.run("2", stage("2", b), outputs=(b,), inputs=(a,), settings={"seed": 0, "steps": steps})
        r.run("3", stage("3", c), outputs=(c,), inputs=(b,), settings={})

    build(10)
    build(10)
    assert made == ["1", "2", "3"]
    (b / "checkpoint").write_text("from 10 steps")
    lines: list[str] = []
    made.clear()
    build(20, lines.append)
    assert made == ["2", "3"]
    assert any(m.startswith("[2] done before with other settings (steps: 10 -> 20)") for m in lines), lines
    assert any(m.startswith("[2] removing") for m in lines) and not (b / "checkpoint").exists()
    assert any(m.startswith("[3] done before, but its input") for m in lines), lines
    assert json.loads((tmp_path / "stages.json").read_text())["2"]["settings"] == {"seed": 0, "steps": 20}
    made.clear()
    build(20)
    assert made == []

    # a rerun with other settings is interrupted; the next run has yet other settings: afresh again
    r = StageRunner(tmp_path, log=lambda m: None)
    assert r._needs_run("2", (b,), (a,), {"seed": 0, "steps": 30})  # what build(30) decides first ...
    assert not b.exists()  # its old output removed before it starts
    b.mkdir()
    (b / "checkpoint").write_text("from 30 steps")  # ... it starts, writes a checkpoint, is stopped
    lines.clear()
    build(40, lines.append)
    assert not (b / "checkpoint").exists() and made == ["2", "3"]
    assert json.loads((tmp_path / "stages.json").read_text())["2"]["settings"]["steps"] == 40

    # a record from before settings were kept: adopted from the old configuration, then compared
    d = json.loads((tmp_path / "stages.json").read_text())
    del d["2"]["settings"]
    (tmp_path / "stages.json").write_text(json.dumps(d))
    r = StageRunner(tmp_path, log=lambda m: None)
    r.adopt_settings("2", {"seed": 0, "steps": 40})
    r.adopt_settings("nope", {"x": 1})  # no record: nothing to adopt
    made.clear()
    build(40)
    assert made == []
    build(50)
    assert made == ["2", "3"]


def test_run_parallel_decides_a_stage_after_what_it_comes_after(tmp_path):
    """The demo's rows: deleting the row others start from retrains it and the rows initialised from it,
    in worker processes as in one; a row with other settings retrains alone."""
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        f = str(folder)

        def stages(steps=1):
            return [ParallelStage("base", jobs.timed, ("base", f, 0.0), outputs=(folder / "base.json",)),
                    ParallelStage("tune", jobs.timed, ("tune", f, 0.0), after=("base",),
                                  outputs=(folder / "tune.json",), inputs=(folder / "base.json",)),
                    ParallelStage("other", jobs.timed, ("other", f, 0.0), outputs=(folder / "other.json",),
                                  settings={"steps": steps})]

        r = StageRunner(folder, lambda m: None)
        r.run_parallel("g", stages(), workers)
        first = {n: json.loads((folder / f"{n}.json").read_text())["start"] for n in ("base", "tune", "other")}
        (folder / "base.json").unlink()
        lines: list[str] = []
        StageRunner(folder, lines.append).run_parallel("g", stages(), workers)
        now = {n: json.loads((folder / f"{n}.json").read_text())["start"] for n in ("base", "tune", "other")}
        assert now["base"] > first["base"] and now["tune"] > first["tune"] and now["other"] == first["other"]
        assert any(m.startswith("[tune] done before, but its input") for m in lines), lines
        StageRunner(folder, lambda m: None).run_parallel("g", stages(steps=2), workers)
        last = {n: json.loads((folder / f"{n}.json").read_text())["start"] for n in ("base", "tune", "other")}
        assert last["other"] > now["other"] and last["base"] == now["base"] and last["tune"] == now["tune"]


def test_a_setting_added_by_a_later_version_remakes_nothing(tmp_path):
    made = []
    r = StageRunner(tmp_path, log=lambda m: None)
    r.run("1", lambda: made.append(1), outputs=(), settings={"seed": 0})
    r2 = StageRunner(tmp_path, log=lambda m: None)
    r2.run("1", lambda: made.append(2), outputs=(), settings={"seed": 0, "added_later": 5})
    assert made == [1]
    r2.run("1", lambda: made.append(3), outputs=(), settings={"seed": 1, "added_later": 5})
    assert made == [1, 3]


def test_a_stage_named_by_its_settings_keeps_one_record_in_its_place(tmp_path):
    """The demo's D2I fine-tune is named by its reward weights: a rerun with other weights renames the
    old record (kept in its place, so that what ran after it still counts as later) and then remakes
    the stage for its changed settings, instead of running a second stage beside the old output."""
    made = []
    out = tmp_path / "ft"

    def build(w, log=lambda m: None):
        r = StageRunner(tmp_path, log=log)
        r.run("1 scenes", lambda: made.append("1"), settings={})
        name = f"2 fine-tune ({w})"
        r.rename(lambda n: n.startswith("2 fine-tune"), name)
        r.run(name, lambda: (made.append(name), out.mkdir(exist_ok=True)), outputs=(out,), settings={"w": w})
        r.run("3 generate", lambda: made.append("3"), inputs=(out,), settings={})
        return list(r.done)

    assert build(0.1) == ["1 scenes", "2 fine-tune (0.1)", "3 generate"]
    made.clear()
    lines: list[str] = []
    assert build(0.0, lines.append) == ["1 scenes", "2 fine-tune (0.0)", "3 generate"]
    assert made == ["2 fine-tune (0.0)", "3"]
    assert any("done before with other settings (w: 0.1 -> 0.0)" in m for m in lines), lines
    made.clear()
    build(0.0)
    assert made == []

    # two records under such names (left by an older version): the current name's stays, the other goes
    d = json.loads((tmp_path / "stages.json").read_text())
    d = {"2 fine-tune (0.5)": {"seconds": 1.0, "settings": {"w": 0.5}}, **d}
    (tmp_path / "stages.json").write_text(json.dumps(d))
    r = StageRunner(tmp_path, log=lambda m: None)
    r.rename(lambda n: n.startswith("2 fine-tune"), "2 fine-tune (0.0)")
    assert [n for n in r.done if n.startswith("2 fine-tune")] == ["2 fine-tune (0.0)"]
    assert json.loads((tmp_path / "stages.json").read_text()) == r.done



def test_a_source_edit_under_a_running_job_stops_it_before_the_next_stage(tmp_path):
    """A staged job (`bridge demo`, `bridge zoo build`) stops with SourceChanged, naming the file, before
    a stage would import other code than the stages before it ran: in this process and, through the
    check each worker makes as its stage starts, in worker processes."""
    from bridgedepth.stages import SourceChanged, _checked, source_state

    src = tmp_path / "pkg"
    (src / "sub").mkdir(parents=True)
    (src / "mod.py").write_text("x = 1\n")
    (src / "sub" / "conf.yaml").write_text("a: 1\n")
    (src / "notes.txt").write_text("not watched\n")
    out = tmp_path / "run"
    out.mkdir()
    ran = []
    r = StageRunner(out, lambda m: None, source_root=src)
    r.run("one", lambda: ran.append("one"))
    (src / "notes.txt").write_text("still not watched\n")
    r.run("two", lambda: ran.append("two"))
    (src / "sub" / "conf.yaml").write_text("a: 2  # edited\n")
    with pytest.raises(SourceChanged, match=r"sub/conf.yaml.*stopped before three"):
        r.run("three", lambda: ran.append("three"))
    assert ran == ["one", "two"]
    # run again: a fresh runner takes the new source as its own and goes on
    again = StageRunner(out, lambda m: None, source_root=src)
    again.run("one", lambda: ran.append("one"))
    again.run("three", lambda: ran.append("three"))
    assert ran == ["one", "two", "three"]
    # parallel stages: checked before each is handed to a worker ...
    f = str(tmp_path)
    (src / "mod.py").write_text("x = 2\n")
    with pytest.raises(SourceChanged, match="mod.py"):
        again.run_parallel("g", [ParallelStage("p", jobs.timed, ("p", f, 0.0)),
                                 ParallelStage("q", jobs.timed, ("q", f, 0.0))], workers=2)
    # ... and by the worker as its stage starts (a worker imports the package afresh)
    state = source_state(src)
    assert _checked(state, str(src), "w", jobs.timed, "w", f, 0.0)["pid"] == os.getpid()
    (src / "mod.py").write_text("x = 3  # edited again\n")
    with pytest.raises(SourceChanged, match="stopped before w"):
        _checked(state, str(src), "w", jobs.timed, "w", f, 0.0)
    # not watched at all: no check
    StageRunner(out, lambda m: None, source_root=None).run("four", lambda: ran.append("four"))
    assert ran[-1] == "four"

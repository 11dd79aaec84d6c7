import json

import numpy as np
import pytest

from lab import runs
from lab.errors import LabError


def _write(tmp_path, run_id="r1", summary=True):
    w = runs.RunWriter(tmp_path, run_id, "pretrain", {"a": 1}, seed=0)
    w.log({"step": 1, "loss": 2.0})
    w.log({"step": 2, "loss": 1.5})
    w.save_embeddings({"student_image": np.zeros((3, 2)), "student_text": np.zeros((3, 2)), "labels": np.arange(3)})
    if summary:
        w.finish({"wall_time_s": 1.0, "checkpoint": "last", "top1": 50.0})
    return w.path


def test_written_run_reads_back(tmp_path):
    path = _write(tmp_path)
    run = runs.read_run(path)
    assert run.ok and run.complete and run.kind == "pretrain"
    assert run.config["seed"] == 0 and "versions" in run.config and "git" in run.config
    assert [r["step"] for r in run.metrics()] == [1, 2]
    assert run.embeddings()["labels"].tolist() == [0, 1, 2]
    assert not list(path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_existing_run_is_never_overwritten_silently(tmp_path):
    _write(tmp_path)
    with pytest.raises(LabError, match="already exists.*--overwrite"):
        runs.RunWriter(tmp_path, "r1", "pretrain", {}, seed=0)
    assert runs.read_run(tmp_path / "r1").complete


def test_torn_metrics_line_is_skipped(tmp_path):
    path = _write(tmp_path)
    with open(path / runs.METRICS, "a") as f:
        f.write('{"step": 3, "lo')
    assert len(runs.read_run(path).metrics()) == 2


def test_broken_runs_are_listed_with_their_problems(tmp_path):
    _write(tmp_path, "good")
    _write(tmp_path, "unfinished", summary=False)
    bad = _write(tmp_path, "bad_summary")
    (bad / runs.SUMMARY).write_text("{not json")
    lacking = _write(tmp_path, "lacking")
    (lacking / runs.SUMMARY).write_text(json.dumps({"top1": 1}))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / runs.METRICS).write_text("")  # run files without a config: a broken run
    (tmp_path / "notes").mkdir()  # no run file at all: not a run, never listed
    found = {r.run_id: r for r in runs.list_runs(tmp_path)}
    assert "notes" not in found
    assert found["good"].complete
    assert found["unfinished"].ok and not found["unfinished"].complete
    assert "summary.json is not valid JSON" in found["bad_summary"].problems[0]
    assert "lacks wall_time_s, checkpoint" in found["lacking"].problems[0]
    assert "config.json is missing" in found["stray"].problems
    assert runs.list_runs(tmp_path / "nowhere") == []


def test_truncate_metrics_keeps_the_records_up_to_the_checkpoint(tmp_path):
    w = runs.RunWriter(tmp_path, "r", "distill", {}, seed=0)
    w.log({"stage1/step": 1, "stage1/loss": 3.0})  # no "step": a prompt run's stage 1
    for step in range(1, 6):
        w.log({"step": step, "loss": 1.0 / step})
    with open(w.path / runs.METRICS, "a") as f:
        f.write('{"step": 6, "lo')  # killed mid-write
    w.truncate_metrics(3)
    assert [r.get("step") for r in runs.read_run(w.path).metrics()] == [None, 1, 2, 3]
    w.truncate_metrics(0)  # no checkpoint: the run starts afresh
    assert runs.read_run(w.path).metrics() == []


def test_silent_writer_writes_nothing(tmp_path):
    w = runs.SilentWriter(tmp_path, "r")
    w.log({"step": 1})
    w.save_checkpoint({"step": 1})
    w.finish({"wall_time_s": 1.0, "checkpoint": "last"})
    assert w.path == tmp_path / "r" and not any(tmp_path.iterdir())

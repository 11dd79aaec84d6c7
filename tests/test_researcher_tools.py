"""The researcher's everyday tools at scale (issue 31): W&B beside TensorBoard, the teacher's forward count,
TensorBoard purged on resume, and sweeps through submitit (Slurm's engine, here its local executor)."""

import json
from pathlib import Path

import pytest

from lab import runs
from lab.cli import main

TINY = ["data.size=64", "train.steps=4", "train.batch_size=16", "train.warmup=1", "train.log_every=1",
        "train.eval_every=0", "eval.per_style=8", "train.threads=1"]


def _wandb_records(path: Path):
    """The protobuf records of an offline run's ``.wandb`` file: wandb's transaction log, LevelDB's log layout
    (32 KiB blocks of records, each a 7-byte header — CRC-32C, little-endian length, type full/first/middle/last)
    after a 7-byte file header (``:W&B``, magic 0xBEE1, version 0). wandb 0.31 ships no Python reader for it."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00", data[:7]
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        if kind == 0:  # zero padding at the end of the file
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, or the last fragment
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _distill(tmp_path, name, *extra):
    return main(["distill", "--loss", "fd", "--runs-dir", str(tmp_path), "--name", name, *TINY, *extra])


def test_teacher_forwards_zero_from_the_cache_and_one_per_step_online(tmp_path):
    assert _distill(tmp_path, "cache", "teacher_mode=cache") == 0
    assert _distill(tmp_path, "online", "teacher_mode=online") == 0
    cached = json.loads((tmp_path / "cache" / runs.SUMMARY).read_text())
    online = json.loads((tmp_path / "online" / runs.SUMMARY).read_text())
    assert cached["teacher_mode"] == "cache" and cached["teacher_forwards"] == 0
    assert online["teacher_mode"] == "online" and online["teacher_forwards"] == 4  # one per step


def test_resume_purges_tensorboard_events_past_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["train.checkpoint_every=2", "train.logger=tensorboard"]
    assert _distill(tmp_path, "tb", *args) == 0
    run = tmp_path / "tb"
    # Back to the step-2 checkpoint, as if the run had died after logging steps 3 and 4: the checkpoint of
    # step 2 is re-made by a 2-step run of the same settings (the schedule differs, the step is what counts).
    assert _distill(tmp_path, "two", *args, "train.steps=2") == 0
    (run / runs.CHECKPOINT).write_bytes((tmp_path / "two" / runs.CHECKPOINT).read_bytes())
    import torch

    state = torch.load(run / runs.CHECKPOINT, weights_only=True)
    state["config"]["train"]["steps"] = 4  # the checkpoint of this run's settings at step 2
    torch.save(state, run / runs.CHECKPOINT)
    (run / runs.SUMMARY).unlink()
    assert _distill(tmp_path, "tb", *args, "--resume") == 0
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # the old file and the resumed one
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    for key in ("loss", "fd", "lr"):
        steps = [e.step for e in board.Scalars(key)]
        assert sorted(steps) == [1, 2, 3, 4], (key, steps)  # each step once: 3 and 4 of the old file purged
    assert [r["step"] for r in runs.read_run(run).metrics()] == [1, 2, 3, 4]


def test_wandb_offline_files_hold_every_logged_key(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert _distill(tmp_path, "wb", "train.logger=tensorboard+wandb", "train.eval_every=2") == 0
    run = runs.read_run(tmp_path / "wb")
    logged = {(r["step"], k): v for r in run.metrics() for k, v in r.items()
              if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {"loss", "fd", "lr", "eval/hm"} <= {k for _, k in logged}
    (log_file,) = (tmp_path / "wandb-dir").glob("wandb/offline-run-*/run-*.wandb")
    history, summary = {}, {}
    for record in _wandb_records(log_file):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.update({(int(row["_step"]), k): v for k, v in row.items() if not k.startswith("_")})
        elif record.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
    assert history == pytest.approx(logged, rel=1e-6)  # every logged key, at its step, with its value
    assert summary["final/zeroshot/plain/hm"] == pytest.approx(json.loads(
        (tmp_path / "wb" / runs.SUMMARY).read_text())["zeroshot/plain/hm"], rel=1e-6)


def test_wandb_missing_is_one_sentence_before_any_model(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    assert _distill(tmp_path, "nowb", "train.logger=wandb") == 2
    assert "needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "nowb").exists()
    assert _distill(tmp_path, "bad", "train.logger=mlflow") == 2


QUICK = ["data.size=64", "train.steps=3", "train.batch_size=16", "train.warmup=1", "eval.per_style=8",
         "train.threads=1"]


def test_sweep_through_submitit_local_executor_trains_and_tabulates(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("LAB_SUBMITIT_CLUSTER", "local")  # submitit's local executor: Slurm's path without Slurm
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", str(root))  # the jobs' fresh interpreters import this checkout's lab
    assert main(["sweep", "--grid", "core", "--fast", "--runs-dir", str(tmp_path), "--executor", "slurm",
                 "--slurm-partition", "gpu", "--slurm-time", "5", "--slurm-gpus", "0", *QUICK]) == 0
    finished = sorted(p.parent.name for p in tmp_path.glob("fast-*/summary.json"))
    assert len(finished) == 2  # the no-KD student and CLIP-KD, each trained by a submitit job
    assert list((tmp_path / "_submitit").glob("*_result.pkl"))  # … really through submitit
    table = (tmp_path / "_tables" / "fast-core.md").read_text()
    assert "| no KD (task only) | 0 |" in table and "| FD+ICL+CRD (CLIP-KD) | 0 |" in table
    assert json.loads((tmp_path / finished[0] / runs.SUMMARY).read_text())["steps"] == 3  # the overrides reached the jobs


def test_sweep_executor_slurm_without_sbatch_is_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_SUBMITIT_CLUSTER", "slurm")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["sweep", "--grid", "core", "--fast", "--runs-dir", str(tmp_path / "r"), "--executor", "slurm"]) == 2
    assert "needs Slurm's sbatch on PATH" in capsys.readouterr().err

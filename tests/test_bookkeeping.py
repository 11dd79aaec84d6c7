"""Resume bookkeeping: timings nobody measured are null, wall time covers every resumed part, and a
resume with another process count is refused in one sentence."""

import json

import pytest
import torch

from lab import runs
from lab.errors import LabError
from lab.train.distill import default_config, distill

QUICK = ["train.steps=2", "train.batch_size=8", "data.size=16", "train.warmup=1", "train.log_every=1",
         "eval.per_style=0", "teacher_mode=online", "student=shapes-student", "teacher=shapes-student",
         "train.checkpoint_every=1", "loss=fd"]


def test_null_timings_wall_time_across_resume_and_process_count(tmp_path):
    path = distill(default_config(QUICK), "r", tmp_path)
    summary = json.loads((path / runs.SUMMARY).read_text())
    assert summary["mean_step_s"] is None and summary["images_per_s"] is None  # 2 steps: none timed
    ckpt_path = path / runs.CHECKPOINT
    state = torch.load(ckpt_path, weights_only=True)
    first_wall = state["wall_time_s"]
    assert state["processes"] == 1 and first_wall > 0
    # the run, as if killed after step 1 and resumed: its wall time carries on from the checkpoint's
    (path / runs.SUMMARY).unlink()
    torch.save({**state, "step": 1, "wall_time_s": 1000.0}, ckpt_path)
    resumed = distill(default_config(QUICK), "r", tmp_path, resume=True)
    assert json.loads((resumed / runs.SUMMARY).read_text())["wall_time_s"] > 1000.0
    (path / runs.SUMMARY).unlink()
    torch.save({**torch.load(ckpt_path, weights_only=True), "step": 1, "processes": 2}, ckpt_path)
    with pytest.raises(LabError, match="trained on 2 processes and this resume has 1; resume it with the same"):
        distill(default_config(QUICK), "r", tmp_path, resume=True)

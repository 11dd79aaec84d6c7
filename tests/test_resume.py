"""A CPU distillation run killed with SIGKILL mid-training and resumed with --resume logs and scores
exactly what an uninterrupted run with the same seed does."""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lab import runs

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 100, 10
# MFD is in the objective so that its mask generator's state must survive the kill too.
COMMAND = [sys.executable, "-m", "lab", "distill", "--loss", "crd+fd+icl+mfd", "data.size=256",
           f"train.steps={STEPS}", "train.batch_size=16", "train.warmup=5", "train.log_every=1",
           f"train.checkpoint_every={EVERY}", "eval.per_style=16", "train.threads=1"]
TIMING = ("images_per_s", "elapsed_s")


def _run(runs_dir: Path, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*COMMAND, "--name", name, "--runs-dir", str(runs_dir), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def _losses(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_run(path).metrics()]


def _scores(path: Path) -> dict:
    summary = json.loads((path / runs.SUMMARY).read_text())
    return {k: v for k, v in summary.items() if not k.endswith(("_s", "images_per_s", "finished"))}


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight_run = _run(tmp_path, "straight")  # alongside, on the other core
    killed = _run(tmp_path, "killed")
    checkpoint = tmp_path / "killed" / runs.CHECKPOINT
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / runs.SUMMARY).exists()  # it really died mid-training
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < step < STEPS and step % EVERY == 0
    logged_before = [r["step"] for r in runs.read_run(tmp_path / "killed").metrics()]

    out = _finish(_run(tmp_path, "killed", "--resume"))
    assert f"resuming killed at step {step}" in out
    _finish(straight_run)

    resumed, straight = tmp_path / "killed", tmp_path / "straight"
    assert [r["step"] for r in runs.read_run(resumed).metrics()] == list(range(1, STEPS + 1))  # none twice
    assert _losses(resumed) == _losses(straight)  # every term, lr, at every step: identical
    assert _scores(resumed) == _scores(straight)
    assert max(logged_before) >= step  # the records after the checkpoint were dropped and re-logged


def test_resume_refuses_other_settings_and_finished_runs(tmp_path, capsys):
    from lab.cli import main

    base = ["distill", "--loss", "fd", "--name", "r", "--runs-dir", str(tmp_path), "data.size=64", "train.steps=4",
            "train.batch_size=16", "train.warmup=1", "train.checkpoint_every=2", "eval.per_style=8"]
    assert main(base) == 0
    assert main([*base, "--resume"]) == 2
    assert "already finished, so there is nothing to resume" in capsys.readouterr().err
    (tmp_path / "r" / runs.SUMMARY).unlink()  # as if killed after its last checkpoint
    assert main([*base, "--resume", "train.lr=0.5"]) == 2
    assert re.search(r"was started with train.lr=[0-9.]+, not 0.5", capsys.readouterr().err)
    assert main([*base[:3], "--name", "nope", *base[5:], "--resume"]) == 2
    assert "does not exist, so there is nothing to resume" in capsys.readouterr().err


def test_prompt_distillation_resumes_where_its_checkpoint_left_off(smoke_run, tmp_path, monkeypatch):
    """Stage 2 of a prompt run stopped after its step-3 checkpoint and resumed equals a straight run."""
    from lab.train.prompt_distill import default_config, prompt_distill

    settings = [f"student={smoke_run}", "method=comkd", "stage1.steps=2", "stage1.shots=2", "stage1.batch_size=32",
                "train.steps=6", "train.batch_size=16", "train.checkpoint_every=3", "train.log_every=1",
                "data.size=64", "eval.per_style=16"]
    straight = prompt_distill(default_config(settings), "straight", tmp_path)
    save = runs.RunWriter.save_checkpoint

    def save_then_crash(self, state):
        save(self, state)
        if state["step"] == 3:
            raise KeyboardInterrupt  # the process dies right after its first checkpoint

    monkeypatch.setattr(runs.RunWriter, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        prompt_distill(default_config(settings), "crashed", tmp_path)
    monkeypatch.setattr(runs.RunWriter, "save_checkpoint", save)
    resumed = prompt_distill(default_config(settings), "crashed", tmp_path, resume=True)
    stage2 = lambda path: [r for r in _losses(path) if "step" in r]  # noqa: E731 (stage 1 tuned once, cached)
    assert [r["step"] for r in stage2(resumed)] == list(range(1, 7))
    assert stage2(resumed) == stage2(straight)
    without_cache = lambda path: {k: v for k, v in _scores(path).items() if k != "stage1_cache"}  # noqa: E731
    assert without_cache(resumed) == without_cache(straight)

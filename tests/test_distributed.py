"""Two torchrun processes (gloo, CPU) give the one-process loss values and gradients for every term."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab import runs
from lab.losses.objective import TERMS
from lab.train.prompt_distill import METHODS

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _check(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """One step of every case, computed by one process and by two (same global batch)."""
    out = tmp_path_factory.mktemp("dist")
    script = str(ROOT / "tests" / "dist_equivalence.py")
    _check([sys.executable, script, str(out / "one.pt")])
    _check([*TORCHRUN, script, str(out / "two.pt")])
    one, two = (torch.load(out / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    return one["results"], two["results"]


@pytest.mark.parametrize("case", ["task", *TERMS, *(f"prompt-{m}" for m in METHODS)])
def test_two_processes_equal_one_process(steps, case):
    one, two = steps[0][case], steps[1][case]
    assert one["terms"].keys() == two["terms"].keys()
    for name, value in one["terms"].items():  # the terms see the global batch, not the local half
        assert torch.allclose(two["terms"][name], value, rtol=1e-6, atol=1e-7), (name, value, two["terms"][name])
    assert one["grads"].keys() == two["grads"].keys() and one["grads"]
    for name, grad in one["grads"].items():  # every parameter, learnable loss parameters included
        scale = grad.abs().max().item()  # float32 sums in another order: agree to 1e-5 of the tensor's scale
        assert torch.allclose(two["grads"][name], grad, rtol=1e-5, atol=1e-5 * scale), name
    assert any(g.abs().sum() > 0 for g in one["grads"].values())


def test_torchrun_distill_logs_like_one_process_and_only_rank0_writes(tmp_path):
    args = ["distill", "--loss", "crd+fd+icl", "--runs-dir", str(tmp_path), "data.size=64", "train.steps=3",
            "train.batch_size=16", "train.warmup=1", "train.log_every=1", "train.checkpoint_every=2",
            "eval.per_style=8", "train.threads=1"]
    _check([*TORCHRUN, "-m", "lab", *args, "--name", "two"])
    _check([sys.executable, "-m", "lab", *args, "--name", "one"])
    two, one = runs.read_run(tmp_path / "two"), runs.read_run(tmp_path / "one")
    assert two.complete and two.summary["processes"] == 2
    drop = ("images_per_s", "elapsed_s")
    for a, b in zip(two.metrics(), one.metrics(), strict=True):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        assert all(a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6) for k in a if k not in drop), (a, b)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["one", "two"]
    assert json.loads((tmp_path / "two" / runs.CONFIG).read_text())["config"]["train"]["batch_size"] == 16

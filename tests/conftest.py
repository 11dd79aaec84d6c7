"""Shared fixtures. Tests run offline: HF_HUB_OFFLINE=1 makes an absent pretrained weight fail at once."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One finished smoke pretraining run, shared by the tests that only read it."""
    from lab.train.pretrain import preset_config, pretrain

    root = tmp_path_factory.mktemp("runs")
    return pretrain(preset_config("smoke"), "smoke", root)


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """The core grid (no-KD student and CLIP-KD recipe) at the fast scale, two seeds, with its tables."""
    from lab.experiments.sweep import sweep

    root = tmp_path_factory.mktemp("demo-runs")
    sweep("core", seeds=2, runs_dir=root, scale="fast")
    return root


@pytest.fixture(scope="session")
def prompt_runs(smoke_run, tmp_path_factory):
    """Two seconds-long prompt-distillation runs: base-to-novel and domain shift."""
    from lab.train.prompt_distill import default_config, prompt_distill

    root = tmp_path_factory.mktemp("prompt-runs")
    quick = [f"student={smoke_run}", "stage1.steps=2", "stage1.shots=2", "stage1.batch_size=32", "train.steps=2",
             "train.batch_size=16", "data.size=32", "eval.per_style=16"]
    prompt_distill(default_config([*quick, "method=comkd"]), "b2n", root)
    prompt_distill(default_config([*quick, "method=promptkd", "protocol=domain"]), "domain", root)
    return root


@pytest.fixture
def starts(monkeypatch):
    """The student's parameters (objective heads left out) at the moment each trainer builds its Trainer."""
    from lab.train import loop

    seen = []
    original = loop.Trainer.__init__

    def record(self, params, *args, **kwargs):
        params = list(params)
        seen.append({n: p.detach().clone() for n, p in params if not n.startswith("objective.")})
        original(self, params, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "__init__", record)
    return seen

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
    from lab.sweep import sweep

    root = tmp_path_factory.mktemp("demo-runs")
    sweep("core", seeds=2, runs_dir=root, scale="fast")
    return root

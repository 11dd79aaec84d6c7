"""No ShapesWorld setting leaks onto real data: the student preset's data.size=8192 never caps a CSV, an
explicit cap is said in the run's first line and in summary.json, and Hinton KD on real data reads the
user's class names (or refuses) — never ShapesWorld's."""

import json

import numpy as np
import pytest
from PIL import Image

from lab.data.pairs import build_pairs, step_batches
from lab.errors import LabError
from lab.train.distill import default_config, distill

QUICK = ["train.steps=2", "train.batch_size=4", "train.warmup=1", "train.log_every=1", "eval.per_style=0",
         "teacher_mode=online", "student=shapes-student", "teacher=shapes-student", "data.image_size=16"]


def _csv(folder, rows: int, distinct: int = 16):
    """An open_clip-format CSV of ``rows`` pairs over ``distinct`` tiny PNGs (rows repeat images, not captions)."""
    rng = np.random.default_rng(0)
    for i in range(distinct):
        Image.fromarray(rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    lines = ["filepath\ttitle", *(f"{i % distinct}.png\tpair number {i}." for i in range(rows))]
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_10000_row_csv_trains_on_10000_pairs(tmp_path):
    csv = _csv(tmp_path, 10_000)
    cfg = default_config([f"data.source={csv}", "train.batch_size=1000", "train.steps=10", "data.image_size=16"])
    assert cfg.data.size == 0  # the student preset's 8,192 sizes ShapesWorld only
    dataset = build_pairs(cfg.data)
    seen = [i for batch in step_batches(dataset, 1000, 10, cfg.train.seed) for i in batch.factors["index"].tolist()]
    assert len(dataset) == 10_000 and sorted(seen) == list(range(10_000))  # one epoch reads every pair once


def test_an_explicit_cap_on_a_csv_is_reported(tmp_path, capsys):
    csv = _csv(tmp_path, 40)
    path = distill(default_config([*QUICK, f"data.source={csv}", "data.size=12"]), "capped", tmp_path / "runs")
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("data.size=12: training on the first 12 pairs of")
    summary = json.loads((path / "summary.json").read_text())
    assert summary["data_size"] == 12 and summary["train_pairs"] == 12


def test_kd_on_real_data_refuses_without_class_names(tmp_path):
    csv = _csv(tmp_path, 8)
    with pytest.raises(LabError, match="kd term needs the class names of your data; pass eval.classnames=FILE"):
        distill(default_config([*QUICK, f"data.source={csv}", "loss=kd"]), "kd", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_kd_on_real_data_reads_the_given_class_names(tmp_path, monkeypatch):
    import lab.train.distill as module

    csv = _csv(tmp_path, 8)
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    seen = {}
    original = module.DistillStep.__init__

    def spy(self, *args, **kwargs):
        seen["classnames"] = list(args[5] if len(args) > 5 else kwargs["classnames"])
        original(self, *args, **kwargs)

    monkeypatch.setattr(module.DistillStep, "__init__", spy)
    distill(default_config([*QUICK, f"data.source={csv}", "loss=kd", f"eval.classnames={tmp_path / 'names.txt'}"]),
            "kd", tmp_path / "runs")
    assert seen["classnames"] == ["cat", "dog", "bird"]

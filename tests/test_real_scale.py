"""The real-scale path through the CLI: an open_clip ViT-B-32 teacher from a local checkpoint file
distilled into a smaller open_clip ViT-S-32 student (also a checkpoint file) on an image–caption CSV."""

import logging

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from lab import runs
from lab.cli import main

TEACHER, STUDENT = "ViT-B-32", "ViT-S-32"  # both in open_clip.list_models(); ViT-S-32 is 63 M parameters


def _checkpoint(arch: str, path) -> str:
    """A randomly initialised open_clip model saved as a plain state dict (half precision, to keep it small)."""
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(arch)
    finally:
        logging.disable(logging.NOTSET)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    return f"{arch}:{path}"


def _csv(folder, rows: int = 8):
    """An open_clip-format CSV (tab-separated filepath/title) over PNGs of several sizes."""
    rng = np.random.default_rng(0)
    lines = ["filepath\ttitle"]
    for i in range(rows):
        pixels = rng.integers(0, 256, size=(48 + 8 * i, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        lines.append(f"img{i}.png\ta photo of noise number {i}.")
    path = folder / "pairs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("arch", [TEACHER, STUDENT])
def test_architectures_exist_in_open_clip(arch):
    assert arch in open_clip.list_models()


def test_vit_b32_teacher_to_vit_s32_student_on_a_csv(tmp_path, capsys):
    teacher, student = _checkpoint(TEACHER, tmp_path / "teacher.pt"), _checkpoint(STUDENT, tmp_path / "student.pt")
    csv = _csv(tmp_path)
    code = main(["distill", "--teacher", teacher, "--student", student, "--loss", "clipkd", "--name", "real",
                 "--runs-dir", str(tmp_path / "runs"), f"data.source={csv}", "data.image_size=224", "data.size=8",
                 "train.batch_size=4", "train.steps=2", "train.warmup=1", "train.log_every=1", "eval.per_style=0"])
    assert code == 0, capsys.readouterr().err
    run = runs.read_run(tmp_path / "runs" / "real")
    assert run.complete, run.problems
    assert [r["step"] for r in run.metrics()] == [1, 2]
    assert all({"task", "crd", "icl", "fd"} <= set(r) and np.isfinite(r["loss"]) for r in run.metrics())
    assert run.summary["steps"] == 2 and run.summary["teacher_params"] > run.summary["params"]
    state = torch.load(run.path / runs.CHECKPOINT, weights_only=True, mmap=True)
    assert state["arch"] == STUDENT
    assert state["objective"]["projection.image.weight"].shape == (512, 384)  # ViT-S-32 (384) → ViT-B-32 (512)

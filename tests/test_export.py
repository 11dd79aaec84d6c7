"""``python -m lab export``: a student open_clip loads by itself, offline, in a fresh process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.data.shapes import ShapesWorld, StreamSpec
from lab.models import zoo

ROOT = Path(__file__).resolve().parents[1]
# Run in a fresh interpreter: only open_clip, torch and numpy — nothing of the lab is imported.
LOAD_WITH_OPEN_CLIP = """
import sys, numpy as np, torch, open_clip
out, inputs = sys.argv[1], np.load(sys.argv[2])
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + out)
tokenizer = open_clip.get_tokenizer("local-dir:" + out)
model.eval()
with torch.no_grad():
    image = model.encode_image(torch.from_numpy(inputs["pixels"]), normalize=True)
    text = model.encode_text(tokenizer(list(inputs["captions"])), normalize=True)
np.savez(sys.argv[3], image=image.numpy(), text=text.numpy(), size=np.asarray(model.visual.image_size),
         mean=np.asarray(preprocess.transforms[-1].mean))
"""


def test_exported_student_loads_in_open_clip_offline_with_the_labs_embeddings(smoke_run, tmp_path):
    from lab.cli import main

    out = tmp_path / "student"
    assert main(["export", str(smoke_run), str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md",
                                               "model_card.json"}
    lab_model = zoo.load(smoke_run)
    batch = ShapesWorld(lab_model.image_size).sample(StreamSpec(seed=3, split="test"), 0, 8)
    pixels = lab_model.image_tensor(batch.images)
    np.savez(tmp_path / "inputs.npz", pixels=pixels.numpy(), captions=np.asarray(batch.captions))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_OPEN_CLIP, str(out), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "open_clip.npz")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = np.load(tmp_path / "open_clip.npz")
    with torch.no_grad():
        image = lab_model.model.encode_image(pixels, normalize=True).numpy()
        text = lab_model.model.encode_text(lab_model.tokenize(batch.captions), normalize=True).numpy()
    np.testing.assert_allclose(theirs["image"], image, atol=1e-5, rtol=0)
    np.testing.assert_allclose(theirs["text"], text, atol=1e-5, rtol=0)
    assert theirs["size"].tolist() in ([32, 32], 32)
    np.testing.assert_allclose(theirs["mean"], lab_model.model.visual.preprocess_cfg["mean"], rtol=1e-6)
    card = json.loads((out / "model_card.json").read_text())
    assert card["arch"] == "shapes-student" and card["steps"] == lab_model_steps(smoke_run)
    assert "projection heads" in (out / "MODEL_CARD.md").read_text()


def lab_model_steps(run) -> int:
    return json.loads((Path(run) / "summary.json").read_text())["steps"]


def test_export_with_onnx_checks_the_encoders_against_pytorch(smoke_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from lab.models.export import export_open_clip

    card = export_open_clip(smoke_run, tmp_path / "student", onnx=True)
    assert (tmp_path / "student" / "onnx" / "image_encoder.onnx").is_file()
    assert card["onnx"]["max_abs_diff"] <= card["onnx"]["tolerance"]
    assert "ONNX Runtime vs PyTorch" in (tmp_path / "student" / "MODEL_CARD.md").read_text()

"""A CLIP's image and text encoders exported to ONNX and checked against PyTorch on real ShapesWorld items.

Used by ``python -m lab cost --onnx`` and ``python -m lab export --onnx``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from lab.errors import LabError
from lab.eval.suite import EvalConfig, evaluation_set
from lab.models import zoo

ONNX_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| of the raw (unnormalised) embeddings


def sample_batch(batch_size: int, image_size: int = 32):
    """``batch_size`` real ShapesWorld test images and captions (all four styles)."""
    batch = evaluation_set(EvalConfig(per_style=math.ceil(batch_size / 4)), image_size)
    return batch.subset(np.arange(batch_size))




class _Encoder(torch.nn.Module):
    """One of a CLIP's two encoders (``encode_image`` or ``encode_text``) as a module to export."""

    def __init__(self, model, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x):
        return getattr(self.model, self.method)(x)


def check_writable(path: str | Path) -> Path:
    """Create directory ``path`` if needed and make sure a file can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise LabError(f"Cannot write the ONNX files to {path} ({err.strerror or err}); "
                       f"pass a directory you can write to (--onnx).") from err
    return path


def export_onnx(clip: zoo.ClipModel, path: str | Path, check_items: int = 8) -> dict:
    """Export the model's image and text encoders as ``image_encoder.onnx`` and ``text_encoder.onnx``
    in directory ``path`` (batch dimension dynamic), run both with ONNX Runtime on ``check_items``
    real ShapesWorld test images / captions, and compare with PyTorch.

    Returns the files, their sizes and the max absolute difference of each embedding; raises
    LabError when a difference exceeds ``ONNX_TOLERANCE``.
    """
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (the exporter below needs it)
    except ImportError as err:
        raise LabError("ONNX export needs onnx, onnxscript and onnxruntime; "
                       "install them with `pip install -r requirements.txt`.") from err
    out = check_writable(path)
    model = copy.deepcopy(clip.model).cpu().eval()
    cpu_clip = zoo.ClipModel(model, clip.tokenizer, clip.arch, clip.source)
    batch = sample_batch(check_items, clip.image_size)
    inputs = {"image_encoder": (_Encoder(model, "encode_image").eval(), cpu_clip.image_tensor(batch.images),
                                "pixels"),
              "text_encoder": (_Encoder(model, "encode_text").eval(), cpu_clip.tokenize(batch.captions), "tokens")}
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    result = {"dir": str(out), "tolerance": ONNX_TOLERANCE, "items": check_items}
    for name, (module, x, input_name) in inputs.items():
        file = out / f"{name}.onnx"
        # torch.export-based exporter (dynamo=True, needs onnxscript): the default since torch 2.9.
        # The legacy TorchScript exporter (dynamo=False) is faster here but deprecated ("will be
        # removed"), and it traces: Python control flow on tensors is frozen with a warning instead
        # of captured or refused, so a silently wrong graph is possible. Exporting takes seconds.
        # Traced on 2 items and checked on `check_items`, so the dynamic batch axis is exercised.
        # Output names must be unique in the graph: "embedding" would clash with the text tower's lookup.
        example = x[:2]
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), input_names=[input_name],
                                        output_names=[f"{name}_output"], dynamo=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            program.save(str(file))
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {input_name: x.numpy()})[0]
        with torch.no_grad():
            torch_out = module(x).numpy()
        result[name] = {"file": str(file), "bytes": file.stat().st_size,
                        "max_abs_diff": float(np.abs(onnx_out - torch_out).max())}
    worst = max(result[name]["max_abs_diff"] for name in inputs)
    result["max_abs_diff"] = worst
    if not worst <= ONNX_TOLERANCE:  # also catches NaN
        raise LabError(f"The ONNX export of {clip.source} differs from PyTorch by {worst:.2e} "
                       f"(tolerance {ONNX_TOLERANCE:.0e}); do not deploy it, and report it with the torch and "
                       f"onnxruntime versions.")
    return result

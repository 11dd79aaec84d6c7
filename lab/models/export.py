"""Export a trained run's model: a lab weights file with a model card, or open_clip's hub layout.

The card (``<name>.card.json`` and a readable ``<name>.card.md``) records the
recipe command, seed, full config, training wall time, machine, the sha256 of
the file and the metrics of the *exported* weights, re-evaluated after export.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from lab import runs
from lab.errors import LabError
from lab.eval.suite import EvalConfig, evaluate
from lab.models import zoo

HEADLINE_KEYS = ("top1", "base", "novel", "hm")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_with_card(run_path: str | Path, out: str | Path, recipe: str, dtype=torch.float16) -> dict:
    """Write ``out`` (safetensors, ``dtype``) and its card; return the card."""
    run = runs.read_run(run_path)
    out = Path(out)
    zoo.save_weights(zoo.load(run.path), out, dtype=dtype)
    exported = zoo.load_weights(out)
    metrics, _ = evaluate(exported, EvalConfig())
    card = {
        "file": out.name,
        "sha256": sha256(out),
        "bytes": out.stat().st_size,
        "arch": exported.arch,
        "params": exported.num_parameters(),
        "weights_dtype": str(dtype).replace("torch.", ""),
        "recipe": recipe,
        "seed": run.config.get("seed"),
        "train_wall_time_s": run.summary.get("wall_time_s"),
        "train_steps": run.summary.get("steps"),
        "machine": run.config.get("machine"),
        "versions": run.config.get("versions"),
        "created": time.strftime("%Y-%m-%d"),
        "eval": {"protocol": "ShapesWorld test split, seed 1234, 1280 images per style; prompt ensemble",
                 "metrics": metrics},
        "config": run.config.get("config"),
    }
    runs.atomic_write_json(out.with_suffix(".card.json"), card)
    runs.atomic_write_bytes(out.with_suffix(".card.md"), card_markdown(card).encode())
    return card


def card_markdown(card: dict) -> str:
    m = card["eval"]["metrics"]
    styles = ("plain", "textured", "sketch", "noisy")
    rows = "\n".join(f"| {s} | " + " | ".join(f"{m[f'zeroshot/{s}/{k}']:.1f}" for k in HEADLINE_KEYS) + " |"
                     for s in styles if f"zeroshot/{s}/top1" in m)
    retrieval = ", ".join(f"{k.split('/')[1]} {v:.1f}" for k, v in m.items() if k.startswith("retrieval/"))
    return f"""# Model card: {card['file']}

A ShapesWorld CLIP ({card['arch']}, {card['params'] / 1e6:.2f} M parameters, stored as {card['weights_dtype']}),
trained from scratch with the contrastive loss alone.

- **Recipe**: `{card['recipe']}` (seed {card['seed']}, {card['train_steps']} steps)
- **Training wall time**: {card['train_wall_time_s'] / 60:.1f} min on {card['machine']}
- **sha256**: `{card['sha256']}` ({card['bytes'] / 2**20:.1f} MiB)
- **Created**: {card['created']} with {json.dumps(card['versions'])}

## Zero-shot top-1 (%) on held-out test images ({card['eval']['protocol']})

Base is scored among the base classes only, novel among the novel classes only; HM = 2BN/(B+N).

| style | all 64 classes | base | novel | HM |
|---|---|---|---|---|
{rows}

Retrieval on the plain style (a hit is any image with the identical caption): {retrieval}.
"""


# --------------------------------------------------------------------------- open_clip's hub layout

HUB_CONFIG, HUB_WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"
NOT_EXPORTED = ("the objective's learned parts — projection heads that map the student into the teacher's width, "
                "AFD's fusion layer, learnable loss scales — serve the training loss only and are not part of "
                "the student")


def check_exportable(run: runs.Run, out: Path, overwrite: bool) -> None:
    """Before anything is loaded or written: a finished, readable run, and an empty (or new) folder unless
    ``overwrite`` (another model's files are never replaced without a word)."""
    if not run.path.is_dir():
        raise LabError(f"Run {run.path} does not exist; pass a run directory.")
    if run.problems:
        raise LabError(f"Run {run.path} cannot be exported: {run.problems[0]}; repair or retrain it.")
    if run.summary is None:
        raise LabError(f"Run {run.path} did not finish (no summary.json), so its card would have no metrics; "
                       f"finish it with --resume --name {run.run_id} first.")
    if out.exists() and not out.is_dir():
        raise LabError(f"{out} is a file, not a folder; pass a folder for the export.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LabError(f"{out} is not empty ({', '.join(sorted(p.name for p in out.iterdir())[:3])} …); export into "
                       f"an empty or new folder, or pass --overwrite to replace the files there.")


def export_open_clip(run_path: str | Path, out_dir: str | Path, onnx: bool = False, overwrite: bool = False) -> dict:
    """The run's student in open_clip's hub layout, loadable offline with
    ``open_clip.create_model_and_transforms("local-dir:OUT_DIR")``, plus ``MODEL_CARD.md`` / ``model_card.json``
    and, with ``onnx``, the ONNX image and text encoders (checked against PyTorch)."""
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    run = runs.read_run(run_path)
    check_exportable(run, Path(out_dir), overwrite)
    student = zoo.load(run.path)
    model_cfg = open_clip.get_model_config(student.arch)
    if model_cfg is None:
        raise LabError(f"open_clip has no config for architecture {student.arch}; it cannot be exported.")
    out = Path(out_dir)
    with runs.disk_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        zoo.save_weights(student, out / HUB_WEIGHTS)  # float32 safetensors, written atomically
        save_config_for_hf(student.model, out / HUB_CONFIG, model_config=model_cfg)
    config = run.config.get("config", {})
    summary = run.summary
    card = {
        "arch": student.arch, "params": student.num_parameters(), "weights": HUB_WEIGHTS,
        "sha256": sha256(out / HUB_WEIGHTS), "run": run.run_id, "kind": run.kind,
        "teacher": config.get("teacher"), "objective": summary.get("formula") or config.get("loss"),
        "data": config.get("data", {}).get("source"), "steps": summary.get("steps"),
        "seed": run.config.get("seed"), "metrics": {k: v for k, v in summary.items() if isinstance(v, (int, float))
                                                     and not k.endswith(("_s", "images_per_s"))},
        "not_exported": NOT_EXPORTED, "load": f'open_clip.create_model_and_transforms("local-dir:{out}")',
        "created": time.strftime("%Y-%m-%d"), "versions": run.config.get("versions"),
    }
    if onnx:
        from lab.models.onnx import export_onnx

        card["onnx"] = export_onnx(student, out / "onnx")
    runs.atomic_write_json(out / "model_card.json", card)
    runs.atomic_write_bytes(out / "MODEL_CARD.md", hub_card_markdown(card).encode())
    return card


def hub_card_markdown(card: dict) -> str:
    metrics = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(card["metrics"].items())) or "| — | — |"
    onnx = card.get("onnx")
    onnx_line = (f"\n- **ONNX**: `onnx/image_encoder.onnx`, `onnx/text_encoder.onnx`; ONNX Runtime vs PyTorch "
                 f"max |diff| {onnx['max_abs_diff']:.1e}" if onnx else "")
    return f"""# {card['arch']} distilled by the CLIP distillation lab

- **Student**: {card['arch']}, {card['params'] / 1e6:.2f} M parameters (`{card['weights']}`, sha256 `{card['sha256'][:16]}…`)
- **Teacher**: `{card['teacher']}`
- **Objective**: `{card['objective']}`
- **Data**: `{card['data']}`, {card['steps']} steps, seed {card['seed']} (run `{card['run']}`)
- **Load**: `{card['load']}` (offline; the tokenizer is open_clip's, from the config){onnx_line}
- **Not in this export**: {card['not_exported']}.

## Metrics of the run (summary.json)

| metric | value |
|---|---|
{metrics}
"""

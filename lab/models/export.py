"""Export a trained run's model as a weights file with a model card beside it.

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

"""Checkpoints and resume: what a training checkpoint holds, and how a killed run continues from it.

A checkpoint (``checkpoints/last.pt``, written atomically every ``train.checkpoint_every``
steps and at the end) holds the trained modules (student, loss modules), the optimiser,
the step and schedule, every RNG state (and the trainer's own generators, e.g. MFD's
masks) and the config — plain tensors and Python data only, read back with
``torch.load(weights_only=True)``. ``--resume`` reloads all of it, drops the metrics
logged after the checkpoint's step and trains on: the batch of a step depends on
(seed, step) alone, so a resumed run logs exactly what an uninterrupted one would.

Under torchrun only rank 0 writes; every rank reads the checkpoint. The RNG states are
rank 0's; the other ranks reseed from (seed, rank, step) — nothing in the lab's training
steps draws from the global generators, so the numbers do not depend on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from lab import runs
from lab.errors import LabError
from lab.models.zoo import load_training_checkpoint
from lab.train import dist
from lab.train.loop import Trainer, rng_states, seed_everything, set_rng_states

# Settings a resumed run may change: where and how fast it runs, not what it computes.
RESUME_FREE_KEYS = ("train.device", "train.threads", "train.compile", "data.workers", "cache_dir",
                    "eval.per_style")  # the final evaluation's size (0: none) does not change the training


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_settings(old: dict, new: dict, run: Path) -> None:
    """A run resumes only with the settings it started with (except where it runs)."""
    before = _flat(old)
    for key, value in _flat(new).items():
        if key in before and key not in RESUME_FREE_KEYS and before[key] != value:
            raise LabError(f"Run {run} was started with {key}={before[key]!r}, not {value!r}; resume it with "
                           f"the same settings, or start a new run with another --name.")


def open_run(runs_dir: str | Path, run_id: str, kind: str, config: dict, settings: dict, seed: int,
             overwrite: bool = False, resume: bool = False,
             ctx: dist.Context = dist.SINGLE) -> tuple[runs.RunWriter, dict | None]:
    """The run's writer (silent on ranks other than 0) and, when resuming, its last checkpoint.

    ``config`` is what ``config.json`` records; ``settings`` the resolved config a resumed
    run must match. Resuming a run that never reached its first checkpoint starts it afresh.
    """
    path = Path(runs_dir) / run_id
    checkpoint = None
    if resume:
        if overwrite:
            raise LabError("--resume continues a run and --overwrite replaces it; pass only one of them.")
        if not (path / runs.CONFIG).is_file():
            raise LabError(f"Run {path} does not exist, so there is nothing to resume; drop --resume to start it.")
        if (path / runs.SUMMARY).is_file():
            raise LabError(f"Run {path} already finished, so there is nothing to resume; pick another --name "
                           f"to train again.")
        if (path / runs.CHECKPOINT).is_file():
            checkpoint = _resumable_checkpoint(path)
            started_with = checkpoint.get("config", {})
        else:
            started_with = _started_with(path)
        check_same_settings(started_with, settings, path)
    if not ctx.is_main:
        return runs.SilentWriter(runs_dir, run_id), checkpoint
    writer = runs.RunWriter(runs_dir, run_id, kind, config, seed, overwrite=overwrite, resume=resume)
    if resume:
        writer.truncate_metrics(int(checkpoint["step"]) if checkpoint else 0)
    return writer, checkpoint


def _started_with(run: Path) -> dict:
    """The settings a run without a checkpoint was started with, from its ``config.json`` (one sentence if
    it is damaged; with a checkpoint the checkpoint's own settings are used and config.json is rewritten)."""
    try:
        recorded = json.loads((run / runs.CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabError(f"Run {run}'s {runs.CONFIG} is damaged ({type(err).__name__}) and the run has no checkpoint "
                       f"to resume from; start it again with --overwrite instead of --resume.") from None
    config = recorded.get("config") if isinstance(recorded, dict) else None
    if not isinstance(config, dict):
        raise LabError(f"Run {run}'s {runs.CONFIG} holds no settings and the run has no checkpoint to resume "
                       f"from; start it again with --overwrite instead of --resume.")
    return config


def _resumable_checkpoint(run: Path) -> dict:
    """The run's last checkpoint; a damaged one (e.g. cut off by a kill mid-write) says how to go on."""
    try:
        checkpoint = load_training_checkpoint(run / runs.CHECKPOINT)
    except LabError as err:
        if "pickled Python objects" in str(err):
            raise
        raise LabError(f"Run {run}'s last checkpoint {runs.CHECKPOINT} is damaged (cut off or corrupt), so the run "
                       f"cannot continue from it; train it again from the start with --overwrite instead of "
                       f"--resume (or under another --name).") from err
    if not isinstance(checkpoint, dict) or "step" not in checkpoint:
        raise LabError(f"Run {run}'s last checkpoint {runs.CHECKPOINT} is not a lab training checkpoint; train the "
                       f"run again with --overwrite instead of --resume.")
    return checkpoint


def training_state(trainer: Trainer, states: dict[str, dict], settings: dict,
                   generators: dict[str, torch.Generator] | None = None, **extra) -> dict:
    """Everything a checkpoint holds: plain tensors and Python data only (loadable with ``weights_only``)."""
    return {**states, **extra, **trainer.state_dict(), "rng": rng_states(),
            "generators": {name: g.get_state() for name, g in (generators or {}).items()}, "config": settings}


def restore(checkpoint: dict, trainer: Trainer, loaders: dict[str, Callable[[dict], object]],
            generators: dict[str, torch.Generator] | None = None, ctx: dist.Context = dist.SINGLE) -> None:
    """Put a run back where its checkpoint left it: modules (``loaders[key](checkpoint[key])``), optimiser,
    step, RNG states and generators."""
    try:
        for key, load in loaders.items():
            load(checkpoint[key])
        trainer.load_state_dict(checkpoint)
        for name, generator in (generators or {}).items():
            generator.set_state(checkpoint["generators"][name])
    except (KeyError, RuntimeError, ValueError) as err:
        raise LabError(f"The run's checkpoint does not fit this model or objective ({str(err).splitlines()[0][:120]}); "
                       f"start a new run with another --name.") from err
    set_rng_states(checkpoint["rng"])
    if ctx.enabled and not ctx.is_main:
        seed_everything(checkpoint["config"]["train"]["seed"] + ctx.rank + ctx.world_size * trainer.step)

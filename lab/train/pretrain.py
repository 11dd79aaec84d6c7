"""Plain CLIP training (no distillation): the teacher's recipe and every table's no-KD row.

``python -m lab pretrain --preset teacher|student|smoke [key=value ...]``
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lab.config import apply_overrides, to_dict
from lab import runs
from lab.data.pairs import (DataConfig, build_pairs, check_contrastive_batch, check_dataset_fits, step_batches,
                            to_tensors)
from lab.errors import LabError
from lab.eval.probe import Probe
from lab.eval.suite import EvalConfig, evaluate
from lab.losses.functional import clip_loss
from lab.models import zoo
from lab.models.inherit import check_init, initialise
from lab.train.checkpoint import open_run, restore, training_state
from lab.train.loop import Trainer, TrainConfig, check_precision, compile_towers, resolve_device, seed_everything
from lab.train.presets import PRESETS

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class PretrainConfig:
    """A CLIP trained from scratch on image–caption pairs with the task loss alone."""

    model: str = "shapes-student"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reference_teacher: str = "shipped"  # geometry reference at evaluation; "" for none
    init: str = "random"  # or inherit[:SPEC]: TinyCLIP's weight inheritance (default: the shipped teacher)




def preset_config(preset: str, overrides: list[str] | dict | None = None) -> PretrainConfig:
    if preset not in PRESETS:
        raise LabError(f"Unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}.")
    from lab.config import overridden
    from lab.data.pairs import shapes_only_size

    cfg = apply_overrides(apply_overrides(PretrainConfig(), PRESETS[preset]), overrides)
    shapes_only_size(cfg.data, overridden(overrides, "data.size"))  # a preset's data.size never caps a CSV
    return cfg


def clamp_logit_scale(model) -> None:
    """Keep log(scale) in [0, ln 100] after every step (CLIP's clamp)."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def pretrain(cfg: PretrainConfig, run_id: str, runs_dir: str | Path = "runs", overwrite: bool = False,
             resume: bool = False) -> Path:
    """Train, evaluate and write a run directory; returns its path. ``resume`` continues ``run_id``.

    ``eval.per_style=0`` skips the ShapesWorld evaluation, as in ``distill``."""
    device = resolve_device(cfg.train.device)
    check_precision(cfg.train.precision, device)
    check_contrastive_batch(cfg.train.batch_size)
    check_init(cfg.init)
    with runs.claimed(runs_dir, run_id, overwrite, resume):  # one writer per run, before any model is loaded
        return _pretrain(cfg, run_id, runs_dir, overwrite, resume, device)


def _pretrain(cfg: PretrainConfig, run_id: str, runs_dir: str | Path, overwrite: bool, resume: bool,
              device: torch.device) -> Path:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dataset = build_pairs(cfg.data)  # the data's own refusals before any model is loaded
    check_dataset_fits(dataset, cfg.train.batch_size)
    seed_everything(cfg.train.seed)
    clip = zoo.load_student(cfg.model, cfg.train.seed, device=str(device))
    initialise(clip, cfg.init)
    reference = zoo.load(zoo.SHIPPED_TEACHER if cfg.reference_teacher == "shipped" else cfg.reference_teacher,
                         device=str(device)) if cfg.reference_teacher else None
    writer, checkpoint = open_run(runs_dir, run_id, "pretrain", to_dict(cfg), to_dict(cfg), cfg.train.seed,
                                  overwrite, resume)
    if cfg.train.compile:
        compile_towers(clip.model)
    clip.model.train()
    trainer = Trainer(clip.model.named_parameters(), cfg.train, writer.log, desc=f"pretrain {run_id}")
    if checkpoint is not None:
        restore(checkpoint, trainer, {"model": clip.model.load_state_dict})
        print(f"resuming {run_id} at step {trainer.step} of {cfg.train.steps}")

    def step_fn(batch):
        images, tokens = to_tensors(batch, clip)
        image, text = clip.model.encode_image(images, normalize=True), clip.model.encode_text(tokens, normalize=True)
        return {"task": clip_loss(image, text, clip.model.logit_scale.exp())}

    probe = None  # zero-shot on a small subset and the model's geometry over training (lab.eval.probe)
    if cfg.eval.per_style and cfg.train.eval_every:
        probe = Probe(clip, cfg.eval, writer.path, reference)
        probe.resume(trainer.step)

    def probe_eval(step):
        return probe(step) if probe is not None else None

    def save(step=None):
        writer.save_checkpoint(training_state(trainer, {"model": clip.model.state_dict()}, to_dict(cfg),
                                              arch=clip.arch))

    batches = step_batches(dataset, cfg.train.batch_size, cfg.train.steps, cfg.train.seed, trainer.step,
                           cfg.data.workers)
    stats = trainer.fit(batches, step_fn, after_step=lambda: clamp_logit_scale(clip.model),
                        every={cfg.train.eval_every: probe_eval}, checkpoint=save)
    save()
    t0 = time.perf_counter()
    metrics = {}
    if cfg.eval.per_style:
        metrics, arrays = evaluate(clip, cfg.eval, teacher=reference)
        writer.save_embeddings(arrays)
    writer.finish({
        **metrics,
        "params": clip.num_parameters(),
        "wall_time_s": stats.wall_time_s, "eval_time_s": time.perf_counter() - t0,
        "mean_step_s": stats.mean_step_s, "mean_data_s": stats.mean_data_s, "images_per_s": stats.images_per_s,
        "steps": stats.steps, "checkpoint": "last", "epoch_policy": "last step",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return writer.path

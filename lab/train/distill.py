"""CLIP-KD / CLIP-RD distillation: a student CLIP trained on image–caption pairs with a frozen teacher.

``python -m lab distill --teacher shipped --student shapes-student --loss crd+fd+icl [key=value ...]``
``torchrun --nproc_per_node N -m lab distill ...`` trains on N processes with the same global batch
(:mod:`lab.train.dist`); ``--resume`` continues a killed run from its last checkpoint.

Same data, steps and optimiser as the no-KD student (``pretrain --preset student``),
so the two are compared at equal student steps. The teacher's embeddings come from
the teacher cache by default (``teacher_mode=cache``, also spelt ``cached``) or a live forward per step
(``teacher_mode=online``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lab import runs
from lab.config import apply_overrides, overridden, to_dict
from lab.data.pairs import DataConfig, build_pairs, shapes_only_size, size_note, step_batches, to_tensors
from lab.data.shards import DamageReport, ShardStream, check_resume
from lab.data.shards import check_config as check_shards
from lab.data.shapes import PROMPT_TEMPLATES, label_space
from lab.errors import LabError
from lab.eval.probe import Probe
from lab.eval.benchmarks import benchmark_specs, run_benchmark, summary_metrics, training_classnames
from lab.eval.suite import EvalConfig, encode_texts, evaluate
from lab.losses.functional import clip_loss, masked_encode_image
from lab.losses.objective import Embeddings, Objective, parse_terms
from lab.models import zoo
from lab.models.prompts import encode_text_batches, trim_padding
from lab.train import dist
from lab.train.cache import TeacherCache
from lab.train.logger import RunLogger
from lab.train.reinforced_cache import ShardTeacher
from lab.train.checkpoint import open_run, restore, training_state
from lab.train.gradcache import check_accumulate
from lab.train.loop import Trainer, TrainConfig, compile_towers, seed_everything, start_processes
from lab.train.pretrain import PRESETS, clamp_logit_scale

TEACHER_MODES = ("cache", "online")
# Other spellings of a teacher mode: issue 17 and MobileCLIP-style recipes say ``cached``.
TEACHER_MODE_ALIASES = {"cached": "cache"}
# What the student's image tower sees when MFD is on: "masked" — only the masked image, one
# forward whose embedding every term uses (CLIP-KD §3.2.3; the official code's single call with
# mask_ratio); "both" — the full image for the other terms plus a second, masked forward for MFD.
MFD_INPUTS = ("masked", "both")


@dataclass
class DistillConfig:
    """A student distilled from a frozen teacher under the no-KD student's budget."""

    student: str = "shapes-student"
    teacher: str = "shipped"
    loss: str = "clipkd"
    weights: str = ""
    variant: str = "paper"
    mask_ratio: float = 0.5
    mfd_input: str = "masked"
    projection: str = "after"  # or before: CLIP-RD's official reading (lab.losses.objective.PROJECTION_POINTS)
    teacher_mode: str = "cache"
    cache_dir: str = ""  # default: <runs_dir>/.cache/teacher
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def default_config(overrides: list[str] | dict | None = None) -> DistillConfig:
    """The no-KD student's budget (the ``student`` pretraining preset) plus any overrides."""
    budget = {k: v for k, v in PRESETS["student"].items() if k.startswith(("data.", "train.", "eval."))}
    cfg = apply_overrides(apply_overrides(DistillConfig(), budget), overrides)
    shapes_only_size(cfg.data, overridden(overrides, "data.size"))  # the preset's 8,192 never caps a CSV
    cfg.teacher_mode = TEACHER_MODE_ALIASES.get(cfg.teacher_mode, cfg.teacher_mode)  # config.json says "cache"
    return cfg


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def dataset_counts(data: DataConfig, dataset) -> dict:
    """What the summary says about the data: the pairs a fixed dataset holds, and a data.size cap on a file dataset."""
    counts = {} if getattr(dataset, "endless", False) or isinstance(dataset, ShardStream) else {"train_pairs": len(dataset)}
    if size_note(data):
        counts["data_size"] = data.size
    return counts


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise LabError(f"Unknown {key} '{value}'; choose one of: {', '.join(choices)}.")


def _own_text_tower(model) -> bool:
    """open_clip's causal TextTransformer (CLIP, MobileCLIP, SigLIP …), which the lab's text helpers read
    layer by layer; a Hugging Face tower or CoCa's class-token tower goes through ``encode_text`` instead."""
    from open_clip.transformer import TextTransformer

    tower = getattr(model, "text", model)
    return (isinstance(tower, TextTransformer) or tower is model) and getattr(tower, "cls_emb", None) is None \
        and hasattr(tower, "token_embedding")


def check_mfd_student(student, objective) -> None:
    """MFD masks ViT patch tokens: refuse another image tower before anything is trained."""
    from open_clip.transformer import VisionTransformer

    if objective.needs_masked_images and not isinstance(student.model.visual, VisionTransformer):
        raise LabError(f"The mfd term masks ViT patch tokens, but {student.arch}'s image tower is a "
                       f"{type(student.model.visual).__name__}; use a ViT student (open_clip's VisionTransformer) "
                       f"or fd instead.")


class DistillStep:
    """One distillation forward: the student's embeddings, the teacher's (cached or live), the objective's terms.

    With an objective of no terms it is exactly the no-KD student's step (the teacher is not touched).
    Under torchrun the batch is this rank's shard: every embedding is gathered over the ranks
    before any loss, so every term sees the global batch (:mod:`lab.train.dist`).
    """

    def __init__(self, student, teacher, objective: Objective, cached: dict | None = None,
                 mask_ratio: float = 0.5, classnames=(), seed: int = 0, mfd_input: str = "masked",
                 ctx: dist.Context = dist.SINGLE, accumulate: int = 1):
        _check_choice("mfd_input", mfd_input, MFD_INPUTS)
        self.student, self.teacher, self.objective, self.cached = student, teacher, objective, cached
        self.accumulate = accumulate  # > 1: GradCache (lab.train.gradcache) — this step backpropagates itself
        self.backpropagates = accumulate > 1
        self.mask_ratio, self.mfd_input, self.ctx = mask_ratio, mfd_input, ctx
        self.device = next(student.model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        if objective.needs_class_texts:  # Hinton KD: both models' zero-shot class weights, one prompt each
            prompts = [PROMPT_TEMPLATES[0].format(c) for c in classnames]
            tokens = student.tokenize(prompts).to(self.device)
            self.class_tokens = trim_padding(student.model, tokens) if _own_text_tower(student.model) else tokens
            self.teacher_classes = encode_texts(teacher, prompts).to(self.device)

    def teacher_outputs(self, batch, images):
        if "teacher_image" in batch.factors:  # cached beside the shards, for this very crop (reinforced_cache)
            f = {k: torch.as_tensor(batch.factors[f"teacher_{k}"], device=self.device) for k in ("image", "text", "scale")}
            return f["image"], f["text"], f["scale"][0]
        if self.cached is not None:
            index = torch.as_tensor(batch.factors["index"])  # rows of the memory-mapped cache, this batch's only
            dtype = next(self.student.model.parameters()).dtype
            rows = [self.cached[k][index].to(self.device, dtype) for k in ("image", "text")]
            return rows[0], rows[1], self.cached["scale"][0].to(self.device)
        teacher = self.teacher
        with torch.no_grad():
            t_images = images if teacher.image_size == self.student.image_size else teacher.image_tensor(batch.images)
            return (teacher.model.encode_image(t_images, normalize=True),
                    teacher.model.encode_text(teacher.tokenize(batch.captions), normalize=True),
                    teacher.model.logit_scale.exp())

    def _terms(self, batch, images, image_raw, text_raw, scale, masked_raw=None, class_text_raw=None):
        """The objective's terms on the (gathered) student embeddings of the whole batch."""
        ctx = self.ctx
        if not self.objective.names:
            return {"task": clip_loss(F.normalize(image_raw, dim=-1), F.normalize(text_raw, dim=-1), scale)}
        t_image, t_text, t_scale = self.teacher_outputs(batch, images)
        e = Embeddings(image_raw, text_raw, scale, dist.gather(t_image, ctx), dist.gather(t_text, ctx), t_scale,
                       masked_image_raw=masked_raw)
        if self.objective.needs_class_texts:
            e.class_text_raw, e.teacher_class_text = class_text_raw, self.teacher_classes
        return self.objective(e)

    def _gradcache(self, batch, images, tokens) -> dict[str, torch.Tensor]:
        """train.accumulate=N: the full batch's exact gradient, the towers run N chunks at a time."""
        from lab.train.gradcache import gradcache_step

        model, ctx = self.student.model, self.ctx

        def loss_of(image_raw, text_raw, class_text_raw):
            return self._terms(batch, images, dist.gather(image_raw, ctx), dist.gather(text_raw, ctx),
                               model.logit_scale.exp(), class_text_raw=class_text_raw)

        def classes():  # the class prompts (trimmed of padding for the lab's own text tower)
            own = _own_text_tower(model)
            return encode_text_batches(model, self.class_tokens)[0] if own else model.encode_text(self.class_tokens)

        if not self.objective.needs_class_texts:
            classes = None
        return gradcache_step(lambda i, t: (model.encode_image(i), model.encode_text(t)), loss_of, images, tokens,
                              self.accumulate, classes)

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        model, objective, ctx = self.student.model, self.objective, self.ctx
        images, tokens = to_tensors(batch, self.student)
        if self.accumulate > 1:
            return self._gradcache(batch, images, tokens)
        masked_raw = None
        if objective.needs_masked_images:
            keep_rule = "floor" if objective.variant_of("mfd") == "official" else "ceil"  # the official ⌊(1 − r)·L⌋
            masked_raw = dist.gather(masked_encode_image(model.visual, images, self.mask_ratio, self.generator,
                                                         (ctx.rank, ctx.world_size), keep_rule), ctx)
        only_masked = masked_raw is not None and self.mfd_input == "masked"
        image_raw = masked_raw if only_masked else dist.gather(model.encode_image(images), ctx)
        scale = model.logit_scale.exp()
        if objective.needs_class_texts and _own_text_tower(model):  # captions and class prompts: one token lookup
            text_raw, class_text_raw = encode_text_batches(model, tokens, self.class_tokens)
        elif objective.needs_class_texts:  # a Hugging Face or CoCa text tower: open_clip's own encode_text
            text_raw, class_text_raw = model.encode_text(tokens), model.encode_text(self.class_tokens)
        else:
            text_raw = model.encode_text(tokens)
        text_raw = dist.gather(text_raw, ctx)
        return self._terms(batch, images, image_raw, text_raw, scale, masked_raw,
                           class_text_raw if objective.needs_class_texts else None)


def distill(cfg: DistillConfig, run_id: str, runs_dir: str | Path = "runs", overwrite: bool = False,
            resume: bool = False) -> Path:
    """Distil, evaluate and write a run directory (rank 0 under torchrun); returns its path.

    ``resume`` continues the run ``run_id`` from its last checkpoint. ``eval.per_style=0``
    skips the ShapesWorld evaluation (real data: the summary then holds the training numbers).
    """
    cfg.teacher_mode = TEACHER_MODE_ALIASES.get(cfg.teacher_mode, cfg.teacher_mode)
    _check_choice("teacher_mode", cfg.teacher_mode, TEACHER_MODES)
    _check_choice("mfd_input", cfg.mfd_input, MFD_INPUTS)
    benchmarks = benchmark_specs(cfg.eval.benchmarks)
    check_accumulate(cfg.train.accumulate, parse_terms(cfg.loss), cfg.train.batch_size // max(1, _world_size()))
    if size_note(cfg.data) and os.environ.get("RANK", "0") == "0":
        print(size_note(cfg.data))
    classnames = (training_classnames(cfg.data.source, cfg.eval.classnames, benchmarks,  # before any model load
                                      label_space(cfg.eval.label_space).classnames)
                  if "kd" in parse_terms(cfg.loss) else ())
    check_shards(cfg.data)  # webdataset settings and files, before any model is loaded
    device, ctx = start_processes(cfg.train)
    seed_everything(cfg.train.seed)
    student = zoo.load_student(cfg.student, cfg.train.seed, device=str(device))  # before the teacher: one start per seed
    teacher = zoo.load_teacher(cfg.teacher, str(device))
    objective = Objective(cfg.loss, student.embed_dim, teacher.embed_dim, cfg.weights, cfg.variant,
                          projection_point=cfg.projection).to(device)
    check_mfd_student(student, objective)
    dist.broadcast_from_main([student.model, objective], ctx)
    if ctx.enabled:
        seed_everything(cfg.train.seed + ctx.rank)  # per-rank streams for anything random inside a step
    dataset = build_pairs(cfg.data)
    cached = None
    if cfg.teacher_mode == "cache" and isinstance(dataset, ShardStream):  # K crops' embeddings beside the shards
        dataset.teacher = ShardTeacher.open(teacher, dataset.paths, dataset.augmentation, cfg.data.image_size)
    elif cfg.teacher_mode == "cache":
        if getattr(dataset, "endless", False):
            raise LabError("The teacher cache needs a fixed dataset (data.size > 0); use teacher_mode=online "
                           "for an endless stream.")
        cache = TeacherCache(cfg.cache_dir or Path(runs_dir) / ".cache" / "teacher")
        with dist.main_first(ctx):  # rank 0 builds a missing entry, the others read it
            cached, hit = cache.load_or_build(teacher, dataset, to_dict(cfg.data))
        if ctx.is_main:
            print(f"teacher cache {'hit' if hit else 'built'}: {len(dataset)} pairs (entry {cache.last_path})")
    writer, checkpoint = open_run(runs_dir, run_id, "distill", {**to_dict(cfg), "formula": objective.formula()},
                                  to_dict(cfg), cfg.train.seed, overwrite, resume, ctx)
    if ctx.is_main:
        print(objective.formula())
    if cfg.train.compile:
        compile_towers(student.model)
    if cfg.train.grad_checkpointing:  # open_clip's activation checkpointing: less memory, one more forward
        student.model.set_grad_checkpointing(True)
    student.model.train()
    params = list(student.model.named_parameters()) + [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    logger = RunLogger(writer, cfg.train.logger, ctx.is_main)
    trainer = Trainer(params, cfg.train, logger.log, desc=f"distill {run_id}", ctx=ctx)
    step_fn = DistillStep(student, teacher, objective, cached, cfg.mask_ratio, classnames, cfg.train.seed,
                          cfg.mfd_input, ctx, accumulate=cfg.train.accumulate)
    if checkpoint is not None:
        if int(checkpoint.get("processes", ctx.world_size)) != ctx.world_size:
            raise LabError(f"Run {run_id} was trained on {int(checkpoint['processes'])} processes and this resume "
                           f"has {ctx.world_size}; resume it with the same torchrun --nproc_per_node (the batch "
                           f"split and the data streams depend on it).")
        restore(checkpoint, trainer, {"model": student.model.load_state_dict, "objective": objective.load_state_dict},
                {"mfd": step_fn.generator}, ctx)
        check_resume(checkpoint["config"], cfg)
        if ctx.is_main:
            print(f"resuming {run_id} at step {trainer.step} of {cfg.train.steps}")

    def after_step():
        clamp_logit_scale(student.model)
        objective.clamp_()

    probe = None  # zero-shot on a small subset and the student's geometry over training (lab.eval.probe)
    if cfg.eval.per_style and cfg.train.eval_every and ctx.is_main:
        probe = Probe(student, cfg.eval, writer.path, teacher)
        probe.resume(trainer.step)

    def probe_eval(step):
        return probe(step) if probe is not None else None

    def save(step=None):
        if ctx.is_main:
            writer.save_checkpoint(training_state(
                trainer, {"model": student.model.state_dict(), "objective": objective.state_dict()}, to_dict(cfg),
                {"mfd": step_fn.generator}, arch=student.arch, processes=ctx.world_size))

    damage = DamageReport()
    batches = damage.track(step_batches(dataset, cfg.train.batch_size, cfg.train.steps, cfg.train.seed,
                                        trainer.step, cfg.data.workers, (ctx.rank, ctx.world_size)))
    stats = trainer.fit(batches, step_fn, after_step=after_step, every={cfg.train.eval_every: probe_eval},
                        checkpoint=save)
    damaged = damage.summary(ctx) if isinstance(dataset, ShardStream) else {}
    if not ctx.is_main:
        return writer.path
    save()
    t0 = time.perf_counter()
    metrics = {}
    if cfg.eval.per_style:
        metrics, arrays = evaluate(student, cfg.eval, teacher=teacher, projection=objective.projection)
        writer.save_embeddings(arrays)
    if benchmarks:  # real data: clip_benchmark's metrics, as benchmark/<dataset>/<metric>
        records = [run_benchmark(student, spec, cfg.eval.classnames, workers=cfg.data.workers) for spec in benchmarks]
        runs.atomic_write_json(writer.path / "benchmarks.json", records)
        metrics.update(summary_metrics(records))
    logger.close(metrics)
    writer.finish({
        **metrics, **damaged, "formula": objective.formula(), "params": student.num_parameters(),
        "teacher_params": teacher.num_parameters(), "teacher_mode": cfg.teacher_mode,
        "wall_time_s": stats.wall_time_s, "eval_time_s": time.perf_counter() - t0,
        "mean_step_s": stats.mean_step_s, "mean_data_s": stats.mean_data_s, "images_per_s": stats.images_per_s,
        "steps": stats.steps, "processes": ctx.world_size, **dataset_counts(cfg.data, dataset), "precision": cfg.train.precision,
        "checkpoint": "last", "epoch_policy": "last step", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return writer.path

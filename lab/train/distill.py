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

import time
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path

import torch
import torch.nn.functional as F

from lab import runs
from lab.config import apply_overrides, to_dict
from lab.data.pairs import (DataConfig, build_pairs, check_contrastive_batch, check_dataset_fits, step_batches,
                            to_tensors)
from lab.data.curation import joint_sample, learnability, super_batch_size
from lab.data.shards import DamageReport, ShardStream, check_resume
from lab.data.shards import check_config as check_shards
from lab.data.shards import is_shard_source, shard_paths
from lab.data.shapes import PROMPT_TEMPLATES, label_space
from lab.errors import LabError
from lab.eval.probe import Probe
from lab.eval.benchmarks import benchmark_specs, run_benchmark, summary_metrics
from lab.eval.suite import EvalConfig, encode_texts, evaluate
from lab.losses.functional import clip_loss, masked_encode_image
from lab.losses.objective import Embeddings, Objective
from lab.models import zoo
from lab.models.inherit import check_init, initialise
from lab.models.prompts import encode_text_batches, trim_padding
from lab.train import dist
from lab.train.cache import TeacherCache
from lab.train.logger import RunLogger
from lab.train.reinforced_cache import ShardTeacher
from lab.train.synthetic import Synthetic, unpaired_texts
from lab.data.datacompdr import DRTeacher, is_reinforced, split_blocks
from lab.train.checkpoint import open_run, restore, training_state
from lab.train.loop import Trainer, TrainConfig, compile_towers, seed_everything, start_processes
from lab.train.pretrain import PRESETS, clamp_logit_scale

TEACHER_MODES = ("cache", "online")
# Other spellings of a teacher mode: issue 17 and MobileCLIP-style recipes say ``cached``.
TEACHER_MODE_ALIASES = {"cached": "cache"}
# What the student's image tower sees when MFD is on: "masked" — only the masked image, one
# forward whose embedding every term uses (CLIP-KD §3.2.3; the official code's single call with
# mask_ratio); "both" — the full image for the other terms plus a second, masked forward for MFD.
MFD_INPUTS = ("masked", "both")
SYNTHETIC_MODES = ("off", "both", "mix")


@dataclass
class DistillConfig:
    """A student distilled from a frozen teacher under the no-KD student's budget."""

    student: str = "shapes-student"
    teacher: str = "shipped"
    init: str = "random"  # or inherit: TinyCLIP's manual weight inheritance from the teacher (lab.models.inherit)
    loss: str = "clipkd"
    weights: str = ""
    variant: str = "paper"
    mask_ratio: float = 0.5
    mfd_input: str = "masked"
    projection: str = "after"  # or before: CLIP-RD's official reading (lab.losses.objective.PROJECTION_POINTS)
    teacher_mode: str = "cache"
    # ACID (paper-level: no official code): train on the most learnable sub-batch of a super-batch
    # (lab.data.curation); "" off. ACED = curation=acid plus loss=crd.
    curation: str = ""
    curation_filter: float = 0.8  # the share of the super-batch left out: 0.8 draws 5× the batch
    curation_chunks: int = 16  # JEST's chunks of the joint sampling
    cache_dir: str = ""  # default: <runs_dir>/.cache/teacher
    # Modern recipes (lab.losses.modern; docs/methods-modern.md). ``teacher=shipped,OTHER`` is an ensemble.
    task_weight: float = 1.0  # CLIP's loss on the student; 0 = MobileCLIP's published pure KD, DIME-FM's official reading
    distill_scale: str = "100"  # the ensemble's logit scales: one, one per teacher, or "own" (MobileCLIP: 100)
    ensemble_average: str = "softmax"  # or concat: one softmax over concatenated features (no --distill-average-after-softmax)
    synthetic: str = "off"  # MobileCLIP's synthetic captions: off, both (gt + syn terms) or mix (one, drawn)
    mix_synthetic_ratio: float = 0.5  # synthetic=mix: probability an item's caption is the synthetic one
    captioner_drop: float = 0.2  # lab.data.captioner: each of colour/size/position left out at this rate
    captioner_wrong: float = 0.1  # ... and colour or shape hallucinated at this rate
    unpaired: bool = False  # DIME-FM: the teacher's text features come from a separate sentence stream
    dr_teacher_dims: str = ""  # DataCompDR-layout shards that do not say the ensemble's widths: e.g. 768,768
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def default_config(overrides: list[str] | dict | None = None) -> DistillConfig:
    """The no-KD student's budget (the ``student`` pretraining preset) plus any overrides."""
    budget = {k: v for k, v in PRESETS["student"].items() if k.startswith(("data.", "train.", "eval."))}
    cfg = apply_overrides(apply_overrides(DistillConfig(), budget), overrides)
    cfg.teacher_mode = TEACHER_MODE_ALIASES.get(cfg.teacher_mode, cfg.teacher_mode)  # config.json says "cache"
    return cfg


CURATIONS = ("", "acid")


class Curator:
    """ACID's choice of the sub-batch (lab.data.curation): the student's and the teacher's loss matrices on the
    super-batch, no gradient, then JEST's chunked joint sampling of their difference."""

    def __init__(self, step: "DistillStep", batch_size: int, chunks: int, seed: int):
        self.step, self.batch_size, self.chunks = step, batch_size, chunks
        self.generator = torch.Generator().manual_seed(seed + 7919)

    @torch.no_grad()
    def __call__(self, batch):
        student = self.step.student
        images, tokens = to_tensors(batch, student)
        learner = (student.model.encode_image(images, normalize=True), student.model.encode_text(tokens, normalize=True),
                   student.model.logit_scale.exp())
        reference = self.step.teacher_outputs(batch, images)  # the teacher's own embeddings and scale
        chosen = joint_sample(learnability(learner, reference), self.batch_size, self.chunks, self.generator)
        return batch.subset(chosen.cpu().numpy())


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise LabError(f"Unknown {key} '{value}'; choose one of: {', '.join(choices)}.")


class DistillStep:
    """One distillation forward: the student's embeddings, the teacher's (cached or live), the objective's terms.

    With an objective of no terms it is exactly the no-KD student's step (the teacher is not touched).
    Under torchrun the batch is this rank's shard: every embedding is gathered over the ranks
    before any loss, so every term sees the global batch (:mod:`lab.train.dist`).
    """

    def __init__(self, student, teacher, objective: Objective, cached: dict | None = None,
                 mask_ratio: float = 0.5, classnames=(), seed: int = 0, mfd_input: str = "masked",
                 ctx: dist.Context = dist.SINGLE, extra_teachers=(), synthetic: Synthetic | None = None,
                 unpaired: bool = False):
        _check_choice("mfd_input", mfd_input, MFD_INPUTS)
        self.student, self.teacher, self.objective, self.cached = student, teacher, objective, cached
        self.extra_teachers = list(extra_teachers)  # [(teacher, cached dict or None)] after teacher 1
        self.synthetic, self.unpaired = synthetic, unpaired
        self.stored_synthetic = False  # DataCompDR-layout shards: the synthetic caption and its embeddings are stored
        self.mask_ratio, self.mfd_input, self.ctx = mask_ratio, mfd_input, ctx
        self.device = next(student.model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        if objective.needs_class_texts:  # Hinton KD: both models' zero-shot class weights, one prompt each
            prompts = [PROMPT_TEMPLATES[0].format(c) for c in classnames]
            self.class_tokens = trim_padding(student.model, student.tokenize(prompts).to(self.device))
            self.teacher_classes = encode_texts(teacher, prompts).to(self.device)

    def teacher_outputs(self, batch, images):
        if "teacher_image" in batch.factors:  # cached beside the shards, for this very crop (reinforced_cache)
            f = {k: torch.as_tensor(batch.factors[f"teacher_{k}"], device=self.device) for k in ("image", "text", "scale")}
            return f["image"], f["text"], f["scale"][0]
        if self.cached is not None:
            index = torch.as_tensor(batch.factors["index"], device=self.device)
            return self.cached["image"][index], self.cached["text"][index], self.cached["scale"][0]
        teacher = self.teacher
        with torch.no_grad():
            t_images = images if teacher.image_size == self.student.image_size else teacher.image_tensor(batch.images)
            return (teacher.model.encode_image(t_images, normalize=True),
                    teacher.model.encode_text(teacher.tokenize(batch.captions), normalize=True),
                    teacher.model.logit_scale.exp())

    curator: Curator | None = None  # ACID: the sub-batch is chosen from the super-batch the loader gives

    def extra_outputs(self, batch, images, which=None):
        """The ensemble's other members: (image, text, scale) each, from their cache or a live forward."""
        out = []
        for teacher, cached in self.extra_teachers:
            if cached is not None:
                index = torch.as_tensor(batch.factors["index"], device=self.device)
                out.append((cached["image"][index], cached["text"][index], cached["scale"][0]))
                continue
            with torch.no_grad():
                t_images = images if teacher.image_size == self.student.image_size else teacher.image_tensor(batch.images)
                out.append((teacher.model.encode_image(t_images, normalize=True),
                            teacher.model.encode_text(teacher.tokenize(batch.captions), normalize=True),
                            teacher.model.logit_scale.exp()))
        return out

    def stored_ensemble(self, batch):
        """DataCompDR-layout shards (:mod:`lab.data.datacompdr`): every member's embeddings from the shard, split
        into blocks; teacher 1's (image, text, scale) and the others' (image, text, scale). No teacher runs."""
        f = batch.factors
        dims, scales = f["teacher_dims"][0], f["teacher_scales"][0]
        blocks = {name: split_blocks(torch.as_tensor(f[f"teacher_{name}"], device=self.device), dims)
                  for name in ("image", "text")}
        members = [(blocks["image"][m], blocks["text"][m], float(scales[m])) for m in range(len(dims))]
        return (*members[0], members[1:])

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        model, objective, ctx = self.student.model, self.objective, self.ctx
        if self.curator is not None:
            batch = self.curator(batch)
        syn = self.synthetic
        if syn is not None and syn.mode == "mix":  # preprocess_dr: the caption itself is swapped, no syn term
            batch, swapped = syn.mix(batch)
        images, tokens = to_tensors(batch, self.student)
        masked_raw = None
        if objective.needs_masked_images:
            keep_rule = "floor" if objective.variant_of("mfd") == "official" else "ceil"  # the official ⌊(1 − r)·L⌋
            masked_raw = dist.gather(masked_encode_image(model.visual, images, self.mask_ratio, self.generator,
                                                         (ctx.rank, ctx.world_size), keep_rule), ctx)
        only_masked = masked_raw is not None and self.mfd_input == "masked"
        image_raw = masked_raw if only_masked else dist.gather(model.encode_image(images), ctx)
        scale = model.logit_scale.exp()
        if objective.needs_class_texts:  # captions and class prompts share one token-embedding lookup
            text_raw, class_text_raw = encode_text_batches(model, tokens, self.class_tokens)
        else:
            text_raw = model.encode_text(tokens)
        text_raw = dist.gather(text_raw, ctx)
        if not objective.names:
            return {"task": clip_loss(F.normalize(image_raw, dim=-1), F.normalize(text_raw, dim=-1), scale)}
        if "teacher_dims" in batch.factors:
            t_image, t_text, t_scale, extra = self.stored_ensemble(batch)
        else:
            t_image, t_text, t_scale = self.teacher_outputs(batch, images)
            extra = self.extra_outputs(batch, images)
        if syn is not None and syn.mode == "mix" and swapped.any():  # every teacher's text of the swapped captions
            t_text, extra = syn.teacher_texts(batch, swapped, t_text, extra)
        if self.unpaired:  # DIME-FM: sentences from a stream unpaired with the images
            t_text = unpaired_texts(t_text, self.generator)
        e = Embeddings(image_raw, text_raw, scale, dist.gather(t_image, ctx), dist.gather(t_text, ctx), t_scale,
                       masked_image_raw=masked_raw,
                       extra_teachers=tuple((dist.gather(i, ctx), dist.gather(t, ctx), c) for i, t, c in extra))
        if syn is not None and syn.mode == "both":
            captions, teacher_syn = syn.for_batch(batch)
            e.syn_text_raw = dist.gather(model.encode_text(self.student.tokenize(captions).to(self.device)), ctx)
            e.teacher_syn_text = tuple(dist.gather(x, ctx) for x in teacher_syn)
        elif self.stored_synthetic:
            f = batch.factors
            e.syn_text_raw = dist.gather(model.encode_text(self.student.tokenize(list(f["teacher_syn_caption"])).to(
                self.device)), ctx)
            e.teacher_syn_text = tuple(dist.gather(x, ctx) for x in split_blocks(
                torch.as_tensor(f["teacher_syn_text"], device=self.device), f["teacher_dims"][0]))
        if objective.needs_class_texts:
            e.class_text_raw, e.teacher_class_text = class_text_raw, self.teacher_classes
        return objective(e)


def distill(cfg: DistillConfig, run_id: str, runs_dir: str | Path = "runs", overwrite: bool = False,
            resume: bool = False) -> Path:
    """Distil, evaluate and write a run directory (rank 0 under torchrun); returns its path.

    ``resume`` continues the run ``run_id`` from its last checkpoint. ``eval.per_style=0``
    skips the ShapesWorld evaluation (real data: the summary then holds the training numbers).
    """
    cfg.teacher_mode = TEACHER_MODE_ALIASES.get(cfg.teacher_mode, cfg.teacher_mode)
    _check_choice("teacher_mode", cfg.teacher_mode, TEACHER_MODES)
    _check_choice("mfd_input", cfg.mfd_input, MFD_INPUTS)
    _check_choice("synthetic", cfg.synthetic, SYNTHETIC_MODES)
    teacher_names = [t.strip() for t in cfg.teacher.split(",") if t.strip()]
    if not teacher_names:
        raise LabError("teacher is empty; name one (shipped) or an ensemble (shipped,runs/OTHER).")
    check_contrastive_batch(cfg.train.batch_size)
    objective_probe = Objective(cfg.loss, 1, 1, cfg.weights, cfg.variant, projection_point=cfg.projection,
                                ensemble_average=cfg.ensemble_average,
                                task_weight=cfg.task_weight)  # bad names and weights, before any model loads
    if len(teacher_names) > 1 and not any(n in ("mobileclip", "siglipkd") for n in objective_probe.names):
        raise LabError(f"An ensemble of {len(teacher_names)} teachers needs an ensemble term (--loss mobileclip or "
                       f"siglipkd); the other terms read one teacher.")
    check_init(cfg.init)
    _check_choice("curation", cfg.curation, CURATIONS)
    check_shards(cfg.data)  # webdataset settings and files, before any model is loaded
    reinforced = is_shard_source(cfg.data.source) and is_reinforced(shard_paths(cfg.data.source)[0])
    if cfg.synthetic != "off" and cfg.data.source != "shapes" and not reinforced:
        raise LabError("synthetic captions come from ShapesWorld's captioner or from DataCompDR-layout shards; use "
                       "data.source=shapes or reinforced shards, or synthetic=off for other data.")
    if reinforced and cfg.synthetic == "mix":
        raise LabError("synthetic=mix is not implemented for DataCompDR-layout shards yet; use synthetic=both or off.")
    benchmarks = benchmark_specs(cfg.eval.benchmarks)
    with runs.claimed(runs_dir, run_id, overwrite, resume, main=dist.from_env().is_main):  # one writer per run
        return _distill(cfg, run_id, runs_dir, overwrite, resume, benchmarks, teacher_names, reinforced)


def _distill(cfg: DistillConfig, run_id: str, runs_dir: str | Path, overwrite: bool, resume: bool,
             benchmarks: list, teacher_names: list[str], reinforced: bool) -> Path:
    load_batch = super_batch_size(cfg.train.batch_size, cfg.curation_filter) if cfg.curation else cfg.train.batch_size
    dataset = build_pairs(cfg.data)  # the data's own refusals (and a too-small set) before any model or cache
    check_dataset_fits(dataset, load_batch)
    device, ctx = start_processes(cfg.train)
    if cfg.curation and ctx.enabled:
        raise LabError("curation=acid runs on one process (its sampler sees the whole super-batch); "
                       "run it without torchrun.")
    seed_everything(cfg.train.seed)
    student = zoo.load_student(cfg.student, cfg.train.seed, device=str(device))  # before the teacher: one start per seed
    teacher = zoo.load_teacher(teacher_names[0], str(device))
    others = [zoo.load_teacher(name, str(device)) for name in teacher_names[1:]]
    initialise(student, cfg.init, teacher)  # after the seed's draw: init=random rows are unchanged
    objective = Objective(cfg.loss, student.embed_dim, teacher.embed_dim, cfg.weights, cfg.variant,
                          projection_point=cfg.projection, distill_scale=cfg.distill_scale,
                          ensemble_average=cfg.ensemble_average, task_weight=cfg.task_weight).to(device)
    dist.broadcast_from_main([student.model, objective], ctx)
    if ctx.enabled:
        seed_everything(cfg.train.seed + ctx.rank)  # per-rank streams for anything random inside a step
    cached, teacher_mode = None, cfg.teacher_mode
    if reinforced:  # DataCompDR's layout: the crops and the ensemble's embeddings are in the shards
        dataset.teacher = DRTeacher.open(dataset.paths, cfg.dr_teacher_dims, cfg.train.seed)
        dataset.augmentation = dc_replace(dataset.augmentation, kind="crop", count=dataset.teacher.k)
    elif cfg.teacher_mode == "cache" and isinstance(dataset, ShardStream):  # K crops' embeddings beside the shards
        dataset.teacher = ShardTeacher.open_or_none(teacher, dataset.paths, dataset.augmentation, cfg.data.image_size)
        if dataset.teacher is None:  # plain shards, as open_clip users bring them: the teacher runs online
            teacher_mode = "online"
            if ctx.is_main:
                print("no teacher cache beside the shards: the teacher runs online at every step (run `python -m "
                      "lab cache-teacher` first to train from a cache)")
    elif cfg.teacher_mode == "cache":
        if getattr(dataset, "endless", False):
            raise LabError("The teacher cache needs a fixed dataset (data.size > 0); use teacher_mode=online "
                           "for an endless stream.")
        cache = TeacherCache(cfg.cache_dir or Path(runs_dir) / ".cache" / "teacher")
        with dist.main_first(ctx):  # rank 0 builds a missing entry, the others read it
            cached, hit = cache.load_or_build(teacher, dataset, to_dict(cfg.data))
        if ctx.is_main:
            print(f"teacher cache {'hit' if hit else 'built'}: {len(dataset)} pairs (entry {cache.last_path})")
        cached = {k: v.to(device) for k, v in cached.items()}
    extra_teachers = []
    for other in others:  # the ensemble's other members: their own cache entries, or live forwards
        other_cached = None
        if cached is not None:
            with dist.main_first(ctx):
                other_cached, _ = cache.load_or_build(other, dataset, to_dict(cfg.data))
            other_cached = {k: v.to(device) for k, v in other_cached.items()}
        extra_teachers.append((other, other_cached))
    synthetic = None
    if cfg.synthetic != "off" and not reinforced:
        synthetic = Synthetic([teacher, *others], cfg.synthetic, cfg.mix_synthetic_ratio, cfg.captioner_drop,
                              cfg.captioner_wrong, cfg.train.seed, device, dataset)
    writer, checkpoint = open_run(runs_dir, run_id, "distill", {**to_dict(cfg), "formula": objective.formula()},
                                  to_dict(cfg), cfg.train.seed, overwrite, resume, ctx)
    if ctx.is_main:
        print(objective.formula())
    if cfg.train.compile:
        compile_towers(student.model)
    student.model.train()
    params = list(student.model.named_parameters()) + [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    logger = RunLogger(writer, cfg.train.logger, ctx.is_main)
    trainer = Trainer(params, cfg.train, logger.log, desc=f"distill {run_id}", ctx=ctx)
    classnames = label_space(cfg.eval.label_space).classnames
    step_fn = DistillStep(student, teacher, objective, cached, cfg.mask_ratio, classnames, cfg.train.seed,
                          cfg.mfd_input, ctx, extra_teachers, synthetic, cfg.unpaired)
    step_fn.stored_synthetic = reinforced and cfg.synthetic == "both"
    generators = {"mfd": step_fn.generator}
    if cfg.curation:
        step_fn.curator = Curator(step_fn, cfg.train.batch_size, cfg.curation_chunks, cfg.train.seed)
        generators["curation"] = step_fn.curator.generator
    if checkpoint is not None:
        restore(checkpoint, trainer, {"model": student.model.load_state_dict, "objective": objective.load_state_dict},
                generators, ctx)
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
                generators, arch=student.arch))

    damage = DamageReport()
    batches = damage.track(step_batches(dataset, load_batch, cfg.train.steps, cfg.train.seed,
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
        records = [run_benchmark(student, spec) for spec in benchmarks]
        runs.atomic_write_json(writer.path / "benchmarks.json", records)
        metrics.update(summary_metrics(records))
    logger.close(metrics)
    writer.finish({
        **metrics, **damaged, "formula": objective.formula(), "params": student.num_parameters(),
        "teacher_params": teacher.num_parameters(), "teacher_mode": teacher_mode,
        "wall_time_s": stats.wall_time_s, "eval_time_s": time.perf_counter() - t0,
        "mean_step_s": stats.mean_step_s, "mean_data_s": stats.mean_data_s, "images_per_s": stats.images_per_s,
        "steps": stats.steps, "processes": ctx.world_size, "precision": cfg.train.precision,
        "checkpoint": "last", "epoch_policy": "last step", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return writer.path

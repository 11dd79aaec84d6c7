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
from dataclasses import replace as dc_replace
from pathlib import Path

import torch
import torch.nn.functional as F

from lab import runs
from lab.config import apply_overrides, overridden, to_dict
from lab.data.pairs import (DataConfig, build_pairs, check_contrastive_batch, check_dataset_fits, shapes_only_size,
                            size_note, step_batches, to_tensors)
from lab.data.curation import joint_sample, learnability, super_batch_size
from lab.data.shards import DamageReport, ShardStream, check_resume
from lab.data.shards import check_config as check_shards
from lab.data.shards import is_shard_source, shard_paths
from lab.data.shapes import PROMPT_TEMPLATES, label_space
from lab.errors import LabError
from lab.eval.probe import Probe
from lab.eval.benchmarks import benchmark_specs, run_benchmark, summary_metrics, training_classnames
from lab.eval.suite import EvalConfig, encode_texts, evaluate
from lab.losses.functional import clip_loss, masked_encode_image
from lab.losses.objective import Embeddings, Objective, parse_terms
from lab.models import zoo
from lab.models.inherit import check_init, initialise
from lab.models.prompts import encode_text_batches, trim_padding
from lab.train import dist
from lab.train.cache import TeacherCache
from lab.train.logger import RunLogger, check_logger_available
from lab.train.reinforced_cache import ShardTeacher
from lab.train.synthetic import Synthetic, unpaired_texts
from lab.data.datacompdr import DRTeacher, is_reinforced, split_blocks
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
    shapes_only_size(cfg.data, overridden(overrides, "data.size"))  # the preset's 8,192 never caps a CSV
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
                 ctx: dist.Context = dist.SINGLE, extra_teachers=(), synthetic: Synthetic | None = None,
                 unpaired: bool = False, accumulate: int = 1):
        _check_choice("mfd_input", mfd_input, MFD_INPUTS)
        self.student, self.teacher, self.objective, self.cached = student, teacher, objective, cached
        self.extra_teachers = list(extra_teachers)  # [(teacher, cached dict or None)] after teacher 1
        self.synthetic, self.unpaired = synthetic, unpaired
        self.stored_synthetic = False  # DataCompDR-layout shards: the synthetic caption and its embeddings are stored
        self.teacher_forwards = 0  # the teacher's forward passes run so far (0 from a cache): summary.json
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

    def _cached_rows(self, cached: dict, batch):
        """(image, text, scale) of this batch's rows of a teacher cache (memory-mapped: these rows only)."""
        index = torch.as_tensor(batch.factors["index"])
        dtype = next(self.student.model.parameters()).dtype
        rows = [cached[k][index].to(self.device, dtype) for k in ("image", "text")]
        return rows[0], rows[1], cached["scale"][0].to(self.device)

    def teacher_outputs(self, batch, images):
        if "teacher_image" in batch.factors:  # cached beside the shards, for this very crop (reinforced_cache)
            f = {k: torch.as_tensor(batch.factors[f"teacher_{k}"], device=self.device) for k in ("image", "text", "scale")}
            return f["image"], f["text"], f["scale"][0]
        if self.cached is not None:
            return self._cached_rows(self.cached, batch)
        teacher = self.teacher
        self.teacher_forwards += 1
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
                out.append(self._cached_rows(cached, batch))
                continue
            self.teacher_forwards += 1
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

    def _terms(self, batch, images, image_raw, text_raw, scale, masked_raw=None, class_text_raw=None, swapped=None):
        """The objective's terms on the (gathered) student embeddings of the whole batch: the teacher's (and an
        ensemble's other members'), synthetic captions and unpaired sentences where the recipe asks for them."""
        model, objective, ctx, syn = self.student.model, self.objective, self.ctx, self.synthetic
        if not objective.names:
            return {"task": clip_loss(F.normalize(image_raw, dim=-1), F.normalize(text_raw, dim=-1), scale)}
        if "teacher_dims" in batch.factors:
            t_image, t_text, t_scale, extra = self.stored_ensemble(batch)
        else:
            t_image, t_text, t_scale = self.teacher_outputs(batch, images)
            extra = self.extra_outputs(batch, images)
        if swapped is not None and swapped.any():  # synthetic=mix: every teacher's text of the swapped captions
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
        if self.curator is not None:
            batch = self.curator(batch)
        syn, swapped = self.synthetic, None
        if syn is not None and syn.mode == "mix":  # preprocess_dr: the caption itself is swapped, no syn term
            batch, swapped = syn.mix(batch)
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
                           class_text_raw if objective.needs_class_texts else None, swapped)


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
    check_logger_available(cfg.train.logger)  # an unknown logger or a missing wandb, before any model loads
    objective_probe = Objective(cfg.loss, 1, 1, cfg.weights, cfg.variant, projection_point=cfg.projection,
                                ensemble_average=cfg.ensemble_average,
                                task_weight=cfg.task_weight)  # bad names and weights, before any model loads
    if len(teacher_names) > 1 and not any(n in ("mobileclip", "siglipkd") for n in objective_probe.names):
        raise LabError(f"An ensemble of {len(teacher_names)} teachers needs an ensemble term (--loss mobileclip or "
                       f"siglipkd); the other terms read one teacher.")
    check_init(cfg.init)
    _check_choice("curation", cfg.curation, CURATIONS)
    benchmarks = benchmark_specs(cfg.eval.benchmarks)
    check_accumulate(cfg.train.accumulate, parse_terms(cfg.loss), cfg.train.batch_size // max(1, _world_size()))
    if size_note(cfg.data) and os.environ.get("RANK", "0") == "0":
        print(size_note(cfg.data))
    classnames = (training_classnames(cfg.data.source, cfg.eval.classnames, benchmarks,  # before any model load
                                      label_space(cfg.eval.label_space).classnames)
                  if "kd" in parse_terms(cfg.loss) else ())
    if cfg.train.accumulate > 1 and (cfg.synthetic != "off" or cfg.curation or cfg.unpaired):
        raise LabError("train.accumulate > 1 (GradCache) does not yet cover synthetic captions, curation=acid or "
                       "unpaired texts; set train.accumulate=1 for this recipe.")
    check_shards(cfg.data)  # webdataset settings and files, before any model is loaded
    reinforced = is_shard_source(cfg.data.source) and is_reinforced(shard_paths(cfg.data.source)[0])
    if cfg.synthetic != "off" and cfg.data.source != "shapes" and not reinforced:
        raise LabError("synthetic captions come from ShapesWorld's captioner or from DataCompDR-layout shards; use "
                       "data.source=shapes or reinforced shards, or synthetic=off for other data.")
    if reinforced and cfg.synthetic == "mix":
        raise LabError("synthetic=mix is not implemented for DataCompDR-layout shards yet; use synthetic=both or off.")
    with runs.claimed(runs_dir, run_id, overwrite, resume, main=dist.from_env().is_main):  # one writer per run
        return _distill(cfg, run_id, runs_dir, overwrite, resume, benchmarks, teacher_names, reinforced, classnames)


def _distill(cfg: DistillConfig, run_id: str, runs_dir: str | Path, overwrite: bool, resume: bool,
             benchmarks: list, teacher_names: list[str], reinforced: bool, classnames) -> Path:
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
    check_mfd_student(student, objective)
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
    extra_teachers = []
    for other in others:  # the ensemble's other members: their own cache entries, or live forwards
        other_cached = None
        if cached is not None:
            with dist.main_first(ctx):
                other_cached, _ = cache.load_or_build(other, dataset, to_dict(cfg.data))
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
    if cfg.train.grad_checkpointing:  # open_clip's activation checkpointing: less memory, one more forward
        student.model.set_grad_checkpointing(True)
    student.model.train()
    params = list(student.model.named_parameters()) + [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    logger = RunLogger(writer, cfg.train.logger, ctx.is_main, config=to_dict(cfg))
    trainer = Trainer(params, cfg.train, logger.log, desc=f"distill {run_id}", ctx=ctx)
    step_fn = DistillStep(student, teacher, objective, cached, cfg.mask_ratio, classnames, cfg.train.seed,
                          cfg.mfd_input, ctx, extra_teachers, synthetic, cfg.unpaired,
                          accumulate=cfg.train.accumulate)
    step_fn.stored_synthetic = reinforced and cfg.synthetic == "both"
    generators = {"mfd": step_fn.generator}
    if cfg.curation:
        step_fn.curator = Curator(step_fn, cfg.train.batch_size, cfg.curation_chunks, cfg.train.seed)
        generators["curation"] = step_fn.curator.generator
    if checkpoint is not None:
        if int(checkpoint.get("processes", ctx.world_size)) != ctx.world_size:
            raise LabError(f"Run {run_id} was trained on {int(checkpoint['processes'])} processes and this resume "
                           f"has {ctx.world_size}; resume it with the same torchrun --nproc_per_node (the batch "
                           f"split and the data streams depend on it).")
        restore(checkpoint, trainer, {"model": student.model.load_state_dict, "objective": objective.load_state_dict},
                generators, ctx)
        check_resume(checkpoint["config"], cfg)
        logger.resume(trainer.step)  # TensorBoard drops what was logged after the checkpoint
        step_fn.teacher_forwards = int(checkpoint.get("teacher_forwards", 0))
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
                generators, arch=student.arch, processes=ctx.world_size,
                teacher_forwards=step_fn.teacher_forwards))

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
        records = [run_benchmark(student, spec, cfg.eval.classnames, workers=cfg.data.workers) for spec in benchmarks]
        runs.atomic_write_json(writer.path / "benchmarks.json", records)
        metrics.update(summary_metrics(records))
    logger.close(metrics)
    writer.finish({
        **metrics, **damaged, "formula": objective.formula(), "params": student.num_parameters(),
        "teacher_params": teacher.num_parameters(), "teacher_mode": teacher_mode,
        "teacher_forwards": step_fn.teacher_forwards,
        "wall_time_s": stats.wall_time_s, "eval_time_s": time.perf_counter() - t0,
        "mean_step_s": stats.mean_step_s, "mean_data_s": stats.mean_data_s, "images_per_s": stats.images_per_s,
        "steps": stats.steps, "processes": ctx.world_size, **dataset_counts(cfg.data, dataset), "precision": cfg.train.precision,
        "checkpoint": "last", "epoch_policy": "last step", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return writer.path

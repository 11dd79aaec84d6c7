"""PromptKD and ComKD-CLIP on ShapesWorld: teacher prompt tuning, then unlabelled student distillation.

Stage 1 (:mod:`lab.train.prompt_stage1`) tunes deep prompts on the frozen teacher with
labelled few-shot images and computes the class text features ``W`` from the *tuned*
prompts. Stage 2 trains the frozen student's vision prompts, a projector and (ComKD)
EduAttention on unlabelled images against the tuned teacher's logits; the student never
runs its text encoder. Three protocols (METHODS.md, "Protocols"):

* ``base2novel`` — teacher tuned on the base colour–shape classes; student distilled on
  unlabelled images of all classes (transductive, as in PromptKD); base scored among base
  classes, novel among novel, HM.
* ``cross`` — teacher tuned on a source label space (``source_space``); student distilled
  on unlabelled images of the target label space (``label_space``); top-1 on the target.
* ``domain`` — teacher tuned and student distilled on one style (``source_style``);
  top-1 on every style, the other styles being the shifted domains.

KDPL (``method=kdpl``, :mod:`lab.train.prompt_kdpl`) skips stage 1: no labels, a hand-crafted-prompt teacher.

``python -m lab promptkd --method promptkd|comkd|am|kdpl --protocol base2novel|cross|domain [key=value ...]``
(``torchrun --nproc_per_node N -m lab promptkd ...`` for N processes; ``--resume`` continues a killed run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab import runs
from lab.config import apply_overrides, to_dict
from lab.data.pairs import DataConfig, build_pairs, in_order, step_batches
from lab.data.shapes import PROMPT_TEMPLATES, STYLES, LabelSpace, label_space
from lab.errors import LabError
from lab.eval.suite import EvalConfig, encode_texts, evaluation_set, validation_set
from lab.eval.zeroshot import class_embeddings, logit_scores
from lab.losses import functional as L
from lab.losses import prompt_kd as K
from lab.models import prompts as P
from lab.models import zoo
from lab.train import dist
from lab.train import prompt_kdpl as KD
from lab.train.checkpoint import open_run, restore, training_state
from lab.train.loop import Trainer, TrainConfig, seed_everything, start_processes
from lab.train.prompt_stage1 import StageOneConfig, TuningSet, tuned_teacher

METHODS = ("promptkd", "comkd", "am", "kdpl")
PROTOCOLS = ("base2novel", "cross", "domain")
ALL_STYLES = ",".join(STYLES)


@dataclass
class PromptDistillConfig:
    method: str = "comkd"
    protocol: str = "base2novel"
    teacher: str = "shipped"
    student: str = "nokd"  # "nokd": the lab's no-KD student run of the same seed, <runs>/nokd-s<seed>
    label_space: str = "colour_shape"  # the student's label space (the target under ``cross``)
    source_space: str = "colour_shape"  # cross: the label space the teacher is tuned on
    source_style: str = "plain"  # domain: the style the teacher is tuned and the student distilled on
    edu_variant: str = "img_query"
    use_edu: bool = True
    use_ifalign: bool = True
    align_mean: bool = True
    align_variance: bool = True
    refine: str = "kl"  # kl | mse | l1 on the logits (ComKD-CLIP Table 6)
    kd_weight: float = 1000.0
    ifalign_weight: float = 1.0  # IFAlign's weight beside the refinement's (ComKD); `python -m lab tune --grid comkd`
    kd_variant: str = "official"
    temperature: float = 1.0
    kdpl_k: int = 0  # KDPL: classes distilled per batch, top-K by mean teacher probability; 0 = all of its list
    class_agnostic: bool = False  # KDPL-CA: K classes of the dictionary of every label space (lab.train.prompt_kdpl)
    prompt_length: int = 4
    prompt_depth: int = 9
    cache_dir: str = ""  # tuned teacher prompts; default <runs_dir>/.cache/stage1
    stage1: StageOneConfig = field(default_factory=StageOneConfig)
    # Stage-2 budget: at 400 steps on 4,096 images the student had barely moved from its zero-shot HM
    # (PromptKD HM 36.3 vs 32.4, seed 0, H100); 3,000 steps on 16,384 images reached 45.8.
    data: DataConfig = field(default_factory=lambda: DataConfig(size=16384))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=3000, batch_size=64, lr=2e-3, warmup=20,
                                                                   weight_decay=0.0))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(per_style=512))


def default_config(overrides=None) -> PromptDistillConfig:
    return apply_overrides(PromptDistillConfig(), overrides)


@dataclass(frozen=True)
class Setup:
    """What a protocol shows each stage: the teacher's tuning set, the target label space, the student's styles."""

    tuning: TuningSet
    space: LabelSpace
    styles: str
    description: str
    headline: str  # the summary key a table reports


def protocol_setup(cfg: PromptDistillConfig) -> Setup:
    for key, value, choices in (("method", cfg.method, METHODS), ("protocol", cfg.protocol, PROTOCOLS),
                                ("refine", cfg.refine, K.REFINEMENTS), ("edu_variant", cfg.edu_variant, K.EDU_VARIANTS)):
        if value not in choices:
            raise LabError(f"Unknown {key} '{value}'; choose one of: {', '.join(choices)}.")
    try:
        space, source = label_space(cfg.label_space), label_space(cfg.source_space)
    except ValueError as err:
        raise LabError(str(err)) from err
    if cfg.protocol == "base2novel":
        if space.name != "colour_shape":
            raise LabError("The base2novel protocol splits the colour_shape classes; set label_space=colour_shape "
                           "or use protocol=cross for another label space.")
        return Setup(TuningSet(space, "base"), space, ALL_STYLES,
                     "base2novel (transductive: unlabelled images of all classes)", "hm")
    if cfg.protocol == "cross":
        return Setup(TuningSet(source), space, ALL_STYLES,
                     f"cross (teacher tuned on {source.name}, student distilled on unlabelled {space.name} images)",
                     "top1")
    if cfg.source_style not in STYLES:
        raise LabError(f"Unknown source_style '{cfg.source_style}'; choose one of: {', '.join(STYLES)}.")
    return Setup(TuningSet(space, "all", cfg.source_style), space, cfg.source_style,
                 f"domain (teacher tuned and student distilled on {cfg.source_style} images; scored on every style)",
                 "target_top1")


class Student(nn.Module):
    """The frozen student image tower with vision prompts, a projector and (ComKD) EduAttention."""

    def __init__(self, clip, teacher_dim: int, cfg: PromptDistillConfig):
        super().__init__()
        self.clip = clip
        clip.model.eval().requires_grad_(False)
        self.prompts = P.vision_prompts(clip.model.visual, cfg.prompt_length, cfg.prompt_depth)
        kdpl = cfg.method == "kdpl"  # VPT-KDPL: the student's own class weights, no projector, its own logit scale
        self.projector = nn.Identity() if kdpl else K.Projector(clip.embed_dim, teacher_dim)
        self.scale = clip.model.logit_scale.exp().item() if kdpl else K.LOGIT_SCALE
        self.edu = K.EduAttention(teacher_dim, cfg.edu_variant) if cfg.method == "comkd" and cfg.use_edu else None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """f_s(x): the prompted image tower's embedding."""
        return P.encode_image(self.clip.model.visual, images, self.prompts)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """z = P(f_s(x)), before normalisation."""
        return self.projector(self.encode(images))

    def logits(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.edu.logits(z, classes) if self.edu is not None else K.class_logits(z, classes, self.scale)


def stage_two_terms(cfg: PromptDistillConfig, student: Student, z: torch.Tensor, u_t: torch.Tensor,
                    classes: torch.Tensor, teacher_classes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The named loss terms of one stage-2 batch: z the projected student features, u_t the teacher's.

    KDPL: ``classes`` are the student's own class weights, ``teacher_classes`` the teacher's, both logits at
    the student's logit scale; the symmetric KL on the teacher's top-K classes (:func:`lab.losses.prompt_kd.kdpl_loss`).
    """
    if cfg.method == "kdpl":
        q_t = student.scale * u_t @ teacher_classes.T
        keep = K.kdpl_classes(q_t, cfg.kdpl_k or q_t.shape[1])
        return {"kdpl": K.kdpl_loss(student.logits(z, classes)[:, keep], q_t[:, keep])}
    q_t = K.class_logits(u_t, classes)
    if cfg.method == "am":  # TinyCLIP affinity mimicking, with the class features W on both sides
        return {"am": L.affinity_mimicking_loss(F.normalize(z, dim=-1), classes, K.LOGIT_SCALE, u_t, classes,
                                                K.LOGIT_SCALE)}
    terms = {cfg.refine: K.refinement_loss(student.logits(z, classes), q_t, cfg.refine, cfg.temperature,
                                           cfg.kd_weight, cfg.kd_variant)}
    if cfg.method == "comkd" and cfg.use_ifalign:
        terms["ifalign"] = cfg.ifalign_weight * K.ifalign_loss(F.normalize(z, dim=-1), u_t, cfg.align_mean,
                                                               cfg.align_variance)
    return terms


class StageTwoStep:
    """One stage-2 forward on this rank's shard of a batch; the terms see the global batch (:mod:`lab.train.dist`).

    ``u_t_all`` holds the tuned teacher's image features of every item of the fixed set, by index.
    """

    def __init__(self, cfg: PromptDistillConfig, student: Student, u_t_all: torch.Tensor, classes: torch.Tensor,
                 ctx: dist.Context = dist.SINGLE, teacher_classes: torch.Tensor | None = None):
        self.cfg, self.student, self.u_t_all, self.classes, self.ctx = cfg, student, u_t_all, classes, ctx
        self.teacher_classes = teacher_classes

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        device = self.u_t_all.device
        u_t = self.u_t_all[torch.as_tensor(batch.factors["index"], device=device)]
        # Gathered before the projector: its BatchNorm normalises over the global batch on every rank.
        f_s = dist.gather(self.student.encode(self.student.clip.image_tensor(batch.images).to(device)), self.ctx)
        return stage_two_terms(self.cfg, self.student, self.student.projector(f_s), dist.gather(u_t, self.ctx),
                               self.classes, self.teacher_classes)


def _student_spec(cfg: PromptDistillConfig, runs_dir: Path) -> str:
    """``student=nokd`` names the finished no-KD run of the same seed, ``<runs>/nokd-s<seed>``; the
    experiment layer (``python -m lab promptkd``, the sweep) trains it first when it is missing."""
    if cfg.student != "nokd":
        return cfg.student
    path = Path(runs_dir) / f"nokd-s{cfg.train.seed}"
    if not runs.read_run(path).complete:
        raise LabError(f"student=nokd needs the finished no-KD run {path}; train it with `python -m lab promptkd` "
                       f"(which trains it first) or `python -m lab pretrain --name nokd-s{cfg.train.seed}`, "
                       "or name a student with student=RUN_DIR.")
    return str(path)


@torch.no_grad()
def _scores(logits_fn, batch, image_tensor, space, device, batch_size=512) -> dict[str, float]:
    """Zero-shot-style scores per style from a logits function (B images → B×C logits)."""
    logits = torch.cat([logits_fn(image_tensor(batch.images[i:i + batch_size]).to(device)).float().cpu()
                        for i in range(0, len(batch), batch_size)])
    labels = torch.as_tensor(batch.labels(space))
    out = {}
    for s, style in enumerate(STYLES):
        keep = torch.as_tensor(batch.factors["style"] == s)
        if keep.any():
            scores = logit_scores(logits[keep], labels[keep], space.base_ids, space.novel_ids)
            out.update({f"{style}/{k}": v for k, v in scores.items()})
    return out


def _headlines(scores: dict[str, float], cfg: PromptDistillConfig) -> dict[str, float]:
    """One model's table numbers: top-1/base/novel/HM on the plain style (the source style under
    ``domain``, which adds the mean top-1 over the other, shifted styles)."""
    home = cfg.source_style if cfg.protocol == "domain" else "plain"
    out = {k: scores[f"{home}/{k}"] for k in ("top1", "base", "novel", "hm")}
    if cfg.protocol == "domain":
        shifted = [scores[f"{style}/top1"] for style in STYLES if style != home]
        out["target_top1"] = sum(shifted) / len(shifted)
    return out


def _trainable_state(module: nn.Module) -> dict:
    """The learned parts only (prompts, projector, EduAttention); the frozen CLIP is loaded from its spec."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("clip.")}


def _load_trainable_state(module: nn.Module, state: dict) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    wrong = list(unexpected) + [k for k in missing if not k.startswith("clip.")]
    if wrong:
        raise RuntimeError(f"the student's learned parts do not match: {', '.join(wrong[:3])}")


def prompt_distill(cfg: PromptDistillConfig, run_id: str, runs_dir: str | Path = "runs",
                   overwrite: bool = False, resume: bool = False) -> Path:
    """Stage 1 and stage 2 under ``cfg.protocol``; evaluates the tuned teacher, both zero-shot models and
    the distilled student; returns the run path. ``resume`` continues stage 2 of ``run_id`` from its last
    checkpoint (stage 1 is read from its cache). Under torchrun, stage 2 runs on every process."""
    setup = protocol_setup(cfg)
    runs_dir = Path(runs_dir)
    with runs.claimed(runs_dir, run_id, overwrite, resume, main=dist.from_env().is_main):  # one writer per run
        return _prompt_distill(cfg, setup, run_id, runs_dir, overwrite, resume)


def _prompt_distill(cfg: PromptDistillConfig, setup: Setup, run_id: str, runs_dir: Path, overwrite: bool,
                    resume: bool) -> Path:
    device, ctx = start_processes(cfg.train)
    student_clip = zoo.load(_student_spec(cfg, runs_dir), device=str(device))
    seed_everything(cfg.train.seed)
    teacher_clip = zoo.shipped_teacher(str(device)) if cfg.teacher == "shipped" else zoo.load(cfg.teacher, str(device))
    space = setup.space
    writer, checkpoint = open_run(runs_dir, run_id, "promptkd", to_dict(cfg), to_dict(cfg), cfg.train.seed,
                                  overwrite, resume, ctx)
    if cfg.method == "kdpl":  # label-free: no stage 1, the teacher keeps its hand-crafted prompt
        teacher, hit = KD.HandCraftedTeacher(teacher_clip), False
    else:
        with dist.main_first(ctx):  # rank 0 tunes (or reads) the teacher's prompts, the others read its cache
            teacher, hit = tuned_teacher(teacher_clip, cfg.stage1, setup.tuning, cfg.train.seed, device, writer.log,
                                         cfg.cache_dir or runs_dir / ".cache" / "stage1")
        if ctx.is_main:
            print(f"stage 1: tuned teacher prompts {'read from the cache' if hit else 'trained'}")
    with torch.no_grad():
        classes = teacher.class_features(space.classnames)  # W, from the tuned prompts
    student_classes, train_classes, train_teacher_classes = classes, classes, None
    if cfg.method == "kdpl":  # the student's own weights: all classes to score, the KDPL list to train on
        names = KD.class_names(cfg, setup)
        student_classes = KD.text_classes(student_clip, space.classnames)
        train_classes, train_teacher_classes = KD.text_classes(student_clip, names), teacher.class_features(names)

    student = Student(student_clip, teacher_clip.embed_dim, cfg).to(device)
    dist.broadcast_from_main([student], ctx)
    if ctx.enabled:
        seed_everything(cfg.train.seed + ctx.rank)  # per-rank streams for anything random inside a step
    unlabelled = build_pairs(replace(cfg.data, styles=setup.styles))
    with torch.no_grad():  # the tuned teacher is frozen: its features of the fixed set are computed once
        u_t_all = torch.cat([teacher.image_features(teacher_clip.image_tensor(batch.images).to(device))
                             for batch in in_order(unlabelled, 512)])

    step_fn = StageTwoStep(cfg, student, u_t_all, train_classes, ctx, train_teacher_classes)
    trainer = Trainer(student.named_parameters(), cfg.train, writer.log, desc=f"stage 2: {cfg.method}", ctx=ctx)
    if checkpoint is not None:
        restore(checkpoint, trainer, {"student": lambda state: _load_trainable_state(student, state)}, ctx=ctx)
        if ctx.is_main:
            print(f"resuming {run_id} at stage-2 step {trainer.step} of {cfg.train.steps}")

    def save(step=None):
        if ctx.is_main:
            writer.save_checkpoint(training_state(trainer, {"student": _trainable_state(student)}, to_dict(cfg),
                                                  teacher_prompts=teacher.prompt_state(), classes=classes.cpu()))

    def train_mode():
        student.train()
        student.clip.model.eval()  # the CLIP stays frozen (its BatchNorm-free towers, its dropout off)

    probe_set = None  # every train.eval_every steps: the student's headline numbers on a small fixed test subset
    if cfg.train.eval_every and cfg.eval.per_style and ctx.is_main:
        probe_set = evaluation_set(replace(cfg.eval, per_style=min(cfg.eval.probe_per_style, cfg.eval.per_style)),
                                   student_clip.image_size)

    @torch.no_grad()
    def probe(step):
        if probe_set is None:
            return None
        student.eval()
        scores = _scores(lambda x: student.logits(student.features(x), student_classes), probe_set,
                         student_clip.image_tensor, space, device)
        train_mode()
        return {f"eval/{k}": v for k, v in _headlines(scores, cfg).items()}

    train_mode()
    stats = trainer.fit(step_batches(unlabelled, cfg.train.batch_size, cfg.train.steps, cfg.train.seed, trainer.step,
                                     shard=(ctx.rank, ctx.world_size)), step_fn,
                        every={cfg.train.eval_every: probe}, checkpoint=save)
    if not ctx.is_main:
        return writer.path
    student.eval()

    test = evaluation_set(cfg.eval, student_clip.image_size)

    def zeroshot_classes(clip):  # a model's own zero-shot weights, prompt ensemble
        return class_embeddings(lambda t: encode_texts(clip, t), space.classnames, PROMPT_TEMPLATES).to(device)

    student_text, teacher_text = zeroshot_classes(student_clip), zeroshot_classes(teacher_clip)
    results = {
        "student": _scores(lambda x: student.logits(student.features(x), student_classes), test, student_clip.image_tensor,
                           space, device),
        "teacher": _scores(lambda x: K.class_logits(teacher.image_features(x), classes), test,
                           teacher_clip.image_tensor, space, device),
        "teacher_zeroshot": _scores(lambda x: K.class_logits(teacher_clip.model.encode_image(x), teacher_text), test,
                                    teacher_clip.image_tensor, space, device),
        "student_zeroshot": _scores(lambda x: K.class_logits(student_clip.model.encode_image(x), student_text), test,
                                    student_clip.image_tensor, space, device),
    }
    summary = {f"{who}/{k}": v for who, scores in results.items() for k, v in scores.items()}
    for who, scores in results.items():
        summary.update({f"{who}/{k}": v for k, v in _headlines(scores, cfg).items()})
    summary.update({k: summary[f"student/{k}"] for k in _headlines(results["student"], cfg)})
    if cfg.eval.val_per_style > 0:  # the validation split, for selection only (lab.experiments.tune_prompts)
        val = _scores(lambda x: student.logits(student.features(x), student_classes),
                      validation_set(cfg.eval, student_clip.image_size), student_clip.image_tensor, space, device)
        summary.update({f"val/{k}": v for k, v in _headlines(val, cfg).items()})
    save()
    writer.finish({**summary, "protocol": setup.description, "headline": setup.headline,
                   "stage1_cache": "hit" if hit else "built", "epoch_policy": "last step", "checkpoint": "last",
                   "alpha": student.edu.alpha.item() if student.edu is not None else None,
                   "wall_time_s": stats.wall_time_s, "mean_step_s": stats.mean_step_s,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return writer.path

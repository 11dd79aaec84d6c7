"""PromptKD and ComKD-CLIP on ShapesWorld: teacher prompt tuning, then unlabelled student distillation.

Stage 1 tunes deep prompts on the frozen teacher with labelled few-shot images of the
base classes (cross-entropy on 100·cos logits) and stores the class text features
``W`` of every class, computed from the *tuned* prompts. Stage 2 trains the frozen
student's vision prompts, a projector and (ComKD) EduAttention on unlabelled images of
all classes — transductive, as in PromptKD's base-to-novel protocol — against the
tuned teacher's logits. The student never runs its text encoder: it reuses ``W``.

``python -m lab promptkd --method promptkd|comkd [key=value ...]``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lab import runs
from lab.config import apply_overrides, to_dict
from lab.data.pairs import DataConfig, build_pairs, in_order, step_batches
from lab.data.shapes import PROMPT_TEMPLATES, STYLES, label_space
from lab.errors import LabError
from lab.eval.suite import EvalConfig, encode_texts, evaluation_set
from lab.eval.zeroshot import class_embeddings, logit_scores
from lab.losses import prompt_kd as K
from lab.models import prompts as P
from lab.models import zoo
from lab.train.loop import Trainer, TrainConfig, resolve_device, rng_states, seed_everything

METHODS = ("promptkd", "comkd")


@dataclass
class StageOneConfig:
    """Teacher prompt tuning: ``shots`` labelled images per base class."""

    shots: int = 16
    length: int = 4
    depth: int = 9  # at most each tower's number of blocks
    init_words: str = "a photo of a"
    steps: int = 150
    batch_size: int = 64
    lr: float = 2e-3


@dataclass
class PromptDistillConfig:
    method: str = "comkd"
    teacher: str = "shipped"
    student: str = "nokd"  # "nokd": the lab's no-KD student run of the same seed (trained if missing)
    label_space: str = "colour_shape"
    edu_variant: str = "img_query"
    use_edu: bool = True
    use_ifalign: bool = True
    align_mean: bool = True
    align_variance: bool = True
    kd_weight: float = 1000.0
    kd_variant: str = "official"
    temperature: float = 1.0
    prompt_length: int = 4
    prompt_depth: int = 9
    stage1: StageOneConfig = field(default_factory=StageOneConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(size=4096))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=64, lr=2e-3, warmup=20,
                                                                   weight_decay=0.0))
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(per_style=512))


def default_config(overrides=None) -> PromptDistillConfig:
    return apply_overrides(PromptDistillConfig(), overrides)


def _frozen(clip):
    clip.model.eval().requires_grad_(False)
    return clip


class PromptedTeacher(nn.Module):
    """The frozen teacher with its deep vision and text prompts."""

    def __init__(self, clip, cfg: StageOneConfig):
        super().__init__()
        self.clip = _frozen(clip)
        self.vision = P.vision_prompts(clip.model.visual, cfg.length, cfg.depth)
        self.text = P.text_prompts_from_words(clip, cfg.init_words, cfg.depth)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(P.encode_image(self.clip.model.visual, images, self.vision), dim=-1)

    def class_features(self, classnames) -> torch.Tensor:
        tokens = self.clip.tokenize(P.prompt_texts(classnames, self.text.length)).to(self.vision.tokens.device)
        return F.normalize(P.encode_text(self.clip.model, tokens, self.text), dim=-1)


def tune_teacher(teacher: PromptedTeacher, cfg: PromptDistillConfig, device, log) -> torch.Tensor:
    """Stage 1: cross-entropy over the base classes on few-shot labelled images; returns W for all classes."""
    space = label_space(cfg.label_space)
    s1 = cfg.stage1
    shots = build_pairs(DataConfig(size=s1.shots * len(space.base_ids), classes="base", balanced=True,
                                   seed=cfg.data.seed + 1))
    base = torch.as_tensor(space.base_ids, device=device)
    remap = torch.full((space.num_classes,), -1, dtype=torch.long, device=device)
    remap[base] = torch.arange(len(base), device=device)
    base_names = [space.classnames[i] for i in space.base_ids]
    train_cfg = TrainConfig(steps=s1.steps, batch_size=s1.batch_size, lr=s1.lr, warmup=min(10, s1.steps),
                            weight_decay=0.0, log_every=max(1, s1.steps // 10), seed=cfg.train.seed)
    trainer = Trainer(teacher.named_parameters(), train_cfg, lambda r: log({f"stage1/{k}": v for k, v in r.items()}),
                      desc="stage 1: teacher prompts")

    def step_fn(batch):
        images = teacher.clip.image_tensor(batch.images).to(device)
        labels = remap[torch.as_tensor(batch.labels(space), device=device)]
        logits = K.LOGIT_SCALE * teacher.image_features(images) @ teacher.class_features(base_names).T
        return {"ce": F.cross_entropy(logits, labels)}

    trainer.fit(step_batches(shots, s1.batch_size, s1.steps, cfg.train.seed), step_fn)
    with torch.no_grad():
        return teacher.class_features(space.classnames)


class Student(nn.Module):
    """The frozen student image tower with vision prompts, a projector and (ComKD) EduAttention."""

    def __init__(self, clip, teacher_dim: int, cfg: PromptDistillConfig):
        super().__init__()
        self.clip = _frozen(clip)
        self.prompts = P.vision_prompts(clip.model.visual, cfg.prompt_length, cfg.prompt_depth)
        self.projector = K.Projector(clip.embed_dim, teacher_dim)
        self.edu = K.EduAttention(teacher_dim, cfg.edu_variant) if cfg.method == "comkd" and cfg.use_edu else None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """z = P(f_s(x)), before normalisation."""
        return self.projector(P.encode_image(self.clip.model.visual, images, self.prompts))

    def logits(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return K.class_logits(self.edu(z, classes) if self.edu is not None else z, classes)


def _student_spec(cfg: PromptDistillConfig, runs_dir: Path) -> str:
    if cfg.student != "nokd":
        return cfg.student
    from lab.sweep import NO_KD, train_row

    return str(train_row(NO_KD, cfg.train.seed, runs_dir, fast=False))


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


def _trainable_state(module: nn.Module) -> dict:
    """The learned parts only (prompts, projector, EduAttention); the frozen CLIP is loaded from its spec."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("clip.")}


def prompt_distill(cfg: PromptDistillConfig, run_id: str, runs_dir: str | Path = "runs",
                   overwrite: bool = False) -> Path:
    """Stage 1 and stage 2, evaluation of teacher, student zero-shot and distilled student; returns the run path."""
    if cfg.method not in METHODS:
        raise LabError(f"Unknown method '{cfg.method}'; choose one of: {', '.join(METHODS)}.")
    runs_dir = Path(runs_dir)
    device = resolve_device(cfg.train.device)
    student_clip = zoo.load(_student_spec(cfg, runs_dir), device=str(device))
    seed_everything(cfg.train.seed)
    teacher_clip = zoo.shipped_teacher(str(device)) if cfg.teacher == "shipped" else zoo.load(cfg.teacher, str(device))
    space = label_space(cfg.label_space)
    writer = runs.RunWriter(runs_dir, run_id, "promptkd", to_dict(cfg), cfg.train.seed, overwrite=overwrite)
    teacher = PromptedTeacher(teacher_clip, cfg.stage1).to(device)
    classes = tune_teacher(teacher, cfg, device, writer.log)
    teacher.requires_grad_(False)

    student = Student(student_clip, teacher_clip.embed_dim, cfg).to(device)
    unlabelled = build_pairs(cfg.data)
    with torch.no_grad():  # the tuned teacher is frozen: its features of the fixed set are computed once
        u_t_all = torch.cat([teacher.image_features(teacher_clip.image_tensor(batch.images).to(device))
                             for batch in in_order(unlabelled, 512)])

    def step_fn(batch):
        index = torch.as_tensor(batch.factors["index"], device=device)
        u_t = u_t_all[index]
        q_t = K.class_logits(u_t, classes)
        z = student.features(student_clip.image_tensor(batch.images).to(device))
        terms = {"kd": K.promptkd_loss(student.logits(z, classes), q_t, cfg.temperature, cfg.kd_weight,
                                       cfg.kd_variant)}
        if cfg.method == "comkd" and cfg.use_ifalign:
            terms["ifalign"] = K.ifalign_loss(F.normalize(z, dim=-1), u_t, cfg.align_mean, cfg.align_variance)
        return terms

    trainer = Trainer(student.named_parameters(), cfg.train, writer.log, desc=f"stage 2: {cfg.method}")
    student.train()
    student.clip.model.eval()
    stats = trainer.fit(step_batches(unlabelled, cfg.train.batch_size, cfg.train.steps, cfg.train.seed), step_fn)
    student.eval()

    test = evaluation_set(cfg.eval, student_clip.image_size)
    student_text = class_embeddings(lambda t: encode_texts(student_clip, t), space.classnames,
                                    PROMPT_TEMPLATES).to(device)  # its own zero-shot weights, prompt ensemble
    results = {
        "student": _scores(lambda x: student.logits(student.features(x), classes), test, student_clip.image_tensor,
                           space, device),
        "teacher": _scores(lambda x: K.class_logits(teacher.image_features(x), classes), test,
                           teacher_clip.image_tensor, space, device),
        "student_zeroshot": _scores(lambda x: K.class_logits(student_clip.model.encode_image(x), student_text), test,
                                    student_clip.image_tensor, space, device),
    }
    summary = {f"{who}/{k}": v for who, scores in results.items() for k, v in scores.items()}
    for who in results:
        summary.update({f"{who}/{k}": results[who][f"plain/{k}"] for k in ("top1", "base", "novel", "hm")})
    summary.update({k: summary[f"student/{k}"] for k in ("top1", "base", "novel", "hm")})
    writer.save_checkpoint({"student": _trainable_state(student), "teacher_prompts": _trainable_state(teacher),
                            "classes": classes.cpu(), **trainer.state_dict(), "rng": rng_states(),
                            "config": to_dict(cfg)})
    writer.finish({**summary, "protocol": "base2novel (transductive: unlabelled images of all classes)",
                   "epoch_policy": "last step", "checkpoint": "last", "alpha": (student.edu.alpha.item()
                                                                               if student.edu is not None else None),
                   "wall_time_s": stats.wall_time_s, "mean_step_s": stats.mean_step_s,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return writer.path

"""Stage 1 of PromptKD / ComKD-CLIP: deep prompts tuned on the frozen teacher with labelled few-shot images.

Cross-entropy on ``100·cos`` logits over the classes the protocol labels (PromptKD §3.2),
optionally with PromptSRC's self-regulating consistency terms (Khattak et al. 2023, §3.2):

    L = CE + λ_t·‖W_p − W_0‖₁ + λ_v·‖u_p − u_0‖₁ + KL(σ(q_0) ‖ σ(q_p))

``W_p`` / ``u_p`` are the prompted, normalised class-text / image features, ``W_0`` the
frozen teacher's prompt-ensemble class features, ``u_0`` its frozen image features, and
``q`` the matching logits (λ_t = 25, λ_v = 10, PromptSRC's defaults; L1 as a per-element
mean). They keep the prompts near the zero-shot model, which matters when a few shots
are enough to drive the cross-entropy to zero.

The tuned prompts are cached per (teacher weights, stage-1 settings, seed), so every
stage-2 run of a sweep that shares them tunes the teacher once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lab.config import to_dict
from lab.data.pairs import DataConfig, build_pairs, step_batches
from lab.data.shapes import PROMPT_TEMPLATES, LabelSpace
from lab.eval.suite import encode_texts
from lab.eval.zeroshot import class_embeddings
from lab.losses import prompt_kd as K
from lab.models import prompts as P
from lab.train.cache import cache_key
from lab.train.loop import Trainer, TrainConfig

TEXT_CONSISTENCY, IMAGE_CONSISTENCY = 25.0, 10.0


@dataclass
class StageOneConfig:
    """Teacher prompt tuning: ``shots`` labelled images per tuned class."""

    shots: int = 16
    length: int = 4
    depth: int = 9  # at most each tower's number of blocks
    init_words: str = "a photo of a"
    steps: int = 100
    batch_size: int = 64
    lr: float = 2e-3
    consistency: bool = True  # PromptSRC's self-regulating terms


@dataclass(frozen=True)
class TuningSet:
    """What the teacher is tuned on: which label space, which of its classes, which styles."""

    space: LabelSpace
    classes: str = "all"  # "all", or "base" (colour-shape base classes, the base-to-novel protocol)
    styles: str = "plain,textured,sketch,noisy"

    @property
    def class_ids(self) -> tuple[int, ...]:
        return self.space.base_ids if self.classes == "base" else tuple(range(self.space.num_classes))

    def describe(self) -> dict:
        return {"space": self.space.name, "classes": self.classes, "styles": self.styles}


class PromptedTeacher(nn.Module):
    """The frozen teacher with its deep vision and text prompts."""

    def __init__(self, clip, cfg: StageOneConfig):
        super().__init__()
        self.clip = clip
        clip.model.eval().requires_grad_(False)
        self.vision = P.vision_prompts(clip.model.visual, cfg.length, cfg.depth)
        self.text = P.text_prompts_from_words(clip, cfg.init_words, cfg.depth)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(P.encode_image(self.clip.model.visual, images, self.vision), dim=-1)

    def class_features(self, classnames) -> torch.Tensor:
        tokens = self.clip.tokenize(P.prompt_texts(classnames, self.text.length)).to(self.vision.tokens.device)
        return F.normalize(P.encode_text(self.clip.model, tokens, self.text), dim=-1)

    def prompt_state(self) -> dict[str, torch.Tensor]:
        return {"vision": self.vision.tokens.detach().cpu(), "text": self.text.tokens.detach().cpu()}

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.vision.tokens.copy_(state["vision"])
            self.text.tokens.copy_(state["text"])


def tune(teacher: PromptedTeacher, cfg: StageOneConfig, tuning: TuningSet, seed: int, device, log) -> None:
    """Cross-entropy (and PromptSRC consistency) over the tuning classes on few-shot labelled images."""
    ids = tuning.class_ids
    shots = build_pairs(DataConfig(size=cfg.shots * len(ids), classes=tuning.classes, styles=tuning.styles,
                                   balanced=True, seed=seed + 1))
    remap = torch.full((tuning.space.num_classes,), -1, dtype=torch.long, device=device)
    remap[torch.as_tensor(ids, device=device)] = torch.arange(len(ids), device=device)
    names = [tuning.space.classnames[i] for i in ids]
    frozen_classes = class_embeddings(lambda t: encode_texts(teacher.clip, t), names, PROMPT_TEMPLATES).to(device)
    train_cfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=min(10, cfg.steps),
                            weight_decay=0.0, log_every=max(1, cfg.steps // 10), seed=seed)
    trainer = Trainer(teacher.named_parameters(), train_cfg, lambda r: log({f"stage1/{k}": v for k, v in r.items()}),
                      desc="stage 1: teacher prompts")

    def step_fn(batch):
        images = teacher.clip.image_tensor(batch.images).to(device)
        labels = remap[torch.as_tensor(batch.labels(tuning.space), device=device)]
        image, classes = teacher.image_features(images), teacher.class_features(names)
        logits = K.LOGIT_SCALE * image @ classes.T
        terms = {"ce": F.cross_entropy(logits, labels)}
        if cfg.consistency:
            with torch.no_grad():
                frozen_image = teacher.clip.model.encode_image(images, normalize=True)
            frozen_logits = K.LOGIT_SCALE * frozen_image @ frozen_classes.T
            terms["text_l1"] = TEXT_CONSISTENCY * F.l1_loss(classes, frozen_classes)
            terms["image_l1"] = IMAGE_CONSISTENCY * F.l1_loss(image, frozen_image)
            terms["logit_kl"] = F.kl_div(F.log_softmax(logits, 1), F.softmax(frozen_logits, 1), reduction="batchmean")
        return terms

    trainer.fit(step_batches(shots, cfg.batch_size, cfg.steps, seed), step_fn)


def tuned_teacher(clip, cfg: StageOneConfig, tuning: TuningSet, seed: int, device, log,
                  cache_dir: str | Path) -> tuple[PromptedTeacher, bool]:
    """The teacher with stage-1 prompts, from the cache when these settings were tuned before; also says if it was a hit."""
    teacher = PromptedTeacher(clip, cfg).to(device)
    path = Path(cache_dir) / f"{cache_key(clip, {'stage1': to_dict(cfg), 'tuning': tuning.describe(), 'seed': seed})}.safetensors"
    hit = path.is_file()
    if hit:
        teacher.load_prompt_state(load_file(str(path)))
    else:
        tune(teacher, cfg, tuning, seed, device, log)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(teacher.prompt_state(), str(tmp))
        tmp.replace(path)
    teacher.requires_grad_(False)
    return teacher, hit

"""KDPL's side of the prompt pipeline: a hand-crafted-prompt teacher and the class lists, no labels anywhere.

KDPL (Mistretta et al., ECCV 2024, arXiv 2407.03056; code: miccunifi/KDPL, ``trainers/vpt_kdpl.py`` and
``kdpl_utils.py``) has no teacher-tuning stage: the teacher is the frozen zero-shot CLIP with one
hand-crafted template, its logits at the *student's* logit scale (``CustomCLIPTeacher`` takes the student's
``logit_scale``; frozen in the official trainers). The lab's student is VPT-KDPL's: deep vision prompts on the
frozen student, whose class weights come from its own text tower with the same template. Class lists:

* KDPL — the class names the protocol would train on (base2novel: the base classes; cross: the source
  label space; domain: every class); ``kdpl_k=0`` keeps all of them (the official ``K = len(classnames)``);
* KDPL-CA (``class_agnostic=true``) — the dictionary of every ShapesWorld class name of every label space
  (the official ``classnames_dictionay.csv``), of which the K with the highest batch-mean teacher
  probability are distilled on each batch (``kdpl_k``; the official K_MAX is 1000 of its dictionary).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.data.shapes import LABEL_SPACES, PROMPT_TEMPLATES

TEMPLATE = PROMPT_TEMPLATES[0]  # "a photo of a {}." — the official class-agnostic template


def dictionary() -> list[str]:
    """Every class name of every ShapesWorld label space, once, in a fixed order (KDPL-CA's dictionary)."""
    return list(dict.fromkeys(name for space in LABEL_SPACES.values() for name in space.classnames))


def class_names(cfg, setup) -> list[str]:
    """The names KDPL distils over: the protocol's training classes, or the dictionary (class-agnostic)."""
    if cfg.class_agnostic:
        return dictionary()
    return [setup.tuning.space.classnames[i] for i in setup.tuning.class_ids]


@torch.no_grad()
def text_classes(clip, names) -> torch.Tensor:
    """A CLIP's normalised class weights from the hand-crafted template (one prompt per class)."""
    device = next(clip.model.parameters()).device
    tokens = clip.tokenize([TEMPLATE.format(n) for n in names]).to(device)
    return F.normalize(clip.model.encode_text(tokens), dim=-1)


class HandCraftedTeacher(torch.nn.Module):
    """The frozen zero-shot teacher KDPL distils from (no tuned prompts)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        clip.model.eval().requires_grad_(False)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.model.encode_image(images), dim=-1)

    def class_features(self, classnames) -> torch.Tensor:
        return text_classes(self.clip, classnames)

    def prompt_state(self) -> dict[str, torch.Tensor]:
        return {}

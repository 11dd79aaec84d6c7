"""The learnable parts of distillation objectives: projection heads, scales, AFD fusion layers.

They are trained with the student, saved in its checkpoints and thrown away after
training (the deployed student never uses them).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

INIT_LOG_SCALE = math.log(1 / 0.07)
MAX_LOG_SCALE = math.log(100.0)


class LearnableScale(nn.Module):
    """A learnable multiplier of cosine similarities, initialised at ln(1/0.07).

    ``paper``: exp(p), with p clamped to [0, ln 100] after each step like CLIP's own
    scale (starts at 14.3). ``official``: the raw p, unclamped (starts at 2.66),
    as the released CLIP-KD and CLIP-RD code multiply by the parameter itself.
    """

    def __init__(self, variant: str = "paper"):
        super().__init__()
        self.variant = variant
        self.log_scale = nn.Parameter(torch.tensor(INIT_LOG_SCALE))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp() if self.variant == "paper" else self.log_scale

    def clamp_(self) -> None:
        if self.variant == "paper":
            with torch.no_grad():
                self.log_scale.clamp_(0.0, MAX_LOG_SCALE)

    def extra_repr(self) -> str:
        return f"variant={self.variant}"


class Projection(nn.Module):
    """Student → teacher width, one Linear(D_S, D_T) per modality; identity when widths agree.

    ``pv = normalize(P_img(a_img))``, ``pt = normalize(P_txt(a_txt))`` on the raw
    (unnormalised) student embeddings (CLIP-KD §3.2.2).
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.needed = student_dim != teacher_dim
        if self.needed:
            self.image = nn.Linear(student_dim, teacher_dim)
            self.text = nn.Linear(student_dim, teacher_dim)

    def forward(self, image_raw: torch.Tensor, text_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.needed:
            image_raw, text_raw = self.image(image_raw), self.text(text_raw)
        return F.normalize(image_raw, dim=-1), F.normalize(text_raw, dim=-1)

    def project_image(self, image_raw: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(image_raw) if self.needed else image_raw, dim=-1)


class Fusion(nn.Module):
    """AFD's fusion encoders φ_v, φ_t: Linear([student ; teacher] → D_S), outputs normalised.

    The input width is 2·D_T after projection (D_S + D_T when no projection is
    needed) — the released code's Linear(D_S + D_T) crashes when the widths differ.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        in_dim = 2 * teacher_dim
        self.image = nn.Linear(in_dim, student_dim)
        self.text = nn.Linear(in_dim, student_dim)

    def forward(self, pv, pt, v_t, t_t) -> tuple[torch.Tensor, torch.Tensor]:
        va = F.normalize(self.image(torch.cat([pv, v_t], dim=1)), dim=-1)
        ta = F.normalize(self.text(torch.cat([pt, t_t], dim=1)), dim=-1)
        return va, ta

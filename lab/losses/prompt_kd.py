"""Prompt-distillation losses and modules: PromptKD's logit KD, ComKD-CLIP's IFAlign and EduAttention.

Notation (METHODS.md, "ComKD-CLIP and the PromptKD pipeline"): ``W`` (C, D_T) the tuned
teacher's normalised class text features; ``u_t`` (B, D_T) the teacher's normalised
image features; ``z = P(f_s(x))`` (B, D_T) the projected student image features;
logits are ``100 · cos``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOGIT_SCALE = 100.0
EDU_VARIANTS = ("img_query", "text_query")
REFINEMENTS = ("kl", "mse", "l1")


def promptkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  weight: float = 1000.0, variant: str = "official") -> torch.Tensor:
    """PromptKD's logit distillation (PromptKD §3.3, Eq. 2).

        paper:    L = τ² · KL(σ(q_t/τ) ‖ σ(q_s/τ))                       (mean over the batch)
        official: L = KD_W · τ² · Σ_{b,c} p_t (log p_t − log p_s) / (B·C)   (KD_W = 1000)

    The official reduction equals ``KD_W / C`` times the paper's, so its effective weight
    depends on the number of classes C; ``weight`` is ignored by the paper variant.
    """
    if variant not in ("paper", "official"):
        raise ValueError(f"Unknown variant '{variant}'; choose 'paper' or 'official'.")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    if variant == "paper":
        return temperature ** 2 * F.kl_div(log_p_s, p_t, reduction="batchmean")
    return weight * temperature ** 2 * F.kl_div(log_p_s, p_t, reduction="sum") / student_logits.numel()


def refinement_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "kl",
                    temperature: float = 1.0, weight: float = 1000.0, kl_variant: str = "official") -> torch.Tensor:
    """ComKD-CLIP's refinement of the student's (EduAttention) logits towards the teacher's (§3.4, Table 6).

        kl:  :func:`promptkd_loss`            (the paper's choice)
        mse: mean_{b,c} (q_s − q_t)²          l1: mean_{b,c} |q_s − q_t|

    on ``100·cos`` logits, the teacher detached; ``weight`` and ``kl_variant`` apply to KL only.
    """
    if kind not in REFINEMENTS:
        raise ValueError(f"Unknown refinement '{kind}'; choose one of: {', '.join(REFINEMENTS)}.")
    if kind == "kl":
        return promptkd_loss(student_logits, teacher_logits, temperature, weight, kl_variant)
    distance = F.mse_loss if kind == "mse" else F.l1_loss
    return distance(student_logits, teacher_logits.detach())


def ifalign_loss(student: torch.Tensor, teacher: torch.Tensor, mean: bool = True, variance: bool = True) -> torch.Tensor:
    """ComKD-CLIP image-feature alignment (ComKD-CLIP §3.2, IFAlign).

        L = ‖μ(ẑ) − μ(u_t)‖₁ + ‖σ²(ẑ) − σ²(u_t)‖₁

    per-channel statistics over the batch of the normalised student features ``ẑ`` and
    the teacher's ``u_t`` (biased variance, L1 summed over channels). ``mean`` /
    ``variance`` switch the two parts off for the seed paper's ablation (its Table 5).
    """
    if not (mean or variance):
        raise ValueError("ifalign_loss needs the mean part, the variance part, or both.")
    teacher = teacher.detach()
    loss = student.new_zeros(())
    if mean:
        loss = loss + (student.mean(0) - teacher.mean(0)).abs().sum()
    if variance:
        loss = loss + (student.var(0, unbiased=False) - teacher.var(0, unbiased=False)).abs().sum()
    return loss


class Projector(nn.Module):
    """PromptKD's student projector: Linear(D_S, D_T) → BatchNorm1d → ReLU → Linear(D_T, D_T)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(student_dim, teacher_dim), nn.BatchNorm1d(teacher_dim), nn.ReLU(),
                                 nn.Linear(teacher_dim, teacher_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EduAttention(nn.Module):
    """ComKD-CLIP's EduAttention (ComKD-CLIP §3.3): a gated cross-attention between image and class text.

    ``img_query`` (default): f_e = z + α · softmax(FC_q(z) FC_k(W)ᵀ / √C) FC_v(W)     → (B, C_dim)
    ``text_query`` (the paper's roles): a = softmax_c(FC_k(z) FC_q(W)ᵀ / √C),
        f_e[b, c] = z_b + α · a[b, c] · FC_v(z)_b                                     → (B, classes, C_dim)

    The paper's shapes do not close as written (one pooled vector per image as keys);
    these are METHODS.md's two resolutions. α is one learnable scalar, initialised to 0,
    so a fresh EduAttention leaves PromptKD's logits unchanged.
    """

    def __init__(self, dim: int, variant: str = "img_query"):
        super().__init__()
        if variant not in EDU_VARIANTS:
            raise ValueError(f"Unknown EduAttention variant '{variant}'; choose one of: {', '.join(EDU_VARIANTS)}.")
        self.variant, self.scale = variant, 1.0 / math.sqrt(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.variant == "img_query":
            attention = torch.softmax(self.q(z) @ self.k(classes).T * self.scale, dim=-1)
            return z + self.alpha * attention @ self.v(classes)
        return z[:, None] + self.alpha * self._text_attention(z, classes)[..., None] * self.v(z)[:, None]

    def _text_attention(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.k(z) @ self.q(classes).T * self.scale, dim=-1)

    def logits(self, z: torch.Tensor, classes: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
        """``class_logits(self(z, classes), classes)``; for ``text_query`` without building the (B, C, D) features.

        With a = α·attention (B, C) and v = FC_v(z): f_e[b,c]·w_c = z_b·w_c + a_bc v_b·w_c and
        ‖f_e[b,c]‖² = ‖z_b‖² + 2 a_bc z_b·v_b + a_bc² ‖v_b‖², all (B, C) or (B, 1) products.
        """
        if self.variant == "img_query":
            return class_logits(self(z, classes), classes, scale)
        a, v = self.alpha * self._text_attention(z, classes), self.v(z)
        dot = z @ classes.T + a * (v @ classes.T)
        squared_norm = ((z * z).sum(-1, keepdim=True) + 2 * a * (z * v).sum(-1, keepdim=True)
                        + a * a * (v * v).sum(-1, keepdim=True))
        return scale * dot / squared_norm.clamp_min(0).sqrt().clamp_min(1e-12)


def class_logits(features: torch.Tensor, classes: torch.Tensor, scale: float = LOGIT_SCALE) -> torch.Tensor:
    """``scale · cos(f, w_c)``: (B, D) features against all classes, or (B, C, D) class-conditional ones paired diagonally."""
    features = F.normalize(features, dim=-1)
    if features.dim() == 2:
        return scale * features @ classes.T
    return scale * (features * classes[None]).sum(-1)


# --------------------------------------------------------------------------- KDPL (Mistretta et al., ECCV 2024)


def kdpl_classes(teacher_logits: torch.Tensor, k: int) -> torch.Tensor:
    """KDPL's class selection (KDPL §3.3; official ``kdpl_utils.sampling``): the K classes with the highest
    teacher probability averaged over the batch, ``top-K_c (1/B) Σ_b softmax(q_t)_bc`` — no labels.

    Returned in decreasing mean probability (the official ``argpartition`` returns the same set unordered;
    the loss does not depend on the order). ``k ≥ C`` keeps every class, as non-class-agnostic KDPL does.
    """
    mean_p = F.softmax(teacher_logits.detach().float(), dim=1).mean(0)
    return torch.topk(mean_p, min(k, mean_p.numel())).indices


def kdpl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KDPL's symmetric KL (KDPL §3.2, Eq. 4; official ``coop_kdpl.CoOp_KDPL.forward_backward``):

        L = ½ KL(p_t ‖ p_s) + ½ KL(p_s ‖ p_t),   p = softmax(s · cos)   (mean over the batch)

    on the selected classes' logits (:func:`kdpl_classes`), both at the student's logit scale ``s``;
    the teacher side is a constant (its logits carry no trainable parameter in the official code).
    """
    log_p_s = F.log_softmax(student_logits, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach(), dim=-1)
    forward = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    reverse = F.kl_div(log_p_t, log_p_s, log_target=True, reduction="batchmean")
    return 0.5 * forward + 0.5 * reverse

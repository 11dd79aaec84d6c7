"""Loss terms as plain functions on tensors.

Notation (METHODS.md), for one batch of N image–text pairs:

* student embeddings, L2-normalised: ``v_s, t_s`` (N, D_S); projected to the
  teacher's width and re-normalised: ``pv, pt`` (N, D_T) (equal to ``v_s, t_s``
  when the widths agree);
* teacher embeddings, L2-normalised and constant: ``v_t, t_t`` (N, D_T);
* scales are *multipliers* of cosine similarities (already exponentiated where
  the method exponentiates them): student ``s_s``, teacher ``s_t``;
* ``CE_diag(L)``: cross-entropy of each row of ``L`` against its own index;
* ``KL(target ‖ pred)`` over rows: ``kl_div(log_softmax(pred), softmax(target).detach(),
  "batchmean")`` — summed over columns, averaged over rows, temperature 1.

Where the paper and the released code differ, ``variant="paper"`` (default) or
``variant="official"`` selects the reading.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VARIANTS = ("paper", "official")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant '{variant}'; choose 'paper' or 'official'.")


def _check_batch(x: torch.Tensor, name: str) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"{name} got an empty batch; every loss needs at least one pair.")


def _check_widths(student: torch.Tensor, teacher: torch.Tensor, name: str) -> None:
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"{name} needs equal widths, got student {student.shape[1]} and teacher {teacher.shape[1]}; "
                         f"project the student with a Linear head first (the Objective does this for you).")


def diagonal_ce(logits: torch.Tensor) -> torch.Tensor:
    """CE_diag(L): mean cross-entropy of row i against class i."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def kl_rows(pred_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) ‖ softmax(pred)) per row, averaged over rows; the target is detached."""
    return F.kl_div(F.log_softmax(pred_logits, dim=1), F.softmax(target_logits.detach(), dim=1),
                    reduction="batchmean")


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric contrastive (InfoNCE) loss, the task term of every objective.

    L_task = ½ [ CE_diag(s · v tᵀ) + CE_diag(s · t vᵀ) ]

    with ``v, t`` (N, D) normalised embeddings and ``s`` the exponentiated logit
    scale (Radford et al. 2021, §2.3; CLIP-KD §3.1, Eqs. 1–3).
    """
    _check_batch(image, "clip_loss")
    logits = scale * image @ text.T
    return 0.5 * (diagonal_ce(logits) + diagonal_ce(logits.T))


def crd_loss(v_s, t_s, s_s, v_t, t_t, s_t, variant: str = "paper") -> torch.Tensor:
    """CLIP-KD contrastive *relational* distillation (CLIP-KD §3.2.1, Eqs. 4–10).

    With S_s = s_s · v_s t_sᵀ and S_t = s_t · v_t t_tᵀ (each model in its own space):

        paper:    L = KL(S_t ‖ S_s) + KL(S_tᵀ ‖ S_sᵀ)     (image→text rows + text→image rows)
        official: L = ½ [KL(S_t ‖ S_s) + KL(S_tᵀ ‖ S_sᵀ)]  (the released code's mean)

    Not Tian et al.'s CRD (no memory bank): a KL between in-batch similarity distributions.
    """
    _check_variant(variant)
    _check_batch(v_s, "crd_loss")
    student, teacher = s_s * v_s @ t_s.T, s_t * v_t @ t_t.T
    total = kl_rows(student, teacher) + kl_rows(student.T, teacher.T)
    return total if variant == "paper" else 0.5 * total


def affinity_mimicking_loss(v_s, t_s, s_s, v_t, t_t, s_t) -> torch.Tensor:
    """TinyCLIP affinity mimicking (Wu et al. 2023, §3.2): soft-target cross-entropy.

        L = ½ [ CE(s_s · v_s t_sᵀ, softmax(s_t · v_t t_tᵀ)) + CE(s_s · t_s v_sᵀ, softmax(s_t · t_t v_tᵀ)) ]

    It differs from the official CRD only by the teacher's entropy (a constant), so
    both have the same gradient.
    """
    _check_batch(v_s, "affinity_mimicking_loss")
    student, teacher = s_s * v_s @ t_s.T, (s_t * v_t @ t_t.T).detach()

    def soft_ce(pred, target):
        return -(F.softmax(target, dim=1) * F.log_softmax(pred, dim=1)).sum(dim=1).mean()

    return 0.5 * (soft_ce(student, teacher) + soft_ce(student.T, teacher.T))


def fd_loss(pv, pt, v_t, t_t, variant: str = "paper") -> torch.Tensor:
    """CLIP-KD feature distillation (CLIP-KD §3.2.2, Eq. 11).

        paper:    L = mean_k ( ‖pv_k − v_t,k‖² + ‖pt_k − t_t,k‖² )
        official: L = mse(pv, v_t) + mse(pt, t_t)   (mean over N·D elements = paper / D_T)

    On unit vectors ‖a − b‖² = 2 − 2 cos(a, b): FD aligns directions. The official
    weight 2000 belongs to the official reduction (≈ 2000 / D_T in the paper's).
    """
    _check_variant(variant)
    _check_batch(pv, "fd_loss")
    _check_widths(pv, v_t, "fd_loss")
    if variant == "official":
        return F.mse_loss(pv, v_t) + F.mse_loss(pt, t_t)
    return ((pv - v_t).pow(2).sum(dim=1) + (pt - t_t).pow(2).sum(dim=1)).mean()


def clip_gradients(anchor: torch.Tensor, key: torch.Tensor, temperature) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradients of ``mean_i CE(anchor_i · keyᵀ / τ, i)`` (CLIP-KD appendix A, Eqs. 19–22).

        ∂/∂anchor = (P − I) key / (τ N),   ∂/∂key = (P − I)ᵀ anchor / (τ N),   P = softmax(anchor keyᵀ / τ)

    They are differentiable tensors, so a loss on them needs no double backward,
    and nothing of size N×D×N is built.
    """
    n = anchor.shape[0]
    residual = F.softmax(anchor @ key.T / temperature, dim=1) - torch.eye(n, device=anchor.device, dtype=anchor.dtype)
    return residual @ key / (temperature * n), residual.T @ anchor / (temperature * n)


def gd_loss(pv, pt, s_s, v_t, t_t, s_t, variant: str = "paper") -> torch.Tensor:
    """CLIP-KD gradient distillation (CLIP-KD §3.2.4, Eq. 13; appendix A, Eqs. 23–25).

    Match the gradients of the CLIP loss w.r.t. the embeddings, teacher vs student.

        paper:    τ = 1/s;  g_v = ½(∂L_I→T/∂v + ∂L_T→I/∂v),  g_t likewise;
                  L = mean_k ( ‖g_v,k^t − g_v,k^s‖² + ‖g_t,k^t − g_t,k^s‖² )
        official: τ = s (the released code passes the scale where the temperature
                  belongs, so the softmax is nearly uniform); the four partial
                  gradients (anchor and key role of each modality) are matched
                  separately with element-mean MSE and summed. Its 1e8 weight is
                  calibrated to this tiny quantity.
    """
    _check_variant(variant)
    _check_batch(pv, "gd_loss")
    _check_widths(pv, v_t, "gd_loss")
    tau_s, tau_t = (1.0 / s_s, 1.0 / s_t) if variant == "paper" else (s_s, s_t)
    with torch.no_grad():
        t_img_anchor, t_txt_key = clip_gradients(v_t, t_t, tau_t)  # L_I→T
        t_txt_anchor, t_img_key = clip_gradients(t_t, v_t, tau_t)  # L_T→I
    s_img_anchor, s_txt_key = clip_gradients(pv, pt, tau_s)
    s_txt_anchor, s_img_key = clip_gradients(pt, pv, tau_s)
    if variant == "official":
        return (F.mse_loss(s_img_anchor, t_img_anchor) + F.mse_loss(s_txt_key, t_txt_key)
                + F.mse_loss(s_txt_anchor, t_txt_anchor) + F.mse_loss(s_img_key, t_img_key))
    g_v_s, g_v_t = 0.5 * (s_img_anchor + s_img_key), 0.5 * (t_img_anchor + t_img_key)
    g_t_s, g_t_t = 0.5 * (s_txt_key + s_txt_anchor), 0.5 * (t_txt_key + t_txt_anchor)
    return ((g_v_s - g_v_t).pow(2).sum(dim=1) + (g_t_s - g_t_t).pow(2).sum(dim=1)).mean()


def icl_loss(pv, pt, v_t, t_t, scale) -> torch.Tensor:
    """CLIP-KD interactive contrastive learning (CLIP-KD §3.2.5, Eqs. 14–16).

        L = ½ [ CE_diag(c · pv t_tᵀ) + CE_diag(c · pt v_tᵀ) ]

    Student anchors contrast the teacher's embeddings of the other modality (the
    two matrices are not transposes of each other). ``c`` is a learnable scale:
    exp(p) in the paper reading, the raw p in the official code. Minimising it
    raises the bound I(v_s; t_t) ≥ log(N − 1) − L (appendix B).
    """
    _check_batch(pv, "icl_loss")
    _check_widths(pv, v_t, "icl_loss")
    return 0.5 * (diagonal_ce(scale * pv @ t_t.T) + diagonal_ce(scale * pt @ v_t.T))


def afd_loss(fused_image, fused_text, scale) -> torch.Tensor:
    """CLIP-KD augmented feature distillation (CLIP-KD §3.2.6, Eq. 17).

        va = normalize(φ_v([pv ; v_t])),  ta = normalize(φ_t([pt ; t_t])),  L = clip(va, ta, c_f)

    This function takes the fused, normalised embeddings; the fusion layers φ
    (Linear(2·D_T, D_S)) live in :class:`lab.losses.modules.Fusion` and are thrown
    away after training.
    """
    return clip_loss(fused_image, fused_text, scale)


def vrd_loss(pv, pt, v_t, t_t, scale_image, scale_text) -> torch.Tensor:
    """CLIP-RD vertical relational distillation (CLIP-RD, authors' code; arXiv 2603.25383).

    With vertical logits A_I = λ_I · v_t pvᵀ (teacher images vs student images) and
    A_T = λ_T · t_t ptᵀ:

        L = ½ [KL(A_T ‖ A_I) + KL(A_Tᵀ ‖ A_Iᵀ)]        (text distribution, detached, is the target)
          + ½ [CE_diag(A_I) + CE_diag(A_Iᵀ)] + ½ [CE_diag(A_T) + CE_diag(A_Tᵀ)]

    The KL and the image CE reach only the student's image tower; the text CE only
    its text tower.
    """
    _check_batch(pv, "vrd_loss")
    _check_widths(pv, v_t, "vrd_loss")
    a_img, a_txt = scale_image * v_t @ pv.T, scale_text * t_t @ pt.T
    kl = 0.5 * (kl_rows(a_img, a_txt) + kl_rows(a_img.T, a_txt.T))
    ce_img = 0.5 * (diagonal_ce(a_img) + diagonal_ce(a_img.T))
    ce_txt = 0.5 * (diagonal_ce(a_txt) + diagonal_ce(a_txt.T))
    return kl + ce_img + ce_txt


def xrd_loss(pv, pt, v_t, t_t, scale) -> torch.Tensor:
    """CLIP-RD cross relational distillation (CLIP-RD, authors' code; arXiv 2603.25383).

    With cross logits X1 = λ_X · v_t ptᵀ (teacher images vs student texts) and
    X2 = λ_X · t_t pvᵀ (teacher texts vs student images):

        L = ¼ [KL(X2 ‖ X1) + KL(X1 ‖ X2) + KL(X2ᵀ ‖ X1ᵀ) + KL(X1ᵀ ‖ X2ᵀ)]

    the first argument detached each time: a stop-gradient symmetric KL, row-wise
    (teacher anchors) and column-wise (student anchors). λ_X is shared with ICL.
    """
    _check_batch(pv, "xrd_loss")
    _check_widths(pv, v_t, "xrd_loss")
    x1, x2 = scale * v_t @ pt.T, scale * t_t @ pv.T
    return 0.25 * (kl_rows(x1, x2) + kl_rows(x2, x1) + kl_rows(x1.T, x2.T) + kl_rows(x2.T, x1.T))


def logit_kd_loss(student_logits, teacher_logits, temperature: float = 1.0) -> torch.Tensor:
    """Hinton et al. (2015) knowledge distillation on class logits.

        L = τ² · KL(softmax(q_t/τ) ‖ softmax(q_s/τ))   (batchmean)
    """
    _check_batch(student_logits, "logit_kd_loss")
    return temperature ** 2 * kl_rows(student_logits / temperature, teacher_logits / temperature)


# --------------------------------------------------------------------------- MFD: masked student images


KEEP_RULES = ("ceil", "floor")  # the paper-reading lab's ⌈(1 − r)·L⌉ kept patches, the official code's ⌊(1 − r)·L⌋


def mask_patches(tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None,
                 shard: tuple[int, int] = (0, 1), keep_rule: str = "ceil") -> torch.Tensor:
    """Keep a random ⌈(1 − r)·L⌉ of the L patch tokens of each sample (MAE-style, no mask tokens).

    ``keep_rule="floor"`` keeps ⌊(1 − r)·L⌋ instead, as the official CLIP-KD code does
    (``int(L * (1 - mask_ratio))``); the two agree whenever (1 − r)·L is whole (r = 0.5, 0.75 at L = 16).

    ``tokens`` (B, L, W) already carry their positional embeddings, so the kept
    tokens remember where they came from; they stay in their original order.
    ``shard=(rank, world_size)``: the tokens are rank's rows of a global batch of
    B·world_size; the noise is drawn for the global batch and sliced, so every row is
    masked as in a one-process run with the same generator.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}.")
    b, length, width = tokens.shape
    if keep_rule not in KEEP_RULES:
        raise ValueError(f"keep_rule must be one of {KEEP_RULES}, got {keep_rule!r}.")
    kept_length = (1 - mask_ratio) * length
    keep = max(1, math.ceil(kept_length - 1e-9) if keep_rule == "ceil" else math.floor(kept_length + 1e-9))  # the
    # epsilons absorb float error, e.g. 0.3 * 10
    rank, world_size = shard
    device = generator.device if generator is not None else tokens.device  # a CPU generator also masks GPU tokens
    noise = torch.rand(b * world_size, length, generator=generator, device=device)[rank * b:(rank + 1) * b]
    kept = noise.argsort(dim=1)[:, :keep].sort(dim=1).values.to(tokens.device)
    return tokens.gather(1, kept.unsqueeze(-1).expand(-1, -1, width))


def masked_encode_image(visual, images: torch.Tensor, mask_ratio: float,
                        generator: torch.Generator | None = None, shard: tuple[int, int] = (0, 1),
                        keep_rule: str = "ceil") -> torch.Tensor:
    """The student's image embedding (unnormalised) computed from a masked image (CLIP-KD §3.2.3, Eq. 12).

    Patchify, add positional embeddings, drop patches (:func:`mask_patches`), prepend the
    CLS token, then ``ln_pre → transformer → pool → proj`` as open_clip's ViT does.
    Unlike the released code (which overwrites this with the unmasked forward), the
    masking is real. With ``mask_ratio = 0`` it equals ``visual(images)``.
    """
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise TypeError(f"MFD masks ViT patch tokens, but the student's image tower is a {type(visual).__name__}; "
                        f"use a ViT student or FD instead.")
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    pos = visual.positional_embedding.to(x.dtype)
    x = mask_patches(x + pos[1:], mask_ratio, generator, shard, keep_rule)
    cls = (visual.class_embedding.to(x.dtype) + pos[0]).expand(x.shape[0], 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], dim=1))
    pooled, _ = visual._pool(visual.transformer(x))
    return pooled @ visual.proj if visual.proj is not None else pooled

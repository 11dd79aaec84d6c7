"""Modern distillation recipes as plain functions on tensors: open_clip's DistillClipLoss, MobileCLIP's
reinforced distillation (DRClipLoss, teacher ensembles, DistillSigLipLoss) and DIME-FM.

Notation as in :mod:`lab.losses.functional`: ``v, t`` are L2-normalised (N, D) embeddings, scales are
multipliers of cosine similarities, ``H(p, q) = −Σ_j p_j log q_j`` averaged over rows (soft-label
cross-entropy), ``KL(p ‖ q)`` the same minus ``H(p, p)``. Each function says which released code it
reproduces; the parity tests (tests/test_modern_losses.py) run that code on the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lab.losses.functional import clip_loss

DIME_SCALE = 100.0  # DIME-FM's create_logits: a fixed logit scale of 100 (Training/utils/split_network.py)
DIME_CONSTANTS = {"t_vl": 1.0, "t_pvl": 3.0, "w_vl": 0.7, "w_pvl": 0.3}  # Training/utils/opts.py defaults


def soft_ce(target_probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """H(p, softmax(z)) = −Σ_j p_ij log softmax(z)_ij, averaged over rows i; ``p`` is detached."""
    return -(target_probs.detach() * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean(dim=0)


def openclip_distill_loss(v_s, t_s, s_s, v_t, t_t, s_t) -> torch.Tensor:
    """open_clip's ``DistillClipLoss`` distillation part (open_clip PR #399, ``--distill-model``).

    With S_s = s_s · v_s t_sᵀ and S_t = s_t · v_t t_tᵀ (the teacher with its *own* logit scale):

        L = ½ [ H(softmax(S_t), softmax(S_s)) + H(softmax(S_tᵀ), softmax(S_sᵀ)) ]

    added with weight 1 to the task loss (open_clip sums ``contrastive_loss`` and ``distill_loss``).
    Relation to CLIP-KD's CRD (CLIP-KD §3.2.1; its official code's ½-mean): the same row
    distributions, but a *cross-entropy* instead of a KL. H(p, q) = KL(p ‖ q) + H(p), and H(p) — the
    teacher's entropy — does not depend on the student, so the gradients equal CRD-official's and the
    value is larger by the constant ½[H(softmax(S_t)) + H(softmax(S_tᵀ))].
    """
    s_logits, t_logits = s_s * v_s @ t_s.T, s_t * v_t @ t_t.T
    return 0.5 * (soft_ce(F.softmax(t_logits, 1), s_logits) + soft_ce(F.softmax(t_logits.T, 1), s_logits.T))


def _blocks(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


def ensemble_targets(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], scales: Sequence[float] | float,
                     biases: Sequence[float] | None = None, average_after_softmax: bool = True) -> torch.Tensor:
    """Row targets of an M-teacher ensemble for the similarities a → b (MobileCLIP, CVPR 2024 §3;
    ``DistillClipLoss.get_logits_ensemble`` / ``dist_loss`` in ml-mobileclip's ``open_clip_v2.patch``).

    ``a``, ``b``: one (N, D_m) normalised block per teacher (the patch slices one concatenated
    embedding with ``--distill-teacher-dimension``). With ``average_after_softmax``
    (``--distill-average-after-softmax``, every released script):

        P = (1/M) Σ_m softmax(s_m · a_m b_mᵀ + β_m)

    each member with its own scale s_m (``--distill-logit-scale 100``; MobileCLIP2's DFN script
    70 60) and bias β_m (default 0). Without the flag the patch takes ONE softmax of the
    concatenated features' logits with one scale: P = softmax(s · Σ_m a_m b_mᵀ) (biases unused).
    Returns probabilities (N, N').
    """
    a, b = _blocks(a), _blocks(b)
    if len(a) != len(b):
        raise ValueError(f"ensemble_targets got {len(a)} image blocks and {len(b)} text blocks; one per teacher.")
    m = len(a)
    if not average_after_softmax:
        if isinstance(scales, Sequence):
            raise ValueError("Without average_after_softmax the released code takes one softmax with ONE scale; "
                             "pass a single number.")
        return F.softmax(scales * sum(x @ y.T for x, y in zip(a, b)), dim=1)
    scales = list(scales) if isinstance(scales, Sequence) else [scales] * m
    biases = list(biases) if biases is not None else [0.0] * m
    if len(scales) != m or len(biases) != m:
        raise ValueError(f"ensemble_targets needs one scale and one bias per teacher ({m}); "
                         f"got {len(scales)} and {len(biases)}.")
    return sum(F.softmax(s * x @ y.T + c, dim=1) for x, y, s, c in zip(a, b, scales, biases)) / m


def ensemble_kd_loss(v_s, t_s, s_s, v_t, t_t, scales, biases=None, average_after_softmax: bool = True):
    """MobileCLIP's KD on one caption set: ½[H(P^{I→T}, softmax(S)) + H(P^{T→I}, softmax(Sᵀ))],
    S = s_s v_s t_sᵀ and P the ensemble targets (:func:`ensemble_targets`); ``v_t, t_t`` are lists of
    per-teacher blocks (or one tensor for one teacher)."""
    s_logits = s_s * v_s @ t_s.T
    p_it = ensemble_targets(v_t, t_t, scales, biases, average_after_softmax)
    p_ti = ensemble_targets(t_t, v_t, scales, biases, average_after_softmax)
    return 0.5 * (soft_ce(p_it, s_logits) + soft_ce(p_ti, s_logits.T))


def dr_clip_loss(v_s, t_s, s_s, v_t, t_t, scales, syn_t_s=None, syn_t_t=None, weights=(0.0, 1.0),
                 average_after_softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MobileCLIP's multi-modal reinforced training loss (CVPR 2024 §3; ``DRClipLoss``):

        contrastive = λ_c · Σ_{c ∈ {gt, syn}} L_clip(v_s, t_s^c)
        distill     = λ_kd · Σ_{c ∈ {gt, syn}} ½[H(P_c^{I→T}, softmax(S_c)) + H(P_c^{T→I}, softmax(S_cᵀ))]

    with ``(λ_c, λ_kd) = weights`` (``--distill-loss-weights``; every released script: 0 1, pure KD;
    the research notes transcribe the paper's (1−λ)·L_CLIP + λ·L_KD). Without synthetic
    captions only the gt terms. Returns (contrastive, distill), as the patch does.
    """
    contrastive = clip_loss(v_s, t_s, s_s)
    distill = ensemble_kd_loss(v_s, t_s, s_s, v_t, t_t, scales, None, average_after_softmax)
    if syn_t_s is not None:
        contrastive = contrastive + clip_loss(v_s, syn_t_s, s_s)
        distill = distill + ensemble_kd_loss(v_s, syn_t_s, s_s, v_t, syn_t_t, scales, None, average_after_softmax)
    return weights[0] * contrastive, weights[1] * distill


def ensemble_sigmoid_targets(a, b, scales, biases=None, average_after_sigmoid: bool = True) -> torch.Tensor:
    """MobileCLIP2's SigLIP-variant targets (``DistillSigLipLoss.get_labels_dist``, open_clip_v2.patch):

        y_T = 2 · (1/M) Σ_m σ(s_m · a_m b_mᵀ + β_m) − 1   ∈ (−1, 1)

    Without ``average_after_sigmoid``: y_T = 2σ(s · Σ_m a_m b_mᵀ + β) − 1 on the concatenated features.
    """
    a, b = _blocks(a), _blocks(b)
    m = len(a)
    if not average_after_sigmoid:
        bias = 0.0 if biases is None else biases
        return 2 * torch.sigmoid(scales * sum(x @ y.T for x, y in zip(a, b)) + bias) - 1
    scales = list(scales) if isinstance(scales, Sequence) else [scales] * m
    biases = list(biases) if biases is not None else [0.0] * m
    return 2 * sum(torch.sigmoid(s * x @ y.T + c) for x, y, s, c in zip(a, b, scales, biases)) / m - 1


def siglip_logits(v_s, t_s, s_s, b_s) -> torch.Tensor:
    return s_s * v_s @ t_s.T + b_s


def siglip_distill_loss(v_s, t_s, s_s, b_s, v_t, t_t, scales, biases=None, weights=(0.0, 1.0),
                        average_after_sigmoid: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MobileCLIP2's ``DistillSigLipLoss`` (TMLR 2025; open_clip_v2.patch), one process:

        z = s_s · v_s t_sᵀ + b_s,   y = 2I − 1 (SigLIP's labels),   y_T as in :func:`ensemble_sigmoid_targets`
        contrastive = −λ_c  · mean_i Σ_j log σ(y_ij z_ij)
        distill     = −λ_kd · mean_i Σ_j log σ(y_T,ij z_ij)

    The student needs a bias b_s (SigLIP's learnable bias). Returns (contrastive, distill).
    """
    z = siglip_logits(v_s, t_s, s_s, b_s)
    labels = 2 * torch.eye(z.shape[0], dtype=z.dtype, device=z.device) - 1
    y_t = ensemble_sigmoid_targets(v_t, t_t, scales, biases, average_after_sigmoid).detach()
    contrastive = -F.logsigmoid(labels * z).sum(1).mean(0)
    distill = -F.logsigmoid(y_t * z).sum(1).mean(0)
    return weights[0] * contrastive, weights[1] * distill


def _kl_t(teacher_logits, student_logits, temperature: float) -> torch.Tensor:
    """DIME-FM's ``compute_kl_loss``: KL(softmax(z_T/T) ‖ softmax(z_S/T)), batchmean, no T² factor."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits.detach() / temperature, dim=1), reduction="batchmean")


def _dime_logits(x, y):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return DIME_SCALE * x @ y.T


def dime_vl_loss(v_s, v_t, t_t, temperature: float = DIME_CONSTANTS["t_vl"]) -> torch.Tensor:
    """DIME-FM's VL-KD (Sun et al., ICCV 2023, §3; ``get_loss`` in Training/utils/utils.py):

        L_VL = KL_T(softmax(100 v_T t_Tᵀ) ‖ softmax(100 v_S t_Tᵀ)) + KL_T(·ᵀ ‖ ·ᵀ),  T = 1

    The student's text features ARE the teacher's (``student_text_feat = teacher_text_feat``): only the
    image tower learns; ``t_T`` comes from a sentence stream unpaired with the images (N_t ≠ N allowed).
    All features are normalised inside (``create_logits``).
    """
    s, t = _dime_logits(v_s, t_t), _dime_logits(v_t, t_t)
    return _kl_t(t, s, temperature) + _kl_t(t.T, s.T, temperature)


def dime_pvl_loss(v_s, v_t, temperature: float = DIME_CONSTANTS["t_pvl"]) -> torch.Tensor:
    """DIME-FM's P-VL (pseudo-VL) loss (§3): the batch's teacher image features act as pseudo-texts,

        L_PVL = 2 · KL_T(softmax(100 v_T v_Tᵀ) ‖ softmax(100 v_S v_Tᵀ)),  T = 3

    (the released code's factor 2; image → pseudo-text direction only).
    """
    return 2 * _kl_t(_dime_logits(v_t, v_t), _dime_logits(v_s, v_t), temperature)


def dime_loss(v_s, v_t, t_t, weights=(DIME_CONSTANTS["w_vl"], DIME_CONSTANTS["w_pvl"])) -> torch.Tensor:
    """The released objective: 0.7 · L_VL + 0.3 · L_PVL (``--use_pvl_loss``; UDist off, weight 0)."""
    return weights[0] * dime_vl_loss(v_s, v_t, t_t) + weights[1] * dime_pvl_loss(v_s, v_t)

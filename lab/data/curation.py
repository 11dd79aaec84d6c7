"""ACID / ACED: active data curation as distillation — *paper-level: no official code*.

ACID (Udandarao et al., "Active Data Curation Effectively Distills Large-Scale Multimodal Models",
CVPR 2025, arXiv 2411.18674, §3) trains the student on the sub-batch of a larger super-batch that is most
*learnable*: hard for the learner (the student) and easy for a reference model (the teacher). The sampler
is JEST's joint example selection (Evans et al., NeurIPS 2024, arXiv 2406.17711, Algorithm 1):

    s_ij = ℓ^learner_ij − ℓ^reference_ij            (N × N, the super-batch's pairwise loss matrices)
    ℓ_ij = softplus(−z_ij · t·⟨x_i, y_j⟩),  z_ii = +1, z_ij = −1 (i ≠ j)   (the sigmoid-contrastive loss matrix)

and the sub-batch is drawn in ``n_chunks`` chunks without replacement, each candidate ``i`` with probability
∝ exp of its joint learnability with what is already chosen (S):

    first chunk:  π_i ∝ exp(s_ii)        later chunks:  π_i ∝ exp(s_ii + Σ_{j∈S} (s_ij + s_ji))

(Gumbel-top-k under a seeded generator, so the draw is reproducible). Defaults: super-batch 5× the batch
(filter ratio 0.8), 16 chunks. ACED adds a softmax KD term on the chosen sub-batch (in the lab: ``loss=crd``).

The lab's choices, where the papers leave room: the models are softmax-CLIP models without a sigmoid bias,
so ``ℓ`` uses each model's own logit scale ``t`` and bias 0; the reference loss is computed from the
*reference model's* embeddings (a known third-party port of JEST scored the reference with the learner).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lab.errors import LabError


def sigmoid_loss_matrix(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """ℓ_ij = softplus(−z_ij · t·⟨x_i, y_j⟩) for normalised (N, D) image and text embeddings; z = 2·I − 1."""
    logits = scale * image @ text.T
    signs = 2 * torch.eye(len(image), device=image.device, dtype=logits.dtype) - 1
    return F.softplus(-signs * logits)


def learnability(learner: tuple, reference: tuple) -> torch.Tensor:
    """s = ℓ(learner) − ℓ(reference); each side is its own model's (image, text, scale) — never the learner twice."""
    return sigmoid_loss_matrix(*learner) - sigmoid_loss_matrix(*reference)


def conditional_logits(scores: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Each candidate's joint learnability with the chosen set: s_ii + Σ_{j∈S} (s_ij + s_ji)."""
    out = scores.diagonal().clone()
    if chosen.any():
        out = out + scores[:, chosen].sum(1) + scores[chosen, :].sum(0)
    return out


def joint_sample(scores: torch.Tensor, n_select: int, n_chunks: int = 16,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """JEST's chunked joint sampling: ``n_select`` distinct indices of the (N, N) learnability matrix."""
    n = scores.shape[0]
    if not 0 < n_select <= n:
        raise LabError(f"Cannot choose {n_select} of a super-batch of {n}; the sub-batch must be 1 … {n}.")
    n_chunks = max(1, min(n_chunks, n_select))
    sizes = [n_select // n_chunks + (1 if c < n_select % n_chunks else 0) for c in range(n_chunks)]
    chosen = torch.zeros(n, dtype=torch.bool, device=scores.device)
    order = []
    for size in sizes:
        logits = conditional_logits(scores, chosen).float()
        uniform = torch.rand(n, generator=generator, device="cpu").to(scores.device).clamp_(1e-20, 1.0)
        keys = logits - torch.log(-torch.log(uniform))  # Gumbel-top-k = sampling without replacement ∝ exp(logits)
        keys[chosen] = -math.inf
        pick = torch.topk(keys, size).indices
        chosen[pick] = True
        order.append(pick)
    return torch.cat(order)


def super_batch_size(batch_size: int, filter_ratio: float) -> int:
    """The super-batch a sub-batch of ``batch_size`` is chosen from: ⌈B / (1 − f)⌉ (f = 0.8: 5×)."""
    if not 0 <= filter_ratio < 1:
        raise LabError(f"curation_filter must be in [0, 1), got {filter_ratio}; 0.8 keeps one in five.")
    return math.ceil(batch_size / (1 - filter_ratio) - 1e-9)

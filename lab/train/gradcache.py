"""GradCache: the exact gradient of a large batch's loss in the memory of a small one (Gao et al. 2021,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", §3).

Contrastive and relational KD losses couple every pair of the batch (a row of ``s · v tᵀ`` spans all
N texts), so naive gradient accumulation — N/k pairs per backward — changes the loss itself. GradCache
splits the student's work instead:

1. embed the batch in ``k`` chunks **without** autograd graphs: ``v, t`` (N, D);
2. treat ``v, t`` as leaves, compute the loss ``L(v, t, θ_obj)`` on the *full* batch and backpropagate:
   this gives ``∂L/∂v``, ``∂L/∂t`` and the gradients of everything outside the towers (logit scale,
   projections, learnable scales);
3. re-run each chunk ``c`` **with** autograd and backpropagate the surrogate ``Σ ⟨v_c, ∂L/∂v_c⟩ +
   ⟨t_c, ∂L/∂t_c⟩``, whose gradient w.r.t. the towers' weights is, by the chain rule, the chunk's share of
   ``∂L/∂θ``. Summed over chunks it equals the full-batch gradient exactly (up to float rounding).

Peak activation memory is one chunk's; the towers run twice (≈ 1.3–1.5× a full step's time: the extra
forwards carry no backward). Every distillation term reads only the embeddings (and the teacher's,
constants), so all of them work; Hinton KD's class-prompt embeddings are one more leaf re-run with
grad. MFD is refused: its patch masks are drawn per forward, so a chunked re-run would need the full
batch's masks replayed (``train.accumulate=1`` for MFD).
"""

from __future__ import annotations

import torch

from lab.errors import LabError


def check_accumulate(chunks: int, terms: list[str], batch_size: int) -> None:
    """The settings GradCache can serve exactly, refused in one sentence otherwise (before training)."""
    if chunks <= 1:
        return
    if "mfd" in terms:
        raise LabError(f"train.accumulate={chunks} cannot replay MFD's random patch masks chunk by chunk; use "
                       f"train.accumulate=1 with the mfd term (or drop mfd).")
    if chunks > batch_size:
        raise LabError(f"train.accumulate={chunks} is more chunks than the batch's {batch_size} pairs; use at most "
                       f"train.accumulate={batch_size}.")


def gradcache_step(embed, loss_of, images: torch.Tensor, tokens: torch.Tensor, chunks: int,
                   extra=None) -> dict[str, torch.Tensor]:
    """One exact large-batch backward in ``chunks`` pieces; returns the (detached) terms.

    ``embed(images, tokens) -> (image_raw, text_raw)`` is the student's forward on one chunk;
    ``loss_of(image_raw, text_raw, extra_raw) -> {term: tensor}`` the full batch's terms;
    ``extra()`` (optional) another embedding the loss reads (KD's class prompts), re-run once.
    Gradients are accumulated into the parameters (the caller zeroes them before).
    """
    pieces = torch.arange(images.shape[0], device=images.device).chunk(chunks)
    with torch.no_grad():
        parts = [embed(images[c], tokens[c]) for c in pieces]
        extra_raw = extra() if extra is not None else None
    image = torch.cat([p[0] for p in parts]).detach().requires_grad_()
    text = torch.cat([p[1] for p in parts]).detach().requires_grad_()
    extra_leaf = extra_raw.detach().requires_grad_() if extra_raw is not None else None
    terms = loss_of(image, text, extra_leaf)
    sum(terms.values()).backward()  # ∂L/∂v, ∂L/∂t, and the gradients of everything outside the towers
    for c in pieces:
        image_c, text_c = embed(images[c], tokens[c])
        torch.autograd.backward([image_c, text_c], [image.grad[c], text.grad[c]])
    if extra_leaf is not None and extra_leaf.grad is not None:
        torch.autograd.backward([extra()], [extra_leaf.grad])
    return {k: v.detach() for k, v in terms.items()}

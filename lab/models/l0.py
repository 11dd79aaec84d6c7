"""TinyCLIP's automatic inheritance masks: hard-concrete L0 gates over one transformer tower.

TinyCLIP (arXiv 2309.12314, §3.2 "automatic inheritance", Eq. 5–7; code: microsoft/Cream,
``TinyCLIP/src/open_clip/l0module.py``, itself CoFiPruning's ``l0_module.py``) learns a gate per hidden
channel, per attention head (per layer), per MLP channel (per layer) and per whole MHA / FFN block (per
layer). Each gate is a hard-concrete variable (Louizos et al., 2018) with log-odds ``log α``:

    training:   u ~ U(ε, 1 − ε),  z = clamp_[0,1]( σ((log u − log(1 − u) + log α) / β) · (r − l) + l )
    inference:  z = σ(log α / β · 0.8), its ⌊expected zeros⌉ smallest entries set to 0
    P(z > 0) = 1 − σ(β · logit((0 − l)/(r − l)) − log α)              (the gate's "score")

with β = 2/3, (l, r) = (−0.1, 1.1), ε = 1e-6, the 0.8 being the code's ``magical_number``. The expected
size counts the heads' and MLP channels' parameters weighted by their scores (and by the hidden channels'
when hidden is pruned); the expected sparsity ``ŝ = 1 − size / prunable size`` is pushed to a target that
rises linearly from ``start`` to ``target`` over ``warmup`` steps by the Lagrangian

    paper (Eq. 7):  λ₁ (ŝ − t) + λ₂ (ŝ − t)²
    official code:  λ₁ max(t − ŝ, 0) + λ₂ max(t − ŝ, 0)²      (λ₁ = λ₂ = 10 at the start; the lab follows the code)

All log α start at 10 (every gate open), clamped to [ln 0.01, ln 100] by :meth:`constrain`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LIMIT_LOW, LIMIT_HIGH, EPS = -0.1, 1.1, 1e-6
TEMPERATURE = 2.0 / 3.0
INFERENCE_SHARPNESS = 0.8  # the official magical_number
INIT_LOG_ALPHA = 10.0
GROUPS = ("hidden", "heads", "intermediate", "layer")


class HardConcreteMasks(nn.Module):
    """The gates of one tower of ``layers`` blocks of ``width`` channels, ``heads`` heads and an MLP of ``mlp``."""

    def __init__(self, width: int, heads: int, mlp: int, layers: int, start_sparsity: float = 0.0,
                 target_sparsity: float = 0.0, warmup: int = 0, groups=GROUPS):
        super().__init__()
        self.width, self.heads, self.mlp, self.layers = width, heads, mlp, layers
        self.start_sparsity, self.target_sparsity, self.warmup = start_sparsity, target_sparsity, warmup
        self.per_head = (width * width * 4 + width * 4) // heads  # q, k, v, out weights and biases of one head
        self.per_mlp_layer = width * mlp * 2 + width + mlp
        self.per_mlp_channel = self.per_mlp_layer // mlp
        self.log_alpha = nn.ParameterDict()
        self.shapes: dict[str, list[int]] = {}
        self.prunable = 0
        for group in groups:
            if group == "hidden":
                self._add("hidden", [width], [width])
            elif group == "heads":
                self._add("heads", [layers, heads], [layers, 1, heads, 1, 1])
                self.prunable += self.per_head * layers * heads
            elif group == "intermediate":
                self._add("intermediate", [layers, mlp], [layers, 1, 1, mlp])
                self.prunable += self.per_mlp_layer * layers
            elif group == "layer":
                self._add("ffn", [layers], [layers])
                self._add("mha", [layers], [layers])
            else:
                raise ValueError(f"Unknown gate group '{group}'; choose from {', '.join(GROUPS)}.")
        self.lambda_1 = nn.Parameter(torch.tensor(10.0))
        self.lambda_2 = nn.Parameter(torch.tensor(10.0))

    def _add(self, name, size, shape):
        self.log_alpha[name] = nn.Parameter(torch.full(size, INIT_LOG_ALPHA))
        self.shapes[name] = shape

    def constrain(self) -> None:
        with torch.no_grad():
            for log_alpha in self.log_alpha.values():
                log_alpha.clamp_(math.log(1e-2), math.log(1e2))

    @staticmethod
    def score(log_alpha: torch.Tensor) -> torch.Tensor:
        """P(z > 0): one minus the stretched concrete's CDF at 0."""
        x = (0.0 - LIMIT_LOW) / (LIMIT_HIGH - LIMIT_LOW)
        cdf = torch.sigmoid(math.log(x / (1 - x)) * TEMPERATURE - log_alpha).clamp(EPS, 1 - EPS)
        return 1.0 - cdf

    @staticmethod
    def sample(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.empty_like(log_alpha).uniform_(EPS, 1 - EPS, generator=generator)
        z = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / TEMPERATURE)
        return F.hardtanh(z * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0)

    @classmethod
    def deterministic(cls, log_alpha: torch.Tensor) -> torch.Tensor:
        """The inference gate: σ(0.8 · log α / β) with the expected number of zeros (rounded) set to 0."""
        mask = torch.sigmoid(log_alpha / TEMPERATURE * INFERENCE_SHARPNESS)
        zeros = round(log_alpha.numel() - cls.score(log_alpha).sum().item())
        if zeros > 0:
            if mask.ndim == 0:
                return torch.zeros((), dtype=torch.long, device=log_alpha.device)  # the official tensor(0)
            mask = mask.clone()
            mask[torch.topk(mask, zeros, largest=False).indices] = 0.0
        return mask

    def forward(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The gates ``{name}_z``: sampled in training, deterministic per layer at inference."""
        out = {}
        for name, log_alpha in self.log_alpha.items():
            if self.training:
                out[f"{name}_z"] = self.sample(log_alpha, generator).reshape(self.shapes[name])
            elif name == "hidden":
                out[f"{name}_z"] = self.deterministic(log_alpha.detach())
            else:
                out[f"{name}_z"] = torch.stack([self.deterministic(row).reshape(self.shapes[name][1:])
                                                for row in log_alpha.detach()])
        return out

    def expected_size(self) -> torch.Tensor:
        """The tower's expected number of prunable parameters under the gates' scores."""
        ones = lambda *s: torch.ones(s, device=self.lambda_1.device)  # noqa: E731
        la = self.log_alpha
        mha = self.score(la["mha"]).view(-1, 1, 1) if "mha" in la else ones(self.layers, 1, 1)
        heads = self.score(la["heads"]).unsqueeze(-1) if "heads" in la else ones(self.layers, self.heads, 1)
        ffn = self.score(la["ffn"]).unsqueeze(-1) if "ffn" in la else 1
        mlp = self.score(la["intermediate"]) if "intermediate" in la else ones(self.layers, self.width * 4)
        heads, mlp = heads * mha, mlp * ffn
        if "hidden" in la:
            hidden = self.score(la["hidden"])
            return (torch.outer(hidden, heads.reshape(-1)).sum() * self.per_head / self.width
                    + torch.outer(hidden, mlp.reshape(-1)).sum() * 2)
        return heads.sum() * self.per_head + mlp.sum() * self.per_mlp_channel

    def target(self, step: int) -> float:
        """The sparsity target at ``step`` of pruning: linear from start to target over ``warmup`` steps."""
        if self.warmup <= 0:
            return self.target_sparsity
        return (self.target_sparsity - self.start_sparsity) * min(1, step / self.warmup) + self.start_sparsity

    def lagrangian(self, step: int) -> tuple[torch.Tensor, float, float]:
        """(λ₁ max(t − ŝ, 0) + λ₂ max(t − ŝ, 0)², ŝ, t) — the official code's one-sided penalty."""
        target = self.target(step)
        expected = 1 - self.expected_size() / self.prunable
        gap = torch.clamp(target - expected, min=0.0)
        return self.lambda_1 * gap + self.lambda_2 * gap.square(), expected.detach().item(), target

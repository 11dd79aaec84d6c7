"""Synthetic captions for MobileCLIP's reinforced distillation, and DIME-FM's unpaired sentence stream.

:class:`Synthetic` gives each batch one synthetic caption per image (:mod:`lab.data.captioner`, the
stand-in for MobileCLIP's CoCa captions) and every teacher's normalised embedding of it. On a fixed
dataset the teachers embed all synthetic captions once, before training (as DataCompDR stores them),
so a step runs no teacher text tower for them. Two modes, as ml-mobileclip's ``preprocess_dr`` has them:

* ``both`` — the loss has a ground-truth and a synthetic term (DRClipLoss's ``syn_text_features``);
* ``mix`` — ``--dataset-reinforcement-mix-synthetic``: each item's caption is replaced by its synthetic
  one with probability ``mix_synthetic_ratio``, and there is no second term.
"""

from __future__ import annotations

import numpy as np
import torch

from lab.data.captioner import synthetic_captions
from lab.data.shapes import Batch
from lab.errors import LabError
from lab.eval.suite import encode_texts


class Synthetic:
    def __init__(self, teachers, mode: str, ratio: float = 0.5, drop: float = 0.2, wrong: float = 0.1,
                 seed: int = 0, device: str | torch.device = "cpu", dataset=None):
        if not 0 <= ratio <= 1:
            raise LabError(f"mix_synthetic_ratio must lie in [0, 1]; got {ratio}.")
        self.teachers, self.mode, self.ratio, self.drop, self.wrong, self.seed = teachers, mode, ratio, drop, wrong, seed
        self.device, self.rng, self.tables = device, np.random.default_rng([seed, 31]), None
        items = getattr(dataset, "_items", None)
        if items is not None:  # a fixed dataset: every teacher embeds every synthetic caption once
            captions = self.captions(items)
            with torch.no_grad():
                self.tables = [encode_texts(t, captions).to(device) for t in teachers]

    def captions(self, batch: Batch) -> list[str]:
        try:
            return synthetic_captions(batch.factors, self.seed, self.drop, self.wrong)
        except ValueError as err:
            raise LabError(str(err)) from None

    def teacher_embeddings(self, batch: Batch, captions: list[str]) -> list[torch.Tensor]:
        if self.tables is not None:
            index = torch.as_tensor(batch.factors["index"], device=self.device)
            return [table[index] for table in self.tables]
        with torch.no_grad():
            return [encode_texts(t, captions).to(self.device) for t in self.teachers]

    def for_batch(self, batch: Batch) -> tuple[list[str], list[torch.Tensor]]:
        captions = self.captions(batch)
        return captions, self.teacher_embeddings(batch, captions)

    def mix(self, batch: Batch) -> tuple[Batch, np.ndarray]:
        """The batch with each caption swapped for its synthetic one at ``ratio``; which were swapped."""
        swapped = self.rng.random(len(batch)) < self.ratio
        synthetic = self.captions(batch)
        captions = [s if w else c for c, s, w in zip(batch.captions, synthetic, swapped)]
        return Batch(batch.images, captions, batch.factors), swapped

    def teacher_texts(self, batch: Batch, swapped: np.ndarray, t_text, extra):
        """Teacher 1's and the other members' text embeddings with the swapped rows' synthetic ones."""
        rows = torch.as_tensor(np.flatnonzero(swapped), device=self.device)
        syn = self.teacher_embeddings(batch, batch.captions)
        t_text = t_text.clone()
        t_text[rows] = syn[0][rows].to(t_text.dtype)
        out = []
        for (i, t, c), s in zip(extra, syn[1:]):
            t = t.clone()
            t[rows] = s[rows].to(t.dtype)
            out.append((i, t, c))
        return t_text, out


def unpaired_texts(teacher_text: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DIME-FM's sentence stream, unpaired with the images: the batch's teacher text features in a random
    order drawn independently of the image order (separate image and text data loaders in its code)."""
    order = torch.randperm(teacher_text.shape[0], generator=generator, device=generator.device)
    return teacher_text[order]

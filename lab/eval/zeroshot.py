"""Zero-shot classification with prompt ensembles (Radford et al. 2021, §3.1.4).

A class's weight is the normalised mean of its normalised prompt embeddings over
the templates; an image is assigned the class of highest cosine. Base and novel
accuracies follow PromptKD's protocol: base test images are scored among the base
classes only, novel among the novel classes only, and HM = 2BN / (B + N).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def class_embeddings(encode_text, classnames: Sequence[str], templates: Sequence[str],
                     batch_size: int = 512) -> torch.Tensor:
    """(C, D) normalised class weights; ``encode_text`` maps a list of strings to (n, D) features."""
    prompts = [t.format(c) for c in classnames for t in templates]
    feats = torch.cat([encode_text(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)])
    feats = F.normalize(feats.float(), dim=-1).view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(feats, dim=-1)


def top1_of_logits(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    """Top-1 accuracy (%) of images whose label is in ``classes``, predicting among ``classes`` only.

    ``logits`` (N, C) score every image against every class.
    """
    labels = torch.as_tensor(labels)
    if classes is None:
        classes = range(logits.shape[1])
    classes = torch.as_tensor(list(classes), dtype=torch.long)
    keep = torch.isin(labels, classes)
    if not keep.any():
        return float("nan")
    predicted = classes[logits[keep][:, classes].argmax(dim=1)]
    return 100.0 * (predicted == labels[keep]).float().mean().item()


def top1(image_feats: torch.Tensor, class_feats: torch.Tensor, labels: torch.Tensor,
         classes: Sequence[int] | None = None) -> float:
    """:func:`top1_of_logits` with cosine logits of image features against class weights."""
    return top1_of_logits(image_feats.float() @ class_feats.float().T, labels, classes)


def harmonic_mean(base: float, novel: float) -> float:
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def logit_scores(logits: torch.Tensor, labels, base_ids, novel_ids) -> dict[str, float]:
    """Overall top-1 (all classes compete), base (among base classes), novel (among novel) and their HM."""
    base = top1_of_logits(logits, labels, base_ids)
    novel = top1_of_logits(logits, labels, novel_ids)
    return {"top1": top1_of_logits(logits, labels), "base": base, "novel": novel, "hm": harmonic_mean(base, novel)}


def zeroshot_scores(image_feats, class_feats, labels, base_ids, novel_ids) -> dict[str, float]:
    """:func:`logit_scores` of image features against zero-shot class weights."""
    return logit_scores(image_feats.float() @ class_feats.float().T, labels, base_ids, novel_ids)

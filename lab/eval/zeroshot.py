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


def top1(image_feats: torch.Tensor, class_feats: torch.Tensor, labels: torch.Tensor,
         classes: Sequence[int] | None = None) -> float:
    """Top-1 accuracy (%) of images whose label is in ``classes``, predicting among ``classes`` only."""
    labels = torch.as_tensor(labels)
    if classes is None:
        classes = range(class_feats.shape[0])
    classes = torch.as_tensor(list(classes), dtype=torch.long)
    keep = torch.isin(labels, classes)
    if not keep.any():
        return float("nan")
    scores = image_feats[keep].float() @ class_feats[classes].float().T
    predicted = classes[scores.argmax(dim=1)]
    return 100.0 * (predicted == labels[keep]).float().mean().item()


def harmonic_mean(base: float, novel: float) -> float:
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def zeroshot_scores(image_feats, class_feats, labels, base_ids, novel_ids) -> dict[str, float]:
    """Overall top-1 (all classes compete), base, novel and their harmonic mean."""
    base = top1(image_feats, class_feats, labels, base_ids)
    novel = top1(image_feats, class_feats, labels, novel_ids)
    return {"top1": top1(image_feats, class_feats, labels), "base": base, "novel": novel,
            "hm": harmonic_mean(base, novel)}

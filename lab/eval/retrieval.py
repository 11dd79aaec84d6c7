"""Image→text and text→image retrieval recall@K.

A retrieved item counts as a hit when its key equals the query's key. With keys
set to the item index this is the usual pairwise protocol; with keys set to the
caption string, several ShapesWorld images that share one exact caption are all
correct answers (the world has many identical descriptions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _recall(sim: torch.Tensor, query_keys: np.ndarray, gallery_keys: np.ndarray, ks) -> dict[int, float]:
    order = sim.argsort(dim=1, descending=True)[:, :max(ks)].cpu().numpy()
    hits = gallery_keys[order] == query_keys[:, None]  # (Q, maxK)
    return {k: 100.0 * hits[:, :k].any(axis=1).mean() for k in ks}


@torch.no_grad()
def retrieval_recall(image_feats: torch.Tensor, text_feats: torch.Tensor,
                     image_keys: Sequence | None = None, text_keys: Sequence | None = None,
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K both ways for normalised features; by default image i pairs with text i."""
    n = image_feats.shape[0]
    image_keys = np.arange(n) if image_keys is None else np.asarray(image_keys)
    text_keys = np.arange(text_feats.shape[0]) if text_keys is None else np.asarray(text_keys)
    sim = image_feats.float() @ text_feats.float().T
    i2t = _recall(sim, image_keys, text_keys, ks)
    t2i = _recall(sim.T, text_keys, image_keys, ks)
    return {**{f"i2t_r{k}": v for k, v in i2t.items()}, **{f"t2i_r{k}": v for k, v in t2i.items()}}

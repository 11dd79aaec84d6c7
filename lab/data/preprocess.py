"""Image preprocessing exactly as open_clip (torchvision) does it, so the lab's numbers are open_clip's.

* :func:`resize_center_crop` — the geometric part of open_clip's eval transform for the usual
  ``resize_mode="shortest"``: torchvision's ``Resize(S, bicubic)`` (the long side *truncated*,
  ``int(S · long / short)``) then ``CenterCrop(S)`` (offsets ``round((H − S) / 2)``), on a PIL image.
  The lab's file loaders use it, so a CSV's uint8 pixels are those open_clip's preprocess sees.
* :func:`model_transform` — open_clip's own eval transform for a model (its ``preprocess_cfg``:
  size, mean/std, interpolation, resize mode — ``squash`` for SigLIP, ``shortest`` for CLIP), as
  ``open_clip.create_model_and_transforms`` returns it; benchmark evaluation applies it per image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_center_crop(im: Image.Image, size: int) -> np.ndarray:
    """(S, S, 3) uint8: torchvision's bicubic shortest-side resize to S, then its centre crop."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    im = TF.center_crop(TF.resize(im, size, interpolation=InterpolationMode.BICUBIC), size)
    return np.array(im, dtype=np.uint8)  # a writable copy


def model_transform(clip):
    """open_clip's eval preprocess for this model (PIL image -> normalised (3, S, S) tensor)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**clip.model.visual.preprocess_cfg), is_train=False)

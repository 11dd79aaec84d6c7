"""ShapesWorld's "captioner": a second, differently-phrased caption per image, with a captioner's errors.

MobileCLIP (Vasu et al., CVPR 2024, §3.1) reinforces every image with synthetic captions written by a
CoCa captioner; its loss distils the teacher ensemble on the ground-truth caption *and* on a synthetic
one. ShapesWorld knows each image's factors, so this module stands in for CoCa: it writes captions in
phrasings the dataset's own captions never use ("{colour} {shape}, {size}, {position}" orders, "an
image showing …") and makes the mistakes a real captioner makes, at stated rates:

* ``drop``: each of colour, size and position is left out with this probability (default 0.2);
* ``wrong``: the colour or the shape (one of them, chosen evenly) is replaced by another at this
  probability (default 0.1) — a hallucinated attribute.

The caption of item ``i`` depends only on ``(seed, i)`` and the rates, so a cache can store it.
This is a stand-in, not a model: it is fluent and never confuses wording, only facts.
"""

from __future__ import annotations

import numpy as np

from lab.data.shapes import COLOUR_NAMES, POSITION_PHRASES, SHAPES, SIZES, _article

_PHRASINGS = (
    "an image showing a {body}{where}.",
    "{body}{where}, on its own.",
    "a single {body}{where}.",
    "close-up of a {body}{where}.",
)


def synthetic_caption(factors: dict[str, np.ndarray], i: int, index: int, seed: int = 0,
                      drop: float = 0.2, wrong: float = 0.1) -> str:
    """The synthetic caption of row ``i`` of ``factors`` (dataset item ``index``)."""
    if not (0 <= drop <= 1 and 0 <= wrong <= 1):
        raise ValueError(f"captioner rates must lie in [0, 1]; got drop={drop}, wrong={wrong}.")
    rng = np.random.default_rng([seed, 7919, int(index)])
    colour, shape = int(factors["colour"][i]), int(factors["shape"][i])
    u_drop, u_wrong, u_which, u_phrase = rng.random(4), rng.random(), rng.random(), rng.random()
    if u_wrong < wrong:  # a hallucinated colour or shape, never the true one
        if u_which < 0.5:
            colour = (colour + 1 + int(rng.integers(len(COLOUR_NAMES) - 1))) % len(COLOUR_NAMES)
        else:
            shape = (shape + 1 + int(rng.integers(len(SHAPES) - 1))) % len(SHAPES)
    words = [SIZES[int(factors["size"][i])] if u_drop[0] >= drop else "",
             COLOUR_NAMES[colour] if u_drop[1] >= drop else "", SHAPES[shape]]
    body = " ".join(w for w in words if w)
    where = f" {POSITION_PHRASES[int(factors['position'][i])]}" if u_drop[2] >= drop else ""
    text = _PHRASINGS[int(u_phrase * len(_PHRASINGS))].format(body=body, where=where)
    return _article(text)


def synthetic_captions(factors: dict[str, np.ndarray], seed: int = 0, drop: float = 0.2,
                       wrong: float = 0.1) -> list[str]:
    """One synthetic caption per row of ``factors`` (which must hold ShapesWorld's factors and ``index``)."""
    if "colour" not in factors or "index" not in factors:
        raise ValueError("Synthetic captions need ShapesWorld's factors (colour, shape, size, position, index); "
                         "real data brings its own synthetic captions (DataCompDR's syn.json).")
    return [synthetic_caption(factors, i, int(factors["index"][i]), seed, drop, wrong)
            for i in range(len(factors["index"]))]


def factors_from_caption(caption: str) -> dict[str, np.ndarray] | None:
    """ShapesWorld's factors named in a caption (colour, shape; size and position when present), or None when
    it names no colour and shape — the captioner's input for plain shards, which store only image and text."""
    text = caption.lower()
    colour = next((i for i, c in enumerate(COLOUR_NAMES) if c in text.split() or f"{c} " in text), None)
    shape = next((i for i, s in enumerate(SHAPES) if s in text), None)
    if shape is None:
        return None
    size = next((i for i, s in enumerate(SIZES) if f"{s} " in text), None)
    position = next((i for i, p in sorted(enumerate(POSITION_PHRASES), key=lambda x: -len(x[1])) if p in text), None)
    return {"colour": colour, "shape": shape, "size": size, "position": position}


def caption_from_caption(caption: str, key: str, seed: int = 0, drop: float = 0.2, wrong: float = 0.1) -> str:
    """A synthetic caption of a ShapesWorld image known only by its caption (shards): the facts the caption
    states, re-phrased, with the captioner's errors; a caption it cannot read is returned re-phrased only."""
    from lab.data.shards import stable_hash

    f = factors_from_caption(caption)
    if f is None:
        return f"an image showing {caption.rstrip('.')}."
    known = {k: v for k, v in f.items() if v is not None}
    rng = np.random.default_rng([seed, 7919, stable_hash(key) % (2**31)])
    u_drop, u_wrong, u_which, u_phrase = rng.random(4), rng.random(), rng.random(), rng.random()
    colour, shape = known.get("colour"), known["shape"]
    if u_wrong < wrong:
        if u_which < 0.5 and colour is not None:
            colour = (colour + 1 + int(rng.integers(len(COLOUR_NAMES) - 1))) % len(COLOUR_NAMES)
        else:
            shape = (shape + 1 + int(rng.integers(len(SHAPES) - 1))) % len(SHAPES)
    words = [SIZES[known["size"]] if "size" in known and u_drop[0] >= drop else "",
             COLOUR_NAMES[colour] if colour is not None and u_drop[1] >= drop else "", SHAPES[shape]]
    where = f" {POSITION_PHRASES[known['position']]}" if "position" in known and u_drop[2] >= drop else ""
    text = _PHRASINGS[int(u_phrase * len(_PHRASINGS))].format(body=" ".join(w for w in words if w), where=where)
    return _article(text)

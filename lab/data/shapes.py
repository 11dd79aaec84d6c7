"""ShapesWorld: a generated image–caption world with exact ground truth.

Every image holds one coloured shape with known factors (colour, shape, size,
position, rotation, style domain) and comes with a caption written from those
factors in one of several natural templates. Item ``i`` of a stream is a pure
function of ``(seed, split, i)``, so the same seed always yields the same
images and captions, however they are batched.

The world provides the label spaces used by the protocols:

* ``colour_shape`` (64 classes, the main zero-shot task), ``shape``, ``colour``
  and ``size`` — the "datasets" of the cross-dataset protocol;
* a base/novel split of every label space (sorted class ids, base = first
  ``ceil(C/2)``); ``colour_shape`` ids are ordered so that base and novel each
  contain every colour and every shape (a checkerboard over the grid);
* four style domains (plain, textured, sketch, noisy) for domain shift;
* an optional compositional hold-out: eight colour–shape combinations (one per
  colour and per shape) that a ``holdout=True`` stream never shows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.75, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.25, 0.95),
    "purple": (0.60, 0.20, 0.85),
    "pink": (1.00, 0.50, 0.75),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "moon")
SIZES = ("small", "medium", "large")
SIZE_RADIUS = (0.16, 0.22, 0.30)  # shape radius as a fraction of the image side
MAX_ROTATION = np.pi / 6  # shapes stand roughly upright: rotations uniform in ±30°
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
POSITION_PHRASES = (
    "in the top left corner", "at the top", "in the top right corner",
    "on the left", "in the center", "on the right",
    "in the bottom left corner", "at the bottom", "in the bottom right corner",
)
STYLES = ("plain", "textured", "sketch", "noisy")
SPLITS = {"train": 0, "test": 1, "val": 2}
N_COLOURS, N_SHAPES = len(COLOUR_NAMES), len(SHAPES)

# Templates for zero-shot prompt ensembles; every wording appears in training captions.
PROMPT_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a sketch of a {}.",
    "a noisy photo of a {}.",
    "a photo of a {} on a textured background.",
)

_GENERIC_PREFIXES = ("a photo of a", "a picture of a", "a", "an image of a", "there is a")
_STYLE_PREFIXES = {
    "plain": _GENERIC_PREFIXES,
    "textured": _GENERIC_PREFIXES,
    "sketch": ("a drawing of a", "a sketch of a", "an outline of a", "a", "a photo of a"),
    "noisy": ("a noisy photo of a", "a grainy picture of a", "a", "a photo of a", "a picture of a"),
}
_STYLE_SUFFIXES = {
    "plain": ("",),
    "textured": (" on a textured background", " on a patterned background", ""),
    "sketch": ("",),
    "noisy": ("",),
}


def _article(text: str) -> str:
    """Use 'an' before a vowel sound: 'a orange' -> 'an orange'."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


# --------------------------------------------------------------------------- label spaces


def _colour_shape_order() -> list[tuple[int, int]]:
    """(colour, shape) pairs in class-id order: the checkerboard half first (base), then the rest."""
    cells = [(c, s) for c in range(N_COLOURS) for s in range(N_SHAPES)]
    return [cs for cs in cells if sum(cs) % 2 == 0] + [cs for cs in cells if sum(cs) % 2 == 1]


COLOUR_SHAPE_PAIRS = tuple(_colour_shape_order())
_COLOUR_SHAPE_ID = np.zeros((N_COLOURS, N_SHAPES), dtype=np.int64)
for _cid, (_c, _s) in enumerate(COLOUR_SHAPE_PAIRS):
    _COLOUR_SHAPE_ID[_c, _s] = _cid

# One combination per colour and per shape (a permutation), never shown by a hold-out stream.
HOLDOUT_PAIRS = tuple((c, (5 * c + 2) % N_SHAPES) for c in range(N_COLOURS))
HOLDOUT_CLASS_IDS = tuple(sorted(int(_COLOUR_SHAPE_ID[c, s]) for c, s in HOLDOUT_PAIRS))


def colour_shape_id(colour: np.ndarray, shape: np.ndarray) -> np.ndarray:
    return _COLOUR_SHAPE_ID[colour, shape]


@dataclass(frozen=True)
class LabelSpace:
    """A classification task over ShapesWorld: class names in id order and a labelling rule."""

    name: str
    classnames: tuple[str, ...]
    factor: str  # which factor (or "colour_shape") the label reads

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def base_ids(self) -> tuple[int, ...]:
        """Base classes: the first ceil(C/2) sorted ids (PromptKD's rule)."""
        return tuple(range(math.ceil(self.num_classes / 2)))

    @property
    def novel_ids(self) -> tuple[int, ...]:
        return tuple(range(math.ceil(self.num_classes / 2), self.num_classes))

    def labels(self, factors: dict[str, np.ndarray]) -> np.ndarray:
        if self.factor == "colour_shape":
            return colour_shape_id(factors["colour"], factors["shape"])
        return np.asarray(factors[self.factor], dtype=np.int64)


LABEL_SPACES: dict[str, LabelSpace] = {
    "colour_shape": LabelSpace(
        "colour_shape",
        tuple(f"{COLOUR_NAMES[c]} {SHAPES[s]}" for c, s in COLOUR_SHAPE_PAIRS),
        "colour_shape",
    ),
    "shape": LabelSpace("shape", SHAPES, "shape"),
    "colour": LabelSpace("colour", tuple(f"{c} shape" for c in COLOUR_NAMES), "colour"),
    "size": LabelSpace("size", tuple(f"{s} shape" for s in SIZES), "size"),
}


def label_space(name: str) -> LabelSpace:
    if name not in LABEL_SPACES:
        raise ValueError(f"Unknown label space '{name}'; choose one of: {', '.join(LABEL_SPACES)}.")
    return LABEL_SPACES[name]


# --------------------------------------------------------------------------- streams and batches


@dataclass(frozen=True)
class StreamSpec:
    """Which part of the world a stream draws from.

    ``classes`` restricts the colour–shape classes (e.g. base only); ``holdout``
    removes the compositional hold-out pairs; ``style_weights`` (one per entry of
    ``styles``) sets the mix of style domains. ``balanced`` deals the classes in
    shuffled rounds (every class once per round) instead of drawing them
    independently, so a batch no larger than the class count holds few
    same-class pairs — the false negatives of a contrastive loss.
    """

    seed: int = 0
    split: str = "train"
    styles: tuple[str, ...] = STYLES
    style_weights: tuple[float, ...] | None = None
    classes: tuple[int, ...] | None = None
    holdout: bool = False
    balanced: bool = False

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"Unknown split '{self.split}'; choose one of: {', '.join(SPLITS)}.")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown:
            raise ValueError(f"Unknown style {unknown[0]!r}; choose from: {', '.join(STYLES)}.")
        if self.style_weights is not None and len(self.style_weights) != len(self.styles):
            raise ValueError("style_weights needs one weight per style in `styles`.")

    @cached_property
    def allowed_classes(self) -> np.ndarray:
        ids = set(range(len(COLOUR_SHAPE_PAIRS))) if self.classes is None else set(self.classes)
        if self.holdout:
            ids -= set(HOLDOUT_CLASS_IDS)
        if not ids:
            raise ValueError("This stream allows no colour-shape class; widen `classes` or drop `holdout`.")
        return np.array(sorted(ids), dtype=np.int64)

    @cached_property
    def style_probs(self) -> np.ndarray:
        w = np.ones(len(self.styles)) if self.style_weights is None else np.asarray(self.style_weights, float)
        return w / w.sum()


@dataclass
class Batch:
    """Images (N, H, W, 3) uint8, their captions and ground-truth factors."""

    images: np.ndarray
    captions: list[str]
    factors: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)

    def labels(self, space: str | LabelSpace = "colour_shape") -> np.ndarray:
        space = label_space(space) if isinstance(space, str) else space
        return space.labels(self.factors)

    def descriptions(self) -> list[str]:
        """One canonical, fully specified caption per item (used for retrieval)."""
        return [describe(self.factors, i) for i in range(len(self))]

    def subset(self, index) -> "Batch":
        index = np.asarray(index)
        return Batch(self.images[index], [self.captions[i] for i in index],
                     {k: v[index] for k, v in self.factors.items()})

    @staticmethod
    def concat(batches: list["Batch"]) -> "Batch":
        return Batch(
            np.concatenate([b.images for b in batches]),
            [c for b in batches for c in b.captions],
            {k: np.concatenate([b.factors[k] for b in batches]) for k in batches[0].factors},
        )


def describe(factors: dict[str, np.ndarray], i: int) -> str:
    """The canonical caption: size, colour, shape, position, and the style when not plain."""
    style = STYLES[factors["style"][i]]
    prefix = {"plain": "a photo of a", "textured": "a photo of a", "sketch": "a drawing of a",
              "noisy": "a noisy photo of a"}[style]
    suffix = " on a textured background" if style == "textured" else ""
    text = (f"{prefix} {SIZES[factors['size'][i]]} {COLOUR_NAMES[factors['colour'][i]]} "
            f"{SHAPES[factors['shape'][i]]} {POSITION_PHRASES[factors['position'][i]]}{suffix}.")
    return _article(text)


_NOUN_FORMS = ("{colour} {shape}", "{size} {colour} {shape}", "{shape}", "{colour} shape",
               "{size} shape", "{size} {shape}")
_NOUN_PROBS = (0.45, 0.30, 0.08, 0.07, 0.05, 0.05)
CHUNK = 256  # items drawn together from one random generator


def _pick(options: tuple, u: float):
    """The option a uniform draw ``u`` in [0, 1) selects."""
    return options[int(u * len(options))]


def _captions(rng: np.random.Generator, f: dict[str, np.ndarray]) -> list[str]:
    """A natural caption per item, in one of several templates."""
    n = len(f["shape"])
    noun_form = rng.choice(len(_NOUN_FORMS), size=n, p=_NOUN_PROBS)
    u_prefix, u_where, u_suffix = rng.random((3, n))
    captions = []
    for i in range(n):
        style = STYLES[f["style"][i]]
        noun = _NOUN_FORMS[noun_form[i]].format(
            colour=COLOUR_NAMES[f["colour"][i]], shape=SHAPES[f["shape"][i]], size=SIZES[f["size"][i]])
        where = f" {POSITION_PHRASES[f['position'][i]]}" if u_where[i] < 0.35 else ""
        text = f"{_pick(_STYLE_PREFIXES[style], u_prefix[i])} {noun}{where}{_pick(_STYLE_SUFFIXES[style], u_suffix[i])}."
        captions.append(_article(text))
    return captions


class ShapesWorld:
    """The generator: draws factors and captions, renders images in vectorised batches.

    Items are drawn in chunks of ``CHUNK`` from a generator seeded by
    ``(seed, split, chunk)``, so item ``i`` depends only on the stream and ``i``.
    """

    def __init__(self, image_size: int = 32, supersample: int = 2):
        if image_size < 16:
            raise ValueError("ShapesWorld images need image_size >= 16 pixels to keep shapes legible.")
        self.image_size = image_size
        self.supersample = supersample
        n = image_size * supersample
        centres = ((np.arange(n) + 0.5) / supersample).astype(np.float32)  # pixel units
        self._grid_y, self._grid_x = np.meshgrid(centres, centres, indexing="ij")
        self._last_chunk: tuple | None = None

    def sample(self, spec: StreamSpec, start: int, count: int) -> Batch:
        """Items ``start .. start+count-1`` of the stream ``spec``, rendered."""
        if count <= 0:
            raise ValueError("count must be positive.")
        first, last = start // CHUNK, (start + count - 1) // CHUNK
        batch = Batch.concat([self._chunk(spec, k) for k in range(first, last + 1)])
        return batch.subset(np.arange(start - first * CHUNK, start - first * CHUNK + count))

    def _chunk(self, spec: StreamSpec, k: int) -> Batch:
        key = (spec, k)
        if self._last_chunk is not None and self._last_chunk[0] == key:
            return self._last_chunk[1]
        rng = np.random.default_rng([spec.seed, SPLITS[spec.split], k])
        factors = self._draw_factors(rng, spec, CHUNK)
        factors["index"] = np.arange(k * CHUNK, (k + 1) * CHUNK)
        batch = Batch(self.render(factors), _captions(rng, factors), factors)
        self._last_chunk = (key, batch)
        return batch

    @staticmethod
    def _draw_factors(rng: np.random.Generator, spec: StreamSpec, n: int) -> dict[str, np.ndarray]:
        allowed = spec.allowed_classes
        if spec.balanced:  # consecutive shuffled rounds of every class: few repeats within a batch
            cls = np.concatenate([rng.permutation(allowed) for _ in range(-(-n // len(allowed)))])[:n]
        else:
            cls = allowed[rng.integers(len(allowed), size=n)]
        pairs = np.array(COLOUR_SHAPE_PAIRS)[cls]
        style_ids = np.array([STYLES.index(s) for s in spec.styles])
        size = rng.integers(len(SIZES), size=n)
        position = rng.integers(len(POSITIONS), size=n)
        radius = np.array(SIZE_RADIUS)[size] * (1 + rng.uniform(-0.08, 0.08, n))
        row, col = np.divmod(position, 3)
        # Grid cell centre with jitter, clamped so the shape stays inside the image.
        lo, hi = radius + 0.03, 1 - radius - 0.03
        cx = np.clip(0.5 + 0.29 * (col - 1) + rng.uniform(-0.05, 0.05, n), lo, hi)
        cy = np.clip(0.5 + 0.29 * (row - 1) + rng.uniform(-0.05, 0.05, n), lo, hi)
        return {
            "colour": pairs[:, 0], "shape": pairs[:, 1], "size": size, "position": position,
            "style": style_ids[rng.choice(len(style_ids), size=n, p=spec.style_probs)],
            "rotation": rng.uniform(-MAX_ROTATION, MAX_ROTATION, n), "cx": cx, "cy": cy, "radius": radius,
            "colour_jitter": rng.uniform(-0.07, 0.07, (n, 3)),
            "background": rng.uniform(0.0, 1.0, (n, 4)),  # grey levels, period and angle
            "noise_seed": rng.integers(2**31, size=n),
        }

    # ---------------------------------------------------------------- rendering
    def render(self, factors: dict[str, np.ndarray]) -> np.ndarray:
        """Render items from their factors: (N, H, W, 3) uint8."""
        n, side, s = len(factors["shape"]), self.image_size, self.supersample
        coverage = np.zeros((n, side * s, side * s), dtype=np.float32)
        for shape in np.unique(factors["shape"]):
            idx = np.flatnonzero(factors["shape"] == shape)
            coverage[idx] = self._shape_masks(factors, idx, SHAPES[shape])
        sketch = factors["style"] == STYLES.index("sketch")
        if sketch.any():
            coverage[sketch] = _outline(coverage[sketch] > 0.5, width=s)
        alpha = sum(coverage[:, dy::s, dx::s] for dy in range(s) for dx in range(s))[..., None] / (s * s)
        colour = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)[factors["colour"]]
        colour = colour + factors["colour_jitter"].astype(np.float32)
        image = self._backgrounds(factors) * (1 - alpha) + colour[:, None, None, :] * alpha
        for i in np.flatnonzero(factors["style"] == STYLES.index("noisy")):
            image[i] += np.random.default_rng(factors["noise_seed"][i]).normal(0, 0.15, image[i].shape)
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    def _shape_masks(self, f, idx, shape: str) -> np.ndarray:
        side = self.image_size

        def column(name):
            return f[name][idx].astype(np.float32)[:, None, None]

        cx, cy, r, rot = column("cx") * side, column("cy") * side, column("radius") * side, column("rotation")
        cos, sin = np.cos(rot), np.sin(rot)
        dx, dy = self._grid_x[None] - cx, cy - self._grid_y[None]  # y points up
        u = (cos * dx + sin * dy) / r
        v = (cos * dy - sin * dx) / r
        return _INSIDE[shape](u, v)

    def _backgrounds(self, f) -> np.ndarray:
        side = self.image_size
        b = f["background"].astype(np.float32)[:, :, None, None]
        ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
        style = f["style"][:, None, None]
        flat = 0.08 + 0.4 * b[:, 0]  # plain and noisy
        paper = 0.88 + 0.12 * b[:, 0]  # sketch
        low, high = 0.1 + 0.3 * b[:, 0], 0.45 + 0.35 * b[:, 1]
        period, angle = 3 + 5 * b[:, 2], np.pi * b[:, 3]
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
        textured = low + (high - low) * stripes
        grey = np.where(style == STYLES.index("textured"), textured,
                        np.where(style == STYLES.index("sketch"), paper, flat))
        return np.repeat(grey[..., None], 3, axis=-1)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Boundary band of binary masks (N, H, W): dilation minus erosion."""
    pad = np.pad(mask, ((0, 0), (width, width), (width, width)))
    h, w = mask.shape[1:]
    dilated = np.zeros_like(mask)
    eroded = np.ones_like(mask)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            shifted = pad[:, width + dy: width + dy + h, width + dx: width + dx + w]
            dilated |= shifted
            eroded &= shifted
    return (dilated & ~eroded).astype(np.float32)


def _star(u, v, outer=1.15, inner=0.5, points=5):
    sector = 2 * np.pi / points
    angle = np.abs(np.mod(np.arctan2(u, v) + sector / 2, sector) - sector / 2)
    r = np.hypot(u, v)
    px, py = r * np.sin(angle), r * np.cos(angle)
    bx, by = inner * np.sin(sector / 2), inner * np.cos(sector / 2)
    # Inside when P lies on the origin's side of the edge from the tip (0, outer) to the inner vertex B.
    return bx * (py - outer) - (by - outer) * px <= 0


def _triangle(u, v, circumradius=1.15):
    inradius = circumradius / 2
    inside = np.ones_like(u, dtype=bool)
    for angle in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6):
        inside &= u * np.cos(angle) + v * np.sin(angle) <= inradius
    return inside


def _heart(u, v):
    x, y = u / 0.9, v / 0.9 + 0.12
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


_INSIDE = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.84,
    "triangle": _triangle,
    "star": _star,
    "cross": lambda u, v: ((np.abs(u) <= 0.33) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.33) & (np.abs(u) <= 0.95)),
    "heart": _heart,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.5 ** 2),
    "moon": lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + (v - 0.3) ** 2 >= 0.8 ** 2),
}

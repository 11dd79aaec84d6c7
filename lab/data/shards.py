"""Webdataset shards: the layout img2dataset writes and ``open_clip_train --dataset-type webdataset`` reads.

``data.source`` names the shards as a brace pattern (``/data/cc3m/{000000..000331}.tar``), a folder
of ``.tar`` files, or a list file (``.txt``, one shard path per line, relative to the file). Each
sample is the tar members sharing one ``__key__``: an image (``jpg``/``jpeg``/``png``/``webp``) and
its caption (``txt``). The shards are read with the ``webdataset`` package and streamed, never
loaded whole.

**Who reads what.** Every torchrun rank runs ``S = max(1, data.workers)`` streams (one per DataLoader
worker); stream ``j`` of rank ``r`` is slot ``r·S + j`` of ``R·S``. In epoch ``e`` of a slot, the
shards are permuted by ``(seed, e)`` and the slot reads every ``R·S``-th of them, so the slots of
one epoch read disjoint shards that together are every shard once — every sample is seen once per
epoch (exactly, when the shards hold equal numbers of samples, as img2dataset writes them). Each
stream shuffles its samples with a buffer of ``data.shuffle_buffer`` (webdataset's shuffle, seeded
by (seed, epoch, slot)) and deals them into this rank's part of each step's global batch.

**Resume.** The DataLoader hands step ``s`` to the stream ``s mod S``, so the samples of every step
are a function of (seed, step) and the worker count: a stream resumed at step ``s`` re-reads (but
does not decode) the samples it already dealt and continues at the next one. Resume with the same
``data.workers`` and number of processes.

**Damage.** A member that cannot be read (a truncated tar, an image that does not decode, a caption
that is not UTF-8, a sample missing its image or caption) is named by shard and member. With
``data.corrupt=skip`` the sample is left out and reported in the run's summary; with
``data.corrupt=stop`` training stops with that sentence. (A skipped image that fails only when it
is decoded moves the later samples of its stream by one; a resume then stays exact only up to it.)

**Augmentation.** ``data.augment=crop`` is open_clip's training crop: RandomResizedCrop (scale
``data.crop_scale``, ratio 3/4–4/3, bicubic), with ``data.flip`` a horizontal flip. The crop of
sample ``key`` is one of ``K = data.augmentations`` crops whose parameters are a function of
(data.seed, key, k); each epoch draws k from (seed, epoch, key). The teacher cache
(:mod:`lab.train.reinforced_cache`) stores the teacher's embedding of each of the K crops beside
the shard, with the crop parameters, so the student sees exactly the crop the teacher embedded.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from lab.data.shapes import Batch
from lab.errors import LabError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CORRUPT_POLICIES = ("skip", "stop")
AUGMENTS = ("none", "crop")
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's and open_clip's RandomResizedCrop ratio
CROP_FIELDS = ("top", "left", "height", "width", "flip")


def is_shard_source(source: str) -> bool:
    """Whether ``data.source`` names webdataset shards (rather than ``shapes`` or a CSV)."""
    path = Path(source)
    return (".tar" in source and "{" in source) or path.suffix == ".tar" or _is_shard_list(path) or (
        path.is_dir() and any(path.glob("*.tar")))


def _is_shard_list(path: Path) -> bool:
    """A ``.txt`` whose first entry is a ``.tar`` path (a tab-separated caption file named .txt is not one)."""
    if path.suffix != ".txt" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        first = next((line.strip() for line in f if line.strip() and not line.startswith("#")), "")
    return first.endswith(".tar")


def shard_paths(source: str) -> list[Path]:
    """The shard files ``source`` names, in order; a missing one is one sentence naming it."""
    path = Path(source)
    if path.is_dir():
        paths = sorted(path.glob("*.tar"))
        if not paths:
            raise LabError(f"The folder {path} holds no .tar shards; write them with img2dataset "
                           f"(--output_format webdataset) or point data.source at the shards.")
    elif path.suffix == ".txt" and "{" not in source:
        if not path.is_file():
            raise LabError(f"The shard list {path} does not exist; check data.source.")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        paths = [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
    else:
        paths = [Path(p) for p in wds.shardlists.expand_urls(source)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise LabError(f"Shard {missing[0]} does not exist ({len(missing)} of {len(paths)} named by {source} are "
                       f"missing); check data.source.")
    if not paths:
        raise LabError(f"data.source={source} names no shards; check the pattern.")
    return paths


def stable_hash(*parts) -> int:
    """A 60-bit integer from ``parts`` that is the same in every process (Python's ``hash`` is salted)."""
    return int(hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:15], 16)


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """open_clip's training crop, made reproducible: K candidate crops per image, a function of (seed, key, k)."""

    kind: str = "none"
    scale: tuple[float, float] = (0.9, 1.0)  # open_clip's default RandomResizedCrop scale
    flip: bool = False
    count: int = 0  # K; 0: a new crop each epoch (k = epoch)
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "Augmentation":
        if cfg.augment not in AUGMENTS:
            raise LabError(f"Unknown data.augment '{cfg.augment}'; choose one of: {', '.join(AUGMENTS)}.")
        try:
            low, high = (float(x) for x in cfg.crop_scale.split(","))
        except ValueError as err:
            raise LabError(f"data.crop_scale={cfg.crop_scale!r} must be two numbers, e.g. 0.9,1.0.") from err
        if not 0 < low <= high <= 1:
            raise LabError(f"data.crop_scale={cfg.crop_scale!r} must satisfy 0 < low <= high <= 1.")
        if cfg.augmentations < 0:
            raise LabError("data.augmentations must be 0 (a new crop each epoch) or the number K of crops per image.")
        return cls(cfg.augment, (low, high), bool(cfg.flip), int(cfg.augmentations), int(cfg.seed))

    def describe(self) -> dict:
        return {"kind": self.kind, "scale": list(self.scale), "ratio": list(CROP_RATIO), "flip": self.flip,
                "count": self.count, "seed": self.seed, "interpolation": "bicubic"}

    def params(self, key: str, k: int, width: int, height: int) -> np.ndarray:
        """Crop ``k`` of image ``key``: (top, left, height, width, flip), torchvision's RandomResizedCrop rule."""
        rng = random.Random(stable_hash(self.seed, key, k))  # seeds in ~5 µs; numpy's generator takes ~10
        area = width * height
        box = None
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                box = (rng.randrange(height - h + 1), rng.randrange(width - w + 1), h, w)
                break
        if box is None:  # the fallback: a centre crop of the nearest allowed aspect ratio
            ratio = width / height
            w, h = (width, round(width / CROP_RATIO[0])) if ratio < CROP_RATIO[0] else (
                (round(height * CROP_RATIO[1]), height) if ratio > CROP_RATIO[1] else (width, height))
            w, h = min(w, width), min(h, height)
            box = ((height - h) // 2, (width - w) // 2, h, w)
        flip = int(self.flip and rng.random() < 0.5)
        return np.asarray([*box, flip], dtype=np.int32)

    def choice(self, key: str, epoch: int) -> int:
        """Which of the K crops sample ``key`` gets in ``epoch``."""
        if self.count == 0:
            return epoch
        return int(np.random.default_rng([self.seed, 1, epoch, stable_hash(key)]).integers(self.count))


def _resized(im: Image.Image, image_size: int, crop: np.ndarray | None) -> np.ndarray:
    if crop is None:
        im = TF.center_crop(TF.resize(im, image_size, interpolation=InterpolationMode.BICUBIC), image_size)
    else:  # torchvision's resized_crop on a PIL image (crop, then bicubic resize), without its checks
        top, left, height, width, flip = (int(v) for v in crop)
        im = im.crop((left, top, left + width, top + height)).resize((image_size, image_size), Image.Resampling.BICUBIC)
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im, dtype=np.uint8)


def _opened(data: bytes) -> Image.Image:
    from lab.data.files import to_rgb  # EXIF rotation, 16-bit grey, alpha, CMYK: as for files on disk

    with Image.open(io.BytesIO(data)) as im:
        return to_rgb(im)


def decode_image(data: bytes, image_size: int, crop: np.ndarray | None = None) -> np.ndarray:
    """(S, S, 3) uint8: a crop box (resized bicubic to S, maybe flipped), or shorter side to S and centre crop."""
    return _resized(_opened(data), image_size, crop)


def decode_crops(data: bytes, image_size: int, boxes: Callable[[int, int], np.ndarray]):
    """The image decoded once and cut into the crop boxes ``boxes(width, height)`` gives: ``(boxes, images)``."""
    im = _opened(data)
    chosen = boxes(*im.size)
    return chosen, [_resized(im, image_size, box) for box in chosen]


def image_size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --------------------------------------------------------------------------- reading shards


class ShardDamage(LabError):
    """A shard member that cannot be read, named by shard and member."""


def read_shard(path: Path, policy: str, problems: list[str]):
    """The raw samples of one shard, in tar order: dicts with ``key``, ``image`` (bytes), ``caption``, ``shard``.

    Damage is appended to ``problems`` and skipped (``policy='skip'``) or raised (``'stop'``).
    """
    def damaged(message: str) -> None:
        if policy == "stop":
            raise ShardDamage(f"{message}; repair or remove that shard, or set data.corrupt=skip to leave it out.")
        problems.append(message)

    def on_error(err: Exception) -> bool:
        damaged(f"Shard {path} cannot be read past a member ({type(err).__name__}: {str(err.args[0])[:80]})")
        return False  # the rest of a damaged tar stream cannot be trusted

    for sample in wds.tariterators.tarfile_samples([{"url": str(path)}], handler=on_error):
        key = sample["__key__"]
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None or "txt" not in sample:
            damaged(f"Shard {path} member {key} has no {'image' if ext is None else 'caption (txt)'}")
            continue
        try:
            caption = sample["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            damaged(f"Shard {path} member {key}.txt is not UTF-8 text")
            continue
        yield {"key": key, "image": sample[ext], "member": f"{key}.{ext}", "caption": caption, "shard": str(path)}


def _readable(raw: dict, policy: str, problems: list[str], decode: Callable):
    """``decode()``, or None (recorded in ``problems``) when the sample's image does not decode and the policy skips."""
    try:
        return decode()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        message = f"Shard {raw['shard']} member {raw['member']} is not a readable image ({str(err)[:80]})"
        if policy == "stop":
            raise ShardDamage(f"{message}; repair or remove that shard, or set data.corrupt=skip to leave it out.") from err
        problems.append(message)
        return None


def decode_sample(raw: dict, image_size: int, crop, policy: str, problems: list[str]) -> np.ndarray | None:
    """The sample's image, or None (recorded in ``problems``) when it does not decode and the policy skips."""
    return _readable(raw, policy, problems, lambda: decode_image(raw["image"], image_size, crop))


def decode_sample_crops(raw: dict, image_size: int, boxes: Callable[[int, int], np.ndarray], policy: str,
                        problems: list[str]):
    """:func:`decode_crops` of the sample (one decode for all its crops), or None as :func:`decode_sample`."""
    return _readable(raw, policy, problems, lambda: decode_crops(raw["image"], image_size, boxes))


def as_is(item):
    """The DataLoader's collate step for items that are already whole batches."""
    return item


def epoch_shards(n_shards: int, seed: int, epoch: int, slot: int, slots: int) -> list[int]:
    """The shards slot ``slot`` of ``slots`` reads in ``epoch``: every ``slots``-th of a seeded permutation."""
    return np.random.default_rng([seed, 2, epoch]).permutation(n_shards)[slot::slots].tolist()


class ShardStream(IterableDataset):
    """This rank's batches of the training steps ``[start_step, steps)`` from webdataset shards.

    Used through :meth:`loader`; each worker (or the main process) serves every ``S``-th step.
    ``teacher`` is an optional :class:`lab.train.reinforced_cache.ShardTeacher`: the cached teacher
    embeddings of each sample's crop, added to the batch's factors.
    """

    endless = True  # a stream: the fixed-dataset teacher cache does not apply

    def __init__(self, paths: list[Path], image_size: int, augmentation: Augmentation, seed: int = 0,
                 shuffle_buffer: int = 1000, corrupt: str = "skip", teacher=None):
        if corrupt not in CORRUPT_POLICIES:
            raise LabError(f"Unknown data.corrupt '{corrupt}'; choose one of: {', '.join(CORRUPT_POLICIES)}.")
        if shuffle_buffer < 1:
            raise LabError("data.shuffle_buffer must be at least 1 (1: no shuffling within a stream).")
        self.paths, self.image_size, self.augmentation = list(paths), image_size, augmentation
        self.seed, self.shuffle_buffer, self.corrupt, self.teacher = seed, shuffle_buffer, corrupt, teacher
        self.plan = (0, 1, 0, 1, 1)  # rank, world size, start step, steps, local batch (set by loader())

    def loader(self, batch_size: int, steps: int, start_step: int = 0, workers: int = 0,
               shard: tuple[int, int] = (0, 1)) -> DataLoader:
        """One :class:`Batch` per step from ``start_step`` to ``steps``: this rank's part of the global batch."""
        rank, world = shard
        streams = max(1, workers)
        if len(self.paths) < world * streams:
            raise LabError(f"{len(self.paths)} shards cannot feed {world} processes × {streams} streams (one shard "
                           f"each at least); write more, smaller shards or lower data.workers.")
        self.plan = (rank, world, start_step, steps, batch_size // world)
        return DataLoader(self, batch_size=None, num_workers=workers, persistent_workers=False, collate_fn=as_is,
                          generator=torch.Generator().manual_seed(self.seed))

    def raw_stream(self, slot: int, slots: int):
        """Slot ``slot``'s endless stream of raw samples (epoch after epoch), buffer-shuffled; yields (epoch, raw)."""
        problems = self.problems
        epoch = 0
        while True:
            order = epoch_shards(len(self.paths), self.seed, epoch, slot, slots)
            samples = (s for i in order for s in read_shard(self.paths[i], self.corrupt, problems))
            shuffled = wds.filters.shuffle(bufsize=self.shuffle_buffer, initial=self.shuffle_buffer,
                                           seed=stable_hash(self.seed, epoch, slot))(samples)
            served = 0
            for raw in shuffled:
                served += 1
                yield epoch, raw
            if not served:  # this stream's shards hold nothing readable: one sentence, never an endless loop
                raise LabError(f"Shards {', '.join(str(self.paths[i]) for i in order[:3])} hold no readable "
                               f"image–caption sample" + (f" ({problems[0]})" if problems else "")
                               + "; repair or remove them, or check data.source.")
            epoch += 1

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rank, world, start, steps, local = self.plan
        stream = (start + worker) % workers  # step s is served by stream s mod S
        served_before = sum(1 for s in range(start) if s % workers == stream)
        to_serve = sum(1 for s in range(start, steps) if s % workers == stream)
        self.problems: list[str] = []
        raws = self.raw_stream(rank * workers + stream, world * workers)
        for _ in range(served_before * local):  # resume: re-read, do not decode, what was dealt before
            next(raws)
        for _ in range(to_serve):
            yield self._batch(raws, local)

    def _batch(self, raws, size: int) -> Batch:
        images, captions, keys, factors = [], [], [], {}
        while len(images) < size:
            epoch, raw = next(raws)
            crop, cached = None, None
            if self.augmentation.kind == "crop":
                k = self.augmentation.choice(raw["key"], epoch)
                if self.teacher is not None:
                    cached = self.teacher.lookup(raw["shard"], raw["key"], k)
                    crop = cached["crop"]
                else:
                    try:
                        width, height = image_size_of(raw["image"])
                    except (OSError, ValueError):
                        width = height = 0  # decode_sample names it below
                    crop = self.augmentation.params(raw["key"], k, width, height) if width else None
            elif self.teacher is not None:
                cached = self.teacher.lookup(raw["shard"], raw["key"], 0)
            image = decode_sample(raw, self.image_size, crop, self.corrupt, self.problems)
            if image is None or (self.augmentation.kind == "crop" and crop is None):
                continue
            images.append(image)
            captions.append(raw["caption"])
            keys.append(raw["key"])
            for name, value in (cached or {}).items():
                if name != "crop":
                    factors.setdefault(f"teacher_{name}", []).append(value)
        batch = Batch(np.stack(images), captions,
                      {"key": np.asarray(keys), **{k: np.stack(v) for k, v in factors.items()}})
        batch.problems = list(self.problems)
        self.problems.clear()
        return batch


def check_config(cfg) -> None:
    """A shard source's settings and files, checked before any model is loaded (no-op for other sources)."""
    if not is_shard_source(cfg.source):
        return
    if cfg.corrupt not in CORRUPT_POLICIES:
        raise LabError(f"Unknown data.corrupt '{cfg.corrupt}'; choose one of: {', '.join(CORRUPT_POLICIES)}.")
    if cfg.shuffle_buffer < 1:
        raise LabError("data.shuffle_buffer must be at least 1 (1: no shuffling within a stream).")
    Augmentation.from_config(cfg)
    check_some_sample(shard_paths(cfg.source), cfg.source)


def check_some_sample(paths: list[Path], source: str) -> None:
    """At least one image–caption sample is readable in the shards (reading stops at the first one), so an
    empty tar or a file that is no tar is one sentence before any model is loaded, not an endless step 0."""
    problems: list[str] = []
    for path in paths:
        if next(read_shard(path, "skip", problems), None) is not None:
            return
    raise LabError(f"The shards of data.source={source} hold no readable image–caption sample"
                   + (f" (first problem: {problems[0]})" if problems else " (every tar is empty)")
                   + "; write them again (e.g. with img2dataset --output_format webdataset) or check data.source.")


def build_stream(cfg, teacher=None) -> ShardStream:
    """The shard stream a :class:`lab.data.pairs.DataConfig` describes."""
    return ShardStream(shard_paths(cfg.source), cfg.image_size, Augmentation.from_config(cfg), cfg.seed,
                       cfg.shuffle_buffer, cfg.corrupt, teacher)


def check_resume(started_with: dict, now) -> None:
    """A shard run's sample order depends on the worker count: resume it with the same ``data.workers``."""
    before = started_with.get("data", {}).get("workers")
    if before is not None and before != now.data.workers and is_shard_source(now.data.source):
        raise LabError(f"This shard run was started with data.workers={before}; resume it with the same "
                       f"data.workers (the shards' sample order depends on it).")


def write_shards(folder: Path, samples, per_shard: int, pattern: str = "shard-{:06d}.tar") -> list[Path]:
    """Write ``(key, image_bytes, ext, caption)`` samples as webdataset shards (webdataset's TarWriter)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, writer = [], None
    for i, (key, data, ext, caption) in enumerate(samples):
        if i % per_shard == 0:
            if writer is not None:
                writer.close()
            paths.append(folder / pattern.format(len(paths)))
            writer = wds.TarWriter(str(paths[-1]))
        writer.write({"__key__": key, ext: data, "txt": caption})
    if writer is not None:
        writer.close()
    return paths


def shapes_shards(folder: str | Path, count: int, per_shard: int, image_size: int = 48, seed: int = 0,
                  ext: str = "png") -> list[Path]:
    """``count`` ShapesWorld pairs written as shards of ``per_shard`` samples (tests, the tiny recipe)."""
    from lab.data.shapes import ShapesWorld, StreamSpec

    items = ShapesWorld(image_size).sample(StreamSpec(seed=seed), 0, count)

    def encoded():
        for i in range(count):
            buffer = io.BytesIO()
            Image.fromarray(items.images[i]).save(buffer, format="JPEG" if ext == "jpg" else ext.upper())
            yield f"{i:08d}", buffer.getvalue(), ext, items.captions[i]

    return write_shards(Path(folder), encoded(), per_shard)


class DamageReport:
    """The damaged members a run's batches reported (``data.corrupt=skip``), over every rank and worker."""

    def __init__(self):
        self.members: set[str] = set()

    def track(self, batches):
        for batch in batches:
            self.members.update(getattr(batch, "problems", ()))
            yield batch

    def summary(self, ctx) -> dict:
        """``corrupt_skipped`` and the first members named; a collective call under torchrun (every rank)."""
        members = self.members
        if ctx.enabled:
            parts = [None] * ctx.world_size
            torch.distributed.all_gather_object(parts, sorted(members))
            members = {m for part in parts for m in part}
        return {"corrupt_skipped": len(members), "corrupt_members": sorted(members)[:20]}

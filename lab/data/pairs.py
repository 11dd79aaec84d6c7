"""Image–caption training data as step-indexed batches.

Every source is a map-style dataset whose ``__getitems__`` returns a whole
:class:`~lab.data.shapes.Batch` (uint8 images, captions, factors). The batch of
training step ``s`` is a pure function of ``(seed, s)`` — a finite set is shuffled
per epoch by a seeded permutation, an endless stream is read in order — so a run
resumed at step ``s`` sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lab.data.shapes import LABEL_SPACES, STYLES, Batch, ShapesWorld, StreamSpec
from lab.errors import LabError

STREAM_LENGTH = 2**40  # "endless": larger than any run will read


@dataclass
class DataConfig:
    """Where training pairs come from.

    ``source`` is ``shapes`` (ShapesWorld), the path of an image–caption CSV, or webdataset
    shards (a brace pattern, a folder of ``.tar`` files or a list file; :mod:`lab.data.shards`).
    ``size`` = 0 reads an endless ShapesWorld stream; otherwise a fixed set of
    ``size`` pairs is rendered once and shuffled each epoch. ``classes`` restricts
    the colour–shape classes to ``base``/``novel``; ``holdout`` removes the
    compositional hold-out pairs; ``styles`` and ``style_weights`` set the domain mix;
    ``balanced`` deals classes in shuffled rounds (fewer same-class pairs per batch).
    """

    source: str = "shapes"
    size: int = 0
    seed: int = 0
    image_size: int = 32
    styles: str = ",".join(STYLES)
    style_weights: str = ""
    classes: str = "all"
    holdout: bool = False
    balanced: bool = False
    csv_image_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str = "\t"
    workers: int = 0
    # webdataset shards (lab.data.shards): buffer shuffle, damaged members, open_clip's training crop
    shuffle_buffer: int = 1000
    corrupt: str = "skip"
    augment: str = "none"
    crop_scale: str = "0.9,1.0"
    flip: bool = False
    augmentations: int = 0

    def stream_spec(self, split: str = "train") -> StreamSpec:
        styles = tuple(s.strip() for s in self.styles.split(",") if s.strip())
        weights = tuple(float(w) for w in self.style_weights.split(",")) if self.style_weights else None
        space = LABEL_SPACES["colour_shape"]
        choices = {"all": None, "base": space.base_ids, "novel": space.novel_ids}
        if self.classes not in choices:
            raise LabError(f"Unknown data.classes '{self.classes}'; choose one of: all, base, novel.")
        try:
            return StreamSpec(seed=self.seed, split=split, styles=styles, style_weights=weights,
                              classes=choices[self.classes], holdout=self.holdout, balanced=self.balanced)
        except ValueError as err:
            raise LabError(str(err)) from err


class ShapesPairs(Dataset):
    """ShapesWorld pairs: a fixed, pre-rendered set of ``size`` items, or an endless stream."""

    def __init__(self, spec: StreamSpec, size: int = 0, image_size: int = 32):
        self.spec, self.size = spec, size
        self.world = ShapesWorld(image_size)
        self._items = self.world.sample(spec, 0, size) if size else None

    def __len__(self) -> int:
        return self.size or STREAM_LENGTH

    @property
    def endless(self) -> bool:
        return self._items is None

    def __getitems__(self, indices) -> Batch:
        indices = np.asarray(indices)
        if self._items is not None:
            return self._items.subset(indices)
        start = int(indices[0])
        if not np.array_equal(indices, np.arange(start, start + len(indices))):
            return Batch.concat([self.world.sample(self.spec, int(i), 1) for i in indices])
        return self.world.sample(self.spec, start, len(indices))

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


def check_one_batch(length: int, batch_size: int) -> None:
    """A fixed dataset holds at least one batch (checked before any teacher cache is built)."""
    if length < batch_size:
        raise LabError(f"The dataset has {length} pairs, fewer than one batch of {batch_size}; "
                       f"lower train.batch_size or add data.")


def check_contrastive_batch(batch_size: int) -> None:
    """A contrastive trainer needs two pairs per batch: with one, the task, CRD and ICL terms are exactly 0."""
    if batch_size < 2:
        raise LabError(f"train.batch_size={batch_size} would not train (with one pair per batch the contrastive "
                       f"terms, task, CRD and ICL, are exactly 0); use at least 2, e.g. train.batch_size=32.")


def check_dataset_fits(dataset, batch_size: int) -> None:
    """:func:`check_one_batch` for a fixed dataset; endless streams and shard streams pass."""
    if not getattr(dataset, "endless", False) and not hasattr(dataset, "loader") and hasattr(dataset, "__len__"):
        check_one_batch(len(dataset), batch_size)


class StepSampler(Sampler):
    """Yields the index batch of each step from ``start_step`` to ``steps`` (drop-last epochs).

    ``shard=(rank, world_size)`` yields rank's contiguous part of each global batch (torchrun).
    """

    def __init__(self, length: int, batch_size: int, steps: int, seed: int, endless: bool,
                 start_step: int = 0, shard: tuple[int, int] = (0, 1)):
        if batch_size <= 0:
            raise LabError("train.batch_size must be positive.")
        if not endless:
            check_one_batch(length, batch_size)
        self.length, self.batch_size, self.steps = length, batch_size, steps
        self.seed, self.endless, self.start_step = seed, endless, start_step
        self.rank, self.world_size = shard

    def __len__(self) -> int:
        return max(self.steps - self.start_step, 0)

    def indices(self, step: int) -> np.ndarray:
        if self.endless:
            return np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        per_epoch = self.length // self.batch_size
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.length)
        return order[position * self.batch_size:(position + 1) * self.batch_size]

    def __iter__(self):
        local = self.batch_size // self.world_size
        for step in range(self.start_step, self.steps):
            yield self.indices(step)[self.rank * local:(self.rank + 1) * local].tolist()


def _keep_batch(batch):
    return batch


def step_batches(dataset: Dataset, batch_size: int, steps: int, seed: int, start_step: int = 0,
                 workers: int = 0, shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """A loader over the training steps from ``start_step``; each element is one :class:`Batch`.

    The loader draws its worker seeds from its own generator, never from the global one, so
    starting it (again, when resuming) leaves the training RNG streams untouched.
    """
    if hasattr(dataset, "loader"):  # a webdataset shard stream deals its own steps (lab.data.shards)
        return dataset.loader(batch_size, steps, start_step, workers, shard)
    sampler = StepSampler(len(dataset), batch_size, steps, seed, getattr(dataset, "endless", False), start_step,
                          shard)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_keep_batch, num_workers=workers,
                      persistent_workers=False, generator=torch.Generator().manual_seed(seed))


def shapes_only_size(data: DataConfig, explicit: bool) -> DataConfig:
    """``data.size`` from a ShapesWorld preset sizes ShapesWorld only: on a CSV or shards it is dropped (every
    pair is read) unless the user set it, which :func:`size_note` then reports in the run's first line."""
    if data.source != "shapes" and not explicit:
        data.size = 0
    return data


def size_note(data: DataConfig) -> str:
    """The line a run on a file dataset starts with when ``data.size`` caps it ('' when nothing is capped)."""
    if data.source == "shapes" or not data.size:
        return ""
    return f"data.size={data.size}: training on the first {data.size} pairs of {data.source} only (data.size=0 reads all)"


def build_pairs(cfg: DataConfig) -> Dataset:
    """The training dataset a :class:`DataConfig` describes."""
    if cfg.source == "shapes":
        return ShapesPairs(cfg.stream_spec("train"), cfg.size, cfg.image_size)
    from lab.data.shards import build_stream, is_shard_source

    if is_shard_source(cfg.source):
        return build_stream(cfg)
    from lab.data.files import CsvPairs

    return CsvPairs(cfg.source, image_size=cfg.image_size, image_key=cfg.csv_image_key,
                    caption_key=cfg.csv_caption_key, separator=cfg.csv_separator, limit=cfg.size)


def in_order(dataset, batch_size: int):
    """A finite dataset's batches in index order (for computing features of every item once)."""
    for start in range(0, len(dataset), batch_size):
        yield dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))


def to_tensors(batch: Batch, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs for one batch: normalised images and caption tokens."""
    return model.image_tensor(batch.images), model.tokenize(batch.captions)

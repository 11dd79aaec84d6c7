"""``python -m lab bench --cache-key``: what computing the teacher cache's content key costs.

The key (:func:`lab.train.cache.content_key`) is computed at the start of every cached
distillation run, so it must stay a small fraction of the run's budget: the target is
≤ 1 s on the default data (8,192 ShapesWorld pairs). Timed here for the default data and for
the same 8,192 pairs as an image–caption CSV of PNG files (the real-scale path: the CSV's
bytes digested, every image file's size and mtime read), split into the teacher side
(weights digest, preprocessing, tokenizer) and the dataset side; median of ``rounds``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from lab.config import to_dict
from lab.data.pairs import DataConfig, build_pairs
from lab.models import zoo
from lab.train.cache import content_key, dataset_fingerprint, model_inputs
from lab.train.presets import PRESETS

TARGET_S = 1.0


def _median_s(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _as_csv(dataset, folder: Path) -> Path:
    """The dataset's pairs written as PNG files and an open_clip-format CSV."""
    items = dataset.__getitems__(list(range(len(dataset))))
    lines = ["filepath\ttitle"]
    for i, (image, caption) in enumerate(zip(items.images, items.captions)):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
        lines.append(f"{i:05d}.png\t{caption}")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


def cache_key_times(rounds: int = 5, progress=None) -> list[dict]:
    """Seconds to compute the key (and its two sides) on the default data and on the same pairs as a CSV."""
    progress = progress or (lambda msg: None)
    teacher = zoo.shipped_teacher()
    shapes_cfg = DataConfig(size=PRESETS["student"]["data.size"])
    shapes = build_pairs(shapes_cfg)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        progress(f"writing the {len(shapes):,} pairs as PNG files and a CSV")
        csv_cfg = DataConfig(source=str(_as_csv(shapes, Path(tmp))), size=0, image_size=shapes_cfg.image_size)
        csv = build_pairs(csv_cfg)
        for name, cfg, data in (("shapes (default data)", shapes_cfg, shapes), ("CSV of PNG files", csv_cfg, csv)):
            progress(f"timing the key on {name}")
            rows.append({"data": name, "pairs": len(data),
                         "key_s": _median_s(lambda: content_key(teacher, data, to_dict(cfg)), rounds),
                         "teacher_side_s": _median_s(lambda: model_inputs(teacher), rounds),
                         "dataset_side_s": _median_s(lambda: dataset_fingerprint(data), rounds)})
    return rows


def format_key_times(rows: list[dict], device: str) -> str:
    lines = [f"Teacher-cache content key (shipped teacher; median of rounds; {device})", "",
             "| data | pairs | key s | teacher side s | dataset side s | within the 1 s target |",
             "|---|--:|--:|--:|--:|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['pairs']:,} | {r['key_s']:.3f} | {r['teacher_side_s']:.3f} | "
                     f"{r['dataset_side_s']:.3f} | {'yes' if r['key_s'] <= TARGET_S else 'NO'} |")
    return "\n".join(lines)

"""Teacher caches keyed on content, not place: copied shards find their cache, a cache made for other
settings is named in the refusal, and the CSV cache is float16 and memory-mapped."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab.config import to_dict
from lab.data.pairs import DataConfig, build_pairs
from lab.data.shards import Augmentation, shapes_shards, shard_paths
from lab.errors import LabError
from lab.models import zoo
from lab.train.cache import TeacherCache
from lab.train.reinforced_cache import ShardTeacher, cache_teacher


@pytest.fixture(scope="module")
def teacher():
    return zoo.shipped_teacher()


def test_copied_shards_reuse_their_cache_and_other_settings_are_named(teacher, tmp_path):
    shapes_shards(tmp_path / "shards", 16, 8, image_size=40)
    k2 = Augmentation("crop", count=2)
    said = []
    stats = cache_teacher(teacher, shard_paths(str(tmp_path / "shards")), k2, 32, batch_size=4, progress=said.append)
    assert stats["shards"] == 2 and said[-1].startswith("cached ")
    shutil.copytree(tmp_path / "shards", tmp_path / "moved" / "copy")  # new path, new modification times
    shutil.rmtree(tmp_path / "shards")
    copied = shard_paths(str(tmp_path / "moved" / "copy"))
    opened = ShardTeacher.open(teacher, copied, k2, 32)  # found by content, not path
    assert set(opened.files) == {str(p) for p in copied}
    again = cache_teacher(teacher, copied, k2, 32, batch_size=4)
    assert again["shards"] == 0 and again["cached_before"] == 2  # nothing recomputed
    with pytest.raises(LabError, match=r"has one for other settings: .*teacher-\w+\.safetensors \(data\.augment=crop "
                                       r"data\.augmentations=2 data\.image_size=32"):
        ShardTeacher.open(teacher, copied, Augmentation("crop", count=4), 32)


def test_csv_cache_is_float16_and_memory_mapped(teacher, tmp_path):
    rng = np.random.default_rng(0)
    lines = ["filepath\ttitle"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(30 + i, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png\ta red circle number {i}.")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(source=str(tmp_path / "pairs.csv"), image_size=32)
    dataset = build_pairs(cfg)
    cache = TeacherCache(tmp_path / "cache")
    built, hit = cache.load_or_build(teacher, dataset, to_dict(cfg))
    entry, hit = cache.load_or_build(teacher, dataset, to_dict(cfg))
    assert hit and entry["image"].dtype == torch.float16 and entry["text"].dtype == torch.float16
    maps = Path("/proc/self/maps")
    if maps.exists():  # the entry is a mapping of the file: rows are paged in as indexed, never loaded whole
        assert str(cache.last_path.resolve()) in maps.read_text()
    batch = dataset.__getitems__([1, 4])
    with torch.no_grad():
        online = teacher.model.encode_image(teacher.image_tensor(batch.images), normalize=True)
    torch.testing.assert_close(entry["image"][[1, 4]].float(), online, atol=1e-3, rtol=0)  # float16: ~3 digits

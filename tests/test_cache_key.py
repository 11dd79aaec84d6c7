"""The teacher cache is keyed on content: a CSV edited in place is rebuilt, an unchanged one is a hit."""

import os

import numpy as np
import pytest
from PIL import Image

from lab.config import to_dict
from lab.data.pairs import DataConfig, build_pairs
from lab.models import zoo
from lab.train.cache import TeacherCache, content_key, dataset_fingerprint

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def _write_csv(folder, rows: int, word: str = "square"):
    folder.mkdir(exist_ok=True)
    lines = ["filepath\ttitle"]
    for i in range(rows):
        name, rgb = list(COLOURS.items())[i % len(COLOURS)]
        image = folder / f"{i}.png"
        if not image.exists():
            Image.new("RGB", (16, 16), rgb).save(image)
        lines.append(f"{image.name}\ta {name} {word} number {i}.")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


@pytest.fixture(scope="module")
def teacher():
    return zoo.shipped_teacher()


def _load(cache, teacher, csv):
    cfg = DataConfig(source=str(csv), image_size=32)
    dataset = build_pairs(cfg)
    entry, hit = cache.load_or_build(teacher, dataset, to_dict(cfg))
    return dataset, entry, hit, cache.last_path


def test_edited_csv_rebuilds_the_cache_and_an_unchanged_one_hits_it(tmp_path, teacher):
    cache = TeacherCache(tmp_path / "cache")
    csv = _write_csv(tmp_path / "data", 8)
    _, first, hit, first_path = _load(cache, teacher, csv)
    assert not hit
    _, again, hit, path = _load(cache, teacher, csv)
    assert hit and path == first_path
    np.testing.assert_array_equal(again["text"].numpy(), first["text"].numpy())

    _write_csv(tmp_path / "data", 8, word="circle")  # same rows, same images, new captions
    dataset, edited, hit, path = _load(cache, teacher, csv)
    assert not hit and path != first_path
    np.testing.assert_array_equal(edited["image"].numpy(), first["image"].numpy())  # images did not change
    assert not np.allclose(edited["text"].numpy(), first["text"].numpy())  # captions did
    expected = teacher.model.encode_text(teacher.tokenize(dataset.captions[:2]), normalize=True)
    stored = edited["text"][:2].float().numpy()  # a file dataset's cache stores float16 (memory-mapped)
    np.testing.assert_allclose(stored, expected.detach().numpy(), atol=1e-3)

    _write_csv(tmp_path / "data", 16, word="circle")  # grown: a new entry of the new length, no IndexError
    _, grown, hit, _ = _load(cache, teacher, csv)
    assert not hit and len(grown["image"]) == 16
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_replaced_image_changes_the_fingerprint(tmp_path):
    csv = _write_csv(tmp_path / "data", 4)
    before = dataset_fingerprint(build_pairs(DataConfig(source=str(csv))))
    image = tmp_path / "data" / "0.png"
    Image.new("RGB", (16, 16), (0, 0, 0)).save(image)
    os.utime(image, ns=(1, 1))  # even an image restored to an old time is seen (its mtime differs)
    assert dataset_fingerprint(build_pairs(DataConfig(source=str(csv)))) != before


def test_key_follows_shapes_contents_and_preprocessing_but_not_workers(teacher):
    cfg = DataConfig(size=32)
    data = build_pairs(cfg)
    key = content_key(teacher, data, to_dict(cfg))[0]
    assert content_key(teacher, data, {**to_dict(cfg), "workers": 2})[0] == key
    other = DataConfig(size=32, seed=1)
    assert content_key(teacher, build_pairs(other), to_dict(other))[0] != key
    student = zoo.load("shapes-student")
    assert content_key(student, data, to_dict(cfg))[0] != key


def test_bench_cache_key_times_both_kinds_of_data(capsys, monkeypatch):
    import json

    from lab.cli import main
    from lab.train.presets import PRESETS

    monkeypatch.setitem(PRESETS["student"], "data.size", 64)  # the benchmark's own run uses the 8,192 pairs
    assert main(["bench", "--cache-key", "--rounds", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["cache_key"]
    assert [r["data"] for r in rows] == ["shapes (default data)", "CSV of PNG files"]
    assert all(r["pairs"] == 64 and r["key_s"] > 0 and r["dataset_side_s"] > 0 for r in rows)


def test_class_folder_fingerprint_follows_the_class_names(tmp_path):
    from lab.data.files import LabelledImages

    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "a.png")
    cat, dog = (dataset_fingerprint(LabelledImages([tmp_path / "a.png"], [0], [name], 16)) for name in ("cat", "dog"))
    assert cat["images"] == dog["images"] and cat != dog  # same file, other captions ("a photo of a dog.")

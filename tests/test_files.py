import json

import numpy as np
import pytest
from PIL import Image

from lab.data.files import CsvPairs, class_folder, split_file
from lab.data.pairs import StepSampler
from lab.errors import LabError


def _png(path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_csv_pairs_in_open_clip_format(tmp_path):
    _png(tmp_path / "img" / "a.png", (255, 0, 0))
    _png(tmp_path / "img" / "b.png", (0, 0, 255), size=(20, 60))
    (tmp_path / "train.csv").write_text("filepath\ttitle\nimg/a.png\ta red square.\nimg/b.png\ta blue square.\n")
    data = CsvPairs(tmp_path / "train.csv", image_size=16)
    assert len(data) == 2
    batch = data.__getitems__([1, 0])
    assert batch.captions == ["a blue square.", "a red square."]
    assert batch.images.shape == (2, 16, 16, 3) and batch.images.dtype == np.uint8
    assert tuple(batch.images[0, 8, 8]) == (0, 0, 255) and tuple(batch.images[1, 8, 8]) == (255, 0, 0)


def test_csv_errors_name_the_fix(tmp_path):
    (tmp_path / "bad.csv").write_text("path,caption\nx.png,hi\n")
    with pytest.raises(LabError, match="no column 'filepath'.*csv_image_key"):
        CsvPairs(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("filepath\ttitle\n")
    with pytest.raises(LabError, match="holds no image"):
        CsvPairs(tmp_path / "empty.csv")
    (tmp_path / "missing.csv").write_text("filepath\ttitle\nnope.png\thello\n")
    with pytest.raises(LabError, match=r"nope.png \(row 2 of missing.csv\) does not exist"):
        CsvPairs(tmp_path / "missing.csv").__getitems__([0])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "broken.csv").write_text("filepath\ttitle\nbroken.png\thello\n")
    with pytest.raises(LabError, match="cannot be read"):
        CsvPairs(tmp_path / "broken.csv").__getitems__([0])
    with pytest.raises(LabError, match="does not exist"):
        CsvPairs(tmp_path / "absent.csv")


def test_class_folder(tmp_path):
    _png(tmp_path / "ds" / "golden_retriever" / "1.png", (200, 150, 0))
    _png(tmp_path / "ds" / "golden_retriever" / "2.jpg", (210, 160, 0))
    _png(tmp_path / "ds" / "cat" / "1.png", (10, 10, 10))
    (tmp_path / "ds" / "cat" / "notes.txt").write_text("ignored")
    data = class_folder(tmp_path / "ds", image_size=8)
    assert data.classnames == ["cat", "golden retriever"]
    assert list(data.labels) == [0, 1, 1]
    batch = data.__getitems__([0, 2])
    assert list(batch.factors["label"]) == [0, 1]
    assert batch.captions[1] == "a photo of a golden retriever."
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabError, match="no images"):
        class_folder(tmp_path / "empty")


def test_coop_split_file(tmp_path):
    _png(tmp_path / "images" / "a.png", (1, 2, 3))
    _png(tmp_path / "images" / "b.png", (4, 5, 6))
    _png(tmp_path / "images" / "c.png", (7, 8, 9))
    splits = {"train": [["a.png", 0, "apple"], ["b.png", 2, "cherry"]], "val": [],
              "test": [["c.png", 1, "banana"]]}
    (tmp_path / "split.json").write_text(json.dumps(splits))
    test = split_file(tmp_path / "split.json", tmp_path / "images", "test", image_size=8)
    assert test.classnames == ["apple", "banana", "cherry"]
    assert list(test.labels) == [1]
    assert split_file(tmp_path / "split.json", tmp_path / "images", "train", 8).__getitems__([1]).captions == \
        ["a photo of a cherry."]
    with pytest.raises(LabError, match="has no 'dev' split"):
        split_file(tmp_path / "split.json", tmp_path / "images", "dev")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LabError, match="not valid JSON"):
        split_file(tmp_path / "bad.json", tmp_path)


def test_step_sampler_is_a_pure_function_of_the_step():
    a = StepSampler(100, 32, steps=10, seed=7, endless=False)
    b = StepSampler(100, 32, steps=10, seed=7, endless=False, start_step=4)
    assert list(a)[4:] == list(b)
    epoch0 = np.concatenate([a.indices(s) for s in range(3)])
    assert len(set(epoch0)) == 96  # no repeats within an epoch
    assert not np.array_equal(a.indices(0), a.indices(3))  # reshuffled next epoch
    stream = StepSampler(0, 8, steps=3, seed=0, endless=True)
    assert list(stream) == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24))]
    with pytest.raises(LabError, match="fewer than one batch"):
        StepSampler(10, 32, steps=1, seed=0, endless=False)

"""DataCompDR's layout: cache-teacher writes it from plain shards (2 teachers, K = 4, synthetic captions), the
stored crop embeddings are the online ensemble's, and `distill --loss mobileclip` trains from it without
running any teacher."""

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds

from lab.cli import main
from lab.data.shards import decode_image, read_shard, shapes_shards
from lab.models import zoo

ITEMS, PER_SHARD = 8, 8


@pytest.fixture(scope="module")
def reinforced(tmp_path_factory):
    plain = tmp_path_factory.mktemp("plain")
    shapes_shards(plain, ITEMS, PER_SHARD, image_size=40)
    out = tmp_path_factory.mktemp("dr")
    assert main(["cache-teacher", "--layout", "datacompdr", "--teacher", "shipped,shipped", "--data", str(plain),
                 "--augmentations", "4", "--synthetic", "2", "--out", str(out), "data.image_size=32",
                 "data.flip=true"]) == 0
    return out


def test_layout_members_and_stored_crops_are_the_online_ensembles(reinforced):
    config = json.loads((reinforced / "reinforcement.json").read_text())
    assert config["num_samples"] == 4 and config["model_name"] == "shipped,shipped"
    shard = sorted(reinforced.glob("*.tar"))[0]
    sample = next(iter(wds.tariterators.tarfile_samples([{"url": str(shard)}])))
    assert {"png", "txt", "paug.json", "npz", "syn.json", "json"} <= set(sample)
    arrays = np.load(io.BytesIO(sample["npz"]))
    teacher = zoo.shipped_teacher()
    d = teacher.embed_dim
    assert arrays["image_emb"].shape == (4, 2 * d) and arrays["image_emb"].dtype == np.float16
    assert arrays["text_emb"].shape == (1, 2 * d) and arrays["syn_text_emb"].shape == (2, 2 * d)
    syn = json.loads(sample["syn.json"])["syn_text"]
    assert len(syn) == 2 and all(isinstance(s, str) and s for s in syn)
    param_aug = json.loads(sample["paug.json"])["param_aug"]
    assert len(param_aug) == 4 and all(len(p) == 2 and len(p[0]) == 4 for p in param_aug)  # [[i, j, h, w], flip]
    raw = next(r for r in read_shard(shard, "stop", []) if r["key"] == sample["__key__"])
    crops = np.stack([decode_image(raw["image"], 32, np.asarray([*p[0], int(p[1])])) for p in param_aug])
    with torch.no_grad():
        online = teacher.model.encode_image(teacher.image_tensor(crops), normalize=True)
        syn_online = teacher.model.encode_text(teacher.tokenize(syn), normalize=True)
    stored = torch.from_numpy(arrays["image_emb"].astype(np.float32))
    for block in (stored[:, :d], stored[:, d:]):  # each member's block is that teacher's embedding of the crop
        torch.testing.assert_close(block, online, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.from_numpy(arrays["syn_text_emb"][:, d:].astype(np.float32)), syn_online,
                               atol=1e-3, rtol=0)


def test_distill_from_reinforced_shards_never_runs_a_teacher(reinforced, tmp_path, monkeypatch):
    calls = []
    load = zoo.load_teacher

    def watched(spec, device):
        teacher = load(spec, device)

        def refuse(*args, **kwargs):
            calls.append(spec)
            raise AssertionError("a teacher ran")

        teacher.model.encode_image = teacher.model.encode_text = teacher.model.forward = refuse
        return teacher

    monkeypatch.setattr(zoo, "load_teacher", watched)
    args = ["distill", "--loss", "mobileclip", "--name", "dr", "--runs-dir", str(tmp_path),
            f"data.source={reinforced}", "data.image_size=32", "data.shuffle_buffer=4", "synthetic=both",
            "task_weight=0", "train.steps=1", "train.batch_size=8", "train.warmup=1", "train.log_every=1",
            "eval.per_style=0", "train.eval_every=0"]
    assert main(args) == 0
    assert calls == []
    losses = [json.loads(line) for line in (tmp_path / "dr" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/mobileclip" in r or "mobileclip" in r for r in losses), losses[:1]

"""Webdataset shards end to end: reading, splitting over ranks and workers, resume, damage, the
augmentation-aware teacher cache, and TensorBoard logs. Tiny shards of generated ShapesWorld pairs."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab import runs
from lab.data.pairs import DataConfig, build_pairs, step_batches
from lab.data.shards import Augmentation, ShardDamage, decode_image, shapes_shards, shard_paths, write_shards
from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ITEMS, PER_SHARD, BATCH = 256, 64, 32  # 4 shards; 2 ranks x 2 workers = 4 streams; 8 steps per epoch
AUG = ["data.augment=crop", "data.augmentations=4", "data.shuffle_buffer=20"]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "TQDM_DISABLE": "1"}


def _check(command: list[str], timeout: int = 300) -> str:
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error:")]
    assert done.returncode == 0, "\n".join(errors[:2]) + done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    shapes_shards(folder, ITEMS, PER_SHARD, image_size=40)
    return folder


@pytest.fixture(scope="module")
def cached_shards(shards) -> Path:
    """The shards with the shipped teacher's embeddings of K = 4 crops per image beside them (2 ranks)."""
    out = _check([*TORCHRUN, "-m", "lab", "cache-teacher", "--data", str(shards), "--augmentations", "4",
                  "data.shuffle_buffer=20", "data.workers=2", "threads=1"])
    assert f"cached {ITEMS} samples ({4 * ITEMS} crops) of 4 shards" in out
    return shards


def _config(source, **extra) -> DataConfig:
    return DataConfig(source=str(source), image_size=32, shuffle_buffer=20, augment="crop", augmentations=4, **extra)


def test_sources_brace_folder_and_list_file(shards, tmp_path):
    folder = sorted(shards.glob("*.tar"))
    assert shard_paths(str(shards / "shard-{000000..000003}.tar")) == folder
    assert shard_paths(str(shards)) == folder
    listing = tmp_path / "shards.txt"
    listing.write_text("\n".join(str(p) for p in folder))
    assert shard_paths(str(listing)) == folder
    with pytest.raises(LabError, match=r"shard-000004.tar does not exist \(6 of 10 named by"):
        shard_paths(str(shards / "shard-{000000..000009}.tar"))


def test_every_sample_once_per_epoch_over_ranks_and_workers_and_resume_continues(shards):
    """In one process, as the two ranks would: 2 ranks x 2 workers, 3 epochs; then a loader started at step 11."""
    per_epoch, steps = ITEMS // BATCH, 3 * ITEMS // BATCH
    stream = build_pairs(_config(shards))
    by_rank = [[b.factors["key"].tolist() for b in step_batches(stream, BATCH, steps, 0, 0, 2, (rank, 2))]
               for rank in (0, 1)]
    for epoch in range(3):
        seen = [k for rank in by_rank for step in rank[epoch * per_epoch:(epoch + 1) * per_epoch] for k in step]
        assert sorted(seen) == [f"{i:08d}" for i in range(ITEMS)]  # each once
    assert by_rank[0][0] != by_rank[0][per_epoch]  # epochs are reshuffled
    resumed = [b.factors["key"].tolist() for b in step_batches(stream, BATCH, steps, 0, 11, 2, (0, 2))]
    assert resumed == by_rank[0][11:]


def test_torchrun_ranks_and_workers_see_every_sample_once_per_epoch(shards, tmp_path):
    steps = 2 * ITEMS // BATCH
    _check([*TORCHRUN, str(ROOT / "tests" / "shard_epoch.py"), str(shards), str(steps), str(BATCH), "2",
            str(tmp_path / "keys")])
    ranks = [json.loads((tmp_path / f"keys.rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(r) for r in ranks] == [steps, steps] and all(len(s) == BATCH // 2 for r in ranks for s in r)
    for epoch in range(2):
        seen = [k for r in ranks for s in r[epoch * steps // 2:(epoch + 1) * steps // 2] for k in s]
        assert sorted(seen) == [f"{i:08d}" for i in range(ITEMS)]


def _distill(shards, runs_dir, name, *extra) -> list[str]:
    return [*TORCHRUN, "-m", "lab", "distill", "--loss", "fd+icl", "--name", name, "--runs-dir", str(runs_dir),
            f"data.source={shards}", "data.workers=2", *AUG, "train.steps=20", f"train.batch_size={BATCH}",
            "train.warmup=2", "train.log_every=1", "train.checkpoint_every=4", "eval.per_style=0",
            "train.threads=1", "teacher_mode=online", *extra]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _losses(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in runs.read_run(path).metrics()]  # no timings


def test_torchrun_distill_on_shards_killed_and_resumed_logs_identical_losses(shards, tmp_path):
    killed = subprocess.Popen(_distill(shards, tmp_path, "killed"), cwd=ROOT, env=_env(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / runs.CHECKPOINT
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for rank in _children(killed.pid):  # torchrun starts each rank in its own session: kill rank + its workers
        os.killpg(os.getpgid(rank), signal.SIGKILL)
    killed.kill()
    killed.wait()
    assert not (tmp_path / "killed" / runs.SUMMARY).exists()
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < step < 20
    out = _check(_distill(shards, tmp_path, "killed", "--resume"))
    assert f"resuming killed at step {step}" in out
    _check(_distill(shards, tmp_path, "straight"))
    resumed, straight = _losses(tmp_path / "killed"), _losses(tmp_path / "straight")
    assert [r["step"] for r in resumed] == list(range(1, 21))
    assert resumed == straight
    summary = runs.read_run(tmp_path / "killed").summary
    assert summary["processes"] == 2 and summary["corrupt_skipped"] == 0


def test_cached_crops_are_the_online_teachers_embeddings_of_the_same_crops(cached_shards):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from lab.models import zoo
    from lab.data.shards import read_shard

    teacher = zoo.shipped_teacher()
    shard = sorted(cached_shards.glob("*.tar"))[1]
    (cache,) = cached_shards.glob(f"{shard.stem}.teacher-*.safetensors")
    entry = load_file(str(cache))
    with safe_open(str(cache), framework="pt") as f:
        keys = json.loads(f.metadata()["keys"])
    assert entry["image"].dtype == torch.float16 and entry["image"].shape == (PER_SHARD, 4, teacher.embed_dim)
    raws = {r["key"]: r for r in read_shard(shard, "stop", [])}
    assert sorted(raws) == sorted(keys)
    augmentation = Augmentation("crop", count=4)
    rows = list(range(0, PER_SHARD, 9))
    boxes = [entry["crop"][i, k].numpy() for i in rows for k in range(4)]
    for i, k, box in zip([i for i in rows for _ in range(4)], [k for _ in rows for k in range(4)], boxes):
        assert box.tolist() == augmentation.params(keys[i], k, 40, 40).tolist()
    crops = np.stack([decode_image(raws[keys[i]]["image"], 32, box) for i, box in
                      zip([i for i in rows for _ in range(4)], boxes)])
    with torch.no_grad():
        online = teacher.model.encode_image(teacher.image_tensor(crops), normalize=True)
        text = teacher.model.encode_text(teacher.tokenize([raws[keys[i]]["caption"] for i in rows]), normalize=True)
    assert len({tuple(b) for b in boxes}) > len(rows)  # the K crops differ
    torch.testing.assert_close(entry["image"][rows].reshape(-1, teacher.embed_dim).float(), online,
                               atol=1e-3, rtol=0)  # float16 holds ~3 decimal digits
    torch.testing.assert_close(entry["text"][rows].float(), text, atol=1e-3, rtol=0)


def test_cached_teacher_run_logs_the_online_teachers_losses_on_the_same_crops(cached_shards, tmp_path):
    from lab.cli import main

    base = ["distill", "--loss", "fd+icl+crd", "--runs-dir", str(tmp_path), f"data.source={cached_shards}", *AUG,
            "train.steps=6", "train.batch_size=32", "train.warmup=1", "train.log_every=1", "eval.per_style=0",
            "train.threads=1"]
    assert main([*base, "--name", "cached", "teacher_mode=cached"]) == 0  # the spelling of "cache"
    assert main([*base, "--name", "online", "teacher_mode=online"]) == 0
    assert json.loads((tmp_path / "cached" / runs.CONFIG).read_text())["config"]["teacher_mode"] == "cache"
    cached, online = _losses(tmp_path / "cached"), _losses(tmp_path / "online")
    assert len(cached) == 6
    for a, b in zip(cached, online, strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=2e-4, abs=1e-5) for k in a), (a, b)  # float16 cache
    # other crop settings have no cache: refused before training
    assert main([*base, "--name", "other", "teacher_mode=cache", "data.crop_scale=0.5,1.0"]) == 2


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_damaged_members_are_named_and_skipped_or_stop(tmp_path, capsys):
    from lab.cli import main

    good = [(f"{i:04d}", _png(np.full((40, 40, 3), 6 * i, np.uint8)), "png", f"a picture {i}") for i in range(40)]
    samples = good[:5] + [("bad-image", b"not a png at all", "png", "broken")] + good[5:]
    write_shards(tmp_path / "a", samples, per_shard=41)
    write_shards(tmp_path / "b", [(k + "b", d, e, c) for k, d, e, c in good], per_shard=40)
    listing = tmp_path / "list.txt"
    listing.write_text("a/shard-000000.tar\nb/shard-000000.tar\n")
    stream = build_pairs(DataConfig(source=str(listing), image_size=32, shuffle_buffer=4, corrupt="stop"))
    with pytest.raises(ShardDamage, match=r"a/shard-000000.tar member bad-image.png is not a readable image"):
        list(step_batches(stream, 16, 6, 0))
    args = ["distill", "--loss", "fd", "--runs-dir", str(tmp_path / "runs"), "--name", "r", f"data.source={listing}",
            "data.shuffle_buffer=4", "train.steps=6", "train.batch_size=16", "train.warmup=1", "eval.per_style=0",
            "teacher_mode=online", "train.threads=1"]
    assert main(args) == 0
    summary = runs.read_run(tmp_path / "runs" / "r").summary
    assert summary["corrupt_skipped"] == 1 and "member bad-image.png" in summary["corrupt_members"][0]
    assert main([*args[:5], "--name", "s", *args[7:], "data.corrupt=stop"]) == 2
    assert "bad-image.png is not a readable image" in capsys.readouterr().err


def test_tensorboard_event_file_holds_every_logged_key(shards, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lab.cli import main

    assert main(["distill", "--loss", "fd+icl", "--runs-dir", str(tmp_path), "--name", "tb", f"data.source={shards}",
                 *AUG, "train.steps=4", "train.batch_size=32", "train.warmup=1", "train.log_every=1",
                 "train.eval_every=2", "eval.per_style=8", "teacher_mode=online", "train.threads=1",
                 "train.logger=tensorboard"]) == 0
    run = runs.read_run(tmp_path / "tb")
    logged = {k for r in run.metrics() for k, v in r.items() if k != "step" and isinstance(v, (int, float))}
    assert {"loss", "task", "fd", "icl", "lr", "images_per_s", "eval/hm"} <= logged
    (events,) = (tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*")
    board = EventAccumulator(str(events))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert logged <= tags
    assert "final/zeroshot/plain/hm" in tags
    for key in ("loss", "fd"):  # the values too, at their steps
        written = {e.step: e.value for e in board.Scalars(key)}
        assert written == pytest.approx({r["step"]: r[key] for r in run.metrics() if key in r}, rel=1e-6)


def test_crops_are_torchvisions_random_resized_crop_of_their_box():
    """Each crop obeys RandomResizedCrop's rule (scale, ratio) and is torchvision's resized_crop of its box."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    from lab.data.shards import CROP_RATIO, decode_crops

    augmentation = Augmentation("crop", scale=(0.3, 1.0), flip=True, count=4)
    rng = np.random.default_rng(0)
    flips = []
    for i in range(40):
        pixels = rng.integers(0, 256, (36 + i, 48, 3), dtype=np.uint8)
        boxes, crops = decode_crops(_png(pixels), 32, lambda w, h: np.stack(
            [augmentation.params(f"{i:04d}", k, w, h) for k in range(4)]))
        for (top, left, height, width, flip), crop in zip(boxes.tolist(), crops):
            assert 0.3 * 0.99 <= height * width / (pixels.shape[0] * pixels.shape[1]) <= 1.0
            assert CROP_RATIO[0] * 0.9 <= width / height <= CROP_RATIO[1] * 1.1  # rounding to whole pixels
            reference = TF.resized_crop(Image.fromarray(pixels), top, left, height, width, [32, 32],
                                        interpolation=InterpolationMode.BICUBIC)
            reference = TF.hflip(reference) if flip else reference
            assert np.array_equal(crop, np.asarray(reference))
            flips.append(flip)
    assert 0.3 < np.mean(flips) < 0.7  # flipped half the time


def test_bench_shards_rows_are_measured_side_by_side():
    from lab.bench.shards import augmented_step_costs, cache_teacher_throughput, format_shard_bench

    step = augmented_step_costs("fd", batch_size=16, rounds=1, steps=1, progress=lambda m: None)
    throughput = cache_teacher_throughput(images=16, per_shard=8, crops=2, batch_size=16, workers=1, rounds=1,
                                          progress=lambda m: None)
    assert step.nokd_s > 0 and step.cached_s > 0 and step.online_s > 0 and throughput.crops == 32
    table = format_shard_bench(step, [throughput], "cpu")
    assert throughput.setup_s >= 0 and f"{throughput.ratio:>7.2f}{throughput.setup_s:>9.2f}  " in table and "cached (K crops)" in table and "shipped" in table


def test_truncated_shard_and_missing_caption_are_named(tmp_path):
    from lab.data.shards import read_shard

    good = [(f"{i:04d}", _png(np.full((40, 40, 3), 6 * i, np.uint8)), "png", f"a picture {i}") for i in range(6)]
    (path,) = write_shards(tmp_path / "t", good, per_shard=6)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download cut off half-way
    problems: list[str] = []
    kept = list(read_shard(path, "skip", problems))
    assert 0 < len(kept) < 6 and f"Shard {path} cannot be read" in problems[0]  # (and the cut sample, if any)
    with pytest.raises(ShardDamage, match="cannot be read past a member"):
        list(read_shard(path, "stop", []))
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "nocap.tar")) as writer:
        writer.write({"__key__": "lonely", "png": good[0][1]})
    problems = []
    assert list(read_shard(tmp_path / "nocap.tar", "skip", problems)) == []
    assert problems == [f"Shard {tmp_path / 'nocap.tar'} member lonely has no caption (txt)"]


def test_bad_shard_settings_are_refused_before_any_model_loads(shards, tmp_path, capsys):
    from lab.cli import main

    base = ["distill", "--loss", "fd", "--runs-dir", str(tmp_path), f"data.source={shards}", "teacher_mode=online"]
    for override, message in (("data.corrupt=maybe", "Unknown data.corrupt 'maybe'"),
                              ("data.augment=rotate", "Unknown data.augment 'rotate'"),
                              ("data.crop_scale=0.5", "data.crop_scale='0.5' must be two numbers"),
                              ("data.source=/nowhere/{0..3}.tar", "Shard /nowhere/0.tar does not exist")):
        assert main([*base, "--name", "x", override]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

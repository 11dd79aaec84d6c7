"""Bad inputs: each gives one clear sentence naming the fix, never a traceback, and leaves existing runs intact.

Every row of the README's bad-inputs table is a case here; the message fragment each case
expects is the sentence a user sees (after ``error: `` on the command line).
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lab import runs
from lab.cli import main
from lab.errors import LabError
from lab.models import zoo

TINY = ["data.size=64", "train.steps=4", "train.batch_size=16", "train.warmup=1", "train.log_every=1",
        "eval.per_style=8"]


class Payload:
    """Unpickling this would create ``path``: the proof that a refused checkpoint ran nothing."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad files the cases point at, and a run directory that must survive every case untouched."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"arch": "shapes-student", "model": Payload(root / "payload-ran")}, root / "payload.pt")
    zoo.save_weights(zoo.load("shapes-student"), root / "student.safetensors")
    for name, rows in (("missing-image.csv", "nowhere.png\ta red circle.\ngood.png\ta red square."),
                       ("bad-image.csv", "bad.png\ta red circle.\ngood.png\ta red square."), ("empty.csv", "")):
        (root / name).write_text(f"filepath\ttitle\n{rows}\n" if rows else "filepath\ttitle\n")
    (root / "bad.png").write_bytes(b"\x89PNG but not really")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(root / "good.png")
    other_tools_files(root)
    (root / "tables-file").mkdir()
    (root / "tables-file" / "_tables").write_text("not a folder")
    halfway = runs.RunWriter(root / "runs", "halfway", "distill", {"a": 1}, seed=0)
    halfway.save_checkpoint({"arch": "shapes-student", "step": 1, "model": {"w": torch.zeros(1000)}})
    checkpoint = halfway.path / runs.CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])  # cut off mid-write
    student = zoo.load("shapes-student")
    save_file({f"net.{k}": v.contiguous() for k, v in student.model.state_dict().items()},
              str(root / "wrapped.safetensors"))
    existing = runs.RunWriter(root / "runs", "existing", "distill", {"a": 1}, seed=0)
    existing.log({"step": 1, "loss": 1.0})
    existing.save_checkpoint({"arch": "shapes-student", "step": 1})
    existing.save_embeddings({"student_image": np.zeros((2, 2)), "student_text": np.zeros((2, 2)),
                              "labels": np.arange(2)})
    existing.finish({"wall_time_s": 1.0, "checkpoint": "last"})
    return root


def _snapshot(path):
    return {p.relative_to(path): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def _cli(argv, capsys) -> tuple[int, str]:
    """Exit status and the error line (stderr also carries progress bars, which are not errors)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1, err
    return code, errors[0].split("error: ", 1)[1]


def assert_one_sentence(message: str, fragment: str) -> None:
    assert "Traceback" not in message and "\n" not in message, message
    assert message.endswith("."), message
    assert not re.search(r"\.\s+[A-Z]", message), f"more than one sentence: {message}"
    assert fragment in message, message


def _distill(files, *args):
    return ["distill", "--runs-dir", str(files / "runs"), "--name", "new", *TINY, *args]  # args override TINY


# --------------------------------------------------------------------------- issue 30: the new round, other tools

HELD_LOCKS: list[int] = []  # descriptors holding the locks of runs "another process" is writing


def _hold_lock(runs_dir: Path, run_id: str) -> None:
    """Make ``run_id`` look like another live process's run: a config, no summary, and its lock held here
    through a descriptor of our own (flock locks of two open() calls conflict even within one process)."""
    import fcntl
    import os

    runs.RunWriter(runs_dir, run_id, "distill", {"a": 1}, seed=0)
    runs.unlock_runs(runs.lock_path(runs_dir, run_id))
    fd = os.open(runs.lock_path(runs_dir, run_id), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, b"4242 elsewhere-host\n")
    HELD_LOCKS.append(fd)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _encoded(colour, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (36, 40), colour).save(buffer, fmt)
    return buffer.getvalue()


def other_tools_files(root: Path) -> None:
    """The files issue 30's cases point at (made once per module, beside the older cases' files)."""
    import gzip
    import tarfile

    from lab.experiments.grids import NO_KD, run_id

    _hold_lock(root / "runs", "locked")
    _hold_lock(root / "sweep-runs", run_id(NO_KD, 0, "fast"))
    (root / "runs" / "broken-config").mkdir(parents=True)
    (root / "runs" / "broken-config" / runs.CONFIG).write_text("{cut off")
    (root / "no-caption.csv").write_text("filepath\ttitle\ngood.png\ta red circle.\ngood.png\t\n")
    (root / "latin1.csv").write_bytes("filepath\ttitle\ngood.png\tun cercle rouge, très rond.\n".encode("latin-1"))
    (root / "a-folder").mkdir()
    student = zoo.load("shapes-student")
    torch.save(student.model.state_dict(), root / "whole.pt")
    (root / "truncated.pt").write_bytes((root / "whole.pt").read_bytes()[:5000])
    torch.save({"epoch": 3, "optimizer": {"lr": torch.tensor(1.0)}}, root / "no-model.pt")
    for name, content in (("two-field.json", {"test": [["good.png", 0]]}),
                          ("label-gap.json", {"test": [["good.png", 0, "red"], ["good.png", 2, "blue"]]}),
                          ("split-list.json", [["good.png", 0, "red"]]),
                          ("retrieval-str.json", ["good.png"]),
                          ("karpathy-no-sentences.json", {"images": [{"filename": "good.png", "split": "test"}]})):
        (root / name).write_text(json.dumps(content))
    with tarfile.open(root / "pack.tar.gz", "w:gz") as tar:
        tar.add(root / "whole.pt", arcname="fast/run/checkpoints/last.pt")
    packed = (root / "pack.tar.gz").read_bytes()
    (root / "damaged.tar.gz").write_bytes(packed[:len(packed) // 2])
    assert gzip.decompress(packed)  # the whole pack was fine: the damage is the cut
    _tar(root / "empty.tar", {})
    (root / "not-a-tar.tar").write_text("this is a caption file, not a tar\n")
    (root / "img2dataset").mkdir()
    members = {}  # img2dataset's webdataset output: NNNNNNNNN.{jpg,webp,jpeg} + .txt + .json per sample
    for i, (colour, ext, fmt) in enumerate([((200, 30, 30), "jpg", "JPEG"), ((30, 200, 30), "webp", "WEBP"),
                                            ((30, 30, 200), "jpeg", "JPEG"), ((200, 200, 30), "jpg", "JPEG")] * 2):
        key = f"{i:09d}"
        members[f"{key}.{ext}"] = _encoded(colour, fmt)
        members[f"{key}.txt"] = f"a photo number {i}.".encode()
        members[f"{key}.json"] = json.dumps({"key": key, "status": "success", "width": 36, "height": 40}).encode()
    _tar(root / "img2dataset" / "00000.tar", members)


def _fresh(f, *args):
    """A distill run under a name no case ever creates (an earlier case may leave "new" unfinished)."""
    return [*_distill(f, *args), "--name", "fresh"]


def _eval_benchmark(f, spec):
    return ["eval", "shapes-student", "--teacher", "none", "--benchmark", spec]


NEW_ROUND_CASES = {
    "existing --name without --overwrite": (lambda f: [*_distill(f), "--name", "existing"],
                                            "already exists; pick another name with --name, or pass --overwrite"),
    "a run another process is writing": (lambda f: [*_distill(f, "--overwrite"), "--name", "locked"],
                                         "is being written by process 4242 on elsewhere-host"),
    "--resume of a run still training": (lambda f: [*_distill(f, "--resume"), "--name", "locked"],
                                         "is being written by process 4242 on elsewhere-host"),
    "a second sweep on a folder whose run is in progress": (
        lambda f: ["sweep", "--grid", "core", "--fast", "--runs-dir", str(f / "sweep-runs")],
        "is being written by process 4242 on elsewhere-host"),
    "--resume with a broken config.json": (lambda f: [*_distill(f, "--resume"), "--name", "broken-config"],
                                           "config.json is damaged (not a readable JSON object) and the run has no checkpoint"),
    "promptkd --protocol crosss": (lambda f: ["promptkd", "--protocol", "crosss", "--runs-dir", str(f / "runs")],
                                   "Unknown protocol 'crosss'; choose one of: base2novel, cross, domain."),
    "promptkd refine=bogus": (lambda f: ["promptkd", "--runs-dir", str(f / "runs"), "refine=bogus"],
                              "Unknown refine 'bogus'; choose one of"),
    "train.batch_size=1": (lambda f: _never(f, "train.batch_size=1"),
                           "train.batch_size=1 would not train (with one pair per batch the contrastive terms"),
    "pretrain train.batch_size=1": (lambda f: ["pretrain", "--preset", "smoke", "--runs-dir", str(f / "runs"),
                                               "--name", "never", "train.batch_size=1"],
                                    "train.batch_size=1 would not train"),
    "CSV row with no caption": (lambda f: _fresh(f, f"data.source={f / 'no-caption.csv'}"),
                                "Row 3 of no-caption.csv has no caption (column 'title' is empty); fill it in"),
    "Latin-1 CSV": (lambda f: _fresh(f, f"data.source={f / 'latin1.csv'}"),
                    "is not UTF-8 text (byte 0xe8 at offset"),
    "data.csv_separator=;;": (lambda f: _fresh(f, f"data.source={f / 'missing-image.csv'}", "data.csv_separator=;;"),
                              "data.csv_separator must be one character, got ';;'"),
    "an existing folder as data.source": (lambda f: _fresh(f, f"data.source={f / 'a-folder'}"),
                                          "a-folder is a folder, not a CSV file; pass the CSV inside it"),
    "truncated open_clip checkpoint": (lambda f: _fresh(f, "--student", f"shapes-student:{f / 'truncated.pt'}"),
                                       "truncated.pt is truncated or unreadable"),
    "open_clip checkpoint with no state dict": (
        lambda f: _fresh(f, "--student", f"shapes-student:{f / 'no-model.pt'}"),
        "holds no model state dict (its keys: epoch, optimizer); re-save the model's state_dict() alone."),
    "split item with two fields": (lambda f: _eval_benchmark(f, f"classify:{f / 'two-field.json'}:{f}"),
                                   "is [\"good.png\", 0], not [path, label, classname]"),
    "split file with a label gap": (lambda f: _eval_benchmark(f, f"classify:{f / 'label-gap.json'}:{f}"),
                                    "has no item of label 1 (its labels run 0…2)"),
    "split file that is a JSON list": (lambda f: _eval_benchmark(f, f"classify:{f / 'split-list.json'}:{f}"),
                                       "must be a JSON object of splits"),
    "retrieval item that is not an object": (lambda f: _eval_benchmark(f, f"retrieval:{f / 'retrieval-str.json'}"),
                                             "Item 0 of"),
    "Karpathy file without sentences": (
        lambda f: _eval_benchmark(f, f"retrieval:{f / 'karpathy-no-sentences.json'}"),
        "has no \"sentences\" list"),
    "cache-teacher threads=-1": (lambda f: ["cache-teacher", "--data", str(f / "img2dataset"), "threads=-1"],
                                 "threads must be at least 0, got -1."),
    **({} if torch.cuda.is_available() else {
        "cache-teacher device=cuda": (lambda f: ["cache-teacher", "--data", str(f / "img2dataset"), "device=cuda"],
                                      "device=cuda but no CUDA GPU is visible; use device=cpu or auto.")}),
    "lessons unpack of a damaged archive": (
        lambda f: ["lessons", "unpack", str(f / "damaged.tar.gz"), str(f / "unpacked")],
        "damaged.tar.gz is damaged"),
    "an empty tar as data.source": (lambda f: _fresh(f, f"data.source={f / 'empty.tar'}"),
                                    "hold no readable image–caption sample (every tar is empty)"),
    "a non-tar file named .tar as data.source": (lambda f: _fresh(f, f"data.source={f / 'not-a-tar.tar'}"),
                                                 "hold no readable image–caption sample (first problem: Shard"),
    "export into a non-empty folder": (lambda f: ["export", str(f / "runs" / "existing"), str(f)],
                                       "is not empty"),
    "export of a killed run": (lambda f: ["export", str(f / "runs" / "halfway"), str(f / "export-new")],
                               "did not finish (no summary.json), so its card would have no metrics"),
    "a known pretrained tag offline": (lambda f: ["eval", "ViT-B-32:openai", "--teacher", "none"],
                                       "Pretrained weights ViT-B-32:openai are not available offline"),
}
# Refused before any model is built (zoo.create patched to fail in test_new_round_refusals_load_no_model)
BEFORE_ANY_MODEL = [c for c in NEW_ROUND_CASES if not c.startswith(("split", "retrieval", "Karpathy", "export into"))
                    and "unpack" not in c] + ["dataset smaller than one batch"]


CASES = {  # case: (command line, the fix the sentence must name)
    "unknown loss term": (lambda f: _distill(f, "--loss", "crd+fdd"),
                          "Unknown loss term 'fdd'; valid terms: crd, fd"),
    "unknown method": (lambda f: ["promptkd", "--method", "kdx", "--runs-dir", str(f / "runs")],
                       "Unknown method 'kdx'; choose one of: promptkd, comkd, am, kdpl."),
    "unknown preset": (lambda f: ["pretrain", "--preset", "huge", "--runs-dir", str(f / "runs")],
                       "invalid choice: 'huge'"),
    "unknown config key": (lambda f: _distill(f, "train.stepz=3"),
                           "Unknown config key 'train.stepz'; valid keys under 'train': steps"),
    "missing checkpoint": (lambda f: _distill(f, "--teacher", str(f / "missing.pt")),
                           "does not exist; check the path."),
    "corrupt checkpoint": (lambda f: _distill(f, "--teacher", str(f / "junk.pt")),
                           "is corrupt or not a safe (weights-only) checkpoint (UnpicklingError); re-create it"),
    "checkpoint with a pickled payload": (lambda f: _distill(f, "--teacher", str(f / "payload.pt")),
                                          "holds pickled Python objects, which the lab refuses to load"),
    "open_clip checkpoint with a pickled payload": (lambda f: _distill(f, "--student", f"ViT-S-32:{f / 'payload.pt'}"),
                                                    "holds pickled Python objects, which the lab refuses to load"),
    "checkpoint of the wrong architecture": (
        lambda f: _distill(f, "--teacher", f"shapes-teacher:{f / 'student.safetensors'}"),
        "does not match architecture shapes-teacher"),
    "missing image in a CSV": (lambda f: _distill(f, f"data.source={f / 'missing-image.csv'}", "train.batch_size=2"),
                               "does not exist; fix the path or remove that row."),
    "unreadable image in a CSV": (lambda f: _distill(f, f"data.source={f / 'bad-image.csv'}", "train.batch_size=2"),
                                  "cannot be read"),
    "empty dataset": (lambda f: _distill(f, f"data.source={f / 'empty.csv'}"),
                      "holds no image–caption rows; add data or choose another file."),
    "dataset smaller than one batch": (lambda f: _distill(f, "train.batch_size=128", "--overwrite"),
                                       "fewer than one batch of 128; lower train.batch_size or add data."),
    "bf16 on a CPU": (lambda f: _distill(f, "train.precision=bf16", "train.device=cpu"),
                      "train.precision=bf16 needs a CUDA GPU; use train.precision=fp32 on CPU."),
    "--resume of a run that does not exist": (lambda f: [*_distill(f, "--resume"), "--name", "never-started"],
                                              "does not exist, so there is nothing to resume; drop --resume"),
    "--resume of a finished run": (lambda f: [*_distill(f, "--resume"), "--name", "existing"],
                                   "already finished, so there is nothing to resume"),
    "non-finite loss": (lambda f: _distill(f, "--loss", "fd", "--weight", "fd=inf", "--overwrite"),
                        "The loss became non-finite at step 0 in term 'fd'; lower train.lr or that term's weight"),
    # settings out of range: refused when the config is built, before any folder is made (see test below)
    "train.steps=0": (lambda f: _never(f, "train.steps=0"), "train.steps must be at least 1, got 0."),
    "train.steps=-5": (lambda f: _never(f, "train.steps=-5"), "train.steps must be at least 1, got -5."),
    "train.steps=abc": (lambda f: _never(f, "train.steps=abc"), "train.steps must be an integer, got 'abc'."),
    "train.lr=0": (lambda f: _never(f, "train.lr=0"), "train.lr=0.0 would not train"),
    "train.lr=-1": (lambda f: _never(f, "train.lr=-1"), "train.lr must be positive, got -1.0."),
    "train.lr=nan": (lambda f: _never(f, "train.lr=nan"), "train.lr must be a finite number, got nan."),
    "train.checkpoint_every=-1": (lambda f: _never(f, "train.checkpoint_every=-1"),
                                  "train.checkpoint_every must be at least 0, got -1."),
    "data.size=-1": (lambda f: _never(f, "data.size=-1"), "data.size must be at least 0, got -1."),
    "eval.per_style=-3": (lambda f: _never(f, "eval.per_style=-3"), "eval.per_style must be at least 0, got -3."),
    "data.image_size=0": (lambda f: _never(f, "data.image_size=0"), "data.image_size must be at least 16, got 0."),
    "train.log_every=0": (lambda f: _never(f, "train.log_every=0"), "train.log_every must be at least 1, got 0."),
    "train.threads=-1": (lambda f: _never(f, "train.threads=-1"), "train.threads must be at least 0, got -1."),
    "pretrain train.steps=0": (lambda f: ["pretrain", "--preset", "smoke", "--runs-dir", str(f / "runs"), "--name",
                                          "never", "train.steps=0"], "train.steps must be at least 1, got 0."),
    "promptkd train.lr=nan": (lambda f: ["promptkd", "--runs-dir", str(f / "runs"), "--name", "never",
                                         "train.lr=nan"], "train.lr must be a finite number, got nan."),
    # run names: one folder name from a safe alphabet
    **{f"--name {name}": (lambda f, name=name: [*_distill(f), "--name", name], "is not allowed; use 1-128 letters")
       for name in ("x/y/z", "_tables", ".hidden", ".", "..", "../escape", "/abs/path", "a b")},
    # the runs folder
    "--runs-dir that is a file": (lambda f: [*_distill(f), "--runs-dir", str(f / "junk.pt")],
                                  "is a file, not a folder; move it away or pass --runs-dir another folder"),
    "sweep --runs-dir that is a file": (lambda f: ["sweep", "--grid", "core", "--fast", "--runs-dir", str(f / "junk.pt")],
                                        "is a file, not a folder; move it away or pass --runs-dir another folder"),
    "sweep with _tables a file": (lambda f: ["sweep", "--grid", "core", "--fast", "--runs-dir", str(f / "tables-file")],
                                  "_tables is a file, not a folder"),
    # a failing image inside a DataLoader worker: the worker's own sentence, not its traceback
    "unreadable image in a DataLoader worker": (
        lambda f: _distill(f, f"data.source={f / 'bad-image.csv'}", "train.batch_size=2", "data.workers=2",
                           "teacher_mode=online", "--loss", "fd", "--overwrite"), "cannot be read"),
    "--resume from a damaged checkpoint": (lambda f: [*_distill(f, "--resume"), "--name", "halfway"],
                                           "last checkpoint checkpoints/last.pt is damaged (cut off or corrupt), so "
                                           "the run cannot continue from it; train it again from the start with "
                                           "--overwrite instead of --resume"),
    "eval with a trainer's key": (lambda f: ["eval", "shapes-student", "--teacher", "none", "train.steps=3"],
                                  "Unknown config key 'train.steps'; valid keys: seed, per_style"),
    "checkpoint wrapped in another prefix": (
        lambda f: _distill(f, "--student", f"shapes-student:{f / 'wrapped.safetensors'}", "--overwrite"),
        "none of its keys match the model's (they start with net.); it may be wrapped in another model"),
    # found beyond the list
    **{f"bench {option} 0": (lambda f, option=option: ["bench", "--terms", "fd", option, "0"],
                             f"argument {option}: must be at least 1, got 0.")
       for option in ("--batch-size", "--rounds", "--steps")},
    "cost --rounds 0": (lambda f: ["cost", "--runs-dir", str(f / "runs"), "--rounds", "0"],
                        "argument --rounds: must be at least 1, got 0."),
    "data.style_weights=a,b": (lambda f: _never(f, "data.style_weights=a,b"),
                               "data.style_weights must be comma-separated non-negative numbers"),
    "eval.label_space=bogus": (lambda f: _never(f, "eval.label_space=bogus"),
                               "Unknown eval.label_space 'bogus'; choose one of: colour_shape, shape, colour, size."),
    "pretrain --export into a file": (lambda f: ["pretrain", "--preset", "smoke", "--runs-dir", str(f / "runs"),
                                                 "--name", "never", "--export", str(f / "junk.pt" / "w.safetensors")],
                                      "junk.pt is a file, not a folder"),
    "eval of a path that does not exist": (lambda f: ["eval", str(f / "no-such-run"), "--teacher", "none"],
                                           "no-such-run does not exist; pass a run directory, a checkpoint"),
    **NEW_ROUND_CASES,  # issue 30: the new round of bad inputs and files written by other tools (defined below)
}


def _never(files, *overrides):
    """A run that must be refused before its folder exists (checked by test_refused_settings_make_no_folder)."""
    return [*_distill(files, *overrides), "--name", "never"]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentence_and_existing_runs_are_intact(case, files, capsys):
    argv, fragment = CASES[case]
    before = _snapshot(files / "runs" / "existing")
    code, message = _cli(argv(files), capsys)
    assert code == 2
    assert_one_sentence(message, fragment)
    assert _snapshot(files / "runs" / "existing") == before
    assert not (files / "payload-ran").exists()  # no checkpoint ever ran its pickled code


def test_out_of_memory_batch_names_the_fix(files, capsys, monkeypatch):
    from lab.train.distill import DistillStep

    def out_of_memory(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(DistillStep, "__call__", out_of_memory)
    before = _snapshot(files / "runs" / "existing")
    code, message = _cli(_distill(files, "--loss", "fd", "--overwrite"), capsys)
    assert code == 2
    assert_one_sentence(message, "The GPU ran out of memory at step 0 with train.batch_size=16; lower "
                                  "train.batch_size or set train.precision=bf16.")
    assert _snapshot(files / "runs" / "existing") == before


def test_non_finite_loss_keeps_the_last_good_checkpoint(files, capsys, monkeypatch):
    from lab.losses.objective import Objective

    forward, calls = Objective.forward, []

    def blows_up_at_step_3(self, e):
        terms = forward(self, e)
        calls.append(1)
        return {**terms, "fd": terms["fd"] * float("nan")} if len(calls) == 4 else terms

    monkeypatch.setattr(Objective, "forward", blows_up_at_step_3)
    code, message = _cli(_distill(files, "--loss", "fd", "--overwrite", "train.checkpoint_every=2"), capsys)
    assert code == 2
    assert_one_sentence(message, "The loss became non-finite at step 3 in term 'fd'")
    state = torch.load(files / "runs" / "new" / runs.CHECKPOINT, weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["step"] for r in runs.read_run(files / "runs" / "new").metrics()] == [1, 2, 3]


def test_width_mismatch_is_one_sentence():
    from lab.losses.objective import Embeddings, Objective

    objective = Objective("fd", student_dim=64, teacher_dim=128)
    e = Embeddings(torch.randn(4, 32), torch.randn(4, 32), torch.tensor(10.0), torch.randn(4, 128),
                   torch.randn(4, 128), 100.0)
    with pytest.raises(LabError) as err:
        objective(e)
    assert_one_sentence(str(err.value), "was built for student width 64 and teacher width 128, but got 32 and 128; "
                                         "rebuild it for these models.")


def test_uneven_split_over_processes_is_one_sentence():
    from lab.train import dist

    with pytest.raises(LabError) as err:
        dist.check_batch(15, dist.Context(rank=0, world_size=2))
    assert_one_sentence(str(err.value), "does not split evenly over 2 processes; use a multiple of 2.")


def test_pickled_payload_is_refused_by_every_loader(files):
    for spec in (files / "payload.pt", f"shapes-student:{files / 'payload.pt'}"):
        with pytest.raises(LabError, match="holds pickled Python objects"):
            zoo.load(spec)
    with pytest.raises(LabError, match="holds pickled Python objects"):
        zoo.load_training_checkpoint(files / "payload.pt")
    assert not (files / "payload-ran").exists()


def test_pretrain_under_torchrun_is_one_sentence(files, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, message = _cli(["pretrain", "--preset", "smoke", "--runs-dir", str(files / "runs")], capsys)
    assert code == 2
    assert_one_sentence(message, "pretrain runs in one process; launch it without torchrun")


REFUSED_BEFORE_ANY_FOLDER = [c for c in CASES if c.startswith(("train.", "data.", "eval.", "pretrain train", "promptkd",
                                                                "--name"))]


def test_refused_settings_and_names_make_no_folder(files, capsys):
    """A refused setting leaves no config-only folder that would block the same --name; no name escapes."""
    for case in REFUSED_BEFORE_ANY_FOLDER[:4] + [c for c in CASES if c.startswith("--name")]:
        argv, _ = CASES[case]
        assert _cli(argv(files), capsys)[0] == 2
    assert not (files / "runs" / "never").exists()
    assert not (files / "escape").exists() and not (files / "runs" / "x").exists()
    assert not (files / "runs" / "_tables").exists() and not (files / "runs" / ".hidden").exists()
    assert not list((files / "runs").glob("config.json"))


def test_unwritable_runs_folder_and_tables_are_one_sentence(files, capsys, monkeypatch):
    import os

    readonly = {files / "readonly", files / "readonly-tables" / "_tables"}
    for folder in readonly:
        folder.mkdir(parents=True, exist_ok=True)
    access = os.access  # patched rather than chmod: the tests may run as root, whom permissions do not stop
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) not in readonly and access(path, mode))
    code, message = _cli(_distill(files, "--runs-dir", str(files / "readonly")), capsys)
    assert code == 2
    assert_one_sentence(message, "Cannot write to the runs folder")
    code, message = _cli(["sweep", "--grid", "core", "--fast", "--runs-dir", str(files / "readonly-tables")], capsys)
    assert code == 2
    assert_one_sentence(message, f"Cannot write to the runs folder {files / 'readonly-tables' / '_tables'} "
                                 f"(permission denied); pass a folder you can write or fix its permissions.")


def test_module_prefixed_safetensors_loads_like_the_pt_path(files, tmp_path):
    """A DataParallel/DDP state dict ("module." before every key) loads from .safetensors as from .pt."""
    student = zoo.load("shapes-student")
    state = {f"module.{k}": v.contiguous() for k, v in student.model.state_dict().items()}
    save_file(state, str(tmp_path / "ddp.safetensors"))
    torch.save(state, tmp_path / "ddp.pt")
    for path in (tmp_path / "ddp.safetensors", tmp_path / "ddp.pt"):
        loaded = zoo.load(f"shapes-student:{path}")
        for k, v in student.model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[k], v), (path, k)


def test_eval_takes_both_forms_of_its_keys(smoke_run, capsys):
    metrics = []
    for key in ("per_style", "eval.per_style"):
        assert main(["eval", str(smoke_run), "--teacher", "none", "--json", f"{key}=8", "batch_size=32"]) == 0
        metrics.append(json.loads(capsys.readouterr().out))
    assert metrics[0] == metrics[1] and metrics[0]["top1"] >= 0


def test_a_broken_run_makes_its_row_incomplete_not_silently_shorter(tmp_path, capsys):
    from lab.experiments.grids import CLIPKD, NO_KD, run_id
    from lab.experiments.tables import write_tables

    for row in (NO_KD, CLIPKD):
        for seed in (0, 1):
            writer = runs.RunWriter(tmp_path, run_id(row, seed, "fast"), "distill", {"a": 1}, seed=seed)
            writer.finish({"wall_time_s": 1.0, "checkpoint": "last", "hm": 50.0 + seed + (10 if row.loss else 0),
                           "top1": 1.0, "base": 1.0, "novel": 1.0, "teacher/hm": 97.5})
    broken = tmp_path / run_id(CLIPKD, 1, "fast")
    (broken / runs.SUMMARY).write_text("{cut off")
    table = write_tables("core", 2, tmp_path, "fast").read_text()
    assert "| FD+ICL+CRD (CLIP-KD) | 0 (incomplete: 1 broken) |" in table
    assert f"left out seed 1 ({broken.name}: summary.json is not valid JSON" in table
    assert f"warning: row 'FD+ICL+CRD (CLIP-KD)' is incomplete, left out seed 1 ({broken.name}" in capsys.readouterr().err
    assert "summary.json is not valid JSON" in (tmp_path / "_tables" / "fast-core.csv").read_text()


def test_cost_names_a_broken_run_it_leaves_out(smoke_run, tmp_path, capsys):
    import shutil

    shutil.copytree(smoke_run, tmp_path / "good")
    shutil.copytree(smoke_run, tmp_path / "broken")
    (tmp_path / "broken" / runs.SUMMARY).write_text("{cut off")
    assert main(["cost", "--runs-dir", str(tmp_path), "--rounds", "1", "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert "Left out, broken: broken (summary.json is not valid JSON" in captured.out
    assert "warning: left out broken run broken" in captured.err


# --------------------------------------------------------------------------- issue 30: what now works


def test_new_round_refusals_load_no_model(files, capsys, monkeypatch):
    """Every refusal of the new round comes before any model is built (and so before any cache or training)."""
    import open_clip

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the refusal")

    monkeypatch.setattr(open_clip, "create_model", no_model)
    caches = sorted((files / "runs").glob(".cache/**/*"))
    for case in BEFORE_ANY_MODEL:
        argv, fragment = CASES[case]
        code, message = _cli(argv(files), capsys)
        assert code == 2 and fragment in message, (case, message)
    assert not (files / "runs" / "nokd-s0").exists()  # promptkd trained no no-KD student first
    assert sorted((files / "runs").glob(".cache/**/*")) == caches  # and built no teacher cache


def test_the_offline_tag_sentence_has_no_download_error_beside_it(capsys, caplog):
    assert main(["eval", "ViT-B-32:openai", "--teacher", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Pretrained weights ViT-B-32:openai") and len(err.splitlines()) == 1, err
    assert "Failed to download" not in err + caplog.text  # no download was tried


QUICK = ["train.steps=2", "train.batch_size=4", "train.warmup=1", "train.log_every=1", "eval.per_style=0"]


def test_spreadsheet_csv_and_compiled_checkpoint_distill(files, tmp_path, capsys):
    """A CSV as a spreadsheet saves it (byte-order mark, CRLF, commas, a quoted caption holding a comma and a
    line break, a trailing empty column) trains a student started from a torch.compile checkpoint; a stale lock
    left by a dead process is taken over."""
    rows = ['good.png,"a red square, quite\r\nbig.",'] + [f"good.png,a red square {i}.," for i in range(5)]
    (tmp_path / "sheet.csv").write_bytes(("\ufefffilepath,title,\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    (tmp_path / "good.png").write_bytes((files / "good.png").read_bytes())
    student = zoo.load("shapes-student")
    torch.save({f"_orig_mod.{k}": v for k, v in student.model.state_dict().items()}, tmp_path / "compiled.pt")
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    runs.lock_path(runs_dir, "sheet").write_text("999999999 some-host\n")  # a dead process's lock
    argv = ["distill", "--runs-dir", str(runs_dir), "--name", "sheet", "--student", f"shapes-student:{tmp_path / 'compiled.pt'}",
            "--loss", "fd", f"data.source={tmp_path / 'sheet.csv'}", *QUICK]
    assert main(argv) == 0, capsys.readouterr().err
    run = runs.read_run(runs_dir / "sheet")
    assert run.complete and run.summary["steps"] == 2
    assert runs.lock_path(runs_dir, "sheet").read_text().split()[0] == str(__import__("os").getpid())
    from lab.data.files import CsvPairs

    pairs = CsvPairs(tmp_path / "sheet.csv", image_size=32)
    assert len(pairs) == 6 and pairs.captions[0] == "a red square, quite\r\nbig."


def test_open_clip_train_checkpoint_and_img2dataset_shards_distill(files, tmp_path, capsys):
    """open_clip_train's epoch_N.pt ({"epoch", "name", "state_dict" with module. keys, "optimizer"}) as the
    student, img2dataset's shards (.jpg/.webp/.jpeg + .txt + .json) as data, no teacher cache: the teacher runs
    online and says so once."""
    student = zoo.load("shapes-student")
    torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in student.model.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, tmp_path / "epoch_1.pt")
    argv = ["distill", "--runs-dir", str(tmp_path / "runs"), "--name", "shards", "--student",
            f"shapes-student:{tmp_path / 'epoch_1.pt'}", "--loss", "fd",
            f"data.source={files / 'img2dataset' / '00000.tar'}", *QUICK]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("the teacher runs online") == 1, out
    run = runs.read_run(tmp_path / "runs" / "shards")
    assert run.complete and run.summary["teacher_mode"] == "online" and run.summary["steps"] == 2


def test_pretrain_without_evaluation_and_resume_rewrites_config(tmp_path, capsys):
    """pretrain eval.per_style=0 finishes (no evaluation); a resumed run's config.json says what it trains, not
    a hand edit; --resume may change eval.per_style."""
    argv = ["pretrain", "--preset", "smoke", "--runs-dir", str(tmp_path), "--name", "p", "data.size=16",
            "train.batch_size=8", "train.steps=2", "eval.per_style=0"]
    assert main(argv) == 0
    run = runs.read_run(tmp_path / "p")
    assert run.complete and not (tmp_path / "p" / runs.EMBEDDINGS).exists()
    (tmp_path / "p" / runs.SUMMARY).unlink()  # as if killed after its last checkpoint
    edited = json.loads((tmp_path / "p" / runs.CONFIG).read_text())
    edited["seed"], edited["config"]["train"]["lr"] = 99, 0.5
    (tmp_path / "p" / runs.CONFIG).write_text(json.dumps(edited))
    assert main([*argv[:-1], "eval.per_style=8", "--resume"]) == 0
    config = json.loads((tmp_path / "p" / runs.CONFIG).read_text())
    assert config["seed"] == 0 and config["config"]["train"]["lr"] == 1e-3 and config["config"]["eval"]["per_style"] == 8
    assert (tmp_path / "p" / runs.EMBEDDINGS).exists()
    capsys.readouterr()


@pytest.mark.parametrize("layout", ["compile", "ddp", "lightning", "ema", "open_clip_train"])
def test_checkpoints_from_other_training_code_load(layout, tmp_path):
    student = zoo.load("shapes-student")
    state = {k: v.clone() for k, v in student.model.state_dict().items()}
    saved = {
        "compile": {f"_orig_mod.{k}": v for k, v in state.items()},
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "lightning": {"epoch": 2, "global_step": 10, "state_dict": {f"model.{k}": v for k, v in state.items()}},
        "ema": {"epoch": 2, "state_dict_ema": state},
        "open_clip_train": {"epoch": 1, "name": "x", "state_dict": {f"module.{k}": v for k, v in state.items()},
                            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
    }[layout]
    torch.save(saved, tmp_path / "epoch_1.pt")
    loaded = zoo.load(f"shapes-student:{tmp_path / 'epoch_1.pt'}").model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_camera_and_editor_images_decode_as_they_look(tmp_path):
    """16-bit grey is scaled, not clipped to white; EXIF rotation is applied; CMYK, palette with transparency
    and alpha become RGB (transparent parts white)."""
    from lab.data.files import load_image, to_rgb

    grey = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert 110 < load_image(tmp_path / "deep.png", 32).mean() < 145  # convert("RGB") gave 254.5
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "camera.jpg", exif=exif)
    assert to_rgb(Image.open(tmp_path / "camera.jpg")).size == (20, 40)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "print.jpg")
    assert np.asarray(to_rgb(Image.open(tmp_path / "print.jpg")))[..., 0].mean() > 200  # red stays red
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.save(tmp_path / "palette.png", transparency=0)
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "alpha.png")
    for name in ("palette.png", "alpha.png"):
        rgb = to_rgb(Image.open(tmp_path / name))
        assert rgb.mode == "RGB" and np.asarray(rgb).min() == 255, name  # fully transparent black: white


def test_pickled_embeddings_are_listed_as_damaged(tmp_path):
    writer = runs.RunWriter(tmp_path, "r", "distill", {"a": 1}, seed=0)
    writer.finish({"wall_time_s": 1.0, "checkpoint": "last"})
    np.savez(tmp_path / "r" / runs.EMBEDDINGS, student_image=np.array([object()], dtype=object),
             student_text=np.zeros(2), labels=np.zeros(2))
    run = runs.read_run(tmp_path / "r")
    assert not run.ok and "holds pickled Python objects (student_image)" in run.problems[0]
    with pytest.raises(LabError) as err:
        run.embeddings()
    assert_one_sentence(str(err.value), "embeddings.npz cannot be read (Object arrays cannot be loaded")


def test_a_run_folder_linked_from_outside_the_root_is_not_listed(tmp_path):
    for where in (tmp_path / "elsewhere" / "run", tmp_path / "runs" / "inside"):
        writer = runs.RunWriter(where.parent, where.name, "distill", {"a": 1}, seed=0)
        writer.finish({"wall_time_s": 1.0, "checkpoint": "last"})
    (tmp_path / "runs" / "linked").symlink_to(tmp_path / "elsewhere" / "run")
    (tmp_path / "runs" / "alias").symlink_to(tmp_path / "runs" / "inside")
    assert [r.run_id for r in runs.list_runs(tmp_path / "runs")] == ["alias", "inside"]


def test_a_resume_may_change_the_evaluation_size_only():
    from lab.train.checkpoint import check_same_settings

    check_same_settings({"eval": {"per_style": 0}}, {"eval": {"per_style": 64}}, Path("r"))
    with pytest.raises(LabError, match="was started with eval.seed=0"):
        check_same_settings({"eval": {"seed": 0}}, {"eval": {"seed": 1}}, Path("r"))

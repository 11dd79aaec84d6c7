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
    for name, rows in (("missing-image.csv", "nowhere.png\ta red circle."), ("bad-image.csv", "bad.png\ta red circle."),
                       ("empty.csv", "")):
        (root / name).write_text(f"filepath\ttitle\n{rows}\n" if rows else "filepath\ttitle\n")
    (root / "bad.png").write_bytes(b"\x89PNG but not really")
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


CASES = {  # case: (command line, the fix the sentence must name)
    "unknown loss term": (lambda f: _distill(f, "--loss", "crd+fdd"),
                          "Unknown loss term 'fdd'; valid terms: crd, fd"),
    "unknown method": (lambda f: ["promptkd", "--method", "kdx", "--runs-dir", str(f / "runs")],
                       "Unknown method 'kdx'; choose one of: promptkd, comkd, am."),
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
    "missing image in a CSV": (lambda f: _distill(f, f"data.source={f / 'missing-image.csv'}", "train.batch_size=1"),
                               "does not exist; fix the path or remove that row."),
    "unreadable image in a CSV": (lambda f: _distill(f, f"data.source={f / 'bad-image.csv'}", "train.batch_size=1"),
                                  "cannot be read"),
    "empty dataset": (lambda f: _distill(f, f"data.source={f / 'empty.csv'}"),
                      "holds no image–caption rows; add data or choose another file."),
    "dataset smaller than one batch": (lambda f: _distill(f, "train.batch_size=128"),
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
        lambda f: _distill(f, f"data.source={f / 'bad-image.csv'}", "train.batch_size=1", "data.workers=2",
                           "teacher_mode=online", "--loss", "fd", "--overwrite"), "cannot be read"),
    "--resume from a damaged checkpoint": (lambda f: [*_distill(f, "--resume"), "--name", "halfway"],
                                           "last checkpoint checkpoints/last.pt is damaged (cut off or corrupt), so "
                                           "the run cannot continue from it; train it again from the start with "
                                           "--overwrite instead of --resume"),
    "eval with a trainer's key": (lambda f: ["eval", "shapes-student", "--teacher", "none", "train.steps=3"],
                                  "Unknown config key 'train.steps'; valid keys: seed, per_style"),
    "checkpoint wrapped in another prefix": (
        lambda f: _distill(f, "--student", f"shapes-student:{f / 'wrapped.safetensors'}"),
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

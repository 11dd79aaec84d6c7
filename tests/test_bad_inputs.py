"""Bad inputs: each gives one clear sentence naming the fix, never a traceback, and leaves existing runs intact.

Every row of the README's bad-inputs table is a case here; the message fragment each case
expects is the sentence a user sees (after ``error: `` on the command line).
"""

import hashlib
import re

import numpy as np
import pytest
import torch

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
}


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

"""--overwrite cannot destroy a result: the new run is built beside the old one and replaces it only once
finished; a full disk or a killed process leaves the old run whole and no temporary file behind."""

import errno
import hashlib
import os
import subprocess

import pytest

from lab import runs
from lab.cli import main

TINY = ["data.size=32", "train.steps=2", "train.batch_size=16", "train.warmup=1", "train.log_every=1",
        "eval.per_style=8", "--loss", "fd"]


def _snapshot(path):
    return {p.relative_to(path): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def _leftovers(root):
    """Temporary files and staged or moved-aside run folders anywhere under the runs folder."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(".tmp") or runs.STAGING in p.name or runs.ASIDE in p.name)


def _distill(root, *args):
    return main(["distill", "--runs-dir", str(root), "--name", "victim", *TINY, *args])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("overwrite")
    assert _distill(root) == 0
    return root


def test_full_disk_during_overwrite_keeps_the_old_run_and_leaves_no_tmp(root, capsys, monkeypatch):
    before = _snapshot(root / "victim")
    real_fsync, calls = os.fsync, []

    def disk_fills_up(fd):  # the new run's config.json is written, then the disk is full (its checkpoint)
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", disk_fills_up)
    code = _distill(root, "--overwrite", "train.seed=1")
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line.split("error: ", 1)[1] for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"Cannot write {root / f'.victim{runs.STAGING}{os.getpid()}'}/")
    assert errors[0].endswith(": the disk is full; free some space (or point --runs-dir elsewhere) and run it again.")
    assert len(calls) > 1  # the disk did fill during the new run
    assert _snapshot(root / "victim") == before  # every file of the finished run, bytes and times
    assert _leftovers(root) == []


def test_overwrite_replaces_a_finished_run_only_when_the_new_one_finished(root, capsys):
    old_config = (root / "victim" / runs.CONFIG).read_text()
    assert _distill(root, "--overwrite", "train.seed=2") == 0
    run = runs.read_run(root / "victim")
    assert run.complete and run.config["seed"] == 2 and (root / "victim" / runs.CONFIG).read_text() != old_config
    assert "run written to " + str(root / "victim") in capsys.readouterr().out
    assert _leftovers(root) == [] and [r.run_id for r in runs.list_runs(root)] == ["victim"]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_what_a_killed_process_left_is_cleaned_at_the_next_start(root, capsys):
    pid = _dead_pid()
    stale_tmp = root / "victim" / "checkpoints" / f".last.pt.{pid}.tmp"
    stale_tmp.write_bytes(b"")  # SIGKILL during a checkpoint write
    staged = root / f".victim{runs.STAGING}{pid}"  # SIGKILL during an --overwrite
    staged.mkdir()
    (staged / runs.CONFIG).write_text("{}")
    before = _snapshot(root / "victim")
    code = main(["distill", "--runs-dir", str(root), "--name", "victim", *TINY])  # refused: it exists
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert not stale_tmp.exists() and not staged.exists()
    assert _snapshot(root / "victim") == {k: v for k, v in before.items() if k.name != stale_tmp.name}


def test_a_run_moved_aside_in_the_instant_of_its_replacement_is_put_back(tmp_path):
    aside = tmp_path / f".victim{runs.ASIDE}{_dead_pid()}"
    aside.mkdir()
    (aside / runs.CONFIG).write_text("{}")
    runs.recover(tmp_path, "victim")
    assert (tmp_path / "victim" / runs.CONFIG).is_file() and not aside.exists()


def test_a_failed_write_leaves_no_tmp_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full)
    with pytest.raises(runs.LabError, match="the disk is full"):
        runs.atomic_write_bytes(tmp_path / "big.bin", b"x" * 1_000_000)
    assert list(tmp_path.iterdir()) == []

"""The run directory: the contract between trainers, sweeps, notebooks and the dashboard.

``runs/<run_id>/``
    ``config.json``       fully resolved config, seed, package versions, git revision, machine
    ``metrics.jsonl``     one JSON object per logged step (each loss term, lr, images/s)
    ``summary.json``      final metrics, wall time, mean step time, which checkpoint they come from
    ``embeddings.npz``    teacher and student embeddings of the fixed evaluation set, labels, factors
    ``snapshots.npz``     the student's embeddings of a few hundred items at each ``train.eval_every`` step
    ``checkpoints/last.pt``  model, optimiser, scheduler, loss modules, step, RNG states, config

Every file is written atomically (temporary file, then rename; a failed write removes its
temporary file, and a full disk or a permission problem is one sentence). A run id is one
folder name from a safe alphabet (:func:`check_run_name`), so a run stays in its runs folder.
``--overwrite`` of a finished run builds the new run beside it (``.<run_id>.new-<pid>``) and
swaps it in when it finishes; what a killed process left is tidied when the run next starts
(:func:`recover`). :func:`read_run` validates a directory and reports what is wrong with it
instead of raising, so a dashboard can list broken runs beside good ones.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import glob
import io
import json
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lab.errors import LabError

CONFIG, METRICS, SUMMARY, EMBEDDINGS = "config.json", "metrics.jsonl", "summary.json", "embeddings.npz"
SNAPSHOTS = "snapshots.npz"  # the student's embeddings at each evaluation point (lab.eval.probe)
CHECKPOINT = Path("checkpoints") / "last.pt"
REQUIRED_CONFIG_KEYS = ("kind", "seed", "config")
REQUIRED_SUMMARY_KEYS = ("wall_time_s", "checkpoint")
REQUIRED_EMBEDDING_KEYS = ("student_image", "student_text", "labels")


# A run name is one path component from this alphabet; "." and "_" starts are the lab's own folders.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
STAGING, ASIDE = ".new-", ".old-"  # ".<run>.new-<pid>": an --overwrite being built; ".<run>.old-<pid>": one replaced


def check_run_name(name: str) -> str:
    """A run name is one folder name from a safe alphabet, so a run stays inside its runs folder."""
    if not RUN_NAME.fullmatch(name or ""):
        raise LabError(f"Run name {name!r} is not allowed; use 1-128 letters, digits and . _ + - starting with a "
                       f"letter or digit (one folder name, no '/' or '..').")
    return name


def check_runs_dir(root: str | Path, what: str = "runs folder") -> Path:
    """A folder the lab writes to, created if missing; a file in its place or a folder one cannot write is one
    sentence."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise LabError(f"{root} is a file, not a folder; move it away or pass --runs-dir another folder (one that "
                       f"does not exist yet is created).")
    with disk_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise LabError(f"Cannot write to the {what} {root} (permission denied); pass a folder you can write "
                       f"or fix its permissions.")
    return root


@contextlib.contextmanager
def disk_errors(path: Path):
    """A full disk, a read-only file system or a permission problem while writing ``path`` is one sentence."""
    try:
        yield
    except OSError as err:
        if isinstance(err, LabError):
            raise
        hint = {errno.ENOSPC: "the disk is full; free some space (or point --runs-dir elsewhere) and run it again",
                errno.EDQUOT: "the disk quota is exceeded; free some space and run it again",
                errno.EACCES: "permission denied; fix the folder's permissions or write somewhere else",
                errno.EPERM: "permission denied; fix the folder's permissions or write somewhere else",
                errno.EROFS: "the file system is read-only; write somewhere else"}.get(err.errno)
        if hint is None:
            raise
        raise LabError(f"Cannot write {path}: {hint}.") from err


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(name: str, marker: str) -> int | None:
    tail = name.rsplit(marker, 1)[-1]
    return int(tail) if tail.isdigit() else None


def remove_stale_tmp_files(folder: Path) -> list[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files that processes no longer alive left in ``folder``."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else ():
        pid = _pid_of(tmp.name[:-len(".tmp")], ".")
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def atomic_torch_save(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def provenance() -> dict:
    """Package versions, git revision and machine, recorded in every run's config."""
    import open_clip

    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = None, None
    return {
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "open_clip": open_clip.__version__, "numpy": np.__version__},
        "git": {"revision": rev, "dirty": dirty},
        "machine": machine_description(),
    }


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


# --------------------------------------------------------------------------- one writer per run

LOCK_SUFFIX = ".lock"  # "<runs>/.<run>.lock": held (flock) by the one process writing the run
_LOCKS: dict[Path, int] = {}  # lock path -> the open descriptor that holds it, for this process


def lock_path(root: str | Path, run_id: str) -> Path:
    return Path(root) / f".{run_id}{LOCK_SUFFIX}"


def lock_run(root: str | Path, run_id: str) -> Path:
    """Make this process the run's one writer, or refuse in one sentence naming the process that is.

    The lock is an advisory ``flock`` on ``<runs>/.<run>.lock``, which holds the owner's pid and host:
    the kernel releases it when the owner exits however it dies, so a lock file left by a dead process
    is taken over without a race (two starters cannot both hold it). Beside the run folder, not in it,
    so an ``--overwrite``'s swap of the folder keeps it.
    """
    path = lock_path(check_runs_dir(root), check_run_name(run_id))
    if path in _LOCKS:
        return path
    with disk_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 256).decode(errors="replace").split()
        os.close(fd)
        pid, host = (owner + ["?", "?"])[:2]
        raise LabError(f"Run {Path(root) / run_id} is being written by process {pid} on {host} (lock file "
                       f"{path.name}); wait for it to finish or stop it, or pick another --name.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {platform.node() or 'localhost'}\n".encode())
    _LOCKS[path] = fd
    return path


def unlock_runs(only: Path | None = None) -> None:
    """Release this process's run locks, or only the lock file ``only`` (the file stays: unlinking it would let
    two processes lock two different files)."""
    for path, fd in list(_LOCKS.items()):
        if only is None or path == only:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            del _LOCKS[path]


@contextlib.contextmanager
def claimed(root: str | Path, run_id: str, overwrite: bool = False, resume: bool = False, main: bool = True):
    """:func:`claim_run` (on the main process only) for the duration of a trainer; the lock is released after."""
    if not main:
        yield Path(root) / run_id
        return
    path = claim_run(root, run_id, overwrite, resume)
    try:
        yield path
    finally:
        unlock_runs(lock_path(root, run_id))


def claim_run(root: str | Path, run_id: str, overwrite: bool = False, resume: bool = False) -> Path:
    """Everything about the run's folder that can refuse it, checked before any model is loaded: the lock,
    an existing run without ``--overwrite``, ``--resume`` of a run that is missing or finished. Returns
    the run's path."""
    if resume and overwrite:
        raise LabError("--resume continues a run and --overwrite replaces it; pass only one of them.")
    lock_run(root, run_id)
    path = Path(root) / run_id
    recover(Path(root), run_id)
    if resume:
        if not (path / CONFIG).is_file():
            raise LabError(f"Run {path} does not exist, so there is nothing to resume; drop --resume to start it.")
        if (path / SUMMARY).is_file():
            raise LabError(f"Run {path} already finished, so there is nothing to resume; pick another --name "
                           f"to train again.")
        problems: list[str] = []
        if not (path / CHECKPOINT).is_file() and not isinstance(_read_json(path / CONFIG, problems), dict):
            raise LabError(f"Run {path}'s {CONFIG} is damaged (not a readable JSON object) and the run has no "
                           f"checkpoint to "
                           f"resume from; start it again with --overwrite instead of --resume.")
    elif (path / CONFIG).exists() and not overwrite:
        raise LabError(f"Run {path} already exists; pick another name with --name, or pass --overwrite to "
                       f"replace it.")
    return path


class RunWriter:
    """Creates a run directory and writes its files atomically."""

    def __init__(self, root: str | Path, run_id: str, kind: str, config: dict, seed: int,
                 overwrite: bool = False, resume: bool = False):
        self.run_id, self.root = check_run_name(run_id), check_runs_dir(root)
        self.final = self.path = self.root / run_id
        lock_run(self.root, run_id)
        recover(self.root, run_id)
        if (self.path / CONFIG).exists() and not (overwrite or resume):
            raise LabError(f"Run {self.path} already exists; pick another name with --name, "
                           f"or pass --overwrite to replace it.")
        self.staged = overwrite and (self.final / SUMMARY).exists()
        if self.staged:  # a finished run stays whole until its replacement has finished (finish() swaps them)
            self.path = self.root / f".{run_id}{STAGING}{os.getpid()}"
            shutil.rmtree(self.path, ignore_errors=True)
            _STAGED.add(self)
        elif overwrite and self.path.exists():  # an unfinished run holds no result: cleared, so no mix is left
            with disk_errors(self.path):
                shutil.rmtree(self.path)
        with disk_errors(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        # a resumed run's config.json is rewritten too: it says what the run really trains (the checkpoint's
        # settings, which the resumed config has matched), not what a hand edit left there
        atomic_write_json(self.path / CONFIG, {"kind": kind, "run_id": run_id, "seed": seed, "config": config,
                                               **provenance()})

    def log(self, record: dict) -> None:
        """Append one metrics record (one line, flushed)."""
        with disk_errors(self.path / METRICS), open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop records after ``last_step`` and torn lines (used when resuming from a checkpoint).

        Records without a step (a prompt run's stage 1) stay when there is a checkpoint to
        resume from and go when the run restarts from scratch (``last_step`` 0).
        """
        path = self.path / METRICS
        if path.exists():
            lines = path.read_text().splitlines() if last_step else []
            keep = [line for line in lines if _step_of(line) <= last_step]
            atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())

    def save_checkpoint(self, state: dict) -> Path:
        atomic_torch_save(self.path / CHECKPOINT, state)
        return self.path / CHECKPOINT

    def save_embeddings(self, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.path / EMBEDDINGS, buffer.getvalue())

    def finish(self, summary: dict) -> None:
        """Write the summary: the run is finished. A staged --overwrite now replaces the old run."""
        atomic_write_json(self.path / SUMMARY, summary)
        if self.staged:
            aside = self.root / f".{self.run_id}{ASIDE}{os.getpid()}"
            if self.final.exists():  # (someone may have deleted the old run meanwhile)
                os.replace(self.final, aside)
            os.replace(self.path, self.final)
            shutil.rmtree(aside, ignore_errors=True)
            _STAGED.discard(self)
            self.path, self.staged = self.final, False
        unlock_runs(lock_path(self.root, self.run_id))

    def discard(self) -> None:
        """Drop an unfinished staged --overwrite (the old run it was to replace stays as it was)."""
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)
            _STAGED.discard(self)
            self.staged = False


_STAGED: set[RunWriter] = set()


def discard_unfinished() -> None:
    """Remove this process's unfinished staged overwrites (the CLI calls it on every exit, atexit too)."""
    for writer in list(_STAGED):
        writer.discard()
    unlock_runs()


atexit.register(discard_unfinished)


def recover(root: Path, run_id: str) -> None:
    """Tidy what killed processes left of run ``run_id``: temporary files, staged overwrites, and a run
    moved aside in the instant of its replacement (put back if the replacement is not in place)."""
    final = root / run_id
    for leftover in sorted(root.glob(f".{glob.escape(run_id)}.*-*")):
        for marker in (STAGING, ASIDE):
            pid = _pid_of(leftover.name, marker) if leftover.name.startswith(f".{run_id}{marker}") else None
            if pid is None or pid == os.getpid() or pid_alive(pid):
                continue
            if marker == ASIDE and not final.exists():
                os.replace(leftover, final)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
    for folder in (final, final / CHECKPOINT.parent):
        remove_stale_tmp_files(folder)


class SilentWriter(RunWriter):
    """The writer of every process but rank 0 under torchrun: it knows the run's path and writes nothing."""

    def __init__(self, root: str | Path, run_id: str):
        self.path, self.run_id, self.started = Path(root) / run_id, run_id, time.time()

    def log(self, record: dict) -> None:
        pass

    def truncate_metrics(self, last_step: int) -> None:
        pass

    def save_checkpoint(self, state: dict) -> Path:
        return self.path / CHECKPOINT

    def save_embeddings(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", -1)
    except json.JSONDecodeError:
        return float("inf")


# --------------------------------------------------------------------------- reading


@dataclass
class Run:
    """A run directory as read back: its files, and what is wrong with it (if anything)."""

    path: Path
    config: dict = field(default_factory=dict)
    summary: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return self.config.get("kind", "?")

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.ok and self.summary is not None

    def metrics(self) -> list[dict]:
        """The logged records; a torn last line (a run killed mid-write) is skipped."""
        path = self.path / METRICS
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def embeddings(self) -> dict[str, np.ndarray]:
        path = self.path / EMBEDDINGS
        if not path.exists():
            raise LabError(f"Run {self.run_id} has no {EMBEDDINGS}; it did not finish its evaluation.")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError) as err:
            raise LabError(f"Run {self.run_id}'s {EMBEDDINGS} cannot be read ({str(err).splitlines()[0][:80].rstrip('.')}); "
                           f"evaluate the run again or remove the file.") from None


def _read_json(path: Path, problems: list[str]):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"{path.name} is missing")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problems.append(f"{path.name} is not valid JSON ({err})")
    return None


def read_run(path: str | Path) -> Run:
    """Read and validate one run directory; problems are listed on the returned :class:`Run`."""
    path = Path(path)
    run = Run(path)
    if not path.is_dir():
        run.problems.append("not a directory")
        return run
    config = _read_json(path / CONFIG, run.problems)
    if isinstance(config, dict):
        run.config = config
        missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
        if missing:
            run.problems.append(f"{CONFIG} lacks {', '.join(missing)}")
    elif config is not None:
        run.problems.append(f"{CONFIG} is not a JSON object")
    if (path / SUMMARY).exists():
        summary = _read_json(path / SUMMARY, run.problems)
        if isinstance(summary, dict):
            missing = [k for k in REQUIRED_SUMMARY_KEYS if k not in summary]
            if missing:
                run.problems.append(f"{SUMMARY} lacks {', '.join(missing)}")
            run.summary = summary
        elif summary is not None:
            run.problems.append(f"{SUMMARY} is not a JSON object")
    if (path / EMBEDDINGS).exists():
        try:
            with np.load(path / EMBEDDINGS, allow_pickle=False) as data:
                missing = [k for k in REQUIRED_EMBEDDING_KEYS if k not in data.files]
            if missing:
                run.problems.append(f"{EMBEDDINGS} lacks {', '.join(missing)}")
            pickled = pickled_arrays(path / EMBEDDINGS)
            if pickled:
                run.problems.append(f"{EMBEDDINGS} holds pickled Python objects ({', '.join(pickled)}), which the "
                                    f"lab does not load")
        except Exception as err:  # zipfile/ValueError/OSError for damaged files
            run.problems.append(f"{EMBEDDINGS} cannot be read ({type(err).__name__})")
    return run


def pickled_arrays(npz: Path) -> list[str]:
    """The arrays of an ``.npz`` stored as pickled objects, found from their headers alone (nothing is unpickled
    or loaded whole)."""
    import zipfile

    found = []
    with zipfile.ZipFile(npz) as archive:
        for name in archive.namelist():
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                if read_header(f)[2].hasobject:
                    found.append(name.removesuffix(".npy"))
    return found


RUN_FILES = (CONFIG, METRICS, SUMMARY, EMBEDDINGS, str(CHECKPOINT.parent))


def list_runs(root: str | Path) -> list[Run]:
    """Every run directory under ``root`` (sorted by name), broken ones included with their problems.

    A run directory is a folder holding at least one of the run's files; other folders are not runs
    and are not listed. Names starting with "." or "_" are the lab's own folders (caches, tables,
    staged overwrites), not runs.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return [read_run(p) for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith((".", "_")) and stays_inside(p, root)
            and any((p / f).exists() for f in RUN_FILES)]


def stays_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, symbolic links resolved, is ``root`` or below it: a run folder linked in from elsewhere
    is neither listed nor read nor written to (a dashboard's projection cache would land outside the root)."""
    resolved, root = Path(path).resolve(), Path(root).resolve()
    return resolved == root or root in resolved.parents


def inside_root(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved, if it is ``root`` or a folder below it (symbolic links followed); else one sentence."""
    resolved, root = Path(path).expanduser().resolve(), Path(root).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise LabError(f"{path} is outside the runs folder {root}; pick {root} or a folder inside it (start the "
                       f"dashboard with LAB_RUNS_DIR=/other/runs to serve another one).")
    return resolved

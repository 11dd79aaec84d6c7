"""A pre-trained runs pack for a classroom: ``runs/lessons/<preset>`` as one ``.tar.gz``.

Made once on the instructor's machine, unpacked on each laptop; ``LAB_RUNS_DIR`` then points the
lessons at it, so a finished run is reused instead of trained again::

    python -m lab lessons pack --preset cpu lessons-cpu.tar.gz
    python -m lab lessons unpack lessons-cpu.tar.gz ~/lab-runs       # then: export LAB_RUNS_DIR=~/lab-runs
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path

from lab import runs
from lab.errors import LabError
from lab.experiments.grids import NO_KD
from lab.lesson import DEFAULT_RUNS_DIR

# A finished run is reused from its summary, metrics and embeddings, so checkpoints (40 MB each) stay out —
# except the no-KD student's, the frozen student of every new prompt-distillation run (lesson 05's experiment).
CHECKPOINTS = "checkpoints"


def pack(preset: str, archive: Path, runs_dir: Path = DEFAULT_RUNS_DIR, with_checkpoints: bool = False) -> list[str]:
    """Pack the finished runs of ``runs_dir/preset`` into ``archive``; returns their names."""
    source = Path(runs_dir) / preset
    finished = sorted(p for p in source.glob("*") if p.is_dir() and runs.read_run(p).complete) if source.is_dir() else []
    if not finished:
        raise LabError(f"No finished lesson runs in {source}; run the lessons first "
                       f"(python notebooks/run_presets.py --preset {preset}).")
    with tarfile.open(archive, "w:gz") as tar:
        for run in finished:
            for path in sorted(run.rglob("*")):
                keep = with_checkpoints or NO_KD.slug in run.name or CHECKPOINTS not in path.relative_to(run).parts
                if path.is_file() and keep:
                    tar.add(path, arcname=str(Path(preset) / path.relative_to(source)))
    return [run.name for run in finished]


def unpack(archive: Path, runs_dir: Path) -> list[str]:
    """Unpack a runs pack into ``runs_dir`` (use it with ``LAB_RUNS_DIR=runs_dir``); returns the preset folders."""
    if not Path(archive).is_file():
        raise LabError(f"No runs pack at {archive}; make one with `python -m lab lessons pack`.")
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = tar.getnames()  # every header read before anything is written: most damage shows here
            tar.extractall(runs_dir, filter="data")
    except tarfile.FilterError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise LabError(f"The runs pack {archive} is damaged ({type(err).__name__}: {str(err)[:60].rstrip('.')}); "
                       f"copy it again or make a new one with `python -m lab lessons pack`.") from None
    return sorted({Path(name).parts[0] for name in names})

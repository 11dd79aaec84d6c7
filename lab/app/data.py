"""What the dashboard pages read: run directories through lab.runs, cached by path and modification time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from lab import runs, viz
from lab.tables import TABLES_DIR


def runs_dir() -> str:
    return st.session_state.get("runs_dir", "runs")


def _stamp(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(show_spinner=False, max_entries=64)
def _embeddings(path: str, stamp: float) -> dict:
    return runs.read_run(path).embeddings()


def embeddings(run: runs.Run) -> dict:
    return _embeddings(str(run.path), _stamp(run.path / runs.EMBEDDINGS))


@st.cache_data(show_spinner=False, max_entries=16)
def _thumbnails(path: str, stamp: float) -> list[str] | None:
    return viz.thumbnails(runs.read_run(path).embeddings())


def thumbnails(run: runs.Run) -> list[str] | None:
    """The pictures of a run's embedded test items (for the maps' tooltips), rendered once per run."""
    return _thumbnails(str(run.path), _stamp(run.path / runs.EMBEDDINGS))


@st.cache_data(show_spinner=False, max_entries=256)
def _metrics(path: str, stamp: float) -> list[dict]:
    return runs.read_run(path).metrics()


def metrics(run: runs.Run) -> list[dict]:
    return _metrics(str(run.path), _stamp(run.path / runs.METRICS))


def has_teacher_embeddings(run: runs.Run) -> bool:
    """Whether the run stored embeddings including the teacher's (prompt-distillation runs score the
    teacher but store no embeddings)."""
    return run.summary.get("teacher/hm") is not None and (run.path / runs.EMBEDDINGS).is_file()


def finished_runs(with_teacher: bool = False) -> list[runs.Run]:
    """Complete runs; with ``with_teacher`` only those with the teacher's embeddings beside the student's."""
    found = [r for r in runs.list_runs(runs_dir()) if r.complete]
    if with_teacher:
        found = [r for r in found if has_teacher_embeddings(r)]
    return found


def no_runs_message(what: str = "runs") -> None:
    st.info(f"No {what} in `{runs_dir()}` yet. Make the default ones with `make demo` "
            f"(or `python -m lab demo --runs-dir {runs_dir()}`), then reload this page.")


def sweep_tables() -> dict[str, pd.DataFrame]:
    """Every sweep table (``runs/_tables/*.csv``) by name."""
    folder = Path(runs_dir()) / TABLES_DIR
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}


def keep_known(key: str, options: list, default=None) -> None:
    """Drop a remembered widget value that is no longer among ``options`` (another runs directory, a
    link from another page), falling back to ``default``."""
    value = st.session_state.get(key)
    if isinstance(value, list):
        st.session_state[key] = [v for v in value if v in options]
    elif value is not None and value not in options:
        del st.session_state[key]
    if key not in st.session_state and default is not None:
        st.session_state[key] = default


def pick_run(found: list[runs.Run], label: str = "Run", key: str = "run") -> runs.Run:
    ids = [r.run_id for r in found]
    keep_known(key, ids)
    chosen = st.sidebar.selectbox(label, ids, key=key)
    return found[ids.index(chosen)]


def pick_run_with_teacher(key: str) -> tuple[runs.Run, dict] | None:
    """The sidebar's choice among finished runs that stored teacher embeddings, with its embeddings."""
    found = finished_runs(with_teacher=True)
    if not found:
        no_runs_message("finished runs with teacher embeddings")
        return None
    run = pick_run(found, key=key)
    return run, embeddings(run)

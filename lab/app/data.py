"""What the dashboard pages read: run directories through lab.runs, cached by path and modification time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from lab import runs, viz
from lab.eval.probe import read_snapshots
from lab.errors import LabError
from lab.experiments.tables import TABLES_DIR


def runs_root() -> str:
    """The runs folder the dashboard started on (LAB_RUNS_DIR, else runs/): the sidebar box may point at it
    or a folder below it, nothing else."""
    return st.session_state.setdefault("runs_root", st.session_state.get("runs_dir") or
                                       os.environ.get("LAB_RUNS_DIR", "runs"))


def runs_dir() -> str:
    asked = st.session_state.get("runs_dir") or runs_root()
    try:
        runs.inside_root(asked, runs_root())
    except LabError as err:
        st.error(str(err))
        return runs_root()
    return asked


def check_runs_dir_box() -> None:
    """The sidebar box's ``on_change``: a folder outside the runs root is refused, and the box goes back;
    an emptied box means the runs root itself."""
    if not str(st.session_state.get("runs_dir") or "").strip():
        st.session_state["runs_dir"] = st.session_state["runs_dir_accepted"] = runs_root()
        return
    try:
        runs.inside_root(st.session_state["runs_dir"], runs_root())
        st.session_state["runs_dir_accepted"] = st.session_state["runs_dir"]
    except LabError as err:
        st.session_state["runs_dir_refused"] = str(err)
        st.session_state["runs_dir"] = st.session_state.get("runs_dir_accepted", runs_root())


def runs_dir_missing() -> bool:
    """Say so (and return True) when the runs directory does not exist, e.g. a mistyped path."""
    if Path(runs_dir()).is_dir():
        return False
    st.error(f"The runs directory `{runs_dir()}` does not exist; correct the path in the sidebar, or make the "
             f"default runs with `make demo`.")
    return True


def incomplete_reason(run: runs.Run) -> str | None:
    """Why a run's curves may stop early: no ``summary.json`` yet (training or killed), or a cut last line."""
    if run.summary is None:
        return "no summary.json (still training, or stopped)"
    path = run.path / runs.METRICS
    if path.exists():
        text = path.read_text()
        last = text.rstrip("\n").rsplit("\n", 1)[-1]
        try:
            if last:
                json.loads(last)
        except json.JSONDecodeError:
            return "metrics.jsonl ends in a cut line"
    return None


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


@st.cache_data(show_spinner=False, max_entries=16)
def _snapshots(path: str, stamp: float) -> tuple[dict | None, list[str] | None]:
    snaps = read_snapshots(path)
    return snaps, (viz.thumbnails(snaps) if snaps is not None else None)


def snapshots(run: runs.Run) -> tuple[dict | None, list[str] | None]:
    """The student's stored frames over training (:mod:`lab.eval.probe`) and their items' pictures, or None."""
    return _snapshots(str(run.path), _stamp(run.path / runs.SNAPSHOTS))


def snapshot_items(run: runs.Run) -> int:
    """How many items a run's snapshots hold: ``eval.snapshot_items`` plain items of the probe's subset
    (``eval.probe_per_style``, itself at most ``eval.per_style``)."""
    cfg = run.config.get("config", {}).get("eval", {})
    return min(cfg.get("snapshot_items", 256), cfg.get("probe_per_style", 256), cfg.get("per_style", 256))


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
    if not Path(runs_dir()).is_dir():
        return []
    """Complete runs; with ``with_teacher`` only those with the teacher's embeddings beside the student's."""
    found = [r for r in runs.list_runs(runs_dir()) if r.complete]
    if with_teacher:
        found = [r for r in found if has_teacher_embeddings(r)]
    return found


def no_runs_message(what: str = "runs") -> None:
    if runs_dir_missing():
        return
    st.info(f"No {what} in `{runs_dir()}` yet. Make the default ones with `make demo` "
            f"(or `python -m lab demo --runs-dir {runs_dir()}`), then reload this page.")


def read_table(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """One sweep table, or None and the sentence saying what is wrong with the file."""
    try:
        text = path.read_text()
        if not text.strip():
            return None, f"`{path.name}` is empty"
        if not text.endswith("\n"):
            return None, f"`{path.name}` looks half-written (it does not end with a complete line)"
        table = pd.read_csv(path, dtype={"seeds": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        return None, f"`{path.name}` cannot be read ({type(err).__name__})"
    if "row" not in table or not any(c.endswith("_mean") for c in table):
        return None, f"`{path.name}` is not a sweep table (no `row` and `*_mean` columns)"
    return table, None


def sweep_tables() -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Every readable sweep table (``runs/_tables/*.csv``) by name, and a sentence per file that is not."""
    folder = Path(runs_dir()) / TABLES_DIR
    tables, problems = {}, []
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        table, problem = read_table(path)
        if table is not None:
            tables[path.stem] = table
        else:
            problems.append(f"{problem}; rerun the sweep that writes it (`python -m lab sweep --grid ...`), or "
                            f"delete it. The other tables are shown.")
    return tables, problems


def tune_records() -> tuple[dict[str, dict], list[str]]:
    """Every readable ``python -m lab tune`` record (``runs/_tables/*tune-*.json``) by name, and a sentence
    per file that is not (one :func:`tune_table` cannot read)."""
    folder = Path(runs_dir()) / TABLES_DIR
    records, problems = {}, []
    for path in sorted(folder.glob("*tune-*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            tune_table(record)
            records[path.stem] = record
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            problems.append(f"`{path.name}` is not a tuning record ({type(err).__name__}); rerun "
                            f"`python -m lab tune` (its finished runs are kept), or delete it.")
    return records, problems


def tune_table(record: dict) -> pd.DataFrame:
    """A tuning record as a table, a row per tuned row."""
    return pd.DataFrame([_tuned_row(r) for r in record["rows"]])


def _tuned_row(record: dict) -> dict:
    """One tuning record as a table row; ``metric`` is the score that chose and is reported (HM for CLIP rows,
    the protocol's metric for a prompt row)."""
    from lab.experiments.tables import plus_minus as pair
    from lab.experiments.tune import weights_spec as weights

    searched = "; ".join(f"{s['term']}: " + " · ".join(
        f"{c['weight']:g} ({'—' if c['val_hm'] is None else format(c['val_hm'], '.1f')})" for c in s["candidates"])
        for s in record["searched"])
    return {"row": record["row"], "metric": record.get("metric", "hm"), "chosen weights": weights(record["weights"]),
            "default weights": weights(record["default_weights"]),
            "validation (chose)": None if record["val_hm"] is None else round(record["val_hm"], 1),
            "test, chosen": pair(record["test_hm_tuned"]), "test, default": pair(record["test_hm_default"]),
            "gap closed %, chosen": pair(record["gap_closed_tuned"]),
            "gap closed %, default": pair(record["gap_closed_default"]),
            "searched (validation)": searched}  # last: the widest column


def keep_known(key: str, options: list, default=None) -> None:
    """Drop a remembered widget value that is no longer among ``options`` (another runs directory, a
    link from another page), falling back to ``default``."""
    from lab.app import urlstate

    value = st.session_state.get(key)
    if isinstance(value, list):
        st.session_state[key] = [v for v in value if v in options]
        missing = [v for v in value if v not in options]
        if missing:
            urlstate.unknown(key, ", ".join(map(str, missing)))
    elif value is not None and value not in options:
        del st.session_state[key]
        urlstate.unknown(key, value, default)
    if key not in st.session_state and default is not None:
        st.session_state[key] = default


def featured(ids: list[str], n: int = 1, prefer: tuple[str, ...] | None = None) -> list[str]:
    """The ``n`` runs a page shows first: those whose grid row is in ``prefer`` (default: the CLIP-KD recipe,
    then the no-KD student — the pair every page compares), in that order, then the others in order."""
    from lab.experiments.grids import CLIPKD, NO_KD

    prefer = prefer or (CLIPKD.slug, NO_KD.slug)

    def rank(run_id: str) -> int:
        slug = run_id.rsplit("-s", 1)[0]
        return next((i for i, s in enumerate(prefer) if slug.endswith(s)), len(prefer))

    return sorted(ids, key=rank)[:n]


def pick_run(found: list[runs.Run], label: str = "Run", key: str = "run") -> runs.Run:
    ids = [r.run_id for r in found]
    keep_known(key, ids, default=featured(ids)[0])
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

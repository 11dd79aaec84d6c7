"""``python -m lab tune --grid comkd``: a prompt grid's one free loss weight, chosen on the validation split.

Stage 2 of prompt distillation has no task term. PromptKD's loss is one term (the refinement λ·KL),
as are TinyCLIP's affinity mimicking and ComKD without IFAlign; a constant factor on the only term
of a loss leaves every AdamW update as it was (m/√v does not depend on the gradient's scale, up to
ε = 1e-6, when gradients are not clipped), so those rows have no weight to choose. ComKD-CLIP adds
IFAlign to the refinement (ComKD-CLIP §3.2):

    L = λ·L_refine + w·L_align,

and the ratio w/λ is its free weight. Per row with both terms, ``ifalign_weight`` (w) runs over
1 × :data:`lab.experiments.selection.FACTORS` (a best weight at an end: one step further that way, up to
``extend`` times, as for CLIP rows), λ at its default; the weight with the best **validation** score of
the row's own metric (HM under base2novel, top-1 under cross, target top-1 under domain), averaged over
the seeds, is kept. Each tuning run is also scored on the ShapesWorld validation split (``val/...`` keys),
and the test set chooses nothing: the table gives its numbers at the chosen weight and at w = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lab import runs
from lab.errors import LabError
from lab.experiments.grids import NO_KD, SCALES, PromptRow, run_id, scale_prefix
from lab.experiments.parallel import run_jobs
from lab.experiments.tables import mean_std, plus_minus
from lab.experiments.selection import EXTEND, FACTORS, Candidate, pick, scored, search_with_extension, write_record

TERM = "ifalign"  # the weight searched: ``ifalign_weight``, IFAlign beside the refinement


def prompt_config(row: PromptRow, scale: str, overrides: Sequence[str] = ()):
    from lab.train.prompt_distill import default_config

    return default_config([*row.settings, *SCALES[scale][1], *overrides])


def has_free_weight(row: PromptRow) -> bool:
    """Whether the row's stage-2 loss has two terms (ComKD with IFAlign), so that their ratio matters."""
    cfg = prompt_config(row, "full")
    return cfg.method == "comkd" and cfg.use_ifalign


def tune_run_id(row: PromptRow, weight: float, seed: int, scale: str) -> str:
    return f"{scale_prefix(scale)}tune-{row.slug}-{TERM}{weight:g}-s{seed}"


def train_prompt_tuning_run(job: tuple) -> str:
    """One tuning run (a picklable job for :func:`run_jobs`): ``(config, run id, runs dir)``."""
    from lab.train.prompt_distill import prompt_distill

    cfg, rid, runs_dir = job
    prompt_distill(cfg, rid, Path(runs_dir), overwrite=(Path(runs_dir) / rid).exists())
    return rid


def tune_prompt_grid(grid_rows: Sequence[PromptRow], grid: str, seeds: int, runs_dir: Path, scale: str,
                     factors: Sequence[float] = FACTORS, rows: Sequence[PromptRow] = (), jobs: int = 1,
                     extend: int = EXTEND, train: Callable[[tuple], str] = train_prompt_tuning_run,
                     progress: Callable[[str], None] = print) -> Path:
    """Choose ``ifalign_weight`` on the validation split for every row of ``rows`` (default: the grid's) that
    has it; write the tuned-vs-default table, which keeps the grid's other rows whose tuning runs all exist
    (read, not retrained); returns its .md."""
    from lab.experiments.sweep import sweep_rows

    asked = list(rows) or list(grid_rows)
    tunable = [r for r in asked if has_free_weight(r)]
    if not tunable:
        raise LabError(f"None of the rows asked for has a weight to choose: only ComKD-CLIP rows with IFAlign have "
                       f"two stage-2 terms. The grid's rows that do: "
                       f"{'; '.join(r.label for r in grid_rows if has_free_weight(r))}.")
    sweep_rows([NO_KD], seeds, runs_dir, scale, jobs=jobs)  # the students the prompt runs start from
    record, kept = [], []
    for row in [r for r in grid_rows if has_free_weight(r)]:
        metric, active = _metric(row), row in tunable  # a row not asked for is read from its runs, if all exist

        def search(fs: Sequence[float]) -> list[Candidate] | None:
            ids = [[tune_run_id(row, f, s, scale) for s in range(seeds)] for f in fs]
            todo = [(_tuning_config(row, f, s, runs_dir, scale), i, str(runs_dir))
                    for f, row_ids in zip(fs, ids) for s, i in enumerate(row_ids)
                    if not runs.read_run(runs_dir / i).complete]
            if active:
                progress(f"tune {row.label}: {TERM}_weight over {', '.join(f'{f:g}' for f in fs)} "
                         f"({len(fs) * seeds} runs; chosen by val/{metric})")
                run_jobs(train, todo, jobs, desc=f"tune {row.label}")
            elif todo:
                return None
            return [scored(TERM, {TERM: f}, runs_dir, i, f"val/{metric}") for f, i in zip(fs, ids)]

        candidates = search_with_extension(search, list(factors), 1.0, extend)
        if candidates is None:
            continue
        best = pick(candidates, 1.0)
        if not active:
            kept.append(row.label)
        elif not all(runs.read_run(runs_dir / i).complete for i in _default_ids(row, seeds, runs_dir, scale)):
            sweep_rows([row], seeds, runs_dir, scale, jobs=jobs)  # weight 1 was not searched: the sweep's runs
        chosen_ids = [tune_run_id(row, best.weights[TERM], s, scale) for s in range(seeds)]
        record.append({"row": row.label, "metric": metric, "weights": best.weights, "default_weights": {TERM: 1.0},
                       "val_hm": best.val, "test_hm_tuned": _test(runs_dir, chosen_ids, metric),
                       "test_hm_default": _test(runs_dir, _default_ids(row, seeds, runs_dir, scale), metric),
                       "gap_closed_tuned": mean_std([]), "gap_closed_default": mean_std([]),
                       "searched": [{"term": TERM, "chosen": best.weights[TERM],
                                     "candidates": [c.record() for c in candidates]}]})
    if kept:
        progress(f"kept in the table, tuned earlier (all their runs found, none retrained): {'; '.join(kept)}")
    untuned = [r.label for r in asked if not has_free_weight(r)]
    return _write(grid, seeds, runs_dir, scale, record, untuned)


def _metric(row: PromptRow) -> str:
    from lab.train.prompt_distill import protocol_setup

    return protocol_setup(prompt_config(row, "full")).headline


def _tuning_config(row: PromptRow, weight: float, seed: int, runs_dir: Path, scale: str):
    student = runs_dir / run_id(NO_KD, seed, scale)
    cfg = prompt_config(row, scale, [f"{TERM}_weight={weight:g}", f"train.seed={seed}", f"student={student}"])
    cfg.eval.val_per_style = cfg.eval.per_style  # the validation split, as large as the test set
    return cfg


def _default_ids(row: PromptRow, seeds: int, runs_dir: Path, scale: str) -> list[str]:
    """Per seed, the sweep's run of ``row`` (weight 1) if it finished, else the tuning run at weight 1 — the
    same configuration (the tuning run also scores the validation split, after training)."""
    return [run_id(row, s, scale) if runs.read_run(runs_dir / run_id(row, s, scale)).complete
            else tune_run_id(row, 1.0, s, scale) for s in range(seeds)]


def _test(runs_dir: Path, ids: Sequence[str], metric: str) -> tuple[float, float]:
    found = [runs.read_run(runs_dir / i) for i in ids]
    return mean_std([r.summary.get(metric) for r in found if r.complete])


def _write(grid: str, seeds: int, runs_dir: Path, scale: str, record: list[dict], untuned: list[str]) -> Path:
    lines = [f"{TERM}_weight chosen on the validation split (the row's metric, mean over {seeds} seed(s)); test-set "
             f"numbers at the chosen weight and at the default 1.", "",
             "| row | metric | chosen (validation) | val | test, tuned | test, default | searched (validation) |",
             "|" + "---|" * 7]
    for rec in record:
        (search,) = rec["searched"]
        tried = " · ".join(f"{c['weight']:g} ({'—' if c['val_hm'] is None else format(c['val_hm'], '.1f')})"
                           for c in search["candidates"])
        lines.append(f"| {rec['row']} | {rec['metric']} | {TERM}_weight={search['chosen']:g} | {rec['val_hm']:.1f} | "
                     f"{plus_minus(rec['test_hm_tuned'])} | "
                     f"{plus_minus(rec['test_hm_default'])} | {tried} |")
    lines.append(f"\nIFAlign's weight searched over 1 × {{{', '.join(f'{f:g}' for f in FACTORS)}}} (a best weight at "
                 f"an end: one step further that way), the refinement at its default weight; the test set chose "
                 f"nothing.")
    if untuned:
        lines.append(f"Not tuned, having one stage-2 term (its weight only rescales the loss, which AdamW undoes): "
                     f"{'; '.join(untuned)}.")
    return write_record(runs_dir, grid, scale, {"seeds": seeds, "select_by": "val/<the row's metric>",
                                                "rows": record, "untuned": untuned}, lines)

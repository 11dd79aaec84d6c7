"""``python -m lab tune --grid clipkd``: every term's weight chosen on the validation split, the same way for all.

For each distillation row of a grid, in the grid's order, the row's *new* terms — those not in the
largest earlier row whose terms it contains (all of a single-term row; GD in "CLIP-KD +GD") — are
tuned one after another by coordinate search: the term's weight runs over its default × :data:`FACTORS`
(log-spaced; when the best is at an end, one step further that way, up to :data:`EXTEND` times), the
row's other terms at the weights chosen for them so far (their defaults before any was chosen), and
the weight with the best **validation** HM, averaged over the seeds, is kept (ties: the one nearer the
default). A grid holding the CLIP-KD recipe without its parts tunes the ``clipkd`` grid's CRD, FD, ICL
and FD+ICL rows first (:func:`recipe_parts`), so one recipe gets one choice. The test set is never read
for a choice: every tuning run is scored on the ShapesWorld validation split (``eval.val_per_style``,
disjoint from the test set) into ``val/...`` keys, and only those keys are compared.

The table written beside the default-weight one (``runs/_tables/<scale->tune-<grid>.md``) gives, per
row, the chosen weights, their validation HM, and the test-set HM and gap closed at the chosen weights
beside the default weights' (the sweep's runs, or the tuning runs at the default weights — the same
configuration — trained if neither exists). Every candidate's validation score is kept in
``…tune-<grid>.json``. For the ``clipkd`` grid the rank agreement
(Spearman ρ) between the lab's per-term gains over no KD and CLIP-KD Table 1's is printed at both
weightings — a report, never a target. A prompt grid (``comkd``) has one free weight per row, IFAlign's
beside the refinement's, chosen the same way by :mod:`lab.experiments.tune_prompts`; the search itself
(:data:`FACTORS`, the extension, ties) is :mod:`lab.experiments.selection`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from lab import runs
from lab.errors import LabError
from lab.experiments.grids import NO_KD, SCALES, PromptRow, Row, check_scale, grid_rows, paper_number, run_id, \
    scale_prefix
from lab.experiments.parallel import run_jobs
from lab.experiments.selection import EXTEND, FACTORS, SELECT_BY, Candidate, pick, scored, \
    search_with_extension, validation_score, write_record
from lab.experiments.tables import plus_minus, gap_closed, mean_std
from lab.losses.objective import TERMS, parse_terms


def default_weights(terms: Sequence[str], variant: str = "paper", teacher_dim: int | None = None) -> dict[str, float]:
    """Each term's default weight (:data:`lab.losses.objective.TERMS`) for the shipped teacher's width."""
    if teacher_dim is None:
        from lab.models.zoo import shipped_teacher

        teacher_dim = shipped_teacher().embed_dim
    return {t: TERMS[t].default_weight(variant, teacher_dim) for t in terms}


def weights_spec(weights: dict[str, float]) -> str:
    """``{"fd": 7.8125, "icl": 0.5}`` -> ``"fd=7.8125,icl=0.5"`` (the distill config's ``weights=``)."""
    return ",".join(f"{t}={w:g}" for t, w in weights.items())


def tune_run_id(row: Row, weights: dict[str, float], seed: int, scale: str) -> str:
    """One tuning run: the row, every term's weight, the seed (the same weights are one run, shared by rows)."""
    return f"{scale_prefix(scale)}tune-{row.slug}-{'-'.join(f'{t}{w:g}' for t, w in weights.items())}-s{seed}"


def new_terms(row: Row, earlier: Sequence[Row]) -> list[str]:
    """The row's terms not in the largest earlier row whose terms it contains (all, if none does)."""
    terms = parse_terms(row.loss)
    inside = [parse_terms(r.loss) for r in earlier if r.loss and set(parse_terms(r.loss)) < set(terms)]
    base = max(inside, key=len, default=[])
    return [t for t in terms if t not in base]


def _clip_settings(row: Row, weights: dict[str, float], seed: int, scale: str) -> list[str]:
    budget = SCALES[scale][0]
    per_style = next((s.split("=", 1)[1] for s in reversed(budget) if s.startswith("eval.per_style=")), "1280")
    return [f"loss={row.loss}", *row.settings, f"weights={weights_spec(weights)}", f"train.seed={seed}", *budget,
            f"eval.val_per_style={per_style}"]


def train_tuning_run(job: tuple[list[str], str, str]) -> str:
    """One tuning run (a picklable job for :func:`run_jobs`): ``(settings, run id, runs dir)``."""
    from lab.train.distill import default_config, distill

    settings, rid, runs_dir = job
    distill(default_config(settings), rid, Path(runs_dir), overwrite=(Path(runs_dir) / rid).exists())
    return rid


def tune(grid: str, seeds: int = 1, runs_dir: str | Path = "runs", scale: str = "full",
         factors: Sequence[float] = FACTORS, rows: Sequence[str] = (), jobs: int = 1, extend: int = EXTEND,
         train: Callable[[tuple], str] | None = None, progress: Callable[[str], None] = print) -> Path:
    """Choose every row's weights on the validation split; write the tuned-vs-default table; returns its .md.
    A prompt grid (``comkd``) is tuned by :func:`lab.experiments.tune_prompts.tune_prompt_grid`."""
    from lab.experiments.sweep import sweep_rows

    check_scale(scale)
    runs_dir = Path(runs_dir)
    all_rows = grid_rows(grid)
    if any(isinstance(r, PromptRow) for r in all_rows):
        from lab.experiments.tune_prompts import tune_prompt_grid

        extra = {} if train is None else {"train": train}
        return tune_prompt_grid(all_rows, grid, seeds, runs_dir, scale, factors, _select_rows(all_rows, rows) if rows
                                else (), jobs, extend, progress=progress, **extra)
    train = train or train_tuning_run
    grid_kd_rows = [r for r in all_rows if r.loss]
    chosen_rows = _select_rows(grid_kd_rows, rows)
    parts = recipe_parts(grid_kd_rows)
    if not rows:
        chosen_rows = [*parts, *chosen_rows]  # tuned with the grid, left out of its table
    kd_rows = [*parts, *grid_kd_rows]
    defaults = default_weights([t for r in kd_rows for t in parse_terms(r.loss)])
    tuned: dict[str, float] = {}  # term -> weight chosen so far (carried into later rows)
    record: dict[str, dict] = {}
    parts_searched: dict[str, list] = {}  # the recipe parts' searches, kept in the .json only
    for index, row in enumerate(kd_rows):
        active = row in chosen_rows  # other rows: their choice is read from earlier tuning runs, if all exist
        terms = parse_terms(row.loss)
        current = {t: tuned.get(t, defaults[t]) for t in terms}
        searched = []
        for term in new_terms(row, kd_rows[:index]):
            def search(fs: Sequence[float]) -> list[Candidate] | None:
                """The candidates ``current`` with ``term`` at default × each of ``fs`` (trained if the row is
                being tuned); None when the row is not and some of their runs are missing."""
                configs = [{**current, term: defaults[term] * f} for f in fs]
                ids = [[tune_run_id(row, w, s, scale) for s in range(seeds)] for w in configs]
                if active:
                    others = weights_spec({t: w for t, w in current.items() if t != term}) or "none"
                    progress(f"tune {row.label}: {term} over {', '.join(f'{w[term]:g}' for w in configs)} "
                             f"({len(configs) * seeds} runs; the others at {others})")
                    todo = [(_clip_settings(row, w, s, scale), i, str(runs_dir)) for w, row_ids in zip(configs, ids)
                            for s, i in zip(range(seeds), row_ids) if not runs.read_run(runs_dir / i).complete]
                    run_jobs(train, todo, jobs, desc=f"tune {term}")  # a finished run (an earlier row's) is reused
                elif not all(runs.read_run(runs_dir / i).complete for row_ids in ids for i in row_ids):
                    return None
                return [scored(term, w, runs_dir, i) for w, i in zip(configs, ids)]

            candidates = search_with_extension(search, list(factors), defaults[term], extend)
            if candidates is None:
                break  # not tuned earlier: the later rows use its terms' defaults
            best = pick(candidates, defaults[term])
            current = dict(best.weights)
            searched.append({"term": term, "chosen": best.weights[term],
                             "candidates": [c.record() for c in candidates]})
        else:
            tuned.update(current)
            if row in parts:
                if active:
                    parts_searched[row.label] = searched
            else:  # a row not asked for whose tuning runs all exist stays in the table: nothing tuned is dropped
                record[row.label] = {"row": row, "weights": current, "searched": searched,
                                     "run_ids": [tune_run_id(row, current, s, scale) for s in range(seeds)]}
    kept = [label for label, rec in record.items() if rec["row"] not in chosen_rows]
    if kept:
        progress(f"kept in the table, tuned earlier (all their runs found, none retrained): {'; '.join(kept)}")
    progress("default weights: the sweep's runs of the same rows, or the tuning runs at the default weights "
             "(the same configuration); trained if neither exists")
    missing = [r for r in chosen_rows if r not in parts and not all(
        runs.read_run(runs_dir / i).complete for i in default_run_ids(r, seeds, runs_dir, scale, defaults))]
    sweep_rows([NO_KD, *missing], seeds, runs_dir, scale, jobs=jobs)
    return write_tune_tables(grid, seeds, runs_dir, scale, record, defaults, parts_searched)


def recipe_parts(grid_rows: Sequence[Row]) -> list[Row]:
    """The ``clipkd`` grid's rows that a row of ``grid_rows`` is built from but ``grid_rows`` lack, in order.

    CLIP-KD's recipe is tuned in the ``clipkd`` grid through its CRD, FD, ICL and FD+ICL rows (ICL and
    then CRD added to the weights chosen before). A grid holding the recipe without those rows (``cliprd``,
    ``core``) tunes them first, so that one recipe gets one choice of weights, whichever grid tunes it.
    """
    from lab.experiments.grids import GRIDS

    grid_terms = [set(parse_terms(r.loss)) for r in grid_rows]
    return [r for r in GRIDS["clipkd"] if r.loss and not r.settings and r not in grid_rows
            and any(set(parse_terms(r.loss)) < terms for terms in grid_terms)]


def default_run_ids(row: Row, seeds: int, runs_dir: Path, scale: str, defaults: dict[str, float]) -> list[str]:
    """Per seed, the run of ``row`` at its default weights: the sweep's, else the tuning run with those weights.

    Both train the same configuration (the tuning run also scores the validation split, after training),
    so a grid tuned from scratch does not train each row's default weights twice.
    """
    row_defaults = {t: defaults[t] for t in parse_terms(row.loss)}
    ids = []
    for s in range(seeds):
        sweep_id, tuning_id = run_id(row, s, scale), tune_run_id(row, row_defaults, s, scale)
        use_tuning = not runs.read_run(runs_dir / sweep_id).complete and runs.read_run(runs_dir / tuning_id).complete
        ids.append(tuning_id if use_tuning else sweep_id)
    return ids


def _select_rows(kd_rows: Sequence[Row], asked: Sequence[str]) -> list[Row]:
    if not asked:
        return list(kd_rows)
    by_name = {**{r.label: r for r in kd_rows}, **{r.slug: r for r in kd_rows}}
    unknown = [a for a in asked if a not in by_name]
    if unknown:
        raise LabError(f"Unknown row {', '.join(map(repr, unknown))}; the grid's rows to tune are: "
                       f"{'; '.join(f'{r.label} ({r.slug})' for r in kd_rows)}.")
    return [r for r in kd_rows if r in {by_name[a] for a in asked}]


def _test_numbers(runs_dir: Path, ids: Sequence[str], nokd: Sequence[runs.Run]) -> dict:
    hms, gaps = [], []
    for rid, base in zip(ids, nokd):
        run = runs.read_run(runs_dir / rid)
        if not run.complete:
            continue
        hms.append(run.summary["hm"])
        if base.complete and run.summary.get("teacher/hm") is not None:
            gaps.append(gap_closed(run.summary["hm"], base.summary["hm"], run.summary["teacher/hm"]))
    return {"hm": mean_std(hms), "gap_closed": mean_std(gaps), "n": len(hms)}


def paper_agreement(grid: str, rows: Sequence[Row], gains: dict[str, float]) -> str:
    """Spearman ρ between the lab's gains over no KD and the paper's, over the rows both have ('' if < 3)."""
    paper_base, _ = paper_number(grid, NO_KD)
    pairs = [(gains[r.label], paper_number(grid, r)[0] - paper_base) for r in rows
             if r.label in gains and paper_base is not None and paper_number(grid, r)[0] is not None]
    if len(pairs) < 3:
        return ""
    from lab.viz import spearman

    lab, paper = zip(*pairs)
    return f"ρ = {spearman(lab, paper):+.2f} over {len(pairs)} rows"


def write_tune_tables(grid: str, seeds: int, runs_dir: Path, scale: str, record: dict, defaults: dict,
                      parts_searched: dict[str, list] | None = None) -> Path:
    nokd = [runs.read_run(runs_dir / run_id(NO_KD, s, scale)) for s in range(seeds)]
    nokd_hm = mean_std([r.summary["hm"] for r in nokd if r.complete])
    lines = [f"Weights chosen on the validation split ({SELECT_BY}, mean over {seeds} seed(s)); test-set numbers "
             f"at the chosen and at the default weights. No KD: test HM {nokd_hm[0]:.1f} ± {nokd_hm[1]:.1f}.", "",
             "| row | chosen weights (validation) | val HM | test HM, tuned | test HM, default | gap closed %, tuned "
             "| gap closed %, default | default weights |", "|" + "---|" * 8]
    rows_out, gains = [], {"tuned": {}, "default": {}}
    for label, rec in record.items():
        row = rec["row"]
        tuned = _test_numbers(runs_dir, rec["run_ids"], nokd)
        default = _test_numbers(runs_dir, default_run_ids(row, seeds, runs_dir, scale, defaults), nokd)
        val = validation_score(runs_dir, rec["run_ids"])
        for name, numbers in (("tuned", tuned), ("default", default)):
            if numbers["n"]:
                gains[name][label] = numbers["hm"][0] - nokd_hm[0]
        row_defaults = {t: defaults[t] for t in parse_terms(row.loss)}
        lines.append(f"| {label} | {weights_spec(rec['weights'])} | {'—' if val is None else f'{val:.1f}'} | "
                     f"{plus_minus(tuned['hm'])} | {plus_minus(default['hm'])} | {plus_minus(tuned['gap_closed'])} | "
                     f"{plus_minus(default['gap_closed'])} | {weights_spec(row_defaults)} |")
        rows_out.append({"row": label, "weights": rec["weights"], "default_weights": row_defaults, "val_hm": val,
                         "test_hm_tuned": tuned["hm"], "test_hm_default": default["hm"],
                         "gap_closed_tuned": tuned["gap_closed"], "gap_closed_default": default["gap_closed"],
                         "searched": rec["searched"]})
    if grid in ("clipkd", "core"):
        rows = [rec["row"] for rec in record.values()]
        for name in ("default", "tuned"):
            agreement = paper_agreement(grid, rows, gains[name])
            if agreement:
                lines.append(f"\nRank agreement of the lab's HM gains over no KD with CLIP-KD Table 1's ImageNet "
                             f"gains, {name} weights: {agreement} (a report, not a target).")
    lines.append(f"\nEach new term's weight searched over its default × {{{', '.join(f'{f:g}' for f in FACTORS)}}} "
                 f"(a best weight at an end: one step further that way, up to {EXTEND} times), the row's other terms "
                 f"at the weights chosen before; the test set chose nothing.")
    if parts_searched:
        lines.append(f"Tuned first, as in the clipkd grid, and left out of this table: its {', '.join(parts_searched)} "
                     f"rows, the parts the recipes here are built from (their searches are in the .json).")
    return write_record(runs_dir, grid, scale, {"seeds": seeds, "select_by": SELECT_BY, "rows": rows_out,
                                                "recipe_parts": parts_searched or {}}, lines)

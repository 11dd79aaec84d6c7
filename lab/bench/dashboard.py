"""``python -m lab bench --dashboard``: how long the dashboard takes to switch pages and runs, in a real browser.

Two distillation runs are made with the full evaluation set (4 × 1,280 = 5,120 embedded test
items, teacher and student), their t-SNE maps of every item are computed and kept with the
runs (as the Geometry page keeps them), then headless Chromium (``lab.app.browser``) opens the
dashboard and times, from the click to the page drawn and idle again:

* switching pages through the sidebar navigation, over the pages that show runs (Overview,
  Geometry, Similarity, Training curves; Ablations and Protocols read sweep tables and prompt
  runs, which these runs are not), several rounds;
* switching runs in the sidebar on the Geometry and Similarity pages;
* the Geometry page at its heaviest: t-SNE of all 5,120 items (10,240 points with captions);
* the first t-SNE and UMAP of a run at the Geometry page's default item count (500 items and their captions,
  1,000 points, teacher and student), uncached,
  computed as the Geometry page computes it (in this process, no browser).

The first visit of each page (browser and server caches cold) is reported apart. The runs
are kept in ``.cache/dashboard-bench/`` so that a second measurement skips their making.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from lab.app import browser

TRAINING = ["train.steps=20", "train.warmup=2", "data.size=512", "train.log_every=5", "eval.per_style=1280"]
LOSSES = ("clipkd", "fd")
RUNS_DIR = Path(".cache/dashboard-bench")
PAGES = ("overview", "geometry", "similarity", "curves", "divergence")


def make_runs(root: Path, progress: Callable[[str], None]) -> list[str]:
    """Two briefly trained distillation runs with 5,120 embedded test items, their t-SNE maps cached."""
    from lab import runs, viz
    from lab.train.distill import default_config, distill

    ids = []
    for loss in LOSSES:
        run_id = f"dashboard-{loss}"
        if not (root / run_id / runs.SUMMARY).exists():
            progress(f"training and evaluating {run_id} (5,120 test items)")
            distill(default_config([*TRAINING, f"loss={loss}"]), run_id, root)
        emb = runs.read_run(root / run_id).embeddings()
        progress(f"t-SNE of {run_id}: {2 * len(emb['labels'])} points (cached with the run)")
        viz.embedding_maps(emb, n=len(emb["labels"]), method="tsne", cache_dir=root / run_id / "projections")
        ids.append(run_id)
    return ids


def _summary(seconds: list[float]) -> dict:
    return {"n": len(seconds), "median_s": statistics.median(seconds), "max_s": max(seconds)}


def measure(root: Path, run_ids: list[str], rounds: int, progress: Callable[[str], None]) -> dict:
    """Times of page switches, run switches and the heaviest Geometry view, in one browser session."""
    pages = {p.url_path: p for p in browser.PAGES if p.url_path in PAGES}
    results: dict[str, dict] = {}
    with browser.serve(root) as url, browser.browser_page() as tab:
        results["first visit (cold)"] = _summary([browser.open_page(tab, url, pages["overview"])] +
                                                 [browser.switch_page(tab, pages[p]) for p in PAGES[1:]])
        progress("switching pages")
        switches = [(p, browser.switch_page(tab, pages[p])) for _ in range(rounds) for p in PAGES]
        results["page switch"] = _summary([seconds for _, seconds in switches])
        for name in PAGES:  # which page a slow switch went to
            results[f"  to {name}"] = _summary([seconds for p, seconds in switches if p == name])
        for name in ("geometry", "similarity"):
            progress(f"switching runs on the {name} page")
            browser.switch_page(tab, pages[name])
            times = [browser.timed_choice(tab, "Run", run_ids[i % 2]) for i in range(1, 2 * rounds + 1)]
            results[f"run switch, {name}"] = _summary(times)
        progress("geometry at its heaviest: t-SNE of every item")
        browser.switch_page(tab, pages["geometry"])
        browser.slide_to_end(tab, "Items")  # every item first, so that the t-SNE asked for next is the cached one
        browser.choose(tab, "Projection", "t-SNE (cosine)")
        times = [browser.timed_choice(tab, "Run", run_ids[i % 2]) for i in range(1, 2 * rounds + 1)]
        results["run switch, geometry, t-SNE of 5,120 items"] = _summary(times)
    return results


def first_projection(root: Path, run_id: str, method: str = "tsne", items: int | None = None) -> dict:
    """Seconds of the Geometry page's first t-SNE (or UMAP) of a run at the page's default item count
    (:data:`lab.app.geometry.DEFAULT_ITEMS` items with their captions, 2 × items points; teacher and student
    each projected), nothing cached — what a new run's first map costs."""
    from lab.app.geometry import DEFAULT_ITEMS

    items = DEFAULT_ITEMS if items is None else items
    import tempfile
    import time

    from lab import runs, viz

    emb = runs.read_run(root / run_id).embeddings()
    with tempfile.TemporaryDirectory() as fresh:
        started = time.perf_counter()
        viz.map_points(emb, items, True, method, cache_dir=fresh)
        seconds = time.perf_counter() - started
    return {"n": 1, "median_s": seconds, "max_s": seconds, "points": 2 * items}


def dashboard_times(rounds: int = 3, runs_dir: Path = RUNS_DIR, progress: Callable[[str], None] = print) -> dict:
    run_ids = make_runs(runs_dir, progress)
    results = measure(runs_dir, run_ids, rounds, progress)
    for method, name in (("tsne", "t-SNE"), ("umap", "UMAP")):
        progress(f"first {name} of a run at the default item count (nothing cached)")
        timed = first_projection(runs_dir, run_ids[0], method)
        results[f"first {name} of a run, {timed['points']} points (default items + captions)"] = timed
    return results


def format_times(results: dict, device: str) -> str:
    lines = [f"Dashboard in headless Chromium, runs of 5,120 embedded test items, {device}",
             f"{'action':48s} {'n':>3s} {'median s':>9s} {'max s':>7s}"]
    lines += [f"{name:48s} {r['n']:3d} {r['median_s']:9.2f} {r['max_s']:7.2f}" for name, r in results.items()]
    return "\n".join(lines)

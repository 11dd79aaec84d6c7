"""``python -m lab lessons site OUT`` (``make site``): the lab's docs and lessons as one offline static site.

Built with MkDocs-Material and mkdocs-jupyter (pinned in requirements.txt) from the sources, staged in
the repository's own layout so their relative links keep working::

    README.md                    the front door (the site's home page)
    docs/*.md                    results, usage, dashboard (with screenshots), real scale, reliability, status, methods
    notebooks/README.md, notebooks/INSTRUCTORS.md, benchmarks/README.md
    notebooks/NN_*.ipynb         one page per lesson: the student edition (default) or the instructor one,
                                 with the outputs of executed copies when ``--executed DIR`` gives them

``mkdocs build --strict``: every warning (a broken link, a missing page) fails the build. Nothing is
fetched at view time: the theme's web fonts are off, MathJax 2 is served from the site itself (the
static files of ``jupyter-server-mathjax``, STIX-Web font), the lessons' figures carry their JavaScript
(:mod:`lab.lessons.offline`; plotly.js is added once per page that has a plotly figure) and the search
index is built into the site (Material's search plugin, lunr in the browser). A link to a repository
file that is not part of the site (``lab/losses/objective.py``) becomes its path in code, since a
static site cannot serve it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from lab.errors import LabError
from lab.lessons import editions, export, offline
from lab.lessons.sources import NOTEBOOK_DIR

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/results.md", "docs/methods.md", "docs/methods-modern.md", "docs/methods-modern2.md",
         "docs/usage.md", "docs/dashboard.md",
         "docs/real-scale.md", "docs/reliability.md", "docs/status.md", "benchmarks/README.md",
         "notebooks/README.md", "notebooks/INSTRUCTORS.md")
ASSETS = ("docs/screenshots",)
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
MATHJAX = "assets/mathjax"
MATHJAX_CONFIG = """window.MathJax = {  // MathJax 2 reads this object as its configuration when it loads
  "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null},
  tex2jax: {inlineMath: [["\\\\(", "\\\\)"], ["$", "$"]], displayMath: [["\\\\[", "\\\\]"], ["$$", "$$"]],
            processEscapes: true},
  messageStyle: "none"
};
"""
MATHJAX_LOADER = """(function () {  // MathJax 2 from the site itself; its path is relative to this script's folder
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  var s = document.createElement("script");
  s.src = here + "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe";
  document.head.appendChild(s);
  // Material's instant navigation is off (see mkdocs.yml), so every page load typesets itself
})();
"""


def _rewrite_links(text: str, page: str, stage: Path) -> str:
    """Links to repository files outside the site become their path in code; the rest are kept."""
    here = (stage / page).parent

    def one(match):
        label, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^mailto:", target):
            return match.group(0)
        path = target.split("#")[0]
        if (here / path).exists():
            return match.group(0)
        repo = (ROOT / page).parent / path
        shown = repo.resolve().relative_to(ROOT).as_posix() if repo.exists() and ROOT in repo.resolve().parents else path
        return label if label.strip("`") == shown or "`" in label else f"{label} (`{shown}`)"

    return LINK.sub(one, text)


def _lesson_notebook(path: Path, edition: str, executed: Path | None):
    source = Path(executed) / path.name if executed else path
    if executed and not source.is_file():
        raise LabError(f"No executed copy {source}; run `python notebooks/run_presets.py --preset cpu`, or leave "
                       f"out --executed for pages without outputs.")
    notebook = nbformat.read(source, as_version=4)
    if edition == "student":
        notebook = editions.student_edition(notebook)
        # executed copies are of the instructor edition: from the exercises on, their outputs (the checks'
        # verdicts, what the reference answers printed) stay out of the student site
        exercises = next((i for i, c in enumerate(notebook.cells)
                          if c.cell_type == "markdown" and c.source.strip().startswith("## Exercises")), len(notebook.cells))
        for cell in notebook.cells[exercises:]:
            if cell.cell_type == "code" and "quiz-answers" not in cell.metadata.get("tags", []):  # the quiz stays
                cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)  # static pages cannot run the sliders (their state would load a CDN)
    if any("lab-plotly" in str(o.get("data", {}).get("text/html", "")) for c in notebook.cells
           if c.cell_type == "code" for o in c.outputs):  # plotly.js for its figures (in notebooks/, so ../assets)
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell('<script src="../assets/plotly.js"></script>'))
    return notebook


def stage(src: Path, edition: str = "student", executed: Path | None = None) -> Path:
    """The site's sources in ``src``, with its ``mkdocs.yml``; returns the config file."""
    import yaml

    if edition not in editions.EDITIONS:
        raise LabError(f"Unknown edition '{edition}'; choose one of: {', '.join(editions.EDITIONS)}.")
    if src.exists():
        shutil.rmtree(src)
    docs = src / "site-docs"
    for page in PAGES:
        (docs / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / page, docs / page)
    for folder in ASSETS:
        shutil.copytree(ROOT / folder, docs / folder)
    lessons = []
    for path in editions.lesson_notebooks(NOTEBOOK_DIR):
        notebook = _lesson_notebook(path, edition, executed)
        nbformat.write(notebook, docs / "notebooks" / path.name)
        lessons.append(f"notebooks/{path.name}")
    for page in PAGES:  # after every page is in place, so a link between pages resolves
        file = docs / page
        text = _rewrite_links(file.read_text(encoding="utf-8"), page, docs)
        if FIGURE in text:  # plotly.js only on the pages that draw a plotly figure (it is 4.8 MB)
            depth = "../" * page.count("/")
            text = text.replace(FIGURE, f'<script src="{depth}assets/plotly.js"></script>\n' + kd_temperature_figure())
        file.write_text(text, encoding="utf-8")
    export.copy_mathjax(docs / "assets")
    (docs / "assets" / "mathjax-config.js").write_text(MATHJAX_CONFIG, encoding="utf-8")
    (docs / "assets" / "mathjax-load.js").write_text(MATHJAX_LOADER, encoding="utf-8")
    (docs / "assets" / "plotly.js").write_text(_plotly_js(), encoding="utf-8")
    config = {
        "site_name": "CLIP distillation lab",
        "docs_dir": "site-docs",
        "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["navigation.sections"]},
        "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_requirejs": False,
                                                  "include_source": False, "ignore_h1_titles": True}}],
        "markdown_extensions": ["tables", "toc", "admonition", {"pymdownx.arithmatex": {"generic": True}},
                                "pymdownx.superfences"],
        "extra_javascript": ["assets/mathjax-config.js", "assets/mathjax-load.js"],
        "validation": {"nav": {"omitted_files": "warn", "not_found": "warn", "absolute_links": "warn"},
                       "links": {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn",
                                 "anchors": "warn"}},
        "nav": [{"Home": "README.md"},
                {"Results": ["docs/results.md", "docs/methods.md", "docs/methods-modern.md",
                             "docs/methods-modern2.md", "benchmarks/README.md"]},
                {"Using the lab": ["docs/usage.md", "docs/dashboard.md", "docs/real-scale.md",
                                   "docs/reliability.md", "docs/status.md"]},
                {"Lessons": ["notebooks/README.md", *lessons, "notebooks/INSTRUCTORS.md"]}],
    }
    (src / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return src / "mkdocs.yml"


FIGURE = "<!-- lab-figure: kd-temperature -->"


def kd_temperature_figure() -> str:
    """A plotly figure computed from the lab's own loss at build time: PromptKD's paper KD loss between a
    teacher's and a student's ``100 · cos`` logits over 64 classes (seeded random unit vectors) as τ grows."""
    import plotly.graph_objects as go
    import torch
    import torch.nn.functional as F

    from lab.losses.functional import logit_kd_loss

    generator = torch.Generator().manual_seed(0)
    classes = F.normalize(torch.randn(64, 32, generator=generator), dim=-1)
    image_t, image_s = (F.normalize(torch.randn(8, 32, generator=generator), dim=-1) for _ in range(2))
    q_t, q_s = 100 * image_t @ classes.T, 100 * image_s @ classes.T
    taus = [1, 2, 4, 8, 16, 32]
    losses = [float(logit_kd_loss(q_s, q_t, tau)) for tau in taus]
    fig = go.Figure(go.Scatter(x=taus, y=losses, mode="lines+markers"))
    fig.update_layout(title="τ² · KL(σ(q_t/τ) ‖ σ(q_s/τ)), random teacher and student (seed 0)",
                      xaxis={"title": "temperature τ", "type": "log"}, yaxis_title="L_KD", height=360,
                      margin={"t": 50, "b": 40, "l": 60, "r": 20})
    return offline.plotly_html(fig.to_dict())


def _plotly_js() -> str:
    """plotly.js (the installed plotly package's copy) as a plain script file."""
    bundle = offline.plotly_bundle()
    return re.sub(r"</?script[^>]*>", "", bundle)


def build(out: Path, edition: str = "student", executed: Path | None = None) -> Path:
    """Build the site into ``out`` (strict); returns ``out/index.html``'s folder."""
    out = Path(out).resolve()
    config = stage(out.parent / f"{out.name}-src", edition, executed)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--quiet",
                           "--config-file", str(config), "--site-dir", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError("The site's strict build failed:\n" + (done.stderr or done.stdout).strip())
    return out

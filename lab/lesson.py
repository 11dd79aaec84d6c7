"""What the tutorial notebooks (``notebooks/``) share: presets, device choice, the lesson's runs, one batch, checks.

A notebook starts with a parameters cell and one call::

    PRESET = os.environ.get("LAB_PRESET", "cpu")
    lesson = start(PRESET)

Presets (the training budgets are :data:`lab.experiments.grids.SCALES`, the ones ``python -m lab demo`` uses):

* ``fast`` — seconds per run, only to exercise the code (what CI runs); its numbers mean nothing;
* ``cpu``  — the ``demo`` budget (200 steps on 4,096 pairs; 400 prompt stage-2 steps), minutes on a
  laptop CPU, enough to see distillation's effect;
* ``gpu``  — the full budget (the README's tables) on CUDA with a real pretrained open_clip teacher
  (``LAB_GPU_TEACHER``, default ``ViT-B-32:openai``) and the tiny ShapesWorld student. Without a CUDA
  GPU or without the teacher's weights on disk it says why and falls back to ``cpu``.

Runs go under ``$LAB_RUNS_DIR`` (default ``runs/lessons``), one folder per preset; a finished run is
reused, so re-running a notebook, or a second notebook that needs the same run, costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lab import runs
from lab.errors import LabError
from lab.paths import LESSON_RUNS

DEFAULT_RUNS_DIR = LESSON_RUNS  # runs/lessons of the checkout (~/lab-runs when lab is installed from its wheel)
GPU_TEACHER = "ViT-B-32:openai"
PROBE_ITEMS = 128  # test items per style the probe scores at each evaluation point (the final evaluation: all)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    scale: str  # a key of lab.experiments.grids.SCALES
    batch: int  # the one batch the from-scratch cells use
    device: str  # "auto", "cpu" or "cuda"
    teacher: str = "shipped"
    eval_every: int = 0  # the trainers' cheap probe (lab.eval.probe, the prompt trainer's own) every this many steps


PRESETS = {
    "fast": Preset("fast", "seconds per run, only to exercise the code (CI); the numbers mean nothing",
                   "fast", 16, "cpu"),
    "cpu": Preset("cpu", "the demo budget (200 steps on 4,096 pairs; prompt rows 400 steps): minutes on a "
                         "laptop CPU, enough to see the effect", "demo", 32, "auto", eval_every=20),  # 10 points in 200 steps
    "gpu": Preset("gpu", "the full budget of the README's tables on CUDA, with a real pretrained open_clip "
                         "teacher", "full", 128, "cuda", os.environ.get("LAB_GPU_TEACHER", GPU_TEACHER), 80),  # 10 in 800
}


def gpu_unavailable(teacher: str) -> str | None:
    """Why the ``gpu`` preset cannot run here (no CUDA, or the teacher's weights are not on disk), else None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    from lab.models import zoo

    try:
        zoo.load(teacher, device="cpu")
    except Exception as err:  # LabError when the weights are not cached; anything else the hub raises offline
        return f"the teacher {teacher} cannot be loaded ({type(err).__name__}: {err})"
    return None


@dataclass
class OneBatch:
    """One batch for the from-scratch cells: ``pairs`` (a ShapesWorld batch), ``e``
    (:class:`lab.losses.objective.Embeddings`: the student's raw embeddings and scale, the teacher's
    normalised embeddings and scale), both models, and the student's input tensor ``images``."""

    pairs: object
    e: object
    student: object
    teacher: object
    images: torch.Tensor


@dataclass
class Lesson:
    """A notebook's settings: its preset, device, runs folder and teacher."""

    preset: Preset
    device: str
    runs_dir: Path
    seed: int = 0

    @property
    def teacher(self) -> str:
        return self.preset.teacher

    # ------------------------------------------------------------------ training runs

    def _overrides(self, kind: str) -> list[str]:
        out = [f"train.device={self.device}"]
        if self.preset.eval_every:  # the trainers' cheap probe, for the curves
            out += [f"train.eval_every={self.preset.eval_every}", f"eval.probe_per_style={PROBE_ITEMS}"]
        if self.teacher != "shipped":
            out.append(f"reference_teacher={self.teacher}" if kind == "nokd" else f"teacher={self.teacher}")
        return out

    def clip_run(self, loss: str = "", settings: tuple[str, ...] = (), tag: str = "") -> Path:
        """The no-KD student (``loss=""``) or a student distilled with ``loss`` at this preset's budget.

        The same rows, budgets and run ids as ``python -m lab sweep`` (:func:`lab.experiments.sweep.train_row`)."""
        from lab.experiments.grids import NO_KD, Row
        from lab.experiments.sweep import train_row

        row = Row(loss or NO_KD.label, loss, tuple(settings), tag) if loss else NO_KD
        return train_row(row, self.seed, self.runs_dir, self.preset.scale,
                         self._overrides("kd" if loss else "nokd"))

    def prompt_run(self, row) -> Path:
        """A PromptKD / ComKD-CLIP run of a :class:`lab.experiments.grids.PromptRow` (e.g. from ``GRIDS["comkd"]``);
        its student is :meth:`clip_run`'s no-KD student."""
        from lab.experiments.sweep import train_row

        return train_row(row, self.seed, self.runs_dir, self.preset.scale,
                         [*self._overrides("prompt"), f"student={self.clip_run()}"])

    # ------------------------------------------------------------------ one batch for the from-scratch cells

    def one_batch(self, n: int | None = None, student: str | Path = "shapes-student") -> OneBatch:
        """``n`` training pairs, embedded by ``student`` (a fresh one by default; with gradients) and by the
        frozen teacher (see :class:`OneBatch`)."""
        from lab.data.shapes import ShapesWorld, StreamSpec
        from lab.losses.objective import Embeddings
        from lab.models import zoo
        from lab.models.zoo import load_teacher

        torch.manual_seed(self.seed)
        pairs = ShapesWorld(32).sample(StreamSpec(seed=self.seed), 0, n or self.preset.batch)
        teacher, model = load_teacher(self.teacher, self.device), zoo.load(student, device=self.device)
        images = model.image_tensor(pairs.images)
        with torch.no_grad():
            v_t = teacher.model.encode_image(teacher.image_tensor(pairs.images), normalize=True)
            t_t = teacher.model.encode_text(teacher.tokenize(pairs.captions), normalize=True)
        e = Embeddings(model.model.encode_image(images), model.model.encode_text(model.tokenize(pairs.captions)),
                       model.model.logit_scale.exp(), v_t, t_t, teacher.model.logit_scale.exp().item())
        return OneBatch(pairs, e, model, teacher, images)

    def objective(self, terms: str, e, **kwargs):
        """A :class:`lab.losses.objective.Objective` for the widths in ``e`` (seeded, so its heads repeat)."""
        from lab.losses.objective import Objective

        torch.manual_seed(self.seed)
        return Objective(terms, e.image_raw.shape[1], e.teacher_image.shape[1], **kwargs).to(self.device)

    # ------------------------------------------------------------------ reading runs

    def compare(self, paths: dict[str, Path], key: str = "hm") -> dict[str, float]:
        """Print ``key`` (HM by default) of each run, and the share of the teacher gap each closes vs the first."""
        summaries = {label: _summary(path) for label, path in paths.items()}
        values = {label: s[key] for label, s in summaries.items()}
        first = next(iter(values))
        teacher = summaries[first].get(f"teacher/{key}")
        print(f"{'run':<34} {key:>7}  gap closed vs '{first}'")
        for label, value in values.items():
            gap = ("" if label == first or teacher is None or teacher == values[first]
                   else f"{100 * (value - values[first]) / (teacher - values[first]):+.1f} %")
            print(f"{label:<34} {value:7.1f}  {gap}")
        if teacher is not None:
            print(f"{'teacher':<34} {teacher:7.1f}")
        self.caveat()
        return values

    def say(self, *sentences: str) -> None:
        """:func:`say` the summary sentences; under the fast preset, first that their numbers mean nothing."""
        if self.preset.name == "fast":
            sentences = ("(fast preset: a few steps only — the numbers in these sentences mean nothing)", *sentences)
        say(*sentences)

    def caveat(self) -> None:
        """Under the fast preset, say that the numbers just printed mean nothing."""
        if self.preset.name == "fast":
            print("(fast preset: a few steps only — these numbers mean nothing; run the cpu preset to see the effect)")

    def curves(self, paths: dict[str, Path], key: str = "eval/hm"):
        """:func:`lab.viz.training_curves` of ``key`` for the labelled runs; for an evaluation metric, first
        print each run's number of evaluations, its start, peak and end (so a fall after the peak is said)."""
        from lab.viz import training_curves

        records = {label: runs.read_run(p).metrics() for label, p in paths.items()}
        if key.startswith("eval/"):
            print(f"(each point is the trainers' probe, {PROBE_ITEMS} test items per style; the final numbers printed "
                  f"above use the whole test set, so a curve's last point can differ from them)")
            for label, rows in records.items():
                print(trajectory(label, [(r["step"], r[key]) for r in rows if key in r and "step" in r], key))
        return training_curves(records, key)


def trajectory(label: str, points: list[tuple[int, float]], key: str = "eval/hm") -> str:
    """"no KD: 10 evaluations of eval/hm; 12.0 at step 20, peak 27.5 at step 100, 23.7 at step 200 (4 below its peak)"."""
    if len(points) < 2:
        return f"{label}: {len(points)} evaluation{'s' if len(points) != 1 else ''} of {key} — no curve to read"
    (s0, v0), (s1, v1) = points[0], points[-1]
    peak_step, peak = max(points, key=lambda p: p[1])
    text = (f"{label}: {len(points)} evaluations of {key}; {v0:.1f} at step {s0}, peak {peak:.1f} at step {peak_step}, "
            f"{v1:.1f} at step {s1}")
    return text + (f" ({peak - v1:.1f} below its peak)" if peak - v1 >= 1.0 else "")


def versus(values: dict[str, float], a: str, b: str, unit: str = "HM") -> str:
    """One comparison sentence from numbers a lesson printed: "FD beat CRD by 14.6 HM (39.9 vs 25.3)"."""
    diff = values[a] - values[b]
    if round(abs(diff), 1) == 0:
        return f"{a} and {b} tied ({values[a]:.1f} {unit})"
    win, lose = (a, b) if diff > 0 else (b, a)
    return f"{win} beat {lose} by {abs(diff):.1f} {unit} ({values[win]:.1f} vs {values[lose]:.1f})"


def ranking(values: dict[str, float], unit: str = "HM", digits: int = 1) -> str:
    """The runs from best to worst, with their numbers: "FD 39.9 > MFD 35.1 > CRD 25.3 > no KD 23.7 HM"
    ("=" only where the printed numbers are equal; ``digits=3`` for CKA-like values in 0–1)."""
    ordered = sorted(values, key=values.get, reverse=True)
    text = f"{ordered[0]} {values[ordered[0]]:.{digits}f}"
    for higher, label in zip(ordered, ordered[1:]):
        same = round(values[higher], digits) == round(values[label], digits)
        text += f" {'=' if same else '>'} {label} {values[label]:.{digits}f}"
    return f"{text} {unit}"


def say(*sentences: str) -> None:
    """Show a summary computed from the lesson's own numbers, as Markdown bullets (plain text outside Jupyter)."""
    from IPython.display import Markdown, display

    display(Markdown("\n".join(f"* {s}" for s in sentences)))


def sweep_table(grid: str, rows: tuple[str, ...] = (), seeds: int = 3) -> None:
    """The full-budget sweep's table of ``grid`` (its ``rows`` only, if given) from the runs in
    ``$LAB_SWEEP_DIR`` (default ``runs/``, where ``python -m lab sweep`` writes), or, when they are not on this
    machine, one sentence saying where the table is and how to make it."""
    from IPython.display import Markdown, display

    from lab.experiments import tables
    from lab.experiments.grids import PromptRow, grid_rows

    root = Path(os.environ.get("LAB_SWEEP_DIR", DEFAULT_RUNS_DIR.parent))
    prompt = isinstance(grid_rows(grid)[0], PromptRow)
    records = (tables.collect_prompt if prompt else tables.collect)(grid, seeds, root, "full")
    records = [r for r in records if not rows or r["row"] in rows]
    if not any(r["seeds"] for r in records):
        print(f"The full-budget '{grid}' runs are not on this machine ({root}); the README's '{grid}' table shows "
              f"them (make them with `python -m lab sweep --grid {grid} --seeds {seeds}`, hours on a CPU).")
        return
    display(Markdown(tables.prompt_markdown_table(records) if prompt
                     else tables.markdown_table(records, tables.teacher_hm(grid, seeds, root, "full"))))


def paper_numbers(table: str, value: str = "value", **match) -> dict[str, float]:
    """Published numbers (:mod:`lab.experiments.papers`) of the rows of ``table`` matching ``match``, keyed by the rows'
    first column, printed as "paper" numbers (real data, real CLIP models — not comparable with ShapesWorld)."""
    from lab.experiments import papers

    rows = [r for r in papers.load(table) if all(r.get(k) == v for k, v in match.items())]
    key = next(iter(rows[0])) if rows else None
    out = {str(r[key]): r[value] for r in rows}
    for label, number in out.items():
        print(f"paper  {label:<12} {number:5.1f}")
    return out


def _summary(path: Path) -> dict:
    run = runs.read_run(path)
    if not run.complete:
        raise LabError(f"Run {path} did not finish ({'; '.join(run.problems) or 'no summary.json'}); "
                       f"delete it and run the cell again.")
    return run.summary


def choose_device(request: str) -> str:
    """``auto`` → cuda when a GPU is visible, else cpu."""
    if request == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return request


def start(preset: str | None = None) -> Lesson:
    """The lesson's settings for ``preset`` (default ``$LAB_PRESET``, else ``cpu``); prints what it chose."""
    name = preset or os.environ.get("LAB_PRESET", "cpu")
    if os.environ.get("LAB_GRADING") == "1":  # `python -m lab grade` runs every submission in its own preset
        name = os.environ.get("LAB_PRESET", name)
    if name not in PRESETS:
        raise LabError(f"Unknown preset '{name}'; choose one of: {', '.join(PRESETS)}.")
    chosen = PRESETS[name]
    from lab.lessons import offline

    offline.enable()  # every figure draws with no network (JavaScript inlined from installed packages)
    if name == "gpu":
        reason = gpu_unavailable(chosen.teacher)
        if reason:
            print(f"The gpu preset distils from a real pretrained CLIP ({chosen.teacher}) on CUDA, but {reason}.\n"
                  f"Falling back to the cpu preset (the shipped ShapesWorld teacher). To use it: run on a machine "
                  f"with a CUDA GPU and the weights cached (download once with network access, or set "
                  f"LAB_GPU_TEACHER=ARCH:/path/to/weights.pt).")
            chosen = PRESETS["cpu"]
    device = choose_device(chosen.device)
    if device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    root = Path(os.environ.get("LAB_RUNS_DIR", DEFAULT_RUNS_DIR)) / chosen.name
    root.mkdir(parents=True, exist_ok=True)
    print(f"preset {chosen.name}: {chosen.description}\ndevice {device}; teacher {chosen.teacher}; runs in {root}")
    return Lesson(chosen, device, root)


# ---------------------------------------------------------------------- shapes and exercise checks


def show_shapes(**tensors) -> None:
    """Print the name, shape and dtype of each tensor, one a line."""
    for name, t in tensors.items():
        print(f"{name:<12} {str(tuple(t.shape)):<14} {str(t.dtype).replace('torch.', '')}")


def assert_same(mine: torch.Tensor, lab_value: torch.Tensor, what: str, atol: float = 1e-6) -> None:
    """Assert a from-scratch value equals the lab's (``torch.allclose``) and print both."""
    mine, lab_value = torch.as_tensor(mine).detach().cpu(), torch.as_tensor(lab_value).detach().cpu()
    print(f"{what}: from scratch {mine.item() if mine.numel() == 1 else tuple(mine.shape)} | "
          f"lab {lab_value.item() if lab_value.numel() == 1 else tuple(lab_value.shape)}")
    if not torch.allclose(mine.double(), lab_value.double(), rtol=1e-5, atol=atol):
        raise AssertionError(f"{what}: the from-scratch value differs from the lab's "
                             f"(max difference {(mine.double() - lab_value.double()).abs().max().item():.3g}).")
    print("  ✓ equal")


def check(number: str, answer, **inputs) -> None:
    """Self-check exercise ``number`` on the lesson's own inputs and print the verdict (it never raises, so a
    wrong answer does not stop "Run All"). ``None`` means not attempted yet. Where the exercise asks for a
    function (``answer(v, t, scale)``, defined in the answer cell), the check calls it with ``inputs``; the grader also calls it on
    inputs the student never saw (:mod:`lab.lessons.grade`). The reference is computed by
    :mod:`lab.lessons.exercises` from the lab's own functions, and a wrong answer hears what kind of wrong it is
    (:func:`lab.lessons.exercises.diagnose`) — never the expected value nor the gap to it."""
    try:
        from lab.lessons.exercises import EXERCISES, diagnose
    except ImportError:  # the grader's kernel: the grader checks the answer itself, in its own process
        print(f"Exercise {number}: checked by the grader.")
        return
    if number not in EXERCISES:
        raise LabError(f"Unknown exercise '{number}'; the exercises are {', '.join(EXERCISES)}.")
    ex = EXERCISES[number]
    label = f"Exercise {number} ({ex.title})"
    if answer is None:
        print(f"{label}: not attempted yet — fill in the cell above and run this one again.")
        return
    if ex.params and not callable(answer):
        print(f"{label}: ✗ not a function — write `def answer({', '.join(ex.params)}):` returning the value; the "
              f"grader calls it on other inputs too.")
        return
    try:
        value = answer(**inputs) if callable(answer) else answer
    except Exception as err:  # the student's function failed: say how, and let the notebook go on
        print(f"{label}: ✗ your answer({', '.join(inputs)}) raised {type(err).__name__}: {err}")
        return
    problem = diagnose(value, ex.reference(**inputs), ex.atol)
    if problem:
        print(f"{label}: ✗ wrong — {problem}. Re-read the equation above and try again.")
    else:
        print(f"{label}: ✓ correct — well done.")


def explore(draw, **sliders) -> None:
    """Show ``draw``'s figure at the sliders' starting values (so a saved notebook has it), then
    ``ipywidgets.interact`` sliders that redraw it; ``draw`` returns the figure (no ``.show()``).

    Headless (``LAB_HEADLESS=1``, as the tests and ``notebooks/run_presets.py`` set) the sliders are not
    built — nbclient can deadlock on widget messages (jupyter/nbclient#312) — and ``draw`` is called at
    each slider's two ends instead, so the callback is still exercised over its whole range.
    """
    from IPython.display import display

    display(draw(**{name: slider.value for name, slider in sliders.items()}))
    if os.environ.get("LAB_HEADLESS"):
        for end in ("min", "max"):
            draw(**{name: _slider_value(slider, end) for name, slider in sliders.items()})
        print(f"(headless run: sliders for {', '.join(sliders)} not built; their callback ran at both ends)")
        return
    from ipywidgets import interact

    interact(draw, **sliders)


def _slider_value(slider, end: str) -> float:
    value = getattr(slider, end)
    return slider.base ** value if hasattr(slider, "base") else value


def gradient_norms(objective, e) -> dict[str, float]:
    """Norm of the gradient each weighted term of ``objective`` sends to the student's image embeddings."""
    out = {}
    for name, value in objective(e).items():
        (grad,) = torch.autograd.grad(value, e.image_raw, retain_graph=True, allow_unused=True)
        out[name] = 0.0 if grad is None else grad.norm().item()
    return out


def sample_images(pairs, n: int = 8):
    """The first ``n`` images of a batch with their captions, as a :func:`lab.viz.image_grid`."""
    from lab.viz import image_grid

    return image_grid(pairs.images[:n], [c[:28] for c in pairs.captions[:n]])

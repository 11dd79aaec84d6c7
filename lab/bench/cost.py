"""``python -m lab cost``: what distillation buys — the student's cost beside its accuracy.

Distillation exists to make a small model behave like a large one. This module measures
the "small": parameters and FLOPs of one image / caption embedding, the latency and
throughput of embedding a batch (teacher and students timed side by side in one process,
interleaved round by round, so a drift of the machine hits both alike), and an ONNX export
of a student checked against PyTorch (:mod:`lab.models.onnx`). :func:`cost_table` puts these numbers next to each
finished run's zero-shot HM and top-1.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from lab import runs
from lab.errors import LabError
from lab.models import zoo
from lab.models.onnx import sample_batch
from lab.models.zoo import load_teacher
from lab.train.loop import resolve_device, timed

STUDENT_KINDS = ("pretrain", "distill")


# --------------------------------------------------------------------------- parameters and FLOPs


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode knows the CUDA attention kernels but not the CPU one; same arithmetic.
    return sdpa_flop_count(query, key, value)


@contextlib.contextmanager
def _no_mha_fastpath():
    """Let nn.MultiheadAttention run as its separate matmuls, which the FLOP counter can see.

    In eval mode without gradients it otherwise takes a fused kernel the counter counts as zero.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def count_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` as torch's FlopCounterMode counts them (2 per multiply-add of
    matmuls, convolutions and attention; element-wise ops, norms and softmax are not counted)."""
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops})
    with _no_mha_fastpath(), torch.no_grad(), counter:
        fn(*args)
    return int(counter.get_total_flops())


def model_cost(clip: zoo.ClipModel) -> dict:
    """Parameters (image tower, text tower, total) and the FLOPs of one embedding.

    FLOPs are counted on a batch of **one** image and **one** caption (the text tower always
    reads the full context length, so the caption's words do not matter). The text tower is
    everything outside ``model.visual`` but the logit scale/bias; most of a small text tower's
    parameters sit in its token-embedding table, a lookup that costs no FLOPs.
    """
    model = clip.model.eval()
    named = dict(model.named_parameters())
    image = sum(p.numel() for n, p in named.items() if n.startswith("visual."))
    text = sum(p.numel() for n, p in named.items() if not n.startswith("visual.") and "logit_" not in n)
    size = clip.image_size
    pixels = torch.zeros(1, 3, size, size, device=clip.device)
    tokens = clip.tokenize(["a photo of a red circle"])
    return {"arch": clip.arch, "params": clip.num_parameters(), "image_params": image, "text_params": text,
            "image_flops": count_flops(model.encode_image, pixels),
            "text_flops": count_flops(model.encode_text, tokens)}


# --------------------------------------------------------------------------- latency and throughput


@dataclass
class Latency:
    """Median seconds to embed one batch of images and one batch of captions."""

    batch_size: int
    image_s: float
    text_s: float

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.image_s

    @property
    def texts_per_s(self) -> float:
        return self.batch_size / self.text_s

    def as_dict(self) -> dict:
        return {"batch_size": self.batch_size, "image_s": self.image_s, "text_s": self.text_s,
                "images_per_s": self.images_per_s, "texts_per_s": self.texts_per_s}


def latency(clips: dict[str, zoo.ClipModel], batch_size: int = 256, device: str = "auto",
            rounds: int = 5) -> dict[str, Latency]:
    """Median seconds of ``encode_image`` on a batch of images and ``encode_text`` on a batch of
    captions, for each named model (moved to ``device``, eval mode, no grad).

    Every model runs once first (warm-up: allocations, kernel choices); then each round times
    every model's image and text call in turn, so all models share the machine's state and the
    ratios between them are what to read. Pre-processing (resizing, tokenizing) is not timed.
    """
    if batch_size < 1 or rounds < 1:
        raise LabError(f"Batch size and rounds must be at least 1, got {batch_size} and {rounds}.")
    dev = resolve_device(device)
    batch = sample_batch(batch_size, max(c.image_size for c in clips.values()))
    calls = {}
    for name, clip in clips.items():
        clip.model.to(dev).eval()
        calls[name, "image"] = (clip.model.encode_image, clip.image_tensor(batch.images))
        calls[name, "text"] = (clip.model.encode_text, clip.tokenize(batch.captions))
    times = {key: [] for key in calls}
    with torch.no_grad():
        for fn, x in calls.values():
            fn(x)
        for _ in range(rounds):
            for key, (fn, x) in calls.items():
                times[key].append(timed(lambda: fn(x), dev))
    return {name: Latency(batch_size, statistics.median(times[name, "image"]), statistics.median(times[name, "text"]))
            for name in clips}


# --------------------------------------------------------------------------- the table


def _run_arch(run: runs.Run) -> str | None:
    """The architecture of a run's model; None when it has no checkpoint.

    Read from the model spec in its config when that names an architecture (a preset or
    ARCH:TAG, as zoo.load reads it), else from the checkpoint, without loading its weights.
    """
    ckpt, weights = run.path / runs.CHECKPOINT, run.path / "model.safetensors"
    if not (ckpt.is_file() or weights.is_file()):
        return None
    config = run.config.get("config") or {}
    spec = str(config.get("student") or config.get("model") or "")  # distill / pretrain
    arch = spec.partition(":")[0]
    if arch in zoo.known_architectures() and not Path(spec).exists():
        return arch
    if ckpt.is_file():
        try:  # mmap: the pickle is read, not the tensors (unpickling still costs ~0.1 s a run)
            return torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("arch")
        except Exception:  # a damaged checkpoint: not a row
            return None
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get("arch")
    return None


def student_runs(runs_dir: str | Path, teacher_arch: str) -> list[tuple[runs.Run, str]]:
    """Finished pretrain/distill runs with a checkpoint, and their architectures.

    Runs of the teacher's own architecture (the teacher's recipe) are not students; prompt
    distillation runs train prompts on a frozen CLIP and keep no student checkpoint.
    """
    found = []
    for run in runs.list_runs(runs_dir):
        if not run.complete or run.kind not in STUDENT_KINDS:
            continue
        arch = _run_arch(run)
        if arch and arch != teacher_arch:
            found.append((run, arch))
    return found


def _teacher_accuracy(students: list[tuple[runs.Run, str]], teacher_spec: str) -> dict:
    """The teacher's HM/top-1 as the runs evaluated it (same test set), else from the shipped teacher's card."""
    for run, _ in students:
        if "teacher/hm" in run.summary:
            return {"hm": run.summary["teacher/hm"], "top1": run.summary.get("teacher/top1")}
    card = zoo.SHIPPED_TEACHER.with_suffix(".card.json")
    if teacher_spec == "shipped" and card.is_file():
        metrics = json.loads(card.read_text()).get("eval", {}).get("metrics", {})
        return {"hm": metrics.get("hm"), "top1": metrics.get("top1")}
    return {"hm": None, "top1": None}


def cost_table(runs_dir: str | Path = "runs", teacher: str = "shipped", device: str = "auto",
               batch_size: int = 256, rounds: int = 5, progress=None) -> tuple[list[dict], str]:
    """One row for the teacher and one per finished student run: cost beside accuracy.

    Cost depends on the architecture alone, so it is measured once per architecture (the first
    run of each stands for all) and the teacher and those students are timed in one interleaved
    session. Returns the rows and their Markdown rendering.
    """
    progress = progress or (lambda msg: None)
    if not Path(runs_dir).is_dir():
        raise LabError(f"Runs directory {runs_dir} does not exist; pass --runs-dir the folder your runs are in.")
    dev = resolve_device(device)
    teacher_clip = load_teacher(teacher, str(dev))
    students = student_runs(runs_dir, teacher_clip.arch)
    found, listed = runs.list_runs(runs_dir), {run.run_id for run, _ in students}
    left_out = [f"{run.run_id} ({'; '.join(run.problems)})" for run in found if not run.ok]
    left_out += [f"{run.run_id} (its checkpoint cannot be read)" for run in found if run.complete
                 and run.kind in STUDENT_KINDS and run.run_id not in listed and _run_arch(run) is None]
    for line in left_out:
        progress(f"warning: left out broken run {line}")
    if not students:
        raise LabError(f"{runs_dir} holds no finished student run (pretrain or distill with a checkpoint); "
                       f"train one, e.g. `python -m lab distill`, or pass --runs-dir.")
    models = {"teacher": teacher_clip}
    for run, arch in students:
        if arch not in models:
            models[arch] = zoo.load(run.path, device=str(dev))
    progress(f"counting FLOPs and timing the teacher and {len(models) - 1} student architecture(s) "
             f"for {len(students)} runs")
    costs = {key: model_cost(clip) for key, clip in models.items()}
    times = latency(models, batch_size, str(dev), rounds)

    def row(name, kind, key, accuracy):
        cost, t = costs[key], times[key]
        return {"run": name, "kind": kind, **cost, **{f"latency_{k}": v for k, v in t.as_dict().items()},
                "image_speedup": times["teacher"].image_s / t.image_s,
                "text_speedup": times["teacher"].text_s / t.text_s,
                "hm": accuracy.get("hm"), "top1": accuracy.get("top1")}

    rows = [row("teacher", "teacher", "teacher", _teacher_accuracy(students, teacher))]
    rows += [row(run.run_id, run.kind, arch, run.summary) for run, arch in students]
    setting = (f"batch {batch_size}, {dev.type}, median of {rounds} interleaved rounds; "
               f"{runs.machine_description()}")
    table = format_table(rows, setting)
    if left_out:
        table += f"\n\nLeft out, broken: {', '.join(left_out)}; repair or re-run them."
    return rows, table


def _flops(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _pct(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def format_table(rows: list[dict], setting: str = "") -> str:
    """Markdown: one row per model, cost columns then accuracy columns ("× teacher": speed-up of the
    image / text embedding over the teacher's, from the interleaved medians)."""
    lines = [f"Cost vs accuracy ({setting}). Cost is per architecture: rows of one architecture share it.", "",
             "| run | kind | params (M) | FLOPs/image | FLOPs/caption | image ms/batch | images/s | "
             "× teacher | text ms/batch | captions/s | × teacher | HM | top-1 |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['kind']} | {r['params'] / 1e6:.2f} | {_flops(r['image_flops'])} | "
                     f"{_flops(r['text_flops'])} | {r['latency_image_s'] * 1e3:.2f} | "
                     f"{r['latency_images_per_s']:,.0f} | {r['image_speedup']:.2f} | "
                     f"{r['latency_text_s'] * 1e3:.2f} | {r['latency_texts_per_s']:,.0f} | {r['text_speedup']:.2f} | "
                     f"{_pct(r['hm'])} | {_pct(r['top1'])} |")
    return "\n".join(lines)

"""``python -m lab bench --accumulate N``: a GradCache step (train.accumulate=N) against the full-batch step.

Both steps train the same student on the same batch with the same objective and a cached teacher, in
one process, interleaved round by round (the median of ``rounds`` kept), so the ratio is the cost of
running the towers twice in N chunks — the price of the full batch's exact gradient in a chunk's memory.
"""

from __future__ import annotations

import copy
import statistics

import torch

from lab.data.pairs import DataConfig, build_pairs
from lab.losses.objective import Objective
from lab.models import zoo
from lab.train.distill import DistillStep
from lab.train.loop import TrainConfig, Trainer, resolve_device, timed


def accumulate_costs(chunks: int = 4, loss: str = "clipkd", batch_size: int = 128, rounds: int = 5, steps: int = 2,
                     student: str = "shapes-student", device: str = "auto") -> dict:
    """Seconds per step, full batch vs ``chunks`` GradCache chunks (and the peak CUDA memory when on a GPU)."""
    dev = resolve_device(device)
    base = zoo.load_student(student, 0, device=str(dev))
    batch = build_pairs(DataConfig(size=batch_size, image_size=base.image_size)).__getitems__(list(range(batch_size)))
    g = torch.Generator().manual_seed(0)
    dt = 256
    cached = {k: torch.nn.functional.normalize(torch.randn(batch_size, dt, generator=g), dim=-1) for k in ("image", "text")}
    cached["scale"] = torch.tensor([100.0])
    runners = {}
    for n in (1, chunks):
        clip = copy.deepcopy(base)
        clip.model.train()
        objective = Objective(loss, clip.embed_dim, dt).to(dev)
        params = list(clip.model.named_parameters()) + [(f"o.{k}", p) for k, p in objective.named_parameters()]
        trainer = Trainer(params, TrainConfig(steps=10**6, warmup=0))
        step = DistillStep(clip, clip, objective, cached, accumulate=n)
        runners[n] = (trainer, step)
    times = {n: [] for n in runners}
    peak = {}
    for r in range(rounds + 1):  # round 0 warms up
        for n, (trainer, step) in runners.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)

            def run():
                for _ in range(steps):
                    trainer.compute(step, batch)
                    trainer.optimizer.step()

            seconds = timed(run, dev) / steps
            if r:
                times[n].append(seconds)
            if dev.type == "cuda":
                peak[n] = torch.cuda.max_memory_allocated(dev) / 2**20
    full, chunked = statistics.median(times[1]), statistics.median(times[chunks])
    return {"loss": loss, "batch_size": batch_size, "chunks": chunks, "student": student, "device": str(dev),
            "full_batch_s": full, "gradcache_s": chunked, "ratio": chunked / full,
            "peak_mib": {"full_batch": peak.get(1), "gradcache": peak.get(chunks)}}


def format_accumulate(row: dict, machine: str) -> str:
    mem = row["peak_mib"]
    lines = [f"GradCache vs full batch — {row['loss']}, batch {row['batch_size']}, student {row['student']}, {machine}",
             f"  full batch          {row['full_batch_s'] * 1000:9.1f} ms/step"
             + (f"   peak {mem['full_batch']:.0f} MiB" if mem["full_batch"] else ""),
             f"  GradCache {row['chunks']:>2} chunks {row['gradcache_s'] * 1000:9.1f} ms/step"
             + (f"   peak {mem['gradcache']:.0f} MiB" if mem["gradcache"] else ""),
             f"  ratio {row['ratio']:.2f}x (the same gradient, to float rounding: tests/test_gradcache.py)"]
    return "\n".join(lines)

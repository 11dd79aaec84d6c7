"""The training loop every trainer shares: optimiser, schedule, precision, progress, logging, checkpoints.

A trainer supplies ``step_fn(batch) -> {term: weighted loss}``; the loop sums the
terms, steps AdamW under a warm-up + cosine schedule, stops on a non-finite loss
naming the step and the term (the last good checkpoint stays), turns a GPU
out-of-memory error into one sentence, averages gradients over torchrun's processes
(:mod:`lab.train.dist`), logs every term to ``metrics.jsonl`` and shows a tqdm bar.
``train.precision=bf16`` runs the forward under bfloat16 autocast (CUDA only);
``train.compile=true`` compiles the student's towers with ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from lab.errors import LabError
from lab.train import dist

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Optimisation: AdamW (β = 0.9/0.98, ε = 1e-6, open_clip's), linear warm-up then cosine decay."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    grad_clip: float = 0.0
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    precision: str = "fp32"  # fp32, or bf16: bfloat16 autocast of the forward (CUDA only)
    compile: bool = False  # torch.compile the student's towers
    accumulate: int = 1  # > 1: GradCache — the batch's exact gradient, the student's towers run in this many chunks
    grad_checkpointing: bool = False  # open_clip's set_grad_checkpointing: recompute activations in the backward
    logger: str = "jsonl"  # or tensorboard: event files beside metrics.jsonl too (lab.train.logger)


def autocast(device: torch.device, precision: str):
    """The forward's precision context: none for fp32, bfloat16 autocast for bf16."""
    if precision not in PRECISIONS:
        raise LabError(f"Unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def check_precision(precision: str, device: torch.device) -> None:
    """Training in bf16 needs a GPU: CPU autocast is slow and changes the numbers the tables compare."""
    autocast(device, precision)  # an unknown precision fails here
    if precision == "bf16" and device.type != "cuda":
        raise LabError("train.precision=bf16 needs a CUDA GPU; use train.precision=fp32 on CPU.")


def compile_towers(model: torch.nn.Module) -> None:
    """``torch.compile`` the image and text towers in place (state-dict keys and checkpoints unchanged)."""
    for tower in (getattr(model, "visual", None), getattr(model, "transformer", None), getattr(model, "text", None)):
        if tower is not None:
            tower.compile()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``fn()``; on CUDA the queued kernels are waited for before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The torch device ``name`` names; ``key`` is the setting a refusal names (cache-teacher's is ``device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LabError(f"{key}={name} but no CUDA GPU is visible; use {key}=cpu or auto.")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise LabError(f"Unknown {key} '{name}'; use auto, cpu or cuda.") from err


def start_processes(cfg: TrainConfig) -> tuple[torch.device, dist.Context]:
    """This process's device and place under torchrun (joining its group; one process without it), the
    precision and the batch split checked before anything is loaded or written, and the thread count set."""
    device = resolve_device(cfg.device)
    ctx = dist.init(device)
    device = dist.local_device(device, ctx)
    check_precision(cfg.precision, device)
    dist.check_batch(cfg.batch_size, ctx)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return device, ctx


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    """Every random generator's state, as tensors and plain data (safe for ``weights_only`` loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": repr(random.getstate()), "torch": torch.get_rng_state(),
              "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    import ast

    random.setstate(ast.literal_eval(states["python"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; gains, biases and logit scales are exempt (open_clip's rule)."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "bias" in name or "ln" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine decay to zero at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class FitStats:
    """A run's timings; ``None`` where nothing was measured (the first two steps are warm-up and not timed).
    ``wall_time_s`` covers every part of a resumed run (the time before each checkpoint is carried in it)."""

    steps: int
    wall_time_s: float
    mean_step_s: float | None
    mean_data_s: float | None
    images_per_s: float | None


def bars_disabled() -> bool:
    """``TQDM_DISABLE=1`` (headless lesson runs, the tests): no progress bar. Read here because tqdm.notebook,
    which ``tqdm.auto`` picks in Jupyter, passes ``disable`` explicitly and so ignores that variable."""
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")


class Trainer:
    """Runs optimisation steps over a stream of batches (this process's shard of each under torchrun)."""

    def __init__(self, named_params, cfg: TrainConfig, log: Callable[[dict], None] | None = None,
                 desc: str = "train", ctx: dist.Context = dist.SINGLE):
        self.cfg, self.log, self.desc, self.ctx = cfg, log or (lambda record: None), desc, ctx
        groups = param_groups(named_params, cfg.weight_decay)
        self.params = [p for g in groups for p in g["params"]]
        if not self.params:
            raise LabError("Nothing to train: no parameter requires a gradient.")
        self.device = self.params[0].device
        check_precision(cfg.precision, self.device)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
        self.step = 0
        self.wall_before = 0.0  # training seconds of the parts before a resume
        self._fit_started: float | None = None

    def wall_time_s(self) -> float:
        """Training seconds so far, over every resumed part of the run."""
        running = time.perf_counter() - self._fit_started if self._fit_started is not None else 0.0
        return self.wall_before + running

    def state_dict(self) -> dict:
        """Optimiser and step; the schedule is a pure function of the step (:func:`lr_at`), recorded for reading."""
        cfg = self.cfg
        return {"optimizer": self.optimizer.state_dict(), "step": self.step, "wall_time_s": self.wall_time_s(),
                "scheduler": {"kind": "linear warm-up + cosine", "lr": cfg.lr, "warmup": cfg.warmup,
                              "steps": cfg.steps, "step": self.step}}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.wall_before = float(state.get("wall_time_s", 0.0))

    def compute(self, step_fn: Callable, batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One forward and backward: the named terms and their sum. The gradients are left on the
        parameters, averaged over the processes under torchrun."""
        cfg = self.cfg
        try:
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, cfg.precision):
                terms = step_fn(batch)  # a GradCache step (train.accumulate > 1) runs its own backward
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                raise LabError(f"The loss became non-finite at step {self.step} in term "
                               f"'{bad[0] if bad else 'loss'}'; lower train.lr or that term's weight "
                               f"(the last good checkpoint is kept).")
            if not getattr(step_fn, "backpropagates", False):
                loss.backward()
        except torch.OutOfMemoryError as err:
            hint = "" if cfg.precision == "bf16" else " or set train.precision=bf16"
            raise LabError(f"The GPU ran out of memory at step {self.step} with train.batch_size="
                           f"{cfg.batch_size}; lower train.batch_size{hint}.") from err
        dist.average_gradients(self.params, self.ctx)
        return terms, loss

    def _checkpoint(self, save: Callable[[int], None]) -> None:
        """Save only finite weights: a checkpoint is the state a killed or diverged run resumes from."""
        if not all(torch.isfinite(p).all() for p in self.params):
            raise LabError(f"The weights became non-finite at step {self.step}; lower train.lr "
                           f"(the last good checkpoint is kept).")
        save(self.step)

    def fit(self, batches: Iterable, step_fn: Callable, after_step: Callable | None = None,
            every: dict[int, Callable[[int], dict | None]] | None = None,
            checkpoint: Callable[[int], None] | None = None) -> FitStats:
        """Train until ``cfg.steps``. ``every`` maps an interval to a callback(step) whose dict is logged;
        ``checkpoint(step)`` runs every ``cfg.checkpoint_every`` steps (the trainer saves the final state itself)."""
        cfg = self.cfg
        compute, data_wait, images, timed = 0.0, 0.0, 0, 0
        started = self._fit_started = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True,
                   mininterval=1.0, disable=not self.ctx.is_main or bars_disabled())
        t_data = time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            lr = lr_at(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            terms, loss = self.compute(step_fn, batch)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            if after_step is not None:
                after_step()
            self.step += 1
            t1 = time.perf_counter()
            if self.step > 2:  # the first steps include one-off warm-up costs
                compute += t1 - t0
                data_wait += t0 - t_data
                images += len(batch) * self.ctx.world_size
                timed += 1
            record = None
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                record = {"step": self.step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                          "lr": lr, "images_per_s": len(batch) * self.ctx.world_size / max(t1 - t_data, 1e-9),
                          "elapsed_s": t1 - started}  # wall time since this process started training
            for interval, callback in (every or {}).items():
                if interval and (self.step % interval == 0 or self.step == cfg.steps):
                    extra = callback(self.step)
                    if extra:
                        record = {**(record or {"step": self.step}), **extra}
            if record is not None:
                self.log(record)
                bar.set_postfix(loss=f"{record.get('loss', loss.item()):.3f}", refresh=False)
            if checkpoint is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self._checkpoint(checkpoint)
            bar.update(1)
            t_data = time.perf_counter()
        bar.close()
        wall = self.wall_time_s()
        self._fit_started, self.wall_before = None, wall
        if not timed:  # nothing measured: null in summary.json, never a made-up 0.0
            return FitStats(self.step, wall, None, None, None)
        return FitStats(self.step, wall, compute / timed, data_wait / timed, images / max(compute + data_wait, 1e-9))

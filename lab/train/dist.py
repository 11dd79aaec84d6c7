"""Several processes, one global batch: torchrun's environment, gathering with gradients, gradient averaging.

``torchrun --nproc_per_node N -m lab distill ...`` starts N copies of a trainer; each reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, joins the process group
(NCCL on CUDA, gloo on CPU) and trains on its contiguous shard of every step's global batch.
Without torchrun there is one process and every function here is a no-op.

Why the gradients equal the one-process run's with the same global batch: every rank
gathers the student's embeddings of its shard with an autograd ``all_gather`` and then
computes the *whole* global loss L, so every N×N contrastive or relational term sees the
global batch. The gather's backward sums the ranks' gradients of each row, so rank r's
parameters receive W·Σ_{i∈r} ∂L/∂e_i·∂e_i/∂θ (W processes), plus — for parameters used
after the gather (projection heads, learnable scales, the logit scale) — the full ∂L/∂θ,
identical on every rank. Averaging the gradients over the ranks
(:func:`average_gradients`) gives exactly Σ_i ∂L/∂e_i·∂e_i/∂θ + ∂L/∂θ: the one-process
gradient. Only rank 0 writes logs, checkpoints and the summary.
"""

from __future__ import annotations

import atexit
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lab.errors import LabError

BUCKET_ELEMENTS = 2**24  # gradients are averaged in flat buckets of at most this many elements


@dataclass(frozen=True)
class Context:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, rows: int) -> slice:
        """This rank's contiguous rows of a global batch of ``rows`` (rank 0 first, as ``gather`` orders them)."""
        local = rows // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)


SINGLE = Context()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError as err:
        raise LabError(f"The environment variable {name}={os.environ[name]!r} is not a number; "
                       f"launch with torchrun, which sets it.") from err


def from_env() -> Context:
    """This process's place as torchrun's environment describes it (one process without torchrun)."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return SINGLE
    return Context(_env_int("RANK", 0), world_size, _env_int("LOCAL_RANK", 0))


def init(device: torch.device) -> Context:
    """Join torchrun's process group (a no-op without torchrun) and return this process's place."""
    ctx = from_env()
    if ctx.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(shutdown)
    return ctx


def local_device(device: torch.device, ctx: Context) -> torch.device:
    """``cuda`` becomes this process's GPU (``cuda:LOCAL_RANK``) under torchrun."""
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, ctx: Context) -> None:
    if batch_size % ctx.world_size:
        raise LabError(f"train.batch_size={batch_size} does not split evenly over {ctx.world_size} processes; "
                       f"use a multiple of {ctx.world_size}.")


class _GatherRows(torch.autograd.Function):
    """all_gather of equal shards; backward: the gradient summed over the ranks, this rank's rows of it."""

    @staticmethod
    def forward(fn_ctx, x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        fn_ctx.rows, fn_ctx.rank = x.shape[0], rank
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(fn_ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[fn_ctx.rank * fn_ctx.rows:(fn_ctx.rank + 1) * fn_ctx.rows], None, None


def gather(x: torch.Tensor | None, ctx: Context) -> torch.Tensor | None:
    """Every rank's rows, concatenated in rank order; gradients flow back to each rank's own rows."""
    if x is None or not ctx.enabled:
        return x
    if x.requires_grad:
        return _GatherRows.apply(x, ctx.rank, ctx.world_size)
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def average_gradients(params: list[torch.nn.Parameter], ctx: Context) -> None:
    """Average every gradient over the ranks (in flat buckets); every rank then holds the same gradient."""
    if not ctx.enabled:
        return
    bucket, size = [], 0
    for grad in (p.grad for p in params if p.grad is not None):
        bucket.append(grad)
        size += grad.numel()
        if size >= BUCKET_ELEMENTS:
            _average(bucket, ctx.world_size)
            bucket, size = [], 0
    if bucket:
        _average(bucket, ctx.world_size)


def _average(grads: list[torch.Tensor], world_size: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_from_main(modules, ctx: Context) -> None:
    """Give every rank rank 0's parameters and buffers (they start identical whatever each rank drew)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, 0)


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


@contextmanager
def main_first(ctx: Context):
    """Rank 0 runs the block first (e.g. builds a cache); the others wait, then run it (and read the cache)."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)

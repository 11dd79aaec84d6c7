"""Where a run's logged records go: ``metrics.jsonl`` always (the contract), TensorBoard and W&B on request.

``train.logger=tensorboard`` also writes TensorBoard event files to ``<run>/tensorboard/``: every
numeric key of every record (each loss term, ``lr``, ``images_per_s``, ``eval/…``) as a scalar at
its step, and the final metrics of the summary at the last step. Read them with
``tensorboard --logdir runs``. A resumed run opens its writer with ``purge_step`` = the checkpoint's
step + 1, so TensorBoard drops what the interrupted run logged past its checkpoint: no step twice.

``train.logger=wandb`` sends the same numbers to Weights & Biases (``wandb.log`` at each step, the
final metrics into the run's summary); ``train.logger=tensorboard+wandb`` does both. wandb is
imported only when chosen; its own variables apply (``WANDB_MODE=offline``, ``WANDB_DIR`` — by
default the files go under ``<run>/wandb/`` — ``WANDB_PROJECT``, default ``clip-distill-lab``).
Only rank 0 writes, as for ``metrics.jsonl``.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

from lab.errors import LabError

LOGGERS = ("jsonl", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_PROJECT = "clip-distill-lab"


def logger_kinds(kind: str) -> set[str]:
    """``train.logger``'s loggers: one name, or several joined by ``+`` (``tensorboard+wandb``)."""
    kinds = {k.strip() for k in str(kind).split("+")}
    unknown = sorted(kinds - set(LOGGERS))
    if unknown:
        raise LabError(f"Unknown train.logger '{kind}'; choose one of: {', '.join(LOGGERS)} "
                       f"(or several joined by '+', e.g. tensorboard+wandb).")
    return kinds


def check_logger(kind: str) -> None:
    logger_kinds(kind)


def _numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)}


def _import_wandb():
    try:
        import wandb
    except ImportError as err:
        raise LabError("train.logger=wandb needs the wandb package; install it with "
                       "`pip install -r requirements.txt` (or choose train.logger=tensorboard).") from err
    return wandb


class RunLogger:
    """``log(record)`` appends to ``metrics.jsonl`` through the run writer and mirrors numbers to TensorBoard / W&B.

    The TensorBoard writer opens at the first record, so that :meth:`resume` (called after a checkpoint is
    restored) can set its ``purge_step`` first.
    """

    def __init__(self, writer, kind: str = "jsonl", is_main: bool = True, config: dict | None = None):
        kinds = logger_kinds(kind)
        self.writer, self.board, self.run, self.last_step, self.resume_step = writer, None, None, 0, 0
        self.tensorboard = "tensorboard" in kinds and is_main
        if "wandb" in kinds and is_main:  # before any training: a missing package stops the run at once
            wandb = _import_wandb()
            path = Path(writer.path)
            directory = os.environ.get("WANDB_DIR") or str(path)
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=path.name,
                                  dir=directory, config=config or {}, reinit="create_new")

    def resume(self, step: int) -> None:
        """The run continues after a checkpoint at ``step``: TensorBoard purges the events logged after it."""
        self.resume_step = self.last_step = int(step)

    def _open_board(self):
        if self.board is None and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.resume_step + 1 if self.resume_step else None
            self.board = SummaryWriter(log_dir=str(Path(self.writer.path) / TENSORBOARD_DIR), purge_step=purge)
        return self.board

    def log(self, record: dict) -> None:
        self.writer.log(record)
        self.last_step = int(record.get("step", self.last_step))
        self._scalars(record, self.last_step)

    def _scalars(self, values: dict, step: int) -> None:
        scalars = _numbers(values)
        board = self._open_board()
        if board is not None:
            for key, value in scalars.items():
                board.add_scalar(key, value, step)
            board.flush()
        if self.run is not None and scalars:
            self.run.log(scalars, step=step)

    def close(self, final_metrics: dict | None = None) -> None:
        """Write the final metrics (``final/<key>``) at the last step and close the event file and the W&B run."""
        final = _numbers({f"final/{k}": v for k, v in (final_metrics or {}).items()})
        board = self._open_board()
        if board is not None:
            for key, value in final.items():
                board.add_scalar(key, value, self.last_step)
            board.close()
            self.board = None
        self.tensorboard = False
        if self.run is not None:
            self.run.summary.update(final)
            self.run.finish()
            self.run = None


def check_logger_available(kind: str) -> None:
    """A run's refusal before any model loads: an unknown ``train.logger``, or ``wandb`` chosen but not installed."""
    if "wandb" in logger_kinds(kind):
        _import_wandb()

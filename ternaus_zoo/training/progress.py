"""The fraction of a run done, which every learning-rate schedule follows: optimiser steps against the run's
steps, or seconds of training against a time budget (``model.train_minutes``).

:class:`TrainingClock` counts training time only (validation excluded), is saved in the checkpoint and restored
on resume, stops the run when the budget is spent and, with ``val_every_seconds``, spaces validation by the same
clock. Its time source is injectable, so tests drive it with a fake clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

# progress is exact in the steps and the clock's readings (a cycle of 20 steps ends at step 20, not at 19.999...);
# the shapes take floats too
Progress = Fraction | float


class TrainingClock(Callback):
    """Seconds of training against ``budget_seconds``: running from the start of training, paused while it
    validates, saved in the checkpoint (``state_dict``) and continued from it on resume.

    Before every optimiser step all processes take rank 0's reading (:attr:`seconds`), so that they agree on
    the rate, on when to validate and on when to stop. Once the budget is spent, training stops
    (``trainer.should_stop``: Lightning then validates once more and the epoch's end writes ``last.ckpt``).

    Args:
        budget_seconds: the training time of the whole run.
        val_every_seconds: validate after this much training time since the last validation, instead of at
            epoch ends (``None``: Lightning's own ``check_val_every_n_epoch``).
        time_source: seconds from an arbitrary origin (a fake one in tests).
    """

    def __init__(
        self,
        budget_seconds: float,
        val_every_seconds: float | None = None,
        time_source: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_seconds <= 0 or (val_every_seconds is not None and val_every_seconds <= 0):
            raise ValueError(f"budget and validation interval must be > 0, got {budget_seconds}, {val_every_seconds}")
        self.budget_seconds = budget_seconds
        self.val_every_seconds = val_every_seconds
        self.time_source = time_source
        self.seconds = 0.0  # the last reading, which the schedule, the stop and the validations follow
        self.validated_at = 0.0
        self._banked = 0.0  # training time before the current stretch
        self._since: float | None = None  # when the current stretch began; None while paused
        self._paused_for_validation = False

    @property
    def elapsed(self) -> float:
        """Training seconds so far, the running stretch included."""
        running = self.time_source() - self._since if self._since is not None else 0.0
        return self._banked + running

    @property
    def fraction(self) -> Fraction:
        """The share of the budget spent at the last reading, at most 1 (exact: a reading at a cycle's end
        is not a rounding error short of it)."""
        return min(Fraction(1), Fraction(self.seconds) / Fraction(self.budget_seconds))

    def _start(self) -> None:
        if self._since is None:
            self._since = self.time_source()

    def _pause(self) -> None:
        if self._since is not None:
            self._banked = self.elapsed
            self._since = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.val_every_seconds is not None:
            # validation follows this clock alone, never the epoch count
            trainer.check_val_every_n_epoch = None
        self.seconds = self._banked
        if self.fraction >= 1:  # resumed from the end of a finished run: nothing is left to train
            trainer.should_stop = True
        self._start()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._paused_for_validation = self._since is not None
        self._pause()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:  # each validation's place on the clock, for curves of score against time
            pl_module.log("train/minutes", self.seconds / 60)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._paused_for_validation:
            self.validated_at = self.seconds
            self._paused_for_validation = False
            self._start()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # read here, not at the batch's end: Lightning steps the schedule right after the optimiser, before
        # on_train_batch_end, and the rate of the next step should follow the time this one took
        self.seconds = float(trainer.strategy.broadcast(self.elapsed, src=0))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.fraction >= 1:
            trainer.should_stop = True  # Lightning validates at a stop, whatever val_check_batch says
        if self.val_every_seconds is not None:
            # Lightning's val_check_interval counts batches or wall time, not this clock: it validates after a
            # batch whose index + 1 is a multiple of val_check_batch, so 1 makes this batch's end a check
            due = self.seconds - self.validated_at >= self.val_every_seconds
            trainer.val_check_batch = 1 if due else sys.maxsize

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.elapsed, "validated_at": self.validated_at}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._banked = self.seconds = float(state_dict["elapsed"])
        self.validated_at = float(state_dict["validated_at"])
        self._since = None


@dataclass(frozen=True)
class RunProgress:
    """The fraction of the run done after ``step`` optimiser steps, in [0, 1].

    Without a clock: ``step / total_steps``. With one: the clock's share of its budget, or the share of the
    steps where that is larger (a run with ``max_epochs`` as well as a budget anneals by whichever ends first).
    """

    total_steps: int | None = None
    clock: TrainingClock | None = None

    def __post_init__(self) -> None:
        if self.clock is None and (self.total_steps is None or self.total_steps < 1):
            raise ValueError(f"a run without a time budget needs total_steps >= 1, got {self.total_steps}")

    @property
    def counts_steps(self) -> bool:
        """Whether progress is a number of steps, so that lengths given in steps or epochs are fractions of it."""
        return self.clock is None

    def __call__(self, step: int) -> Progress:
        by_steps = Fraction(min(step, self.total_steps), self.total_steps) if self.total_steps else Fraction(0)
        return by_steps if self.clock is None else max(by_steps, self.clock.fraction)

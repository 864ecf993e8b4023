"""Learning-rate schedules as functions of the run's progress.

Every schedule is one shape: the multiplier of each parameter group's base rate as a function of the fraction
of the run done (:mod:`ternaus_zoo.training.progress`: steps against the run's steps, or training time against
a budget), applied every step by a ``LambdaLR``. torch's ``OneCycleLR``, ``CyclicLR`` and
``CosineAnnealingWarmRestarts`` count steps, which a time budget does not fix, so their shapes are written here;
over a run of known steps they give torch's rates (tests/training/test_schedules.py). The Carvana step-cyclic
schedule (piecewise-constant rates repeated every cycle, a snapshot at each cycle's end) is one torch lacks.

Cycle lengths are fractions of the run: ``cycles`` (the run holds that many, and ends at a cycle's end) or, in a
run that counts steps, ``cycle_epochs`` converted to its share of the steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ternaus_zoo.errors import BadValueError
from ternaus_zoo.training.progress import Progress, RunProgress

SCHEDULES = ("constant", "cyclic", "onecycle", "cosine_restarts", "step_cyclic")
# the schedules made of cycles, whose length `cycles` or `cycle_epochs` gives
CYCLIC_SCHEDULES = ("cyclic", "cosine_restarts", "step_cyclic")
# the schedule_shape options each schedule reads; any other given option would be silently ignored
APPLICABLE_OPTIONS = {
    "constant": (),
    "cyclic": ("max_lr", "base_lr", "mode", "gamma", "cycles", "cycle_epochs"),
    "onecycle": ("max_lr", "pct_start"),
    "cosine_restarts": ("cycles", "cycle_epochs", "cycle_mult"),
    "step_cyclic": ("factors", "epochs_per_rate", "cycles"),
}
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ONECYCLE_DIV_FACTOR = 25.0  # torch's OneCycleLR: it starts at peak / 25 ...
ONECYCLE_FINAL_DIV_FACTOR = 1e4  # ... and ends at that start / 1e4


def check_scheduler_options(name: str, options: Mapping[str, Any], *, timed: bool = False) -> None:
    """Refuse options that ``name`` would ignore, ``exp_range`` at ``gamma=1`` (that is ``triangular``), and with a
    time budget (``timed``) lengths in epochs or steps, which the budget does not fix.

    Raises:
        BadValueError: naming the option and what the schedule takes.
    """
    inapplicable = sorted(set(options) - set(APPLICABLE_OPTIONS[name]))
    if inapplicable:
        raise BadValueError(
            f"scheduler_kwargs {inapplicable} do not apply to the {name!r} schedule, which takes "
            f"{list(APPLICABLE_OPTIONS[name]) or 'no options'}"
        )
    mode, gamma = options.get("mode", "triangular"), options.get("gamma", 1.0)
    if name == "cyclic" and mode not in CYCLIC_MODES:
        raise BadValueError(f"scheduler_kwargs mode={mode!r}: the cyclic modes are {list(CYCLIC_MODES)}")
    if name == "cyclic" and mode == "exp_range" and not 0 < gamma < 1:
        meaning = "is the triangular mode" if gamma == 1 else "does not shrink the peak"
        raise BadValueError(f"scheduler_kwargs mode='exp_range' needs 0 < gamma < 1; gamma={gamma} {meaning}")
    if name == "cyclic" and mode != "exp_range" and "gamma" in options:
        raise BadValueError(f"scheduler_kwargs gamma applies to mode='exp_range' only, not mode={mode!r}")
    if not 0 < options.get("pct_start", 0.3) < 1:
        raise BadValueError(f"scheduler_kwargs pct_start must be in (0, 1), got {options['pct_start']}")
    cycles = options.get("cycles")
    if cycles is not None and (not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1):
        raise BadValueError(f"scheduler_kwargs cycles must be a whole number >= 1, got {cycles!r}")
    mult = options.get("cycle_mult", 1)
    if not isinstance(mult, int) or isinstance(mult, bool) or mult < 1:
        raise BadValueError(f"scheduler_kwargs cycle_mult must be a whole number >= 1, got {mult!r}")
    if cycles is not None and "cycle_epochs" in options:
        raise BadValueError("scheduler_kwargs cycles and cycle_epochs both give the cycle length: give one")
    if timed and "cycle_epochs" in options:
        raise BadValueError(
            "scheduler_kwargs cycle_epochs counts epochs, which model.train_minutes does not fix: give "
            "scheduler_kwargs cycles (the number of cycles in the run) instead"
        )
    if timed and name in CYCLIC_SCHEDULES and cycles is None:
        raise BadValueError(
            f"the {name!r} schedule with model.train_minutes needs scheduler_kwargs cycles (the number of cycles "
            "in the run)"
        )
    if timed and name == "cyclic" and mode == "exp_range":
        raise BadValueError(
            "scheduler_kwargs mode='exp_range' shrinks the peak by gamma every step, which model.train_minutes "
            "does not fix: use mode='triangular2' (the peak halves every cycle)"
        )


class Shape(Protocol):
    """The multiplier of the base rates at a progress in [0, 1]."""

    def __call__(self, progress: Progress) -> float: ...


def _cosine(start: float, end: float, t: Progress) -> float:
    """From ``start`` at ``t = 0`` to ``end`` at ``t = 1`` along half a cosine (torch's ``cos`` annealing)."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class OneCycle:
    """torch's ``OneCycleLR`` shape: from ``peak / 25`` up to ``peak`` over the first ``pct_start`` of the run,
    then down to ``peak / 25 / 1e4`` at its end, both along half a cosine."""

    peak: float
    pct_start: float = 0.3

    def __call__(self, progress: Progress) -> float:
        start = self.peak / ONECYCLE_DIV_FACTOR
        if progress < self.pct_start:
            return _cosine(start, self.peak, progress / self.pct_start)
        return _cosine(self.peak, start / ONECYCLE_FINAL_DIV_FACTOR, (progress - self.pct_start) / (1 - self.pct_start))


@dataclass(frozen=True)
class Triangle:
    """torch's ``CyclicLR`` shape: from ``floor`` up to ``peak`` over half a cycle and back over the other half;
    ``triangular2`` halves the height every cycle, ``exp_range`` multiplies it by ``gamma`` every step (of
    ``total_steps``)."""

    floor: float
    peak: float
    cycle: Progress
    mode: str = "triangular"
    gamma: float = 1.0
    total_steps: int | None = None

    def completed_cycles(self, progress: Progress) -> int:
        return math.floor(progress / self.cycle)

    def __call__(self, progress: Progress) -> float:
        done = self.completed_cycles(progress)
        x = progress / self.cycle - done
        height = (self.peak - self.floor) * (1 - abs(2 * x - 1))
        if self.mode == "triangular2":
            height /= 2**done
        elif self.mode == "exp_range":
            if self.total_steps is None:
                raise ValueError("exp_range decays every step: it needs a run of known steps")
            height *= self.gamma ** (progress * self.total_steps)
        return self.floor + height


@dataclass(frozen=True)
class CosineRestarts:
    """torch's ``CosineAnnealingWarmRestarts`` shape (to 0): from 1 to 0 along half a cosine over each period, the
    first ``first`` long and each next one ``mult`` times the one before."""

    first: Progress
    mult: int = 1

    def _period(self, progress: Progress) -> tuple[int, Progress, Progress]:
        """The index, start and length of the period ``progress`` lies in."""
        if self.mult == 1:
            index = math.floor(progress / self.first)
            return index, index * self.first, self.first
        index, start, length = 0, Fraction(0), self.first
        while progress >= start + length:
            index, start, length = index + 1, start + length, length * self.mult
        return index, start, length

    def completed_cycles(self, progress: Progress) -> int:
        return self._period(progress)[0]

    def __call__(self, progress: Progress) -> float:
        _, start, length = self._period(progress)
        return _cosine(1.0, 0.0, (progress - start) / length)


@dataclass(frozen=True)
class StepCyclicRates:
    """Multipliers of the base rate, each held for ``lengths[i]`` of the run, the whole repeated every cycle.

    TernausNet's Carvana entry trained with rates like 1e-4 then 1e-5 per cycle and kept the model at the end of
    every cycle: ``factors=(1.0, 0.1)`` with lengths of 3 and 1 epochs' share of the run.
    """

    factors: tuple[float, ...]
    lengths: tuple[Progress, ...]

    def __post_init__(self) -> None:
        if len(self.factors) != len(self.lengths) or not self.factors:
            raise ValueError(f"factors {self.factors} and lengths {self.lengths} must be non-empty and of one length")
        if any(length <= 0 for length in self.lengths):
            raise ValueError(f"every length must be > 0, got {self.lengths}")

    @property
    def cycle_length(self) -> Progress:
        return sum(self.lengths, Fraction(0))

    def completed_cycles(self, progress: Progress) -> int:
        return math.floor(progress / self.cycle_length)

    def __call__(self, progress: Progress) -> float:
        position = progress % self.cycle_length
        for factor, length in zip(self.factors, self.lengths, strict=True):
            if position < length:
                return factor
            position -= length
        return self.factors[-1]  # a float position a rounding error short of the cycle's end


def _steps_share(epochs: float, progress: RunProgress, steps_per_epoch: int | None) -> int:
    """``epochs`` as a whole number of steps (at least one), for a run that counts steps."""
    if not progress.counts_steps or steps_per_epoch is None:
        raise ValueError("lengths in epochs need a run of known steps and epochs: give `cycles` instead")
    return max(1, round(epochs * steps_per_epoch))


def schedule_shape(
    name: str,
    *,
    lr: float,
    progress: RunProgress,
    steps_per_epoch: int | None,
    max_lr: float | None = None,
    base_lr: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    cycles: int | None = None,
    cycle_epochs: float = 2.0,
    cycle_mult: int = 1,
    pct_start: float = 0.3,
    factors: Sequence[float] = (1.0, 0.1),
    epochs_per_rate: Sequence[float] = (3.0, 1.0),
) -> Shape | None:
    """The multiplier of the base rates as a function of progress (``None`` for ``constant``).

    Args:
        name: one of :data:`SCHEDULES`.
        lr: the optimiser's (first group's) rate, which the multipliers scale.
        progress: the run's progress; lengths in epochs are converted to its steps.
        steps_per_epoch: optimiser steps per epoch (``None`` where unknown).
        max_lr / base_lr: peak and floor of ``cyclic`` and peak of ``onecycle`` (default: ``lr``; ``base_lr``
            defaults to a tenth of the peak).
        mode / gamma: ``CyclicLR``'s ``triangular``, ``triangular2`` or ``exp_range``.
        cycles: the number of cycles in the run (``cyclic``, ``cosine_restarts``, ``step_cyclic``), so that it ends
            at a cycle's end; with a time budget, the only way to give a cycle's length.
        cycle_epochs: otherwise the length of a cycle in epochs (``cyclic``: up and down; ``cosine_restarts``:
            the first period).
        cycle_mult: ``cosine_restarts`` period multiplier.
        factors / epochs_per_rate: the ``step_cyclic`` rates (as multipliers) and their lengths in epochs (with
            ``cycles``: their shares of a cycle).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    peak = (max_lr if max_lr is not None else lr) / lr
    if name == "constant":
        return None
    if name == "onecycle":
        return OneCycle(peak=peak, pct_start=pct_start)
    if name == "cyclic":
        if cycles is not None:
            cycle: Progress = Fraction(1, cycles)
        else:  # CyclicLR's step_size_up is half the cycle, rounded down
            steps = 2 * max(1, _steps_share(cycle_epochs, progress, steps_per_epoch) // 2)
            cycle = Fraction(steps, progress.total_steps)
        floor = base_lr / lr if base_lr is not None else peak / 10
        total = progress.total_steps if progress.counts_steps else None
        return Triangle(floor=floor, peak=peak, cycle=cycle, mode=mode, gamma=gamma, total_steps=total)
    if name == "cosine_restarts":
        if cycles is not None:  # the periods of the run add up to 1
            first: Progress = Fraction(1, sum(cycle_mult**index for index in range(cycles)))
        else:
            first = Fraction(_steps_share(cycle_epochs, progress, steps_per_epoch), progress.total_steps)
        return CosineRestarts(first=first, mult=cycle_mult)
    if cycles is not None:
        shares = [Fraction(epochs) for epochs in epochs_per_rate]
        lengths = tuple(share / sum(shares) / cycles for share in shares)
    else:
        lengths = tuple(
            Fraction(_steps_share(epochs, progress, steps_per_epoch), progress.total_steps)
            for epochs in epochs_per_rate
        )
    return StepCyclicRates(factors=tuple(factors), lengths=lengths)


def progress_scheduler(optimizer: Optimizer, shape: Shape, progress: RunProgress) -> LambdaLR:
    """A ``LambdaLR``, stepped every optimiser step, setting each group to its base rate times ``shape(progress)``.

    The rate function is a closure, which ``LambdaLR.state_dict`` leaves out: checkpoints hold plain numbers.
    """

    def multiplier(step: int) -> float:
        return float(shape(progress(step)))

    return LambdaLR(optimizer, lr_lambda=multiplier)


def build_scheduler(
    optimizer: Optimizer, name: str, *, progress: RunProgress, steps_per_epoch: int | None, **options: Any
) -> LambdaLR | None:
    """The per-step schedule ``name`` for ``optimizer`` (whose group rates are the base rates, their ratios kept),
    following ``progress``; ``options``: those of :func:`schedule_shape`. ``None`` for ``constant``."""
    lr = optimizer.param_groups[0]["lr"]
    shape = schedule_shape(name, lr=lr, progress=progress, steps_per_epoch=steps_per_epoch, **options)
    return None if shape is None else progress_scheduler(optimizer, shape, progress)

"""Learning-rate schedules stepped once per batch.

torch's ``CyclicLR``, ``OneCycleLR`` and ``CosineAnnealingWarmRestarts`` do the work; the Carvana
step-cyclic schedule (piecewise-constant rates repeated every cycle, with a snapshot at each cycle's
end) is the one torch lacks, so it is a ``LambdaLR`` over :class:`StepCyclicRates`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    CyclicLR,
    LambdaLR,
    LRScheduler,
    OneCycleLR,
)

from ternaus_zoo.errors import BadValueError

SCHEDULES = ("constant", "cyclic", "onecycle", "cosine_restarts", "step_cyclic")
# the build_scheduler options each schedule reads; any other given option would be silently ignored
APPLICABLE_OPTIONS = {
    "constant": (),
    "cyclic": ("max_lr", "base_lr", "mode", "gamma", "cycle_epochs"),
    "onecycle": ("max_lr", "pct_start"),
    "cosine_restarts": ("cycle_epochs", "cycle_mult"),
    "step_cyclic": ("factors", "epochs_per_rate"),
}
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def check_scheduler_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse options that ``name`` would ignore, and ``exp_range`` at ``gamma=1`` (that is ``triangular``).

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


@dataclass(frozen=True)
class StepCyclicRates:
    """Multipliers of the base rate, each held for ``lengths[i]`` steps, the whole repeated every cycle.

    TernausNet's Carvana entry trained with rates like 1e-4 then 1e-5 per cycle and kept the model at
    the end of every cycle: with ``factors=(1.0, 0.1)`` and ``lengths=(3 * epoch, 1 * epoch)``.
    """

    factors: tuple[float, ...]
    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.factors) != len(self.lengths) or not self.factors:
            raise ValueError(f"factors {self.factors} and lengths {self.lengths} must be non-empty and of one length")
        if any(length < 1 for length in self.lengths):
            raise ValueError(f"every length must be at least one step, got {self.lengths}")

    @property
    def cycle_steps(self) -> int:
        return sum(self.lengths)

    def __call__(self, step: int) -> float:
        position = step % self.cycle_steps
        for factor, length in zip(self.factors, self.lengths, strict=True):
            if position < length:
                return factor
            position -= length
        raise AssertionError("unreachable: position is below the cycle length")


def build_scheduler(
    optimizer: Optimizer,
    name: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    max_lr: float | None = None,
    base_lr: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    cycle_epochs: float = 2.0,
    cycle_mult: int = 1,
    pct_start: float = 0.3,
    factors: Sequence[float] = (1.0, 0.1),
    epochs_per_rate: Sequence[float] = (3.0, 1.0),
) -> LRScheduler | None:
    """A per-step schedule for ``optimizer`` (whose group rates are the base rates).

    Args:
        name: one of :data:`SCHEDULES`.
        total_steps: steps of the whole run (``onecycle``).
        steps_per_epoch: optimiser steps per epoch; cycle lengths are given in epochs.
        max_lr / base_lr: peak and floor of ``cyclic`` and peak of ``onecycle`` (default: the
            optimiser's rate; ``base_lr`` defaults to a tenth of it).
        mode / gamma: ``CyclicLR``'s ``triangular``, ``triangular2`` or ``exp_range``.
        cycle_epochs: length of a cycle (``cyclic``: up and down; ``cosine_restarts``: first period).
        cycle_mult: ``cosine_restarts`` period multiplier.
        factors / epochs_per_rate: the ``step_cyclic`` rates (as multipliers) and their lengths.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    lr = optimizer.param_groups[0]["lr"]
    cycle_steps = max(1, round(cycle_epochs * steps_per_epoch))
    if name == "constant":
        return None
    if name == "cyclic":
        peak = max_lr if max_lr is not None else lr
        floor = base_lr if base_lr is not None else peak / 10
        scale = [group["lr"] / lr for group in optimizer.param_groups]  # keeps discriminative ratios
        return CyclicLR(
            optimizer,
            base_lr=[floor * s for s in scale],
            max_lr=[peak * s for s in scale],
            step_size_up=max(1, cycle_steps // 2),
            mode=mode,
            gamma=gamma,
            cycle_momentum=False,  # Adam has no `momentum` to cycle
        )
    if name == "onecycle":
        peak = max_lr if max_lr is not None else lr
        scale = [group["lr"] / lr for group in optimizer.param_groups]
        return OneCycleLR(
            optimizer,
            max_lr=[peak * s for s in scale],
            total_steps=total_steps,
            pct_start=pct_start,
            cycle_momentum=False,
        )
    if name == "cosine_restarts":
        return CosineAnnealingWarmRestarts(optimizer, T_0=cycle_steps, T_mult=cycle_mult)
    return LambdaLR(optimizer, lr_lambda=step_cyclic_rates(steps_per_epoch, factors, epochs_per_rate))


def step_cyclic_rates(
    steps_per_epoch: int, factors: Sequence[float] = (1.0, 0.1), epochs_per_rate: Sequence[float] = (3.0, 1.0)
) -> StepCyclicRates:
    """The ``step_cyclic`` multipliers with lengths converted from epochs to steps."""
    lengths = tuple(max(1, round(epochs * steps_per_epoch)) for epochs in epochs_per_rate)
    return StepCyclicRates(factors=tuple(factors), lengths=lengths)

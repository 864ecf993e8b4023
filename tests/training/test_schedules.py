"""Each schedule's shape, read back per step from the optimiser: over a run of known steps, torch's rates."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from ternaus_zoo.training import StepCyclicRates, build_scheduler
from ternaus_zoo.training.progress import RunProgress
from ternaus_zoo.training.schedules import schedule_shape


def _rates(name: str, steps: int, lr: float = 1.0, steps_per_epoch: int = 10, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    progress = RunProgress(total_steps=steps)
    scheduler = build_scheduler(optimizer, name, progress=progress, steps_per_epoch=steps_per_epoch, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_constant():
    assert _rates("constant", 5, lr=0.1) == [0.1] * 5


def test_cyclic_triangular_goes_up_and_down_between_base_and_max():
    rates = _rates("cyclic", 40, max_lr=1.0, base_lr=0.1, cycle_epochs=2)  # 20 steps a cycle, 10 up
    assert rates[0] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(1.0)
    assert rates[20] == pytest.approx(0.1)
    assert rates[5] == pytest.approx(0.55)
    assert rates[30] == pytest.approx(1.0)


def test_cyclic_triangular2_halves_the_amplitude_each_cycle():
    rates = _rates("cyclic", 40, max_lr=1.0, base_lr=0.0, cycle_epochs=2, mode="triangular2")
    assert rates[10] == pytest.approx(1.0)
    assert rates[30] == pytest.approx(0.5)


def test_cyclic_exp_range_decays_the_peak():
    rates = _rates("cyclic", 40, max_lr=1.0, base_lr=0.0, cycle_epochs=2, mode="exp_range", gamma=0.9)
    assert rates[10] == pytest.approx(0.9**10)
    assert rates[30] == pytest.approx(0.9**30)


def test_onecycle_peaks_at_pct_start_and_ends_low():
    rates = _rates("onecycle", 100, max_lr=1.0, pct_start=0.3)
    assert max(rates) == pytest.approx(1.0, rel=1e-3)
    assert rates.index(max(rates)) in (29, 30)
    assert rates[0] == pytest.approx(1.0 / 25)
    assert rates[-1] < 1e-3


def test_cosine_restarts_returns_to_the_base_rate_every_period():
    rates = _rates("cosine_restarts", 30, lr=1.0, cycle_epochs=1)  # 10 steps a period
    assert rates[0] == rates[10] == rates[20] == pytest.approx(1.0)
    assert rates[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert rates[9] < 0.05


def test_step_cyclic_is_piecewise_constant_and_repeats():
    rates = _rates("step_cyclic", 16, lr=1e-3, steps_per_epoch=2, factors=(1.0, 0.1), epochs_per_rate=(3, 1))
    cycle = [1e-3] * 6 + [1e-4] * 2
    assert rates == pytest.approx(cycle + cycle)


def test_step_cyclic_rates_validate():
    assert StepCyclicRates((1.0, 0.5), (0.5, 0.25)).cycle_length == 0.75
    with pytest.raises(ValueError, match="one length"):
        StepCyclicRates((1.0,), (0.5, 0.25))
    with pytest.raises(ValueError, match="must be > 0"):
        StepCyclicRates((1.0,), (0,))


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        _rates("linear", 2)


def test_cyclic_keeps_discriminative_ratios():
    encoder, decoder = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [decoder], "lr": 1e-3}, {"params": [encoder], "lr": 1e-4}])
    build_scheduler(
        optimizer, "cyclic", progress=RunProgress(total_steps=10), steps_per_epoch=10, max_lr=1e-3, base_lr=1e-4
    )
    assert optimizer.param_groups[1]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"] / 10)


def _torch_rates(scheduler_class, steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_class(optimizer, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    ("mode", "gamma"), [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.97)], ids=["tri", "tri2", "exp"]
)
def test_cyclic_gives_torchs_rates_at_every_step(mode, gamma):
    # 1.3 epochs of 7 steps: a 9-step cycle, which CyclicLR rounds to 4 steps up and 4 down
    options = {"gamma": gamma} if mode == "exp_range" else {}
    ours = _rates("cyclic", 50, steps_per_epoch=7, max_lr=1.0, base_lr=0.1, cycle_epochs=1.3, mode=mode, **options)
    theirs = _torch_rates(
        torch.optim.lr_scheduler.CyclicLR,
        50,
        base_lr=0.1,
        max_lr=1.0,
        step_size_up=4,
        mode=mode,
        gamma=gamma,
        cycle_momentum=False,
    )
    assert ours == pytest.approx(theirs)


def test_cosine_restarts_with_growing_periods_gives_torchs_rates():
    ours = _rates("cosine_restarts", 60, steps_per_epoch=3, cycle_epochs=2, cycle_mult=2)
    theirs = _torch_rates(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts, 60, T_0=6, T_mult=2)
    assert ours == pytest.approx(theirs)


def test_onecycle_follows_torchs_curve_within_a_step():
    # torch puts the peak at step pct_start * steps - 1 and the floor at the last step; here they are at the
    # fractions pct_start and 1 of the run: the curves differ by less than one step's change
    ours = _rates("onecycle", 200, max_lr=1.0)
    theirs = _torch_rates(torch.optim.lr_scheduler.OneCycleLR, 200, max_lr=1.0, total_steps=200)
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 0.015


@pytest.mark.parametrize(
    ("name", "by_epochs", "by_cycles"),
    [
        ("cyclic", {"cycle_epochs": 2}, {"cycles": 2}),
        ("cosine_restarts", {"cycle_epochs": 2}, {"cycles": 2}),
        ("step_cyclic", {"epochs_per_rate": (1.5, 0.5)}, {"cycles": 2, "epochs_per_rate": (3, 1)}),
    ],
)
def test_cycles_split_the_run_like_cycle_epochs_of_the_same_length(name, by_epochs, by_cycles):
    # 40 steps of 10 an epoch: two cycles of 2 epochs
    assert _rates(name, 40, **by_epochs) == pytest.approx(_rates(name, 40, **by_cycles))


def test_cosine_restarts_cycles_with_growing_periods_end_the_run_annealed():
    progress = RunProgress(total_steps=70)
    shape = schedule_shape("cosine_restarts", lr=1.0, progress=progress, steps_per_epoch=None, cycles=3, cycle_mult=2)
    # periods of 1/7, 2/7 and 4/7 of the run
    assert [shape.completed_cycles(Fraction(step, 7)) for step in (0, 1, 2, 3, 6, 7)] == [0, 1, 1, 2, 2, 3]
    assert shape(Fraction(1, 7)) == shape(Fraction(3, 7)) == 1.0
    assert shape(Fraction(69, 70)) < 2e-3  # the last of 70 steps: near 0

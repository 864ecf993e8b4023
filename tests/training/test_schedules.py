"""Each schedule's shape, read back per step from the optimiser: over a run of known steps, torch's rates."""

from __future__ import annotations

import math

import pytest
import torch

from ternaus_zoo.training import StepCyclicRates, build_scheduler
from ternaus_zoo.training.progress import RunProgress


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

"""Simulated distributed synchronisation of torchmetrics states, without processes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def _state(metric: Metric, attr: str) -> torch.Tensor:
    value = getattr(metric, attr)
    if isinstance(value, list):  # a "cat" state: one all_gather of the locally concatenated list
        return dim_zero_cat(value) if value else torch.tensor([])
    return value


@pytest.fixture
def as_rank0_of_two():
    """``as_rank0_of_two(rank0, rank1)`` makes ``rank0``'s ``compute()`` sync as in a two-process run.

    torchmetrics gathers each state (in ``_reductions`` order) with ``dist_sync_fn(tensor, group)``, expecting one
    tensor per process; here the second one is ``rank1``'s state, then the declared ``dist_reduce_fx`` applies.
    """

    def install(rank0: Metric, rank1: Metric) -> None:
        attrs = list(rank0._reductions)
        calls = itertools.count()

        def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
            return [tensor, _state(rank1, attrs[next(calls) % len(attrs)])]

        rank0.dist_sync_fn = gather
        rank0.distributed_available_fn = lambda: True

    return install

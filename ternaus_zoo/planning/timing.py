"""How fast this machine trains and predicts a candidate recipe: short timed trials, in seconds.

The planner turns a wall-clock budget into steps from these numbers, so they are measured here, on the device
that will train (:func:`device_facts`), with the precision and memory format that training will use: a few
optimiser steps on random inputs of the planned patch and batch size (the model, loss and optimiser are the
package's own), and a few forward passes at the evaluation size. Warm-up steps are run and not counted, since
the first steps pay for allocation and kernel selection.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from ternaus_zoo.losses import build_loss
from ternaus_zoo.models import create_model
from ternaus_zoo.precision import fast_precision

Clock = Callable[[], float]


@dataclass(frozen=True)
class Device:
    """The device a plan is made for: ``kind`` (``"cpu"`` or ``"cuda"``), its name, cores, memory in GiB (CUDA:
    the GPU's), and the precision training will use (:func:`~ternaus_zoo.precision.fast_precision`, or 16-bit
    mixed precision on a CUDA device without bfloat16)."""

    kind: str
    name: str
    cpu_count: int
    memory_gib: float
    precision: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "cpu_count": self.cpu_count,
            "memory_gib": self.memory_gib,
            "precision": self.precision,
        }


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says, else ``"CPU"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_facts() -> Device:
    """The device Lightning's ``accelerator="auto"`` will train on."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        precision = "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
        return Device("cuda", properties.name, cpus, properties.total_memory / 2**30, precision)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else 0.0
    capability = torch.backends.cpu.get_cpu_capability()
    return Device("cpu", f"{cpu_name()} ({capability})", cpus, round(memory, 1), fast_precision())


def _autocast(device: Device) -> Any:
    if device.precision == "bf16-mixed":
        return torch.autocast(device.kind, dtype=torch.bfloat16)
    if device.precision == "16-mixed":
        return torch.autocast(device.kind, dtype=torch.float16)
    return nullcontext()


def _synchronize(device: Device) -> None:
    if device.kind == "cuda":
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Trial:
    """What one candidate was timed on: the registry model and its options, the classes and channels, the
    training patch side and batch, the loss config and the evaluation side (the padded working size)."""

    model: str
    model_kwargs: Mapping[str, Any]
    num_classes: int
    in_channels: int
    patch_size: int
    batch_size: int
    loss: Any
    eval_side: int


@dataclass(frozen=True)
class Timing:
    """Seconds an optimiser step of the trial's batch takes, seconds a forward pass of one image at the
    evaluation size takes, and the peak device memory of the training steps in GiB (CUDA; 0 on a CPU)."""

    step_s: float
    predict_s: float
    peak_memory_gib: float = 0.0


def time_trial(
    trial: Trial, device: Device, *, steps: int = 3, warmup: int = 1, clock: Clock = time.perf_counter
) -> Timing:
    """Time ``steps`` optimiser steps (after ``warmup`` uncounted ones) and as many evaluation forward passes.

    The inputs are random: the arithmetic of a step does not depend on the pixel values. Masks are random
    classes (or binary) of the trial's shape, so the loss does its real work.
    """
    generator = torch.Generator().manual_seed(0)
    target_device = torch.device(device.kind)
    model = create_model(
        trial.model, num_classes=trial.num_classes, in_channels=trial.in_channels, **dict(trial.model_kwargs)
    )
    model = model.to(target_device, memory_format=torch.channels_last).train()
    loss = build_loss(trial.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shape = (trial.batch_size, trial.in_channels, trial.patch_size, trial.patch_size)
    images = torch.randn(shape, generator=generator).to(target_device, memory_format=torch.channels_last)
    if trial.num_classes == 1:
        masks = torch.randint(0, 2, (trial.batch_size, trial.patch_size, trial.patch_size), generator=generator)
        masks = masks.float()
    else:
        masks = torch.randint(0, trial.num_classes, shape[:1] + shape[2:], generator=generator)
    masks = masks.to(target_device)
    if device.kind == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device):
            value = loss(model(images), masks)
        value.backward()
        optimizer.step()

    step_s = _time(train_step, device, steps, warmup, clock)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.kind == "cuda" else 0.0
    model.eval()
    single = torch.randn((1, trial.in_channels, trial.eval_side, trial.eval_side), generator=generator)
    single = single.to(target_device, memory_format=torch.channels_last)

    def predict_step() -> None:
        with torch.inference_mode(), _autocast(device):
            model(single)

    predict_s = _time(predict_step, device, steps, warmup, clock)
    return Timing(step_s=step_s, predict_s=predict_s, peak_memory_gib=peak)


def _time(function: Callable[[], None], device: Device, steps: int, warmup: int, clock: Clock) -> float:
    """Median seconds of ``steps`` calls of ``function`` after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    _synchronize(device)
    durations = []
    for _ in range(steps):
        start = clock()
        function()
        _synchronize(device)
        durations.append(clock() - start)
    return sorted(durations)[len(durations) // 2]

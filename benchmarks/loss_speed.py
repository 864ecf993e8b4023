"""Forward + backward time of every loss beside one UNet11 training step; writes benchmarks/results/losses.md.

    python benchmarks/loss_speed.py [--repeats 3] [--loss-repeats 3] [--batch 8] [--size 256]

Binary losses run on ``(B, 1, S, S)`` logits beside ``unet11`` with one class, multi-class losses on
``(B, 12, S, S)`` beside ``unet11`` with 12 classes (a step: forward, BCE / cross-entropy, backward, Adam).
After one warm-up of everything, each round times one model step then every loss ``--loss-repeats``
times, so that a load change on the machine hits both; the table gives medians. The target is a loss
costing at most 5% of the model step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from benchmarks.common import ArgumentParser, cpu_name, git_commit, results_dir
from ternaus_zoo import create_model
from ternaus_zoo.losses import LOSSES, LovaszHingeLoss, LovaszSoftmaxLoss

TARGET = 0.05
NUM_CLASSES = 12
MULTILABEL_CLASSES = 28
OUTPUT = "losses.md"


def loss_rows(task: str) -> list[tuple[str, nn.Module]]:
    """Every registered loss of ``task`` with default arguments, plus the other Lovasz averaging mode."""
    rows = [(name, cls()) for name, cls in LOSSES.items() if cls.task == task]
    if task == "binary":
        rows.append(("lovasz_hinge (per_image=False)", LovaszHingeLoss(per_image=False)))
    elif task == "multiclass":
        rows.append(("lovasz_softmax (per_image=True)", LovaszSoftmaxLoss(per_image=True)))
    return rows


def make_batch(task: str, batch: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    if task == "binary":
        logits = torch.randn(batch, 1, size, size, generator=generator)
        return logits, (torch.rand(batch, 1, size, size, generator=generator) < 0.3).float()
    if task == "multiclass":
        logits = torch.randn(batch, NUM_CLASSES, size, size, generator=generator)
        return logits, torch.randint(0, NUM_CLASSES, (batch, size, size), generator=generator)
    logits = torch.randn(batch, MULTILABEL_CLASSES, generator=generator)
    return logits, (torch.rand(batch, MULTILABEL_CLASSES, generator=generator) < 0.2).float()


def time_loss(loss: nn.Module, logits: Tensor, target: Tensor) -> float:
    leaf = logits.detach().requires_grad_()
    start = time.perf_counter()
    loss(leaf, target).backward()
    return time.perf_counter() - start


class ModelStep:
    """One UNet11 training step (forward, BCE or cross-entropy, backward, Adam) on a fixed random batch."""

    def __init__(self, num_classes: int, batch: int, size: int, generator: torch.Generator) -> None:
        self.model = create_model("unet11", num_classes=num_classes).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.images = torch.randn(batch, 3, size, size, generator=generator)
        if num_classes == 1:
            self.target = (torch.rand(batch, 1, size, size, generator=generator) < 0.3).float()
            self.loss = F.binary_cross_entropy_with_logits
        else:
            self.target = torch.randint(0, num_classes, (batch, size, size), generator=generator)
            self.loss = F.cross_entropy

    def __call__(self) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(self.images), self.target).backward()
        self.optimizer.step()
        return time.perf_counter() - start


def benchmark(
    tasks: list[str], num_classes: int, args: argparse.Namespace, generator: torch.Generator
) -> tuple[float, dict[str, dict[str, float]]]:
    """Median seconds of the model step and of every loss of ``tasks`` (by task, then name)."""
    step = ModelStep(num_classes, args.batch, args.size, generator)
    inputs = {task: make_batch(task, args.batch, args.size, generator) for task in tasks}
    rows = {task: loss_rows(task) for task in tasks}
    step()  # warm-up
    for task in tasks:
        for _, loss in rows[task]:
            time_loss(loss, *inputs[task])
    model_times: list[float] = []
    loss_times: dict[str, dict[str, list[float]]] = {task: {name: [] for name, _ in rows[task]} for task in tasks}
    for round_index in range(args.repeats):
        model_times.append(step())
        print(f"  round {round_index + 1}/{args.repeats}: model step {model_times[-1]:.2f} s", flush=True)
        for task in tasks:
            for name, loss in rows[task]:
                loss_times[task][name].extend(time_loss(loss, *inputs[task]) for _ in range(args.loss_repeats))
    medians = {task: {name: statistics.median(values) for name, values in loss_times[task].items()} for task in tasks}
    return statistics.median(model_times), medians


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def table(title: str, medians: dict[str, float], model_seconds: float, shape: str, note: str = "") -> list[str]:
    lines = [
        f"## {title}",
        "",
        f"Logits {shape}; UNet11 step: **{model_seconds * 1000:.0f} ms**.{note}",
        "",
        "| loss | forward + backward (ms) | % of the model step | target <= 5% |",
        "|---|---:|---:|---|",
    ]
    for name, seconds in medians.items():
        share = seconds / model_seconds
        lines.append(f"| {name} | {seconds * 1000:.1f} | {share * 100:.2f} | {'pass' if share <= TARGET else 'FAIL'} |")
    return [*lines, ""]


def notes(load_before: str, load_after: str) -> list[str]:
    lines = [
        "## Notes",
        "",
        "- The Lovasz losses sort all images (`per_image=True`) or all classes in one batched `torch.sort` instead "
        "of the reference's Python loops, on the errors' bit patterns read as integers (exact for errors >= 0; "
        "torch sorts int32 about 1.5x faster than float32 on CPU). The sort of B x C x H x W errors is most of "
        "`lovasz_softmax`'s time.",
    ]
    highest = max(float(value) for value in f"{load_before} {load_after}".split())
    cores = os.cpu_count() or 1
    if highest > cores:
        lines.append(
            f"- The load average reached {highest:.1f} on {cores} CPUs: other jobs shared the machine, so absolute "
            "times are inflated. Loss and model timings alternate, which keeps the percentages fairer."
        )
    return [*lines, ""]


def main() -> None:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="timed model steps (rounds)")
    parser.add_argument("--loss-repeats", type=int, default=3, help="timed runs of every loss per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    command = shlex.join(["python", *sys.argv])
    started, load_before = datetime.datetime.now().astimezone(), load_average()
    generator = torch.Generator().manual_seed(0)
    print("binary losses beside unet11 (1 class)", flush=True)
    binary_model, binary = benchmark(["binary", "multilabel"], 1, args, generator)
    print("multi-class losses beside unet11 (12 classes)", flush=True)
    multi_model, multi = benchmark(["multiclass"], NUM_CLASSES, args, generator)
    load_after = load_average()

    b, s = args.batch, args.size
    lines = [
        "# Loss speed (CPU)",
        "",
        f"- command: `{command}`",
        f"- date: {started.isoformat(timespec='seconds')}",
        f"- CPU: {cpu_name()}, {torch.get_num_threads()} torch threads",
        f"- load average (1, 5, 15 min) before / after: {load_before} / {load_after}",
        f"- python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"segmentation-models-pytorch {smp.__version__}",
        f"- git commit: {git_commit()}",
        f"- timing: one warm-up, then {args.repeats} rounds of one UNet11 step (forward, BCE / cross-entropy, "
        f"backward, Adam) followed by {args.loss_repeats} forward + backward runs of every loss; medians.",
        "",
        *table("Binary segmentation losses", binary["binary"], binary_model, f"({b}, 1, {s}, {s})"),
        *table(
            f"Multi-class segmentation losses ({NUM_CLASSES} classes)",
            multi["multiclass"],
            multi_model,
            f"({b}, {NUM_CLASSES}, {s}, {s})",
        ),
        *table(
            "Multi-label classification losses",
            binary["multilabel"],
            binary_model,
            f"({b}, {MULTILABEL_CLASSES})",
            " These are compared with the binary UNet11 step only for scale.",
        ),
        *notes(load_before, load_after),
    ]
    (results_dir(args) / OUTPUT).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

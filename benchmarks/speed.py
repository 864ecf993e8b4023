"""Training and inference speed of every zoo segmentation model beside its nearest smp equivalent.

    python -m benchmarks.speed                       # float32, contiguous
    python -m benchmarks.speed --channels_last       # the same in channels_last
    python -m benchmarks.speed --bf16                # CPU autocast to bfloat16

Both sides of a pair run in one process, alternating zoo / smp step by step, with the same options,
so the ratio holds on a noisy machine; FLOPs are counted by ``torch.utils.flop_counter`` the same way
on both sides. The float32 matrix-multiply rate of this machine is measured first, as the practical
ceiling. Writes ``benchmarks/results/speed[_<options>].md``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import RESULTS, environment, markdown_table
from ternaus_zoo import create_model

PAIRS = [
    ("unet11", {}, "smp.Unet", {"encoder_name": "vgg11"}),
    ("unet16", {}, "smp.Unet", {"encoder_name": "vgg16"}),
    ("albunet34", {}, "smp.Unet", {"encoder_name": "resnet34"}),
    ("linknet34", {}, "smp.Linknet", {"encoder_name": "resnet34"}),
]


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matrix-multiply rate: the practical ceiling of convolution throughput here."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def peak_rss_reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Runner:
    """One model with its optimiser and inputs; ``train_step`` and ``infer`` return seconds."""

    def __init__(self, name: str, kwargs: dict, options: argparse.Namespace) -> None:
        self.name = f"{name}({', '.join(f'{v}' for v in kwargs.values())})" if kwargs else name
        self.model = create_model(name, **kwargs)
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.autocast = options.bf16
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.train_images = torch.randn(options.batch, 3, options.size, options.size).to(
            memory_format=self.memory_format
        )
        self.targets = (torch.rand(options.batch, 1, options.size, options.size) > 0.5).float()
        self.infer_image = torch.randn(1, 3, options.infer_size, options.infer_size).to(
            memory_format=self.memory_format
        )
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.train_flops = self._count(self._train_once) / options.batch
        self.infer_flops = self._count(self._infer_once)

    def _context(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def _train_once(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._context():
            logits = self.model(self.train_images)
        nn.functional.binary_cross_entropy_with_logits(logits.float(), self.targets).backward()
        self.optimizer.step()

    @torch.no_grad()
    def _infer_once(self) -> None:
        self.model.eval()
        with self._context():
            self.model(self.infer_image)

    @staticmethod
    def _count(step: Callable[[], None]) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        return counter.get_total_flops()

    @staticmethod
    def _time(step: Callable[[], None]) -> float:
        started = time.perf_counter()
        step()
        return time.perf_counter() - started

    def train_step(self) -> float:
        return self._time(self._train_once)

    def infer(self) -> float:
        return self._time(self._infer_once)


def measure_pair(zoo: Runner, smp: Runner, repeats: int) -> dict[str, dict[str, float]]:
    """Alternate zoo and smp steps; medians of ``repeats`` after one warm-up each."""
    times: dict[str, dict[str, list[float]]] = {side: {"train": [], "infer": []} for side in ("zoo", "smp")}
    peaks = {}
    for side, runner in (("zoo", zoo), ("smp", smp)):
        peak_rss_reset()
        runner.train_step()
        runner.infer()
        peaks[side] = peak_rss_mb()
    for _ in range(repeats):
        for side, runner in (("zoo", zoo), ("smp", smp)):
            times[side]["train"].append(runner.train_step())
            times[side]["infer"].append(runner.infer())
    result = {}
    for side, runner in (("zoo", zoo), ("smp", smp)):
        train = statistics.median(times[side]["train"])
        infer = statistics.median(times[side]["infer"])
        result[side] = {
            "train_ips": len(runner.train_images) / train,
            "infer_ips": 1 / infer,
            "train_gflops": runner.train_flops * len(runner.train_images) / train / 1e9,
            "infer_gflops": runner.infer_flops / infer / 1e9,
            "train_gflop_per_image": runner.train_flops / 1e9,
            "peak_mb": peaks[side],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--infer_size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--pairs", nargs="*", help="zoo names to run (default: all)")
    options = parser.parse_args()
    torch.manual_seed(0)
    ceiling = matmul_gflops()
    rows = []
    for zoo_name, zoo_kwargs, smp_name, smp_kwargs in PAIRS:
        if options.pairs and zoo_name not in options.pairs:
            continue
        zoo, smp = Runner(zoo_name, zoo_kwargs, options), Runner(smp_name, smp_kwargs, options)
        result = measure_pair(zoo, smp, options.repeats)
        z, s = result["zoo"], result["smp"]
        rows.append(
            (
                f"{zoo.name} / {smp.name}",
                z["train_gflops"] / s["train_gflops"],
                z["train_ips"] / s["train_ips"],
                z["infer_ips"] / s["infer_ips"],
                f"{z['train_ips']:.2f} / {s['train_ips']:.2f}",
                f"{z['infer_ips']:.2f} / {s['infer_ips']:.2f}",
                f"{z['train_gflops']:.1f} / {s['train_gflops']:.1f}",
                f"{z['train_gflops'] / ceiling:.0%} / {s['train_gflops'] / ceiling:.0%}",
                f"{z['train_gflop_per_image']:.1f} / {s['train_gflop_per_image']:.1f}",
                f"{zoo.parameters / 1e6:.1f} / {smp.parameters / 1e6:.1f}",
                f"{z['peak_mb']:.0f} / {s['peak_mb']:.0f}",
            )
        )
        print(rows[-1], flush=True)
    suffix = "".join(f"_{flag}" for flag in ("channels_last", "bf16") if getattr(options, flag))
    header = [
        "zoo / smp",
        "train GFLOP/s ratio",
        "train img/s ratio",
        "infer img/s ratio",
        "train img/s",
        "infer img/s",
        "train GFLOP/s",
        "of matmul rate",
        "train GFLOP/img",
        "params (M)",
        "peak RSS (MB)",
    ]
    text = "\n\n".join(
        [
            f"# Speed: zoo models vs their smp twins{' (' + suffix.strip('_') + ')' if suffix else ''}",
            environment(),
            f"- training: batch {options.batch}, {options.size}x{options.size}, forward + BCE + backward + Adam; "
            f"inference: batch 1, {options.infer_size}x{options.infer_size}, no_grad; medians of {options.repeats} "
            "alternated steps after a warm-up; FLOPs by torch.utils.flop_counter (training: forward + backward)",
            f"- float32 matrix multiply (2048x2048) on this machine: {ceiling:.1f} GFLOP/s",
            "Ratios are zoo / smp (above 1: the zoo model is faster). Peak RSS is the process's high-water mark "
            "after reset, before each side's first steps (it includes everything loaded before).",
            markdown_table(header, rows),
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"speed{suffix}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

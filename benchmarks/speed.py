"""Training and inference speed of every zoo segmentation model beside its nearest smp equivalent.

    python -m benchmarks.speed                       # float32, contiguous
    python -m benchmarks.speed --channels_last       # the same in channels_last
    python -m benchmarks.speed --bf16                # CPU autocast to bfloat16
    python -m benchmarks.speed --options             # each zoo model: default vs channels_last / bf16 / compile
    python -m benchmarks.speed --loading             # Kvasir training pipeline with 0, 1, 2 workers vs UNet11

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

from benchmarks.common import ArgumentParser, environment, markdown_table, results_dir
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
        self.device = torch.device(options.device)
        self.model = create_model(name, **kwargs)
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=self.memory_format)
        self.autocast = options.bf16
        # FLOPs are counted on the eager module; the compiled one does the same arithmetic
        self.forward = torch.compile(self.model) if options.compile else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.train_images = torch.randn(options.batch, 3, options.size, options.size).to(
            self.device, memory_format=self.memory_format
        )
        self.targets = (torch.rand(options.batch, 1, options.size, options.size) > 0.5).float().to(self.device)
        self.infer_image = torch.randn(1, 3, options.infer_size, options.infer_size).to(
            self.device, memory_format=self.memory_format
        )
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.train_flops = self._count(self._train_once) / options.batch
        self.infer_flops = self._count(self._infer_once)

    def _context(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def _train_once(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._context():
            logits = self.forward(self.train_images)
        nn.functional.binary_cross_entropy_with_logits(logits.float(), self.targets).backward()
        self.optimizer.step()

    @torch.no_grad()
    def _infer_once(self) -> None:
        self.model.eval()
        with self._context():
            self.forward(self.infer_image)

    def _count(self, step: Callable[[], None]) -> int:
        forward, self.forward = self.forward, self.model
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        self.forward = forward
        return counter.get_total_flops()

    def _time(self, step: Callable[[], None]) -> float:
        if self.device.type == "cuda":  # kernels run asynchronously: wait for them on both sides of the clock
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def train_step(self) -> float:
        return self._time(self._train_once)

    def infer(self) -> float:
        return self._time(self._infer_once)


def measure(runners: dict[str, Runner], repeats: int) -> dict[str, dict[str, float]]:
    """Alternate the runners step by step; medians of ``repeats`` after one warm-up each (which compiles)."""
    times: dict[str, dict[str, list[float]]] = {label: {"train": [], "infer": []} for label in runners}
    peaks = {}
    for label, runner in runners.items():
        peak_rss_reset()
        runner.train_step()
        runner.infer()
        peaks[label] = peak_rss_mb()
    for _ in range(repeats):
        for label, runner in runners.items():
            times[label]["train"].append(runner.train_step())
            times[label]["infer"].append(runner.infer())
    result = {}
    for label, runner in runners.items():
        train = statistics.median(times[label]["train"])
        infer = statistics.median(times[label]["infer"])
        result[label] = {
            "train_ips": len(runner.train_images) / train,
            "infer_ips": 1 / infer,
            "train_gflops": runner.train_flops * len(runner.train_images) / train / 1e9,
            "infer_gflops": runner.infer_flops / infer / 1e9,
            "train_gflop_per_image": runner.train_flops / 1e9,
            "peak_mb": peaks[label],
        }
    return result


OPTIONS = {
    "channels_last": {"channels_last": True},
    "bf16": {"bf16": True},
    "channels_last + bf16": {"channels_last": True, "bf16": True},
    "compile": {"compile": True},
}


def both(first: float, second: float, spec: str) -> str:
    """``"first / second"``, each formatted with ``spec``."""
    return f"{first:{spec}} / {second:{spec}}"


def with_flags(options: argparse.Namespace, **flags: bool) -> argparse.Namespace:
    base = {"channels_last": False, "bf16": False, "compile": False}
    return argparse.Namespace(**{**vars(options), **base, **flags})


def pairs_table(options: argparse.Namespace, ceiling: float) -> tuple[list[str], list[tuple]]:
    """Zoo model vs smp twin with the same options."""
    rows = []
    for zoo_name, zoo_kwargs, smp_name, smp_kwargs in PAIRS:
        if options.pairs and zoo_name not in options.pairs:
            continue
        zoo, smp = Runner(zoo_name, zoo_kwargs, options), Runner(smp_name, smp_kwargs, options)
        result = measure({"zoo": zoo, "smp": smp}, options.repeats)
        z, s = result["zoo"], result["smp"]
        rows.append(
            (
                f"{zoo.name} / {smp.name}",
                z["train_gflops"] / s["train_gflops"],
                z["train_ips"] / s["train_ips"],
                z["infer_ips"] / s["infer_ips"],
                both(z["train_ips"], s["train_ips"], ".2f"),
                both(z["infer_ips"], s["infer_ips"], ".2f"),
                both(z["train_gflops"], s["train_gflops"], ".1f"),
                both(z["train_gflops"] / ceiling, s["train_gflops"] / ceiling, ".0%"),
                both(z["train_gflop_per_image"], s["train_gflop_per_image"], ".1f"),
                both(zoo.parameters / 1e6, smp.parameters / 1e6, ".1f"),
                both(z["peak_mb"], s["peak_mb"], ".0f"),
            )
        )
        print(rows[-1], flush=True)
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
    return header, rows


def options_table(options: argparse.Namespace, ceiling: float) -> tuple[list[str], list[tuple]]:
    """Each model with each option against itself with none, alternated."""
    rows = []
    names = [(zoo, kwargs) for zoo, kwargs, _, _ in PAIRS] + [(smp, kwargs) for _, _, smp, kwargs in PAIRS]
    for name, kwargs in names:
        if options.pairs and name not in options.pairs:
            continue
        runners = {"default": Runner(name, kwargs, with_flags(options))}
        runners |= {label: Runner(name, kwargs, with_flags(options, **flags)) for label, flags in OPTIONS.items()}
        result = measure(runners, options.repeats)
        base = result["default"]
        for label in OPTIONS:
            r = result[label]
            rows.append(
                (
                    runners["default"].name,
                    label,
                    r["train_ips"] / base["train_ips"],
                    r["infer_ips"] / base["infer_ips"],
                    both(r["train_ips"], base["train_ips"], ".2f"),
                    both(r["infer_ips"], base["infer_ips"], ".2f"),
                    both(r["train_gflops"] / ceiling, base["train_gflops"] / ceiling, ".0%"),
                    both(r["peak_mb"], base["peak_mb"], ".0f"),
                )
            )
            print(rows[-1], flush=True)
    header = [
        "model",
        "option",
        "train img/s ratio (option / default)",
        "infer img/s ratio",
        "train img/s",
        "infer img/s",
        "train of matmul rate",
        "peak RSS (MB)",
    ]
    return header, rows


def loading_table(options: argparse.Namespace, ceiling: float) -> tuple[list[str], list[tuple]]:
    """Images/s of the Kvasir training pipeline (read + augment + normalise) against UNet11's training rate."""
    from ternaus_zoo.data import SegmentationDataModule

    model_rate = measure({"unet11": Runner("unet11", {}, options)}, options.repeats)["unet11"]["train_ips"]
    rows = []
    for workers in (0, 1, 2):
        data = SegmentationDataModule(
            "kvasir-seg", image_size=options.size, batch_size=options.batch, num_workers=workers, holdout_every=5
        )
        data.setup("fit")
        loader = iter(data.train_dataloader())
        next(loader)  # starts the workers
        started = time.perf_counter()
        for _ in range(options.loading_batches):
            next(loader)
        rate = options.loading_batches * options.batch / (time.perf_counter() - started)
        rows.append((workers, f"{rate:.1f}", f"{model_rate:.2f}", rate / model_rate))
        print(rows[-1], flush=True)
    header = ["workers", "loading img/s", "unet11 training img/s", "loading / training"]
    return header, rows


def main() -> None:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--infer_size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (on the CPU or the GPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both models of a pair run")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (inductor)")
    parser.add_argument("--pairs", nargs="*", help="model names to run (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--options", action="store_true", help="compare each option with none, per model")
    mode.add_argument("--loading", action="store_true", help="data loading rate with 0, 1, 2 workers")
    parser.add_argument("--loading_batches", type=int, default=40)
    options = parser.parse_args()
    torch.manual_seed(0)
    ceiling = matmul_gflops()
    # a run of some pairs (or on the GPU) only writes its own file, beside the full table
    pairs = "".join(f"_{name}" for name in options.pairs or []) + ("_cuda" if options.device == "cuda" else "")
    if options.options:
        suffix = "_options" + pairs
        title = "Speed options: each model with an option vs itself without"
        header, rows = options_table(options, ceiling)
    elif options.loading:
        suffix, title = "_loading", "Data loading: the Kvasir training pipeline vs UNet11 training"
        header, rows = loading_table(options, ceiling)
    else:
        flags = [flag for flag in ("channels_last", "bf16", "compile") if getattr(options, flag)]
        suffix = "".join(f"_{flag}" for flag in flags) + pairs
        title = f"Speed: zoo models vs their smp twins{' (' + ', '.join(flags) + ')' if flags else ''}"
        header, rows = pairs_table(options, ceiling)
    text = "\n\n".join(
        [
            f"# {title}",
            environment(),
            f"- training: batch {options.batch}, {options.size}x{options.size}, forward + BCE + backward + Adam; "
            f"inference: batch 1, {options.infer_size}x{options.infer_size}, no_grad; medians of {options.repeats} "
            "alternated steps after a warm-up; FLOPs by torch.utils.flop_counter (training: forward + backward)",
            f"- device: {torch.cuda.get_device_name() if options.device == 'cuda' else 'the CPU'}",
            f"- float32 matrix multiply (2048x2048) on this machine's CPU: {ceiling:.1f} GFLOP/s",
            "Ratios above 1: the first named is faster. Peak RSS is the process's high-water mark "
            "after reset, before each side's first steps (it includes everything loaded before).",
            markdown_table(header, rows),
        ]
    )
    (results_dir(options) / f"speed{suffix}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

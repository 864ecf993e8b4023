"""What every benchmark shares: its argument parser (``--scratch``), the folder it may write into, the machine
and versions it ran on, scoring binary masks at each file's original resolution as ../shared/BENCHMARKS.md
prescribes, and writing results as Markdown.

``benchmarks/results/`` takes results only from a tree without uncommitted changes to tracked files, so that
every committed number names the commit that made it; ``--scratch`` writes into ``runs/scratch_results/``
instead, and ``python -m benchmarks.pinned COMMIT -- ...`` runs a benchmark from a worktree of that commit.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

# re-exported: the benchmarks import the tree's helpers from here
from benchmarks.tree import ROOT, data_root, git_commit, uncommitted_files  # noqa: F401
from ternaus_zoo.data import read_binary_mask, read_image, restore_original_size, val_transforms
from ternaus_zoo.data.listing import list_images
from ternaus_zoo.metrics import binary_summary, confusion_stats
from ternaus_zoo.planning.timing import cpu_name
from ternaus_zoo.precision import fast_precision, native_bf16
from ternaus_zoo.registry import ModelInfo

RESULTS = Path(__file__).with_name("results")
SCRATCH = Path("runs") / "scratch_results"  # under the tree's root; ignored by git
# CamVid class indices 0..10 in SegNet order (11 = void), as ../shared/data/README.md lists them
CAMVID_LABELS = "sky building pole road pavement tree sign fence car pedestrian bicyclist".split()  # noqa: SIM905
PACKAGES = ("torch", "torchvision", "segmentation-models-pytorch", "pytorch-lightning", "albumentations", "numpy")


def results_dir(options: argparse.Namespace, root: Path | None = None) -> Path:
    """The folder a benchmark writes its results into: ``runs/scratch_results/`` with ``--scratch``, else
    ``benchmarks/results/``, but only from a clean tree: otherwise one line on stderr naming the changed files,
    and exit status 2. Called when the options are parsed and again before each write (the tree can change
    during a long run)."""
    root = root or ROOT
    if options.scratch:
        folder = root / SCRATCH
    else:
        try:
            changed = uncommitted_files(root)
        except (OSError, subprocess.CalledProcessError):
            changed = [f"{root} is not a git checkout"]
        if changed:
            print(
                f"benchmarks/results/ takes results only from a clean tree; uncommitted: {', '.join(changed)}. "
                f"Commit them (or run from a pinned worktree: python -m benchmarks.pinned COMMIT -- ...), "
                f"or pass --scratch to write into {SCRATCH}/",
                file=sys.stderr,
            )
            raise SystemExit(2)
        folder = root / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class ArgumentParser(argparse.ArgumentParser):
    """Every benchmark's parser: its docstring as the description, ``--scratch``, and a dirty tree refused as
    soon as the options are parsed, before anything runs."""

    def __init__(self, description: str | None) -> None:
        super().__init__(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.add_argument(
            "--scratch",
            action="store_true",
            help=f"write the results into {SCRATCH}/ (not committed) instead of benchmarks/results/, which takes "
            "results only from a tree without uncommitted changes",
        )

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        options, rest = super().parse_known_args(args, namespace)
        results_dir(options)
        return options, rest


def cpu_instructions() -> str:
    """The vector instructions torch uses here and the default training precision they give: two CPUs
    that print the same model name (``AMD EPYC``) differed 4x in training speed between sessions."""
    bf16 = "native bfloat16" if native_bf16() else "no native bfloat16"
    return f"{torch.backends.cpu.get_cpu_capability()}, {bf16}: default precision {fast_precision()}"


def environment() -> str:
    """Markdown lines naming the date, command, commit, machine and versions."""
    versions = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    return "\n".join(
        [
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- command: `{' '.join(['python', *sys.argv])}`",
            f"- commit: {git_commit()}",
            f"- machine: {cpu_name()} ({cpu_instructions()}), {torch.get_num_threads()} torch threads, no GPU",
            f"- versions: Python {platform.python_version()}, {versions}",
        ]
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


@torch.no_grad()
def score_binary(
    model: nn.Module | None,
    images_dir: Path,
    masks_dir: Path,
    stems: Sequence[str],
    info: ModelInfo,
    val_size: int | None,
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """Dice/IoU (micro) and mean per-image Dice of ``model`` on ``stems`` at each mask's own resolution,
    beside the trivial all-background and all-foreground predictions (``model=None``: trivial rows only).

    Probabilities are resized back to the file's size, then thresholded, as the benchmarks prescribe.
    """
    transform = val_transforms(info, val_size)
    images, masks = list_images(images_dir), list_images(masks_dir)
    stats: dict[str, list[list[torch.Tensor]]] = {"model": [], "all background": [], "all foreground": []}
    if model is not None:
        model.eval()
    for stem in stems:
        mask = torch.from_numpy(read_binary_mask(masks[stem]))[None, None]
        predictions = {"all background": torch.zeros_like(mask), "all foreground": torch.ones_like(mask)}
        if model is not None:
            image = read_image(images[stem], info.in_channels)
            probabilities = model(transform(image=image)["image"][None]).sigmoid()[0]
            restored = restore_original_size(probabilities, tuple(mask.shape[-2:]), val_size)
            predictions["model"] = (restored[None] > threshold).long()
        for name, prediction in predictions.items():
            stats[name].append(list(confusion_stats(prediction, mask, mode="binary", from_logits=False)))
    result = {}
    for name, per_image in stats.items():
        if per_image:
            result[name] = binary_summary(*(torch.cat(parts) for parts in zip(*per_image, strict=True)))
    return result

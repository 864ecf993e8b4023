"""What every benchmark shares: the machine and versions it ran on, scoring binary masks at each
file's original resolution as ../shared/BENCHMARKS.md prescribes, and writing results as Markdown."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from ternaus_zoo.data import read_binary_mask, read_image, restore_original_size, val_transforms
from ternaus_zoo.data.io import list_images
from ternaus_zoo.metrics import confusion_stats, dice_score, iou_score
from ternaus_zoo.precision import fast_precision, native_bf16
from ternaus_zoo.registry import ModelInfo

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
# CamVid class indices 0..10 in SegNet order (11 = void), as ../shared/data/README.md lists them
CAMVID_LABELS = "sky building pole road pavement tree sign fence car pedestrian bicyclist".split()  # noqa: SIM905
PACKAGES = ("torch", "torchvision", "segmentation-models-pytorch", "pytorch-lightning", "albumentations", "numpy")


def data_root() -> Path:
    """The data sets' folder: ``TERNAUS_ZOO_DATA``, else ``../shared/data`` beside the project."""
    return Path(os.environ.get("TERNAUS_ZOO_DATA", ROOT.parent / "shared" / "data")).resolve()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        output = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return output.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
            f"- machine: {cpu_model()} ({cpu_instructions()}), {torch.get_num_threads()} torch threads, no GPU",
            f"- versions: Python {platform.python_version()}, {versions}",
        ]
    )


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _scores(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, float]:
    return {
        "dice": float(dice_score(tp, fp, fn, reduction="micro")),
        "iou": float(iou_score(tp, fp, fn, reduction="micro")),
        "dice_per_image": float(dice_score(tp, fp, fn, reduction="per_image")),
    }


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
            stats[name].append(list(confusion_stats(prediction, mask, mode="binary", from_logits=False)[:3]))
    result = {}
    for name, per_image in stats.items():
        if per_image:
            tp, fp, fn = (torch.cat(parts) for parts in zip(*per_image, strict=True))
            result[name] = _scores(tp, fp, fn)
    return result

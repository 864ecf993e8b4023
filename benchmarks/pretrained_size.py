"""Saved model folder (``export --format pretrained``) against the Lightning checkpoint: size and load time.

    python -m benchmarks.pretrained_size --repeats 5

For UNet11 and LinkNet34 (random weights: sizes and times do not depend on the values), one Lightning
checkpoint is written the way ``ternaus-zoo fit`` writes it (Adam state included, after one training step
at 64 px), exported with ``ternaus-zoo export --format pretrained``, and both are loaded alternately:
``model_from_checkpoint`` (the checkpoint's route) against ``from_pretrained``. Writes
``benchmarks/results/pretrained_size.md``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import ArgumentParser, environment, markdown_table, results_dir
from ternaus_zoo.cli import main as cli
from ternaus_zoo.inference import from_pretrained, model_from_checkpoint
from ternaus_zoo.training import SegmentationModule

MODELS = ("unet11", "linknet34")


class _Pairs(TensorDataset):
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = super().__getitem__(index)
        return {"image": image, "mask": mask}


def lightning_checkpoint(name: str, folder: Path) -> Path:
    """A checkpoint written by Lightning after one Adam step, as ``fit`` leaves it."""
    module = SegmentationModule(model=name, weights=None)
    data = _Pairs(torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float())
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.fit(module, DataLoader(data, batch_size=2))
    path = folder / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.iterdir()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        for name in MODELS:
            checkpoint = lightning_checkpoint(name, root)
            folder = root / f"{name}_pretrained"
            cli(["export", f"--ckpt_path={checkpoint}", "--format=pretrained", f"--output={folder}"])
            times: dict[str, list[float]] = {"checkpoint": [], "pretrained": []}
            for _ in range(options.repeats):  # alternating, so a noisy machine hits both alike
                for route, load, source in (
                    ("checkpoint", model_from_checkpoint, checkpoint),
                    ("pretrained", from_pretrained, folder),
                ):
                    started = time.perf_counter()
                    load(source)
                    times[route].append(time.perf_counter() - started)
            ckpt_mb, folder_mb = folder_size(checkpoint) / 2**20, folder_size(folder) / 2**20
            ckpt_s, folder_s = statistics.median(times["checkpoint"]), statistics.median(times["pretrained"])
            rows.append([name, f"{ckpt_mb:.1f}", f"{folder_mb:.1f}", f"{folder_mb / ckpt_mb:.2f}",
                         f"{ckpt_s:.2f}", f"{folder_s:.2f}", f"{folder_s / ckpt_s:.2f}"])  # fmt: skip
            print(rows[-1], flush=True)
    header = ["model", "Lightning ckpt MiB", "folder MiB", "size ratio", "ckpt load s", "folder load s", "time ratio"]
    text = "\n\n".join(
        [
            "# Saved model folder against the Lightning checkpoint",
            environment(),
            f"- load time: median of {options.repeats} alternating loads, each rebuilding the model on the CPU",
            markdown_table(header, rows),
        ]
    )
    (results_dir(options) / "pretrained_size.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

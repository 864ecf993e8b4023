"""``ternaus-zoo demo``: train a small U-Net on synthetic shapes on a CPU, print its IoU and draw its
predictions. Needs no data and no network."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ternaus_zoo.data.shapes import ShapesDataset
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.training.module import SegmentationModule

logger = logging.getLogger("ternaus_zoo.demo")


def _draw(module: SegmentationModule, dataset: ShapesDataset, path: Path, rows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = torch.tensor(module.info.mean).view(3, 1, 1)
    std = torch.tensor(module.info.std).view(3, 1, 1)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    module.eval()
    with torch.no_grad():
        for row in range(rows):
            item = dataset[row]
            probabilities = module.probabilities(module(item["image"][None]))[0, 0]
            image = (item["image"] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            for axis, picture, title in zip(
                axes[row],
                (image, item["mask"][0].numpy(), (probabilities > 0.5).float().numpy()),
                ("image", "mask", "prediction"),
                strict=True,
            ):
                axis.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1)
                axis.set_title(title)
                axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def run_demo(
    output_dir: str | Path = "runs/demo",
    minutes: float = 3.0,
    max_steps: int = -1,
    size: int = 96,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Train ``unet`` (16 filters, depth 4) on fresh random shapes for ``minutes`` (or ``max_steps``),
    score IoU/Dice on 64 held-out shapes and write ``<output_dir>/predictions.png``.

    Returns:
        ``{"iou": ..., "dice": ...}`` on the held-out shapes.
    """
    output_dir = Path(output_dir)
    pl.seed_everything(seed, verbose=False)
    module = SegmentationModule(
        model="unet", model_kwargs={"num_filters": 16, "depth": 4}, loss="bce_jaccard", lr=3e-3, optimizer="adam"
    )
    train = ShapesDataset(20_000, module.info, size=size, seed=seed + 1_000)
    held_out = ShapesDataset(64, module.info, size=size, seed=seed)
    trainer = pl.Trainer(
        max_time={"minutes": minutes},
        max_steps=max_steps,
        max_epochs=1,
        logger=pl.loggers.CSVLogger(output_dir, name="logs"),
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        precision=fast_precision(),
    )
    held_out_loader = DataLoader(held_out, batch_size=16)
    # the held-out loader given but not run while training (limit_val_batches=0): the module's validation_step
    # without any loader would make Lightning warn
    trainer.fit(module, DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=0), held_out_loader)
    (scores,) = trainer.test(module, held_out_loader, verbose=False)
    result = {"iou": scores["test/iou"], "dice": scores["test/dice"]}
    picture = output_dir / "predictions.png"
    _draw(module, held_out, picture)
    print(
        f"demo: {trainer.global_step} steps in {minutes:g} min at most; held-out IoU {result['iou']:.3f}, "
        f"Dice {result['dice']:.3f}; predictions drawn in {picture}"
    )
    return result

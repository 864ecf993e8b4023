"""Why UNet11 learns nothing from scratch, in small measured experiments (issue 14, step 1).

    OMP_NUM_THREADS=2 nohup python -m benchmarks.unet11_from_scratch --steps 300 \\
        > runs/benchmarks/unet11_from_scratch.log 2>&1 &

Every variant trains the same number of steps (a budget in steps, not seconds, so a loaded machine
changes the time but not the numbers) on the 800 kvasir-seg training stems, at ``--size`` px crops
with the ladder's loss and optimiser (BCE 0.7 + Jaccard 0.3, Adam 3e-4, constant), two seeds each, and
is scored on the fixed 200-image hold-out at each mask's original resolution (BENCHMARKS.md). The last
model is scored: nothing is chosen on the hold-out. Beside the scores, the spread of the logits of a
freshly built model on a batch tells whether the signal reaches the output at all.

Resumable: finished rows are kept in ``runs/benchmarks/unet11_from_scratch/rows.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.common import ROOT, ArgumentParser, data_root, environment, markdown_table, results_dir, score_binary
from ternaus_zoo import create_model, get_model_info
from ternaus_zoo.data import SegmentationDataset, holdout_split, list_images, train_transforms
from ternaus_zoo.losses import build_loss
from ternaus_zoo.precision import fast_precision


def pytorch_default_decoder(model: nn.Module) -> nn.Module:
    """UNet11 as it was before the He initialisation of its decoder: PyTorch's default init."""
    for module in [*model.decoder_modules(), model.final]:
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                layer.reset_parameters()
    return model


VARIANTS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "unet11_default_init": (
        "UNet11, decoder with PyTorch's default init (the old behaviour)",
        lambda: pytorch_default_decoder(create_model("unet11")),
    ),
    "unet11_he_init": ("UNet11, He-initialised decoder (the new default)", lambda: create_model("unet11")),
    "unet11_bn": (
        "UNet11, batch_norm=True (VGG11-BN encoder, BN decoder)",
        lambda: create_model("unet11", batch_norm=True),
    ),
    "unet": ("reference: plain U-Net with batch norm (32 filters)", lambda: create_model("unet", num_filters=32)),
}


def parse() -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--steps", type=int, default=300, help="training steps of every variant")
    parser.add_argument("--size", type=int, default=128, help="training crop side and evaluation longest side")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    return parser.parse_args()


def logit_spread(model: nn.Module, batch: torch.Tensor) -> float:
    """Standard deviation of a fresh model's logits over the pixels of ``batch``: near 0 = a constant output."""
    model.eval()
    with torch.no_grad():
        return float(model(batch).float().std())


def train(model: nn.Module, loader: DataLoader, steps: int, lr: float) -> list[float]:
    loss_fn = build_loss({"bce": 0.7, "jaccard": 0.3})
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    bf16 = fast_precision() == "bf16-mixed"
    losses: list[float] = []
    model.train()
    while len(losses) < steps:
        for batch in loader:
            images, masks = batch["image"], batch["mask"]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(images.contiguous(memory_format=torch.channels_last)), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    return losses


def main() -> None:
    options = parse()
    folder = data_root() / "kvasir-seg"
    run_dir = ROOT / "runs" / "benchmarks" / "unet11_from_scratch"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows_file = run_dir / "rows.json"
    rows: dict[str, dict] = json.loads(rows_file.read_text()) if rows_file.is_file() else {}
    holdout, train_stems = holdout_split(list_images(folder / "images"))
    info = get_model_info("unet11")
    for variant in options.variants:
        description, build = VARIANTS[variant]
        for seed in options.seeds:
            key = f"{variant}/seed{seed}"
            if key in rows:
                continue
            torch.manual_seed(seed)
            dataset = SegmentationDataset(
                folder / "images",
                folder / "masks",
                stems=train_stems,
                transform=train_transforms(info, options.size),
            )
            generator = torch.Generator().manual_seed(seed)
            loader = DataLoader(
                dataset, batch_size=options.batch_size, shuffle=True, drop_last=True, generator=generator
            )
            model = build().to(memory_format=torch.channels_last)
            spread = logit_spread(model, next(iter(loader))["image"])
            start = time.perf_counter()
            losses = train(model, loader, options.steps, options.lr)
            minutes = (time.perf_counter() - start) / 60
            scores = score_binary(model, folder / "images", folder / "masks", holdout, info, options.size)
            rows[key] = {
                "variant": variant,
                "description": description,
                "seed": seed,
                "initial_logit_std": spread,
                "first_loss": statistics.mean(losses[:20]),
                "last_loss": statistics.mean(losses[-20:]),
                "minutes": minutes,
                **{f"{name}/{metric}": value for name, values in scores.items() for metric, value in values.items()},
            }
            rows_file.write_text(json.dumps(rows, indent=1))
            print(key, json.dumps(rows[key]), flush=True)
            write(rows, options)


def write(rows: dict[str, dict], options: argparse.Namespace) -> None:
    table = []
    for row in rows.values():
        table.append(
            [
                row["description"],
                row["seed"],
                row["initial_logit_std"],
                row["first_loss"],
                row["last_loss"],
                row["model/dice"],
                row["model/iou"],
                row["model/dice_per_image"],
                f"{row['minutes']:.1f}",
            ]
        )
    any_row = next(iter(rows.values()))
    trivial = [
        [
            name,
            "-",
            "-",
            "-",
            "-",
            any_row[f"{name}/dice"],
            any_row[f"{name}/iou"],
            any_row[f"{name}/dice_per_image"],
            "-",
        ]
        for name in ("all background", "all foreground")
    ]
    header = [
        "variant",
        "seed",
        "logit std at init",
        "loss (first 20)",
        "loss (last 20)",
        "Dice",
        "IoU",
        "per-image Dice",
        "min",
    ]
    text = "\n\n".join(
        [
            "# UNet11 from scratch: what stops it learning (kvasir-seg)",
            environment(),
            f"- budget: {options.steps} steps of batch {options.batch_size} at {options.size} px crops, Adam "
            f"lr {options.lr} constant, BCE 0.7 + Jaccard 0.3, bf16 autocast where native; training stems: the 800 "
            "outside the hold-out; scored: the last model on the 200-image hold-out `sorted(stems)[::5]` at each "
            f"mask's original resolution (predicted at {options.size} px longest side)",
            markdown_table(header, table + trivial),
        ]
    )
    (results_dir(options) / "unet11_from_scratch.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

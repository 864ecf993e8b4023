"""Train one model on one Kvasir-SEG fold with the CLI and score the validation fold at each image's
original resolution (../shared/BENCHMARKS.md), beside the trivial rows.

    python benchmarks/kvasir_fold.py --epochs 5 --name kvasir_unet11_fold0

Resumable: run it again with the same --name and it continues from ``runs/benchmarks/<name>/last.ckpt``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, environment, markdown_table, score_binary
from ternaus_zoo.cli import main as cli
from ternaus_zoo.data import load_folds
from ternaus_zoo.training import SegmentationModule

ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "kvasir_unet11.yaml"))
    parser.add_argument("--name", default="kvasir_unet11_fold0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--weights", default="null", help="null (no download here), imagenet or a path")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI options, e.g. --model.lr=1e-3")
    return parser.parse_args()


def main() -> None:
    options = parse()
    data_root = Path(os.environ.get("TERNAUS_ZOO_DATA", ROOT.parent / "shared" / "data")).resolve()
    run = ROOT / "runs" / "benchmarks" / options.name
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(run), "name": ""}}
    logger["init_args"]["version"] = "log"
    last = run / "log" / "checkpoints" / "last.ckpt"
    arguments = [
        "fit",
        f"--config={options.config}",
        f"--data.data_root={data_root}",
        f"--data.fold={options.fold}",
        f"--model.weights={options.weights}",
        f"--trainer.max_epochs={options.epochs}",
        f"--trainer.logger={json.dumps(logger)}",
        "--trainer.enable_progress_bar=false",
        *options.overrides,
    ]
    if last.is_file():
        arguments.append(f"--ckpt_path={last}")
    started = time.perf_counter()
    cli(arguments)
    fit_minutes = (time.perf_counter() - started) / 60

    best = sorted((run / "log" / "checkpoints").glob("best-*.ckpt"))[-1]
    module = SegmentationModule.load_from_checkpoint(best, map_location="cpu")
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    folds = load_folds(run / "log" / "folds.csv")
    stems = sorted(stem for stem, fold in folds.items() if fold == options.fold)
    data = data_root / "kvasir-seg"
    val_size = checkpoint.get("datamodule_hyper_parameters", {}).get("val_size", 256)
    started = time.perf_counter()
    scores = score_binary(module.model, data / "images", data / "masks", stems, module.model.info, val_size)
    score_seconds = time.perf_counter() - started
    rows = [(name, s["dice"], s["iou"], s["dice_per_image"]) for name, s in scores.items()]
    text = "\n\n".join(
        [
            f"# {options.name}: {module.hparams.model} on Kvasir-SEG, validation fold {options.fold}",
            environment(),
            f"- fit: {fit_minutes:.1f} min this invocation, {checkpoint['epoch'] + 1} epochs, "
            f"{checkpoint['global_step']} steps at the best checkpoint `{best.name}`; "
            f"scoring {len(stems)} images: {score_seconds:.0f} s",
            f"- weights: {options.weights}; config: `{Path(options.config).relative_to(ROOT)}` + {options.overrides}",
            f"- split: folds.csv of the run (seed 0, 5 folds over the 800 non-hold-out images; hold-out = "
            f"sorted(stems)[::5]); validation fold {options.fold} = {len(stems)} images, first {stems[:3]}",
            "Scored at each mask's original resolution (probabilities resized back, threshold 0.5, "
            "mask > 127); Dice and IoU are micro (over all pixels of the fold).",
            markdown_table(["prediction", "Dice", "IoU", "mean per-image Dice"], rows),
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{options.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

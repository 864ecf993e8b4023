"""Bagging on Kvasir-SEG: one fold's model vs the K-fold ensemble vs the ensemble with D4 TTA, scored on
the fixed hold-out (``sorted(stems)[::5]``, 200 images) at each mask's original resolution
(../shared/BENCHMARKS.md), beside the trivial rows.

    OMP_NUM_THREADS=1 nohup python benchmarks/kvasir_bagging.py > runs/benchmarks/kvasir_bagging.log 2>&1 &

Everything goes through the command line a user would type: ``ternaus-zoo bag`` trains the folds (a small
U-Net from scratch, sized for a shared 2-core CPU), then every row is one ``ternaus-zoo predict`` call
(``--ckpt_path`` or ``--manifest``, ``--tta none|d4``) writing PNG masks of the hold-out images, which are
scored against the masks (``mask > 127``). Row times are the wall time of that call (model loading
included). Resumable: run it again with the same ``--name``; finished folds and rows are kept
(``runs/benchmarks/<name>/``), an unfinished fold resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, environment, markdown_table, score_binary
from ternaus_zoo.cli import main as cli
from ternaus_zoo.data import HOLDOUT, load_folds, read_binary_mask
from ternaus_zoo.data.io import list_images
from ternaus_zoo.metrics import confusion_stats, dice_score, iou_score
from ternaus_zoo.registry import get_model_info

ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="kvasir_bagging")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="training crops and evaluation size (longest side)")
    parser.add_argument("--num_filters", type=int, default=8, help="width of the U-Net's first stage")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak of the one-cycle schedule (Adam)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core CPU)")
    parser.add_argument("--workers", type=int, default=1, help="data loader processes")
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI options for the bag, e.g. --model.lr=1e-3")
    return parser.parse_args()


def training_arguments(options: argparse.Namespace, data_root: Path) -> list[str]:
    return [
        "--seed_everything=0",
        "--model.model=unet",
        f'--model.model_kwargs={{"num_filters": {options.num_filters}}}',
        "--model.weights=null",
        '--model.loss={"bce": 0.7, "jaccard": 0.3}',
        "--model.optimizer=adam",
        f"--model.lr={options.lr}",
        "--model.scheduler=onecycle",
        f'--model.scheduler_kwargs={{"max_lr": {options.lr}}}',
        "--data.dataset=kvasir-seg",
        f"--data.data_root={data_root}",
        "--data.holdout_every=5",
        "--data.mask_threshold=127",
        f"--data.image_size={options.size}",
        f"--data.val_size={options.size}",
        "--data.batch_size=8",
        f"--data.num_workers={options.workers}",
        f"--trainer.max_epochs={options.epochs}",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32",
        "--trainer.log_every_n_steps=10",
        "--trainer.enable_progress_bar=false",
        *options.overrides,
    ]


def holdout_folder(bag_dir: Path, images_dir: Path, run: Path) -> tuple[Path, list[str]]:
    """A folder of links to the hold-out images (fold -1 of the bag's ``folds.csv``) and their stems."""
    stems = sorted(stem for stem, fold in load_folds(bag_dir / "fold0" / "folds.csv").items() if fold == HOLDOUT)
    folder = run / "holdout_images"
    images = list_images(images_dir)
    if not folder.is_dir() or len(list(folder.iterdir())) != len(stems):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for stem in stems:
            (folder / images[stem].name).symlink_to(images[stem])
    return folder, stems


def score_masks(predicted_dir: Path, masks_dir: Path, stems: list[str], threshold: float | None = None) -> dict:
    """Micro Dice/IoU and mean per-image Dice of the PNG masks (or of ``.npy`` probabilities > ``threshold``)."""
    masks = list_images(masks_dir)
    parts = []
    for stem in stems:
        truth = torch.from_numpy(read_binary_mask(masks[stem], 127))[None, None]
        if threshold is None:
            predicted = torch.from_numpy(read_binary_mask(predicted_dir / f"{stem}.png", 127))[None, None]
        else:
            probabilities = np.load(predicted_dir / f"{stem}.npy")[0].astype(np.float32)
            predicted = torch.from_numpy(probabilities > threshold)[None, None]
        if predicted.shape != truth.shape:
            raise ValueError(f"{stem}: predicted {tuple(predicted.shape)}, mask {tuple(truth.shape)}")
        parts.append(confusion_stats(predicted.long(), truth.long(), mode="binary", from_logits=False)[:3])
    tp, fp, fn = (torch.cat(part) for part in zip(*parts, strict=True))
    return {
        "dice": float(dice_score(tp, fp, fn, reduction="micro")),
        "iou": float(iou_score(tp, fp, fn, reduction="micro")),
        "dice_per_image": float(dice_score(tp, fp, fn, reduction="per_image")),
    }


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def notes(options: argparse.Namespace, state: dict[str, Any]) -> list[str]:
    """What the rows say, computed from them: the gains of bagging and of D4 TTA, and the training length."""
    rows = state.get("rows", {})
    singles = [row["dice"] for name, row in rows.items() if name.startswith("fold ") and "TTA" not in name]
    ensemble = next((row for name, row in rows.items() if name == f"ensemble of {options.folds} folds"), None)
    ensemble_tta = rows.get(f"ensemble of {options.folds} folds + D4 TTA")
    lines = []
    if singles and ensemble:
        lines.append(
            f"- bagging: ensemble Dice {ensemble['dice']:.4f} vs {statistics.mean(singles):.4f} for a single fold "
            f"(mean of {len(singles)}): {ensemble['dice'] - statistics.mean(singles):+.4f}"
        )
    if "fold 0 alone" in rows and "fold 0 + D4 TTA" in rows:
        gain = rows["fold 0 + D4 TTA"]["dice"] - rows["fold 0 alone"]["dice"]
        lines.append(f"- D4 TTA on fold 0: {gain:+.4f} Dice, for 8x the forward passes")
    if ensemble and ensemble_tta:
        lines.append(f"- D4 TTA on the ensemble: {ensemble_tta['dice'] - ensemble['dice']:+.4f} Dice")
    epochs = [
        json.loads(path.read_text())["best_epoch"] + 1
        for path in sorted((ROOT / "runs" / "benchmarks" / options.name / "bag").glob("fold*/done.json"))
    ]
    if epochs and all(epoch == options.epochs for epoch in epochs):
        lines.append(
            f"- every fold's best checkpoint is its last epoch ({options.epochs}): the models are still improving, "
            "i.e. under-trained at this CPU budget; the comparison is between equally short runs"
        )
    return ["## What the rows say", *lines] if lines else []


def report(options: argparse.Namespace, run: Path, state: dict[str, Any], stems: list[str] | None) -> str:
    bag_dir = run / "bag"
    manifest = load_json(bag_dir / "manifest.json")
    fold_rows = []
    for fold in range(options.folds):
        entry = load_json(bag_dir / f"fold{fold}" / "done.json")
        if not entry:
            fold_rows.append((fold, "unfinished", "", "", "", "", ""))
            continue
        fold_rows.append(
            (
                fold,
                f"{entry['best_epoch'] + 1} / {options.epochs}",
                entry["metrics"]["val/dice"],
                entry["metrics"]["val/iou"],
                entry["oof"]["dice"],
                entry["oof"]["iou"],
                f"{entry['fit_seconds'] / 60:.1f}" + (" (resumed: last part)" if entry["resumed"] else ""),
            )
        )
    rows = [
        (name, row["dice"], row["iou"], row["dice_per_image"], f"{row['seconds']:.0f}")
        for name, row in state.get("rows", {}).items()
    ]
    singles = [row for name, row in state.get("rows", {}).items() if name.startswith("fold ") and "TTA" not in name]
    spread = ""
    if len(singles) > 1:
        dice = [row["dice"] for row in singles]
        spread = (
            f"- the {len(singles)} single-fold models: hold-out Dice {statistics.mean(dice):.4f} "
            f"± {statistics.stdev(dice):.4f} (mean ± sd); a gain smaller than this spread is not a gain"
        )
    digest = hashlib.sha1("\n".join(stems or []).encode()).hexdigest()[:12]
    bag_minutes = sum(state.get("bag_seconds", [])) / 60
    lines = [
        f"# {options.name}: bagging and D4 TTA on Kvasir-SEG (hold-out)",
        environment(),
        f"- model: `unet` (num_filters {options.num_filters}, depth 5), from scratch (no ImageNet weights), "
        f"{options.size} px crops and evaluation size, batch 8, Adam one-cycle (peak {options.lr:g}), "
        f"BCE 0.7 + Jaccard 0.3, D4 + colour augmentations, {options.epochs} epochs per fold, "
        f"{options.folds} folds, seed 0, torch threads {options.threads}, {options.workers} loader process(es)",
        f"- bag: `ternaus-zoo bag --folds {options.folds} --bag_dir runs/benchmarks/{options.name}/bag "
        f"{' '.join(training_arguments(options, Path('$TERNAUS_ZOO_DATA')))}` ({bag_minutes:.1f} min of wall time "
        "over this script's invocations, OOF prediction included)",
        "- rows: `ternaus-zoo predict (--ckpt_path fold<k>/checkpoints/best-*.ckpt | --manifest bag/manifest.json) "
        "--tta none|d4 --data.predict_dir=holdout_images --writer.output_dir=...`; each image resized to "
        f"{options.size} px (longest side), probabilities resized back to the file's size, threshold 0.5 "
        "(the module's), PNG masks scored against `mask > 127`",
        f"- split: hold-out `sorted(stems)[::5]` = {len(stems or [])} images (sha1 of the sorted stems {digest}); "
        f"folds: `make_folds` seed 0 over the other 800 (each fold's `folds.csv` in the bag)",
        "- machine load: the CPU was shared with another long training job during the run; times are wall times",
        "## Folds (validation fold of each model; OOF = its validation images at their original resolution)",
        markdown_table(
            ["fold", "best epoch", f"val Dice ({options.size} px)", "val IoU", "OOF Dice", "OOF IoU", "fit min"],
            fold_rows,
        ),
    ]
    if manifest:
        oof = manifest["oof"]
        lines.append(
            f"Pooled OOF over {oof['n_images']} images: Dice {oof['dice']:.4f}, IoU {oof['iou']:.4f} at 0.5; "
            f"OOF-tuned threshold {oof['best_threshold']:.2f} (IoU {oof['iou_at_best']:.4f})."
        )
    lines += [
        "## Hold-out (200 images, original resolution; micro Dice/IoU over all pixels)",
        markdown_table(["prediction", "Dice", "IoU", "mean per-image Dice", "seconds"], rows)
        if rows
        else "(no row finished yet)",
    ]
    if spread:
        lines.append(spread)
    lines += notes(options, state)
    text = "\n\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{options.name}.md").write_text(text)
    return text


def main() -> None:
    options = parse()
    torch.set_num_threads(options.threads)
    data_root = Path(os.environ.get("TERNAUS_ZOO_DATA", ROOT.parent / "shared" / "data")).resolve()
    data = data_root / "kvasir-seg"
    run = ROOT / "runs" / "benchmarks" / options.name
    bag_dir = run / "bag"
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "state.json"
    state = load_json(state_path)

    if not (bag_dir / "manifest.json").is_file():
        started = time.perf_counter()
        cli(["bag", f"--folds={options.folds}", f"--bag_dir={bag_dir}", *training_arguments(options, data_root)])
        state.setdefault("bag_seconds", []).append(round(time.perf_counter() - started, 1))
        save_json(state_path, state)
    manifest = json.loads((bag_dir / "manifest.json").read_text())
    holdout, stems = holdout_folder(bag_dir, data / "images", run)
    report(options, run, state, stems)

    if "trivial" not in state:
        info = get_model_info("unet")
        trivial = score_binary(None, data / "images", data / "masks", stems, info, options.size)
        state["trivial"] = trivial
        save_json(state_path, state)
    best = [str(bag_dir / path) for path in manifest["checkpoints"]]
    rows = [(f"fold {k} alone", [f"--ckpt_path={path}", "--tta=none"]) for k, path in enumerate(best)]
    rows += [
        ("fold 0 + D4 TTA", [f"--ckpt_path={best[0]}", "--tta=d4"]),
        (f"ensemble of {len(best)} folds", [f"--manifest={bag_dir / 'manifest.json'}", "--tta=none"]),
        (
            f"ensemble of {len(best)} folds + D4 TTA",
            [f"--manifest={bag_dir / 'manifest.json'}", "--tta=d4", "--writer.save_probabilities=true"],
        ),
    ]
    done = state.setdefault("rows", {})
    for name, arguments in rows:
        if name in done:
            continue
        output = run / "predictions" / name.replace(" ", "_").replace("+", "plus")
        started = time.perf_counter()
        cli(["predict", f"--data.predict_dir={holdout}", f"--writer.output_dir={output}", *arguments])
        seconds = time.perf_counter() - started
        done[name] = {**score_masks(output, data / "masks", stems), "seconds": seconds}
        if "--writer.save_probabilities=true" in arguments:
            tuned = manifest["thresholds"]["oof_best"]
            done[f"{name}, OOF-tuned threshold {tuned:.2f}"] = {
                **score_masks(output, data / "masks", stems, threshold=tuned),
                "seconds": 0.0,
            }
            for path in output.glob("*.npy"):  # 130 MB of float16 maps: scored, not kept
                path.unlink()
        save_json(state_path, state)
        report(options, run, state, stems)
    for name, scores in state["trivial"].items():
        done.setdefault(name, {**scores, "seconds": 0.0})
    save_json(state_path, state)
    print(report(options, run, state, stems))


if __name__ == "__main__":
    main()

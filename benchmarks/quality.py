"""The quality ladder (the Carvana recipe, one step per row) on kvasir-seg, membrane and camvid-val.

    OMP_NUM_THREADS=2 nohup python -m benchmarks.quality --dataset kvasir-seg --epochs 6 --size 128 --seed 0 \\
        > runs/benchmarks/quality_kvasir-seg_seed0.log 2>&1 &

Run it once per seed; ``python -m benchmarks.ladder --dataset kvasir-seg`` then puts the seeds side by side.

Every row trains through the command line a user would type (``ternaus-zoo bag --only_fold ...``) and is
scored from the PNG masks of ``ternaus-zoo predict`` at each mask's original resolution, following
../shared/BENCHMARKS.md:

- kvasir-seg: the fixed hold-out ``sorted(stems)[::5]`` (200 images); single rows are the fold-0 model
  (best checkpoint on fold 0 of the other 800), the bagging rows the 5 fold models' ensemble; Dice/IoU
  (micro) and the mean per-image Dice.
- membrane: K-fold over the 30 images; each fold's last checkpoint scored on its own validation fold;
  IoU of both classes and their mean, averaged over folds.
- camvid-val: contiguous split (the first 80 % of the sorted frames train, the last 20 % are scored),
  last checkpoint; mean IoU over the 11 classes (void ignored) and the per-class table.

Rows that share a recipe share its trained folds. Resumable: run it again with the same ``--name``;
finished folds and scored rows are kept under ``runs/benchmarks/<name>/`` and an unfinished fold resumes
from its ``last.ckpt``. Writes ``benchmarks/results/<name>.md``, ``.json`` (read by the notebooks) and
``.png`` after every row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import (
    CAMVID_LABELS,
    ROOT,
    ArgumentParser,
    data_root,
    environment,
    git_commit,
    markdown_table,
    results_dir,
)
from ternaus_zoo.cli import main as cli
from ternaus_zoo.data import HOLDOUT, load_folds, save_folds
from ternaus_zoo.data.listing import list_images
from ternaus_zoo.metrics import confusion_stats, dice_score, iou_score, mean_iou
from ternaus_zoo.precision import fast_precision

AUGMENTED = ["--data.scale=[0.5, 1.0]", "--data.color=true"]
CONSTANT = ["--model.scheduler=constant"]
UNET = ["--model.model=unet", '--model.model_kwargs={"num_filters": 32}']
# the fixed UNet11 of issue 14 (benchmarks/results/unet11_from_scratch.md): VGG11-BN encoder, BN decoder
UNET11 = ["--model.model=unet11", "--model.weights=null", '--model.model_kwargs={"batch_norm": true}']


def cyclic(peak: float) -> list[str]:
    """Triangular cycles of one epoch between a tenth of ``peak`` and ``peak``."""
    return [
        "--model.scheduler=cyclic",
        f'--model.scheduler_kwargs={{"max_lr": {peak}, "base_lr": {peak / 10}, "cycle_epochs": 1}}',
    ]


@dataclass(frozen=True)
class Row:
    """One rung: a recipe's fold-0 model (or the fold models of every fold), with or without TTA."""

    name: str
    recipe: str
    all_folds: bool = False
    tta: str = "none"


@dataclass(frozen=True)
class Ladder:
    dataset: str
    scoring: str  # "holdout" (binary, kvasir), "folds" (binary, membrane) or "classes" (camvid)
    n_folds: int
    common: list[str]
    recipes: dict[str, list[str]]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


LADDERS = {
    "kvasir-seg": Ladder(
        dataset="kvasir-seg",
        scoring="holdout",
        n_folds=3,
        common=[
            "--data.holdout_every=5",
            "--data.mask_threshold=127",
            "--data.batch_size=8",
            '--model.loss={"bce": 0.7, "jaccard": 0.3}',
            "--model.optimizer=adam",
            "--model.lr=3e-4",
        ],
        recipes={
            "unet": UNET + AUGMENTED + CONSTANT,
            "unet11": UNET11 + AUGMENTED + CONSTANT,
            "unet11_cyclic": UNET11 + AUGMENTED + cyclic(1e-3),
        },
        rows=[
            Row("plain U-Net (BCE + Jaccard, Adam, augmentations)", "unet"),
            Row("UNet11 (VGG11-BN encoder, no ImageNet weights)", "unet11"),
            Row("+ cyclic learning rate", "unet11_cyclic"),
            Row("+ bagging over 3 folds", "unet11_cyclic", all_folds=True),
            Row("+ D4 TTA", "unet11_cyclic", all_folds=True, tta="d4"),
        ],
    ),
    "membrane": Ladder(
        dataset="membrane",
        scoring="folds",
        n_folds=3,
        common=["--data.mask_threshold=127", "--data.batch_size=4", "--model.optimizer=adam", "--model.lr=3e-4"],
        recipes={
            "unet": UNET + AUGMENTED + CONSTANT + ['--model.loss={"bce": 0.7, "jaccard": 0.3}'],
            "unet11": UNET11 + AUGMENTED + CONSTANT + ['--model.loss={"bce": 0.7, "jaccard": 0.3}'],
            "unet11_cyclic_lovasz": UNET11 + AUGMENTED + cyclic(1e-3) + ['--model.loss={"lovasz_hinge": 1.0}'],
        },
        rows=[
            Row("U-Net (BCE + Jaccard, augmentations)", "unet", all_folds=True),
            Row("UNet11 (VGG11-BN encoder, no ImageNet weights)", "unet11", all_folds=True),
            Row("+ cyclic learning rate, Lovasz hinge loss", "unet11_cyclic_lovasz", all_folds=True),
            Row("+ D4 TTA", "unet11_cyclic_lovasz", all_folds=True, tta="d4"),
        ],
        notes=["membrane is binary: the Lovasz row uses the Lovasz hinge, the two-class form of Lovasz softmax"],
    ),
    "camvid-val": Ladder(
        dataset="camvid-val",
        scoring="classes",
        n_folds=2,
        common=[
            "--data.mask_mode=classes",
            "--model.num_classes=11",
            "--model.ignore_index=11",
            "--data.d4=false",
            "--data.batch_size=4",
            "--model.optimizer=adam",
            "--model.lr=3e-4",
        ],
        recipes={
            "unet_ce": UNET + AUGMENTED + CONSTANT + ['--model.loss={"ce": 1.0}'],
            "unet11_ce": UNET11 + AUGMENTED + CONSTANT + ['--model.loss={"ce": 1.0}'],
            "unet11_lovasz": UNET11
            + AUGMENTED
            + cyclic(1e-3)
            + ['--model.loss={"ce": 0.5, "lovasz_softmax": {"weight": 0.5, "ignore_index": 11}}'],
        },
        rows=[
            Row("U-Net (cross-entropy, augmentations)", "unet_ce"),
            Row("UNet11 (VGG11-BN encoder, no ImageNet weights)", "unet11_ce"),
            Row("+ cyclic learning rate, CE + Lovasz softmax", "unet11_lovasz"),
            Row("+ horizontal-flip TTA", "unet11_lovasz", tta="hflip"),
        ],
        notes=["street scenes are not rotation-invariant: horizontal flips only, in training and TTA"],
    ),
}


def parse() -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--dataset", choices=sorted(LADDERS), default="kvasir-seg")
    parser.add_argument("--seed", type=int, default=0, help="seed_everything of every model (the folds stay fixed)")
    parser.add_argument("--name", default=None, help="run and result name (default: quality_<dataset>_seed<seed>)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of every model (40: the GPU schedule)")
    parser.add_argument("--size", type=int, default=256, help="training crops and evaluation size (longest side)")
    parser.add_argument("--workers", type=int, default=1, help="data loader processes")
    parser.add_argument("--precision", default=fast_precision(), help="Lightning precision (default: the CLI's)")
    parser.add_argument("--rows", type=int, nargs="*", help="indices of the rows to run (default: all)")
    parser.add_argument("overrides", nargs="*", help="extra LightningCLI options for every model")
    options = parser.parse_args()
    options.name = options.name or f"quality_{options.dataset}_seed{options.seed}"
    return options


def training_arguments(ladder: Ladder, recipe: str, options: argparse.Namespace, data_root: Path) -> list[str]:
    return [
        f"--seed_everything={options.seed}",
        f"--data.dataset={ladder.dataset}",
        f"--data.data_root={data_root}",
        f"--data.image_size={options.size}",
        f"--data.val_size={options.size}",
        f"--data.num_workers={options.workers}",
        f"--trainer.max_epochs={options.epochs}",
        f"--trainer.precision={options.precision}",
        "--trainer.log_every_n_steps=10",
        "--trainer.enable_progress_bar=false",
        *ladder.common,
        *ladder.recipes[recipe],
        *options.overrides,
    ]


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


# -- training ----------------------------------------------------------------------------------------


def contiguous_folds_file(data: Path, run: Path, train_fraction: float = 0.8) -> Path:
    """Fold 0 (scored) = the last 20 % of the sorted frames, fold 1 = the first 80 % (CamVid is one video)."""
    stems = sorted(list_images(data / "images"))
    cut = round(len(stems) * train_fraction)
    return save_folds({stem: int(index < cut) for index, stem in enumerate(stems)}, run / "folds.csv")


def train(ladder: Ladder, row: Row, options: argparse.Namespace, data_root: Path, run: Path) -> Path:
    """Train the folds ``row`` needs (skipping finished ones); returns the recipe's bag folder."""
    bag_dir = run / row.recipe
    folds = list(range(ladder.n_folds)) if row.all_folds and ladder.scoring != "classes" else [0]
    arguments = training_arguments(ladder, row.recipe, options, data_root)
    if ladder.scoring == "classes":
        arguments.append(f"--data.folds_file={contiguous_folds_file(data_root / ladder.dataset, run)}")
    cli(["bag", f"--folds={ladder.n_folds}", f"--bag_dir={bag_dir}", "--only_fold", *map(str, folds), *arguments])
    if len(folds) == ladder.n_folds and ladder.scoring == "holdout":
        cli(["bag", f"--folds={ladder.n_folds}", f"--bag_dir={bag_dir}", "--assemble"])
    return bag_dir


# -- scoring -----------------------------------------------------------------------------------------


def linked_folder(images_dir: Path, stems: list[str], folder: Path) -> Path:
    """A folder of links to ``stems``' images, the input of ``ternaus-zoo predict``."""
    images = list_images(images_dir)
    if not folder.is_dir() or sorted(path.stem for path in folder.iterdir()) != sorted(stems):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for stem in stems:
            (folder / images[stem].name).symlink_to(images[stem])
    return folder


def read_mask(path: Path, binary: bool) -> torch.Tensor:
    """``(1, H, W)`` int64: ``value > 127`` for binary masks (first channel), class indices otherwise."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise OSError(f"cannot read {path}")
    if mask.ndim == 3:
        mask = mask[..., 0]
    return torch.from_numpy((mask > 127) if binary else mask).long()[None]


Counts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def counts(predicted: dict[str, torch.Tensor], masks_dir: Path, n_classes: int) -> Counts:
    """tp, fp, fn ``(N, n_classes)`` of each predicted ``(1, H, W)`` class map against its mask; a binary
    task is scored as two classes (background 0, foreground 1); CamVid's void (11) is left out."""
    masks = list_images(masks_dir)
    parts = []
    for stem, prediction in predicted.items():
        truth = read_mask(masks[stem], n_classes == 2)
        if prediction.shape != truth.shape:
            raise ValueError(f"{stem}: predicted {tuple(prediction.shape)}, mask {tuple(truth.shape)}")
        ignore = len(CAMVID_LABELS) if n_classes > 2 else None
        parts.append(confusion_stats(prediction, truth, mode="multiclass", num_classes=n_classes, ignore_index=ignore))
    return tuple(torch.cat(part) for part in list(zip(*parts, strict=True))[:3])


def read_predictions(predicted_dir: Path, stems: list[str], n_classes: int) -> dict[str, torch.Tensor]:
    """The PNG masks ``ternaus-zoo predict`` wrote (0/255 binary, class indices otherwise)."""
    return {stem: read_mask(predicted_dir / f"{stem}.png", n_classes == 2) for stem in stems}


def constant_predictions(masks_dir: Path, stems: list[str], label: int) -> dict[str, torch.Tensor]:
    """``label`` everywhere (the trivial rows)."""
    masks = list_images(masks_dir)
    return {stem: torch.full_like(read_mask(masks[stem], False), label) for stem in stems}


def scores(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, Any]:
    """Binary: foreground Dice/IoU (micro), background IoU, their mean, mean per-image Dice.
    Multi-class: mean IoU and the per-class IoU (over the whole scored set)."""
    if tp.shape[1] > 2:
        return {
            "mean_iou": float(mean_iou(tp, fp, fn)),
            "class_iou": [float(value) for value in iou_score(tp, fp, fn, "per_class")],
        }
    foreground, background = (slice(1, 2), slice(0, 1))
    fg = (tp[:, foreground], fp[:, foreground], fn[:, foreground])
    return {
        "dice": float(dice_score(*fg)),
        "iou": float(iou_score(*fg)),
        "iou_background": float(iou_score(tp[:, background], fp[:, background], fn[:, background])),
        "mean_iou": float(mean_iou(tp, fp, fn)),
        "dice_per_image": float(dice_score(*fg, reduction="per_image")),
        # the failures a clinician would see: images whose own Dice is under 0.5
        "share_dice_below_half": float((dice_score(*fg, reduction="none") < 0.5).float().mean()),
    }


def predict(arguments: list[str], images: Path, output: Path) -> float:
    """``ternaus-zoo predict`` into ``output`` (emptied first); returns its wall time."""
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    cli(["predict", f"--data.predict_dir={images}", f"--writer.output_dir={output}", *arguments])
    return time.perf_counter() - started


def fold_stems(bag_dir: Path, fold: int, wanted: int) -> list[str]:
    return sorted(stem for stem, k in load_folds(bag_dir / f"fold{fold}" / "folds.csv").items() if k == wanted)


def score_row(ladder: Ladder, row: Row, bag_dir: Path, data: Path, run: Path) -> dict[str, Any]:
    """Predict and score one row; the counts are pooled over the scored images (and folds)."""
    out = run / "predictions" / row.name.translate(str.maketrans(" +(),'", "______"))
    tta = f"--tta={row.tta}"
    n_classes = 2 if ladder.scoring != "classes" else len(CAMVID_LABELS)
    seconds, parts, per_fold = 0.0, [], []
    if ladder.scoring == "holdout":
        stems = fold_stems(bag_dir, 0, HOLDOUT)
        images = linked_folder(data / "images", stems, run / "holdout_images")
        if row.all_folds:
            source = f"--manifest={bag_dir / 'manifest.json'}"
        else:
            source = f"--ckpt_path={bag_dir / load_json(bag_dir / 'fold0' / 'done.json')['best_checkpoint']}"
        seconds += predict([source, tta], images, out)
        parts.append(counts(read_predictions(out, stems, n_classes), data / "masks", n_classes))
    else:
        folds = range(ladder.n_folds) if ladder.scoring == "folds" else [0]
        for fold in folds:
            stems = fold_stems(bag_dir, fold, fold)
            images = linked_folder(data / "images", stems, run / f"fold{fold}_images")
            checkpoint = bag_dir / f"fold{fold}" / "checkpoints" / "last.ckpt"
            seconds += predict([f"--ckpt_path={checkpoint}", tta], images, out / f"fold{fold}")
            parts.append(counts(read_predictions(out / f"fold{fold}", stems, n_classes), data / "masks", n_classes))
            if ladder.scoring == "folds":
                per_fold.append(scores(*parts[-1])["mean_iou"])
    folds_done = [load_json(path) for path in sorted(bag_dir.glob("fold*/done.json"))]
    used = folds_done if row.all_folds else folds_done[:1]
    result = scores(*(torch.cat(part) for part in zip(*parts, strict=True)))
    result |= {
        "train_minutes": sum(entry["fit_seconds"] for entry in used) / 60,
        "predict_seconds": seconds,
        "epochs": [entry["best_epoch"] + 1 for entry in used],
        "models": len(used) if row.all_folds or ladder.scoring == "folds" else 1,
        "commit": git_commit(),
    }
    if per_fold:
        result["per_fold_mean_iou"] = per_fold
    return result


def trivial_rows(ladder: Ladder, data: Path, bag_dir: Path) -> dict[str, dict[str, Any]]:
    """All-background / all-foreground (binary), all-majority-class (CamVid) on the scored images."""
    if ladder.scoring == "holdout":
        groups = [fold_stems(bag_dir, 0, HOLDOUT)]
    else:
        groups = [fold_stems(bag_dir, fold, fold) for fold in range(ladder.n_folds if ladder.scoring == "folds" else 1)]
    stems = [stem for group in groups for stem in group]
    masks = data / "masks"
    if ladder.scoring != "classes":
        return {
            name: scores(*counts(constant_predictions(masks, stems, label), masks, 2))
            for name, label in (("all background", 0), ("all foreground", 1))
        }
    n_classes = len(CAMVID_LABELS)
    training = set(list_images(masks)) - set(stems)
    pixels = sum(
        torch.bincount(read_mask(path, False).flatten(), minlength=n_classes + 1)[:n_classes]
        for stem, path in list_images(masks).items()
        if stem in training
    )
    majority = int(pixels.argmax())
    result = scores(*counts(constant_predictions(masks, stems, majority), masks, n_classes))
    return {f"all '{CAMVID_LABELS[majority]}' (the training set's majority class)": result}


# -- report ------------------------------------------------------------------------------------------


def headline(ladder: Ladder) -> tuple[str, str]:
    if ladder.scoring == "holdout":
        return "dice", "Dice"
    return "mean_iou", "mean IoU"


def report(ladder: Ladder, options: argparse.Namespace, state: dict[str, Any], run: Path) -> str:
    key, label = headline(ladder)
    rows, plotted = [], []
    for row in ladder.rows:
        result = state["rows"].get(row.name)
        if result is None:
            rows.append((row.name, "not run yet", *[""] * 5))
            continue
        if ladder.scoring == "holdout":
            values = f"{result['dice']:.4f} / {result['iou']:.4f} / {result['dice_per_image']:.4f}"
        elif ladder.scoring == "folds":
            spread = np.std(result["per_fold_mean_iou"])
            values = (
                f"{result['iou']:.4f} / {result['iou_background']:.4f} / {result['mean_iou']:.4f} "
                f"(fold sd {spread:.4f})"
            )
        else:
            values = f"{result['mean_iou']:.4f}"
        rows.append(
            (
                row.name,
                values,
                result["models"],
                # kvasir scores each fold's best checkpoint, the others the last one
                ", ".join(map(str, result["epochs"])) if ladder.scoring == "holdout" else f"{options.epochs} (last)",
                f"{result['train_minutes']:.1f}",
                f"{result['predict_seconds']:.0f}",
                f"`{row.recipe}`" + (f", TTA {row.tta}" if row.tta != "none" else ""),
            )
        )
        plotted.append((row.name, result[key]))
    for name, result in state.get("trivial", {}).items():
        rows.append((f"trivial: {name}", _values(ladder, result), "", "", "", "", ""))
    columns = {
        "holdout": "hold-out Dice / IoU / per-image Dice",
        "folds": "IoU foreground / background / mean (mean over folds' images)",
        "classes": "mean IoU (11 classes, void ignored)",
    }
    data_root = Path("$TERNAUS_ZOO_DATA")
    recipes = [
        f"- `{name}`: `ternaus-zoo bag --folds={ladder.n_folds} --only_fold ... "
        f"{shlex.join(training_arguments(ladder, name, options, data_root))}`"
        for name in ladder.recipes
    ]
    split = state.get("split", {})
    lines = [
        f"# Quality ladder on {ladder.dataset}",
        environment(),
        f"- every model: {options.epochs} epoch(s), {options.size} px crops, evaluation at {options.size} px (longest "
        f"side) and scored at each mask's original resolution, precision {options.precision}, seed {options.seed}, "
        f"{options.workers} loader process(es), no ImageNet weights (none can be downloaded here)",
        f"- scored images: {split.get('description', '')} (sha1 of the sorted stems {split.get('sha1', '')})",
        *[f"- {note}" for note in ladder.notes],
        "## Ladder",
        markdown_table(
            ["row", columns[ladder.scoring], "models", "epochs (checkpoint)", "train min", "predict s", "recipe"], rows
        ),
    ]
    if ladder.scoring == "classes":
        lines += ["## Per-class IoU", class_table(ladder, state)]
    lines += ["## Recipes (the exact training commands)", *recipes]
    text = "\n\n".join(lines) + "\n"
    folder = results_dir(options)
    (folder / f"{options.name}.md").write_text(text)
    table = {
        "dataset": ladder.dataset,
        "epochs": options.epochs,
        "size": options.size,
        "seed": options.seed,
        "commit": git_commit(),
        "rows": [{"name": row.name, **state["rows"][row.name]} for row in ladder.rows if row.name in state["rows"]],
        "trivial": state.get("trivial", {}),
        "split": state.get("split", {}),
    }
    save_json(folder / f"{options.name}.json", table)
    plot(plotted, state.get("trivial", {}), key, label, ladder, options, folder)
    return text


def _values(ladder: Ladder, result: dict[str, Any]) -> str:
    if ladder.scoring == "holdout":
        return f"{result['dice']:.4f} / {result['iou']:.4f} / {result['dice_per_image']:.4f}"
    if ladder.scoring == "folds":
        return f"{result['iou']:.4f} / {result['iou_background']:.4f} / {result['mean_iou']:.4f}"
    return f"{result['mean_iou']:.4f}"


def class_table(ladder: Ladder, state: dict[str, Any]) -> str:
    results = {**state["rows"], **state.get("trivial", {})}
    rows = [(name, *result["class_iou"]) for name, result in results.items() if "class_iou" in result]
    return markdown_table(["row", *CAMVID_LABELS], rows)


def plot(points: list[tuple[str, float]], trivial: dict, key: str, label: str, ladder, options, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        return
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(points) + 1.5))
    names = [name for name, _ in points][::-1]
    axis.barh(names, [value for _, value in points][::-1], color="tab:blue")
    for name, result in trivial.items():
        axis.axvline(result[key], linestyle="--", color="grey")
        axis.text(result[key], len(points) - 0.4, f" {name}", fontsize=7, color="grey")
    for index, (_, value) in enumerate(points[::-1]):
        axis.text(value, index, f" {value:.3f}", va="center", fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"{label} ({'hold-out' if ladder.scoring == 'holdout' else 'validation'})")
    epochs = f"{options.epochs} epoch{'s' if options.epochs > 1 else ''}"
    axis.set_title(f"{ladder.dataset}: {epochs} a model, {options.size} px, CPU")
    figure.tight_layout()
    figure.savefig(folder / f"{options.name}.png", dpi=100)
    plt.close(figure)


def main() -> None:
    options = parse()
    ladder = LADDERS[options.dataset]
    data = data_root() / ladder.dataset
    run = ROOT / "runs" / "benchmarks" / options.name
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "state.json"
    state = load_json(state_path)
    settings = {"epochs": options.epochs, "size": options.size, "seed": options.seed}
    if any(state.get(key, value) != value for key, value in settings.items()):
        raise SystemExit(f"{run} holds a run of other epochs/size/seed: pass another --name")
    state |= settings
    state.setdefault("rows", {})
    selected = [row for index, row in enumerate(ladder.rows) if options.rows is None or index in options.rows]
    for row in selected:
        if row.name in state["rows"]:
            continue
        bag_dir = train(ladder, row, options, data.parent, run)
        if "trivial" not in state:
            state["trivial"] = trivial_rows(ladder, data, bag_dir)
            stems = sorted(
                stem
                for fold in range(ladder.n_folds if ladder.scoring == "folds" else 1)
                for stem in fold_stems(bag_dir, fold, HOLDOUT if ladder.scoring == "holdout" else fold)
            )
            description = {
                "holdout": "the hold-out `sorted(stems)[::5]`",
                "folds": f"every image once, as the validation fold of a {ladder.n_folds}-fold split (`make_folds`, "
                "seed 0)",
                "classes": "the last 20 % of the sorted frames (the first 80 % train)",
            }[ladder.scoring]
            state["split"] = {
                "description": f"{description}, {len(stems)} images",
                "sha1": hashlib.sha1("\n".join(stems).encode()).hexdigest()[:12],
            }
        state["rows"][row.name] = score_row(ladder, row, bag_dir, data, run)
        save_json(state_path, state)
        print(report(ladder, options, state, run), flush=True)
    report(ladder, options, state, run)


if __name__ == "__main__":
    main()

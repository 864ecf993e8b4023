"""The equal-budget comparison on kvasir-seg (../shared/BENCHMARKS.md): one recipe, no ImageNet weights,
training plus hold-out prediction within ``--minutes`` of wall time on this machine.

    OMP_NUM_THREADS=2 nohup python -m benchmarks.budget --config configs/kvasir_cpu_hour.yaml --minutes 60 \\
        > runs/benchmarks/kvasir_cpu_hour.log 2>&1 &

Trains fold 0 of the recipe's folds through ``ternaus-zoo bag --only_fold 0`` (the fold only watches the run;
the hold-out ``sorted(stems)[::5]`` is never seen), with ``trainer.max_time`` set to what is left of the
budget after ``--reserve`` minutes for prediction; then ``ternaus-zoo predict`` of the last checkpoint
(``--tta``) on the 200 hold-out images, scored at each mask's original resolution. The wall time counts
everything from the start of this script to the last scored mask. Resumable: run the same command again;
after an error, Ctrl-C or SIGTERM the time already spent is kept in ``runs/benchmarks/<name>/state.json``
and added (after a SIGKILL it is lost from the total), and Lightning's timer resumes from the checkpoint.
Writes ``benchmarks/results/<name>.md``, ``.json`` and ``.png`` (the validation Dice against training time).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, ArgumentParser, data_root, environment, markdown_table, results_dir
from benchmarks.quality import (
    constant_predictions,
    counts,
    linked_folder,
    load_json,
    predict,
    read_predictions,
    save_json,
    scores,
)
from ternaus_zoo.cli import main as cli
from ternaus_zoo.data import HOLDOUT, load_folds

# BENCHMARKS.md's anchor, measured by the project on this machine (not rerun here): smp used plainly
ANCHOR = {
    "name": 'smp `Unet("resnet34")` used plainly (BENCHMARKS.md: 224 px, BCE + Dice, Adam one-cycle, 12 epochs)',
    "dice": 0.693,
    "iou": 0.531,
    "minutes": 55,
}
MARGIN = 0.10


def parse() -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "kvasir_cpu_hour.yaml")
    parser.add_argument("--name", default=None, help="run and result name (default: the config's stem)")
    parser.add_argument("--minutes", type=float, default=60.0, help="the whole budget, training + prediction")
    parser.add_argument("--reserve", type=float, default=4.0, help="minutes kept for prediction and scoring")
    parser.add_argument("--folds", type=int, default=10, help="the recipe's folds; fold 0 watches the run")
    parser.add_argument("--tta", default="d4", help="test-time augmentation of the hold-out prediction")
    # anything else is a LightningCLI option for the training (for example --trainer.max_epochs=2)
    options, options.overrides = parser.parse_known_args()
    options.name = options.name or options.config.stem
    return options


def max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS``."""
    seconds = max(int(seconds), 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def read_log(fold_dir: Path) -> tuple[list[dict[str, str]], int]:
    """The rows of the fold's Lightning CSV log and the number of epochs it trained."""
    with (fold_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return rows, 1 + max(int(row["epoch"]) for row in rows if row.get("train/loss_epoch"))


def validation_curve(fold_dir: Path) -> list[tuple[float, float]]:
    """``(minutes of training, validation Dice)`` of each validation during the fit (the validation of the
    best checkpoint after it is left out); Lightning's CSV log has no clock, so epoch ``e`` ends at
    ``(e + 1) / epochs`` of the fit's wall time."""
    rows, epochs = read_log(fold_dir)
    per_epoch = load_json(fold_dir / "done.json")["fit_seconds"] / 60 / epochs
    return [
        ((int(row["epoch"]) + 1) * per_epoch, float(row["val/dice"]))
        for row in rows
        if row.get("val/dice") and int(row["epoch"]) < epochs
    ]


def plot(curve: list[tuple[float, float]], result: dict[str, Any], trivial: float, name: str, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    if curve:
        axis.plot(*zip(*curve, strict=True), marker="o", label="validation Dice (fold 0, 256 px)")
    axis.axhline(result["dice"], color="tab:green", label=f"hold-out Dice {result['dice']:.3f} (TTA)")
    axis.axhline(ANCHOR["dice"], color="grey", linestyle="--", label=f"smp used plainly {ANCHOR['dice']}")
    axis.axhline(ANCHOR["dice"] + MARGIN, color="tab:red", linestyle=":", label="the bar (+0.10)")
    axis.axhline(trivial, color="black", linestyle="-.", linewidth=0.8, label=f"all foreground {trivial:.3f}")
    axis.axvline(result["minutes"], color="tab:green", linestyle=":", linewidth=0.8)
    axis.set_xlabel("wall minutes (training; the green dotted line: training + prediction)")
    axis.set_ylabel("Dice")
    axis.set_ylim(0, 1)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(f"kvasir-seg, one CPU budget: {name}")
    figure.tight_layout()
    figure.savefig(folder / f"{name}.png", dpi=100)
    plt.close(figure)


def report(options: argparse.Namespace, state: dict[str, Any], arguments: list[str], folder: Path) -> str:
    result, trivial = state["result"], state["trivial"]
    bar = ANCHOR["dice"] + MARGIN
    verdict = "met" if result["dice"] >= bar and result["minutes"] <= options.minutes else "**not met**"
    rows = [
        (
            f"ours: `{options.config.name}`, TTA {options.tta}",
            f"{result['dice']:.4f} / {result['iou']:.4f} / {result['dice_per_image']:.4f}",
            f"{result['train_minutes']:.1f} + {result['predict_seconds'] / 60:.1f} = {result['minutes']:.1f}",
            result["epochs"],
        ),
        (ANCHOR["name"], f"{ANCHOR['dice']:.3f} / {ANCHOR['iou']:.3f} / -", f"{ANCHOR['minutes']} (training)", 12),
        *[
            (f"trivial: {name}", f"{row['dice']:.4f} / {row['iou']:.4f} / {row['dice_per_image']:.4f}", "", "")
            for name, row in trivial.items()
        ],
    ]
    lines = [
        f"# Kvasir-SEG in {options.minutes:g} CPU minutes, no ImageNet weights",
        environment(),
        f"- scored: the hold-out `sorted(stems)[::5]`, {state['split']['images']} images (sha1 of the sorted stems "
        f"{state['split']['sha1']}), at each mask's original resolution, threshold 0.5",
        f"- the bar: smp used plainly + {MARGIN} = Dice {bar:.3f} within {options.minutes:g} minutes: {verdict} "
        f"(ours {result['dice']:.4f} in {result['minutes']:.1f} minutes)",
        f"- training: `ternaus-zoo bag --folds={options.folds} --only_fold 0 {' '.join(arguments)}` (fold 0, "
        f"{result['val_images']} images, only watches the run; the last checkpoint is scored)",
        f"- prediction: `ternaus-zoo predict --ckpt_path=<last.ckpt> --tta={options.tta}` on the hold-out",
        "## Result",
        markdown_table(["", "hold-out Dice / IoU / per-image Dice", "minutes (train + predict)", "epochs"], rows),
        f"![validation Dice against time]({options.name}.png)",
    ]
    text = "\n\n".join(lines) + "\n"
    (folder / f"{options.name}.md").write_text(text)
    save_json(folder / f"{options.name}.json", {"config": options.config.name, **state, "anchor": ANCHOR})
    return text


def main() -> None:
    options = parse()
    started = time.perf_counter()
    # a stop from outside (SIGTERM) unwinds like Ctrl-C, so the time spent so far is saved for the resume
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    data = data_root() / "kvasir-seg"
    run = ROOT / "runs" / "benchmarks" / options.name
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "state.json"
    state = load_json(state_path)
    spent = state.get("seconds_before", 0.0)

    def elapsed() -> float:
        return spent + time.perf_counter() - started

    bag_dir = run / "bag"
    config = options.config.resolve()
    arguments = [f"--config={config.relative_to(ROOT)}", *options.overrides]
    if "result" not in state:
        try:
            training_time = options.minutes * 60 - options.reserve * 60 - elapsed()
            cli(
                [
                    "bag",
                    f"--folds={options.folds}",
                    f"--bag_dir={bag_dir}",
                    "--only_fold",
                    "0",
                    f"--config={config}",
                    f"--data.data_root={data.parent}",
                    f"--trainer.max_time={max_time(training_time)}",
                    *options.overrides,
                ]
            )
            done = load_json(bag_dir / "fold0" / "done.json")
            train_minutes = elapsed() / 60
            folds = load_folds(bag_dir / "fold0" / "folds.csv")
            stems = sorted(stem for stem, fold in folds.items() if fold == HOLDOUT)
            images = linked_folder(data / "images", stems, run / "holdout_images")
            output = run / "predictions"
            last = bag_dir / done["last_checkpoint"]
            predict_seconds = predict([f"--ckpt_path={last}", f"--tta={options.tta}"], images, output)
            result = scores(*counts(read_predictions(output, stems, 2), data / "masks", 2))
        except BaseException:
            save_json(state_path, {**state, "seconds_before": elapsed()})
            raise
        result |= {
            "minutes": elapsed() / 60,
            "train_minutes": train_minutes,
            "predict_seconds": predict_seconds,
            "epochs": read_log(bag_dir / "fold0")[1],
            "val_images": done["n_val_images"],
        }
        state |= {
            "result": result,
            "split": {"images": len(stems), "sha1": hashlib.sha1("\n".join(stems).encode()).hexdigest()[:12]},
            "trivial": {
                name: scores(*counts(constant_predictions(data / "masks", stems, label), data / "masks", 2))
                for name, label in (("all background", 0), ("all foreground", 1))
            },
        }
        save_json(state_path, state)
    if (bag_dir / "fold0" / "metrics.csv").is_file():
        state["result"]["curve"] = validation_curve(bag_dir / "fold0")
    folder = results_dir(options)
    plot(state["result"]["curve"], state["result"], state["trivial"]["all foreground"]["dice"], options.name, folder)
    print(report(options, state, arguments, folder), flush=True)


if __name__ == "__main__":
    main()

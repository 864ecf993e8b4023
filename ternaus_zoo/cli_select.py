"""``ternaus-zoo select BAG [BAG ...] --out FOLDER``: choose the ensemble, threshold and post-processing of finished
bags on their out-of-fold predictions (:mod:`ternaus_zoo.planning.selection`), print the table and write
``FOLDER/selection.json`` beside the chosen ensemble as a saved-model folder (:mod:`ternaus_zoo.planning.shipping`:
``ternaus-zoo predict --pretrained FOLDER``, ``ternaus_zoo.from_pretrained``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ternaus_zoo.cli_arguments import ArgumentParser, at_least
from ternaus_zoo.planning.bags import check_same_task, load_bag, load_masks
from ternaus_zoo.planning.selection import select as select_pipeline
from ternaus_zoo.planning.shipping import write_selection_folder

SELECTION_FILE = "selection.json"


def parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="ternaus-zoo select",
        description=__doc__,
    )
    parser.add_argument(
        "bags", nargs="+", metavar="BAG_DIR", help="finished bag folders (ternaus-zoo bag) sharing folds"
    )
    parser.add_argument(
        "--out", required=True, help="the folder to write selection.json and the chosen ensemble into (created)"
    )
    parser.add_argument(
        "--data_root",
        default=None,
        help="folder holding the bags' data set, for the masks (default: bag.yaml's data_root, else TERNAUS_ZOO_DATA)",
    )
    parser.add_argument("--max_steps", type=at_least(1), default=10, help="forward-selection steps (members)")
    parser.add_argument("--bootstrap", type=at_least(1), default=2000, help="bootstrap resamplings per trial")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    return parser


def _interval(low: float, high: float) -> str:
    return f"[{low:+.4f}, {high:+.4f}]"


def format_table(selection: dict[str, Any]) -> str:
    """The bags, the ensemble and the trials as plain-text lines."""
    objective = selection["objective"]
    lines = [f"{'bag':<24} {objective:>12} {'dice':>8} {'iou':>8} {'dice/image':>10}"]
    for row in selection["bags"]:
        lines.append(
            f"{row['name']:<24} {row['score']:>12.4f} {row['dice']:>8.4f} {row['iou']:>8.4f} "
            f"{row['dice_per_image']:>10.4f}"
        )
    ensemble = selection["ensemble"]
    nested = ensemble["nested"]
    weights = ", ".join(f"{name} {weight:.2f}" for name, weight in ensemble["weights"].items() if weight > 0)
    lines.append(
        f"{'ensemble (nested)':<24} {nested['score']:>12.4f} {nested['dice']:>8.4f} {nested['iou']:>8.4f} "
        f"{nested['dice_per_image']:>10.4f}"
    )
    lines.append(
        f"ensemble weights: {weights}; it beats the best single bag ({nested['best_single']}) by "
        f"{nested['gain_over_best_single']:+.4f} {objective}, 95 % interval {_interval(*nested['interval'])}"
    )
    for trial in selection["trials"]:
        if not trial.get("tried", True):
            lines.append(f"{trial['step']:<14} not tried: {trial['reason']}")
            continue
        verdict = "kept" if trial["kept"] else "not kept"
        fallen = f" (falls: {', '.join(trial['classes_fallen'])})" if trial["classes_fallen"] else ""
        lines.append(
            f"{trial['step']:<14} {json.dumps(trial['value']):<60} gain {trial['gain']:+.4f} "
            f"{_interval(*trial['interval'])} {verdict}{fallen}"
        )
    final = selection["final"]
    lines.append(f"final: {objective} {final['score']:.4f}, threshold {final['threshold']}, "
                 f"{len(final['postprocessing'])} post-processing step(s)")  # fmt: skip
    return "\n".join(lines)


def select(args: Sequence[str]) -> dict[str, Any]:
    """Choose by out-of-fold evidence; returns the content of ``selection.json``."""
    options = parser().parse_args(list(args))
    bags = [load_bag(path) for path in options.bags]
    check_same_task(bags)
    masks = load_masks(bags[0], options.data_root)
    selection = select_pipeline(bags, masks, max_steps=options.max_steps, samples=options.bootstrap, seed=options.seed)
    selection["command"] = ["ternaus-zoo", "select", *args]
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SELECTION_FILE).write_text(json.dumps(selection, indent=2) + "\n")
    table = format_table(selection)
    print(table)
    write_selection_folder(bags, selection, out, table)
    print(f"select: wrote {out / SELECTION_FILE} and the ensemble (ternaus-zoo predict --pretrained {out})")
    return selection

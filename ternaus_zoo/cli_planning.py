"""``ternaus-zoo plan`` and ``ternaus-zoo auto``: from a folder of images and masks to a recipe that fits a
wall-clock budget on this machine, and from there to a trained, scored and saved model.

``plan`` fingerprints the data (cached), times the candidate models at the planned geometry and writes
``plan.yaml`` (a config ``ternaus-zoo fit --config plan.yaml`` runs unchanged, each value under its reason),
``plan.json`` (the budget's split, the timings, the device) and ``fingerprint.json`` (with the timings, so that
planning again with the same data, options and device is instant and gives the same plan).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ternaus_zoo.cli_arguments import ArgumentParser, at_least
from ternaus_zoo.errors import BadValueError
from ternaus_zoo.planning.fingerprint import Fingerprint, fingerprint
from ternaus_zoo.planning.rules import Geometry, Plan, candidates, geometry, make_plan, parse_budget, render, trial_for
from ternaus_zoo.planning.timing import Device, Timing, device_facts, time_trial

PLAN_FILE, PLAN_INFO_FILE, FINGERPRINT_FILE = "plan.yaml", "plan.json", "fingerprint.json"
# planning may spend the larger of this share of the budget and MIN_PLANNING_S
PLANNING_SHARE, MIN_PLANNING_S = 0.02, 60.0


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="the data set folder: images/ and masks/ paired by file stem")
    parser.add_argument("--budget", default="60m", help="wall-clock budget of the whole run: 60m, 1h30m, 90s")
    parser.add_argument(
        "--mask_mode",
        choices=("binary", "classes", "multilabel"),
        default=None,
        help="the kind of masks, where the fingerprint cannot tell (None: inferred from the values)",
    )
    parser.add_argument(
        "--ignore_index", type=int, default=None, help="the mask value of a void class, left out of the loss and scores"
    )
    parser.add_argument("--masks", default="masks", help="the masks sub-folder, or a COCO annotation file")
    parser.add_argument(
        "--folds", type=at_least(2), default=None, help="plan a bag of this many folds (None: one model)"
    )
    parser.add_argument(
        "--holdout_every",
        type=at_least(0),
        default=0,
        help="hold out sorted(stems)[::k] for scoring, never trained on (0: score the validation fold)",
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed_everything of the plan")


def _timings_key(device: Device, name: str, trial: Any) -> str:
    return f"{device.name}|{device.precision}|{name}|{trial.patch_size}x{trial.batch_size}|{trial.eval_side}"


def measure(
    found: Fingerprint, device: Device, shape: Geometry, cached: dict[str, Any]
) -> tuple[dict[str, Timing], dict[str, Any]]:
    """The candidates' timings at the plan's geometry ``shape``: from ``cached`` (an earlier plan's, same device and
    geometry), else measured now. Returns them and the entries to record in the fingerprint."""
    timings, record = {}, {}
    for candidate in candidates(found, shape):
        trial = trial_for(candidate, found, shape)
        key = _timings_key(device, candidate.name, trial)
        if key in cached:
            timings[candidate.name] = Timing(**cached[key])
        else:
            print(f"plan: timing {candidate.name} ({trial.batch_size} x {trial.patch_size} px) on {device.name}")
            timings[candidate.name] = time_trial(trial, device)
        record[key] = vars(timings[candidate.name])
    return timings, record


def make(options: argparse.Namespace, out: Path, started: float) -> Plan:
    """Fingerprint, time and plan; write ``plan.yaml``, ``plan.json`` and ``fingerprint.json`` beside ``out``."""
    budget_s = parse_budget(options.budget)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    found = fingerprint(
        options.data, mask_mode=options.mask_mode, ignore_index=options.ignore_index, masks=options.masks
    )
    earlier = folder / FINGERPRINT_FILE
    cached = Fingerprint.load(earlier).timings if earlier.is_file() else {}
    device = device_facts()
    shape = geometry(found, device)
    timings, record = measure(found, device, shape, cached.get("trials", {}))
    # a plan made again from recorded timings keeps the planning time of the run that measured them
    planning_s = cached.get("planning_s") if all(key in cached.get("trials", {}) for key in record) else None
    planning_s = planning_s if planning_s is not None else round(time.monotonic() - started, 1)
    allowed = max(PLANNING_SHARE * budget_s, MIN_PLANNING_S)
    if planning_s > allowed:
        print(f"plan: planning took {planning_s:.0f} s, over its {allowed:.0f} s share; it is taken from the budget")
    found.timings = {"trials": record, "planning_s": planning_s, "device": device.to_dict()}
    found.save(earlier)
    plan = make_plan(
        found,
        device,
        shape,
        timings,
        budget_s=budget_s,
        planning_s=planning_s,
        folds=options.folds,
        holdout_every=options.holdout_every,
        seed=options.seed,
    )
    header = [
        f"ternaus-zoo plan for {found.data_dir}: a budget of {options.budget} on {device.name}",
        f"run it: ternaus-zoo fit --config {out}",
        f"planned from {FINGERPRINT_FILE} and the timings in it; the budget's split is in {PLAN_INFO_FILE}",
        "",
    ]
    out.write_text(render(plan.choices, header))
    info = {
        "budget": plan.budget.to_dict(),
        "model": plan.model,
        "steps": plan.steps,
        "tta": plan.tta,
        "folds": options.folds,
        "holdout_every": options.holdout_every,
        "options": planned_options(options),
        "device": device.to_dict(),
        "timings": {name: vars(timing) for name, timing in plan.timings.items()},
        "reasons": {choice.key: choice.why for choice in plan.choices},
    }
    (folder / PLAN_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return plan


def plan(args: Sequence[str]) -> Plan:
    """``ternaus-zoo plan DATA [--budget 60m] [--out plan.yaml] ...``: write a recipe for this data and machine."""
    parser = ArgumentParser(prog="ternaus-zoo plan", description=__doc__)
    _common_options(parser)
    parser.add_argument("--out", type=Path, default=Path(PLAN_FILE), help="the plan's path; its JSON files go beside")
    options = parser.parse_args(args)
    started = time.monotonic()
    result = make(options, options.out, started)
    budget = result.budget
    print(
        f"plan: wrote {options.out}: {result.model}, about {result.steps} steps in {budget.train_s / 60:.1f} min of "
        f"training (planning {budget.planning_s:.0f} s, validations {budget.validation_s:.0f} s, prediction "
        f"{budget.predict_s:.0f} s, TTA {result.tta or 'none'}); run it with `ternaus-zoo fit --config {options.out}`"
    )
    return result


CLOCK_FILE = "clock.json"
REPORT_FILE = "report.md"
WORST_DRAWN = 6


class BudgetClock:
    """Wall seconds a run of ``auto`` has spent, across interruptions: what earlier runs recorded in
    ``DIR/clock.json`` plus this run's time, written back when this run ends (finished, failed or stopped)."""

    def __init__(self, folder: Path, started: float) -> None:
        self.path = folder / CLOCK_FILE
        self.started = started
        self.before = json.loads(self.path.read_text())["spent_s"] if self.path.is_file() else 0.0

    @property
    def spent_s(self) -> float:
        return self.before + time.monotonic() - self.started

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"spent_s": round(self.spent_s, 1)}) + "\n")


def _scored_stems(fold_folder: Path, holdout: bool) -> list[str]:
    """The hold-out's stems (fold -1 in ``folds.csv``), or the fold's own validation stems (``fold<k>``)."""
    from ternaus_zoo.data import HOLDOUT, load_folds

    folds = load_folds(fold_folder / "folds.csv")
    wanted = HOLDOUT if holdout else int(fold_folder.name.removeprefix("fold"))
    return sorted(stem for stem, fold in folds.items() if fold == wanted)


def _linked_images(images: dict[str, Path], stems: Sequence[str], folder: Path) -> Path:
    """A folder of links to the images of ``stems`` (predict reads a folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        link = folder / images[stem].name
        if not link.exists():
            link.symlink_to(images[stem].resolve())
    return folder


def score_masks(
    predicted: Path, masks: dict[str, Path], stems: Sequence[str], config: dict[str, Any]
) -> dict[str, Any]:
    """Scores of the written masks against the true ones at original resolution: binary Dice, IoU and per-image
    Dice; class masks mean IoU (``../shared/BENCHMARKS.md``); and each image's own score."""
    import numpy as np
    import torch

    from ternaus_zoo.data import read_binary_mask, read_class_mask
    from ternaus_zoo.metrics import binary_summary, confusion_stats, dice_score, iou_score, mean_iou

    data, model = config["data"], config["model"]
    classes = data.get("mask_mode") == "classes"
    counts, per_image = [], {}
    for stem in stems:
        prediction = (
            read_class_mask(predicted / f"{stem}.png", 256) if classes else read_binary_mask(predicted / f"{stem}.png")
        )
        if classes:
            truth = read_class_mask(masks[stem], model["num_classes"], model.get("ignore_index"))
            stats = confusion_stats(
                torch.from_numpy(prediction.astype(np.int64))[None],
                torch.from_numpy(truth.astype(np.int64))[None],
                mode="multiclass",
                num_classes=model["num_classes"],
                ignore_index=model.get("ignore_index"),
            )
        else:
            truth = read_binary_mask(masks[stem], data.get("mask_threshold", 127))
            stats = confusion_stats(
                torch.from_numpy(prediction > 0)[None], torch.from_numpy(truth > 0)[None], mode="binary"
            )
        counts.append(stats)
        tp, fp, fn = stats[:3]
        per_image[stem] = float(mean_iou(tp, fp, fn) if classes else dice_score(tp, fp, fn))
    tp, fp, fn, tn = (torch.cat(parts) for parts in zip(*counts, strict=True))
    if classes:
        scores = {"mean_iou": float(mean_iou(tp, fp, fn)), "iou_per_class": iou_score(tp, fp, fn, "per_class").tolist()}
    else:
        scores = binary_summary(tp, fp, fn, tn)
    return {**scores, "images": len(stems), "per_image": per_image}


def validation_curve(fold_folder: Path, monitor: str) -> list[tuple[float, float]]:
    """``(minutes of training, validation score)`` of each validation in the fold's CSV log (the module logs its
    training clock as ``train/minutes``)."""
    import csv

    with (fold_folder / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    minutes = 0.0
    points = []
    for row in rows:
        if row.get("train/minutes"):
            minutes = float(row["train/minutes"])
        if row.get(monitor):
            points.append((minutes, float(row[monitor])))
    return points


def write_report(
    folder: Path,
    plan_info: dict[str, Any],
    scores: dict[str, Any],
    curve: list[tuple[float, float]],
    config: dict[str, Any],
    minutes: float,
) -> Path:
    """``DIR/report.md`` with the validation curve, the per-image score histogram and the worst images drawn."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ternaus_zoo.data import list_images, read_binary_mask, read_class_mask, read_image
    from ternaus_zoo.data.display import overlay

    data_dir = Path(config["data"]["dataset"])
    images = list_images(data_dir / "images")
    masks = list_images(data_dir / config["data"].get("masks", "masks"))
    predicted = folder / "predictions"

    key = "mean_iou" if "mean_iou" in scores and "dice" not in scores else "dice"
    name = "mean IoU" if key == "mean_iou" else "Dice"
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if curve:
        left.plot(*zip(*curve, strict=True), marker="o")
    left.set_xlabel("minutes of training")
    left.set_ylabel(f"validation {plan_info.get('monitor', 'score')}")
    left.set_title("validation during training")
    left.set_ylim(0, 1)
    right.hist(list(scores["per_image"].values()), bins=20, range=(0, 1))
    right.set_xlabel(f"per-image {name}")
    right.set_ylabel("images")
    right.set_title(f"{scores['images']} scored images")
    figure.tight_layout()
    figure.savefig(folder / "report.png", dpi=90)
    plt.close(figure)

    classes = config["data"].get("mask_mode") == "classes"
    worst = sorted(scores["per_image"], key=scores["per_image"].get)[:WORST_DRAWN]
    rows = []
    for stem in worst:
        image = read_image(images[stem], channels=3)
        if classes:
            truth = read_class_mask(masks[stem], config["model"]["num_classes"], config["model"].get("ignore_index"))
            guess = read_class_mask(predicted / f"{stem}.png", 256)
        else:
            truth = read_binary_mask(masks[stem], config["data"].get("mask_threshold", 127))
            guess = read_binary_mask(predicted / f"{stem}.png")
        truth = np.where(truth == config["model"].get("ignore_index", -1), 0, truth).astype(np.uint8)
        row = np.concatenate([overlay(image, truth, binary=not classes), overlay(image, guess, binary=not classes)], 1)
        rows.append(cv2.resize(row, (768, round(768 * row.shape[0] / row.shape[1]))))
    if rows:
        cv2.imwrite(str(folder / "worst.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    headline = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
    budget = plan_info["budget"]
    lines = [
        f"# ternaus-zoo auto: {config['data']['dataset']}",
        f"- model: {plan_info['model']}, about {plan_info['steps']} steps planned; TTA {plan_info['tta'] or 'none'}",
        f"- budget {budget['total_s'] / 60:.1f} min: planning {budget['planning_s']:.0f} s, training "
        f"{budget['train_s'] / 60:.1f} min, validations {budget['validation_s']:.0f} s, prediction "
        f"{budget['predict_s']:.0f} s; spent {minutes:.1f} min in all",
        f"- device: {plan_info['device']['name']} ({plan_info['device']['precision']})",
        f"- scored ({scores['images']} images, at original resolution, {scores['scored']}): {headline}",
        "",
        "![validation against time and the per-image histogram](report.png)",
        "",
        f"The {len(worst)} worst images (left: truth, right: prediction): "
        + ", ".join(f"{stem} {scores['per_image'][stem]:.3f}" for stem in worst),
        "",
        "![worst images](worst.png)",
        "",
        "The plan, each choice with its reason: [plan.yaml](plan.yaml).",
    ]
    path = folder / REPORT_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def score_bag(
    bag_dir: Path, manifest: dict[str, Any], config: dict[str, Any], *, holdout: bool, tta: str | None, folder: Path
) -> dict[str, Any]:
    """Predict with a bag's annealed last checkpoints (the models a time-budgeted schedule was planned for) and
    score at original resolution (:func:`score_masks`): the hold-out by all of them, else each validation fold by
    its own model (out of fold: no model sees an image it trained on; per-fold scores beside the pooled ones).
    Masks go to ``folder/predictions``."""
    from ternaus_zoo.cli_inference import predict_ensemble
    from ternaus_zoo.data import list_images

    data_dir = Path(config["data"]["dataset"])
    images = list_images(data_dir / "images")
    masks = list_images(data_dir / config["data"].get("masks", "masks"))
    predicted = folder / "predictions"
    last = [bag_dir / path for path in manifest["last_checkpoints"]]
    if holdout:
        groups = [(last, _scored_stems(bag_dir / "fold0", holdout=True))]
    else:
        groups = [([path], _scored_stems(path.parent.parent, holdout=False)) for path in last]
    stems: list[str] = []
    for index, (checkpoints, group) in enumerate(groups):
        predict_ensemble(
            [
                *(argument for path in checkpoints for argument in ("--ckpt_path", str(path))),
                *(["--tta", tta] if tta else []),
                f"--data.predict_dir={_linked_images(images, group, folder / 'scored_images' / str(index))}",
                f"--writer.output_dir={predicted}",
            ]
        )
        stems += group
    scores = score_masks(predicted, masks, sorted(stems), config)
    scores["scored"] = "the hold-out" if holdout else "each validation fold by its own model's last checkpoint"
    if len(groups) > 1:
        scores["per_fold"] = [
            {key: value for key, value in score_masks(predicted, masks, group, config).items() if key != "per_image"}
            for _, group in groups
        ]
    return scores


def planned_options(options: argparse.Namespace) -> dict[str, Any]:
    """The options a plan was made from (the data folder resolved), recorded in ``plan.json``."""
    planned = {key: value for key, value in vars(options).items() if key != "out"}
    return {**planned, "data": str(Path(options.data).resolve())}


def check_resumed_options(plan_info: dict[str, Any], options: argparse.Namespace, folder: Path) -> None:
    """Refuse to resume ``folder`` with options other than those it was planned with (they would be ignored).

    Raises:
        BadValueError: naming the first option that differs, both values, and the way out.
    """
    recorded = plan_info.get("options", {})
    for key, value in planned_options(options).items():
        if key in recorded and recorded[key] != value:
            raise BadValueError(
                f"{folder} was planned with --{key} {recorded[key]}, not {value}: run the same command to resume it, "
                "or give a new --out to plan again"
            )


def auto(args: Sequence[str]) -> dict[str, Any]:
    """``ternaus-zoo auto DATA --budget 60m --out DIR [--folds K]``: plan, train, score, save, report."""
    import yaml

    from ternaus_zoo.bagging import assemble
    from ternaus_zoo.cli import bag
    from ternaus_zoo.cli_inference import export

    started = time.monotonic()
    parser = ArgumentParser(
        prog="ternaus-zoo auto",
        description="Plan, train (a bag with --folds), score at original resolution, save a model folder and "
        "write DIR/report.md, all within the budget. Run the same command again after an interruption: it resumes "
        "from DIR/plan.yaml and the checkpoint's clock, and never plans again.",
    )
    _common_options(parser)
    parser.add_argument("--out", type=Path, required=True, help="the run's folder")
    options = parser.parse_args(args)
    folder = options.out
    clock = BudgetClock(folder, started)
    plan_path = folder / PLAN_FILE
    try:
        if plan_path.is_file():
            check_resumed_options(json.loads((folder / PLAN_INFO_FILE).read_text()), options, folder)
            print(f"auto: resuming from {plan_path} ({clock.before / 60:.1f} min spent before); not planning again")
        else:
            make(options, plan_path, started)
        plan_info = json.loads((folder / PLAN_INFO_FILE).read_text())
        config = yaml.safe_load(plan_path.read_text())
        n_folds = config["data"]["n_folds"]
        bag_dir = folder / "bag"
        only = [] if plan_info["folds"] else ["--only_fold", "0"]
        bag(["--config", str(plan_path), "--folds", str(n_folds), "--bag_dir", str(bag_dir), *only])
        manifest_path = bag_dir / "manifest.json"
        manifest = assemble(bag_dir, n_folds)
        scores = score_bag(
            bag_dir, manifest, config, holdout=bool(plan_info["holdout_every"]), tta=plan_info["tta"], folder=folder
        )
        metrics = {key: value for key, value in scores.items() if isinstance(value, float)}
        (folder / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
        (folder / "metrics.json").write_text(json.dumps(metrics) + "\n")
        export(
            [
                "--manifest",
                str(manifest_path),
                *(["--tta", plan_info["tta"]] if plan_info["tta"] else []),
                "--format",
                "pretrained",
                "--output",
                str(folder / "model"),
                "--metrics",
                str(folder / "metrics.json"),
                "--metrics_source",
                str(folder / REPORT_FILE),
            ]
        )
        plan_info["monitor"] = manifest.get("monitor")
        curve = validation_curve(bag_dir / "fold0", manifest.get("monitor") or "val/iou")
        report = write_report(folder, plan_info, scores, curve, config, clock.spent_s / 60)
        print(
            f"auto: {', '.join(f'{k} {v:.4f}' for k, v in metrics.items())}; model in {folder / 'model'}, "
            f"report {report}; {clock.spent_s / 60:.1f} of {plan_info['budget']['total_s'] / 60:.1f} min"
        )
        return scores
    finally:
        clock.save()

"""``ternaus-zoo select`` measured (issue 26 section 5): two bags of different models sharing their folds, the
ensemble and post-processing chosen on their out-of-fold predictions, then everything scored again on a hold-out
that no bag and no choice saw, so that a step which wins out of fold and loses on the hold-out shows.

    OMP_NUM_THREADS=2 nohup python -m benchmarks.pinned <commit> -- python -m benchmarks.select \\
        --dataset kvasir-seg --holdout_every 5 --folds 3 --fold_minutes 12 --seeds 0 1 \\
        --bag linknet34=configs/kvasir_cpu_hour.yaml --bag unet16=configs/kvasir_cpu_hour.yaml \\
        --override "unet16=--model.model=unet" "--override=unet16=--model.model_kwargs={num_filters: 16}" &

Each bag trains on a budget of training time (``model.train_minutes``: the fold's minutes less a reserve for its
validations and out-of-fold pass), so its schedule anneals whatever the machine. Per seed: the bags (``ternaus-zoo
bag``, resumed where folds are done), ``ternaus-zoo select``, then the hold-out predicted with each bag alone and
with the selected folder (``predict --manifest`` / ``--pretrained``, probabilities saved) and every selection trial
replayed on it: its out-of-fold gain beside its hold-out gain. Scores are micro Dice at original resolution
(``select``'s objective for binary masks), with mean IoU of both classes beside it (../shared/BENCHMARKS.md).
Finished seeds are kept in ``runs/benchmarks/select_<dataset>/state.json``. Writes
``benchmarks/results/select_<dataset>.md`` and ``.json``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import ROOT, ArgumentParser, data_root, environment, markdown_table, results_dir
from ternaus_zoo.cli import main as cli
from ternaus_zoo.data import HOLDOUT, list_images, load_folds, read_binary_mask
from ternaus_zoo.inference import cleaned_mask
from ternaus_zoo.inference.postprocessing import PostProcessingStep
from ternaus_zoo.metrics import binary_summary, confusion_stats

# minutes of a fold kept for its validations and its out-of-fold predictions
RESERVE_MINUTES = 1.0


def parse() -> Any:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a binary data set of the data root (kvasir-seg, membrane)")
    parser.add_argument("--bag", action="append", required=True, help="NAME=CONFIG, twice or more")
    parser.add_argument("--override", action="append", default=[], help="NAME=--key=value: an option of one bag")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold_minutes", type=float, default=12.0, help="each fold's budget, its OOF pass included")
    parser.add_argument("--holdout_every", type=int, required=True, help="the hold-out: sorted(stems)[::k]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--bootstrap", type=int, default=2000, help="select's bootstrap resamplings")
    parser.add_argument("--oof_tta", default="d4", help="the TTA the bags also store OOF predictions under")
    return parser.parse_args()


def pairs(entries: list[str], what: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` entries split once."""
    split = [entry.split("=", 1) for entry in entries]
    if any(len(pair) != 2 for pair in split):
        raise SystemExit(f"every {what} is NAME=VALUE, got {entries}")
    return [(name, value) for name, value in split]


def train_bag(options: Any, name: str, config: str, overrides: list[str], seed: int, bag_dir: Path) -> None:
    """``ternaus-zoo bag`` of one config on the shared folds, on a budget of training time per fold."""
    train_minutes = options.fold_minutes - RESERVE_MINUTES
    guard = int(options.fold_minutes * 60 + 120)  # max_time only guards; train_minutes ends the schedule
    cli(
        [
            "bag",
            f"--config={config}",
            f"--folds={options.folds}",
            f"--bag_dir={bag_dir}",
            f"--seed_everything={seed}",
            f"--data.data_root={data_root()}",
            f"--data.holdout_every={options.holdout_every}",
            "--trainer.max_epochs=-1",
            f"--trainer.max_time=00:{guard // 3600:02d}:{guard % 3600 // 60:02d}:{guard % 60:02d}",
            f"--model.train_minutes={train_minutes:g}",
            f"--oof_tta={options.oof_tta}",
            *overrides,
        ]
    )


def holdout_probabilities(route: list[str], stems: list[str], images: dict[str, Path], folder: Path) -> dict:
    """``{stem: (H, W) float32}``: the hold-out predicted by ``predict`` (``route``: its model options)."""
    inputs = folder / "images"
    inputs.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        link = inputs / images[stem].name
        if not link.exists():
            link.symlink_to(images[stem].resolve())
    output = folder / "predicted"
    cli(
        [
            "predict",
            *route,
            f"--data.predict_dir={inputs}",
            f"--writer.output_dir={output}",
            "--writer.save_probabilities=true",
        ]
    )
    return {stem: np.load(output / f"{stem}.npy")[0].astype(np.float32) for stem in stems}


def score(
    probabilities: dict[str, np.ndarray],
    truths: dict[str, np.ndarray],
    threshold: float,
    steps: list[PostProcessingStep],
) -> dict[str, float]:
    """:func:`~ternaus_zoo.metrics.binary_summary` of the cleaned masks (the masks ``predict`` writes)."""
    counts = []
    for stem, truth in truths.items():
        mask = cleaned_mask(torch.from_numpy(probabilities[stem])[None], threshold, False, steps) > 0
        counts.append(confusion_stats(torch.from_numpy(mask)[None], torch.from_numpy(truth > 0)[None], mode="binary"))
    return binary_summary(*(torch.cat(parts) for parts in zip(*counts, strict=True)))


def replay(selection: dict[str, Any], probabilities: dict, truths: dict, threshold: float) -> list[dict[str, Any]]:
    """Every tried trial of the selection applied in its order to the hold-out, from the ensemble at the bags'
    threshold without TTA: its out-of-fold gain (with interval) beside its hold-out gain; kept steps carry on.
    ``probabilities``: ``{tta: {stem: (H, W)}}`` of the selected folder, ``"none"`` and the TTA tried."""
    steps: list[PostProcessingStep] = []
    tta = "none"
    current = score(probabilities[tta], truths, threshold, steps)
    rows = [{"step": "ensemble", "holdout": current, "oof_score": selection["ensemble"]["score"]["score"]}]
    for trial in selection["trials"]:
        if not trial.get("tried", True):
            rows.append({"step": trial["step"], "tried": False, "reason": trial["reason"]})
            continue
        candidate_tta, candidate_threshold, candidate_steps = tta, threshold, steps
        if trial["step"] == "tta":
            candidate_tta = trial["value"]
        elif trial["step"] == "threshold":
            candidate_threshold = float(trial["value"])
        else:
            candidate_steps = [*steps, PostProcessingStep.from_dict(trial["value"])]
        candidate = score(probabilities[candidate_tta], truths, candidate_threshold, candidate_steps)
        rows.append(
            {
                "step": trial["step"],
                "value": trial["value"],
                "kept": trial["kept"],
                "oof_gain": trial["gain"],
                "oof_interval": trial["interval"],
                "holdout_gain": candidate["dice"] - current["dice"],
                "holdout": candidate,
            }
        )
        if trial["kept"]:
            tta, threshold, steps, current = candidate_tta, candidate_threshold, candidate_steps, candidate
    return rows


def run_seed(options: Any, bags: list[tuple[str, str]], overrides: dict[str, list[str]], seed: int) -> dict:
    folder = ROOT / "runs" / "benchmarks" / f"select_{options.dataset}" / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in bags:
        train_bag(options, name, config, overrides.get(name, []), seed, folder / name)
    chosen = folder / "selected"
    cli(["select", *(str(folder / name) for name, _ in bags), f"--out={chosen}", f"--bootstrap={options.bootstrap}"])
    selection = json.loads((chosen / "selection.json").read_text())
    dataset = data_root() / options.dataset
    images, masks = list_images(dataset / "images"), list_images(dataset / "masks")
    stems = sorted(
        stem for stem, fold in load_folds(folder / bags[0][0] / "fold0" / "folds.csv").items() if fold == HOLDOUT
    )
    truths = {stem: read_binary_mask(masks[stem]) for stem in stems}
    singles = []
    for (name, _), row in zip(bags, selection["bags"], strict=True):
        manifest = json.loads((folder / name / "manifest.json").read_text())
        predicted = holdout_probabilities(
            [f"--manifest={folder / name / 'manifest.json'}"], stems, images, folder / "holdout" / name
        )
        holdout = score(predicted, truths, float(manifest.get("threshold", 0.5)), [])
        singles.append({"bag": name, "oof": row["score"], "holdout": holdout})
    tried = [trial["value"] for trial in selection["trials"] if trial["step"] == "tta" and trial.get("tried", True)]
    ensemble = {
        tta: holdout_probabilities(
            [f"--pretrained={chosen}", f"--tta={tta}"], stems, images, folder / "holdout" / f"selected_{tta}"
        )
        for tta in ("none", *tried)
    }
    start_threshold = float(json.loads((folder / bags[0][0] / "manifest.json").read_text()).get("threshold", 0.5))
    trials = replay(selection, ensemble, truths, start_threshold)
    final = score(
        ensemble[selection["final"]["tta"]],
        truths,
        float(selection["final"]["threshold"]),
        [PostProcessingStep.from_dict(step) for step in selection["final"]["postprocessing"]],
    )
    return {
        "singles": singles,
        "weights": selection["ensemble"]["weights"],
        "nested": {key: selection["ensemble"]["nested"][key] for key in ("score", "gain_over_best_single", "interval")},
        "trials": trials,
        "final": {
            "oof": selection["final"]["score"],
            "holdout": final,
            "postprocessing": selection["final"]["postprocessing"],
            "threshold": selection["final"]["threshold"],
            "tta": selection["final"]["tta"],
        },
        "holdout_images": len(stems),
    }


def seed_lines(seed: int, result: dict[str, Any]) -> list[str]:
    rows: list[tuple[Any, ...]] = [
        (f"{single['bag']} alone", single["oof"], "", single["holdout"]["dice"], "", single["holdout"]["mean_iou"], "")
        for single in result["singles"]
    ]
    best_holdout = max(single["holdout"]["dice"] for single in result["singles"])
    for trial in result["trials"]:
        if trial["step"] == "ensemble":
            weights = ", ".join(f"{name} {weight:.2f}" for name, weight in result["weights"].items() if weight > 0)
            nested = result["nested"]
            rows.append(
                (
                    f"ensemble ({weights})",
                    f"{nested['score']:.4f} nested",
                    f"{nested['gain_over_best_single']:+.4f} [{nested['interval'][0]:+.4f}, "
                    f"{nested['interval'][1]:+.4f}] over the best bag",
                    trial["holdout"]["dice"],
                    f"{trial['holdout']['dice'] - best_holdout:+.4f} over the best bag",
                    trial["holdout"]["mean_iou"],
                    "",
                )
            )
        elif not trial.get("tried", True):
            rows.append((trial["step"], "not tried", trial["reason"], "", "", "", ""))
        else:
            low, high = trial["oof_interval"]
            rows.append(
                (
                    f"{trial['step']} {json.dumps(trial['value'])}",
                    "",
                    f"{trial['oof_gain']:+.4f} [{low:+.4f}, {high:+.4f}]",
                    trial["holdout"]["dice"],
                    f"{trial['holdout_gain']:+.4f}",
                    trial["holdout"]["mean_iou"],
                    "kept" if trial["kept"] else "not kept",
                )
            )
    final = result["final"]
    rows.append(
        (
            "final (shipped folder)",
            final["oof"],
            "",
            final["holdout"]["dice"],
            "",
            final["holdout"]["mean_iou"],
            f"TTA {final['tta']}, threshold {final['threshold']}, {len(final['postprocessing'])} step(s)",
        )
    )
    header = ["seed " + str(seed), "OOF Dice", "OOF gain", "hold-out Dice", "hold-out gain", "hold-out mean IoU", ""]
    return [f"### seed {seed} ({result['holdout_images']} hold-out images)", markdown_table(header, rows)]


def main() -> None:
    options = parse()
    bags = pairs(options.bag, "--bag")
    overrides: dict[str, list[str]] = {}
    for name, option in pairs(options.override, "--override"):
        overrides.setdefault(name, []).append(option)
    state_path = ROOT / "runs" / "benchmarks" / f"select_{options.dataset}" / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    for seed in options.seeds:
        if f"seed{seed}" not in state:
            state[f"seed{seed}"] = run_seed(options, bags, overrides, seed)
            state_path.write_text(json.dumps(state, indent=2))
    finals = [state[f"seed{seed}"]["final"]["holdout"]["dice"] for seed in options.seeds]
    best_single = [max(s["holdout"]["dice"] for s in state[f"seed{seed}"]["singles"]) for seed in options.seeds]
    command = " ".join(
        [
            "python -m benchmarks.select",
            f"--dataset {options.dataset}",
            f"--holdout_every {options.holdout_every}",
            f"--folds {options.folds}",
            f"--fold_minutes {options.fold_minutes:g}",
            f"--seeds {' '.join(map(str, options.seeds))}",
            *(f"--bag {entry}" for entry in options.bag),
            *(f"'--override={entry}'" for entry in options.override),
        ]
    )
    lines = [
        f"# {options.dataset}: ternaus-zoo select, out of fold and on the hold-out",
        environment(),
        f"- command: `{command}`",
        "- scores: micro Dice at original resolution (select's objective), mean IoU of both classes beside it; "
        "gains in Dice. OOF: the bags' pooled out-of-fold predictions (the ensemble nested: chosen on K-1 folds, "
        "scored on the one left out); hold-out: never trained on nor chosen on.",
        f"- mean hold-out Dice over seeds: shipped folder {statistics.mean(finals):.4f}, best single bag "
        f"{statistics.mean(best_single):.4f}",
    ]
    for seed in options.seeds:
        lines += seed_lines(seed, state[f"seed{seed}"])
    folder = results_dir(options)
    (folder / f"select_{options.dataset}.md").write_text("\n\n".join(lines) + "\n")
    (folder / f"select_{options.dataset}.json").write_text(json.dumps(state, indent=2) + "\n")
    print("\n\n".join(lines))


if __name__ == "__main__":
    main()

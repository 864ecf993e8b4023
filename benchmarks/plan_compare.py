"""The planned recipe against a hand-written config, given the same wall-clock budget on the same machine
(issue 24 section 6): ``ternaus-zoo auto`` (plan, train, predict, all inside the budget) against ``ternaus-zoo bag``
of the config with ``trainer.max_time`` set from the same budget, both scored by the same code
(:func:`ternaus_zoo.cli_planning.score_bag`: the annealed last checkpoints, at original resolution; the hold-out
with ``--holdout_every``, else each validation fold by its own model, the mean over folds beside the pooled score).

    OMP_NUM_THREADS=2 nohup python -m benchmarks.pinned <commit> -- python -m benchmarks.plan_compare \\
        --dataset membrane --config configs/membrane_scratch_10min.yaml --minutes 10 --folds 3 --seeds 0 1 &

Each (seed, arm) runs once and is kept in ``runs/benchmarks/plan_<dataset>/``: run the same command again after an
interruption and the finished ones are skipped (``auto`` resumes its own run). Writes
``benchmarks/results/plan_<dataset>[_<name>].md`` and ``.json``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import ROOT, ArgumentParser, data_root, environment, markdown_table, results_dir
from ternaus_zoo.bagging import assemble
from ternaus_zoo.cli import main as cli
from ternaus_zoo.cli_planning import score_bag, validation_curve

# seconds the config arm keeps for its out-of-fold predictions and the final scoring
RESERVE_S = 90.0


def parse() -> Any:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a folder of the data root (membrane, kvasir-seg ...)")
    parser.add_argument("--config", type=Path, required=True, help="the hand-written config of the comparison")
    parser.add_argument("--minutes", type=float, default=10.0, help="the budget of each run, everything included")
    parser.add_argument("--folds", type=int, default=None, help="a bag of this many folds on both sides")
    parser.add_argument("--holdout_every", type=int, default=0, help="score sorted(stems)[::k] (0: out of fold)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tta", default="d4", help="the config arm's test-time augmentation")
    parser.add_argument("--name", default="", help="a suffix of the results file")
    parser.add_argument("--ignore_index", type=int, default=None, help="the void class of class masks (plan's option)")
    parser.add_argument("--arms", nargs="+", choices=["plan", "config"], default=["plan", "config"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1: a machine at half the speed)")
    return parser.parse_args()


def timed(function: Any) -> float:
    started = time.monotonic()
    function()
    return time.monotonic() - started


def plan_arm(options: Any, seed: int, folder: Path) -> dict[str, Any]:
    """``ternaus-zoo auto`` within the budget; its scores, what it chose and how far its schedule ran."""
    arguments = ["auto", str(data_root() / options.dataset), "--budget", f"{options.minutes:g}m", "--out", str(folder)]
    arguments += ["--seed", str(seed), "--holdout_every", str(options.holdout_every)]
    arguments += ["--folds", str(options.folds)] if options.folds else []
    arguments += ["--ignore_index", str(options.ignore_index)] if options.ignore_index is not None else []
    cli(arguments)
    scores = json.loads((folder / "scores.json").read_text())
    plan = json.loads((folder / "plan.json").read_text())
    config = yaml.safe_load((folder / "plan.yaml").read_text())
    return {
        **scores,
        "minutes": json.loads((folder / "clock.json").read_text())["spent_s"] / 60,
        "recipe": f"{plan['model']}, {plan['steps']} steps planned, TTA {plan['tta'] or 'none'}, "
        f"val_size {config['data'].get('val_size')}, patch {config['data'].get('patch_size')}",
        "schedule": schedule_reached(folder / "bag", config["model"]["train_minutes"]),
    }


def schedule_reached(bag_dir: Path, planned_minutes: float) -> str:
    """How much of each fold's training-time budget its clock reached at its last validation (1.0: annealed to the
    end; a timed run validates when it stops)."""
    monitor = json.loads((bag_dir / "manifest.json").read_text())["monitor"]
    shares = [
        max((minutes for minutes, _ in validation_curve(done.parent, monitor)), default=0.0) / planned_minutes
        for done in sorted(bag_dir.glob("fold*/done.json"))
    ]
    return ", ".join(f"{share:.2f}" for share in shares) + " of the training budget"


def config_arm(options: Any, seed: int, folder: Path) -> dict[str, Any]:
    """``ternaus-zoo bag`` of the config, each fold's ``max_time`` its share of the budget less a reserve."""
    started = time.monotonic()
    configured = yaml.safe_load(options.config.read_text())
    n_folds = options.folds or configured["data"]["n_folds"]
    models = options.folds or 1
    seconds = int((options.minutes * 60 - RESERVE_S) / models)
    bag_dir = folder / "bag"
    arguments = ["bag", f"--config={options.config}", f"--folds={n_folds}", f"--bag_dir={bag_dir}"]
    arguments += [] if options.folds else ["--only_fold", "0"]
    if configured["data"].get("group_blocks"):  # contiguous blocks, one a fold: the split the plan makes of a sequence
        arguments.append(f"--data.group_blocks={n_folds}")
    arguments += [
        f"--seed_everything={seed}",
        f"--data.data_root={data_root()}",
        f"--data.holdout_every={options.holdout_every}",
        f"--trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
    ]
    cli(arguments)
    manifest = assemble(bag_dir, n_folds)
    resolved = dict(manifest["config"])
    resolved["data"] = {**resolved["data"], "dataset": str(data_root() / options.dataset)}
    scores = score_bag(bag_dir, manifest, resolved, holdout=options.holdout_every > 0, tta=options.tta, folder=folder)
    epochs = [entry.get("best_epoch") for entry in manifest["folds"]]
    return {
        **scores,
        "minutes": (time.monotonic() - started) / 60,
        "recipe": f"{options.config.name}, TTA {options.tta}",
        "schedule": f"max_epochs {configured['trainer'].get('max_epochs')}, best epochs {epochs}, "
        f"max_time {seconds} s a fold",
    }


def check_same_split(*bag_dirs: Path) -> None:
    """Both arms must have trained and scored on the same folds (and hold-out): their ``folds.csv`` agree."""
    from ternaus_zoo.data import load_folds

    first, *others = (load_folds(bag_dir / "fold0" / "folds.csv") for bag_dir in bag_dirs)
    for bag_dir, folds in zip(bag_dirs[1:], others, strict=True):
        if folds != first:
            stem = next(stem for stem in sorted(first) if folds.get(stem) != first[stem])
            raise SystemExit(f"{bag_dir} split the data otherwise than {bag_dirs[0]} (first: {stem})")


def headline(result: dict[str, Any]) -> float:
    """Mean IoU: over the folds where each fold was scored by its own model, else pooled."""
    folds = [fold["mean_iou"] for fold in result.get("per_fold", [])]
    return statistics.mean(folds) if folds else result["mean_iou"]


def main() -> None:
    options = parse()
    run = ROOT / "runs" / "benchmarks" / f"plan_{options.dataset}{options.name and '_' + options.name}"
    state_path = run / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if options.threads:
        torch.set_num_threads(options.threads)
    arms = {"plan": plan_arm, "config": config_arm}
    for seed in options.seeds:
        for arm in options.arms:
            function = arms[arm]
            key = f"{arm}_seed{seed}"
            if key not in state:
                state[key] = function(options, seed, run / key)
                state[key].pop("per_image", None)
                run.mkdir(parents=True, exist_ok=True)
                state_path.write_text(json.dumps(state, indent=2))
        if len(options.arms) == 2:
            check_same_split(run / f"plan_seed{seed}" / "bag", run / f"config_seed{seed}" / "bag")
    rows = []
    for key, result in state.items():
        value = headline(result)
        rows.append(
            (
                key,
                f"{value:.4f}",
                f"{result.get('dice', float('nan')):.4f}",
                f"{result['minutes']:.1f}",
                result["recipe"],
                result["schedule"],
            )
        )
    means = {
        arm: [headline(state[f"{arm}_seed{seed}"]) for seed in options.seeds if f"{arm}_seed{seed}" in state]
        for arm in ("plan", "config")
    }
    dice = {
        arm: [state[f"{arm}_seed{seed}"].get("dice") for seed in options.seeds if f"{arm}_seed{seed}" in state]
        for arm in ("plan", "config")
    }
    summary = ", ".join(
        f"{arm} {statistics.mean(values):.4f} (spread {max(values) - min(values):.4f})"
        + (f", Dice {statistics.mean(dice[arm]):.4f}" if dice[arm] and None not in dice[arm] else "")
        for arm, values in means.items()
        if values
    )
    scored = "the hold-out" if options.holdout_every else "each validation fold by its own model (mean over folds)"
    lines = [
        f"# {options.dataset}: the plan against `{options.config.name}`, {options.minutes:g} minutes each",
        environment(),
        f"- command: `python -m benchmarks.plan_compare --dataset {options.dataset} --config {options.config} "
        f"--minutes {options.minutes:g}"
        + (f" --folds {options.folds}" if options.folds else "")
        + (f" --holdout_every {options.holdout_every}" if options.holdout_every else "")
        + f" --seeds {' '.join(map(str, options.seeds))}"
        + (f" --arms {' '.join(options.arms)}" if len(options.arms) < 2 else "")
        + (f" --threads {options.threads}" if options.threads else "")
        + (f" --ignore_index {options.ignore_index}" if options.ignore_index is not None else "")
        + (f" --name {options.name}" if options.name else "")
        + "`",
        f"- scored: {scored}, at original resolution, the last (annealed) checkpoints; mean IoU of both classes "
        "for binary masks (../shared/BENCHMARKS.md)",
        f"- mean over seeds: {summary}",
        markdown_table(["run", "mean IoU", "Dice", "minutes", "recipe", "schedule"], rows),
    ]
    folder = results_dir(options)
    name = f"plan_{options.dataset}{options.name and '_' + options.name}"
    (folder / f"{name}.md").write_text("\n\n".join(lines) + "\n")
    (folder / f"{name}.json").write_text(json.dumps(state, indent=2) + "\n")
    print("\n\n".join(lines))


if __name__ == "__main__":
    main()

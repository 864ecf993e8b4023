"""The quality ladder over seeds: each rung's mean and spread, and whether its gain over the rung below is real.

    python -m benchmarks.ladder --dataset kvasir-seg

Reads ``benchmarks/results/quality_<dataset>_seed<k>.json`` (one ``benchmarks.quality`` run per seed, same
epochs and size) and writes ``benchmarks/results/ladder_<dataset>.md`` and ``.png``. A gain counts as real
only when it exceeds the larger of the two rungs' seed spreads (max - min over seeds), as
../shared/BENCHMARKS.md asks; rungs not run for every seed are listed as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, ArgumentParser, environment, markdown_table, results_dir

HEADLINE = {"kvasir-seg": ("dice", "hold-out Dice"), "membrane": ("mean_iou", "mean IoU (both classes, over folds)")}


def parse() -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--dataset", choices=sorted(HEADLINE), default="kvasir-seg")
    return parser.parse_args()


def seed_results(dataset: str) -> dict[int, dict[str, Any]]:
    """``{seed: the JSON of that seed's run}``; the runs must share epochs and size."""
    runs = {}
    for path in sorted(RESULTS.glob(f"quality_{dataset}_seed*.json")):
        content = json.loads(path.read_text())
        runs[int(content["seed"])] = content
    if not runs:
        raise SystemExit(f"no results/quality_{dataset}_seed*.json: run benchmarks.quality --seed k first")
    settings = {(run["epochs"], run["size"]) for run in runs.values()}
    if len(settings) > 1:
        raise SystemExit(f"the seeds' runs differ in (epochs, size): {sorted(settings)}")
    return runs


def rungs(runs: dict[int, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per rung (in ladder order): the value of each seed, their mean and spread, and the gain verdict."""
    names = list(dict.fromkeys(row["name"] for run in runs.values() for row in run["rows"]))
    table, below = [], None
    for name in names:
        values = {seed: row[key] for seed, run in runs.items() for row in run["rows"] if row["name"] == name}
        commits = sorted(
            {row.get("commit", "?") for run in runs.values() for row in run["rows"] if row["name"] == name}
        )
        failures = [
            row.get("share_dice_below_half") for run in runs.values() for row in run["rows"] if row["name"] == name
        ]
        rung: dict[str, Any] = {
            "failures": float(np.mean(failures)) if failures and None not in failures else None,
            "name": name,
            "values": values,
            "commits": commits,
            "complete": len(values) == len(runs),
        }
        rung["mean"] = float(np.mean(list(values.values())))
        rung["spread"] = float(np.ptp(list(values.values()))) if len(values) > 1 else None
        if below is not None and rung["complete"] and below["complete"] and len(runs) > 1:
            rung["gain"] = rung["mean"] - below["mean"]
            rung["bar"] = max(rung["spread"], below["spread"])
            rung["real"] = abs(rung["gain"]) > rung["bar"]
        table.append(rung)
        below = rung
    return table


def verdict(rung: dict[str, Any]) -> str:
    if "gain" not in rung:
        return "" if rung["complete"] else "not run for every seed"
    direction = "gain" if rung["gain"] > 0 else "loss"
    if rung["real"]:
        return f"real {direction} ({rung['gain']:+.4f} > spread {rung['bar']:.4f})"
    return f"within the spread ({rung['gain']:+.4f}, spread {rung['bar']:.4f}): no measured {direction}"


def plot(table: list[dict[str, Any]], trivial: dict[str, Any], key: str, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 0.6 * len(table) + 1.5))
    for index, rung in enumerate(table[::-1]):
        values = list(rung["values"].values())
        axis.barh(index, rung["mean"], color="tab:blue", alpha=0.6)
        axis.plot(values, [index] * len(values), "ko", markersize=4)
        axis.text(max(values), index, f"  {rung['mean']:.3f}", va="center", fontsize=8)
    axis.set_yticks(range(len(table)), [rung["name"] for rung in table[::-1]], fontsize=8)
    for name, result in trivial.items():
        axis.axvline(result[key], linestyle="--", color="grey")
        axis.text(result[key], len(table) - 0.6, f" {name}", fontsize=7, color="grey")
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"{label}: bars the mean over seeds, dots each seed")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    options = parse()
    key, label = HEADLINE[options.dataset]
    runs = seed_results(options.dataset)
    table = rungs(runs, key)
    first = next(iter(runs.values()))
    seeds = sorted(runs)
    rows = [
        (
            rung["name"],
            *(f"{rung['values'][seed]:.4f}" if seed in rung["values"] else "-" for seed in seeds),
            f"{rung['mean']:.4f}",
            f"{rung['spread']:.4f}" if rung["spread"] is not None else "-",
            verdict(rung),
            f"{rung['failures']:.3f}" if rung["failures"] is not None else "-",
            ", ".join(rung["commits"]),
        )
        for rung in table
    ]
    rows += [
        (f"trivial: {name}", *[""] * len(seeds), f"{result[key]:.4f}", "", "", "", "")
        for name, result in first["trivial"].items()
    ]
    per_seed = [f"[seed {seed}](quality_{options.dataset}_seed{seed}.md)" for seed in seeds]
    lines = [
        f"# Quality ladder on {options.dataset}, {len(seeds)} seeds",
        environment(),
        f"- every model: {first['epochs']} epochs at {first['size']} px, CPU; the per-seed tables (recipes, exact "
        f"commands, train minutes, per-image Dice): {', '.join(per_seed)}",
        f"- scored: {first['split'].get('description', '')} (sha1 {first['split'].get('sha1', '')})",
        "- a gain over the rung above counts only when it exceeds the larger seed spread (max - min) of the two rungs",
        markdown_table(
            [
                "rung",
                *(f"seed {seed}" for seed in seeds),
                f"mean {label}",
                "spread",
                "over the rung above",
                "share of images with Dice < 0.5 (mean over seeds)",
                "commit",
            ],
            rows,
        ),
        f"![{label} per rung]({f'ladder_{options.dataset}.png'})",
    ]
    folder = results_dir(options)
    (folder / f"ladder_{options.dataset}.md").write_text("\n\n".join(lines) + "\n")
    plot(table, first["trivial"], key, label, folder / f"ladder_{options.dataset}.png")
    print("\n\n".join(lines))


if __name__ == "__main__":
    main()

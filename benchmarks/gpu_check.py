"""The planner on a lent GPU (issue 24 section 5): plan, about 2 minutes of training and the hold-out prediction of
``ternaus-zoo auto`` on a 200-image subset of kvasir-seg, then the zoo / smp speed pairs of ``benchmarks.speed`` on
the GPU. Refuses to run without CUDA.

On this machine, copy the subset where the device tool carries it (``../shared`` does not travel), then on the GPU
machine run the check (the device tool's ``carry`` names ``runs/carry`` and the venv):

    python -m benchmarks.gpu_check --prepare            # here: 200 pairs into runs/carry/kvasir-seg (about 11 MB)
    python -m benchmarks.gpu_check --data runs/carry/kvasir-seg --budget 4m

Writes ``benchmarks/results/gpu_check.md`` naming the GPU, with the plan's choices (precision, batch by the
device's memory, model), the scores and the speed table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import ROOT, ArgumentParser, data_root, environment, results_dir
from ternaus_zoo.cli import main as cli

CARRY = ROOT / "runs" / "carry" / "kvasir-seg"
SUBSET = 200


def prepare(target: Path) -> None:
    """Copy every 5th of the sorted kvasir-seg pairs (200) into ``target``."""
    source = data_root() / "kvasir-seg"
    everything = sorted(path.stem for path in (source / "images").iterdir())
    stems = everything[:: max(1, len(everything) // SUBSET)]
    for folder in ("images", "masks"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for stem in stems[:SUBSET]:
            for path in (source / folder).glob(f"{stem}.*"):
                shutil.copy2(path, target / folder / path.name)
    print(f"gpu_check: {min(len(stems), SUBSET)} pairs in {target}")


def main() -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--prepare", action="store_true", help="copy the subset into runs/carry (run it here)")
    parser.add_argument("--data", type=Path, default=CARRY, help="the subset's folder")
    parser.add_argument("--budget", default="4m", help="the budget of `ternaus-zoo auto` (plan, train, predict)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each speed pair")
    options = parser.parse_args()
    if options.prepare:
        prepare(CARRY)
        return
    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device here: run it where the device tool lends a GPU", file=sys.stderr)
        raise SystemExit(2)
    folder = results_dir(options)
    run = ROOT / "runs" / "gpu_check"
    shutil.rmtree(run, ignore_errors=True)
    cli(["auto", str(options.data), "--budget", options.budget, "--out", str(run), "--holdout_every", "5"])
    scores = json.loads((run / "scores.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    speed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--device",
            "cuda",
            "--channels_last",
            "--bf16",
            "--repeats",
            str(options.repeats),
            *(["--scratch"] if options.scratch else []),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    lines = [
        f"# GPU check: {torch.cuda.get_device_name()}",
        environment(),
        f"- command: `python -m benchmarks.gpu_check --data {options.data} --budget {options.budget}`",
        f"- plan: {plan['model']}, precision {plan['device']['precision']}, {plan['steps']} steps planned, "
        f"budget split {plan['budget']}, timings {plan['timings']}",
        f"- `ternaus-zoo auto` on {SUBSET} kvasir-seg images, hold-out sorted(stems)[::5]: Dice {scores['dice']:.4f}, "
        f"IoU {scores['iou']:.4f}, per-image Dice {scores['dice_per_image']:.4f}",
        "## Speed pairs on the GPU (bf16 autocast, channels_last)",
        speed.split("\n", 1)[1] if "\n" in speed else speed,
    ]
    (folder / "gpu_check.md").write_text("\n\n".join(lines) + "\n")
    print("\n\n".join(lines))


if __name__ == "__main__":
    main()

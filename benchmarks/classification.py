"""Multi-label classification benchmark (../shared/BENCHMARKS.md): MIML and labels derived from CamVid masks.

    python -m benchmarks.classification              # every row; rows already done are skipped
    python -m benchmarks.classification --rows miml_gapnet_resnet18 camvid_aux_s0

Protocol:

* ``miml``: the hold-out is ``sorted(file names)[::5]`` (400 images), scored once at the end. The other 1600
  are cut into 5 folds (seed 0): fold 0 (320) validates, picks the best epoch by ``val/f1_macro_tuned`` and
  tunes one threshold per label; folds 1-4 (1280) train. The hold-out never chooses anything.
* ``camvid-val``: 101 frames of one video; labels derived from the masks (a class is present when it covers
  at least 1 % of the non-void pixels). Contiguous split of the sorted frames: first 60 % train, next 20 %
  validation (epoch and thresholds), last 20 % test.
* Trivial rows: ``all positive`` (every label predicted everywhere) and ``label prior`` (each label drawn
  independently with its training frequency; mean of 200 seeded draws).

Every row trains from scratch (no ImageNet weights can be downloaded here) on the CPU, at a small size and for a
few epochs, so that the whole benchmark takes about 20-25 minutes on a shared 2-core machine. Rows are
resumable: each writes ``runs/benchmarks/classification/<row>/result.json`` when done (skipped next time) and a
fit that was cut off resumes from its ``last.ckpt``. The Markdown is rewritten after every row.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from ternaus_zoo.data import ClassificationDataModule, contiguous_groups, save_folds
from ternaus_zoo.data.folds import HOLDOUT
from ternaus_zoo.metrics.classification import multilabel_fbeta, multilabel_recall
from ternaus_zoo.training.classification import ClassificationModule
from ternaus_zoo.weights import load_container

RUNS = ROOT / "runs" / "benchmarks" / "classification"
OUTPUT = "classification.md"
MIML_LABELS = ["desert", "mountains", "sea", "sunset", "trees"]


@dataclass(frozen=True)
class Row:
    name: str
    dataset: str
    description: str
    options: list[str] = field(default_factory=list)
    epochs: int = 0  # 0: a trivial row, no training


MIML = [
    "--data.dataset=miml",
    "--model.num_classes=5",
    f"--model.label_names={json.dumps(MIML_LABELS)}",
    "--data.holdout_every=5",
    "--data.n_folds=5",
    "--data.fold=0",
    "--data.image_size=96",
    "--data.batch_size=16",
    "--model.lr=0.001",
    "--model.scheduler=onecycle",
]
CAMVID = [
    "--data.dataset=camvid-val",
    "--data.masks=masks",
    "--data.ignore_index=11",
    "--data.min_fraction=0.01",
    "--model.num_classes=11",
    f"--model.label_names={json.dumps(CAMVID_LABELS)}",
    "--data.n_folds=2",
    "--data.fold=0",
    "--data.image_size=128",
    "--data.val_size=128",
    "--data.batch_size=8",
    "--model.lr=0.001",
    "--model.scheduler=onecycle",
]
AUX18 = ["--model.model=aux_resnet18"]
ROWS = [
    Row("miml_trivial", "miml", "trivial rows"),
    Row("miml_gapnet_resnet18", "miml", "GAPNet ResNet18", [*MIML, "--model.model=gapnet_resnet18"], epochs=3),
    Row("miml_resnet18", "miml", "ResNet18 (aux_resnet18, aux_weight 0)", [*MIML, *AUX18], epochs=3),
    Row(
        "miml_aux_resnet18",
        "miml",
        "ResNet18 + aux loss (HPA style: labels broadcast, weight 0.3)",
        [*MIML, *AUX18, "--model.aux_weight=0.3", "--model.aux_target=labels"],
        epochs=3,
    ),
    Row("camvid_trivial", "camvid-val", "trivial rows"),
]
for seed in (0, 1):
    aux = ["--model.aux_weight=0.5", "--model.aux_target=mask", f"--seed_everything={seed}"]
    ROWS += [
        Row(f"camvid_aux_s{seed}", "camvid-val", f"ResNet18 + aux loss (masks, weight 0.5), seed {seed}",
            [*CAMVID, *AUX18, *aux], epochs=12),
        Row(f"camvid_plain_s{seed}", "camvid-val", f"ResNet18 (aux_weight 0), seed {seed}",
            [*CAMVID, *AUX18, f"--seed_everything={seed}"], epochs=12),
    ]  # fmt: skip


def camvid_folds() -> Path:
    """``name,fold`` of the contiguous CamVid split: first 60 % train (fold 1), next 20 % validation (fold 0),
    last 20 % test (-1)."""
    stems = sorted(path.stem for path in (data_root() / "camvid-val" / "masks").iterdir())
    blocks = contiguous_groups(stems, 5)
    path = RUNS / "camvid_folds.csv"
    save_folds({stem: {3: 0, 4: HOLDOUT}.get(block, 1) for stem, block in blocks.items()}, path)
    return path


def datamodule(row: Row, folds: Path | None = None) -> ClassificationDataModule:
    """The row's data module (for scoring: evaluation transforms only), set up."""
    if row.dataset == "miml":
        module = ClassificationDataModule("miml", data_root=str(data_root()), num_classes=5, image_size=96)
    else:
        module = ClassificationDataModule(
            "camvid-val",
            data_root=str(data_root()),
            masks="masks",
            num_classes=11,
            ignore_index=11,
            min_fraction=0.01,
            n_folds=2,
            folds_file=str(folds),
            image_size=128,
        )
    module.num_workers = 0
    module.setup("test")
    return module


def split_summary(data: ClassificationDataModule) -> dict[str, str]:
    summary = {}
    for split in ("train", "val", "test"):
        names = data.stems_of(split)
        digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
        summary[split] = f"{len(names)} ({names[0]} ... {names[-1]}, sha1 {digest})"
    return summary


def scores(probabilities: torch.Tensor, targets: torch.Tensor, thresholds: torch.Tensor | float) -> dict:
    options = {"threshold": thresholds, "from_logits": False}
    return {
        "f1_macro": float(multilabel_fbeta(probabilities, targets, beta=1.0, **options)),
        "f2_macro": float(multilabel_fbeta(probabilities, targets, beta=2.0, **options)),
        "recall_macro": float(multilabel_recall(probabilities, targets, **options)),
        "f1_per_label": multilabel_fbeta(probabilities, targets, average="none", **options).tolist(),
    }


def labels_of(dataset) -> torch.Tensor:
    return torch.from_numpy(dataset.label_matrix())


def trivial(row: Row, data: ClassificationDataModule) -> dict:
    targets = labels_of(data.test_dataset)
    prior = labels_of(data.train_dataset).mean(0)
    rng = torch.Generator().manual_seed(0)
    draws = [scores((torch.rand(targets.shape, generator=rng) < prior).float(), targets, 0.5) for _ in range(200)]
    mean = {key: float(np.mean([draw[key] for draw in draws])) for key in ("f1_macro", "f2_macro", "recall_macro")}
    mean["f1_per_label"] = np.mean([draw["f1_per_label"] for draw in draws], axis=0).tolist()
    return {
        "rows": {"all positive": scores(torch.ones_like(targets), targets, 0.5), "label prior": mean},
        "prior": prior.tolist(),
        "test_positives": targets.sum(0).int().tolist(),
    }


@torch.no_grad()
def predict(module: ClassificationModule, loader) -> tuple[torch.Tensor, torch.Tensor]:
    module.eval()
    probabilities, targets = [], []
    for batch in loader:
        probabilities.append(module.probabilities(module(batch["image"])))
        targets.append(batch["labels"])
    return torch.cat(probabilities), torch.cat(targets)


def train(row: Row, folds: Path | None) -> dict:
    run = RUNS / row.name
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(run), "name": ""}}
    logger["init_args"]["version"] = "log"
    last = run / "log" / "checkpoints" / "last.ckpt"
    arguments = [
        "fit",
        f"--data.data_root={data_root()}",
        "--data.num_workers=0",
        f"--trainer.max_epochs={row.epochs}",
        f"--trainer.logger={json.dumps(logger)}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=10",
        *row.options,
    ]
    if folds is not None:
        arguments.append(f"--data.folds_file={folds}")
    if last.is_file():
        arguments.append(f"--ckpt_path={last}")
    started = time.perf_counter()
    cli(["classify", *arguments])
    fit_seconds = time.perf_counter() - started

    best = sorted((run / "log" / "checkpoints").glob("best-*.ckpt"))[-1]
    checkpoint = load_container(best)
    module = ClassificationModule.load_from_checkpoint(best, map_location="cpu")
    data = datamodule(row, folds)
    started = time.perf_counter()
    val_probabilities, val_targets = predict(module, data.val_dataloader())
    test_probabilities, test_targets = predict(module, data.test_dataloader())
    return {
        "model": module.hparams.model,
        "best": best.name,
        "best_epoch": int(checkpoint["epoch"]) + 1,
        "steps": int(checkpoint["global_step"]),
        "fit_minutes": fit_seconds / 60,
        "score_seconds": time.perf_counter() - started,
        "thresholds": module.thresholds.tolist(),
        "val_tuned": scores(val_probabilities, val_targets, module.thresholds),
        "test_tuned": scores(test_probabilities, test_targets, module.thresholds),
        "test_0.5": scores(test_probabilities, test_targets, 0.5),
        "split": split_summary(data),
    }


def run_row(row: Row) -> dict:
    path = RUNS / row.name / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    folds = camvid_folds() if row.dataset == "camvid-val" else None
    started = time.perf_counter()
    if row.epochs == 0:
        data = datamodule(row, folds)
        result = trivial(row, data) | {"split": split_summary(data)}
    else:
        result = train(row, folds)
    result["wall_minutes"] = (time.perf_counter() - started) / 60
    result["finished"] = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    result["commit"] = git_commit()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def positives(dataset: str, labels: list[str], results: dict[str, dict]) -> str:
    """The test split's positives per label, from the trivial row."""
    trivial_row = next(
        (results[row.name] for row in ROWS if row.dataset == dataset and row.epochs == 0 and row.name in results), None
    )
    if trivial_row is None or "test_positives" not in trivial_row:
        return ""
    counts = ", ".join(f"{label} {count}" for label, count in zip(labels, trivial_row["test_positives"], strict=True))
    prior = ", ".join(f"{label} {value:.2f}" for label, value in zip(labels, trivial_row["prior"], strict=True))
    return f"- test positives per label: {counts}\n- training prior per label: {prior}"


def table(dataset: str, labels: list[str], results: dict[str, dict]) -> str:
    rows, per_label = [], []
    for row in ROWS:
        if row.dataset != dataset or row.name not in results:
            continue
        result = results[row.name]
        if row.epochs == 0:
            for name, s in result["rows"].items():
                rows.append((name, "-", "-", s["f1_macro"], s["f2_macro"], s["recall_macro"], "-", "-"))
                per_label.append((name, *s["f1_per_label"]))
            continue
        tuned, plain = result["test_tuned"], result["test_0.5"]
        rows.append(
            (
                row.description,
                f"{result['best_epoch']}/{row.epochs}",
                f"{result['fit_minutes']:.1f}",
                tuned["f1_macro"],
                tuned["f2_macro"],
                tuned["recall_macro"],
                plain["f1_macro"],
                result["val_tuned"]["f1_macro"],
            )
        )
        per_label.append((row.description, *tuned["f1_per_label"]))
    header = [
        "prediction",
        "best epoch",
        "fit min",
        "test F1-macro (tuned thr.)",
        "test F2-macro",
        "test recall-macro",
        "test F1-macro @0.5",
        "val F1-macro (tuned on it)",
    ]
    return (
        markdown_table(header, rows)
        + "\n\nPer-label test F1 (tuned thresholds):\n\n"
        + markdown_table(["", *labels], per_label)
    )


def describe_split(results: dict[str, dict], prefix: str) -> str | None:
    split = next((results[name]["split"] for name in results if name.startswith(prefix)), None)
    return None if split is None else "; ".join(f"{name} {text}" for name, text in split.items())


def runs_table(results: dict[str, dict]) -> str:
    """When, at which commit and how long each row ran (its own record: rows may come from several invocations)."""
    rows = []
    for row in ROWS:
        if row.name in results:
            result = results[row.name]
            seed = next((option.split("=")[1] for option in row.options if option.startswith("--seed_everything")), "0")
            steps = f"{result['steps']} (best ckpt)" if "steps" in result else "-"
            rows.append(
                (
                    row.name,
                    result.get("finished", "?"),
                    result.get("commit", "?"),
                    seed if row.epochs else "-",
                    row.epochs or "-",
                    steps,
                    f"{result['wall_minutes']:.1f}",
                )
            )
    return markdown_table(["row", "finished (UTC)", "commit", "seed", "epochs", "steps", "wall min"], rows)


def write(results: dict[str, dict], folder: Path) -> None:
    miml, camvid = describe_split(results, "miml"), describe_split(results, "camvid")
    # run as `python -m benchmarks.classification`: say so rather than the script's path
    header = environment().replace(f"python {sys.argv[0]}", "python -m benchmarks.classification")
    done = [row.name for row in ROWS if row.name in results]
    pending = [row.name for row in ROWS if row.name not in results]
    parts = [
        "# Multi-label classification: MIML and CamVid-derived labels (short CPU runs from scratch)",
        header,
        f"- rows done: {', '.join(done)}" + (f"; **not yet run: {', '.join(pending)}**" if pending else ""),
        "- resume or complete: `python -m benchmarks.classification` (finished rows are skipped)",
        "**Read these numbers for what they are**: every model trains from scratch (no ImageNet weights can be "
        "downloaded on this machine) on a shared 2-core CPU, for a few epochs at small sizes (MIML 96 px, 3 epochs; "
        "CamVid 128 px, 12 epochs), with Adam one-cycle (max lr 1e-3), no MixUp/CutMix, seed 0 unless stated. "
        "They check that the pipeline learns and compare options at one tiny budget; they are not the accuracy "
        "of the recipes in `configs/` (ImageNet weights, 224-256 px, 20-30 epochs).",
        "Thresholds: one per label, tuned (F1) on the validation fold at the best epoch (chosen by the tuned "
        "validation F1-macro) and stored in the checkpoint; the test split is scored once with them. Labels with "
        "no positives and no predictions score 1 (`zero_division=1`, see `ternaus_zoo.metrics.classification`).",
        "## MIML (5 labels)",
        f"- split: test = sorted(file names)[::5]; train/val = folds 1-4 / fold 0 of the rest (seed 0): {miml}",
        "- models: GAPNet and ResNet at ResNet18 depth (ResNet34 is about twice as slow on this CPU); the aux "
        "row adds the layer2 head trained against the image labels broadcast over the map (HPA style; MIML has no "
        "masks); `aux_resnet18` with aux_weight 0 is a plain ResNet18.",
        positives("miml", MIML_LABELS, results),
        table("miml", MIML_LABELS, results) if miml else "(not run yet)",
        "## CamVid-val, labels from masks (11 classes, present = at least 1 % of the non-void pixels)",
        f"- split (contiguous blocks of the sorted frames, 60/20/20): {camvid}",
        "- the aux rows train the layer2 head (stride 8) against each class's area fraction of every 8x8 cell of "
        "the augmented mask (void cells left out); the plain rows are the same model with aux_weight 0. Two seeds "
        "each: a difference smaller than the spread between seeds is not a difference. Sky, building, road, "
        "pavement, tree, fence and bicyclist are present in (nearly) every frame at this threshold, so all-positive "
        "is hard to beat on them; pole, sign, car and pedestrian carry the signal.",
        "- caveat: the test block is 20 consecutive, near-identical frames in which some labels never occur (see "
        "the positives below); such a label scores F1 = 1 when it is never predicted and 0 otherwise "
        "(`zero_division=1`), so the macro scores here swing by 1/11 per label and say little. The best epoch is "
        "the first to reach the best tuned validation F1 (20 frames: ties are common).",
        positives("camvid-val", CAMVID_LABELS, results),
        table("camvid-val", CAMVID_LABELS, results) if camvid else "(not run yet)",
        "## Runs",
        "Wall times include validation every epoch and the final scoring. Another CPU-heavy benchmark shared the "
        "machine during most rows (load average about 5 on 2 cores); it ended before the last CamVid rows, which "
        "is why they ran several times faster: compare times only between neighbouring rows.",
        runs_table(results),
    ]
    (folder / OUTPUT).write_text("\n\n".join(parts) + "\n")


def main() -> None:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--rows", nargs="*", default=[row.name for row in ROWS], help="rows to run (default: all)")
    options = parser.parse_args()
    unknown = sorted(set(options.rows) - {row.name for row in ROWS})
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {[row.name for row in ROWS]}")
    results = {}
    for row in ROWS:
        previous = RUNS / row.name / "result.json"
        if row.name in options.rows:
            print(f"== {row.name}: {row.description}", flush=True)
            results[row.name] = run_row(row)
        elif previous.is_file():
            results[row.name] = json.loads(previous.read_text())
        write(results, results_dir(options))
    print((results_dir(options) / OUTPUT).read_text())


if __name__ == "__main__":
    main()

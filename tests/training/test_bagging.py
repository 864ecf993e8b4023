"""Bagging through the command line on a tiny folder: folds, OOF files, the manifest, resuming,
``--only_fold`` + ``--assemble``, bootstrap samples; and the scoring helpers against brute force."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from ternaus_zoo import bagging
from ternaus_zoo.bagging import (
    BootstrapDataset,
    BootstrapSample,
    best_threshold,
    binary_oof_statistics,
    bootstrap_indices,
    check_bag_config,
    summarise_oof,
    threshold_curve,
)
from ternaus_zoo.cli import main
from ternaus_zoo.data import load_folds, valid_size
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.weights import load_container
from tests.training.test_cli import TINY
from tests.training.test_module import TINY_UNET
from tests.training.test_module import _data as tiny_data


@pytest.fixture
def fit_calls(monkeypatch) -> list[dict]:
    """Every ``Trainer.fit`` call made, with its ``ckpt_path`` and the fold's log dir."""
    calls: list[dict] = []
    original = pl.Trainer.fit

    def spy(trainer, *args, **kwargs):
        calls.append({"ckpt_path": kwargs.get("ckpt_path"), "log_dir": trainer.log_dir})
        return original(trainer, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", spy)
    return calls


def _bag(folder: Path, bag_dir: Path, *extra: str) -> None:
    main(["bag", f"--bag_dir={bag_dir}", f"--data.dataset={folder}", "--trainer.max_epochs=1", *TINY, *extra])


def test_bag_writes_folds_oof_and_manifest_and_does_not_retrain(shapes_folder, tmp_path, monkeypatch, fit_calls):
    monkeypatch.chdir(tmp_path)
    bag_dir = tmp_path / "bag"
    _bag(shapes_folder, bag_dir, "--folds=2")
    assert len(fit_calls) == 2 and all(call["ckpt_path"] is None for call in fit_calls)

    manifest = json.loads((bag_dir / "manifest.json").read_text())
    assert manifest["format"] == "ternaus_zoo.bag/1" and manifest["n_folds"] == 2 and manifest["missing_folds"] == []
    assert [entry["fold"] for entry in manifest["folds"]] == [0, 1]
    for fold, (entry, checkpoint) in enumerate(zip(manifest["folds"], manifest["checkpoints"], strict=True)):
        assert checkpoint == entry["best_checkpoint"] and checkpoint.startswith(f"fold{fold}/checkpoints/best-epoch")
        assert (bag_dir / checkpoint).is_file() and (bag_dir / entry["last_checkpoint"]).is_file()
        assert entry["monitor"] == "val/iou" and 0 <= entry["best_score"] <= 1
        assert {"val/iou", "val/dice", "val/loss"} <= set(entry["metrics"])
        assert entry["metrics"]["val/iou"] == pytest.approx(entry["best_score"])
        assert (bag_dir / entry["config"]).is_file() and (bag_dir / f"fold{fold}" / "done.json").is_file()
        # OOF: one file per validation image of the fold, at the evaluation size, scored at the original size
        folds = load_folds(bag_dir / entry["folds_file"])
        stems = sorted(stem for stem, index in folds.items() if index == fold)
        files = sorted((bag_dir / entry["oof"]["dir"]).glob("*.npz"))
        assert [path.stem for path in files] == stems and entry["oof"]["n_images"] == len(stems) == 4
        for path in files:
            with np.load(path) as record:
                original = tuple(record["original_size"].tolist())
                assert original == cv2.imread(str(shapes_folder / "images" / f"{path.stem}.jpg")).shape[:2]
                assert record["probabilities"].dtype == np.float16
                assert record["probabilities"].shape == (1, *valid_size(original, 32))
                mask = cv2.imread(str(shapes_folder / "masks" / f"{path.stem}.png"), cv2.IMREAD_GRAYSCALE)
                tp, _, fn = record["stats"].tolist()
                assert tp + fn == int((mask > 127).sum())
                assert record["positive_histogram"].sum() + record["negative_histogram"].sum() == mask.size
    assert manifest["metrics"]["val/iou"]["mean"] == pytest.approx(
        np.mean([entry["metrics"]["val/iou"] for entry in manifest["folds"]])
    )
    assert manifest["oof"]["n_images"] == 8 and 0 <= manifest["oof"]["dice"] <= 1
    assert manifest["threshold"] == 0.5 and 0 < manifest["thresholds"]["oof_best"] < 1
    assert manifest["config"]["model"]["model"] == "unet" and manifest["config"]["data"]["n_folds"] == 2
    assert "logger" not in manifest["config"]["trainer"]
    assert list((bag_dir / "tensorboard" / "fold1").glob("events.out.tfevents*"))

    # a second call finds both folds done: nothing is fitted, the checkpoints stay as they were
    times = {path: path.stat().st_mtime_ns for path in bag_dir.rglob("*.ckpt")}
    _bag(shapes_folder, bag_dir, "--folds=2")
    assert len(fit_calls) == 2
    assert {path: path.stat().st_mtime_ns for path in bag_dir.rglob("*.ckpt")} == times
    assert json.loads((bag_dir / "manifest.json").read_text())["checkpoints"] == manifest["checkpoints"]


def test_only_fold_resume_assemble_and_bootstrap(shapes_folder, tmp_path, monkeypatch, fit_calls):
    monkeypatch.chdir(tmp_path)
    bag_dir = tmp_path / "bag"
    _bag(shapes_folder, bag_dir, "--folds=2", "--only_fold=0")
    assert not (bag_dir / "manifest.json").exists()  # parallel runs never write it
    assert not (bag_dir / "fold1").exists()

    # an interrupted fold (no done.json) resumes from its last.ckpt, here to 2 epochs
    (bag_dir / "fold0" / "done.json").unlink()
    _bag(shapes_folder, bag_dir, "--folds=2", "--only_fold=0", "--trainer.max_epochs=2")
    assert Path(fit_calls[-1]["ckpt_path"]) == bag_dir / "fold0" / "checkpoints" / "last.ckpt"
    last = load_container(bag_dir / "fold0" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and last["global_step"] == 2 * 2  # 4 training images, batch 2, 2 epochs
    assert (bag_dir / "fold0" / "metrics-1.csv").is_file()  # the first run's metrics are kept
    assert json.loads((bag_dir / "fold0" / "done.json").read_text())["resumed"] is True

    main(["bag", f"--bag_dir={bag_dir}", "--assemble"])  # --folds from bag.yaml
    manifest = json.loads((bag_dir / "manifest.json").read_text())
    assert manifest["missing_folds"] == [1] and len(manifest["checkpoints"]) == 1

    # another model configuration in the same bag folder stops before training
    with pytest.raises(ValueError, match=r"model\.lr"):
        _bag(shapes_folder, bag_dir, "--folds=2", "--only_fold=1", "--model.lr=0.5")
    assert len(fit_calls) == 2

    _bag(shapes_folder, bag_dir, "--folds=2", "--only_fold=1", "--bootstrap", "--bootstrap_seed=3")
    rows = (bag_dir / "fold1" / "bootstrap.csv").read_text().split()[1:]
    counts = {row.split(",")[0]: int(row.split(",")[1]) for row in rows}
    training = {stem for stem, fold in load_folds(bag_dir / "fold1" / "folds.csv").items() if fold == 0}
    assert sum(counts.values()) == len(training) == 4 and set(counts) <= training
    main(["bag", f"--bag_dir={bag_dir}", "--folds=2", "--assemble"])
    manifest = json.loads((bag_dir / "manifest.json").read_text())
    assert manifest["missing_folds"] == [] and len(manifest["checkpoints"]) == 2 and manifest["bootstrap"] is True
    assert manifest["folds"][1]["bootstrap_seed"] == 4


def test_oof_statistics_and_threshold_curve_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(2, 30, 40, generator=generator)
    masks = torch.rand(2, 30, 40, generator=generator) < probabilities  # informative probabilities
    records = [binary_oof_statistics(p, m, threshold=0.5, bins=10) for p, m in zip(probabilities, masks, strict=True)]
    for record, p, m in zip(records, probabilities, masks, strict=True):
        assert record["stats"].tolist() == [
            int(((p > 0.5) & m).sum()),
            int(((p > 0.5) & ~m).sum()),
            int(((p <= 0.5) & m).sum()),
        ]
    positive = sum(record["positive_histogram"] for record in records)
    negative = sum(record["negative_histogram"] for record in records)
    thresholds, iou = threshold_curve(positive, negative)
    assert thresholds.tolist() == pytest.approx([0.1 * j for j in range(1, 10)])
    for threshold, score in zip(thresholds, iou, strict=True):
        predicted = probabilities >= threshold - 1e-9
        tp, fp, fn = (predicted & masks).sum(), (predicted & ~masks).sum(), (~predicted & masks).sum()
        assert score == pytest.approx(float(tp / (tp + fp + fn)), abs=1e-6)


def test_summarise_oof_pools_folders(tmp_path):
    for fold in (0, 1):
        folder = tmp_path / f"fold{fold}"
        folder.mkdir()
        probabilities = torch.full((4, 4), 0.7)
        mask = torch.zeros(4, 4, dtype=torch.bool)
        mask[: fold + 1] = True  # 4 and 8 foreground pixels of 16
        np.savez(folder / "a.npz", **binary_oof_statistics(probabilities, mask))
    summary = summarise_oof([tmp_path / "fold0", tmp_path / "fold1"])
    assert summary["n_images"] == 2
    assert summary["iou"] == pytest.approx(12 / 32) and summary["dice"] == pytest.approx(24 / 44)
    assert summary["dice_per_image"] == pytest.approx((8 / 20 + 16 / 24) / 2)
    assert summary["best_threshold"] == pytest.approx(0.5)  # every threshold up to 0.7 ties: the nearest 0.5


def test_best_threshold_prefers_the_default_among_ties():
    thresholds = np.arange(1, 10) / 10
    assert best_threshold(thresholds, np.array([1, 2, 3, 3, 3, 3, 3, 1, 0.0]), 0.5) == 4
    assert best_threshold(thresholds, np.array([5, 2, 3, 3, 3, 3, 3, 1, 0.0]), 0.5) == 0


def test_bootstrap_indices_and_dataset():
    indices = bootstrap_indices(100, seed=1)
    assert len(indices) == 100 and np.array_equal(indices, bootstrap_indices(100, seed=1))
    assert 50 < len(set(indices.tolist())) < 80  # about 63 % distinct
    assert not np.array_equal(indices, bootstrap_indices(100, seed=2))
    dataset = BootstrapDataset(list("abc"), [0, 0, 2])
    assert len(dataset) == 3 and [dataset[i] for i in range(3)] == ["a", "a", "c"]


def test_bootstrap_loader_draws_the_listed_sample(shapes_folder, tmp_path):
    """Every training epoch sees each stem as often as bootstrap.csv lists it, and no other stem."""
    seen: list[str] = []

    class Names(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
            seen.extend(batch["name"])

    data = tiny_data(shapes_folder, batch_size=1)
    module = SegmentationModule(**TINY_UNET)
    callbacks = [BootstrapSample(seed=5, directory=tmp_path), Names()]
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=callbacks, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    rows = [line.split(",") for line in (tmp_path / "bootstrap.csv").read_text().split()[1:]]
    listed = Counter({stem: int(count) for stem, count in rows})
    assert sum(listed.values()) == len(seen) // 2 and len(listed) < len(seen) // 2  # repeats drawn
    for epoch in range(2):
        assert Counter(seen[epoch * len(seen) // 2 : (epoch + 1) * len(seen) // 2]) == listed


def test_check_bag_config_names_the_difference(tmp_path):
    config = {"model": {"model": "unet", "lr": 0.1}, "data": {"dataset": "x", "fold": 0, "num_workers": 2}}
    check_bag_config(tmp_path, config)
    assert yaml.safe_load((tmp_path / "bag.yaml").read_text()) == config
    check_bag_config(tmp_path, {**config, "data": {"dataset": "x", "fold": 3, "num_workers": 0}})  # volatile keys
    with pytest.raises(ValueError, match=r"model\.lr: 0\.1 -> 0\.2"):
        check_bag_config(tmp_path, {**config, "model": {"model": "unet", "lr": 0.2}})


def test_training_bagging_is_a_lazy_deprecated_alias():
    code = "import sys, ternaus_zoo.training, ternaus_zoo.training.bagging; print('ternaus_zoo.bagging' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
    old = importlib.import_module("ternaus_zoo.training.bagging")
    with pytest.warns(DeprecationWarning, match="moved to ternaus_zoo.bagging.train_bag"):
        assert old.train_bag is bagging.train_bag
    with pytest.warns(DeprecationWarning, match="ternaus_zoo.bagging.FoldRun"):
        assert importlib.import_module("ternaus_zoo.training").FoldRun is bagging.FoldRun
    with pytest.raises(AttributeError):
        old.SegmentationModule  # noqa: B018

"""Finished bags as the selection reads them: their stored out-of-fold probabilities, folds and task, checked
against each other, and the ground-truth masks at their original resolution.

A bag folder (``ternaus-zoo bag``, :mod:`ternaus_zoo.bagging`) holds ``bag.yaml``, ``manifest.json`` and one
``fold<k>/`` per fold with ``done.json``, ``folds.csv`` and ``oof/<stem>.npz`` (``probabilities`` ``(C, h, w)``
float16 at the evaluation size, ``original_size``); with ``bag --oof_tta T`` also ``oof_tta/<stem>.npz``, the same
under the TTA ``T``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ternaus_zoo.bagging import BAG_CONFIG_FILE, MANIFEST_FILE, OOF_DIR, OOF_TTA_DIR, fold_dir, is_fold_done
from ternaus_zoo.data import HOLDOUT, SegmentationDataModule, load_folds
from ternaus_zoo.errors import BadValueError, MissingPathError

__all__ = ["OutOfFoldBag", "check_same_task", "load_bag", "load_masks"]


@dataclass
class OutOfFoldBag:
    """One finished bag: its out-of-fold probabilities and what they were made with.

    ``folds``: ``{stem: fold}`` of the training images (hold-out excluded); ``probabilities``: ``{stem: (C, h, w)
    float16}`` at the evaluation size; ``original_sizes``: ``{stem: (H, W)}``; ``tta``: the TTA every fold also
    stored its OOF predictions under (``None``: none, or not every fold), in ``tta_probabilities``.
    """

    path: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    folds: dict[str, int]
    probabilities: dict[str, np.ndarray] = field(repr=False)
    original_sizes: dict[str, tuple[int, int]] = field(repr=False)
    tta: str | None = None
    tta_probabilities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def mask_mode(self) -> str:
        return str(self.config.get("data", {}).get("mask_mode", "binary"))

    @property
    def num_classes(self) -> int:
        return int(self.config.get("model", {}).get("num_classes") or 1)

    @property
    def class_names(self) -> list[str] | None:
        names = self.config.get("model", {}).get("class_names") or self.config.get("data", {}).get("class_names")
        return list(names) if names else None

    @property
    def threshold(self) -> float:
        return float(self.manifest.get("threshold", 0.5))

    @property
    def n_folds(self) -> int:
        return int(self.manifest["n_folds"])


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise MissingPathError(f"bag folder not found: {path}")
    config_file = path / BAG_CONFIG_FILE
    if not config_file.is_file():
        raise MissingPathError(f"{path} is not a bag folder: no {BAG_CONFIG_FILE} (make one with ternaus-zoo bag)")
    return yaml.safe_load(config_file.read_text()) or {}


def load_bag(path: str | Path) -> OutOfFoldBag:
    """Read a finished bag's folds and out-of-fold files.

    Raises:
        MissingPathError: not a bag folder, or a fold is unfinished (named) or lacks its OOF file of an image.
        BadValueError: its folds' ``folds.csv`` disagree.
    """
    path = Path(path)
    config = _read_config(path)
    n_folds = config.get("data", {}).get("n_folds")
    manifest_file = path / MANIFEST_FILE
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    n_folds = int(manifest.get("n_folds") or n_folds or 0)
    missing = [fold for fold in range(n_folds) if not is_fold_done(path, fold)]
    if missing or not manifest_file.is_file():
        what = f"fold {missing[0]} is unfinished (no {fold_dir(path, missing[0]) / 'done.json'})" if missing else ""
        what = what or f"it has no {MANIFEST_FILE}"
        raise MissingPathError(f"{path} is not a finished bag: {what}; finish it with ternaus-zoo bag (--assemble)")
    folds: dict[str, int] | None = None
    for fold in range(n_folds):
        these = {stem: k for stem, k in load_folds(fold_dir(path, fold) / "folds.csv").items() if k != HOLDOUT}
        if folds is not None and these != folds:
            first = sorted(stem for stem in set(these) | set(folds) if these.get(stem) != folds.get(stem))[0]
            raise BadValueError(f"{fold_dir(path, fold) / 'folds.csv'} gives {first} another fold than fold0's")
        folds = these
    probabilities, sizes, tta_probabilities = {}, {}, {}
    stored = {(entry.get("oof_tta") or {}).get("tta") for entry in manifest.get("folds", [])}
    tta = stored.pop() if len(stored) == 1 else None  # the same TTA in every fold, or none at all
    for stem, fold in sorted((folds or {}).items()):
        for folder, into in ((OOF_DIR, probabilities), (OOF_TTA_DIR, tta_probabilities if tta else None)):
            if into is None:
                continue
            file = fold_dir(path, fold) / folder / f"{stem}.npz"
            if not file.is_file():
                raise MissingPathError(f"{path} is not a finished bag: {file} is missing")
            with np.load(file) as record:
                into[stem] = record["probabilities"]
                sizes[stem] = tuple(int(side) for side in record["original_size"])
    return OutOfFoldBag(path, config, manifest, folds or {}, probabilities, sizes, tta, tta_probabilities)


def check_same_task(bags: Sequence[OutOfFoldBag]) -> None:
    """The bags must share their folds, mask mode and classes.

    Raises:
        BadValueError: naming the first image whose fold differs, or the mode / classes of both bags.
    """
    first, *others = bags
    for bag in others:
        if (bag.mask_mode, bag.num_classes) != (first.mask_mode, first.num_classes):
            raise BadValueError(
                f"{bag.path} is a {bag.mask_mode} bag of {bag.num_classes} class(es), {first.path} a "
                f"{first.mask_mode} bag of {first.num_classes}: select compares bags of one task"
            )
        if bag.class_names != first.class_names:
            raise BadValueError(f"{bag.path} names its classes {bag.class_names}, {first.path} {first.class_names}")
        if bag.folds != first.folds:
            stems = sorted(set(bag.folds) | set(first.folds))
            stem = next(stem for stem in stems if bag.folds.get(stem) != first.folds.get(stem))
            raise BadValueError(
                f"{bag.path} and {first.path} do not share their folds: image {stem} is in fold "
                f"{bag.folds.get(stem, 'none')} of one and {first.folds.get(stem, 'none')} of the other"
            )


def load_masks(bag: OutOfFoldBag, data_root: str | None = None) -> dict[str, np.ndarray]:
    """The ground truth of every out-of-fold image at its original resolution, read as the bag's data module
    reads it: binary ``(H, W)`` bool, classes ``(H, W)`` int64 (``ignore_index`` kept), multi-label
    ``(C, H, W)`` bool.

    Args:
        data_root: overrides ``data.data_root`` of ``bag.yaml`` (default: that, else ``TERNAUS_ZOO_DATA``).
    """
    options = {key: value for key, value in bag.config.get("data", {}).items() if key not in ("folds_file", "fold")}
    if data_root is not None:
        options["data_root"] = data_root
    options.update(num_workers=0, predict_dir=None, run_dir=None)
    options.setdefault("num_classes", bag.num_classes)
    masks: dict[str, np.ndarray] = {}
    for fold in range(bag.n_folds):
        data = SegmentationDataModule(**options, folds_file=str(fold_dir(bag.path, fold) / "folds.csv"), fold=fold)
        data.setup("validate")
        plain = data.val_dataset.subset(data.val_dataset.stems, transform=None)
        for index, stem in enumerate(plain.stems):
            mask = plain[index]["mask"].numpy()
            masks[stem] = mask.astype(np.int64) if bag.mask_mode == "classes" else mask.astype(bool)
    binary = bag.mask_mode == "binary"
    return {stem: mask[0] if binary else mask for stem, mask in sorted(masks.items())}

"""The folder a selection ships: the chosen bags' fold models as one saved-model ensemble (format 2).

Each fold model of a bag is a member: its weight is the bag's weight in the selected ensemble shared equally by the
bag's folds (the selection scored each image with its own fold's model; the folder predicts new images with every
fold's), with its bag, fold and evaluation size. The folder's ``prediction`` holds the selected TTA, threshold and
post-processing steps; its card shows the selection table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ternaus_zoo.inference.ensemble import model_from_checkpoint
from ternaus_zoo.inference.pretrained import save_predictor_pretrained
from ternaus_zoo.planning.bags import OutOfFoldBag

__all__ = ["write_selection_folder"]


def _threshold(threshold: float | Sequence[float] | None) -> float:
    """The one threshold a saved folder holds (class masks take the argmax: any)."""
    if threshold is None:
        return 0.5
    if isinstance(threshold, int | float):
        return float(threshold)
    if len(set(threshold)) > 1:
        raise ValueError(f"per-class thresholds {list(threshold)} cannot be saved yet: a folder holds one threshold")
    return float(threshold[0])


def write_selection_folder(
    bags: Sequence[OutOfFoldBag], selection: dict[str, Any], folder: str | os.PathLike, table: str = ""
) -> Path:
    """Write the ensemble ``selection["final"]`` describes into ``folder`` (``config.json``, one
    ``member<k>.safetensors`` per fold model, ``README.md`` with ``table``).

    Args:
        bags: the bags the selection chose among (their manifests' best checkpoints are the members).
        selection: the content of ``selection.json`` (:func:`~ternaus_zoo.planning.selection.select`).
        table: the selection table as text, for the card.
    """
    final = selection["final"]
    models, settings = [], []
    for bag in bags:
        weight = final["weights"].get(bag.name, 0.0)
        if weight <= 0:
            continue
        checkpoints = bag.manifest["checkpoints"]
        for fold, checkpoint in enumerate(checkpoints):
            models.append(model_from_checkpoint(bag.path / checkpoint))
            val_size = bag.config.get("data", {}).get("val_size")
            settings.append(
                {"weight": weight / len(checkpoints), "val_size": val_size, "bag": str(bag.path), "fold": fold}
            )
    val_sizes = {setting["val_size"] for setting in settings}
    if len(val_sizes) > 1:
        raise ValueError(f"the chosen bags evaluate at different sizes {sorted(map(str, val_sizes))}: one folder")
    task = selection["task"]
    prediction = {
        "val_size": settings[0]["val_size"],
        "threshold": _threshold(final["threshold"]),
        "oof_threshold": None,
        "tta": final["tta"],
        "reduction": "mean",
        "multilabel": task["mask_mode"] == "multilabel",
        "tile_size": None,
        "postprocessing": list(final["postprocessing"]),
    }
    objective = selection["objective"]
    card = {
        "title": f"ensemble of {len(models)} models chosen by ternaus-zoo select",
        "metrics": {f"out-of-fold {objective}": final["score"]},
        "metrics_source": f"the bags' out-of-fold predictions of {selection['n_images']} images",
        "notes": f"Selection (ternaus-zoo select):\n\n```\n{table}\n```" if table else None,
        "command": " ".join(selection.get("command", [])) or None,
    }
    return save_predictor_pretrained(models, folder, prediction, card, settings)

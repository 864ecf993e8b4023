"""Where a bag's files live, atomic writes, and the ``bag.yaml`` check that keeps two bags apart."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MANIFEST_FORMAT = "ternaus_zoo.bag/1"
MANIFEST_FILE = "manifest.json"
DONE_FILE = "done.json"
BAG_CONFIG_FILE = "bag.yaml"
OOF_DIR = "oof"
OOF_TTA_DIR = "oof_tta"  # the OOF predictions under TTA (bag --oof_tta)
# Data options that may differ between the runs of one bag (machines, resumption) without changing the bag.
VOLATILE_DATA_KEYS = ("fold", "num_workers", "predict_dir", "run_dir", "data_root")

PathLike = str | os.PathLike


def fold_dir(bag_dir: PathLike, fold: int) -> Path:
    """``<bag_dir>/fold<k>``: the log dir of fold ``k``'s Lightning run."""
    return Path(bag_dir) / f"fold{fold}"


def fold_logger_config(bag_dir: PathLike, fold: int) -> list[dict[str, Any]]:
    """LightningCLI ``trainer.logger`` value putting fold ``k``'s run in :func:`fold_dir` (CSV) and
    ``<bag_dir>/tensorboard/fold<k>`` (TensorBoard): fixed names and versions, so paths are deterministic."""
    bag_dir = Path(bag_dir)
    return [
        {
            "class_path": "pytorch_lightning.loggers.CSVLogger",
            "init_args": {"save_dir": str(bag_dir), "name": "", "version": f"fold{fold}"},
        },
        {
            "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
            "init_args": {"save_dir": str(bag_dir / "tensorboard"), "name": "", "version": f"fold{fold}"},
        },
    ]


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a parallel ``--assemble``) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """``content`` as indented JSON, written atomically."""
    write_atomically(path, json.dumps(content, indent=2) + "\n")


def read_fold_entry(bag_dir: PathLike, fold: int) -> dict[str, Any] | None:
    """Fold ``k``'s ``done.json`` (its manifest entry), or ``None`` while the fold is unfinished."""
    path = fold_dir(bag_dir, fold) / DONE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_fold_done(bag_dir: PathLike, fold: int) -> bool:
    """Whether fold ``k`` finished: trained, validated and its OOF predictions written."""
    return (fold_dir(bag_dir, fold) / DONE_FILE).is_file()


def bag_signature(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines a bag: ``model`` and ``data`` without the keys that
    may change between runs (:data:`VOLATILE_DATA_KEYS`)."""
    data = {key: value for key, value in dict(config.get("data") or {}).items() if key not in VOLATILE_DATA_KEYS}
    return {"model": config.get("model"), "data": data}


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [line for key in keys for line in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def check_bag_config(bag_dir: PathLike, config: Mapping[str, Any]) -> None:
    """Record ``config`` as ``<bag_dir>/bag.yaml`` on the first run; on later runs raise ``ValueError``
    naming the keys whose value differs (in :func:`bag_signature`) from the recorded one."""
    path = Path(bag_dir) / BAG_CONFIG_FILE
    if not path.is_file():
        write_atomically(path, yaml.safe_dump(dict(config), sort_keys=False))
        return
    recorded = yaml.safe_load(path.read_text()) or {}
    changed = _differences(bag_signature(recorded), bag_signature(config))
    if changed:
        raise ValueError(
            f"{path} records another configuration than this call's ({'; '.join(changed[:8])}); "
            "finished folds would be mixed with new ones: use another --bag_dir, or delete that folder"
        )

"""The fold loop: train each fold (resuming), validate its best checkpoint, write its OOF predictions, and
assemble the finished folds into the bag's manifest."""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import BasePredictionWriter, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ternaus_zoo.bagging.bootstrap import BootstrapSample
from ternaus_zoo.bagging.layout import (
    BAG_CONFIG_FILE,
    DONE_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    OOF_DIR,
    OOF_TTA_DIR,
    PathLike,
    check_bag_config,
    fold_dir,
    is_fold_done,
    read_fold_entry,
    write_json,
)
from ternaus_zoo.bagging.oof import ClassConfusion, class_scores, pool_class_scores, summarise_oof
from ternaus_zoo.errors import BadValueError, MissingPathError
from ternaus_zoo.inference.predict import build_predictor
from ternaus_zoo.inference.writers import OutOfFoldWriter
from ternaus_zoo.weights import load_container


class FoldRun(NamedTuple):
    """What one fold trains with; ``trainer``'s first logger must write to :func:`fold_dir`.

    ``config``: the resolved configuration (``model``, ``data`` ... sections), recorded in ``bag.yaml``
    and the manifest, and checked against the bag's earlier runs; ``None`` skips both.
    """

    trainer: pl.Trainer
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    config: Mapping[str, Any] | None = None


FoldBuilder = Callable[[int], FoldRun]


class _ValidationAsPredict(pl.LightningDataModule):
    """A fold's validation loader as the ``predict`` split, keeping ``val_size`` visible to ``predict_step``."""

    def __init__(self, datamodule: pl.LightningDataModule) -> None:
        super().__init__()
        self.datamodule = datamodule
        self.val_size = getattr(datamodule, "val_size", None)

    def predict_dataloader(self) -> DataLoader:
        return self.datamodule.val_dataloader()


def _best_checkpoint(trainer: pl.Trainer, module: pl.LightningModule) -> tuple[Path, str | None, float | None]:
    """The best checkpoint by the module's monitor (``last.ckpt`` when nothing was monitored, as with SWA)."""
    monitor = getattr(module, "monitor", None)
    callbacks = [callback for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)]
    ranked = [callback for callback in callbacks if callback.monitor is not None and callback.best_model_path]
    ranked.sort(key=lambda callback: callback.monitor != monitor)
    if ranked:
        best = ranked[0]
        score = float(best.best_model_score) if best.best_model_score is not None else None
        return Path(best.best_model_path), best.monitor, score
    last = [Path(callback.last_model_path or callback.best_model_path) for callback in callbacks]
    last = [path for path in last if path.is_file()]
    if not last:
        raise RuntimeError("the fold wrote no checkpoint: keep checkpointing on (trainer.enable_checkpointing)")
    swa = getattr(getattr(module, "optimization", None), "swa_lr", None) is not None
    if monitor is not None and not swa:
        rank_zero_info(
            f"no best checkpoint by {monitor}: validation never ran (check_val_every_n_epoch="
            f"{trainer.check_val_every_n_epoch} > max_epochs={trainer.max_epochs}?); using {last[0].name}"
        )
    return last[0], None, None


def _keep_previous_metrics(directory: Path) -> None:
    """Lightning's CSV logger deletes an existing ``metrics.csv``; keep it as ``metrics-<n>.csv``."""
    metrics = directory / "metrics.csv"
    if metrics.is_file():
        number = 1 + sum(1 for _ in directory.glob("metrics-*.csv"))
        metrics.rename(directory / f"metrics-{number}.csv")


def _relative(path: PathLike, root: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _number(value: Any) -> float:
    return float(value.item() if isinstance(value, Tensor) else value)


def _class_confusion(val_dataset: Any, threshold: float) -> ClassConfusion | None:
    """The per-class OOF counts of a class-mask or multi-label validation set (``SegmentationDataset``), else
    ``None``."""
    mode = getattr(val_dataset, "mask_mode", None)
    if mode not in ("classes", "multilabel") or getattr(val_dataset, "masks", None) is None:
        return None
    if mode == "classes":
        return ClassConfusion(val_dataset.masks, val_dataset.num_classes, val_dataset.ignore_index)
    plain = val_dataset.subset(val_dataset.stems, transform=None)  # (C, H, W) masks at the original size
    index = {stem: position for position, stem in enumerate(plain.stems)}
    return ClassConfusion(
        val_dataset.masks,
        val_dataset.num_classes,
        multilabel_masks=lambda stem: plain[index[stem]]["mask"].numpy() > 0,
        threshold=threshold,
    )


class _ProbabilitiesAsLogits(nn.Module):
    """A predictor of probabilities seen through the module's activation: sigmoid or softmax of this module's
    output gives the predictor's probabilities back, so ``predict_step`` writes them unchanged."""

    def __init__(self, predictor: nn.Module, activation: str) -> None:
        super().__init__()
        self.predictor, self.activation = predictor, activation

    def forward(self, images: Tensor) -> Tensor:
        probabilities = self.predictor(images).float()
        return torch.logit(probabilities) if self.activation == "sigmoid" else probabilities.log()


def _predict_out_of_fold(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    folder: Path,
    threshold: float,
    confusion: ClassConfusion | None,
    checkpoint: Path | None,
    tta: str = "none",
) -> None:
    """Write the fold's OOF records into ``folder`` with the weights of ``checkpoint`` (``None``: the module's
    own); under ``tta``, each image's probabilities are averaged over the augmentations as ``predict --tta``
    averages them (:func:`~ternaus_zoo.inference.predict.build_predictor`)."""
    val_dataset = getattr(datamodule, "val_dataset", None)
    binary = getattr(val_dataset, "mask_mode", None) == "binary"
    writer = OutOfFoldWriter(
        folder,
        eval_size=getattr(datamodule, "val_size", None),
        threshold=threshold,
        masks=getattr(val_dataset, "masks", None) if binary else None,
        mask_threshold=getattr(val_dataset, "threshold", 127),
    )
    callbacks, model = trainer.callbacks, module.model
    # the CLI's MaskWriter (and any other writer) would also write the OOF images as masks: not here
    trainer.callbacks = [callback for callback in callbacks if not isinstance(callback, BasePredictionWriter)]
    trainer.callbacks += [writer, *([confusion] if confusion is not None else [])]
    if tta != "none":
        multilabel = bool(getattr(module.hparams, "multilabel", False))
        activation = "sigmoid" if module.hparams.num_classes == 1 or multilabel else "softmax"
        module.model = _ProbabilitiesAsLogits(build_predictor([model], tta, activation), activation)
    try:
        trainer.predict(
            module, datamodule=_ValidationAsPredict(datamodule), ckpt_path=checkpoint, return_predictions=False
        )
    finally:
        trainer.callbacks, module.model = callbacks, model


def train_fold(
    fold: int, run: FoldRun, bag_dir: PathLike, bootstrap_seed: int | None = None, oof_tta: str = "none"
) -> dict[str, Any]:
    """Fit fold ``k`` (resuming from its ``last.ckpt``), validate its best checkpoint, write its OOF
    predictions and ``done.json``; returns the fold's manifest entry (paths relative to ``bag_dir``).

    Args:
        fold: the data module's validation fold.
        run: trainer, module and data module of the fold; the trainer logs to :func:`fold_dir`.
        bag_dir: the bag's folder.
        bootstrap_seed: train on a bootstrap sample drawn with ``bootstrap_seed + fold``; ``None``: on
            all the fold's training images.
        oof_tta: also write the OOF predictions under this TTA (``fold<k>/oof_tta/``, for ``ternaus-zoo select``
            to try it); ``"none"``: only the plain ones.
    """
    trainer, module, datamodule = run.trainer, run.module, run.datamodule
    bag_dir = Path(bag_dir)
    directory = fold_dir(bag_dir, fold)
    if trainer.log_dir is None or Path(trainer.log_dir).resolve() != directory.resolve():
        raise ValueError(
            f"fold {fold}'s trainer logs to {trainer.log_dir}, expected {directory}: give it the loggers of "
            "fold_logger_config(bag_dir, fold)"
        )
    if getattr(datamodule, "fold", fold) != fold:
        raise ValueError(f"the data module validates fold {datamodule.fold}, expected fold {fold}")
    last = directory / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    if resumed:
        _keep_previous_metrics(directory)
    if bootstrap_seed is not None:
        trainer.callbacks.append(BootstrapSample(bootstrap_seed + fold, directory))
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=last if resumed else None)
    fit_seconds = time.perf_counter() - started
    best, monitor, best_score = _best_checkpoint(trainer, module)  # before validate() replaces the callbacks

    started = time.perf_counter()
    (validation,) = trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    threshold = float(getattr(module.hparams, "threshold", 0.5))
    val_dataset = getattr(datamodule, "val_dataset", None)
    confusion = _class_confusion(val_dataset, threshold)
    _predict_out_of_fold(trainer, module, datamodule, directory / OOF_DIR, threshold, confusion, best)
    if oof_tta != "none":  # the module holds the best checkpoint's weights now
        _predict_out_of_fold(trainer, module, datamodule, directory / OOF_TTA_DIR, threshold, None, None, oof_tta)
    oof_seconds = time.perf_counter() - started

    checkpoint = load_container(best)
    val_stems = datamodule.stems_of("val") if hasattr(datamodule, "stems_of") else None
    oof = summarise_oof([directory / OOF_DIR], threshold)
    if confusion is not None:
        names = getattr(module, "class_names", None) or getattr(datamodule, "class_names", None)
        oof.update(class_scores(confusion.counts, names))
    entry: dict[str, Any] = {
        "fold": fold,
        "dir": _relative(directory, bag_dir),
        "best_checkpoint": _relative(best, bag_dir),
        "last_checkpoint": _relative(last, bag_dir) if last.is_file() else None,
        "monitor": monitor,
        "best_score": best_score,
        "best_epoch": int(checkpoint.get("epoch", -1)),
        "best_global_step": int(checkpoint.get("global_step", -1)),
        "metrics": {key: _number(value) for key, value in validation.items()},
        "threshold": threshold,
        "oof": {"dir": _relative(directory / OOF_DIR, bag_dir), **oof},
        "n_val_images": len(val_stems) if val_stems is not None else None,
        "bootstrap_seed": None if bootstrap_seed is None else bootstrap_seed + fold,
        "resumed": resumed,
        "fit_seconds": round(fit_seconds, 1),
        "oof_seconds": round(oof_seconds, 1),
        "config": _relative(directory / "config.yaml", bag_dir) if (directory / "config.yaml").is_file() else None,
        "folds_file": _relative(directory / "folds.csv", bag_dir) if (directory / "folds.csv").is_file() else None,
    }
    if oof_tta != "none":
        tta_oof = summarise_oof([directory / OOF_TTA_DIR], threshold)
        entry["oof_tta"] = {"tta": oof_tta, "dir": _relative(directory / OOF_TTA_DIR, bag_dir), **tta_oof}
    if trainer.is_global_zero:
        write_json(directory / DONE_FILE, entry)
    return entry


def train_bag(
    build_fold: FoldBuilder,
    bag_dir: PathLike,
    n_folds: int,
    folds: Sequence[int] | None = None,
    bootstrap_seed: int | None = None,
    write_manifest: bool = True,
    oof_tta: str = "none",
) -> dict[str, Any] | None:
    """Train the unfinished folds among ``folds`` (default all ``0..n_folds-1``), one Lightning run each.

    Args:
        build_fold: ``k -> FoldRun``; called only for folds without ``done.json``.
        bag_dir: the bag's folder; fold ``k`` lives in ``<bag_dir>/fold<k>``.
        n_folds: number of folds of the data module.
        folds: the folds to train here (``--only_fold``); others are left alone.
        bootstrap_seed: see :func:`train_fold`.
        write_manifest: write ``manifest.json`` when every fold is done afterwards.
        oof_tta: see :func:`train_fold` (folds already done keep what they wrote).

    Returns:
        The manifest when it was written, else ``None``.
    """
    folds = list(range(n_folds)) if folds is None else list(folds)
    wrong = [fold for fold in folds if not 0 <= fold < n_folds]
    if wrong:
        raise BadValueError(f"folds {wrong} are outside 0..{n_folds - 1} (of {n_folds} folds)")
    for fold in folds:
        if is_fold_done(bag_dir, fold):
            print(f"bag: fold {fold} is done ({fold_dir(bag_dir, fold) / DONE_FILE}); not training it again")
            continue
        run = build_fold(fold)
        if run.config is not None:
            check_bag_config(bag_dir, run.config)
        entry = train_fold(fold, run, bag_dir, bootstrap_seed, oof_tta)
        print(f"bag: fold {fold} done: {entry['monitor']} {entry['best_score']}, OOF {entry['oof']}")
    if write_manifest and all(is_fold_done(bag_dir, fold) for fold in range(n_folds)):
        return assemble(bag_dir, n_folds)
    return None


def _mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """Over the folds with a score (a class absent from a fold's validation images scores NaN there)."""
    values = [value for value in values if not math.isnan(value)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / len(values))


def assemble(bag_dir: PathLike, n_folds: int | None = None, require_all: bool = False) -> dict[str, Any]:
    """Write ``<bag_dir>/manifest.json`` from the finished folds and return it.

    Manifest keys (paths relative to ``bag_dir``):

    * ``format``: ``"ternaus_zoo.bag/1"``; ``created``; ``n_folds``; ``missing_folds``;
    * ``checkpoints`` / ``last_checkpoints``: the finished folds' best / last checkpoints, the ensemble;
    * ``folds``: one entry per finished fold (its ``done.json``: checkpoints, ``monitor`` and
      ``best_score``, ``metrics`` of the best checkpoint's validation, ``oof`` scores, ``threshold``,
      timings, its ``config.yaml`` and ``folds.csv``);
    * ``metrics``: ``{name: {"mean", "std"}}`` of the folds' validation metrics (``val/iou/<class name>`` ...
      included; over the folds where the metric is not NaN);
    * ``oof``: the pooled OOF scores of all finished folds (Dice/IoU at the original resolution); for class and
      multi-label masks ``iou_per_class`` and ``dice_per_class`` by class name, ``miou`` and the summed
      ``class_counts`` (see :func:`~ternaus_zoo.bagging.oof.class_scores`);
    * ``threshold``: the modules' threshold; ``thresholds``: ``{"default", "oof_best", "per_fold"}``;
    * ``config``: the resolved configuration from ``bag.yaml`` (``data.fold`` varies per fold).

    Args:
        n_folds: default: ``data.n_folds`` of ``bag.yaml``.
        require_all: raise when a fold is unfinished; otherwise it is listed in ``missing_folds``.
    """
    bag_dir = Path(bag_dir)
    config_path = bag_dir / BAG_CONFIG_FILE
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    if n_folds is None:
        n_folds = (config or {}).get("data", {}).get("n_folds")
        if n_folds is None:
            raise BadValueError(f"pass n_folds (--folds): {config_path} does not give data.n_folds")
    entries = [entry for fold in range(n_folds) if (entry := read_fold_entry(bag_dir, fold)) is not None]
    missing = sorted(set(range(n_folds)) - {entry["fold"] for entry in entries})
    if not entries:
        raise MissingPathError(f"no finished fold in {bag_dir} (no fold<k>/{DONE_FILE} for k in 0..{n_folds - 1})")
    if missing and require_all:
        raise RuntimeError(f"folds {missing} of {bag_dir} are unfinished")
    names = sorted({name for entry in entries for name in entry["metrics"]})
    metrics = {}
    for name in names:
        values = [entry["metrics"][name] for entry in entries if name in entry["metrics"]]
        mean, std = _mean_and_std(values)
        metrics[name] = {"mean": mean, "std": std}
    threshold = float(entries[0]["threshold"])
    oof = summarise_oof([bag_dir / entry["oof"]["dir"] for entry in entries], threshold)
    oof.update(pool_class_scores(entry["oof"] for entry in entries))
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}",
        "n_folds": n_folds,
        "missing_folds": missing,
        "checkpoints": [entry["best_checkpoint"] for entry in entries],
        "last_checkpoints": [entry["last_checkpoint"] for entry in entries],
        "monitor": entries[0]["monitor"],
        "metrics": metrics,
        "oof": oof,
        "threshold": threshold,
        "thresholds": {
            "default": threshold,
            "oof_best": oof.get("best_threshold"),
            "per_fold": [entry["oof"].get("best_threshold") for entry in entries],
        },
        "bootstrap": any(entry.get("bootstrap_seed") is not None for entry in entries),
        "folds": entries,
        "config": config,
    }
    if missing:
        print(f"bag: folds {missing} are unfinished; the manifest lists the {len(entries)} finished ones")
    write_json(bag_dir / MANIFEST_FILE, manifest)
    return manifest

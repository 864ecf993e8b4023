"""Bagging: one model per fold, out-of-fold predictions, and an ensemble manifest.

``ternaus-zoo bag --config X --folds K`` trains fold ``0..K-1`` of the data module (``--data.fold=k``,
``--data.n_folds=K``), each fold a separate Lightning run whose logger writes to ``<bag_dir>/fold<k>/``
(CSV metrics, ``config.yaml``, ``folds.csv``, ``checkpoints/best-epochNNN.ckpt`` and ``last.ckpt``;
TensorBoard events under ``<bag_dir>/tensorboard/fold<k>/``). After training, a fold

* validates its best checkpoint (``val/iou``, ``val/dice``, ``val/loss`` ... at the evaluation size),
* predicts its validation images with that checkpoint (the out-of-fold, "OOF", predictions) and writes
  one ``fold<k>/oof/<stem>.npz`` per image: ``probabilities`` ``(C, h, w)`` ``float16`` at the
  evaluation size (``(h, w) = valid_size(original_size, val_size)``: the image resized so that its
  longest side is ``val_size``, without padding), ``original_size`` ``(2,)``, and for binary masks
  ``stats`` (TP, FP, FN at the module's threshold) and 100-bin histograms of the foreground and
  background probabilities, all scored at the mask's original resolution,
* writes ``fold<k>/done.json``: its entry of the manifest.

When every fold is done, ``<bag_dir>/manifest.json`` lists the checkpoints, the per-fold metrics, the
pooled OOF scores with the OOF-tuned threshold, and the resolved configuration (see :func:`assemble`).
``ternaus-zoo predict --manifest <bag_dir>/manifest.json`` and ``ternaus-zoo export --manifest ...``
read it.

Resuming: a fold with ``done.json`` is not trained again; an unfinished fold resumes from its
``checkpoints/last.ckpt`` (its earlier ``metrics.csv``, which Lightning's CSV logger would delete, is
kept as ``metrics-<n>.csv``). ``bag.yaml`` records the model and data configuration of the bag, and a
later call with another model or data configuration stops with an error instead of mixing two bags.

``--bootstrap``: each fold's model trains on a bootstrap sample of its training images (as many
draws, with replacement, seeded by ``bootstrap_seed + fold``; written to ``fold<k>/bootstrap.csv``);
validation and OOF predictions stay on the fold's validation images.

Folds in parallel (one fold per GPU, or per node, or per SLURM array task), all with the same
``--bag_dir`` on a shared file system::

    # one process per device, e.g. on a 4-GPU machine (folds 0..4, two on the last GPU)
    CUDA_VISIBLE_DEVICES=0 ternaus-zoo bag --config X --folds 5 --bag_dir runs/bag/X --only_fold 0 &
    CUDA_VISIBLE_DEVICES=1 ternaus-zoo bag --config X --folds 5 --bag_dir runs/bag/X --only_fold 1 &
    ...
    # or a SLURM job array: sbatch --array=0-4 --gres=gpu:1 job.sh, job.sh holding
    ternaus-zoo bag --config X --folds 5 --bag_dir runs/bag/X --only_fold $SLURM_ARRAY_TASK_ID
    # then, once they have finished (e.g. sbatch --dependency=afterok:<array job id>):
    ternaus-zoo bag --config X --folds 5 --bag_dir runs/bag/X --assemble

``--only_fold`` never writes the manifest (so parallel runs do not race on it); ``--assemble`` trains
nothing and writes the manifest from the finished folds (listing the missing ones). A requeued or
restarted array task resumes its fold from ``last.ckpt``.

The functions here take a ``build_fold(k) -> FoldRun`` callable, so they work with any Trainer,
LightningModule and LightningDataModule (with ``fold`` and ``val_dataloader``); ``ternaus_zoo.cli``
builds them with LightningCLI from the command line's config.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ternaus_zoo.data.io import read_binary_mask
from ternaus_zoo.data.transforms import valid_size

MANIFEST_FORMAT = "ternaus_zoo.bag/1"
MANIFEST_FILE = "manifest.json"
DONE_FILE = "done.json"
BAG_CONFIG_FILE = "bag.yaml"
OOF_DIR = "oof"
HISTOGRAM_BINS = 100
# Data options that may differ between the runs of one bag (machines, resumption) without changing the bag.
VOLATILE_DATA_KEYS = ("fold", "num_workers", "predict_dir", "run_dir", "data_root")

PathLike = str | os.PathLike


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


# -- paths ---------------------------------------------------------------------------------------------


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


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Write atomically: a reader (or a parallel ``--assemble``) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


def read_fold_entry(bag_dir: PathLike, fold: int) -> dict[str, Any] | None:
    """Fold ``k``'s ``done.json`` (its manifest entry), or ``None`` while the fold is unfinished."""
    path = fold_dir(bag_dir, fold) / DONE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def is_fold_done(bag_dir: PathLike, fold: int) -> bool:
    """Whether fold ``k`` finished: trained, validated and its OOF predictions written."""
    return (fold_dir(bag_dir, fold) / DONE_FILE).is_file()


# -- the bag's configuration ----------------------------------------------------------------------------


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
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        os.replace(temporary, path)
        return
    recorded = yaml.safe_load(path.read_text()) or {}
    changed = _differences(bag_signature(recorded), bag_signature(config))
    if changed:
        raise ValueError(
            f"{path} records another configuration than this call's ({'; '.join(changed[:8])}); "
            "finished folds would be mixed with new ones: use another --bag_dir, or delete that folder"
        )


# -- bootstrap samples ---------------------------------------------------------------------------------


class BootstrapDataset(Dataset):
    """``dataset`` indexed through ``indices`` (with repeats); ``reseed`` reaches the wrapped dataset."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(index) for index in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def reseed(self, seed: int) -> None:
        if hasattr(self.dataset, "reseed"):
            self.dataset.reseed(seed)


def bootstrap_indices(size: int, seed: int) -> np.ndarray:
    """``size`` draws with replacement from ``range(size)``, sorted; about 63 % of the items appear."""
    return np.sort(np.random.default_rng(seed).integers(0, size, size=size))


class BootstrapSample(Callback):
    """Replace the data module's ``train_dataset`` by a bootstrap sample of it when fitting starts.

    Runs after the data module's ``setup`` (Lightning calls callbacks' ``setup`` after it), so the
    sample is drawn again, identically, when a fold resumes. Writes ``directory/bootstrap.csv``
    (``stem,count``).
    """

    def __init__(self, seed: int, directory: PathLike | None = None) -> None:
        self.seed = seed
        self.directory = Path(directory) if directory is not None else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "train_dataset", None)
        if dataset is None:
            raise RuntimeError("bootstrap sampling needs a data module with a train_dataset after setup()")
        indices = bootstrap_indices(len(dataset), self.seed)
        datamodule.train_dataset = BootstrapDataset(dataset, indices)
        stems = getattr(dataset, "stems", None)
        if self.directory is not None and stems is not None and trainer.is_global_zero:
            counts = np.bincount(indices, minlength=len(dataset))
            self.directory.mkdir(parents=True, exist_ok=True)
            lines = ["stem,count", *(f"{stem},{count}" for stem, count in zip(stems, counts, strict=True) if count)]
            (self.directory / "bootstrap.csv").write_text("\n".join(lines) + "\n")


# -- out-of-fold predictions -----------------------------------------------------------------------------


def binary_oof_statistics(
    probabilities: Tensor, mask: Tensor, threshold: float = 0.5, bins: int = HISTOGRAM_BINS
) -> dict[str, np.ndarray]:
    """Scores of one binary prediction at the mask's resolution.

    Args:
        probabilities: ``(H, W)`` foreground probabilities.
        mask: ``(H, W)`` ground truth, nonzero = foreground.
        threshold: foreground is ``probabilities > threshold``.
        bins: histogram bins over ``[0, 1]``.

    Returns:
        ``stats``: ``int64`` ``(3,)`` TP, FP, FN at ``threshold``; ``positive_histogram`` and
        ``negative_histogram``: ``int64`` ``(bins,)`` counts of the probabilities of foreground and
        background pixels, from which :func:`threshold_curve` scores every threshold ``j / bins``.
    """
    if probabilities.shape != mask.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and mask {tuple(mask.shape)} differ in shape")
    probabilities = probabilities.float()
    truth = mask.bool()
    predicted = probabilities > threshold
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    index = (probabilities * bins).long().clamp_(0, bins - 1)
    return {
        "stats": np.array([tp, fp, fn], dtype=np.int64),
        "positive_histogram": torch.bincount(index[truth], minlength=bins).numpy().astype(np.int64),
        "negative_histogram": torch.bincount(index[~truth], minlength=bins).numpy().astype(np.int64),
    }


def threshold_curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Micro IoU at thresholds ``j / bins``, ``j = 1..bins-1``, from the histograms of
    :func:`binary_oof_statistics` (foreground = probability in bin ``j`` or above).

    Returns:
        ``(thresholds, iou)``, both ``(bins - 1,)``.
    """
    bins = len(positive)
    tp = np.cumsum(positive[::-1])[::-1][1:].astype(np.float64)  # foreground pixels in bins >= j
    fp = np.cumsum(negative[::-1])[::-1][1:].astype(np.float64)
    fn = positive.sum() - tp
    denominator = tp + fp + fn
    iou = np.divide(tp, denominator, out=np.ones_like(tp), where=denominator > 0)
    return np.arange(1, bins) / bins, iou


def _iou_dice(tp: float, fp: float, fn: float) -> tuple[float, float]:
    if tp + fp + fn <= 0:  # nothing to find and nothing found: a perfect score
        return 1.0, 1.0
    return float(tp / (tp + fp + fn)), float(2 * tp / (2 * tp + fp + fn))


def best_threshold(thresholds: np.ndarray, scores: np.ndarray, default: float = 0.5) -> int:
    """Index of the largest score; among equal scores the threshold nearest ``default``."""
    candidates = np.flatnonzero(scores >= scores.max() - 1e-12)
    return int(candidates[np.argmin(np.abs(thresholds[candidates] - default))])


def to_eval_size(probabilities: Tensor, eval_size: int | None) -> Tensor:
    """``(C, H, W)`` at the original size to ``(C, h, w)`` at ``valid_size((H, W), eval_size)`` (area)."""
    size = valid_size(tuple(probabilities.shape[-2:]), eval_size)
    if size == tuple(probabilities.shape[-2:]):
        return probabilities
    return F.interpolate(probabilities[None].float(), size=size, mode="area")[0]


class OutOfFoldWriter(BasePredictionWriter):
    """Write every prediction as ``<output_dir>/<name>.npz`` (see the module docstring), as it comes.

    The prediction step must return ``{"name": [...], "probabilities": [(C, H, W) at the original
    size, ...]}`` (``SegmentationModule.predict_step``).

    Args:
        output_dir: folder of the ``.npz`` files (created).
        eval_size: the data module's ``val_size``: probabilities are stored at that size.
        threshold: foreground threshold of the binary ``stats``.
        masks: ``{stem: mask file}``; with binary (single-channel) predictions each file is read at its
            original size and scored (``stats`` and histograms); ``None``: no scores.
        mask_threshold: binarisation of the mask files (``mask > mask_threshold``).
    """

    def __init__(
        self,
        output_dir: PathLike,
        eval_size: int | None,
        threshold: float = 0.5,
        masks: Mapping[str, PathLike] | None = None,
        mask_threshold: int = 127,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.eval_size = eval_size
        self.threshold = threshold
        self.masks = masks
        self.mask_threshold = mask_threshold

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, probabilities in zip(prediction["name"], prediction["probabilities"], strict=True):
            probabilities = probabilities.detach().float().cpu()
            record: dict[str, np.ndarray] = {
                "probabilities": to_eval_size(probabilities, self.eval_size).half().numpy(),
                "original_size": np.array(probabilities.shape[-2:], dtype=np.int64),
            }
            if self.masks is not None and probabilities.shape[0] == 1:
                mask = torch.from_numpy(read_binary_mask(self.masks[name], self.mask_threshold))
                record.update(binary_oof_statistics(probabilities[0], mask, self.threshold))
            np.savez(self.output_dir / f"{name}.npz", **record)


def summarise_oof(directories: Iterable[PathLike], threshold: float = 0.5) -> dict[str, Any]:
    """Pool the OOF files of one or several folds.

    Returns:
        ``n_images``; for binary predictions scored against their masks also ``dice``, ``iou`` (micro, at
        ``threshold``, at the masks' original resolution), ``dice_per_image`` (mean), and the OOF-tuned
        threshold ``best_threshold`` (largest micro IoU over ``j / 100``; ties: nearest ``threshold``) with
        ``iou_at_best`` and ``dice_at_best``.
    """
    count, totals, positive, negative, per_image = 0, np.zeros(3), None, None, []
    for directory in directories:
        for path in sorted(Path(directory).glob("*.npz")):
            count += 1
            with np.load(path) as record:
                if "stats" not in record:
                    continue
                stats = record["stats"].astype(np.float64)
                totals += stats
                per_image.append(_iou_dice(*stats)[1])
                positive = record["positive_histogram"] + (0 if positive is None else positive)
                negative = record["negative_histogram"] + (0 if negative is None else negative)
    summary: dict[str, Any] = {"n_images": count}
    if positive is None or negative is None:
        return summary
    iou, dice = _iou_dice(*totals)
    thresholds, curve = threshold_curve(positive, negative)
    best = best_threshold(thresholds, curve, threshold)
    summary.update(
        threshold=threshold,
        dice=dice,
        iou=iou,
        dice_per_image=float(np.mean(per_image)),
        best_threshold=float(thresholds[best]),
        iou_at_best=float(curve[best]),
        dice_at_best=float(2 * curve[best] / (1 + curve[best])),
    )
    return summary


class _ValidationAsPredict(pl.LightningDataModule):
    """A fold's validation loader as the ``predict`` split, keeping ``val_size`` visible to ``predict_step``."""

    def __init__(self, datamodule: pl.LightningDataModule) -> None:
        super().__init__()
        self.datamodule = datamodule
        self.val_size = getattr(datamodule, "val_size", None)

    def predict_dataloader(self) -> DataLoader:
        return self.datamodule.val_dataloader()


# -- one fold ------------------------------------------------------------------------------------------


def _best_checkpoint(trainer: pl.Trainer, module: pl.LightningModule) -> tuple[Path, str | None, float | None]:
    """The best checkpoint by the module's monitor (``last.ckpt`` when nothing was monitored)."""
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


def train_fold(fold: int, run: FoldRun, bag_dir: PathLike, bootstrap_seed: int | None = None) -> dict[str, Any]:
    """Fit fold ``k`` (resuming from its ``last.ckpt``), validate its best checkpoint, write its OOF
    predictions and ``done.json``; returns the fold's manifest entry (paths relative to ``bag_dir``).

    Args:
        fold: the data module's validation fold.
        run: trainer, module and data module of the fold; the trainer logs to :func:`fold_dir`.
        bag_dir: the bag's folder.
        bootstrap_seed: train on a bootstrap sample drawn with ``bootstrap_seed + fold``; ``None``: on
            all the fold's training images.
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
    binary = getattr(val_dataset, "mask_mode", None) == "binary"
    writer = OutOfFoldWriter(
        directory / OOF_DIR,
        eval_size=getattr(datamodule, "val_size", None),
        threshold=threshold,
        masks=getattr(val_dataset, "masks", None) if binary else None,
        mask_threshold=getattr(val_dataset, "threshold", 127),
    )
    callbacks = trainer.callbacks
    # the CLI's MaskWriter (and any other writer) would also write the OOF images as masks: not here
    trainer.callbacks = [callback for callback in callbacks if not isinstance(callback, BasePredictionWriter)]
    trainer.callbacks.append(writer)
    try:
        trainer.predict(module, datamodule=_ValidationAsPredict(datamodule), ckpt_path=best, return_predictions=False)
    finally:
        trainer.callbacks = callbacks
    oof_seconds = time.perf_counter() - started

    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    val_stems = datamodule.stems_of("val") if hasattr(datamodule, "stems_of") else None
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
        "oof": {"dir": _relative(directory / OOF_DIR, bag_dir), **summarise_oof([directory / OOF_DIR], threshold)},
        "n_val_images": len(val_stems) if val_stems is not None else None,
        "bootstrap_seed": None if bootstrap_seed is None else bootstrap_seed + fold,
        "resumed": resumed,
        "fit_seconds": round(fit_seconds, 1),
        "oof_seconds": round(oof_seconds, 1),
        "config": _relative(directory / "config.yaml", bag_dir) if (directory / "config.yaml").is_file() else None,
        "folds_file": _relative(directory / "folds.csv", bag_dir) if (directory / "folds.csv").is_file() else None,
    }
    if trainer.is_global_zero:
        _write_json(directory / DONE_FILE, entry)
    return entry


# -- the bag -------------------------------------------------------------------------------------------


def train_bag(
    build_fold: FoldBuilder,
    bag_dir: PathLike,
    n_folds: int,
    folds: Sequence[int] | None = None,
    bootstrap_seed: int | None = None,
    write_manifest: bool = True,
) -> dict[str, Any] | None:
    """Train the unfinished folds among ``folds`` (default all ``0..n_folds-1``), one Lightning run each.

    Args:
        build_fold: ``k -> FoldRun``; called only for folds without ``done.json``.
        bag_dir: the bag's folder; fold ``k`` lives in ``<bag_dir>/fold<k>``.
        n_folds: number of folds of the data module.
        folds: the folds to train here (``--only_fold``); others are left alone.
        bootstrap_seed: see :func:`train_fold`.
        write_manifest: write ``manifest.json`` when every fold is done afterwards.

    Returns:
        The manifest when it was written, else ``None``.
    """
    folds = list(range(n_folds)) if folds is None else list(folds)
    wrong = [fold for fold in folds if not 0 <= fold < n_folds]
    if wrong:
        raise ValueError(f"folds {wrong} are outside 0..{n_folds - 1}")
    for fold in folds:
        if is_fold_done(bag_dir, fold):
            print(f"bag: fold {fold} is done ({fold_dir(bag_dir, fold) / DONE_FILE}); not training it again")
            continue
        run = build_fold(fold)
        if run.config is not None:
            check_bag_config(bag_dir, run.config)
        entry = train_fold(fold, run, bag_dir, bootstrap_seed)
        print(f"bag: fold {fold} done: {entry['monitor']} {entry['best_score']}, OOF {entry['oof']}")
    if write_manifest and all(is_fold_done(bag_dir, fold) for fold in range(n_folds)):
        return assemble(bag_dir, n_folds)
    return None


def _mean_and_std(values: list[float]) -> tuple[float, float]:
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
    * ``metrics``: ``{name: {"mean", "std"}}`` of the folds' validation metrics;
    * ``oof``: the pooled OOF scores of all finished folds (Dice/IoU at the original resolution);
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
            raise ValueError(f"pass n_folds (--folds): {config_path} does not give data.n_folds")
    entries = [entry for fold in range(n_folds) if (entry := read_fold_entry(bag_dir, fold)) is not None]
    missing = sorted(set(range(n_folds)) - {entry["fold"] for entry in entries})
    if not entries:
        raise FileNotFoundError(f"no finished fold in {bag_dir} (no fold<k>/{DONE_FILE} for k in 0..{n_folds - 1})")
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
    _write_json(bag_dir / MANIFEST_FILE, manifest)
    return manifest

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
  background probabilities, all scored at the mask's original resolution; for class masks the fold's
  per-class TP/FP/FN counts (argmax, at the masks' original resolution) go into its entry, with the per-class
  IoU and Dice under the class names (``data.class_names``, else ``class<k>``),
* with ``--oof_tta T`` (``train_bag(oof_tta=T)``), predicts them again under the TTA ``T`` into
  ``fold<k>/oof_tta/`` (as ``predict --tta T`` averages the augmentations' probabilities), for
  ``ternaus-zoo select`` to try,
* writes ``fold<k>/done.json``: its entry of the manifest.

When every fold is done, ``<bag_dir>/manifest.json`` lists the checkpoints, the per-fold metrics, the
pooled OOF scores with the OOF-tuned threshold (multi-class: the per-class OOF IoU/Dice of the summed counts,
by name), and the resolved configuration (see :func:`assemble`).
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

Modules: :mod:`~ternaus_zoo.bagging.layout` (folders, ``done.json``, ``bag.yaml``),
:mod:`~ternaus_zoo.bagging.bootstrap`, :mod:`~ternaus_zoo.bagging.oof` (pooled OOF scores, the threshold),
:mod:`~ternaus_zoo.bagging.loop` (:func:`train_fold`, :func:`train_bag`, :func:`assemble`); the OOF files
are written by :class:`~ternaus_zoo.inference.writers.OutOfFoldWriter`.
"""

from ternaus_zoo.bagging.bootstrap import BootstrapDataset, BootstrapSample, bootstrap_indices
from ternaus_zoo.bagging.layout import (
    BAG_CONFIG_FILE,
    DONE_FILE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    OOF_DIR,
    OOF_TTA_DIR,
    VOLATILE_DATA_KEYS,
    PathLike,
    bag_signature,
    check_bag_config,
    fold_dir,
    fold_logger_config,
    is_fold_done,
    read_fold_entry,
)
from ternaus_zoo.bagging.loop import FoldBuilder, FoldRun, assemble, train_bag, train_fold
from ternaus_zoo.bagging.oof import (
    ClassConfusion,
    best_threshold,
    class_scores,
    pool_class_scores,
    summarise_oof,
    threshold_curve,
)
from ternaus_zoo.inference.writers import HISTOGRAM_BINS, OutOfFoldWriter, binary_oof_statistics, to_eval_size

__all__ = [
    "BAG_CONFIG_FILE",
    "DONE_FILE",
    "HISTOGRAM_BINS",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "OOF_DIR",
    "OOF_TTA_DIR",
    "VOLATILE_DATA_KEYS",
    "BootstrapDataset",
    "BootstrapSample",
    "ClassConfusion",
    "FoldBuilder",
    "FoldRun",
    "OutOfFoldWriter",
    "PathLike",
    "assemble",
    "bag_signature",
    "best_threshold",
    "binary_oof_statistics",
    "bootstrap_indices",
    "check_bag_config",
    "class_scores",
    "fold_dir",
    "fold_logger_config",
    "is_fold_done",
    "pool_class_scores",
    "read_fold_entry",
    "summarise_oof",
    "threshold_curve",
    "to_eval_size",
    "train_bag",
    "train_fold",
]

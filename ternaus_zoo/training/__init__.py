"""Lightning training: the segmentation and classification modules, per-step learning-rate schedules, snapshots.

Bagging moved to :mod:`ternaus_zoo.bagging`; its names still resolve here, with a ``DeprecationWarning``.
"""

from __future__ import annotations

from ternaus_zoo.deprecation import moved_names
from ternaus_zoo.training.callbacks import CycleSnapshots, PredictionGrid
from ternaus_zoo.training.classification import ClassificationModule
from ternaus_zoo.training.mixing import BatchMixer, cutmix, mixup
from ternaus_zoo.training.module import SegmentationModule
from ternaus_zoo.training.schedules import SCHEDULES, StepCyclicRates, build_scheduler

_MOVED_TO_BAGGING = (
    "BootstrapSample",
    "FoldRun",
    "OutOfFoldWriter",
    "assemble",
    "fold_logger_config",
    "train_bag",
    "train_fold",
)

__all__ = [
    "SCHEDULES",
    "BatchMixer",
    "ClassificationModule",
    "CycleSnapshots",
    "PredictionGrid",
    "SegmentationModule",
    "StepCyclicRates",
    "build_scheduler",
    "cutmix",
    "mixup",
]


# `bagging`: the deprecated submodule, an attribute of this package before the move
__getattr__ = moved_names(__name__, dict.fromkeys(_MOVED_TO_BAGGING, "ternaus_zoo.bagging"), submodules=("bagging",))

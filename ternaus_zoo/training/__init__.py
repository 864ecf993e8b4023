"""Lightning training: the segmentation module, per-step learning-rate schedules, snapshots and bagging."""

from ternaus_zoo.training.bagging import (
    BootstrapSample,
    FoldRun,
    OutOfFoldWriter,
    assemble,
    fold_logger_config,
    train_bag,
    train_fold,
)
from ternaus_zoo.training.callbacks import CycleSnapshots
from ternaus_zoo.training.classification import ClassificationModule
from ternaus_zoo.training.mixing import BatchMixer, cutmix, mixup
from ternaus_zoo.training.module import SegmentationModule
from ternaus_zoo.training.schedules import SCHEDULES, StepCyclicRates, build_scheduler

__all__ = [
    "SCHEDULES",
    "BatchMixer",
    "BootstrapSample",
    "ClassificationModule",
    "CycleSnapshots",
    "FoldRun",
    "OutOfFoldWriter",
    "SegmentationModule",
    "StepCyclicRates",
    "assemble",
    "build_scheduler",
    "cutmix",
    "fold_logger_config",
    "mixup",
    "train_bag",
    "train_fold",
]

"""Lightning training: the segmentation module and the per-step learning-rate schedules."""

from ternaus_zoo.training.module import SegmentationModule
from ternaus_zoo.training.schedules import SCHEDULES, StepCyclicRates, build_scheduler

__all__ = ["SCHEDULES", "SegmentationModule", "StepCyclicRates", "build_scheduler"]

"""``SegmentationModule``: a registry model, a configurable loss, IoU/Dice metrics, optimisers with
discriminative rates and an encoder freeze, and per-step cyclic schedules.

The hyperparameters hold the registry name and its kwargs, so a checkpoint rebuilds its model alone
(``SegmentationModule.load_from_checkpoint(path)``, or the plain model with
:func:`ternaus_zoo.inference.model_from_checkpoint`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ternaus_zoo.data.transforms import restore_original_size
from ternaus_zoo.losses import build_loss
from ternaus_zoo.metrics import SegmentationMetrics
from ternaus_zoo.training.base import ZooModule


class SegmentationModule(ZooModule):
    """Trains a registry segmentation model.

    Args:
        model: registry name (``"unet11"``, ``"smp.Unet"`` ...).
        model_kwargs: the family's options (``{"encoder_name": "resnet34"}``).
        num_classes: 1 for binary masks, C for class-index masks.
        in_channels: input channels.
        weights: ``None``, ``"imagenet"`` or a checkpoint path, applied when fitting starts (so that
            rebuilding from a checkpoint never downloads).
        loss: a loss name or a ``{name: weight}`` mapping for :func:`ternaus_zoo.losses.build_loss`.
        threshold: probability threshold of the binary metrics and predictions.
        ignore_index: class index (or mask value) left out of the loss and metrics.
        channels_last: keep weights and inputs in channels-last memory format (1.2x faster training
            on CPU: ``benchmarks/results/speed_options.md``).
        **optimization: ``optimizer``, ``lr``, ``encoder_lr_ratio``, ``weight_decay``, ``freeze_encoder_epochs``,
            ``scheduler``, ``scheduler_kwargs``, ``swa_lr``, ``swa_epoch_start``: see
            :class:`~ternaus_zoo.training.optimization.Optimization`.
    """

    def __init__(
        self,
        model: str = "unet11",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 1,
        in_channels: int = 3,
        weights: str | None = None,
        loss: str | dict[str, Any] = "bce_jaccard",
        threshold: float = 0.5,
        ignore_index: int | None = None,
        channels_last: bool = True,
        **optimization: Any,
    ) -> None:
        super().__init__(model, model_kwargs, num_classes, in_channels, weights, **optimization)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.loss = build_loss(loss, ignore_index=ignore_index)
        metric_options = {"num_classes": num_classes, "threshold": threshold, "ignore_index": ignore_index}
        self.val_metrics = SegmentationMetrics(**metric_options)
        self.test_metrics = SegmentationMetrics(**metric_options)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` normalised images to ``(B, num_classes, H, W)`` logits."""
        return self.model(images.contiguous(memory_format=self.memory_format))

    def training_step(self, batch: dict[str, Tensor], batch_index: int) -> Tensor:
        loss = self.loss(self(batch["image"]), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def _evaluate(self, batch: dict[str, Tensor], metrics: SegmentationMetrics, prefix: str) -> None:
        logits = self(batch["image"])
        target = batch["mask"]
        self.log(f"{prefix}/loss", self.loss(logits, target), on_epoch=True, batch_size=len(logits), sync_dist=True)
        metrics.update(logits, target)

    def _log_metrics(self, metrics: SegmentationMetrics, prefix: str) -> None:
        scores = metrics.compute()
        for key, value in scores.items():
            if value.numel() == 1:
                self.log(f"{prefix}/{key}", value, prog_bar=key in ("iou", "dice", "miou"))
        metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_index: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_index: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Any], batch_index: int) -> dict[str, Any]:
        """Probabilities ``(C, H, W)`` of each image at its ``original_size`` (the evaluation transform's
        padding cropped and its resize undone, on probabilities as the benchmarks score them)."""
        probabilities = self.probabilities(self(batch["image"]))
        val_size = getattr(self.trainer.datamodule, "val_size", None)
        restored = [
            restore_original_size(item, tuple(size.tolist()), val_size)
            for item, size in zip(probabilities, batch["original_size"], strict=True)
        ]
        return {"name": batch["name"], "probabilities": restored}

    def probabilities(self, logits: Tensor) -> Tensor:
        """Sigmoid for one output channel, softmax over classes otherwise."""
        return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)

    @property
    def monitor(self) -> str:
        """The validation score the best checkpoint is chosen by."""
        return "val/miou" if self.hparams.num_classes > 1 else "val/iou"

"""``SegmentationModule``: a registry model, a configurable loss, IoU/Dice metrics, optimisers with
discriminative rates and an encoder freeze, and per-step cyclic schedules.

The hyperparameters hold the registry name and its kwargs, so a checkpoint rebuilds its model alone
(``SegmentationModule.load_from_checkpoint(path)``, or the plain model with
:func:`ternaus_zoo.inference.model_from_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ternaus_zoo.data.datamodule import check_class_names
from ternaus_zoo.data.transforms import restore_original_size, valid_size
from ternaus_zoo.errors import BadValueError
from ternaus_zoo.losses import build_loss
from ternaus_zoo.metrics import SegmentationMetrics, class_labels
from ternaus_zoo.training.base import ZooModule


def class_table(names: Sequence[str], iou: Tensor, dice: Tensor) -> str:
    """The per-class scores as a plain-text table: class, IoU, Dice (``-`` for a class absent from both the
    predictions and the targets)."""

    def cell(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.4f}"

    width = max(len("class"), *(len(name) for name in names))
    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}", f"{'-' * width}  {'-' * 7}  {'-' * 7}"]
    for name, iou_value, dice_value in zip(names, iou.tolist(), dice.tolist(), strict=True):
        lines.append(f"{name:<{width}}  {cell(iou_value):>7}  {cell(dice_value):>7}")
    return "\n".join(lines)


class SegmentationModule(ZooModule):
    """Trains a registry segmentation model.

    Args:
        model: registry name (``"unet11"``, ``"smp.Unet"`` ...).
        model_kwargs: the family's options (``{"encoder_name": "resnet34"}``).
        num_classes: 1 for binary masks, C for class-index masks or C multi-label channels.
        in_channels: input channels.
        weights: ``None``, ``"imagenet"`` or a checkpoint path, applied when fitting starts (so that
            rebuilding from a checkpoint never downloads).
        loss: a loss name or a ``{name: weight}`` mapping for :func:`ternaus_zoo.losses.build_loss`.
        threshold: probability threshold of the binary metrics and predictions.
        ignore_index: class index (or mask value) left out of the loss and metrics.
        channels_last: keep weights and inputs in channels-last memory format (1.2x faster training
            on CPU: ``benchmarks/results/speed_options.md``).
        multilabel: ``(B, C, H, W)`` masks of ``C`` classes that may overlap: a sigmoid per channel, each
            binary loss term per channel (:class:`~ternaus_zoo.losses.PerChannelLoss`), per-class scores; adopted
            from a data module with ``mask_mode="multilabel"`` when a run starts (and saved in the checkpoint).
        class_names: one name per class; default: the data module's ``class_names``, adopted when a run
            starts (and then saved in the checkpoint, so ``model_from_checkpoint`` and a saved model folder
            carry them as ``model.info.class_names``).
        **optimization: ``optimizer``, ``lr``, ``encoder_lr_ratio``, ``weight_decay``, ``freeze_encoder_epochs``,
            ``scheduler``, ``scheduler_kwargs``, ``swa_lr``, ``swa_epoch_start``: see
            :class:`~ternaus_zoo.training.optimization.Optimization`.

    Logged: ``train/loss``; ``val/loss``, ``val/iou``, ``val/dice``, ``val/iou_per_image``,
    ``val/dice_per_image``; multi-class also ``val/miou`` and, per class, ``val/iou/<name>`` and
    ``val/dice/<name>`` (``class<k>`` without names; NaN for a class absent from both the predictions and the
    targets); the same under ``test/``, where a table of the per-class scores is printed after Lightning's.
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
        multilabel: bool = False,
        class_names: list[str] | None = None,
        **optimization: Any,
    ) -> None:
        class_names = check_class_names(class_names, num_classes, "model.class_names")
        if not 0 <= threshold <= 1:  # checked here, not first when the metrics are computed
            raise BadValueError(f"model.threshold is a probability in [0, 1], got {threshold}")
        super().__init__(model, model_kwargs, num_classes, in_channels, weights, **optimization)
        self._set_class_names(class_names)
        self._class_table: str | None = None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self._set_task(multilabel)

    def _set_task(self, multilabel: bool) -> None:
        """The loss and metrics of binary / class masks, or of multi-label ones."""
        hparams = self.hparams
        self.hparams["multilabel"] = multilabel
        self.loss = build_loss(hparams.loss, ignore_index=hparams.ignore_index, per_channel=multilabel)
        metric_options = {
            "num_classes": hparams.num_classes,
            "threshold": hparams.threshold,
            "ignore_index": hparams.ignore_index,
            "multilabel": multilabel,
        }
        self.val_metrics = SegmentationMetrics(**metric_options)
        self.test_metrics = SegmentationMetrics(**metric_options)

    @property
    def class_names(self) -> list[str] | None:
        """The names of the classes, if any were given (here or by the data module)."""
        return self.hparams.get("class_names")

    def _set_class_names(self, names: list[str] | None) -> None:
        self.hparams["class_names"] = names
        if names:
            self.model.info = dataclasses.replace(self.model.info, class_names=tuple(names))

    def setup(self, stage: str) -> None:
        """Adopt the data module's ``class_names`` (refusing names that differ from the module's own) and
        multi-label masks (refusing other masks for a multi-label model)."""
        super().setup(stage)
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        mask_mode = getattr(datamodule, "mask_mode", None)
        if mask_mode == "multilabel" and not self.hparams.multilabel:
            self._set_task(True)
        elif mask_mode is not None and mask_mode != "multilabel" and self.hparams.multilabel and stage != "predict":
            # (a prediction reads no masks: a multi-label checkpoint predicts a folder with the default mask_mode)
            raise BadValueError(f"a multi-label model needs data.mask_mode=multilabel, got {mask_mode!r}")
        names = getattr(datamodule, "class_names", None)
        if not names or names == self.class_names:
            return
        if self.class_names is not None:
            raise BadValueError(
                f"data.class_names {list(names)} differ from the model's class_names {self.class_names} "
                "(saved in its checkpoint): give the same names, or leave data.class_names unset"
            )
        self._set_class_names(check_class_names(names, self.hparams.num_classes, "data.class_names"))

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
        # score only each image's own pixels: the evaluation transform pads to a square (val_size) or to the
        # model's size multiple, and padding counted as background would bias IoU and the best checkpoint
        val_size = getattr(self.trainer.datamodule, "val_size", None)
        for item_logits, item_target, size in zip(logits, target, batch["original_size"], strict=True):
            height, width = valid_size(tuple(size.tolist()), val_size)
            metrics.update(item_logits[None, :, :height, :width], item_target[None, ..., :height, :width])

    def _log_metrics(self, metrics: SegmentationMetrics, prefix: str) -> dict[str, Tensor]:
        """Log the scalar scores and, multi-class, ``<prefix>/iou/<name>`` and ``<prefix>/dice/<name>``;
        returns the scores."""
        scores = metrics.compute()
        for key, value in scores.items():
            if value.numel() == 1:
                self.log(f"{prefix}/{key}", value, prog_bar=key in ("iou", "dice", "miou"))
        if "iou_per_class" in scores:
            names = class_labels(metrics.num_classes, self.class_names)
            for score in ("iou", "dice"):
                for name, value in zip(names, scores[f"{score}_per_class"], strict=True):
                    self.log(f"{prefix}/{score}/{name}", value)
        metrics.reset()
        return scores

    def validation_step(self, batch: dict[str, Tensor], batch_index: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_index: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        scores = self._log_metrics(self.test_metrics, "test")
        self._class_table = None
        if "iou_per_class" in scores:
            names = class_labels(self.test_metrics.num_classes, self.class_names)
            self._class_table = class_table(names, scores["iou_per_class"], scores["dice_per_class"])

    def teardown(self, stage: str) -> None:
        """After ``test``: print the per-class table (here, so that it follows Lightning's own results)."""
        table, self._class_table = self._class_table, None
        trainer = self._trainer
        if stage == "test" and table and trainer is not None and trainer.is_global_zero and trainer.test_loop.verbose:
            print(f"Per-class test scores\n{table}")

    def predict_step(self, batch: dict[str, Any], batch_index: int) -> dict[str, Any]:
        """Probabilities ``(C, H, W)`` of each image at its ``original_size``, on probabilities as the benchmarks
        score them. Each image is predicted without the evaluation transform's padding (the model pads it to its
        size multiple itself), as ``ternaus-zoo predict`` predicts it, so out-of-fold predictions are what the
        saved models give."""
        val_size = getattr(self.trainer.datamodule, "val_size", None)
        restored = []
        for image, size in zip(batch["image"], batch["original_size"], strict=True):
            original = tuple(size.tolist())
            height, width = valid_size(original, val_size)
            probabilities = self.probabilities(self(image[None, :, :height, :width]))[0]
            restored.append(restore_original_size(probabilities, original, val_size))
        return {"name": batch["name"], "probabilities": restored}

    def probabilities(self, logits: Tensor) -> Tensor:
        """Sigmoid for one output channel, softmax over classes otherwise."""
        return logits.sigmoid() if logits.shape[1] == 1 or self.hparams.multilabel else logits.softmax(dim=1)

    @property
    def monitor(self) -> str:
        """The validation score the best checkpoint is chosen by."""
        return "val/miou" if self.hparams.num_classes > 1 or self.hparams.multilabel else "val/iou"

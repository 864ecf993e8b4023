"""``ClassificationModule``: a registry classifier, multi-label (sigmoid) or multi-class (softmax) losses, an
optional auxiliary segmentation loss, MixUp/CutMix, macro F1/F2/recall and per-class thresholds tuned on the
validation fold and kept in the checkpoint.

Loss of a training step::

    loss = classification_loss(logits, labels) + aux_weight * masked_bce(aux_maps, aux_targets)

where the auxiliary term is present when the model returns ``(logits, aux_maps)`` in training mode (see
:class:`ternaus_zoo.models.aux_resnet.AuxResNet`) and ``aux_weight > 0``. Its targets are full-resolution maps
(:mod:`ternaus_zoo.data.aux_targets`) built from the batch (``aux_target``), mixed with the images by
MixUp/CutMix, then pooled to the head's resolution; cells without a known target (void pixels, samples
without masks) are left out.

The hyperparameters hold the registry name and its kwargs and the ``thresholds`` buffer holds the tuned
thresholds (also written as ``checkpoint["thresholds"]``), so ``ClassificationModule.load_from_checkpoint(path)``
rebuilds the model and predicts with the tuned thresholds without any config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ternaus_zoo.data.aux_targets import PoolMode, downsample_targets, labels_to_targets
from ternaus_zoo.losses import LOSSES, build_loss
from ternaus_zoo.metrics.classification import MultilabelMetrics
from ternaus_zoo.registry import ModelInfo, create_model
from ternaus_zoo.training.base import OPTIMIZERS, ZooModule
from ternaus_zoo.training.mixing import BatchMixer

ClassificationTask = Literal["multilabel", "multiclass"]
AuxTarget = Literal["mask", "labels", "channel"]
METRIC_NAMES = ("f1_macro", "f2_macro", "recall_macro")


def masked_bce_with_logits(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Mean binary cross-entropy on logits over the ``valid`` entries (0, with a gradient path, if none).

    Shapes: ``logits``, ``targets`` (soft, in ``[0, 1]``) and ``valid`` (bool) of one shape, e.g. ``(B, C, h, w)``.
    """
    values = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class ClassificationModule(ZooModule):
    """Trains a registry classifier (``aux_resnet34``, ``gapnet_resnet34``, ``gapnet_pl`` ...).

    Args:
        model: registry name.
        model_kwargs: the family's options (``{"aux_stage": "layer2"}``, ``{"dropout": 0.5}``).
        num_classes: labels (multi-label) or classes (multi-class).
        in_channels: input channels.
        weights: ``None``, ``"imagenet"`` or a checkpoint path, applied when fitting starts.
        task: ``"multilabel"``: one sigmoid per label, loss from :func:`ternaus_zoo.losses.build_loss` (a
            multi-label loss: ``weighted_bce``, ``multilabel_focal``, or a weighted mapping of them), predictions
            by per-class thresholds; ``"multiclass"``: softmax cross-entropy (with ``label_smoothing``), predictions
            by argmax. Labels are ``(B, C)`` 0/1 (one-hot or soft for multi-class), or ``(B,)`` class indices
            for multi-class.
        loss: multi-label loss config (default ``"weighted_bce"``); must be ``None`` for multi-class.
        class_weights: ``C`` per-class weights: of the cross-entropy (multi-class), or passed to a multi-label
            loss given by name (``class_weights`` of ``weighted_bce`` / ``multilabel_focal``).
        label_smoothing: multi-class cross-entropy's label smoothing.
        aux_weight: ``lambda`` of the auxiliary loss (0: off; the aux maps are then ignored).
        aux_target: where the auxiliary targets come from: ``"mask"``: the batch's ``aux_mask`` ``(B, C, H, W)``
            (from segmentation masks, :class:`ternaus_zoo.data.multilabel.MaskLabelDataset`); ``"labels"``: the
            image labels broadcast over the image; ``"channel"``: HPA style, ``labels[c] * (channel > t)`` with
            channel ``aux_channel`` of the image, un-normalised to [0, 1], and ``t = aux_threshold``.
        aux_pool: ``"area"`` (soft targets: the fraction of each cell) or ``"max"``; see
            :func:`ternaus_zoo.data.aux_targets.downsample_targets`.
        aux_channel / aux_threshold: of ``aux_target="channel"`` (1 = green, the protein stain of HPA images).
        mixup_alpha / cutmix_alpha: MixUp / CutMix Beta parameters (0: off), see
            :class:`ternaus_zoo.training.mixing.BatchMixer`.
        mix_prob: probability that a training batch is mixed.
        optimizer, lr, encoder_lr_ratio, weight_decay, freeze_encoder_epochs, scheduler, scheduler_kwargs,
            swa_lr, swa_epoch_start: as in :class:`ternaus_zoo.training.SegmentationModule` (the head trains at
            ``lr``, the encoder at ``lr * encoder_lr_ratio``).
        threshold: initial threshold of every label (multi-label).
        tune_thresholds: at the end of each validation epoch, tune one threshold per label on the validation
            predictions (maximising F-beta), store them in the ``thresholds`` buffer and log
            ``val/f1_macro_tuned`` (the best checkpoint is chosen by it); ``False`` keeps ``threshold``.
        threshold_beta: the beta of the tuned F-beta (1: F1, 2: F2).
        label_names: names of the labels, written by the prediction writer (default: the data's).

    Logged: ``train/loss``, ``train/cls_loss``, ``train/aux_loss``; ``val/loss``, ``val/f1_macro``,
    ``val/f2_macro``, ``val/recall_macro`` (threshold ``threshold``; multi-class: argmax, plus ``val/accuracy``),
    and with tuning ``val/{f1,f2,recall}_macro_tuned``; the same under ``test/`` at the stored thresholds.
    """

    def __init__(
        self,
        model: str = "aux_resnet34",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 1,
        in_channels: int = 3,
        weights: str | None = None,
        task: ClassificationTask = "multilabel",
        loss: str | dict[str, Any] | None = None,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        aux_weight: float = 0.0,
        aux_target: AuxTarget = "mask",
        aux_pool: PoolMode = "area",
        aux_channel: int = 1,
        aux_threshold: float = 0.5,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 1e-3,
        encoder_lr_ratio: float = 1.0,
        weight_decay: float = 0.0,
        freeze_encoder_epochs: int = 0,
        scheduler: str = "constant",
        scheduler_kwargs: dict[str, Any] | None = None,
        threshold: float = 0.5,
        tune_thresholds: bool = True,
        threshold_beta: float = 1.0,
        label_names: list[str] | None = None,
        swa_lr: float | None = None,
        swa_epoch_start: float = 0.8,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
        if aux_target not in ("mask", "labels", "channel"):
            raise ValueError(f"aux_target must be 'mask', 'labels' or 'channel', got {aux_target!r}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for num_classes={num_classes}: {label_names}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class_weights for num_classes={num_classes}")
        self.save_hyperparameters()
        self.model = create_model(model, num_classes=num_classes, in_channels=in_channels, **(model_kwargs or {}))
        self.loss = self._build_loss(task, loss, class_weights)
        weight = None if class_weights is None or task != "multiclass" else torch.tensor(class_weights).float()
        self.register_buffer("ce_weight", weight, persistent=False)
        self.register_buffer("thresholds", torch.full((num_classes,), float(threshold)))
        self.mixer = BatchMixer(mixup_alpha, cutmix_alpha, prob=mix_prob)
        self.val_metrics = MultilabelMetrics(num_classes, threshold, from_logits=False, compute_with_cache=False)
        self.test_metrics = MultilabelMetrics(num_classes, threshold, from_logits=False, compute_with_cache=False)
        self._weights_applied = weights is None

    @staticmethod
    def _build_loss(task: str, loss: Any, class_weights: Sequence[float] | None) -> torch.nn.Module | None:
        if task == "multiclass":
            if loss is not None:
                raise ValueError("task='multiclass' uses softmax cross-entropy: leave loss unset (None)")
            return None
        loss = "weighted_bce" if loss is None else loss
        if class_weights is not None:
            if not isinstance(loss, str):
                raise ValueError("class_weights goes with a loss given by name; put it in the loss mapping instead")
            loss = {loss: {"class_weights": list(class_weights)}}
        module = build_loss(loss)
        parts = module.losses.values() if hasattr(module, "losses") else [module]
        wrong = [type(part).__name__ for part in parts if getattr(part, "task", "multilabel") != "multilabel"]
        if wrong:
            names = sorted(name for name, cls in LOSSES.items() if getattr(cls, "task", None) == "multilabel")
            raise ValueError(f"task='multilabel' needs multi-label losses ({names}); got {wrong}")
        return module

    @property
    def info(self) -> ModelInfo:
        """The model's :class:`~ternaus_zoo.registry.ModelInfo`."""
        return self.model.info

    @property
    def multilabel(self) -> bool:
        return self.hparams.task == "multilabel"

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``(B, C_in, H, W)`` normalised images to logits ``(B, C)`` (in training mode an aux model also
        returns its maps ``(B, C, h, w)``)."""
        return self.model(images)

    # -- targets and losses ------------------------------------------------------------------------

    def _labels(self, labels: Tensor) -> Tensor:
        """Labels as float ``(B, C)`` (multi-class indices ``(B,)`` become one-hot)."""
        if labels.dim() == 1:
            if self.multilabel:
                raise ValueError(f"multi-label labels must be (B, C), got {tuple(labels.shape)}")
            return F.one_hot(labels.long(), self.hparams.num_classes).float()
        if labels.dim() != 2 or labels.shape[1] != self.hparams.num_classes:
            raise ValueError(f"labels must be (B, {self.hparams.num_classes}), got {tuple(labels.shape)}")
        return labels.float()

    def classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Multi-label: the configured loss on logits ``(B, C)`` and (soft) labels ``(B, C)``; multi-class:
        cross-entropy with probability targets ``(B, C)`` and label smoothing."""
        if self.multilabel:
            return self.loss(logits, labels)
        return F.cross_entropy(
            logits.float(), labels, weight=self.ce_weight, label_smoothing=self.hparams.label_smoothing
        )

    def aux_targets(self, batch: dict[str, Any], labels: Tensor) -> Tensor:
        """Full-resolution auxiliary targets ``(B, C, H, W)`` (negative where unknown) of ``aux_target``."""
        images = batch["image"]
        kind = self.hparams.aux_target
        if kind == "mask":
            if "aux_mask" not in batch:
                raise KeyError(
                    "aux_target='mask' needs 'aux_mask' in the batch (labels from masks); without masks use "
                    "aux_target='labels' or 'channel', or aux_weight=0"
                )
            return batch["aux_mask"].float()
        if kind == "labels":
            return labels_to_targets(labels, size=tuple(images.shape[-2:]))
        channel = self.hparams.aux_channel
        info = self.model.info
        raw = images[:, channel] * info.std[channel] + info.mean[channel]
        return labels_to_targets(labels, channel=raw, threshold=self.hparams.aux_threshold)

    def auxiliary_loss(self, aux_maps: Tensor, targets: Tensor) -> Tensor:
        """Masked BCE of ``aux_maps`` ``(B, C, h, w)`` against ``targets`` ``(B, C, H, W)`` pooled to ``(h, w)``
        by the head's stride (``model.aux_stride``, else ``ceil(H / h)``)."""
        stride = getattr(self.model, "aux_stride", None) or math.ceil(targets.shape[-2] / aux_maps.shape[-2])
        soft, valid = downsample_targets(targets, stride, self.hparams.aux_pool)
        if soft.shape != aux_maps.shape:
            raise ValueError(
                f"auxiliary targets {tuple(targets.shape)} pooled by stride {stride} give {tuple(soft.shape)}, "
                f"but the auxiliary maps are {tuple(aux_maps.shape)}"
            )
        return masked_bce_with_logits(aux_maps, soft, valid)

    def training_step(self, batch: dict[str, Any], batch_index: int) -> Tensor:
        labels = self._labels(batch["labels"])
        use_aux = self.hparams.aux_weight > 0
        aux = self.aux_targets(batch, labels) if use_aux else None
        mixed = self.mixer(batch["image"], labels, aux)
        output = self(mixed.images)
        logits, aux_maps = output if isinstance(output, tuple) else (output, None)
        cls_loss = self.classification_loss(logits, mixed.labels)
        loss = cls_loss
        size = len(logits)
        if use_aux:
            if aux_maps is None:
                raise ValueError(
                    f"aux_weight={self.hparams.aux_weight} but model {self.hparams.model!r} returns no auxiliary "
                    "maps in training mode; use an aux model (aux_resnet34) or aux_weight=0"
                )
            aux_loss = self.auxiliary_loss(aux_maps, mixed.aux)
            loss = cls_loss + self.hparams.aux_weight * aux_loss
            self.log("train/aux_loss", aux_loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/cls_loss", cls_loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        return loss

    # -- evaluation --------------------------------------------------------------------------------

    def probabilities(self, logits: Tensor) -> Tensor:
        """``(B, C)`` float32 probabilities: sigmoid (multi-label) or softmax (multi-class); bfloat16 logits
        are upcast first, so validation (where thresholds are tuned) and prediction see the same values."""
        logits = logits.float()
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=1)

    def predict_labels(self, probabilities: Tensor) -> Tensor:
        """``(B, C)`` int64 0/1: ``probabilities >= thresholds`` (multi-label) or the argmax one-hot."""
        if self.multilabel:
            return (probabilities >= self.thresholds.to(probabilities)).long()
        return F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1])

    def _logits(self, images: Tensor) -> Tensor:
        output = self(images)
        return output[0] if isinstance(output, tuple) else output

    def _evaluate(self, batch: dict[str, Any], metrics: MultilabelMetrics, prefix: str) -> None:
        logits = self._logits(batch["image"])
        labels = self._labels(batch["labels"])
        size = len(logits)
        self.log(f"{prefix}/loss", self.classification_loss(logits, labels), on_epoch=True, batch_size=size)
        probabilities = self.probabilities(logits)
        if self.multilabel:
            metrics.update(probabilities, labels)
        else:
            predicted = self.predict_labels(probabilities)
            metrics.update(predicted.float(), labels.round())
            accuracy = (predicted.argmax(1) == labels.argmax(1)).float().mean()
            self.log(f"{prefix}/accuracy", accuracy, on_epoch=True, batch_size=size)

    def _log_scores(self, scores: dict[str, Tensor], prefix: str, suffix: str = "") -> None:
        for key, value in scores.items():
            self.log(f"{prefix}/{key}{suffix}", value, prog_bar=key == "f1_macro")

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics
        if not metrics.probs:  # nothing seen (e.g. limit_val_batches=0)
            return
        self._log_scores(metrics.compute(), "val")
        if self.multilabel and self.hparams.tune_thresholds:
            thresholds, _ = metrics.tuned_thresholds(beta=self.hparams.threshold_beta)
            default = metrics.threshold
            metrics.threshold = thresholds.to(default)
            self._log_scores(metrics.compute(), "val", "_tuned")
            metrics.threshold = default
            if not self.trainer.sanity_checking:
                self.thresholds.copy_(thresholds.to(self.thresholds))
        metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_index: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        metrics = self.test_metrics
        if not metrics.probs:
            return
        self._log_scores(metrics.compute(), "test")
        if self.multilabel:
            default = metrics.threshold
            metrics.threshold = self.thresholds.to(default)
            self._log_scores(metrics.compute(), "test", "_tuned")
            metrics.threshold = default
        metrics.reset()

    def predict_step(self, batch: dict[str, Any], batch_index: int) -> dict[str, Any]:
        """``{"name": [...], "probabilities": (B, C) float, "labels": (B, C) int64 0/1}``, with the stored
        (tuned) thresholds for multi-label models."""
        probabilities = self.probabilities(self._logits(batch["image"]))
        return {
            "name": list(batch["name"]),
            "probabilities": probabilities.cpu(),
            "labels": self.predict_labels(probabilities).cpu(),
        }

    # -- checkpoints -------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also write the thresholds as a plain list, readable without building the module."""
        checkpoint["thresholds"] = self.thresholds.tolist()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the thresholds from ``checkpoint["thresholds"]`` when the state dict lacks the buffer."""
        state = checkpoint.get("state_dict", {})
        if "thresholds" not in state and "thresholds" in checkpoint:
            state["thresholds"] = torch.tensor(checkpoint["thresholds"], dtype=torch.float32)

    @property
    def monitor(self) -> str:
        """The validation score the best checkpoint is chosen by."""
        tuned = self.multilabel and self.hparams.tune_thresholds
        return "val/f1_macro_tuned" if tuned else "val/f1_macro"

"""``ClassificationModule``: a registry classifier, multi-label (sigmoid) or multi-class (softmax) losses, an
optional auxiliary segmentation loss, MixUp/CutMix, macro F1/F2/recall and per-class thresholds tuned on the
validation fold and kept in the checkpoint.

Loss of a training step::

    loss = classification_loss(logits, labels) + aux_weight * masked_bce(aux_maps, aux_targets)

where the auxiliary term (:mod:`ternaus_zoo.training.auxiliary`) is present when the model returns
``(logits, aux_maps)`` in training mode and ``aux_weight > 0``. What differs between multi-label and
multi-class training is one strategy object (:mod:`ternaus_zoo.training.label_tasks`), chosen by ``task``.

The hyperparameters hold the registry name and its kwargs and the ``thresholds`` buffer holds the tuned
thresholds (also written as ``checkpoint["thresholds"]``), so ``ClassificationModule.load_from_checkpoint(path)``
rebuilds the model and predicts with the tuned thresholds without any config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ternaus_zoo.data.aux_targets import PoolMode
from ternaus_zoo.metrics.classification import MultilabelMetrics
from ternaus_zoo.training.auxiliary import AuxiliaryTerm, AuxTarget, masked_bce_with_logits
from ternaus_zoo.training.base import ZooModule
from ternaus_zoo.training.label_tasks import ClassificationTask, label_task
from ternaus_zoo.training.mixing import BatchMixer

__all__ = ["METRIC_NAMES", "AuxTarget", "ClassificationModule", "ClassificationTask", "masked_bce_with_logits"]

METRIC_NAMES = ("f1_macro", "f2_macro", "recall_macro")


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
            (from segmentation masks, :class:`ternaus_zoo.data.label_datasets.MaskLabelDataset`); ``"labels"``:
            the image labels broadcast over the image; ``"channel"``: HPA style, ``labels[c] * (channel > t)``
            with channel ``aux_channel`` of the image, un-normalised to [0, 1], and ``t = aux_threshold``.
        aux_pool: ``"area"`` (soft targets: the fraction of each cell) or ``"max"``; see
            :func:`ternaus_zoo.data.aux_targets.downsample_targets`.
        aux_channel / aux_threshold: of ``aux_target="channel"`` (1 = green, the protein stain of HPA images).
        mixup_alpha / cutmix_alpha: MixUp / CutMix Beta parameters (0: off), see
            :class:`ternaus_zoo.training.mixing.BatchMixer`.
        mix_prob: probability that a training batch is mixed.
        threshold: initial threshold of every label (multi-label).
        tune_thresholds: at the end of each validation epoch, tune one threshold per label on the validation
            predictions (maximising F-beta), store them in the ``thresholds`` buffer and log
            ``val/f1_macro_tuned`` (the best checkpoint is chosen by it); ``False`` keeps ``threshold``.
        threshold_beta: the beta of the tuned F-beta (1: F1, 2: F2).
        label_names: names of the labels, written by the prediction writer (default: the data's).
        **optimization: ``optimizer``, ``lr``, ``encoder_lr_ratio``, ``weight_decay``, ``freeze_encoder_epochs``,
            ``scheduler``, ``scheduler_kwargs``, ``swa_lr``, ``swa_epoch_start``: see
            :class:`~ternaus_zoo.training.optimization.Optimization` (the head trains at ``lr``, the encoder at
            ``lr * encoder_lr_ratio``).

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
        threshold: float = 0.5,
        tune_thresholds: bool = True,
        threshold_beta: float = 1.0,
        label_names: list[str] | None = None,
        **optimization: Any,
    ) -> None:
        labelling = label_task(task, num_classes)
        auxiliary = AuxiliaryTerm(aux_weight, aux_target, aux_pool, aux_channel, aux_threshold)
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for num_classes={num_classes}: {label_names}")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class_weights for num_classes={num_classes}")
        loss_module = labelling.build_loss(loss, class_weights, label_smoothing)
        super().__init__(model, model_kwargs, num_classes, in_channels, weights, **optimization)
        self.labelling, self.auxiliary, self.loss = labelling, auxiliary, loss_module
        self.register_buffer("thresholds", torch.full((num_classes,), float(threshold)))
        self.mixer = BatchMixer(mixup_alpha, cutmix_alpha, prob=mix_prob)
        self.val_metrics = MultilabelMetrics(num_classes, threshold, from_logits=False, compute_with_cache=False)
        self.test_metrics = MultilabelMetrics(num_classes, threshold, from_logits=False, compute_with_cache=False)

    @property
    def multilabel(self) -> bool:
        return self.labelling.thresholded

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``(B, C_in, H, W)`` normalised images to logits ``(B, C)`` (in training mode an aux model also
        returns its maps ``(B, C, h, w)``)."""
        return self.model(images)

    # -- targets and losses ------------------------------------------------------------------------

    def classification_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The task's loss of logits ``(B, C)`` and float labels ``(B, C)`` (soft after mixing)."""
        return self.loss(logits, labels)

    def aux_targets(self, batch: dict[str, Any], labels: Tensor) -> Tensor:
        """Full-resolution auxiliary targets ``(B, C, H, W)`` (negative where unknown) of ``aux_target``."""
        return self.auxiliary.targets(batch, labels, self.model.info)

    def auxiliary_loss(self, aux_maps: Tensor, targets: Tensor) -> Tensor:
        """Masked BCE of ``aux_maps`` ``(B, C, h, w)`` against ``targets`` ``(B, C, H, W)`` pooled to ``(h, w)``
        by the head's stride (``model.aux_stride``, else ``ceil(H / h)``)."""
        return self.auxiliary.loss(aux_maps, targets, getattr(self.model, "aux_stride", None))

    def training_step(self, batch: dict[str, Any], batch_index: int) -> Tensor:
        labels = self.labelling.targets(batch["labels"])
        use_aux = self.auxiliary.enabled
        mixed = self.mixer(batch["image"], labels, self.aux_targets(batch, labels) if use_aux else None)
        output = self(mixed.images)
        logits, aux_maps = output if isinstance(output, tuple) else (output, None)
        cls_loss = self.classification_loss(logits, mixed.labels)
        loss = cls_loss
        size = len(logits)
        if use_aux:
            if aux_maps is None:
                raise ValueError(
                    f"aux_weight={self.auxiliary.weight} but model {self.hparams.model!r} returns no auxiliary "
                    "maps in training mode; use an aux model (aux_resnet34) or aux_weight=0"
                )
            aux_loss = self.auxiliary_loss(aux_maps, mixed.aux)
            loss = cls_loss + self.auxiliary.weight * aux_loss
            self.log("train/aux_loss", aux_loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/cls_loss", cls_loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        return loss

    # -- evaluation --------------------------------------------------------------------------------

    def probabilities(self, logits: Tensor) -> Tensor:
        """``(B, C)`` float32 probabilities: sigmoid (multi-label) or softmax (multi-class)."""
        return self.labelling.probabilities(logits)

    def predict_labels(self, probabilities: Tensor) -> Tensor:
        """``(B, C)`` int64 0/1: ``probabilities >= thresholds`` (multi-label) or the argmax one-hot."""
        return self.labelling.predict(probabilities, self.thresholds)

    def _logits(self, images: Tensor) -> Tensor:
        output = self(images)
        return output[0] if isinstance(output, tuple) else output

    def _evaluate(self, batch: dict[str, Any], metrics: MultilabelMetrics, prefix: str) -> None:
        logits = self._logits(batch["image"])
        labels = self.labelling.targets(batch["labels"])
        size = len(logits)
        self.log(f"{prefix}/loss", self.classification_loss(logits, labels), on_epoch=True, batch_size=size)
        for name, value in self.labelling.update(metrics, self.probabilities(logits), labels).items():
            self.log(f"{prefix}/{name}", value, on_epoch=True, batch_size=size)

    def _log_scores(self, metrics: MultilabelMetrics, prefix: str, thresholds: Tensor | None = None) -> None:
        """Log the scores of ``metrics`` at its threshold or, as ``<score>_tuned``, at ``thresholds``."""
        default = metrics.threshold
        metrics.threshold = default if thresholds is None else thresholds.to(default)
        suffix = "" if thresholds is None else "_tuned"
        for key, value in metrics.compute().items():
            self.log(f"{prefix}/{key}{suffix}", value, prog_bar=key == "f1_macro")
        metrics.threshold = default

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics
        if not metrics.probs:  # nothing seen (e.g. limit_val_batches=0)
            return
        self._log_scores(metrics, "val")
        if self.labelling.thresholded and self.hparams.tune_thresholds:
            thresholds, _ = metrics.tuned_thresholds(beta=self.hparams.threshold_beta)
            self._log_scores(metrics, "val", thresholds)
            if not self.trainer.sanity_checking:
                self.thresholds.copy_(thresholds.to(self.thresholds))
        metrics.reset()

    def test_step(self, batch: dict[str, Any], batch_index: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        metrics = self.test_metrics
        if not metrics.probs:
            return
        self._log_scores(metrics, "test")
        if self.labelling.thresholded:
            self._log_scores(metrics, "test", self.thresholds)
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
        tuned = self.labelling.thresholded and self.hparams.tune_thresholds
        return "val/f1_macro_tuned" if tuned else "val/f1_macro"

"""The auxiliary segmentation term of a classifier whose model also returns maps in training mode (see
:class:`ternaus_zoo.models.aux_resnet.AuxResNet`)::

    aux_loss = masked_bce(aux_maps, pool(aux_targets))

Its targets are full-resolution maps (:mod:`ternaus_zoo.data.aux_targets`) built from the batch, mixed with the
images by MixUp/CutMix, then pooled to the head's resolution; cells without a known target (void pixels,
samples without masks) are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from ternaus_zoo.data.aux_targets import PoolMode, downsample_targets, labels_to_targets
from ternaus_zoo.registry import ModelInfo

AuxTarget = Literal["mask", "labels", "channel"]


def masked_bce_with_logits(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Mean binary cross-entropy on logits over the ``valid`` entries (0, with a gradient path, if none).

    Shapes: ``logits``, ``targets`` (soft, in ``[0, 1]``) and ``valid`` (bool) of one shape, e.g. ``(B, C, h, w)``.
    """
    values = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    weights = valid.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


@dataclass(frozen=True)
class AuxiliaryTerm:
    """The auxiliary loss's weight, targets and pooling (the ``aux_*`` options of ``ClassificationModule``).

    Args:
        weight: ``lambda`` of the term (0: off).
        target: ``"mask"``: the batch's ``aux_mask`` ``(B, C, H, W)``; ``"labels"``: the image labels broadcast
            over the image; ``"channel"``: HPA style, ``labels[c] * (channel > threshold)`` on image channel
            ``channel`` un-normalised to [0, 1].
        pool: ``"area"`` (soft targets: the fraction of each cell) or ``"max"``.
        channel / threshold: of ``target="channel"``.
    """

    weight: float = 0.0
    target: AuxTarget = "mask"
    pool: PoolMode = "area"
    channel: int = 1
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.target not in ("mask", "labels", "channel"):
            raise ValueError(f"aux_target must be 'mask', 'labels' or 'channel', got {self.target!r}")
        if self.weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.weight}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def targets(self, batch: dict[str, Any], labels: Tensor, info: ModelInfo) -> Tensor:
        """Full-resolution targets ``(B, C, H, W)`` (negative where unknown); ``info`` un-normalises channels."""
        images = batch["image"]
        if self.target == "mask":
            if "aux_mask" not in batch:
                raise KeyError(
                    "aux_target='mask' needs 'aux_mask' in the batch (labels from masks); without masks use "
                    "aux_target='labels' or 'channel', or aux_weight=0"
                )
            return batch["aux_mask"].float()
        if self.target == "labels":
            return labels_to_targets(labels, size=tuple(images.shape[-2:]))
        raw = images[:, self.channel] * info.std[self.channel] + info.mean[self.channel]
        return labels_to_targets(labels, channel=raw, threshold=self.threshold)

    def loss(self, aux_maps: Tensor, targets: Tensor, stride: int | None = None) -> Tensor:
        """Masked BCE of ``aux_maps`` ``(B, C, h, w)`` against ``targets`` ``(B, C, H, W)`` pooled to ``(h, w)``
        by ``stride`` (default ``ceil(H / h)``)."""
        stride = stride or math.ceil(targets.shape[-2] / aux_maps.shape[-2])
        soft, valid = downsample_targets(targets, stride, self.pool)
        if soft.shape != aux_maps.shape:
            raise ValueError(
                f"auxiliary targets {tuple(targets.shape)} pooled by stride {stride} give {tuple(soft.shape)}, "
                f"but the auxiliary maps are {tuple(aux_maps.shape)}"
            )
        return masked_bce_with_logits(aux_maps, soft, valid)

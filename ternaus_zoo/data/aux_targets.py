"""Targets of an auxiliary segmentation head (see :class:`ternaus_zoo.models.aux_resnet.AuxResNet`).

An auxiliary head predicts one map per class at a stride ``s`` of the input (8 for ``layer2``). Its targets
are built in two steps:

1. **Full-resolution soft targets** ``(C, H, W)`` (or ``(B, C, H, W)``), float in ``[0, 1]``, with
   :data:`IGNORE` (``-1``) where no target is known. They are built on the image as it enters the model,
   so they follow its augmentations, and MixUp/CutMix (:mod:`ternaus_zoo.training.mixing`) mix them
   together with the images:

   * :func:`class_mask_to_targets`: from a class-index segmentation mask (one channel per class, 1 where
     the pixel belongs to it; void pixels are :data:`IGNORE` in every channel);
   * :func:`labels_to_targets`: Human Protein Atlas style, from image-level labels, optionally times a
     thresholded image channel (``labels[c] * (channel > t)``: "class ``c`` is where the protein stain is");
     without a channel the labels are broadcast over the image (every position supervised with the
     image's labels, the deep-supervision variant).

   A sample without any auxiliary target is all :data:`IGNORE`, so it can share a batch with the others and
   is left out of the auxiliary loss.

2. **Downsampling** to the head's resolution, ``(ceil(H / s), ceil(W / s))``, by :func:`downsample_targets`:
   the image is cut into ``s x s`` cells from its top-left corner (as a stride-``s`` encoder sees it; the
   last row and column of cells may be partial) and each cell gets

   * ``mode="area"`` (default): the mean of its known pixels, a soft target in ``[0, 1]`` (the fraction of
     the cell covered by the class). BCE against soft targets is smallest at the cell's coverage, so thin
     structures (poles, signs) keep a small but non-zero target instead of vanishing or filling the cell;
   * ``mode="max"``: the maximum of its known pixels (1 when any known pixel of the cell is of the class),
     which favours recall of small objects.

   A cell with no known pixel is marked invalid and left out of the loss.

Helpers for image-level labels: :func:`labels_from_mask` (a class is present when it covers at least
``min_fraction`` of the non-void pixels).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1.0
"""Value of a full-resolution target where no target is known (void pixels, samples without masks)."""

PoolMode = Literal["area", "max"]


def class_mask_to_targets(mask: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """One-hot soft targets of a class-index mask, :data:`IGNORE` at void pixels.

    Args:
        mask: ``(H, W)`` or ``(B, H, W)`` integer class indices in ``[0, num_classes)``, or ``ignore_index``.
        num_classes: ``C``.
        ignore_index: mask value of unlabelled pixels (CamVid: 11), or ``None``.

    Returns:
        ``(C, H, W)`` or ``(B, C, H, W)`` ``float32``: 1 where the pixel is of class ``c``, 0 elsewhere,
        :data:`IGNORE` in every channel at void pixels.

    Raises:
        ValueError: a value outside ``[0, num_classes)`` that is not ``ignore_index``.
    """
    if mask.dim() not in (2, 3):
        raise ValueError(f"a class mask must be (H, W) or (B, H, W), got {tuple(mask.shape)}")
    if mask.is_floating_point():
        raise ValueError(f"a class mask must hold integer indices, got {mask.dtype}")
    mask = mask.long()
    void = mask == ignore_index if ignore_index is not None else torch.zeros_like(mask, dtype=torch.bool)
    known = mask[~void]
    if known.numel() and (known.min() < 0 or known.max() >= num_classes):
        bad = torch.unique(known[(known < 0) | (known >= num_classes)]).tolist()
        raise ValueError(f"mask values {bad} are outside 0..{num_classes - 1} (ignore_index={ignore_index})")
    one_hot = F.one_hot(mask.masked_fill(void, 0), num_classes).movedim(-1, -3).float()
    return one_hot.masked_fill(void.unsqueeze(-3), IGNORE)


def labels_to_targets(
    labels: Tensor,
    size: tuple[int, int] | None = None,
    channel: Tensor | None = None,
    threshold: float = 0.0,
) -> Tensor:
    """Human Protein Atlas style targets: ``labels[c] * (channel > threshold)``, or the labels broadcast.

    Args:
        labels: ``(C,)`` or ``(B, C)`` image-level labels in ``[0, 1]`` (0/1, or soft).
        size: ``(H, W)`` of the output when ``channel`` is ``None``.
        channel: ``(H, W)`` or ``(B, H, W)`` image channel (e.g. the green protein stain, in the units of
            ``threshold``), or ``None`` to broadcast the labels over the whole image.
        threshold: pixels with ``channel > threshold`` carry the labels; the others are 0 for every class.

    Returns:
        ``(C, H, W)`` or ``(B, C, H, W)`` ``float32`` in ``[0, 1]`` (a broadcast view when ``channel`` is
        ``None``: clone it before writing into it).
    """
    if labels.dim() not in (1, 2):
        raise ValueError(f"labels must be (C,) or (B, C), got {tuple(labels.shape)}")
    labels = labels.float()
    if channel is None:
        if size is None:
            raise ValueError("labels_to_targets needs a size (H, W) or a channel")
        return labels[..., None, None].expand(*labels.shape, *size)
    if channel.dim() != labels.dim() + 1 or channel.shape[:-2] != labels.shape[:-1]:
        raise ValueError(f"channel {tuple(channel.shape)} does not match labels {tuple(labels.shape)}")
    if size is not None and tuple(channel.shape[-2:]) != tuple(size):
        raise ValueError(f"channel size {tuple(channel.shape[-2:])} differs from size {tuple(size)}")
    return labels[..., None, None] * (channel > threshold).unsqueeze(-3).float()


def aux_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """``(ceil(H / stride), ceil(W / stride))``: the size of an auxiliary map at ``stride``."""
    return math.ceil(height / stride), math.ceil(width / stride)


def downsample_targets(targets: Tensor, stride: int, mode: PoolMode = "area") -> tuple[Tensor, Tensor]:
    """Full-resolution targets to the auxiliary resolution, cell by ``stride x stride`` cell.

    Args:
        targets: ``(B, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]``, negative (:data:`IGNORE`) where unknown.
        stride: the head's stride ``s``; cells start at the top-left corner, the last ones may be partial.
        mode: ``"area"`` (mean of the cell's known pixels: soft targets) or ``"max"`` (their maximum).

    Returns:
        ``(soft, valid)``: ``soft`` ``float32`` ``(B, C, ceil(H / s), ceil(W / s))`` (without ``B`` for a
        ``(C, H, W)`` input) in ``[0, 1]``, 0 in invalid cells; ``valid`` ``bool`` of the same shape, True
        where the cell has at least one known pixel.
    """
    if mode not in ("area", "max"):
        raise ValueError(f"mode must be 'area' or 'max', got {mode!r}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if targets.dim() == 3:
        soft, valid = downsample_targets(targets[None], stride, mode)
        return soft[0], valid[0]
    if targets.dim() != 4:
        raise ValueError(f"targets must be (B, C, H, W) or (C, H, W), got {tuple(targets.shape)}")
    targets = targets.float()
    height, width = targets.shape[-2:]
    out_h, out_w = aux_size(height, width, stride)
    pad = (0, out_w * stride - width, 0, out_h * stride - height)
    targets = F.pad(targets, pad, value=IGNORE)  # partial cells: the padding is unknown, not background
    known = targets >= 0
    values = targets.clamp_min(0)
    if stride == 1:
        return values, known
    count = F.avg_pool2d(known.float(), stride) * stride**2
    valid = count > 0.5
    if mode == "area":
        total = F.avg_pool2d(values, stride) * stride**2
        soft = total / count.clamp_min(1.0)
    else:
        soft = F.max_pool2d(values.masked_fill(~known, 0.0), stride)
    return soft.clamp(0.0, 1.0).masked_fill(~valid, 0.0), valid


def labels_from_mask(
    mask: Tensor, num_classes: int, ignore_index: int | None = None, min_fraction: float = 0.0
) -> Tensor:
    """Image-level labels of a class-index mask: class ``c`` is present when its pixels are more than 0 and
    at least ``min_fraction`` of the non-void pixels.

    Args:
        mask: ``(H, W)`` integer class indices (or ``ignore_index``).
        num_classes: ``C``.
        ignore_index: void value, excluded from the denominator.
        min_fraction: in ``[0, 1]``; 0 marks any class with at least one pixel.

    Returns:
        ``(C,)`` ``float32`` 0/1. An all-void mask gives all zeros.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
    if mask.is_floating_point():
        raise ValueError(f"a class mask must hold integer indices, got {mask.dtype}")
    values = mask.long().flatten()
    if ignore_index is not None:
        values = values[values != ignore_index]
    if values.numel() and (values.min() < 0 or values.max() >= num_classes):
        bad = torch.unique(values[(values < 0) | (values >= num_classes)]).tolist()
        raise ValueError(f"mask values {bad} are outside 0..{num_classes - 1} (ignore_index={ignore_index})")
    counts = torch.bincount(values, minlength=num_classes).double()
    return ((counts > 0) & (counts >= min_fraction * values.numel() - 1e-9)).float()

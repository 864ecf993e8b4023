"""Segmentation metrics (IoU / Jaccard, Dice) from confusion statistics.

The design follows ``segmentation_models_pytorch.metrics.functional``: :func:`confusion_stats` computes, once, the
true/false positive/negative pixel counts of every image and every class, ``tp, fp, fn, tn``, each of shape
``(B, C)``; every score is then a function of these counts and a *reduction*:

``"none"``
    ``(B, C)``: the score of each image for each class. An image where a class is absent from both the prediction
    and the target (``tp + fp + fn == 0``) scores ``1.0`` for that class: nothing to find and nothing found.
``"per_image"``
    scalar: the mean of ``"none"`` over images and classes (smp's ``"macro-imagewise"`` with ``zero_division=1``).
``"micro"``
    scalar: the counts summed over all images *and* classes, then one ratio (smp's and torchmetrics' ``"micro"``).
    For binary segmentation this is the data-set IoU / Dice of the foreground; for multi-class segmentation it mixes
    the classes (it is driven by pixel accuracy) -- use :func:`mean_iou` for the usual semantic-segmentation mIoU.
    ``1.0`` if the whole set has ``tp + fp + fn == 0``.
``"per_class"``
    ``(C,)``: the counts summed over images, one ratio per class. ``NaN`` for a class absent from both the
    predictions and the targets of the whole set (its score is undefined, and :func:`mean_iou` skips it).

Binary targets are already binarised to 0/1 (this project's masks are foreground where ``mask > 127``; binarise
before calling). Predictions are positive where ``probability >= threshold``, as in smp (torchmetrics uses ``>``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["Mode", "Reduction", "binary_summary", "confusion_stats", "dice_score", "iou_score", "mean_iou"]

Mode = Literal["binary", "multiclass"]
Reduction = Literal["micro", "per_image", "per_class", "none"]

_REDUCTIONS = ("micro", "per_image", "per_class", "none")


def confusion_stats(
    output: Tensor,
    target: Tensor,
    *,
    mode: Mode,
    num_classes: int | None = None,
    threshold: float = 0.5,
    from_logits: bool = True,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """True/false positive/negative pixel counts per image and per class.

    Args:
        output: the model's prediction.

            * ``"binary"``: ``(B, 1, H, W)`` or ``(B, H, W)``. Floating point: logits (``from_logits=True``) or
              probabilities, positive where ``probability >= threshold``. Integer or bool: hard 0/1 predictions
              (``threshold`` and ``from_logits`` are then unused).
            * ``"multiclass"``: ``(B, C, H, W)`` floating point logits or probabilities (the predicted class is the
              argmax over ``C``; ``threshold`` and ``from_logits`` are unused), or ``(B, H, W)`` integer class
              indices in ``[0, num_classes)``.
        target: the ground truth.

            * ``"binary"``: the same shape as ``output`` (or without / with the singleton channel), values 0/1,
              or ``ignore_index``.
            * ``"multiclass"``: ``(B, H, W)`` integer class indices in ``[0, num_classes)``, or ``ignore_index``.
        mode: ``"binary"`` or ``"multiclass"``.
        num_classes: number of classes in multi-class mode; taken from ``output.shape[1]`` when ``output`` holds
            scores. Unused in binary mode.
        threshold: probability threshold in binary mode.
        from_logits: whether a floating-point binary ``output`` holds logits (sigmoid applied here).
        ignore_index: target value whose pixels are excluded from every count (they are neither positive nor
            negative, for any class). In multi-class mode it must lie outside ``[0, num_classes)`` (e.g. 255 or -1):
            a class cannot be both scored and ignored.

    Returns:
        ``(tp, fp, fn, tn)``: ``torch.long`` tensors of shape ``(B, C)``; ``C == 1`` in binary mode.

    Raises:
        ValueError: on a bad mode, incompatible shapes, or target / prediction values out of range.
    """
    if mode == "binary":
        return _binary_stats(output, target, threshold=threshold, from_logits=from_logits, ignore_index=ignore_index)
    if mode == "multiclass":
        return _multiclass_stats(output, target, num_classes=num_classes, ignore_index=ignore_index)
    raise ValueError(f"mode must be 'binary' or 'multiclass', got {mode!r}")


def _binary_stats(
    output: Tensor, target: Tensor, *, threshold: float, from_logits: bool, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # By hand: smp's get_stats rejects ignore_index in binary mode, torchmetrics applies a sigmoid only when the
    # values look like logits; four masked sums are simpler than adapting either.
    if output.ndim == 4 and output.shape[1] != 1:
        raise ValueError(f"binary mode expects output (B, 1, H, W) or (B, H, W), got {tuple(output.shape)}")
    if output.shape != target.shape:
        if output.ndim == target.ndim + 1 and output.shape[1] == 1:
            output = output.squeeze(1)
        elif target.ndim == output.ndim + 1 and target.shape[1] == 1:
            target = target.squeeze(1)
        if output.shape != target.shape:
            raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} shapes differ")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")

    batch = output.shape[0]
    output = output.detach().reshape(batch, -1)
    target = target.detach().reshape(batch, -1)

    if output.is_floating_point():
        # float32 for half inputs: their sigmoid rounds logits near 0 to 0.5, and `>=` rounds the threshold.
        output = output.float() if output.dtype in (torch.float16, torch.bfloat16) else output
        probs = torch.sigmoid(output) if from_logits else output
        pred = probs >= threshold
    else:
        if ((output != 0) & (output != 1)).any():
            raise ValueError("integer binary predictions must be 0/1")
        pred = output.bool()

    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    positive = target == 1
    if (valid & ~positive & (target != 0)).any():
        raise ValueError(f"binary targets must be 0/1 (or ignore_index={ignore_index}); binarise masks first")
    positive &= valid
    negative = valid & ~positive

    tp = (pred & positive).sum(1)
    fp = (pred & negative).sum(1)
    fn = (~pred & positive).sum(1)
    tn = (~pred & negative).sum(1)
    return tp[:, None], fp[:, None], fn[:, None], tn[:, None]


def _multiclass_stats(
    output: Tensor, target: Tensor, *, num_classes: int | None, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # By hand: one bincount over (image, target, prediction) gives every per-image confusion matrix at once; smp loops
    # over images, and torchmetrics' per-image ("samplewise") path one-hot encodes (B, H*W, C) int64 tensors.
    output = output.detach()
    target = target.detach()
    if output.is_floating_point():
        if output.ndim != target.ndim + 1:
            raise ValueError(f"multiclass scores must be (B, C, H, W) for target (B, H, W), got {tuple(output.shape)}")
        if num_classes is None:
            num_classes = output.shape[1]
        elif num_classes != output.shape[1]:
            raise ValueError(f"num_classes={num_classes} but output has {output.shape[1]} channels")
        output = output.argmax(1)
    elif num_classes is None:
        raise ValueError("num_classes is required when multiclass output holds class indices")
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} shapes differ")
    if target.is_floating_point():
        raise ValueError(f"multiclass target must hold integer class indices, got {target.dtype}")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index={ignore_index} is a class index in [0, {num_classes}); use a value outside (e.g. 255)"
        )

    batch = output.shape[0]
    output = output.reshape(batch, -1).long()
    target = target.reshape(batch, -1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if ((target < 0) | (target >= num_classes))[valid].any():
        raise ValueError(f"target values must be in [0, {num_classes}) or ignore_index={ignore_index}")
    if ((output < 0) | (output >= num_classes)).any():
        raise ValueError(f"predicted class indices must be in [0, {num_classes})")

    n_bins = batch * num_classes * num_classes
    images = torch.arange(batch, device=target.device)[:, None]
    index = (images * num_classes + target) * num_classes + output
    index = torch.where(valid, index, n_bins)  # ignored pixels go to one extra bin, dropped below
    confusion = torch.bincount(index.flatten(), minlength=n_bins + 1)[:n_bins].view(batch, num_classes, num_classes)

    tp = confusion.diagonal(dim1=1, dim2=2)
    fp = confusion.sum(1) - tp  # predicted as the class, target another one
    fn = confusion.sum(2) - tp  # target the class, predicted as another one
    tn = valid.sum(1, keepdim=True) - tp - fp - fn
    return tp.contiguous(), fp, fn, tn


def _ratio(num: Tensor, den: Tensor, empty: float, dtype: torch.dtype) -> Tensor:
    # float32 by default, not float64, which Apple's MPS lacks; a count is exact in float32 up to 2**24 and the ratio
    # is off by float32 rounding only (tests/test_dtypes.py checks it against float64)
    num = num.to(dtype)
    den = den.to(dtype)
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(den, empty))


def _reduce(numerator, tp: Tensor, fp: Tensor, fn: Tensor, reduction: Reduction, dtype: torch.dtype) -> Tensor:
    # By hand: the ratio is one line, and smp's reductions have no per-class table with NaN for absent classes and
    # warn on empty/empty images, a normal case here.
    if tp.shape != fp.shape or tp.shape != fn.shape or tp.ndim != 2:
        raise ValueError(f"tp, fp, fn must share one (B, C) shape, got {tp.shape}, {fp.shape}, {fn.shape}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if reduction == "none":
        return _ratio(*numerator(tp, fp, fn), empty=1.0, dtype=dtype)
    if reduction == "per_image":
        return _ratio(*numerator(tp, fp, fn), empty=1.0, dtype=dtype).mean()
    if reduction == "micro":
        return _ratio(*numerator(tp.sum(), fp.sum(), fn.sum()), empty=1.0, dtype=dtype)
    if reduction == "per_class":
        return _ratio(*numerator(tp.sum(0), fp.sum(0), fn.sum(0)), empty=float("nan"), dtype=dtype)
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _iou_terms(tp: Tensor, fp: Tensor, fn: Tensor) -> tuple[Tensor, Tensor]:
    return tp, tp + fp + fn


def _dice_terms(tp: Tensor, fp: Tensor, fn: Tensor) -> tuple[Tensor, Tensor]:
    return 2 * tp, 2 * tp + fp + fn


def iou_score(
    tp: Tensor, fp: Tensor, fn: Tensor, reduction: Reduction = "micro", *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """IoU (Jaccard index) ``tp / (tp + fp + fn)``.

    Args:
        tp, fp, fn: ``(B, C)`` counts from :func:`confusion_stats`.
        reduction: ``"micro"`` (scalar), ``"per_image"`` (scalar), ``"per_class"`` (``(C,)``, NaN for absent classes)
            or ``"none"`` (``(B, C)``, 1.0 for empty/empty); see the module docstring.
        dtype: the floating-point dtype of the ratios; ``torch.float64`` where near-equal scores must stay apart
            (ranking thresholds or ensembles on millions of pixels), on devices that have it.

    Returns:
        A ``dtype`` tensor of the shape given by ``reduction``.
    """
    return _reduce(_iou_terms, tp, fp, fn, reduction, dtype)


def dice_score(
    tp: Tensor, fp: Tensor, fn: Tensor, reduction: Reduction = "micro", *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Dice coefficient (F1) ``2 tp / (2 tp + fp + fn)``; arguments and reductions as in :func:`iou_score`."""
    return _reduce(_dice_terms, tp, fp, fn, reduction, dtype)


def mean_iou(tp: Tensor, fp: Tensor, fn: Tensor, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Mean over classes of the per-class IoU over the whole set (the usual semantic-segmentation mIoU).

    A class absent from both the predictions and the targets of the whole set (``tp + fp + fn == 0`` summed over
    images) has no IoU and is excluded from the mean (as torchmetrics' ``multiclass_jaccard_index(average="macro")``
    does; smp's ``"macro"`` counts it as ``zero_division`` instead).

    Args:
        tp, fp, fn: ``(B, C)`` counts from :func:`confusion_stats`.
        dtype: as in :func:`iou_score`.

    Returns:
        A ``dtype`` scalar; NaN when every class is absent.
    """
    return iou_score(tp, fp, fn, reduction="per_class", dtype=dtype).nanmean()


def binary_summary(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor) -> dict[str, float]:
    """What ``../shared/BENCHMARKS.md`` reports of binary masks, from their ``(B, 1)`` counts: the foreground's Dice
    and IoU over the whole set (``"micro"``), the mean per-image Dice, the background's IoU and the mean IoU of both
    classes (where the foreground covers most pixels, as membrane's does)."""
    foreground, background = float(iou_score(tp, fp, fn)), float(iou_score(tn, fn, fp))
    return {
        "dice": float(dice_score(tp, fp, fn)),
        "iou": foreground,
        "dice_per_image": float(dice_score(tp, fp, fn, reduction="per_image")),
        "iou_background": background,
        "mean_iou": (foreground + background) / 2,
    }

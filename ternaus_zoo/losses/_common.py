"""Helpers shared by every loss family: input checks, flattening with the ignore mask, guarded means.

Every loss of the package goes through :func:`flatten_binary` or :func:`flatten_multiclass`, so shapes,
``ignore_index`` and the float32 upcast of half-precision logits are handled in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from ternaus_zoo.errors import BadValueError

LossTask = Literal["binary", "multiclass", "multilabel"]
"""What a loss expects: binary masks ``(B, 1, H, W)``, class maps ``(B, H, W)`` or multi-label ``(B, C)`` targets."""

_HALF = (torch.float16, torch.bfloat16)


def upcast(tensor: Tensor) -> Tensor:
    """float16/bfloat16 -> float32: sums over many pixels overflow or lose precision in half precision."""
    return tensor.float() if tensor.dtype in _HALF else tensor


def as_weight_tensor(values: float | Sequence[float] | Tensor | None, name: str) -> Tensor | None:
    """A float32 tensor from a number or a sequence (as read from YAML), or ``None``."""
    if values is None:
        return None
    tensor = torch.as_tensor(values, dtype=torch.float32)
    if not torch.isfinite(tensor).all() or (tensor < 0).any():
        raise BadValueError(f"{name} must be finite and non-negative, got {values}")
    return tensor


def check_class_weights(weights: Tensor | None, num_classes: int, name: str = "class_weights") -> None:
    """Raise a ``BadValueError`` (a ``ValueError``) unless ``weights`` is ``None`` or holds one value per class.

    Weights come from the user's YAML, and only the logits tell the class count: a wrong length is a user error,
    one line on the command line, even when first met inside a training step.
    """
    if weights is not None and weights.numel() != num_classes:
        raise BadValueError(f"{name} has {weights.numel()} values for {num_classes} classes: give one per class")


def frequency_weights(frequencies: Sequence[float], power: float = 0.5) -> list[float]:
    """Per-class loss weights ``f_c ** -power`` from class pixel frequencies ``f_c``, for ``class_weights``.

    ``power=0.5`` (inverse square root) lifts a class 10 000 times rarer than another by 100, ``power=1`` by
    10 000. Scaled so that the pixel-weighted mean ``sum_c f_c w_c / sum_c f_c`` is 1 (an average pixel keeps
    weight 1); a class of frequency 0 (absent from the training masks) gets the largest weight of the others.
    """
    values = torch.as_tensor(frequencies, dtype=torch.float64)
    present = values > 0
    if values.dim() != 1 or not present.any() or (values < 0).any() or not torch.isfinite(values).all():
        raise BadValueError(f"class frequencies must be finite, non-negative and not all 0, got {list(frequencies)}")
    weights = torch.zeros_like(values)
    weights[present] = values[present] ** -power
    weights = weights / ((values * weights).sum() / values.sum())
    weights[~present] = weights[present].max()
    return weights.tolist()


class BinaryBatch(NamedTuple):
    """Binary logits and targets flattened per image."""

    logits: Tensor  # (B, P), float32 (or float64)
    target: Tensor  # (B, P), same dtype as logits, 0 at ignored pixels
    valid: Tensor | None  # (B, P) bool, None when nothing is ignored


class MulticlassBatch(NamedTuple):
    """Multi-class logits and class indices flattened per image."""

    logits: Tensor  # (B, C, P), float32 (or float64)
    target: Tensor  # (B, P), int64, 0 at ignored pixels
    valid: Tensor | None  # (B, P) bool, None when nothing is ignored


def flatten_binary(logits: Tensor, target: Tensor, ignore_index: int | None = None) -> BinaryBatch:
    """Check and flatten binary segmentation inputs.

    Args:
        logits: ``(B, 1, H, W)`` or ``(B, H, W)`` (any ``(B, ...)`` works; a dimension 1 of size other
            than 1 is refused for 4-D and higher inputs).
        target: the same shape as ``logits`` (or without its channel dimension), float or int in {0, 1};
            pixels equal to ``ignore_index`` are masked out.
    """
    if logits.dim() < 2:
        raise ValueError(f"binary logits must be (B, 1, H, W) or (B, H, W), got shape {tuple(logits.shape)}")
    if logits.dim() >= 4 and logits.size(1) != 1:
        raise ValueError(
            f"binary logits must have one channel, got shape {tuple(logits.shape)}; "
            "use a multi-class loss for (B, C, H, W) logits"
        )
    squeezed = (logits.shape[0], *logits.shape[2:]) if logits.dim() >= 4 else None
    if target.shape != logits.shape and tuple(target.shape) != squeezed:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}")
    batch = logits.size(0)
    flat_logits = upcast(logits).reshape(batch, -1)
    flat_target = target.reshape(batch, -1)
    valid = None
    if ignore_index is not None:
        valid = flat_target != ignore_index
        flat_target = torch.where(valid, flat_target, torch.zeros_like(flat_target))
    return BinaryBatch(flat_logits, flat_target.to(flat_logits.dtype), valid)


def flatten_multiclass(logits: Tensor, target: Tensor, ignore_index: int | None = None) -> MulticlassBatch:
    """Check and flatten multi-class segmentation inputs.

    Args:
        logits: ``(B, C, H, W)`` (any ``(B, C, ...)`` works).
        target: ``(B, H, W)`` integer class indices in ``[0, C)``; pixels equal to ``ignore_index`` are masked out.
    """
    if logits.dim() < 3:
        raise ValueError(f"multi-class logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be (B, H, W) = {expected} for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"multi-class targets must be integer class indices, got {target.dtype}")
    batch, num_classes = logits.shape[:2]
    flat_logits = upcast(logits).reshape(batch, num_classes, -1)
    flat_target = target.reshape(batch, -1).long()
    valid = None
    if ignore_index is not None:
        valid = flat_target != ignore_index
        flat_target = torch.where(valid, flat_target, torch.zeros_like(flat_target))
    return MulticlassBatch(flat_logits, flat_target, valid)


def pixel_weights(
    valid: Tensor | None, dtype: torch.dtype, class_weights: Tensor | None = None, target: Tensor | None = None
) -> Tensor | None:
    """Per-pixel weights: the valid mask, times ``class_weights[target]`` when given; ``None`` if all are 1."""
    weights = None if class_weights is None else class_weights.to(dtype)[target]
    if valid is not None:
        mask = valid.to(dtype)
        weights = mask if weights is None else weights * mask
    return weights


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """``sum(w * v) / sum(w)``, or ``mean(v)``; 0 (still attached to the graph) when every weight is 0.

    ``torch``'s own mean reductions return NaN (0 / 0) when every pixel is ignored, hence this guard.
    """
    if weights is None:
        return values.mean()
    total = weights.sum()
    return (values * weights).sum() / torch.where(total > 0, total, torch.ones_like(total))

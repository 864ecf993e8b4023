"""Lovasz hinge (binary) and Lovasz-Softmax (multi-class) losses.

Reference: M. Berman, A. Rannen Triki, M. B. Blaschko, "The Lovasz-Softmax loss: A tractable surrogate
for the optimization of the intersection-over-union measure in neural networks", CVPR 2018.

Both losses evaluate the Lovasz extension of the Jaccard loss ``Delta_J(M) = |M| / |F u M|`` (``M`` the
mispredicted pixels, ``F`` the foreground) at a vector of pixel errors ``m``::

    loss(m) = sum_i m_(i) * (Delta_J({(1), ..., (i)}) - Delta_J({(1), ..., (i - 1)})),

with the errors sorted in decreasing order (Alg. 1 of the paper). Values and gradients are those of the
authors' code (github.com/bermanmaxim/LovaszSoftmax), written without its Python loops: the images
(``per_image=True``) and the classes go through one batched ``torch.sort``. Ignored pixels are kept in
the sort but add nothing to ``M`` or ``F``, so they get a zero gradient, exactly as if removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ternaus_zoo.losses._common import LossTask, flatten_binary, flatten_multiclass

ClassSelection = Literal["present", "all"] | Sequence[int]

_SORT_AS_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def lovasz_grad(fg_sorted: Tensor, valid_sorted: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Gradient of the Lovasz extension of ``Delta_J`` w.r.t. errors sorted in decreasing order (Alg. 1).

    Args:
        fg_sorted: ``(..., P)`` foreground indicator (bool or float 0/1) in the order of decreasing errors.
        valid_sorted: ``(..., P)`` bool, ``False`` for ignored pixels (in the same order), or ``None``.
        dtype: of the result; by default that of a float ``fg_sorted``, else torch's default dtype.

    Returns:
        ``(..., P)`` float: ``Delta_J(first i pixels) - Delta_J(first i - 1 pixels)`` along the last dimension.
        ``Delta_J`` of the first ``i`` pixels is ``(fg_i + bg_i) / (|F| + bg_i)`` with ``fg_i``, ``bg_i``
        the foreground and background pixels among them: the reference's ``1 - (|F| - fg_i) / (|F| + bg_i)``
        written without its cancellation. It is 0 for an empty set (``|F| + bg_i = 0`` forces ``fg_i = 0``).
    """
    if dtype is None:
        dtype = fg_sorted.dtype if fg_sorted.is_floating_point() else torch.get_default_dtype()
    fg_seen = fg_sorted.cumsum(-1, dtype=dtype)
    if valid_sorted is None:
        seen = torch.arange(1, fg_sorted.size(-1) + 1, dtype=dtype, device=fg_sorted.device)
    else:
        seen = valid_sorted.cumsum(-1, dtype=dtype)
    # |F u M_i| = |F| + bg_i = |F| + seen_i - fg_i; in place, as nothing here needs autograd.
    union = (seen - fg_seen).add_(fg_seen[..., -1:]).clamp_min_(1)
    jaccard = torch.div(seen, union, out=union)
    jaccard[..., 1:] -= jaccard[..., :-1].clone()
    return jaccard


def _sorted_lovasz(errors: Tensor, foreground: Tensor, valid: Tensor | None) -> Tensor:
    """``sum_i errors_(i) * lovasz_grad_i`` along the last dimension of ``(..., P)`` tensors of errors >= 0."""
    keys = errors.detach()
    if keys.dtype in _SORT_AS_INT:
        # Non-negative floats sort like their bit patterns read as integers, which torch sorts ~1.5x faster.
        keys = keys.view(_SORT_AS_INT[keys.dtype])
    order = torch.sort(keys, dim=-1, descending=True).indices
    errors_sorted = errors.gather(-1, order)
    valid_sorted = None if valid is None else valid.expand_as(errors).gather(-1, order)
    grad = lovasz_grad(foreground.expand_as(errors).gather(-1, order), valid_sorted, errors.dtype)
    # Not torch.linalg.vecdot: CPU autocast runs it in bfloat16/float16, whatever the float32 inputs.
    return (errors_sorted * grad).sum(-1)


def lovasz_hinge(logits: Tensor, target: Tensor, per_image: bool = True, ignore_index: int | None = None) -> Tensor:
    """Binary Lovasz hinge loss: the Lovasz extension of ``Delta_J`` at ``relu(1 - logits * (2 t - 1))``.

    Args:
        logits: ``(B, 1, H, W)`` or ``(B, H, W)``.
        target: the same shape, float or int in {0, 1} (or ``ignore_index``).
        per_image: average the loss of each image (the reference's default) instead of one loss over the
            batch. An image whose pixels are all ignored counts as 0 in the average, as in the reference.
        ignore_index: target value of pixels left out, or ``None``.

    An image without foreground has ``Delta_J = 1`` for any non-empty error set, so its loss is the largest
    hinge error, as in the reference code.
    """
    logits, target, valid = flatten_binary(logits, target, ignore_index)
    if not per_image:
        logits, target = logits.reshape(1, -1), target.reshape(1, -1)
        valid = None if valid is None else valid.reshape(1, -1)
    # relu commutes with the sort (it is monotone), so the reference's relu(sorted errors) is applied before it.
    errors = F.relu(1 - logits * (2 * target - 1))
    return _sorted_lovasz(errors, target, valid).mean()


def _normalize_classes(classes: ClassSelection) -> str | list[int]:
    if isinstance(classes, str):
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present', 'all' or a list of class indices, got {classes!r}")
        return classes
    ids = [int(c) for c in classes]
    if not ids or min(ids) < 0:
        raise ValueError(f"classes must be a non-empty list of non-negative class indices, got {classes}")
    return ids


def _class_ids(classes: str | list[int], num_classes: int, device: torch.device) -> Tensor:
    if isinstance(classes, str):
        return torch.arange(num_classes, device=device)
    if max(classes) >= num_classes:
        raise ValueError(f"classes {classes} out of range for {num_classes} classes")
    return torch.tensor(classes, device=device)


def lovasz_softmax(
    logits: Tensor,
    target: Tensor,
    classes: ClassSelection = "present",
    per_image: bool = False,
    ignore_index: int | None = None,
) -> Tensor:
    """Multi-class Lovasz-Softmax loss of ``softmax(logits)``, averaged over the selected classes.

    Args:
        logits: ``(B, C, H, W)`` with ``C >= 2``.
        target: ``(B, H, W)`` int64 in ``[0, C)`` or ``ignore_index``.
        classes: ``"present"`` (classes present in the target, of the batch or of the image with
            ``per_image``; the reference's default), ``"all"`` or a list of class indices.
        per_image: average the loss of each image instead of one loss over the batch (default ``False``,
            as in the reference). An image whose pixels are all ignored counts as 0 in the average.
        ignore_index: target value of pixels left out, or ``None``.

    With ``classes="present"`` and no class present (every pixel ignored), the loss is 0, still attached
    to ``logits`` (a zero gradient).
    """
    batch = flatten_multiclass(logits, target, ignore_index)
    num_classes = batch.logits.size(1)
    if num_classes < 2:
        raise ValueError("lovasz_softmax needs C >= 2 classes; use lovasz_hinge for one-channel logits")
    classes = _normalize_classes(classes)
    class_ids = _class_ids(classes, num_classes, batch.logits.device)
    probs = torch.softmax(batch.logits, dim=1)
    if isinstance(classes, list):
        probs = probs.index_select(1, class_ids)
    foreground = batch.target.unsqueeze(1) == class_ids.view(1, -1, 1)
    valid = batch.valid
    if valid is not None:
        foreground &= valid.unsqueeze(1)
        valid = valid.unsqueeze(1)
    errors = (foreground.to(probs.dtype) - probs).abs()
    if not per_image:  # one row per class holding every pixel of the batch
        errors, foreground = (t.transpose(0, 1).reshape(1, len(class_ids), -1) for t in (errors, foreground))
        valid = None if valid is None else valid.reshape(1, 1, -1)
    losses = _sorted_lovasz(errors, foreground, valid)
    if classes == "present":
        present = foreground.any(-1).to(losses.dtype)
        per_row = (losses * present).sum(-1) / present.sum(-1).clamp_min(1)
    else:
        per_row = losses.mean(-1)
    return per_row.mean()


class LovaszHingeLoss(nn.Module):
    """Binary Lovasz hinge loss on logits (see :func:`lovasz_hinge`).

    Shapes: logits ``(B, 1, H, W)`` or ``(B, H, W)``; target the same shape, float or int in {0, 1}.

    Reference: Berman, Rannen Triki, Blaschko, "The Lovasz-Softmax loss", CVPR 2018.
    """

    task: ClassVar[LossTask] = "binary"

    def __init__(self, per_image: bool = True, ignore_index: int | None = None) -> None:
        super().__init__()
        self.per_image = per_image
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return lovasz_hinge(logits, target, per_image=self.per_image, ignore_index=self.ignore_index)


class LovaszSoftmaxLoss(nn.Module):
    """Multi-class Lovasz-Softmax loss on logits (see :func:`lovasz_softmax`).

    Shapes: logits ``(B, C, H, W)``; target ``(B, H, W)`` int64 in ``[0, C)`` or ``ignore_index``.

    Reference: Berman, Rannen Triki, Blaschko, "The Lovasz-Softmax loss", CVPR 2018.
    """

    task: ClassVar[LossTask] = "multiclass"

    def __init__(
        self, classes: ClassSelection = "present", per_image: bool = False, ignore_index: int | None = None
    ) -> None:
        super().__init__()
        self.classes = _normalize_classes(classes)
        self.per_image = per_image
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return lovasz_softmax(logits, target, self.classes, self.per_image, self.ignore_index)

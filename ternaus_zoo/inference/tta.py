"""Test-time augmentation: predict on flipped, rotated or rescaled copies and average.

``TTA(model, transforms="d4")`` wraps any zoo model (or :class:`~ternaus_zoo.inference.ensemble.Ensemble`)
as an ``nn.Module``. For every augmentation it transforms the input, runs the model, maps a
segmentation prediction back with the inverse transform (classification logits need no inverse),
optionally applies the activation, and averages.

What is averaged: with ``activation="sigmoid"`` or ``"softmax"`` the probabilities of the
augmentations are averaged and the result is a probability map; with ``activation=None`` the logits
are averaged and the result is logits. Averaging probabilities is the usual TTA; averaging logits
keeps the "logits out" contract for a wrapper that is fed into another wrapper (an ensemble of TTA
models that applies its own activation).

Written by hand rather than with ``ttach``: it is small, has no extra dependency and uses only
``torch.flip``/``transpose``/``interpolate``, so the wrapped model exports to TorchScript and ONNX
(``torch.rot90`` has no ONNX symbolic in the TorchScript-based exporter, hence rotations are written
as a transpose and a flip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["sigmoid", "softmax"] | None
TaskName = Literal["segmentation", "classification"]
TransformSet = Literal["identity", "hflip", "vflip", "flips", "d4", "scales"]
DEFAULT_SCALES = (0.75, 1.0, 1.25)


def rotate90(images: Tensor, k: int) -> Tensor:
    """``torch.rot90(images, k, dims=(-2, -1))`` from a transpose and a flip (exportable to ONNX).

    Args:
        images: ``(..., H, W)``.
        k: number of counter-clockwise quarter turns (any integer; taken modulo 4).

    Returns:
        ``(..., W, H)`` for odd ``k``, ``(..., H, W)`` otherwise.
    """
    k %= 4
    if k == 0:
        return images
    if k == 1:
        return images.flip(-1).transpose(-2, -1)
    if k == 2:
        return images.flip(-2).flip(-1)
    return images.transpose(-2, -1).flip(-1)


def apply_activation(logits: Tensor, activation: Activation) -> Tensor:
    """``sigmoid`` (binary / multi-label), ``softmax`` over dim 1 (multi-class) or the logits themselves."""
    if activation is None:
        return logits
    if activation == "sigmoid":
        return logits.sigmoid()
    if activation == "softmax":
        return logits.softmax(dim=1)
    raise ValueError(f"unknown activation {activation!r}; choose 'sigmoid', 'softmax' or None")


@dataclass(frozen=True)
class GeometricTransform:
    """One element of the dihedral group D4: an optional horizontal flip, then ``rotations`` quarter turns.

    ``apply`` maps images ``(B, C, H, W)``; ``invert`` maps a prediction of the transformed image
    back to the original frame (rotate back, then flip back).
    """

    hflip: bool = False
    rotations: int = 0
    vflip: bool = False

    @property
    def name(self) -> str:
        parts = [part for part, used in (("hflip", self.hflip), ("vflip", self.vflip)) if used]
        if self.rotations % 4:
            parts.append(f"rot{90 * (self.rotations % 4)}")
        return "+".join(parts) or "identity"

    def apply(self, images: Tensor) -> Tensor:
        if self.hflip:
            images = images.flip(-1)
        if self.vflip:
            images = images.flip(-2)
        return rotate90(images, self.rotations)

    def invert(self, masks: Tensor) -> Tensor:
        masks = rotate90(masks, -self.rotations)
        if self.vflip:
            masks = masks.flip(-2)
        if self.hflip:
            masks = masks.flip(-1)
        return masks


D4 = tuple(GeometricTransform(hflip=flip, rotations=k) for flip in (False, True) for k in range(4))
GEOMETRIC_SETS: dict[str, tuple[GeometricTransform, ...]] = {
    "identity": (GeometricTransform(),),
    "hflip": (GeometricTransform(), GeometricTransform(hflip=True)),
    "vflip": (GeometricTransform(), GeometricTransform(vflip=True)),
    "flips": (
        GeometricTransform(),
        GeometricTransform(hflip=True),
        GeometricTransform(vflip=True),
        GeometricTransform(hflip=True, vflip=True),
    ),
    "d4": D4,
    "scales": (GeometricTransform(),),
}


def _scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    # int(): under an ONNX trace the sizes are tensors; at the fixed export size they are constants anyway.
    return max(1, round(int(size[0]) * scale)), max(1, round(int(size[1]) * scale))


class TTA(nn.Module):
    """Average a model's predictions over flips, rotations and scales.

    Args:
        model: maps ``(B, C_in, H, W)`` to logits ``(B, K, H, W)`` (segmentation) or ``(B, K)``
            (classification). Segmentation models of the zoo accept any H and W (they pad to their
            ``size_multiple``), so rotations of non-square inputs and rescaled inputs work.
        transforms: ``"identity"``, ``"hflip"`` (2: identity and horizontal flip), ``"vflip"``,
            ``"flips"`` (4: none, h, v, both), ``"d4"`` (all 8 flips and quarter turns) or ``"scales"``
            (no geometric transform, ``scales`` default ``(0.75, 1, 1.25)``), or a sequence of
            :class:`GeometricTransform`.
        scales: input scale factors; every geometric transform is combined with every scale. For a
            scale ``s`` the input is resized bilinearly to ``round(s * H), round(s * W)`` and a
            segmentation prediction resized back to ``H, W``. Default ``(1.0,)``, or
            :data:`DEFAULT_SCALES` for ``transforms="scales"``.
        task: ``"segmentation"`` (predictions mapped back by the inverse transform) or
            ``"classification"`` (predictions averaged as they are).
        activation: ``"sigmoid"``/``"softmax"``: average probabilities and return probabilities;
            ``None``: average and return logits.

    Forward:
        ``(B, C_in, H, W)`` -> ``(B, K, H, W)`` or ``(B, K)``: the mean over the
        ``len(transforms) * len(scales)`` augmentations.
    """

    def __init__(
        self,
        model: nn.Module,
        transforms: TransformSet | Sequence[GeometricTransform] = "d4",
        scales: Sequence[float] | None = None,
        task: TaskName = "segmentation",
        activation: Activation = None,
    ) -> None:
        super().__init__()
        if task not in ("segmentation", "classification"):
            raise ValueError(f"unknown task {task!r}; choose 'segmentation' or 'classification'")
        if activation not in ("sigmoid", "softmax", None):
            raise ValueError(f"unknown activation {activation!r}; choose 'sigmoid', 'softmax' or None")
        if isinstance(transforms, str):
            if transforms not in GEOMETRIC_SETS:
                raise ValueError(f"unknown transforms {transforms!r}; choose one of {sorted(GEOMETRIC_SETS)}")
            if scales is None:
                scales = DEFAULT_SCALES if transforms == "scales" else (1.0,)
            transforms = GEOMETRIC_SETS[transforms]
        scales = tuple(float(scale) for scale in (scales or (1.0,)))
        if not transforms:
            raise ValueError("transforms is empty")
        if any(scale <= 0 for scale in scales):
            raise ValueError(f"scales must be positive, got {scales}")
        self.model = model
        self.transforms: tuple[GeometricTransform, ...] = tuple(transforms)
        self.scales = scales
        self.task = task
        self.activation = activation
        if getattr(model, "info", None) is not None:
            self.info = model.info  # tiling and export read the size multiple from here

    def __len__(self) -> int:
        return len(self.transforms) * len(self.scales)

    def predict_one(self, images: Tensor, transform: GeometricTransform, scale: float = 1.0) -> Tensor:
        """The prediction of one augmentation, mapped back to the input frame, activation applied."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        augmented = transform.apply(images)
        if scale != 1.0:
            augmented = F.interpolate(
                augmented, size=_scaled_size(augmented.shape[-2:], scale), mode="bilinear", align_corners=False
            )
        output = self.model(augmented)
        if self.task == "segmentation":
            if scale != 1.0:
                rotated = (size[1], size[0]) if transform.rotations % 2 else size
                output = F.interpolate(output, size=rotated, mode="bilinear", align_corners=False)
            output = transform.invert(output)
        return apply_activation(output, self.activation)

    def forward(self, images: Tensor) -> Tensor:
        total: Tensor | None = None
        for scale in self.scales:
            for transform in self.transforms:
                output = self.predict_one(images, transform, scale)
                total = output if total is None else total + output
        assert total is not None
        return total / len(self)

    def extra_repr(self) -> str:
        names = ", ".join(transform.name for transform in self.transforms)
        return f"transforms=[{names}], scales={self.scales}, task={self.task!r}, activation={self.activation!r}"

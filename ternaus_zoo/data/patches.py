"""Training on random patches at the working scale, a share of them centred on a class present in the mask.

:func:`patch_transforms` is the patch counterpart of :func:`~ternaus_zoo.data.transforms.train_transforms`: the
image is resized so that its longest side is the working scale (the evaluation's ``val_size``, or kept at native
resolution), with a mild scale jitter, and a ``patch_size x patch_size`` patch is cut from it (padded where the
image is smaller). Thin structures keep the width they have at evaluation, which a crop of 50-100 % of the
whole image resized to the training size does not.

Where foreground is rare, uniform patches mostly show background; :class:`PatchCrop` centres a share of the
patches on a pixel of a class drawn uniformly among the classes present in the mask, so a class covering 0.1 %
of the pixels is centred on as often as one covering 30 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.pytorch import ToTensorV2

from ternaus_zoo.data.transforms import channel_check, color_jitter, flips, normalization
from ternaus_zoo.registry import ModelInfo


class PatchCrop(BaseCrop):
    """A ``size x size`` crop (the whole side where the image is smaller), a share of them centred on a class.

    With probability ``foreground_share`` the crop is centred on a pixel of a class drawn uniformly among the
    classes present in the mask (moved inside the image at its borders), otherwise it is uniform. Classes: for a
    ``(H, W)`` mask (binary or class indices), every value not in ``ignore_values`` (the background 0 and a void
    ``ignore_index``); for a ``(H, W, K)`` multi-label mask, every channel with a non-zero pixel. Without a mask,
    or a mask without any such class, the crop is uniform.

    Not albumentations' crops: ``RandomCrop`` needs an image at least as large as the crop (or pads it before
    the crop, so before normalisation, where the padding cannot be the mean colour 0), and
    ``CropNonEmptyMaskIfExists`` draws the pixel among all foreground pixels, so a class is reached in
    proportion to its area (a rare class stays rare) and lands anywhere in the crop. Cropping before colour
    jitter and normalisation also costs a third of normalising a 512 px image and cutting 256 px from it.
    """

    def __init__(
        self, size: int, foreground_share: float = 0.0, ignore_values: Sequence[int] = (0,), p: float = 1.0
    ) -> None:
        super().__init__(p=p)
        if not 0 <= foreground_share <= 1:
            raise ValueError(f"foreground_share must be in [0, 1], got {foreground_share}")
        self.size, self.foreground_share, self.ignore_values = size, foreground_share, tuple(ignore_values)

    def _class_map(self, mask: np.ndarray) -> np.ndarray | None:
        """``(H, W)`` bool: the pixels of one class drawn among those present, or ``None`` when none is."""
        if mask.ndim == 3:
            present = np.flatnonzero(mask.reshape(-1, mask.shape[2]).any(axis=0)).tolist()
            return mask[..., self.py_random.choice(present)] > 0 if present else None
        present = [value for value in np.unique(mask).tolist() if value not in self.ignore_values]
        return mask == self.py_random.choice(present) if present else None

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rows, columns = min(self.size, height), min(self.size, width)
        pixels = None
        if data.get("mask") is not None and self.py_random.random() < self.foreground_share:
            pixels = self._class_map(data["mask"])
        if pixels is None:
            top, left = self.py_random.randint(0, height - rows), self.py_random.randint(0, width - columns)
        else:
            ys, xs = np.nonzero(pixels)
            pick = self.py_random.randrange(len(ys))
            top = min(max(int(ys[pick]) - rows // 2, 0), height - rows)
            left = min(max(int(xs[pick]) - columns // 2, 0), width - columns)
        return {"crop_coords": (left, top, left + columns, top + rows)}


def working_scale(size: int | None, scale: tuple[float, float]) -> list[A.BasicTransform]:
    """Resize to the working scale with a random factor in ``scale``: the longest side to ``size * factor``, or
    the native resolution times ``factor`` (``size=None``); no step at all for ``size=None, scale=(1, 1)``."""
    low, high = scale
    if not 0 < low <= high:
        raise ValueError(f"patch_scale must be 0 < low <= high, got {scale}")
    if size is not None:
        # one resize with a random target side (a list, drawn per image), not a resize and then a rescale:
        # every interpolation blurs thin structures
        sides = list(range(max(1, round(size * low)), round(size * high) + 1))
        return [A.LongestMaxSize(max_size=sides, area_for_downscale="image")]
    if (low, high) == (1.0, 1.0):
        return []
    return [A.RandomScale(scale_limit=(low - 1, high - 1), area_for_downscale="image", p=1.0)]


def patch_transforms(
    info: ModelInfo,
    patch_size: int,
    size: int | None = None,
    *,
    scale: tuple[float, float] = (0.85, 1.15),
    d4: bool = True,
    color: bool = True,
    mask_fill: int = 0,
    foreground_share: float = 0.0,
    ignore_values: Sequence[int] = (0,),
) -> A.Compose:
    """Training on random ``patch_size x patch_size`` patches of the image at the working scale.

    Args:
        info: the model's statistics and channel count.
        patch_size: side of the patches.
        size: the working scale: the longest side is resized to ``size`` (as ``val_transforms`` does at
            evaluation); ``None`` keeps the native resolution.
        scale: range of a random factor applied to that scale (``(1, 1)``: none).
        d4: all 8 flips and 90-degree rotations; ``False``: horizontal flips only.
        color: brightness/contrast jitter, and hue/saturation jitter for RGB images.
        mask_fill: the mask value where an image smaller than the patch is padded (0, or the ``ignore_index``
            of class masks); the image is padded with 0 after normalisation, the mean colour.
        foreground_share: the share of patches centred on a class present in the mask (:class:`PatchCrop`); the
            others are uniform random crops.
        ignore_values: mask values that are not a class to centre on (background 0, a void ``ignore_index``).

    Returns:
        An ``A.Compose`` mapping ``image=(H, W, C), mask=(H, W)`` (or ``(H, W, K)``) to ``image``
        ``(C, patch_size, patch_size)`` float32 and ``mask`` ``(patch_size, patch_size)`` (or ``(..., K)``).
    """
    steps = [
        *channel_check(info),
        *working_scale(size, scale),
        PatchCrop(patch_size, foreground_share, ignore_values),
        *(color_jitter(info) if color else []),
        *normalization(info),
        # after normalisation: the image is padded with 0, the mean colour, as in val_transforms
        A.PadIfNeeded(
            min_height=patch_size,
            min_width=patch_size,
            position="random",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=mask_fill,
        ),
        flips(d4),
        ToTensorV2(),
    ]
    return A.Compose(steps, strict=True)

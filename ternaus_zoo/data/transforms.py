"""albumentations 2.x pipelines built from a model's :class:`~ternaus_zoo.registry.ModelInfo`.

Every pipeline takes what :func:`ternaus_zoo.data.io.read_image` gives (``(H, W, C)`` ``uint8`` or
``float32`` in [0, 1]) and a mask ``(H, W)``, and returns ``image`` as a ``float32`` tensor
``(C, H', W')`` normalised with ``info.mean``/``info.std`` and ``mask`` as a tensor ``(H', W')`` of the
mask's dtype. Masks follow the geometric transforms with nearest-neighbour interpolation, so binary
masks stay in {0, 1} and class masks keep their class set.

The pipelines are built for ``info.in_channels`` channels and refuse images of another count (pass
``info.for_channels(n)`` for ``n``-channel images); hue/saturation jitter is applied only to RGB.

Validation geometry (:func:`val_transforms`) is deterministic and anchored at the top-left corner,
so :func:`valid_size` and :func:`restore_original_size` map a prediction back to the file's size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from albumentations.pytorch import ToTensorV2

from ternaus_zoo.registry import ModelInfo


def _check_channels(image: np.ndarray, expected: int, **_: Any) -> np.ndarray:
    channels = image.shape[2] if image.ndim == 3 else 1
    if channels != expected:
        raise ValueError(
            f"the transforms were built for {expected}-channel images but got {channels} channels; "
            f"build them with info.for_channels({channels}) (and the model with in_channels={channels}), "
            f"or convert the images with channels={expected}"
        )
    return image


def channel_check(info: ModelInfo) -> list[A.BasicTransform]:
    """The first step of every pipeline: refuse images of another channel count than ``info.in_channels``."""
    return [A.Lambda(image=functools.partial(_check_channels, expected=info.in_channels), name="check_channels")]


def normalization(info: ModelInfo) -> list[A.BasicTransform]:
    """``uint8`` or [0, 1] ``float32`` -> ``float32`` normalised with ``info.mean``/``info.std``."""
    # ToFloat divides by the dtype's maximum (255 for uint8, 1 for float32), so both kinds of
    # read_image output end up in [0, 1] before the [0, 1]-based statistics are applied.
    return [A.ToFloat(), A.Normalize(mean=info.mean, std=info.std, max_pixel_value=1.0)]


def color_jitter(info: ModelInfo) -> list[A.BasicTransform]:
    """Brightness/contrast jitter, and hue/saturation jitter for RGB images (before :func:`normalization`)."""
    steps: list[A.BasicTransform] = [A.RandomBrightnessContrast(p=0.5)]
    if info.in_channels == 3:
        steps.append(A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=0, p=0.5))
    return steps


def flips(d4: bool) -> A.BasicTransform:
    """All 8 flips and 90-degree rotations (``d4``), or horizontal flips only."""
    return A.D4() if d4 else A.HorizontalFlip()


def train_transforms(
    info: ModelInfo,
    size: int = 256,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    d4: bool = True,
    color: bool = True,
) -> A.Compose:
    """Training augmentations: random resized crop to ``size x size``, flips, colour jitter.

    Args:
        info: the model's statistics and channel count.
        size: output side; any input size works (small images are upscaled).
        scale: range of the crop's area as a fraction of the image's area.
        ratio: range of the crop's aspect ratio (width / height).
        d4: all 8 flips and 90-degree rotations (for top-down images: medical, aerial); ``False``
            keeps only horizontal flips (street scenes).
        color: brightness/contrast jitter, and hue/saturation jitter for RGB images.

    Returns:
        An ``A.Compose`` mapping ``image=(H, W, C), mask=(H, W)`` to ``image`` ``(C, size, size)``
        float32 and ``mask`` ``(size, size)``.
    """
    steps = [
        *channel_check(info),
        A.RandomResizedCrop(size=(size, size), scale=scale, ratio=ratio, area_for_downscale="image"),
        flips(d4),
        *(color_jitter(info) if color else []),
    ]
    return A.Compose([*steps, *normalization(info), ToTensorV2()], strict=True)


def padded_side(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ``>= size``."""
    return math.ceil(size / multiple) * multiple


def val_transforms(info: ModelInfo, size: int | None = None, *, mask_fill: int = 0) -> A.Compose:
    """Deterministic evaluation geometry: optional resize, normalisation, top-left padding.

    Args:
        info: the model's statistics, channel count and ``size_multiple``.
        size: if given, the longest side is resized to ``size`` and the image padded to a square of
            side ``padded_side(size, info.size_multiple)``, so a batch can hold images of any size. If
            ``None`` the image keeps its size and is padded to the next multiple of
            ``info.size_multiple`` (batches then need images of one size, or batch size 1).
        mask_fill: the mask value in the padding (0 = background; pass the ``ignore_index`` for class
            masks so that padding is ignored). The image is padded with 0 after normalisation, the
            mean colour.

    Returns:
        An ``A.Compose``; the valid region of its output is the top-left
        ``valid_size(original_size, size)``.
    """
    multiple = info.size_multiple
    steps: list[A.BasicTransform] = [*channel_check(info)]
    if size is not None:
        steps.append(A.LongestMaxSize(max_size=size, area_for_downscale="image"))
        side = padded_side(size, multiple)
        pad = {"min_height": side, "min_width": side}
    else:
        pad = {"min_height": None, "min_width": None, "pad_height_divisor": multiple, "pad_width_divisor": multiple}
    steps += [
        *normalization(info),
        A.PadIfNeeded(**pad, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=mask_fill),
        ToTensorV2(),
    ]
    return A.Compose(steps, strict=True)


def valid_size(original_size: tuple[int, int], size: int | None = None) -> tuple[int, int]:
    """``(h, w)`` of the image inside the output of ``val_transforms(info, size)`` (before padding).

    Mirrors ``A.LongestMaxSize`` of albumentations 2.0.x (``max(1, round(side * size / longest))``,
    Python's half-to-even ``round``); a test checks the two agree.
    """
    height, width = (int(side) for side in original_size)
    if size is None:
        return height, width
    factor = size / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def restore_original_size(
    tensor: torch.Tensor, original_size: tuple[int, int], size: int | None = None, mode: str = "bilinear"
) -> torch.Tensor:
    """Undo :func:`val_transforms` geometry on a prediction ``(..., C, H', W')``: crop, then resize.

    Returns ``(..., C, H, W)`` with ``(H, W) = original_size``; the crop keeps the top-left
    ``valid_size(original_size, size)`` and the resize (``mode``, e.g. ``"bilinear"`` for logits or
    probabilities, ``"nearest"`` for labels) restores the file's resolution.
    """
    height, width = valid_size(original_size, size)
    cropped = tensor[..., :height, :width]
    target = tuple(int(side) for side in original_size)
    if cropped.shape[-2:] == target:
        return cropped
    lead = cropped.shape[:-3]
    flat = cropped.reshape(-1, *cropped.shape[-3:])
    align = {} if mode == "nearest" else {"align_corners": False}
    resized = F.interpolate(flat.float(), size=target, mode=mode, **align)
    return resized.reshape(*lead, *resized.shape[-3:]).to(tensor.dtype)


_BUILDERS = {"train": train_transforms, "val": val_transforms}


def build_transforms(config: Mapping[str, Any], info: ModelInfo) -> A.Compose:
    """A pipeline from a YAML-style mapping, e.g. ``{"name": "train", "size": 256, "d4": False}``.

    ``name`` is ``"train"`` or ``"val"``; the other keys are the keyword arguments of
    :func:`train_transforms` / :func:`val_transforms` (lists become tuples).
    """
    options = dict(config)
    name = options.pop("name", None)
    if name not in _BUILDERS:
        raise ValueError(f"transforms config needs 'name' in {sorted(_BUILDERS)}, got {name!r} in {dict(config)}")
    options = {key: tuple(value) if isinstance(value, list) else value for key, value in options.items()}
    try:
        return _BUILDERS[name](info, **options)
    except TypeError as error:
        raise TypeError(f"bad option in the {name!r} transforms config {dict(config)}: {error}") from error

"""The base class of the zoo's segmentation models: checks the input, pads to the model's multiple,
runs the network and crops the logits back, so any height and width work."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Pad ``(B, C, H, W)`` symmetrically so H and W become multiples of ``multiple``.

    Reflection padding keeps image statistics at the border; it falls back to replication where the
    padding is not smaller than the image side (reflection cannot pad that far).

    Returns:
        The padded tensor and the ``(left, right, top, bottom)`` padding, for :func:`crop_padding`.
    """
    height, width = images.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return images, (0, 0, 0, 0)
    padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    mode = "reflect" if max(padding[:2]) < width and max(padding[2:]) < height else "replicate"
    return F.pad(images, padding, mode=mode), padding


def crop_padding(tensor: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on a ``(B, C, H', W')`` tensor of the padded size."""
    left, right, top, bottom = padding
    height, width = tensor.shape[-2:]
    return tensor[..., top : height - bottom, left : width - right]


def check_images(images: Tensor, in_channels: int, model_name: str) -> None:
    """Raise a clear error unless ``images`` is a float ``(B, in_channels, H, W)`` tensor."""
    if images.ndim != 4:
        raise ValueError(f"{model_name} expects a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    if images.shape[1] != in_channels:
        raise ValueError(
            f"{model_name} was built for {in_channels} input channels, got {images.shape[1]} "
            f"(shape {tuple(images.shape)}); pass in_channels={images.shape[1]} to create_model"
        )
    if not images.is_floating_point():
        raise TypeError(f"{model_name} expects floating-point images, got {images.dtype}; normalise them first")


class SavePretrainedMixin:
    """``model.save_pretrained(folder)``, as in smp, timm and transformers."""

    def save_pretrained(self, folder: str | os.PathLike, card: Mapping[str, Any] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card (see :mod:`ternaus_zoo.models.pretrained`)."""
        # imported here: pretrained.py rebuilds models through the factory, which imports every family (and this file)
        from ternaus_zoo.models.pretrained import save_pretrained

        return save_pretrained(self, folder, card)


class SegmentationModel(SavePretrainedMixin, nn.Module):
    """``(B, in_channels, H, W)`` images to ``(B, num_classes, H, W)`` logits, for any H and W.

    Subclasses set ``size_multiple`` and implement :meth:`forward_padded` for inputs whose sides are
    multiples of it.
    """

    size_multiple: int = 32

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes

    def forward_padded(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        check_images(images, self.in_channels, type(self).__name__)
        padded, padding = pad_to_multiple(images, self.size_multiple)
        return crop_padding(self.forward_padded(padded), padding)

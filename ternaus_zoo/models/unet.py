"""A plain U-Net (Ronneberger et al., MICCAI 2015) with batch norm and no pretrained encoder: the
baseline of the ablations."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ternaus_zoo.models.base import SegmentationModel
from ternaus_zoo.models.blocks import ConvBnRelu
from ternaus_zoo.registry import ModelInfo, register_model


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBnRelu(in_channels, out_channels), ConvBnRelu(out_channels, out_channels))


class UNet(SegmentationModel):
    """Encoder of ``depth`` double-convolution stages (widths ``num_filters * 2**i``) joined by max
    pooling, and a mirrored decoder with transposed convolutions and concatenated skips.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: width of the first stage (32).
        depth: number of resolutions (5: inputs padded to multiples of 16).
    """

    def __init__(self, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, depth: int = 5) -> None:
        super().__init__(in_channels, num_classes)
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.size_multiple = 2 ** (depth - 1)
        widths = [num_filters * 2**level for level in range(depth)]
        self.encoder_channels = tuple(widths)
        self.encoder = nn.ModuleList(
            DoubleConv(in_channels if level == 0 else widths[level - 1], widths[level]) for level in range(depth)
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], kernel_size=2, stride=2) for level in range(depth - 1)
        )
        self.decoder = nn.ModuleList(DoubleConv(2 * widths[level], widths[level]) for level in range(depth - 1))
        self.final = nn.Conv2d(num_filters, num_classes, kernel_size=1)

    def forward_padded(self, images: Tensor) -> Tensor:
        skips = []
        x = images
        for level, stage in enumerate(self.encoder):
            x = stage(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(len(self.decoder))):
            x = self.decoder[level](torch.cat([self.upsamples[level](x), skips[level]], 1))
        return self.final(x)


@register_model(
    ModelInfo(
        name="unet",
        task="segmentation",
        description="Plain U-Net with batch norm, trained from scratch (the ablation baseline)",
        size_multiple=16,
        pretrained=(),
    )
)
def unet(*, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, depth: int = 5) -> UNet:
    """A plain U-Net (Ronneberger et al., MICCAI 2015, arXiv:1505.04597) with batch norm, from scratch.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: width of the first stage (32).
        depth: number of resolutions (5: inputs padded to multiples of 16).
    """
    return UNet(num_classes, in_channels, num_filters=num_filters, depth=depth)

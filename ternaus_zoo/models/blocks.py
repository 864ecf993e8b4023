"""Building blocks shared by several model families."""

from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


class ConvRelu(nn.Module):
    """3x3 convolution + ReLU (TernausNet's ``ConvRelu``; its parameters live under ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.conv(x))


class ConvBnRelu(nn.Sequential):
    """3x3 convolution (no bias) + batch norm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """TernausNet (UNet11) decoder step, doubling the resolution: ConvRelu, then
    ConvTranspose2d(k=3, s=2, p=1, output_padding=1) + ReLU. Parameters under ``block``.

    ``batch_norm=True`` puts batch norm after both convolutions (``ConvBnRelu``; not in the paper).
    """

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int, batch_norm: bool = False) -> None:
        super().__init__()
        upsample = nn.ConvTranspose2d(
            middle_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1, bias=not batch_norm
        )
        if batch_norm:
            layers = [ConvBnRelu(in_channels, middle_channels), upsample, nn.BatchNorm2d(out_channels)]
        else:
            layers = [ConvRelu(in_channels, middle_channels), upsample]
        self.block = nn.Sequential(*layers, nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DecoderBlockV2(nn.Module):
    """UNet16 / AlbuNet decoder step, doubling the resolution.

    ``is_deconv=True``: ConvRelu, then ConvTranspose2d(k=4, s=2, p=1) + ReLU (a kernel divisible by
    the stride avoids checkerboard artefacts). ``False``: bilinear upsampling, then two ConvRelu.
    """

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int, is_deconv: bool = True) -> None:
        super().__init__()
        if is_deconv:
            self.block = nn.Sequential(
                ConvRelu(in_channels, middle_channels),
                nn.ConvTranspose2d(middle_channels, out_channels, kernel_size=4, stride=2, padding=1),
                nn.ReLU(inplace=True),
            )
        else:
            self.block = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                ConvRelu(in_channels, middle_channels),
                ConvRelu(middle_channels, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


def replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh copy of ``conv``'s shape with ``in_channels`` inputs (``conv`` itself when they already match)."""
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )

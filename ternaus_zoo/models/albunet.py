"""AlbuNet: a U-Net with a ResNet34 encoder from the TernausNet family (Shvets, Iglovikov et al.,
"Automatic instrument segmentation in robot-assisted surgery", arXiv:1803.01207)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ternaus_zoo.models.base import SegmentationModel
from ternaus_zoo.models.blocks import ConvRelu, DecoderBlockV2
from ternaus_zoo.models.encoders import RESNET_WIDTHS, resnet_encoder, resnet_encoder_weights, resnet_stages
from ternaus_zoo.registry import ModelInfo, register_model


class AlbuNet(SegmentationModel):
    """ResNet encoder, ``DecoderBlockV2`` decoder; the centre block works on the pooled stride-32
    features, so inputs are padded to multiples of 64.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: width of the decoder (32).
        is_deconv: transposed convolutions instead of bilinear upsampling in the decoder.
        encoder_name: ``"resnet34"`` (the paper), ``"resnet18"``.
    """

    size_multiple = 64

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        num_filters: int = 32,
        is_deconv: bool = False,
        encoder_name: str = "resnet34",
    ) -> None:
        super().__init__(in_channels, num_classes)
        if encoder_name not in ("resnet18", "resnet34"):
            raise ValueError(f"AlbuNet takes a resnet18 or resnet34 encoder, got {encoder_name!r}")
        self.encoder_weights = resnet_encoder_weights(encoder_name)
        self.encoder = resnet_encoder(encoder_name, in_channels)
        self.encoder_channels = RESNET_WIDTHS[encoder_name]
        self.pool = nn.MaxPool2d(2, 2)
        f = num_filters
        self.center = DecoderBlockV2(512, f * 8 * 2, f * 8, is_deconv)
        self.dec5 = DecoderBlockV2(512 + f * 8, f * 8 * 2, f * 8, is_deconv)
        self.dec4 = DecoderBlockV2(256 + f * 8, f * 8 * 2, f * 8, is_deconv)
        self.dec3 = DecoderBlockV2(128 + f * 8, f * 4 * 2, f * 2, is_deconv)
        self.dec2 = DecoderBlockV2(64 + f * 2, f * 2 * 2, f * 2 * 2, is_deconv)
        self.dec1 = DecoderBlockV2(f * 2 * 2, f * 2 * 2, f, is_deconv)
        self.dec0 = ConvRelu(f, f)
        self.final = nn.Conv2d(f, num_classes, kernel_size=1)

    def forward_padded(self, images: Tensor) -> Tensor:
        _, conv2, conv3, conv4, conv5 = resnet_stages(self.encoder, images)
        center = self.center(self.pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        return self.final(self.dec0(self.dec1(dec2)))


@register_model(
    ModelInfo(
        name="albunet34",
        task="segmentation",
        description="AlbuNet: U-Net with a ResNet34 encoder (TernausNet family, arXiv:1803.01207)",
        size_multiple=AlbuNet.size_multiple,
    )
)
def albunet34(*, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, is_deconv: bool = False) -> AlbuNet:
    """AlbuNet34 (Shvets, Iglovikov et al., arXiv:1803.01207): a ResNet34 encoder and a TernausNet decoder.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: decoder width (32).
        is_deconv: transposed convolutions instead of bilinear upsampling.
    """
    return AlbuNet(num_classes, in_channels, num_filters=num_filters, is_deconv=is_deconv)

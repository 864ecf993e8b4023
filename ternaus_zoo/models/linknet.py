"""LinkNet (Chaurasia & Culurciello, "LinkNet: Exploiting encoder representations for efficient
semantic segmentation", arXiv:1707.03718) with a ResNet encoder: decoder outputs are added to the
encoder features of the same resolution instead of concatenated."""

from __future__ import annotations

from torch import Tensor, nn

from ternaus_zoo.models.base import SegmentationModel
from ternaus_zoo.models.blocks import ConvBnRelu
from ternaus_zoo.models.encoders import RESNET_WIDTHS, resnet_encoder, resnet_encoder_weights, resnet_stages
from ternaus_zoo.registry import ModelInfo, register_model


class LinkNetDecoderBlock(nn.Sequential):
    """1x1 convolution to a quarter of the channels, a stride-2 transposed convolution, 1x1 to ``out``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        middle = in_channels // 4
        super().__init__(
            ConvBnRelu(in_channels, middle, kernel_size=1),
            nn.ConvTranspose2d(middle, middle, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            ConvBnRelu(middle, out_channels, kernel_size=1),
        )


class LinkNet(SegmentationModel):
    """ResNet encoder; ``decoderN`` upsample by 2 and are summed with the encoder skip.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        encoder_name: ``"resnet34"`` (default), ``"resnet18"``, ``"resnet50"`` ...
    """

    size_multiple = 32

    def __init__(self, num_classes: int = 1, in_channels: int = 3, encoder_name: str = "resnet34") -> None:
        super().__init__(in_channels, num_classes)
        self.encoder_weights = resnet_encoder_weights(encoder_name)
        self.encoder = resnet_encoder(encoder_name, in_channels)
        self.encoder_channels = RESNET_WIDTHS[encoder_name]
        _, c1, c2, c3, c4 = self.encoder_channels
        self.decoder4 = LinkNetDecoderBlock(c4, c3)
        self.decoder3 = LinkNetDecoderBlock(c3, c2)
        self.decoder2 = LinkNetDecoderBlock(c2, c1)
        self.decoder1 = LinkNetDecoderBlock(c1, 64)
        self.final = nn.Sequential(
            nn.ConvTranspose2d(64, 32, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, num_classes, kernel_size=1),
        )

    def forward_padded(self, images: Tensor) -> Tensor:
        _, e1, e2, e3, e4 = resnet_stages(self.encoder, images)
        d4 = self.decoder4(e4) + e3
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        return self.final(self.decoder1(d2))


@register_model(
    ModelInfo(
        name="linknet34",
        task="segmentation",
        description="LinkNet with a ResNet34 encoder (arXiv:1707.03718)",
        size_multiple=LinkNet.size_multiple,
    )
)
def linknet34(*, num_classes: int = 1, in_channels: int = 3) -> LinkNet:
    """LinkNet34 (Chaurasia & Culurciello, arXiv:1707.03718): a ResNet34 encoder whose skips are added.

    Args:
        num_classes: output channels.
        in_channels: input channels.
    """
    return LinkNet(num_classes, in_channels, encoder_name="resnet34")

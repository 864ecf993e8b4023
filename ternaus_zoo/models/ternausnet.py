"""TernausNet: U-Nets with VGG11 and VGG16 encoders (Iglovikov & Shvets, arXiv:1801.05746).

Module names follow the original ``ternausnet/models.py`` (``encoder.N``, ``conv1`` ... ``conv5``,
``center``, ``dec5`` ... ``dec1``, ``final``) so that its checkpoints load with ``strict=True``. As in
the original, the ``convN`` attributes alias layers of ``encoder``: every parameter appears under both
names in ``state_dict()``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import VGG11_BN_Weights, VGG11_Weights, VGG16_Weights, vgg11, vgg11_bn, vgg16

from ternaus_zoo.models.base import SegmentationModel
from ternaus_zoo.models.blocks import ConvBnRelu, ConvRelu, DecoderBlock, DecoderBlockV2, replace_first_conv
from ternaus_zoo.registry import ModelInfo, register_model
from ternaus_zoo.weights import EncoderWeights


def _vgg_features(builder, in_channels: int) -> nn.Sequential:
    features = builder(weights=None).features
    features[0] = replace_first_conv(features[0], in_channels)
    return features


def init_decoder(modules: list[nn.Module]) -> None:
    """He initialisation (as torchvision's VGG encoder gets) for the decoder's convolutions.

    PyTorch's default (``kaiming_uniform_(a=sqrt(5))``) shrinks the activations about 2.4x per ReLU
    layer, so the ten plain layers of the TernausNet decoder start with a near-constant output
    (``benchmarks/results/unet11_from_scratch.md``). Loading a checkpoint replaces these values.
    """
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


class _VGGUNet(SegmentationModel):
    """The decoder path the two TernausNets share: ``center`` on the pooled deepest features, then
    ``dec5`` ... ``dec1`` each on the concatenation of the previous output and the skip."""

    def decoder_modules(self) -> list[nn.Module]:
        return [self.center, self.dec5, self.dec4, self.dec3, self.dec2, self.dec1]

    def encode(self, images: Tensor) -> list[Tensor]:
        """The five skip tensors, at strides 1, 2, 4, 8, 16."""
        raise NotImplementedError

    def forward_padded(self, images: Tensor) -> Tensor:
        conv1, conv2, conv3, conv4, conv5 = self.encode(images)
        center = self.center(self.pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        dec1 = self.dec1(torch.cat([dec2, conv1], 1))
        return self.final(dec1)


VGG_STAGE_WIDTHS = (64, 128, 256, 512, 512)


class UNet11(_VGGUNet):
    """TernausNet: VGG11 encoder, ``DecoderBlock`` decoder (transposed convolutions, k=3).

    Args:
        num_classes: output channels (1 in the paper).
        in_channels: input channels; 3 for ImageNet weights, others adapt the first convolution.
        num_filters: width of the decoder (32 in the paper).
        batch_norm: VGG11-BN encoder (torchvision's ``vgg11_bn``) and batch norm in the decoder; not
            in the paper, and what lets the network learn from scratch. ``False`` is the original
            architecture, whose checkpoints load strictly.
    """

    size_multiple = 32
    encoder_channels = VGG_STAGE_WIDTHS

    def __init__(
        self, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, batch_norm: bool = False
    ) -> None:
        super().__init__(in_channels, num_classes)
        self.batch_norm = batch_norm
        self.encoder_weights = EncoderWeights(
            imagenet=VGG11_BN_Weights.IMAGENET1K_V1 if batch_norm else VGG11_Weights.IMAGENET1K_V1,
            source_prefix="features.",
            ignored_prefixes=("classifier.",),
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.encoder = _vgg_features(vgg11_bn if batch_norm else vgg11, in_channels)
        # The encoder's stages: the layers between its max-pools.
        pools = [index for index, layer in enumerate(self.encoder) if isinstance(layer, nn.MaxPool2d)]
        self._stage_bounds = list(zip([-1, *pools[:-1]], pools, strict=True))
        if not batch_norm:
            # The original's attribute names, aliasing the encoder's layers, so its state dicts load strictly.
            self.relu = self.encoder[1]
            names = ("conv1", "conv2", "conv3s", "conv3", "conv4s", "conv4", "conv5s", "conv5")
            for name, index in zip(names, (0, 3, 6, 8, 11, 13, 16, 18), strict=True):
                setattr(self, name, self.encoder[index])

        # The original writes the skip widths as multiples of num_filters (f * 16 = 512 at f = 32), which
        # breaks every other width; here they are the encoder's, the same numbers at the paper's f = 32.
        f = num_filters
        c1, c2, c3, c4, c5 = VGG_STAGE_WIDTHS
        self.center = DecoderBlock(c5, f * 8 * 2, f * 8, batch_norm)
        self.dec5 = DecoderBlock(c5 + f * 8, f * 8 * 2, f * 8, batch_norm)
        self.dec4 = DecoderBlock(c4 + f * 8, f * 8 * 2, f * 4, batch_norm)
        self.dec3 = DecoderBlock(c3 + f * 4, f * 4 * 2, f * 2, batch_norm)
        self.dec2 = DecoderBlock(c2 + f * 2, f * 2 * 2, f, batch_norm)
        self.dec1 = ConvBnRelu(c1 + f, f) if batch_norm else ConvRelu(c1 + f, f)
        self.final = nn.Conv2d(f, num_classes, kernel_size=1)
        init_decoder(self.decoder_modules())

    def encode(self, images: Tensor) -> list[Tensor]:
        skips, features = [], images
        for start, stop in self._stage_bounds:
            for layer in self.encoder[start + 1 : stop]:
                features = layer(features)
            skips.append(features)
            features = self.encoder[stop](features)
        return skips


# Indices of VGG16's convolutions in `features`, grouped by resolution.
_VGG16_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))


class UNet16(_VGGUNet):
    """TernausNet with a VGG16 encoder and ``DecoderBlockV2`` (bilinear or transposed convolution).

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: width of the decoder (32).
        is_deconv: transposed convolutions (k=4) instead of bilinear upsampling in the decoder.
    """

    size_multiple = 32
    encoder_channels = VGG_STAGE_WIDTHS
    encoder_weights = EncoderWeights(
        imagenet=VGG16_Weights.IMAGENET1K_V1, source_prefix="features.", ignored_prefixes=("classifier.",)
    )

    def __init__(
        self, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, is_deconv: bool = False
    ) -> None:
        super().__init__(in_channels, num_classes)
        self.pool = nn.MaxPool2d(2, 2)
        self.encoder = _vgg_features(vgg16, in_channels)
        self.relu = nn.ReLU(inplace=True)
        for stage, indices in enumerate(_VGG16_STAGES, start=1):
            layers = []
            for index in indices:
                layers += [self.encoder[index], self.relu]
            setattr(self, f"conv{stage}", nn.Sequential(*layers))

        f = num_filters
        self.center = DecoderBlockV2(512, f * 8 * 2, f * 8, is_deconv)
        self.dec5 = DecoderBlockV2(512 + f * 8, f * 8 * 2, f * 8, is_deconv)
        self.dec4 = DecoderBlockV2(512 + f * 8, f * 8 * 2, f * 8, is_deconv)
        self.dec3 = DecoderBlockV2(256 + f * 8, f * 4 * 2, f * 2, is_deconv)
        self.dec2 = DecoderBlockV2(128 + f * 2, f * 2 * 2, f, is_deconv)
        self.dec1 = ConvRelu(64 + f, f)
        self.final = nn.Conv2d(f, num_classes, kernel_size=1)
        init_decoder(self.decoder_modules())

    def encode(self, images: Tensor) -> list[Tensor]:
        conv1 = self.conv1(images)
        conv2 = self.conv2(self.pool(conv1))
        conv3 = self.conv3(self.pool(conv2))
        conv4 = self.conv4(self.pool(conv3))
        conv5 = self.conv5(self.pool(conv4))
        return [conv1, conv2, conv3, conv4, conv5]


TERNAUSNET_PAPER = "Iglovikov & Shvets, TernausNet, arXiv:1801.05746"


@register_model(
    ModelInfo(
        name="unet11",
        task="segmentation",
        description=f"TernausNet: U-Net with a VGG11 encoder ({TERNAUSNET_PAPER})",
        size_multiple=UNet11.size_multiple,
    )
)
def unet11(*, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, batch_norm: bool = False) -> UNet11:
    """TernausNet UNet11 (arXiv:1801.05746): a VGG11 encoder and a decoder of transposed convolutions.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: decoder width (32 in the paper).
        batch_norm: VGG11-BN encoder and a batch-norm decoder (trains from scratch; ``weights="imagenet"``
            then loads ``vgg11_bn``); ``False`` keeps the original architecture and its checkpoints.
    """
    return UNet11(num_classes=num_classes, in_channels=in_channels, num_filters=num_filters, batch_norm=batch_norm)


@register_model(
    ModelInfo(
        name="unet16",
        task="segmentation",
        description=f"TernausNet: U-Net with a VGG16 encoder ({TERNAUSNET_PAPER})",
        size_multiple=UNet16.size_multiple,
    )
)
def unet16(*, num_classes: int = 1, in_channels: int = 3, num_filters: int = 32, is_deconv: bool = False) -> UNet16:
    """TernausNet UNet16 (arXiv:1801.05746): a VGG16 encoder, a bilinear (or transposed-convolution) decoder.

    Args:
        num_classes: output channels.
        in_channels: input channels.
        num_filters: decoder width (32).
        is_deconv: transposed convolutions (k=4) instead of bilinear upsampling.
    """
    return UNet16(num_classes=num_classes, in_channels=in_channels, num_filters=num_filters, is_deconv=is_deconv)

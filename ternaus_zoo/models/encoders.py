"""torchvision backbones prepared as encoders: the first convolution adapted to ``in_channels`` and
the classifier removed, with the :class:`EncoderWeights` that put ImageNet weights into them."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import ResNet, get_model, get_model_weights

from ternaus_zoo.models.blocks import replace_first_conv
from ternaus_zoo.weights import EncoderWeights

RESNET_WIDTHS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
}


def resnet_encoder(name: str, in_channels: int = 3) -> ResNet:
    """A torchvision ResNet (``"resnet34"`` ...) without its classifier (``fc`` is an identity)."""
    if name not in RESNET_WIDTHS:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {sorted(RESNET_WIDTHS)}")
    encoder = get_model(name, weights=None)
    encoder.conv1 = replace_first_conv(encoder.conv1, in_channels)
    encoder.fc = nn.Identity()
    return encoder


def resnet_encoder_weights(name: str, attribute: str = "encoder") -> EncoderWeights:
    """How torchvision's ImageNet weights of ResNet ``name`` map onto ``model.<attribute>``."""
    return EncoderWeights(
        imagenet=get_model_weights(name).IMAGENET1K_V1,
        encoder=attribute,
        ignored_prefixes=("fc.",),
        first_conv="conv1.weight",
    )


def resnet_stages(encoder: ResNet, images: Tensor) -> list[Tensor]:
    """Features of the stem (stride 2) and of ``layer1`` ... ``layer4`` (strides 4, 8, 16, 32)."""
    stem = encoder.relu(encoder.bn1(encoder.conv1(images)))
    layer1 = encoder.layer1(encoder.maxpool(stem))
    layer2 = encoder.layer2(layer1)
    layer3 = encoder.layer3(layer2)
    layer4 = encoder.layer4(layer3)
    return [stem, layer1, layer2, layer3, layer4]

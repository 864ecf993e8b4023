"""ResNet classifiers with an auxiliary segmentation head, from the 4th-place solution of the Human
Protein Atlas Image Classification challenge (Ouyang et al., "Analysis of the Human Protein Atlas Image
Classification competition", Nature Methods 2019).

A 1x1 convolution on a middle stage (``layer2``, stride 8, by default) predicts one map per class. Trained
against the image labels broadcast over the map (or against masks), its loss acts as supervised attention
on the encoder: the stage is pushed to localise each class, which the classifier then reads.

Contract (see ``ARCHITECTURE.md``): in eval mode ``forward`` returns the logits ``(B, num_classes)`` only,
so inference, TTA, ensembles and export see one tensor; in training mode it returns
``(logits, aux_maps)``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ternaus_zoo.models.base import SavePretrainedMixin, check_images
from ternaus_zoo.models.encoders import RESNET_WIDTHS, resnet_encoder, resnet_encoder_weights, resnet_stages
from ternaus_zoo.registry import ModelInfo, register_model

# Position in resnet_stages() output and stride of each stage the auxiliary head may read.
AUX_STAGES = {"layer1": (1, 4), "layer2": (2, 8), "layer3": (3, 16), "layer4": (4, 32)}
AUX_ENCODERS = ("resnet18", "resnet34", "resnet50")


class AuxResNet(SavePretrainedMixin, nn.Module):
    """A torchvision ResNet classifier (global average pool + ``fc``) with an auxiliary 1x1-convolution head.

    Shapes: images ``(B, in_channels, H, W)`` (any H and W); logits ``(B, num_classes)``; in training mode
    also ``aux_maps`` ``(B, num_classes, ceil(H / s), ceil(W / s))`` with ``s = aux_stride`` (8 for
    ``layer2``: 32x32 maps for a 256x256 input). Logits, no sigmoid.

    Args:
        num_classes: classes (one logit and one auxiliary map each).
        in_channels: input channels (4 for RGBY microscopy); ImageNet weights adapt the first convolution.
        encoder_name: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        aux_stage: the stage the auxiliary head reads, ``"layer1"`` ... ``"layer4"`` (``"layer2"``).

    Attributes:
        encoder: the torchvision ResNet (its ``fc`` an identity); ImageNet weights go here.
        fc: ``Linear(width of layer4, num_classes)`` on the pooled ``layer4`` features.
        aux_head: ``Conv2d(width of aux_stage, num_classes, 1)``.
        aux_stride: the stride of ``aux_stage`` (4, 8, 16 or 32).
    """

    size_multiple = 1

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        encoder_name: str = "resnet34",
        aux_stage: str = "layer2",
    ) -> None:
        super().__init__()
        if encoder_name not in AUX_ENCODERS:
            raise ValueError(f"AuxResNet takes one of {AUX_ENCODERS} as encoder, got {encoder_name!r}")
        if aux_stage not in AUX_STAGES:
            raise ValueError(f"aux_stage must be one of {sorted(AUX_STAGES)}, got {aux_stage!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.aux_stage = aux_stage
        self._aux_index, self.aux_stride = AUX_STAGES[aux_stage]
        self.encoder_channels = widths = RESNET_WIDTHS[encoder_name]
        self.encoder_weights = resnet_encoder_weights(encoder_name)
        self.encoder = resnet_encoder(encoder_name, in_channels)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.aux_head = nn.Conv2d(widths[self._aux_index], num_classes, kernel_size=1)

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``; in training mode
        ``(logits, aux_maps)`` with ``aux_maps`` ``(B, num_classes, ceil(H / aux_stride), ceil(W / aux_stride))``."""
        check_images(images, self.in_channels, type(self).__name__)
        stages = resnet_stages(self.encoder, images)
        logits = self.fc(self.encoder.avgpool(stages[-1]).flatten(1))
        if not self.training:
            return logits
        return logits, self.aux_head(stages[self._aux_index])


def _info(name: str, encoder_name: str, pretrained: tuple[str, ...] = ("imagenet",)) -> ModelInfo:
    return ModelInfo(
        name=name,
        task="classification",
        description=(
            f"{encoder_name} classifier with an auxiliary 1x1-conv segmentation head (layer2 by default; Human Protein "
            "Atlas 4th place; Ouyang et al., Nature Methods 2019)"
        ),
        size_multiple=AuxResNet.size_multiple,
        pretrained=pretrained,
    )


def _build(encoder_name: str, num_classes: int, in_channels: int, aux_stage: str) -> AuxResNet:
    return AuxResNet(num_classes, in_channels, encoder_name=encoder_name, aux_stage=aux_stage)


_BUILDER_DOC = """A {encoder} classifier with an auxiliary segmentation head (Ouyang et al., Nature Methods 2019).

    Args:
        num_classes: classes (one logit and one auxiliary map each).
        in_channels: input channels (4 for RGBY microscopy).
        aux_stage: the stage the auxiliary head reads (``"layer2"``, stride 8).
    """


@register_model(_info("aux_resnet18", "ResNet18"))
def aux_resnet18(*, num_classes: int = 1, in_channels: int = 3, aux_stage: str = "layer2") -> AuxResNet:
    return _build("resnet18", num_classes, in_channels, aux_stage)


@register_model(_info("aux_resnet34", "ResNet34"))
def aux_resnet34(*, num_classes: int = 1, in_channels: int = 3, aux_stage: str = "layer2") -> AuxResNet:
    return _build("resnet34", num_classes, in_channels, aux_stage)


@register_model(_info("aux_resnet50", "ResNet50", pretrained=("imagenet", "imagenet1k_v1", "imagenet1k_v2")))
def aux_resnet50(*, num_classes: int = 1, in_channels: int = 3, aux_stage: str = "layer2") -> AuxResNet:
    return _build("resnet50", num_classes, in_channels, aux_stage)


for _builder, _encoder in ((aux_resnet18, "ResNet18"), (aux_resnet34, "ResNet34"), (aux_resnet50, "ResNet50")):
    _builder.__doc__ = _BUILDER_DOC.format(encoder=_encoder)

"""segmentation-models-pytorch architectures through the zoo's registry, as ``"smp.<Arch>"``.

``create_model("smp.Unet", encoder_name="resnet34")`` builds ``smp.Unet`` with
``encoder_weights=None`` (smp would otherwise download at construction time) and wraps it so that any
input size works. ``weights="imagenet"`` goes through :mod:`ternaus_zoo.weights` (torchvision's cache,
offline rules) for the torchvision-backed encoders (ResNets and VGGs).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import Tensor, nn
from torchvision.models import get_model_weights

from ternaus_zoo.models.base import SegmentationModel
from ternaus_zoo.registry import ModelInfo, register_model
from ternaus_zoo.weights import EncoderWeights

# smp encoders that are torchvision models with the classifier removed: the same keys as torchvision.
_TORCHVISION_FIRST_CONV = {"resnet": "conv1.weight", "vgg": "features.0.weight"}


def _torchvision_encoder_weights(encoder_name: str) -> EncoderWeights | None:
    family = next((prefix for prefix in _TORCHVISION_FIRST_CONV if encoder_name.startswith(prefix)), None)
    if family is None:
        return None
    return EncoderWeights(
        imagenet=get_model_weights(encoder_name).IMAGENET1K_V1,
        encoder="smp_model.encoder",
        ignored_prefixes=("fc.", "classifier."),
        first_conv=_TORCHVISION_FIRST_CONV[family],
    )


class SmpSegmentationModel(SegmentationModel):
    """An smp model (``smp_model``) padded to its encoder's output stride and cropped back."""

    def __init__(self, architecture: str, num_classes: int, in_channels: int, encoder_name: str, **kwargs) -> None:
        super().__init__(in_channels, num_classes)
        kwargs.setdefault("encoder_weights", None)
        self.smp_model = smp.create_model(
            architecture, encoder_name=encoder_name, in_channels=in_channels, classes=num_classes, **kwargs
        )
        self.size_multiple = self.smp_model.encoder.output_stride
        self.encoder_weights = _torchvision_encoder_weights(encoder_name)

    @property
    def encoder(self) -> nn.Module:
        """smp's encoder (its parameters live under ``smp_model.encoder``)."""
        return self.smp_model.encoder

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """The widths of the encoder's stages, shallow to deep (smp's ``out_channels`` without the input's)."""
        return tuple(self.smp_model.encoder.out_channels[1:])

    def forward_padded(self, images: Tensor) -> Tensor:
        return self.smp_model(images)


def _register(architecture: str) -> None:
    def build(*, num_classes: int = 1, in_channels: int = 3, encoder_name: str = "resnet34", **kwargs):
        return SmpSegmentationModel(architecture, num_classes, in_channels, encoder_name, **kwargs)

    build.__name__ = build.__qualname__ = f"smp_{architecture.lower()}"
    build.__doc__ = (
        f"segmentation-models-pytorch ``{architecture}`` (see smp's documentation for its paper and options).\n\n"
        "    Args:\n        num_classes: output channels.\n        in_channels: input channels.\n"
        "        encoder_name: any smp encoder (``resnet34``).\n        kwargs: smp's own arguments "
        "(``encoder_weights`` defaults to ``None``; use ``weights=`` of ``create_model`` instead).\n"
    )
    register_model(
        ModelInfo(
            name=f"smp.{architecture}",
            task="segmentation",
            description=f"segmentation-models-pytorch {architecture} (any smp encoder)",
        )
    )(build)


for _architecture in smp.MODEL_ARCHITECTURES_MAPPING.values():
    _register(_architecture.__name__)

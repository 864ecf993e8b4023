"""Model families; importing this package registers every model."""

from ternaus_zoo.models.albunet import AlbuNet, albunet34
from ternaus_zoo.models.base import SegmentationModel, crop_padding, pad_to_multiple
from ternaus_zoo.models.linknet import LinkNet, linknet34
from ternaus_zoo.models.smp_adapter import SmpSegmentationModel
from ternaus_zoo.models.ternausnet import UNet11, UNet16, unet11, unet16
from ternaus_zoo.models.unet import UNet, unet

__all__ = [
    "AlbuNet",
    "LinkNet",
    "SegmentationModel",
    "SmpSegmentationModel",
    "UNet",
    "UNet11",
    "UNet16",
    "albunet34",
    "crop_padding",
    "linknet34",
    "pad_to_multiple",
    "unet",
    "unet11",
    "unet16",
]

"""Model families and the factory over them; importing this package registers every model."""

from ternaus_zoo.models.albunet import AlbuNet, albunet34
from ternaus_zoo.models.aux_resnet import AuxResNet, aux_resnet18, aux_resnet34, aux_resnet50
from ternaus_zoo.models.base import SegmentationModel, crop_padding, pad_to_multiple
from ternaus_zoo.models.factory import create_model, get_model_info, list_models
from ternaus_zoo.models.gapnet import (
    GAPNet,
    GapNetPL,
    gapnet_pl,
    gapnet_resnet18,
    gapnet_resnet34,
    gapnet_vgg11,
    gapnet_vgg16,
)
from ternaus_zoo.models.heads import GAPHead
from ternaus_zoo.models.linknet import LinkNet, linknet34
from ternaus_zoo.models.smp_adapter import SmpSegmentationModel
from ternaus_zoo.models.ternausnet import UNet11, UNet16, unet11, unet16
from ternaus_zoo.models.unet import UNet, unet

__all__ = [
    "AlbuNet",
    "AuxResNet",
    "GAPHead",
    "GAPNet",
    "GapNetPL",
    "LinkNet",
    "SegmentationModel",
    "SmpSegmentationModel",
    "UNet",
    "UNet11",
    "UNet16",
    "albunet34",
    "aux_resnet18",
    "aux_resnet34",
    "aux_resnet50",
    "create_model",
    "crop_padding",
    "gapnet_pl",
    "gapnet_resnet18",
    "gapnet_resnet34",
    "gapnet_vgg11",
    "gapnet_vgg16",
    "get_model_info",
    "linknet34",
    "list_models",
    "pad_to_multiple",
    "unet",
    "unet11",
    "unet16",
]

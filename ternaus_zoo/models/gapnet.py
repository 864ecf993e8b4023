"""GAPNet classifiers: global average pooling of every block's output, concatenated, into one head.

- :class:`GAPNet`: an ImageNet encoder (VGG or ResNet) whose blocks are each pooled by a :class:`GAPHead`,
  as in the 4th-place solution of the Human Protein Atlas Image Classification challenge (Ouyang et al.,
  "Analysis of the Human Protein Atlas Image Classification competition", Nature Methods 2019).
- :class:`GapNetPL`: the self-normalising network trained from scratch of Rumetshofer et al.,
  "Human-level protein localization with convolutional neural networks", ICLR 2019.

Every model returns logits ``(B, num_classes)`` (no sigmoid) for images of any size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models import get_model_weights

from ternaus_zoo.models.base import SavePretrainedMixin, check_images
from ternaus_zoo.models.encoders import RESNET_WIDTHS, resnet_encoder, resnet_encoder_weights, resnet_stages
from ternaus_zoo.models.heads import GAPHead, lecun_normal_
from ternaus_zoo.registry import ModelInfo, register_model
from ternaus_zoo.weights import EncoderWeights

HPA_PAPER = "Human Protein Atlas 4th place; Ouyang et al., Nature Methods 2019"

# torchvision's VGG configurations ("A", "B", "D", "E"): convolution widths, "M" for a max-pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
VGG_ENCODERS = tuple(VGG_CONFIGS)


def vgg_features(name: str, in_channels: int = 3) -> nn.Sequential:
    """torchvision's ``vgg<N>().features`` (same layers, indices and initialisation, so its ImageNet keys
    ``features.<i>.*`` load as they are) with ``in_channels`` inputs, built without the 120M-parameter
    classifier that GAPNet never uses."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG_CONFIGS[name]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    features = nn.Sequential(*layers)
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return features


def vgg_block_widths(features: nn.Sequential) -> tuple[int, ...]:
    """Output channels of each convolution block of a VGG ``features`` sequence (the last convolution
    before each max-pool): ``(64, 128, 256, 512, 512)`` for VGG11/16."""
    widths, channels = [], 0
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        elif isinstance(layer, nn.MaxPool2d):
            widths.append(channels)
    return tuple(widths)


def vgg_blocks(features: nn.Sequential, images: Tensor) -> list[Tensor]:
    """The output of each convolution block of a VGG ``features`` sequence, taken before its max-pool
    (strides 1, 2, 4, 8, 16). The final max-pool is not run: nothing reads its output."""
    blocks, x = [], images
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(x)
            if index == len(features) - 1:
                break
        x = layer(x)
    return blocks


class GAPNet(SavePretrainedMixin, nn.Module):
    """An ImageNet encoder whose every block is globally average pooled; the pooled vectors, concatenated,
    go through dropout and a fully connected layer (a :class:`GAPHead`), so features of every scale reach
    the classifier.

    Blocks: VGG: each convolution block before its max-pool (widths 64, 128, 256, 512, 512: 1472 in all);
    ResNet: the stem and ``layer1`` ... ``layer4`` (ResNet18/34: 64 + 64 + 128 + 256 + 512 = 1024;
    ResNet50: 64 + 256 + 512 + 1024 + 2048 = 3904).

    Shapes: images ``(B, in_channels, H, W)``, any H and W (at least 16 for VGG, 32 for ResNet); logits
    ``(B, num_classes)``.

    Args:
        num_classes: classes.
        in_channels: input channels (4 for RGBY microscopy); ImageNet weights adapt the first convolution.
        encoder_name: ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"`` or a ResNet of ``RESNET_WIDTHS``.
        dropout: drop probability before the fully connected layer(s).
        hidden: width(s) of hidden fully connected layers (``None``: one linear layer), see :class:`GAPHead`.

    Attributes:
        encoder: torchvision's VGG ``features`` sequence, or the ResNet with ``fc`` an identity.
        head: the :class:`GAPHead`; ``head.in_features`` is the sum of the block widths.
        block_widths: channels of each pooled block.
    """

    size_multiple = 1

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        encoder_name: str = "resnet34",
        dropout: float = 0.5,
        hidden: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.encoder_name = encoder_name
        if encoder_name in VGG_ENCODERS:
            self.encoder = vgg_features(encoder_name, in_channels)
            self.encoder_weights = EncoderWeights(
                imagenet=get_model_weights(encoder_name).IMAGENET1K_V1,
                source_prefix="features.",
                ignored_prefixes=("classifier.",),
            )
            self.block_widths = vgg_block_widths(self.encoder)
        elif encoder_name in RESNET_WIDTHS:
            self.encoder = resnet_encoder(encoder_name, in_channels)
            self.encoder_weights = resnet_encoder_weights(encoder_name)
            self.block_widths = RESNET_WIDTHS[encoder_name]
        else:
            raise ValueError(
                f"GAPNet takes one of {VGG_ENCODERS + tuple(RESNET_WIDTHS)} as encoder, got {encoder_name!r}"
            )
        self.head = GAPHead(self.block_widths, num_classes, dropout=dropout, hidden=hidden)

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """The widths of the pooled blocks (the encoder contract's name for ``block_widths``)."""
        return tuple(self.block_widths)

    def blocks(self, images: Tensor) -> list[Tensor]:
        """The feature map of every block, ``[(B, C_i, H_i, W_i)]`` with ``C_i`` = ``block_widths[i]``."""
        if self.encoder_name in VGG_ENCODERS:
            return vgg_blocks(self.encoder, images)
        return resnet_stages(self.encoder, images)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``."""
        check_images(images, self.in_channels, type(self).__name__)
        return self.head(self.blocks(images))


def _selu_conv(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1), nn.SELU(inplace=True)]


class GapNetPL(SavePretrainedMixin, nn.Module):
    """GapNet-PL (Rumetshofer et al., ICLR 2019): a self-normalising (SELU) network trained from scratch.

    Follows the authors' TensorFlow ``GapNetPL`` (github.com/ml-jku/gapnet-pl):

    - ``block1``: conv 3x3 stride 2, 32 channels; max-pool 2 (stride 4 in all);
    - ``block2``: conv 3x3 stride 2 then three conv 3x3, 64 channels; max-pool 2 (stride 16);
    - ``block3``: three conv 3x3, 128 channels (stride 16);
    - each block's output (after its max-pool, as in the original) globally average pooled and
      concatenated (32 + 64 + 128 = 224), then two fully connected layers of 256 with SELU and alpha
      dropout, and a linear layer to the logits.

    Choices where the paper leaves room: convolutions with bias and "same" padding; max-pools with
    ``ceil_mode=True`` (TensorFlow's "same" pooling: odd sizes keep their last row); LeCun normal
    initialisation (``kaiming_normal_(nonlinearity="linear")``), zero biases, everywhere; ``dropout=0.3``
    (the authors' configuration). No pretrained weights: ``weights="imagenet"`` raises.

    Shapes: images ``(B, in_channels, H, W)``, any H and W (4 RGBY channels in the paper); logits
    ``(B, num_classes)``.

    Args:
        num_classes: classes (13 in the paper, 28 in the Human Protein Atlas challenge).
        in_channels: input channels.
        dropout: alpha-dropout probability in the head.
        hidden: widths of the hidden fully connected layers.
    """

    size_multiple = 1
    block_widths = (32, 64, 128)

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        dropout: float = 0.3,
        hidden: int | Sequence[int] | None = (256, 256),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.block1 = nn.Sequential(*_selu_conv(in_channels, 32, stride=2), nn.MaxPool2d(2, 2, ceil_mode=True))
        self.block2 = nn.Sequential(
            *_selu_conv(32, 64, stride=2),
            *_selu_conv(64, 64),
            *_selu_conv(64, 64),
            *_selu_conv(64, 64),
            nn.MaxPool2d(2, 2, ceil_mode=True),
        )
        self.block3 = nn.Sequential(*_selu_conv(64, 128), *_selu_conv(128, 128), *_selu_conv(128, 128))
        self.head = GAPHead(self.block_widths, num_classes, dropout=dropout, hidden=hidden, activation="selu")
        lecun_normal_(self)

    encoder_channels = block_widths

    @property
    def encoder(self) -> nn.Sequential:
        """The three convolution blocks (a view: the parameters live under ``block1`` ... ``block3``)."""
        return nn.Sequential(self.block1, self.block2, self.block3)

    def blocks(self, images: Tensor) -> list[Tensor]:
        """The three block outputs: ``(B, 32, H/4, W/4)``, ``(B, 64, H/16, W/16)``, ``(B, 128, H/16, W/16)``
        (sizes rounded up)."""
        block1 = self.block1(images)
        block2 = self.block2(block1)
        return [block1, block2, self.block3(block2)]

    def forward(self, images: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``."""
        check_images(images, self.in_channels, type(self).__name__)
        return self.head(self.blocks(images))


def _gapnet_info(name: str, encoder: str, widths: str) -> ModelInfo:
    return ModelInfo(
        name=name,
        task="classification",
        description=f"GAPNet: every {encoder} block average-pooled ({widths}) into a dropout + FC head ({HPA_PAPER})",
        size_multiple=GAPNet.size_multiple,
    )


_GAPNET_DOC = """GAPNet on {encoder} ({paper}): every block globally average pooled into one head.

    Args:
        num_classes: classes.
        in_channels: input channels (ImageNet weights adapt the first convolution).
        dropout: dropout before the head's linear layers.
        hidden: widths of hidden fully connected layers; ``None``: one linear layer.
    """


def _gapnet(encoder_name: str, num_classes: int, in_channels: int, dropout: float, hidden) -> GAPNet:
    return GAPNet(num_classes, in_channels, encoder_name=encoder_name, dropout=dropout, hidden=hidden)


@register_model(_gapnet_info("gapnet_vgg11", "VGG11", "64+128+256+512+512"))
def gapnet_vgg11(
    *, num_classes: int = 1, in_channels: int = 3, dropout: float = 0.5, hidden: int | Sequence[int] | None = None
) -> GAPNet:
    return _gapnet("vgg11", num_classes, in_channels, dropout, hidden)


@register_model(_gapnet_info("gapnet_vgg16", "VGG16", "64+128+256+512+512"))
def gapnet_vgg16(
    *, num_classes: int = 1, in_channels: int = 3, dropout: float = 0.5, hidden: int | Sequence[int] | None = None
) -> GAPNet:
    return _gapnet("vgg16", num_classes, in_channels, dropout, hidden)


@register_model(_gapnet_info("gapnet_resnet18", "ResNet18 (stem, layer1-4)", "64+64+128+256+512"))
def gapnet_resnet18(
    *, num_classes: int = 1, in_channels: int = 3, dropout: float = 0.5, hidden: int | Sequence[int] | None = None
) -> GAPNet:
    return _gapnet("resnet18", num_classes, in_channels, dropout, hidden)


@register_model(_gapnet_info("gapnet_resnet34", "ResNet34 (stem, layer1-4)", "64+64+128+256+512"))
def gapnet_resnet34(
    *, num_classes: int = 1, in_channels: int = 3, dropout: float = 0.5, hidden: int | Sequence[int] | None = None
) -> GAPNet:
    return _gapnet("resnet34", num_classes, in_channels, dropout, hidden)


@register_model(_gapnet_info("gapnet", "ResNet34 (stem, layer1-4; the default GAPNet)", "64+64+128+256+512"))
def gapnet(
    *, num_classes: int = 1, in_channels: int = 3, dropout: float = 0.5, hidden: int | Sequence[int] | None = None
) -> GAPNet:
    return _gapnet("resnet34", num_classes, in_channels, dropout, hidden)


for _builder, _encoder in (
    (gapnet_vgg11, "VGG11"),
    (gapnet_vgg16, "VGG16"),
    (gapnet_resnet18, "ResNet18"),
    (gapnet_resnet34, "ResNet34"),
    (gapnet, "ResNet34 (the default GAPNet)"),
):
    _builder.__doc__ = _GAPNET_DOC.format(encoder=_encoder, paper=HPA_PAPER)


@register_model(
    ModelInfo(
        name="gapnet_pl",
        task="classification",
        description=(
            "GapNet-PL: SELU network trained from scratch, three pooled blocks (32+64+128) into a SELU head "
            "(Rumetshofer et al., ICLR 2019)"
        ),
        size_multiple=GapNetPL.size_multiple,
        pretrained=(),
    )
)
def gapnet_pl(
    *,
    num_classes: int = 1,
    in_channels: int = 3,
    dropout: float = 0.3,
    hidden: int | Sequence[int] | None = (256, 256),
) -> GapNetPL:
    """GapNet-PL (Rumetshofer et al., ICLR 2019): a SELU network trained from scratch.

    Args:
        num_classes: classes.
        in_channels: input channels.
        dropout: alpha-dropout probability in the head.
        hidden: widths of the hidden fully connected layers.
    """
    return GapNetPL(num_classes, in_channels, dropout=dropout, hidden=hidden)

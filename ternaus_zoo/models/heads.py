"""Classification heads that any encoder of the zoo can feed.

:class:`GAPHead` pools every feature map it is given (global average pooling), concatenates the pooled
vectors and classifies them with dropout and fully connected layers, so that features of every scale
reach the classifier (GAPNet; Rumetshofer et al., "Human-level protein localization with convolutional
neural networks", ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "selu"]


def lecun_normal_(module: nn.Module) -> None:
    """LeCun normal initialisation (``std = 1 / sqrt(fan_in)``, zero bias) of every convolution and
    linear layer in ``module``: the initialisation self-normalising (SELU) networks need."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="linear")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class GAPHead(nn.Module):
    """Global average pooling of several feature maps, concatenation, dropout and fully connected layers.

    ``[(B, C_1, H_1, W_1), ..., (B, C_n, H_n, W_n)]`` -> pooled ``(B, C_1 + ... + C_n)`` -> logits
    ``(B, num_classes)``. The maps may have any spatial sizes (the pooling removes them).

    Layout: each hidden layer is ``Linear -> activation -> dropout``; without hidden layers the dropout
    acts on the pooled features (the "dropout + fully connected" head of GAPNet). ``activation="selu"``
    uses ``SELU`` with ``AlphaDropout`` and LeCun normal initialisation (GapNet-PL's self-normalising
    head); ``"relu"`` uses ``ReLU`` with ``Dropout`` and PyTorch's default initialisation.

    Any encoder can use it: give it the widths of the stages it returns and those stages. With a
    torchvision ResNet (``ternaus_zoo.models.encoders``)::

        encoder = resnet_encoder("resnet34", in_channels=4)
        head = GAPHead(RESNET_WIDTHS["resnet34"], num_classes=28)          # 64+64+128+256+512 = 1024
        logits = head(resnet_stages(encoder, images))                       # (B, 28)

    with a segmentation-models-pytorch encoder (its first "stage" is the input itself, skip it)::

        encoder = smp.encoders.get_encoder("efficientnet-b0", in_channels=4, weights=None)
        head = GAPHead(encoder.out_channels[1:], num_classes=28)
        logits = head(encoder(images)[1:])

    and with a VGG ``features`` sequence, pass the output of each convolution block before its max-pool
    (see :class:`ternaus_zoo.models.gapnet.GAPNet`).

    Args:
        in_widths: channels of each feature map, in the order they are passed.
        num_classes: output logits.
        dropout: drop probability (0 disables it).
        hidden: width of one hidden layer, several widths for a stack of them, or ``None`` for a single
            linear layer on the pooled features.
        activation: ``"relu"`` or ``"selu"`` (hidden layers and the kind of dropout).

    Attributes:
        in_features: ``sum(in_widths)``, the width of the concatenated pooled features.
        pool: the ``AdaptiveAvgPool2d(1)`` applied to each feature map in turn.
        classifier: ``nn.Sequential`` from the pooled features to the logits.
    """

    def __init__(
        self,
        in_widths: Sequence[int],
        num_classes: int,
        dropout: float = 0.5,
        hidden: int | Sequence[int] | None = None,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.in_widths = tuple(int(width) for width in in_widths)
        if not self.in_widths or min(self.in_widths) < 1:
            raise ValueError(f"GAPHead needs at least one feature width, all >= 1; got {tuple(in_widths)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if activation not in ("relu", "selu"):
            raise ValueError(f"activation must be 'relu' or 'selu', got {activation!r}")
        hidden_widths = () if hidden is None else (hidden,) if isinstance(hidden, int) else tuple(hidden)
        self.in_features = sum(self.in_widths)
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)

        def make_dropout() -> nn.Module:
            if dropout == 0:
                return nn.Identity()
            return nn.AlphaDropout(dropout) if activation == "selu" else nn.Dropout(dropout)

        layers: list[nn.Module] = [] if hidden_widths else [make_dropout()]
        width = self.in_features
        for hidden_width in hidden_widths:
            layers += [
                nn.Linear(width, hidden_width),
                nn.SELU(inplace=True) if activation == "selu" else nn.ReLU(inplace=True),
                make_dropout(),
            ]
            width = hidden_width
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)
        if activation == "selu":
            lecun_normal_(self.classifier)

    def pool_features(self, features: Sequence[Tensor]) -> Tensor:
        """``[(B, C_i, H_i, W_i)]`` -> ``(B, sum C_i)``: each map averaged over space, then concatenated."""
        if len(features) != len(self.in_widths):
            raise ValueError(f"GAPHead expects {len(self.in_widths)} feature maps, got {len(features)}")
        found = tuple(feature.shape[1] if feature.ndim == 4 else -1 for feature in features)
        if found != self.in_widths:
            shapes = [tuple(feature.shape) for feature in features]
            raise ValueError(f"GAPHead expects (B, C, H, W) maps with widths {self.in_widths}, got shapes {shapes}")
        return torch.cat([self.pool(feature).flatten(1) for feature in features], dim=1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """``[(B, C_i, H_i, W_i)]`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.pool_features(features))

"""GAPNet (VGG/ResNet encoders), GapNet-PL and the reusable GAPHead: shapes, the pooled concatenation of
every block, ImageNet weights, initialisation and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import get_model

import ternaus_zoo.models.gapnet  # noqa: F401  (registers the models)
from ternaus_zoo import WeightsError, create_model, get_model_info, list_models
from ternaus_zoo.models.encoders import RESNET_WIDTHS, resnet_encoder, resnet_stages
from ternaus_zoo.models.gapnet import VGG_CONFIGS, GAPNet, GapNetPL, vgg_features
from ternaus_zoo.models.heads import GAPHead
from tests.fakes import cache_torchvision_weights

NAMES = ["gapnet_pl", "gapnet_resnet18", "gapnet_resnet34", "gapnet_vgg11", "gapnet_vgg16"]
BLOCK_WIDTHS = {
    "gapnet_vgg11": (64, 128, 256, 512, 512),
    "gapnet_vgg16": (64, 128, 256, 512, 512),
    "gapnet_resnet18": (64, 64, 128, 256, 512),
    "gapnet_resnet34": (64, 64, 128, 256, 512),
    "gapnet_pl": (32, 64, 128),
}
SIZES = [(64, 64), (96, 80)]


def test_registered_as_classifiers():
    assert set(NAMES) <= set(list_models("gapnet*", task="classification"))
    for name in NAMES:
        info = get_model_info(name)
        assert info.task == "classification" and info.size_multiple == 1
    assert get_model_info("gapnet_pl").pretrained == ()
    assert "Rumetshofer" in get_model_info("gapnet_pl").description
    assert get_model_info("gapnet_vgg16").pretrained == ("imagenet",)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [1, 5])
@pytest.mark.parametrize("in_channels", [3, 4])
def test_logits_shape_in_eval_and_train(name, num_classes, in_channels):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_channels=in_channels)
    assert model.info.num_classes == num_classes and model.info.in_channels == in_channels
    for height, width in SIZES:
        images = torch.randn(2, in_channels, height, width)
        for training in (False, True):
            model.train(training)
            with torch.no_grad():
                logits = model(images)
            assert isinstance(logits, torch.Tensor) and logits.shape == (2, num_classes)


def _independent_blocks(name: str, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output, computed without the model's own ``blocks`` method."""
    if name.startswith("gapnet_vgg"):
        pools = [index for index, layer in enumerate(model.encoder) if isinstance(layer, nn.MaxPool2d)]
        return [model.encoder[:index](images) for index in pools]
    if name == "gapnet_pl":
        block1 = model.block1(images)
        block2 = model.block2(block1)
        return [block1, block2, model.block3(block2)]
    encoder = model.encoder
    outputs: list[torch.Tensor] = []
    modules = [encoder.relu, encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
    hooks = [module.register_forward_hook(lambda m, i, output: outputs.append(output)) for module in modules]
    try:
        # torchvision's own forward (fc is an identity) runs the stem and the four layers.
        encoder(images)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_head_concatenates_the_pooled_output_of_every_block(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    widths = BLOCK_WIDTHS[name]
    assert model.head.in_features == sum(widths) == model.head.classifier[0 if name == "gapnet_pl" else 1].in_features
    pieces: list[torch.Tensor] = []
    classifier_input: list[torch.Tensor] = []
    hooks = [
        model.head.pool.register_forward_hook(lambda m, i, output: pieces.append(output)),
        model.head.classifier.register_forward_pre_hook(lambda m, inputs: classifier_input.append(inputs[0])),
    ]
    images = torch.randn(2, 3, 96, 80)
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert [tuple(piece.shape) for piece in pieces] == [(2, width, 1, 1) for width in widths]
    expected = [block.mean(dim=(2, 3)) for block in _independent_blocks(name, model, images)]
    assert [block.shape[1] for block in expected] == list(widths)
    for piece, block_mean in zip(pieces, expected, strict=True):
        torch.testing.assert_close(piece.flatten(1), block_mean)
    assert classifier_input[0].shape == (2, sum(widths))
    torch.testing.assert_close(classifier_input[0], torch.cat(expected, dim=1))


def test_head_widths_of_the_documented_models():
    assert create_model("gapnet_resnet34").head.in_features == 64 + 64 + 128 + 256 + 512 == 1024
    assert create_model("gapnet_vgg16").head.in_features == 64 + 128 + 256 + 512 + 512 == 1472
    assert create_model("gapnet_pl").head.in_features == 32 + 64 + 128 == 224
    assert GAPNet(encoder_name="resnet50").head.in_features == 64 + 256 + 512 + 1024 + 2048


@torch.no_grad()
def test_vgg_blocks_are_taken_before_each_max_pool():
    model = create_model("gapnet_vgg16").eval()
    blocks = model.blocks(torch.randn(1, 3, 64, 96))
    assert [tuple(block.shape[1:]) for block in blocks] == [
        (64, 64, 96),
        (128, 32, 48),
        (256, 16, 24),
        (512, 8, 12),
        (512, 4, 6),
    ]


@pytest.mark.parametrize("name", sorted(VGG_CONFIGS))
def test_vgg_features_are_torchvisions(name):
    with torch.device("meta"):  # no memory, no initialisation of the 120M-parameter classifier
        reference = get_model(name, weights=None).features
    ours = vgg_features(name, in_channels=4)
    assert [repr(layer) for layer in ours[1:]] == [repr(layer) for layer in reference[1:]]
    assert repr(ours[0]) == repr(reference[0]).replace("Conv2d(3,", "Conv2d(4,")
    reference_shapes = {key: value.shape for key, value in reference.state_dict().items()}
    assert {key: value.shape for key, value in ours.state_dict().items()} == {
        key: shape if key != "0.weight" else (64, 4, 3, 3) for key, shape in reference_shapes.items()
    }
    # torchvision's initialisation: kaiming normal (fan_out, relu), zero bias.
    deep = ours[-3]
    assert deep.weight.std().item() == pytest.approx((2 / (deep.out_channels * 9)) ** 0.5, rel=0.05)
    assert torch.count_nonzero(deep.bias) == 0


@torch.no_grad()
def test_gapnet_pl_block_sizes_round_up():
    model = create_model("gapnet_pl", in_channels=4).eval()
    blocks = model.blocks(torch.randn(1, 4, 97, 33))
    # conv stride 2: 49x17; pool (ceil): 25x9; conv stride 2: 13x5; pool (ceil): 7x3.
    assert [tuple(block.shape[1:]) for block in blocks] == [(32, 25, 9), (64, 7, 3), (128, 7, 3)]
    assert model(torch.randn(1, 4, 97, 33)).shape == (1, 1)


def test_gapnet_pl_architecture():
    model = create_model("gapnet_pl", num_classes=13, in_channels=4)
    convs = [[layer for layer in block if isinstance(layer, nn.Conv2d)] for block in (model.block1, model.block2)]
    convs.append([layer for layer in model.block3 if isinstance(layer, nn.Conv2d)])
    assert [[(conv.out_channels, conv.stride[0]) for conv in block] for block in convs] == [
        [(32, 2)],
        [(64, 2), (64, 1), (64, 1), (64, 1)],
        [(128, 1), (128, 1), (128, 1)],
    ]
    activations = {type(layer) for layer in model.modules() if not isinstance(layer, (nn.Sequential, nn.Conv2d))}
    assert nn.ReLU not in activations and nn.SELU in activations
    linears = [layer for layer in model.head.classifier if isinstance(layer, nn.Linear)]
    assert [(linear.in_features, linear.out_features) for linear in linears] == [(224, 256), (256, 256), (256, 13)]
    dropouts = [layer for layer in model.head.classifier if isinstance(layer, nn.AlphaDropout)]
    assert len(dropouts) == 2 and all(dropout.p == 0.3 for dropout in dropouts)


def test_gapnet_pl_uses_lecun_normal_init():
    torch.manual_seed(0)
    model = create_model("gapnet_pl", num_classes=5)
    layers = [layer for layer in model.modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 1 + 4 + 3 + 3
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0
    # Large layers, where the sample std is close to the init's: 1 / sqrt(fan_in). PyTorch's default
    # (kaiming uniform, a=sqrt(5)) gives 1 / sqrt(3 fan_in), far outside the tolerance.
    for layer in [model.block2[2], model.block3[0], model.block3[4], model.head.classifier[0]]:
        fan_in = layer.weight[0].numel()
        assert layer.weight.std().item() == pytest.approx(fan_in**-0.5, rel=0.05)
        assert abs(layer.weight.mean().item()) < 0.05 * fan_in**-0.5


def test_gapnet_pl_has_no_imagenet_weights():
    with pytest.raises(WeightsError, match="GapNetPL has no ImageNet-pretrained encoder"):
        create_model("gapnet_pl", weights="imagenet")


def test_dropout_acts_in_training_only():
    model = create_model("gapnet_pl", num_classes=4)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(images), model(images), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(images), model(images))


def test_wrong_channels_are_named():
    model = create_model("gapnet_resnet18", in_channels=4).eval()
    with pytest.raises(ValueError, match="GAPNet was built for 4 input channels, got 3"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="takes one of"):
        GAPNet(encoder_name="densenet121")


@pytest.mark.parametrize(
    ("name", "source", "prefix"),
    [
        ("gapnet_vgg11", "vgg11", "features."),
        ("gapnet_vgg16", "vgg16", "features."),
        ("gapnet_resnet34", "resnet34", ""),
    ],
)
@pytest.mark.parametrize("in_channels", [3, 4])
def test_imagenet_weights_fill_the_encoder_exactly(name, source, prefix, in_channels, monkeypatch):
    state = cache_torchvision_weights(monkeypatch, source, keep=prefix)
    model = create_model(name, num_classes=2, in_channels=in_channels, weights="imagenet")
    first_conv = "0.weight" if prefix else "conv1.weight"
    compared = 0
    for key, value in model.encoder.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        expected = state[prefix + key]
        if key == first_conv and in_channels == 4:
            torch.testing.assert_close(value[:, :3], expected, rtol=0, atol=0)
            torch.testing.assert_close(value[:, 3], expected.mean(dim=1))
        else:
            torch.testing.assert_close(value, expected, rtol=0, atol=0)
        compared += 1
    assert compared == len([key for key in state if not key.startswith("fc.") and "num_batches" not in key])


def _count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("num_classes", [1, 28])
def test_parameter_counts(num_classes):
    c = num_classes
    resnet34 = get_model("resnet34", weights=None)
    assert _count(create_model("gapnet_resnet34", num_classes=c)) == _count(resnet34) - _count(resnet34.fc) + (
        1024 * c + c
    )

    def conv(cin: int, cout: int) -> int:
        return 9 * cin * cout + cout

    # VGG16's 13 convolutions (configuration "D" of Simonyan & Zisserman), counted by hand.
    vgg16_features = conv(3, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128)
    vgg16_features += conv(128, 256) + 2 * conv(256, 256) + conv(256, 512) + 5 * conv(512, 512)
    assert vgg16_features == 14_714_688  # torchvision's vgg16().features
    assert _count(create_model("gapnet_vgg16", num_classes=c)) == vgg16_features + 1472 * c + c
    assert _count(create_model("gapnet_vgg16", num_classes=c, hidden=512)) == vgg16_features + (
        1472 * 512 + 512 + 512 * c + c
    )

    features = conv(4, 32) + conv(32, 64) + 3 * conv(64, 64) + conv(64, 128) + 2 * conv(128, 128)
    head = 224 * 256 + 256 + 256 * 256 + 256 + 256 * c + c
    assert _count(create_model("gapnet_pl", num_classes=c, in_channels=4)) == features + head


def test_gap_head_layout():
    plain = GAPHead([64, 128], num_classes=3, dropout=0.25)
    assert [type(layer) for layer in plain.classifier] == [nn.Dropout, nn.Linear]
    assert plain.classifier[0].p == 0.25 and plain.classifier[1].in_features == 192
    hidden = GAPHead([64, 128], num_classes=3, hidden=32)
    assert [type(layer) for layer in hidden.classifier] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    selu = GAPHead([8], num_classes=2, hidden=(16, 4), activation="selu", dropout=0.1)
    assert [type(layer) for layer in selu.classifier] == [nn.Linear, nn.SELU, nn.AlphaDropout] * 2 + [nn.Linear]
    assert [type(layer) for layer in GAPHead([8], 2, dropout=0).classifier] == [nn.Identity, nn.Linear]


@torch.no_grad()
def test_gap_head_takes_maps_of_any_size_and_checks_them():
    head = GAPHead([4, 6, 2], num_classes=5).eval()
    maps = [torch.randn(3, 4, 17, 9), torch.randn(3, 6, 1, 1), torch.randn(3, 2, 5, 40)]
    assert head(maps).shape == (3, 5)
    pooled = torch.cat([feature.mean(dim=(2, 3)) for feature in maps], dim=1)
    torch.testing.assert_close(head(maps), head.classifier(pooled))
    with pytest.raises(ValueError, match="expects 3 feature maps, got 2"):
        head(maps[:2])
    with pytest.raises(ValueError, match=r"widths \(4, 6, 2\).*\(3, 5, 1, 1\)"):
        head([maps[0], torch.randn(3, 5, 1, 1), maps[2]])
    with pytest.raises(ValueError, match="at least one"):
        GAPHead([], num_classes=1)


@torch.no_grad()
def test_gap_head_on_other_encoders_as_documented():
    images = torch.randn(2, 4, 64, 64)
    encoder = resnet_encoder("resnet18", in_channels=4).eval()
    head = GAPHead(RESNET_WIDTHS["resnet18"], num_classes=28).eval()
    assert head(resnet_stages(encoder, images)).shape == (2, 28)

    smp = pytest.importorskip("segmentation_models_pytorch")
    smp_encoder = smp.encoders.get_encoder("resnet18", in_channels=4, weights=None).eval()
    smp_head = GAPHead(smp_encoder.out_channels[1:], num_classes=28).eval()
    assert smp_head.in_features == 1024
    assert smp_head(smp_encoder(images)[1:]).shape == (2, 28)


def test_gapnet_pl_direct_construction_matches_the_registry():
    torch.manual_seed(0)
    direct = GapNetPL(num_classes=3, in_channels=4)
    torch.manual_seed(0)
    registered = create_model("gapnet_pl", num_classes=3, in_channels=4)
    assert direct.state_dict().keys() == registered.state_dict().keys()
    for key, value in direct.state_dict().items():
        torch.testing.assert_close(value, registered.state_dict()[key], rtol=0, atol=0)

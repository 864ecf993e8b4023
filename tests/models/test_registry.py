"""Every registered model: shapes at several sizes, classes, channels, gradients, metadata, errors."""

from __future__ import annotations

import functools

import pytest
import torch
from torchvision.models import get_model

from ternaus_zoo import ModelInfo, create_model, get_model_info, list_models, register_model
from ternaus_zoo.models import AlbuNet

ZOO = ["albunet34", "linknet34", "unet", "unet11", "unet16"]
# Sizes that are multiples of nothing in particular, and a small square.
SIZES = [(64, 64), (70, 100), (97, 33)]


@functools.cache
def _model(name: str, num_classes: int, in_channels: int = 3):
    return create_model(name, num_classes=num_classes, in_channels=in_channels).eval()


def test_list_models_has_the_zoo_and_smp():
    names = list_models()
    assert set(ZOO) <= set(names)
    assert "smp.Unet" in names and "smp.FPN" in names
    assert names == sorted(names)
    assert list_models("unet1*") == ["unet11", "unet16"]
    assert "unet11" in list_models(task="segmentation")
    assert "unet11" not in list_models(task="classification")


def test_unknown_name_is_named_with_suggestions():
    with pytest.raises(KeyError, match=r"unknown model 'unet12'.*unet11"):
        create_model("unet12")


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelInfo(name="unet11", task="segmentation", description="again"))(lambda **_: None)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("num_classes", [1, 3])
@torch.no_grad()
def test_output_shape_any_size(name, size, num_classes):
    images = torch.randn(2, 3, *size)
    assert _model(name, num_classes)(images).shape == (2, num_classes, *size)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("in_channels", [1, 4])
@torch.no_grad()
def test_in_channels(name, in_channels):
    model = _model(name, 2, in_channels)
    assert model(torch.randn(1, in_channels, 40, 50)).shape == (1, 2, 40, 50)
    assert model.info.in_channels == in_channels
    assert len(model.info.mean) == len(model.info.std) == in_channels


@pytest.mark.parametrize("name", ZOO)
def test_wrong_channel_count_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"built for 3 input channels, got 4"):
        _model(name, 1)(torch.randn(1, 4, 32, 32))


@pytest.mark.parametrize("name", ZOO)
def test_gradients_reach_the_first_encoder_layer(name):
    model = create_model(name).train()
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    first_conv = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters()), "every parameter takes part in the forward pass"


@pytest.mark.parametrize("name", ZOO)
def test_info_travels_with_the_model(name):
    model = _model(name, 1)
    registered = get_model_info(name)
    assert model.info.name == name and model.info.task == "segmentation"
    assert model.info.size_multiple == model.size_multiple
    assert model.info.mean == registered.mean
    assert model.info.description


def _conv(in_channels: int, out_channels: int, kernel: int = 3, bias: bool = True) -> int:
    return kernel * kernel * in_channels * out_channels + (out_channels if bias else 0)


def _resnet34_without_classifier() -> int:
    resnet = get_model("resnet34", weights=None)
    return sum(p.numel() for p in resnet.parameters()) - sum(p.numel() for p in resnet.fc.parameters())


def test_albunet34_parameter_count():
    # AlbuNet decoder (num_filters=32, bilinear): DecoderBlockV2 = ConvRelu(in, mid) + ConvRelu(mid, out)
    def block(i, m, o):
        return _conv(i, m) + _conv(m, o)

    decoder = (
        block(512, 512, 256)  # center
        + block(512 + 256, 512, 256)  # dec5
        + block(256 + 256, 512, 256)  # dec4
        + block(128 + 256, 256, 64)  # dec3
        + block(64 + 64, 128, 128)  # dec2
        + block(128, 128, 32)  # dec1
        + _conv(32, 32)  # dec0
        + _conv(32, 1, kernel=1)  # final
    )
    model = _model("albunet34", 1)
    assert sum(p.numel() for p in model.parameters()) == _resnet34_without_classifier() + decoder


def test_linknet34_parameter_count():
    def bn(channels):
        return 2 * channels

    def block(i, o):  # 1x1 to i/4, deconv 3x3, 1x1 to o; every convolution without bias, followed by BN
        m = i // 4
        return _conv(i, m, 1, False) + bn(m) + _conv(m, m, 3, False) + bn(m) + _conv(m, o, 1, False) + bn(o)

    decoder = block(512, 256) + block(256, 128) + block(128, 64) + block(64, 64)
    head = _conv(64, 32) + _conv(32, 32) + _conv(32, 1, kernel=1)
    model = _model("linknet34", 1)
    assert sum(p.numel() for p in model.parameters()) == _resnet34_without_classifier() + decoder + head


SMP_CASES = {
    # PAN's pyramid pools the stride-16 features three more times: it needs sides of 128 or more.
    "smp.PAN": {"encoder_name": "resnet18", "size": (130, 150)},
    # DPT takes timm ViT encoders, which expect their own input size.
    "smp.DPT": {"encoder_name": "tu-test_vit", "size": (224, 224)},
}


@pytest.mark.parametrize("name", list_models("smp.*"))
@torch.no_grad()
def test_every_smp_architecture_through_the_registry(name):
    case = SMP_CASES.get(name, {"encoder_name": "resnet18", "size": (70, 90)})
    model = create_model(name, encoder_name=case["encoder_name"], num_classes=2).eval()
    assert model(torch.randn(1, 3, *case["size"])).shape == (1, 2, *case["size"])
    assert model.info.size_multiple == model.smp_model.encoder.output_stride


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("unet11", num_classes=0)
    with pytest.raises(ValueError, match="resnet18 or resnet34"):
        AlbuNet(encoder_name="resnet50")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        _model("unet11", 1)(torch.randn(3, 32, 32))

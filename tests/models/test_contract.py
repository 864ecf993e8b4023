"""The house rules every model keeps: a registry that imports no model, keyword-only documented builders,
smp's encoder contract (``encoder``, ``encoder_channels``), weights by tag, and UNet11's from-scratch options."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from ternaus_zoo import WeightsError, create_model, list_models
from ternaus_zoo.models import GAPNet
from ternaus_zoo.registry import registered
from tests.fakes import cache_torchvision_weights

# every family once; of smp, one architecture stands for the rest
MODELS = [name for name in list_models() if not name.startswith("smp.")] + ["smp.Unet"]


def test_the_registry_names_moved_to_models_still_work_with_a_warning():
    import ternaus_zoo.registry as registry

    with pytest.warns(DeprecationWarning, match=r"moved to ternaus_zoo\.models"):
        model = registry.create_model("unet", num_filters=4, depth=2)
    assert model.info.name == "unet"


@pytest.mark.parametrize("name", MODELS)
def test_builders_are_keyword_only_and_documented(name):
    builder, _ = registered(name)
    parameters = inspect.signature(builder).parameters.values()
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in parameters), inspect.signature(builder)
    with pytest.raises(TypeError):
        builder(1)
    doc = inspect.getdoc(builder) or ""
    assert "Args:" in doc and "num_classes" in doc and "in_channels" in doc, doc


def _last_conv_width(module: nn.Module) -> int:
    return [layer for layer in module.modules() if isinstance(layer, nn.Conv2d)][-1].out_channels


@pytest.mark.parametrize("name", MODELS)
def test_every_model_exposes_its_encoder_and_stage_widths(name):
    model = create_model(name)
    encoder = model.encoder
    assert isinstance(encoder, nn.Module)
    own = {id(parameter) for parameter in model.parameters()}
    encoder_parameters = list(encoder.parameters())
    assert encoder_parameters and all(id(parameter) in own for parameter in encoder_parameters)
    widths = model.encoder_channels
    assert isinstance(widths, tuple) and all(isinstance(width, int) for width in widths)
    assert widths[-1] == _last_conv_width(encoder)


def test_gapnet_is_the_resnet34_gapnet():
    model = create_model("gapnet", num_classes=5)
    assert isinstance(model, GAPNet) and model.encoder_name == "resnet34"
    assert model.head.in_features == sum((64, 64, 128, 256, 512))


def test_weights_by_torchvision_tag(tmp_path, monkeypatch):
    v1 = cache_torchvision_weights(monkeypatch, "resnet50", entry="IMAGENET1K_V1", seed=0)
    v2 = cache_torchvision_weights(monkeypatch, "resnet50", entry="IMAGENET1K_V2", seed=1)
    default = create_model("aux_resnet50", weights="imagenet").encoder.state_dict()
    second = create_model("aux_resnet50", weights="imagenet1k_v2").encoder.state_dict()
    key = "layer4.2.conv3.weight"
    torch.testing.assert_close(default[key], v1[key], rtol=0, atol=0)
    torch.testing.assert_close(second[key], v2[key], rtol=0, atol=0)
    with pytest.raises(WeightsError, match="imagenet1k_v2"):
        create_model("aux_resnet50", weights="imagenet21k")


def test_unet11_batch_norm_reads_vgg11_bn_weights(monkeypatch):
    state = cache_torchvision_weights(monkeypatch, "vgg11_bn", keep="features.")
    model = create_model("unet11", batch_norm=True, weights="imagenet")
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, state["features." + key], rtol=0, atol=0)
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in model.modules()) == 8 + 11
    assert model(torch.randn(2, 3, 64, 96)).shape == (2, 1, 64, 96)


def test_unet11_batch_norm_changes_nothing_in_the_default_architecture():
    plain = create_model("unet11")
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in plain.modules())
    assert hasattr(plain, "conv5s")  # the original's attribute names, for its checkpoints


def test_unet11_decoder_starts_with_he_initialisation():
    model = create_model("unet11")
    for block in (model.center, model.dec3, model.dec1):
        for layer in block.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = layer.weight[0, 0].numel() * (
                    layer.out_channels if isinstance(layer, nn.Conv2d) else layer.in_channels
                )
                expected = (2 / fan_out) ** 0.5
                assert abs(float(layer.weight.detach().std()) / expected - 1) < 0.1
                assert float(layer.bias.detach().abs().max()) == 0

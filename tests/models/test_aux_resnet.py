"""ResNet classifiers with an auxiliary segmentation head: the eval/train contract, the stage the head reads,
where the auxiliary loss sends its gradients, ImageNet weights and parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import get_model

import ternaus_zoo.models.aux_resnet  # noqa: F401  (registers the models)
from ternaus_zoo import create_model, get_model_info, list_models
from ternaus_zoo.models.aux_resnet import AuxResNet
from tests.fakes import cache_torchvision_weights

NAMES = ["aux_resnet18", "aux_resnet34", "aux_resnet50"]
ENCODERS = {"aux_resnet18": "resnet18", "aux_resnet34": "resnet34", "aux_resnet50": "resnet50"}
LAYER2_WIDTH = {"aux_resnet18": 128, "aux_resnet34": 128, "aux_resnet50": 512}
SIZES = [(64, 64), (96, 80)]


def test_registered_as_classifiers():
    assert set(NAMES) <= set(list_models("aux_resnet*", task="classification"))
    for name in NAMES:
        info = get_model_info(name)
        assert info.task == "classification" and info.size_multiple == 1
        # torchvision has two ImageNet weights of ResNet50 only
        tags = ("imagenet", "imagenet1k_v1", "imagenet1k_v2") if name == "aux_resnet50" else ("imagenet",)
        assert info.pretrained == tags
        assert "Protein Atlas" in info.description


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [1, 5])
@pytest.mark.parametrize("in_channels", [3, 4])
def test_eval_returns_logits_and_train_adds_stride8_maps(name, num_classes, in_channels):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_channels=in_channels)
    assert model.info.task == "classification" and model.info.num_classes == num_classes
    assert model.info.in_channels == in_channels and model.info.size_multiple == 1
    for height, width in SIZES:
        images = torch.randn(2, in_channels, height, width)
        model.eval()
        with torch.no_grad():
            logits = model(images)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, num_classes)
        model.train()
        output = model(images)
        assert isinstance(output, tuple) and len(output) == 2
        train_logits, aux_maps = output
        assert train_logits.shape == (2, num_classes)
        assert aux_maps.shape == (2, num_classes, height // 8, width // 8)


def test_aux_maps_of_a_256_input_are_32x32():
    model = create_model("aux_resnet18", num_classes=3).train()
    _, aux_maps = model(torch.randn(1, 3, 256, 256))
    assert aux_maps.shape == (1, 3, 32, 32)


@torch.no_grad()
def test_odd_sizes_round_up():
    model = create_model("aux_resnet18", num_classes=2).train()
    logits, aux_maps = model(torch.randn(1, 3, 65, 33))
    assert logits.shape == (1, 2)
    assert aux_maps.shape == (1, 2, math.ceil(65 / 8), math.ceil(33 / 8))


def _capture_aux_input(model: AuxResNet, stage: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output of ``encoder.<stage>`` and the input the auxiliary convolution receives."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.encoder.get_submodule(stage).register_forward_hook(
            lambda module, inputs, output: seen.__setitem__("stage", output)
        ),
        model.aux_head.register_forward_pre_hook(lambda module, inputs: seen.__setitem__("aux_input", inputs[0])),
    ]
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return seen["stage"], seen["aux_input"]


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_aux_head_reads_layer2_by_default(name):
    model = create_model(name, num_classes=4).train()
    stage, aux_input = _capture_aux_input(model, "layer2", torch.randn(2, 3, 64, 64))
    assert aux_input is stage
    assert model.aux_head.in_channels == LAYER2_WIDTH[name] == stage.shape[1]
    assert model.aux_head.kernel_size == (1, 1) and model.aux_head.out_channels == 4
    assert model.aux_stage == "layer2" and model.aux_stride == 8


@pytest.mark.parametrize(
    ("name", "stage", "width", "stride"),
    [
        ("aux_resnet18", "layer1", 64, 4),
        ("aux_resnet18", "layer3", 256, 16),
        ("aux_resnet34", "layer4", 512, 32),
        ("aux_resnet50", "layer1", 256, 4),
        ("aux_resnet50", "layer3", 1024, 16),
    ],
)
@torch.no_grad()
def test_aux_stage_option(name, stage, width, stride):
    model = create_model(name, num_classes=3, aux_stage=stage).train()
    images = torch.randn(1, 3, 96, 64)
    stage_output, aux_input = _capture_aux_input(model, stage, images)
    assert aux_input is stage_output and aux_input.shape[1] == width == model.aux_head.in_channels
    _, aux_maps = model(images)
    assert aux_maps.shape == (1, 3, 96 // stride, 64 // stride) and model.aux_stride == stride


def test_unknown_aux_stage_names_the_choices():
    with pytest.raises(ValueError, match=r"aux_stage must be one of \['layer1', 'layer2', 'layer3', 'layer4'\]"):
        create_model("aux_resnet18", aux_stage="layer5")


def test_wrong_channels_are_named():
    model = create_model("aux_resnet18", in_channels=4).eval()
    with pytest.raises(ValueError, match="AuxResNet was built for 4 input channels, got 3"):
        model(torch.randn(1, 3, 64, 64))


def _losses(model: AuxResNet, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification and auxiliary BCE losses of one batch (labels broadcast over the aux maps)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    labels = (torch.rand(2, model.num_classes, generator=generator) > 0.5).float()
    logits, aux_maps = model(images)
    classification = F.binary_cross_entropy_with_logits(logits, labels)
    auxiliary = F.binary_cross_entropy_with_logits(aux_maps, labels[:, :, None, None].expand_as(aux_maps))
    return classification, auxiliary


def _grads(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True))


def test_aux_loss_reaches_the_encoder_up_to_its_stage_only():
    torch.manual_seed(0)
    model = create_model("aux_resnet18", num_classes=3).train()
    classification, auxiliary = _losses(model)
    early = [model.encoder.conv1.weight, model.encoder.layer1[0].conv1.weight, model.encoder.layer2[1].conv2.weight]
    late = [model.encoder.layer3[0].conv1.weight, model.encoder.layer4[1].conv2.weight, model.fc.weight]

    # The auxiliary loss alone: gradients in the stem, layer1 and layer2; none in layer3, layer4 or fc.
    for grad in _grads(auxiliary, early):
        assert grad is not None and grad.abs().sum() > 0
    assert _grads(auxiliary, late) == [None, None, None]
    # The classification loss alone never reaches the auxiliary head.
    assert _grads(classification, [model.aux_head.weight]) == [None]

    # Adding the auxiliary loss changes the encoder's early gradients, not only the head's.
    alone = _grads(classification, early)
    combined = _grads(classification + auxiliary, early)
    for grad_alone, grad_combined in zip(alone, combined, strict=True):
        assert not torch.allclose(grad_alone, grad_combined)
    # ... and leaves the gradients beyond its stage exactly as they were.
    for grad_alone, grad_combined in zip(
        _grads(classification, late), _grads(classification + auxiliary, late), strict=True
    ):
        torch.testing.assert_close(grad_alone, grad_combined, rtol=0, atol=0)


def test_aux_loss_on_layer3_reaches_layer3_not_layer4():
    torch.manual_seed(0)
    model = create_model("aux_resnet34", num_classes=2, aux_stage="layer3").train()
    _, auxiliary = _losses(model, seed=1)
    layer3, layer4 = _grads(auxiliary, [model.encoder.layer3[0].conv1.weight, model.encoder.layer4[0].conv1.weight])
    assert layer3 is not None and layer3.abs().sum() > 0
    assert layer4 is None


@pytest.mark.parametrize("name", NAMES)
def test_imagenet_weights_fill_the_encoder_exactly(name, monkeypatch):
    state = cache_torchvision_weights(monkeypatch, ENCODERS[name])
    model = create_model(name, num_classes=5, weights="imagenet")
    compared = 0
    for key, value in model.encoder.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
        compared += 1
    assert compared == len([key for key in state if not key.startswith("fc.") and "num_batches" not in key])
    assert model.fc.weight.shape == (5, model.encoder.layer4[-1].conv1.in_channels)


def test_imagenet_weights_with_four_channels_keep_rgb_and_add_their_mean(monkeypatch):
    state = cache_torchvision_weights(monkeypatch, "resnet34")
    model = create_model("aux_resnet34", in_channels=4, weights="imagenet")
    rgb = state["conv1.weight"]
    first = model.encoder.conv1.weight.detach()
    assert first.shape == (64, 4, 7, 7)
    torch.testing.assert_close(first[:, :3], rgb, rtol=0, atol=0)
    torch.testing.assert_close(first[:, 3], rgb.mean(dim=1))
    torch.testing.assert_close(model.encoder.layer2[0].conv1.weight, state["layer2.0.conv1.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_classes", [1, 7])
def test_parameter_count(name, num_classes):
    backbone = get_model(ENCODERS[name], weights=None)
    without_fc = sum(p.numel() for p in backbone.parameters()) - sum(p.numel() for p in backbone.fc.parameters())
    fc = backbone.fc.in_features * num_classes + num_classes
    aux = LAYER2_WIDTH[name] * num_classes + num_classes
    model = create_model(name, num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == without_fc + fc + aux

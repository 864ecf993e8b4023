"""UNet11/UNet16 against the original TernausNet (PyPI ``ternausnet==0.0.1``) as the oracle."""

from __future__ import annotations

import pytest
import torch

from ternaus_zoo import create_model

ternausnet_models = pytest.importorskip("ternausnet.models", reason="the [test] extra installs ternausnet==0.0.1")

UNET11_NAMES = [
    "encoder.0.weight",
    "encoder.18.bias",
    "conv1.weight",
    "conv2.weight",
    "conv3s.weight",
    "conv3.weight",
    "conv4s.weight",
    "conv4.weight",
    "conv5s.weight",
    "conv5.bias",
    "center.block.0.conv.weight",
    "center.block.1.weight",
    "dec5.block.0.conv.weight",
    "dec2.block.1.bias",
    "dec1.conv.weight",
    "final.weight",
    "final.bias",
]


def test_unet11_key_list_is_the_original():
    ours = list(create_model("unet11").state_dict())
    original = list(ternausnet_models.UNet11().state_dict())
    assert ours == original
    for name in UNET11_NAMES:
        assert name in ours


def test_unet11_aliases_encoder_layers_like_the_original():
    model = create_model("unet11")
    assert model.conv3s is model.encoder[6]
    assert model.conv5 is model.encoder[18]


@torch.no_grad()
def test_original_unet11_checkpoint_loads_strictly_and_agrees():
    torch.manual_seed(0)
    original = ternausnet_models.UNet11().eval()
    ours = create_model("unet11").eval()
    ours.load_state_dict(original.state_dict(), strict=True)
    images = torch.randn(2, 3, 64, 96)
    torch.testing.assert_close(ours(images), original(images), rtol=0, atol=1e-6)


@pytest.mark.parametrize("is_deconv", [False, True])
@torch.no_grad()
def test_unet16_matches_the_original(is_deconv):
    torch.manual_seed(1)
    original = ternausnet_models.UNet16(num_classes=3, is_deconv=is_deconv).eval()
    ours = create_model("unet16", num_classes=3, is_deconv=is_deconv).eval()
    assert list(ours.state_dict()) == list(original.state_dict())
    ours.load_state_dict(original.state_dict(), strict=True)
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(images), original(images), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["unet11", "unet16"])
def test_parameter_counts_match_the_original(name):
    ours = create_model(name)
    original = getattr(ternausnet_models, name.upper().replace("UNET", "UNet"))()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in original.parameters())


@torch.no_grad()
def test_original_training_checkpoint_file_loads(tmp_path):
    """TernausNet's training scripts saved ``{"model": state_dict, "epoch": ..., "step": ...}`` from a
    ``DataParallel`` model, so every key starts with ``module.``."""
    torch.manual_seed(2)
    original = ternausnet_models.UNet11().eval()
    path = tmp_path / "model_1.pt"
    state = {f"module.{key}": value for key, value in original.state_dict().items()}
    torch.save({"model": state, "epoch": 7, "step": 1234}, path)
    ours = create_model("unet11", weights=path).eval()
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ours(images), original(images), rtol=0, atol=1e-6)

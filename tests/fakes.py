"""Stand-ins the tests share: pretrained weights that never come from a network."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from torchvision.models import WeightsEnum, get_model, get_model_weights

from ternaus_zoo.weights import torchvision_cache_file


def cache_as_torchvision(monkeypatch: pytest.MonkeyPatch, weights: WeightsEnum, content: object) -> Path:
    """Save ``content`` in the per-test ``TORCH_HOME`` as torchvision's file for ``weights``, named after its
    own sha256 prefix as torchvision names its files; ``monkeypatch`` points the entry's URL at that name."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    real = torchvision_cache_file(weights)  # e.g. resnet34-b627a593.pth
    path = real.with_name(f"{real.name.split('-')[0]}-{hashlib.sha256(buffer.getbuffer()).hexdigest()[:8]}.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getbuffer())
    monkeypatch.setattr(weights.value, "url", weights.url.rsplit("/", 1)[0] + "/" + path.name)
    return path


def cache_torchvision_weights(
    monkeypatch: pytest.MonkeyPatch, name: str, keep: str = "", entry: str = "IMAGENET1K_V1", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Save a seeded random torchvision ``name`` where ``weights="imagenet"`` looks for its ImageNet weights
    ``entry`` (under the per-test ``TORCH_HOME``, see :func:`cache_as_torchvision`) and return what was saved.

    ``keep``: save only the keys starting with it (VGG's classifier holds 120M parameters an encoder
    never reads)."""
    torch.manual_seed(seed)
    state = {key: value for key, value in get_model(name, weights=None).state_dict().items() if key.startswith(keep)}
    cache_as_torchvision(monkeypatch, get_model_weights(name)[entry], state)
    return state


# every registered segmentation family at a tiny width (a few seconds each on a CPU)
TINY_SEGMENTATION_FAMILIES = [
    ("unet", {"num_filters": 4, "depth": 3}),
    ("unet11", {"num_filters": 4}),
    ("unet11", {"num_filters": 4, "batch_norm": True}),
    ("unet16", {"num_filters": 4}),
    ("albunet34", {"num_filters": 4}),
    ("linknet34", {}),
    ("smp.Unet", {"encoder_name": "resnet18"}),
]


# the tiny run of the command-line tests: a 4-filter U-Net of depth 3 on 32 px images, two folds, on the CPU
TINY_CLI = [
    "--model.model=unet",
    '--model.model_kwargs={"num_filters": 4, "depth": 3}',
    "--data.image_size=32",
    "--data.val_size=32",
    "--data.batch_size=2",
    "--data.num_workers=0",
    "--data.n_folds=2",
    "--trainer.accelerator=cpu",
]

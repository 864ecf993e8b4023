"""Stand-ins the tests share: pretrained weights that never come from a network."""

from __future__ import annotations

import torch
from torchvision.models import get_model, get_model_weights

from ternaus_zoo.weights import torchvision_cache_file


def cache_torchvision_weights(
    name: str, keep: str = "", entry: str = "IMAGENET1K_V1", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Save a seeded random torchvision ``name`` where torchvision's weights API looks for its ImageNet
    weights ``entry`` (under the per-test ``TORCH_HOME``) and return what was saved.

    ``keep``: save only the keys starting with it (VGG's classifier holds 120M parameters an encoder
    never reads)."""
    torch.manual_seed(seed)
    state = {key: value for key, value in get_model(name, weights=None).state_dict().items() if key.startswith(keep)}
    path = torchvision_cache_file(get_model_weights(name)[entry])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
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

"""Ensembles on hand-made numbers, models rebuilt from checkpoints, and weight averaging."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from ternaus_zoo import create_model
from ternaus_zoo.inference.ensemble import (
    Ensemble,
    average_checkpoints,
    model_from_averaged_checkpoints,
    model_from_checkpoint,
    refresh_batchnorm,
)
from ternaus_zoo.weights import WeightsError, load_container


class FixedLogits(nn.Module):
    """Returns the same logits for every image of the batch: ``(B, *logits.shape)``."""

    def __init__(self, logits: list) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float64))

    def forward(self, images: Tensor) -> Tensor:
        return self.logits.expand(images.shape[0], *self.logits.shape)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


IMAGES = torch.zeros(2, 3, 4, 4)


def test_binary_mean_and_geometric_mean_by_hand():
    models = [FixedLogits([logit(0.9)]), FixedLogits([logit(0.6)])]
    mean = Ensemble(models, "mean", "sigmoid")(IMAGES)
    assert torch.allclose(mean, torch.full((2, 1), 0.75, dtype=torch.float64))
    geometric = Ensemble(models, "geometric_mean", "sigmoid")(IMAGES)
    p, q = math.sqrt(0.9 * 0.6), math.sqrt(0.1 * 0.4)  # 0.7348..., 0.2
    assert torch.allclose(geometric, torch.full((2, 1), p / (p + q), dtype=torch.float64))
    assert abs(p / (p + q) - 0.78605) < 1e-4


def test_multilabel_sigmoid_per_label():
    first, second = [0.9, 0.2, 0.5], [0.6, 0.4, 0.99]
    models = [FixedLogits([logit(p) for p in first]), FixedLogits([logit(p) for p in second])]
    geometric = Ensemble(models, "geometric_mean", "sigmoid")(IMAGES)[0]
    for label, (a, b) in enumerate(zip(first, second, strict=True)):
        p, q = math.sqrt(a * b), math.sqrt((1 - a) * (1 - b))
        assert geometric[label].item() == pytest.approx(p / (p + q), abs=1e-9)
    mean = Ensemble(models, "mean", "sigmoid")(IMAGES)[0]
    assert torch.allclose(mean, (torch.tensor(first, dtype=torch.float64) + torch.tensor(second)) / 2)


def test_multiclass_softmax_geometric_mean_is_renormalised():
    first, second = [0.7, 0.2, 0.1], [0.4, 0.4, 0.2]
    models = [FixedLogits([math.log(p) + 3 for p in first]), FixedLogits([math.log(p) - 1 for p in second])]
    geometric = Ensemble(models, "geometric_mean", "softmax")(IMAGES)[1]
    unnormalised = [math.sqrt(a * b) for a, b in zip(first, second, strict=True)]
    expected = torch.tensor([value / sum(unnormalised) for value in unnormalised], dtype=torch.float64)
    assert torch.allclose(geometric, expected)
    mean = Ensemble(models, "mean", "softmax")(IMAGES)[1]
    assert torch.allclose(mean, torch.tensor([0.55, 0.3, 0.15], dtype=torch.float64))


def test_segmentation_shapes_weights_and_logits_out():
    a = torch.randn(3, 5, 5, dtype=torch.float64)
    b = torch.randn(3, 5, 5, dtype=torch.float64)
    models = [FixedLogits(a.tolist()), FixedLogits(b.tolist())]
    weighted = Ensemble(models, "mean", "softmax", weights=[3, 1])(IMAGES)
    assert weighted.shape == (2, 3, 5, 5)
    assert torch.allclose(weighted[0], 0.75 * a.softmax(0) + 0.25 * b.softmax(0))
    for reduction in ("mean", "geometric_mean"):
        assert torch.allclose(Ensemble(models, reduction, None)(IMAGES)[1], (a + b) / 2)


def test_ensemble_of_zoo_models_combines_size_multiples():
    models = [create_model("unet", num_filters=4, depth=3), create_model("unet", num_filters=4, depth=4)]
    ensemble = Ensemble(models, activation="sigmoid").eval()
    assert ensemble.info.size_multiple == 8
    with torch.no_grad():
        assert ensemble(torch.randn(1, 3, 20, 20)).shape == (1, 1, 20, 20)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
    with pytest.raises(ValueError, match="reduction"):
        Ensemble([nn.Identity()], reduction="median")
    with pytest.raises(ValueError, match="weights"):
        Ensemble([nn.Identity(), nn.Identity()], weights=[1.0])


def test_average_checkpoints_of_hand_made_state_dicts():
    first = {
        "conv.weight": torch.tensor([1.0, 2.0]),
        "half": torch.tensor([1.0, 2.0], dtype=torch.float16),
        "bn.num_batches_tracked": torch.tensor(3),
        "double": torch.tensor([1.0], dtype=torch.float64),
    }
    second = {
        "conv.weight": torch.tensor([3.0, 6.0]),
        "half": torch.tensor([2.0, 3.0], dtype=torch.float16),
        "bn.num_batches_tracked": torch.tensor(5),
        "double": torch.tensor([2.0], dtype=torch.float64),
    }
    averaged = average_checkpoints([first, second])
    assert torch.equal(averaged["conv.weight"], torch.tensor([2.0, 4.0]))
    assert torch.equal(averaged["half"], torch.tensor([1.5, 2.5], dtype=torch.float16))
    assert averaged["bn.num_batches_tracked"].item() == 5 and averaged["bn.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(averaged["double"], torch.tensor([1.5], dtype=torch.float64))
    assert torch.equal(first["double"], torch.tensor([1.0], dtype=torch.float64))  # inputs untouched
    with pytest.raises(WeightsError, match=r"missing keys \['half'\]"):
        average_checkpoints([first, {key: value for key, value in second.items() if key != "half"}])
    with pytest.raises(WeightsError, match=r"'conv\.weight' has shape \(3,\)"):
        average_checkpoints([first, {**second, "conv.weight": torch.zeros(3)}])


def lightning_checkpoint(network: nn.Module, path, **hyper_parameters) -> None:
    state = {f"model.{key}": value for key, value in network.state_dict().items()}
    torch.save({"epoch": 3, "hyper_parameters": hyper_parameters, "state_dict": state}, path)


def test_model_from_checkpoint_rebuilds_the_model(tmp_path):
    options = {"model": "unet", "model_kwargs": {"num_filters": 4, "depth": 3}, "num_classes": 2, "in_channels": 1}
    original = create_model("unet", num_filters=4, depth=3, num_classes=2, in_channels=1).eval()
    lightning_checkpoint(original, tmp_path / "best.ckpt", weights="imagenet", **options)
    rebuilt = model_from_checkpoint(tmp_path / "best.ckpt")
    assert not rebuilt.training and rebuilt.info.num_classes == 2
    images = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), original(images))
    ensemble = Ensemble.from_checkpoints([tmp_path / "best.ckpt"] * 2, activation="softmax")
    assert len(ensemble.models) == 2


def test_model_from_checkpoint_names_what_is_missing(tmp_path):
    torch.save({"state_dict": {"model.w": torch.zeros(1)}}, tmp_path / "plain.ckpt")
    with pytest.raises(WeightsError, match=r"plain\.ckpt has no hyper_parameters"):
        model_from_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(FileNotFoundError, match=r"absent\.ckpt"):
        model_from_checkpoint(tmp_path / "absent.ckpt")


def small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))


def test_model_from_averaged_checkpoints_with_batchnorm_refresh(tmp_path):
    paths = []
    for epoch in range(3):
        torch.manual_seed(epoch)
        net = small_bn_net()
        net[1].running_mean.fill_(100.0)
        paths.append(tmp_path / f"epoch={epoch}.ckpt")
        lightning_checkpoint(net, paths[-1], model="custom")
    expected_weight = torch.stack([load_container(path)["state_dict"]["model.0.weight"] for path in paths]).mean(0)

    averaged = model_from_averaged_checkpoints(paths, loader=lambda path: small_bn_net())
    assert torch.allclose(averaged[0].weight, expected_weight)
    assert torch.allclose(averaged[1].running_mean, torch.full((2,), 100.0))

    data = [{"image": torch.full((4, 1, 3, 3), float(value))} for value in (1, 3)]
    refreshed = model_from_averaged_checkpoints(paths, loader=lambda path: small_bn_net(), bn_loader=data)
    assert not refreshed.training
    conv = refreshed[0]
    expected_mean = (conv.weight[:, 0, 0, 0] * 2 + conv.bias).detach()  # the conv output's mean over the data
    assert torch.allclose(refreshed[1].running_mean, expected_mean, atol=1e-5)


def test_refresh_batchnorm_accepts_tensors_and_tuples():
    net = small_bn_net()
    refresh_batchnorm(net, [torch.ones(2, 1, 2, 2)])
    refresh_batchnorm(net, [(torch.ones(2, 1, 2, 2), torch.zeros(2))])
    conv = net[0]
    assert torch.allclose(net[1].running_mean, (conv.weight[:, 0, 0, 0] + conv.bias).detach(), atol=1e-6)

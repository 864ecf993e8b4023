"""TTA: every augmentation's inverse against torch.rot90/torch.flip, on models that are not flip-invariant."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ternaus_zoo.inference.tta import D4, GEOMETRIC_SETS, TTA, GeometricTransform, rotate90


class Identity(nn.Module):
    def forward(self, images: Tensor) -> Tensor:
        return images


class TimesRamp(nn.Module):
    """Multiplies the input by the row-major pixel index of its own frame: depends on orientation."""

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        ramp = torch.arange(height * width, dtype=images.dtype).view(height, width) / (height * width)
        return images * ramp


class RampClassifier(nn.Module):
    """Logits (B, 2): input weighted by a row ramp and by a column ramp, summed; changes under rotation."""

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        rows = torch.linspace(-1, 1, height).view(height, 1)
        columns = torch.linspace(-1, 2, width).view(1, width)
        return torch.stack([(images * rows).mean((1, 2, 3)), (images * columns).mean((1, 2, 3))], dim=1)


class SizeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, images: Tensor) -> Tensor:
        self.sizes.append(tuple(images.shape[-2:]))
        return images


def reference_apply(images: Tensor, transform: GeometricTransform) -> Tensor:
    if transform.hflip:
        images = torch.flip(images, dims=[-1])
    return torch.rot90(images, transform.rotations, dims=(-2, -1))


def reference_invert(masks: Tensor, transform: GeometricTransform) -> Tensor:
    masks = torch.rot90(masks, -transform.rotations, dims=(-2, -1))
    return torch.flip(masks, dims=[-1]) if transform.hflip else masks


@pytest.fixture
def images() -> Tensor:
    return torch.randn(2, 3, 6, 9, generator=torch.Generator().manual_seed(0))  # not square on purpose


def test_rotate90_matches_torch_rot90(images):
    for k in range(-5, 6):
        assert torch.equal(rotate90(images, k), torch.rot90(images, k, dims=(-2, -1)))


def test_d4_has_eight_distinct_transforms(images):
    assert len(D4) == 8
    outputs = {tuple(transform.apply(images).flatten().tolist()) for transform in D4}
    assert len(outputs) == 8


@pytest.mark.parametrize("transform", D4, ids=lambda transform: transform.name)
def test_each_d4_transform_matches_torch_and_inverts(images, transform):
    assert torch.equal(transform.apply(images), reference_apply(images, transform))
    assert torch.equal(transform.invert(transform.apply(images)), images)


@pytest.mark.parametrize("transform", D4, ids=lambda transform: transform.name)
def test_single_transform_tta_maps_position_dependent_output_back(images, transform):
    model = TimesRamp()
    expected = reference_invert(model(reference_apply(images, transform)), transform)
    assert torch.allclose(TTA(model, transforms=[transform])(images), expected, atol=1e-6)
    # the ramp is not D4-invariant, so the inverse matters: the uninverted output would be wrong
    if transform.name != "identity":
        assert not torch.allclose(expected, model(images), atol=1e-3)


@pytest.mark.parametrize("transforms", ["identity", "hflip", "vflip", "flips", "d4"])
def test_identity_model_gives_the_input_back(images, transforms):
    assert torch.allclose(TTA(Identity(), transforms=transforms)(images), images, rtol=1e-6, atol=1e-7)


def test_d4_tta_of_an_asymmetric_convolution_is_the_mean_of_inverted_predictions(images):
    torch.manual_seed(0)
    model = nn.Conv2d(3, 2, kernel_size=3, padding=1).eval()
    expected = torch.stack([reference_invert(model(reference_apply(images, t)), t) for t in D4]).mean(0)
    with torch.no_grad():
        found = TTA(model, transforms="d4")(images)
        assert torch.allclose(found, expected, atol=1e-6)
        assert not torch.allclose(found, model(images), atol=1e-3)


def test_activation_averages_probabilities_not_logits(images):
    model = TimesRamp()
    logits = [reference_invert(model(reference_apply(images * 5, t)), t) for t in GEOMETRIC_SETS["hflip"]]
    sigmoid = TTA(model, transforms="hflip", activation="sigmoid")(images * 5)
    assert torch.allclose(sigmoid, torch.stack([z.sigmoid() for z in logits]).mean(0), atol=1e-6)
    softmax = TTA(model, transforms="hflip", activation="softmax")(images * 5)
    assert torch.allclose(softmax, torch.stack([z.softmax(1) for z in logits]).mean(0), atol=1e-6)
    assert torch.allclose(softmax.sum(1), torch.ones(2, 6, 9), atol=1e-6)


def test_classification_averages_logits_without_inverse(images):
    model = RampClassifier()
    per_transform = torch.stack([model(reference_apply(images, t)) for t in D4])
    assert torch.allclose(TTA(model, "d4", task="classification")(images), per_transform.mean(0), atol=1e-6)
    probabilities = TTA(model, "d4", task="classification", activation="softmax")(images)
    assert probabilities.shape == (2, 2)
    assert torch.allclose(probabilities, per_transform.softmax(-1).mean(0), atol=1e-6)


def test_scales_resize_input_and_prediction_back():
    recorder = SizeRecorder()
    constant = torch.arange(3.0).view(1, 3, 1, 1).expand(2, 3, 48, 64)
    output = TTA(recorder, transforms="scales")(constant)
    assert recorder.sizes == [(36, 48), (48, 64), (60, 80)]
    assert torch.allclose(output, constant, atol=1e-6)


def test_scales_combine_with_rotations_of_non_square_inputs():
    recorder = SizeRecorder()
    constant = torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 20, 30)
    tta = TTA(recorder, transforms="d4", scales=(0.5, 1.0))
    assert len(tta) == 16
    output = tta(constant)
    assert output.shape == constant.shape
    assert torch.allclose(output, constant, atol=1e-6)
    assert (10, 15) in recorder.sizes and (15, 10) in recorder.sizes


def test_zoo_model_keeps_its_info_and_shape():
    from ternaus_zoo import create_model

    model = create_model("unet", num_filters=4, depth=3, num_classes=2).eval()
    tta = TTA(model, "d4", activation="softmax")
    assert tta.info.size_multiple == model.info.size_multiple
    with torch.no_grad():
        output = tta(torch.randn(1, 3, 20, 28))
    assert output.shape == (1, 2, 20, 28)
    assert torch.allclose(output.sum(1), torch.ones(1, 20, 28), atol=1e-5)


def test_bad_arguments_name_the_choice():
    with pytest.raises(ValueError, match="unknown transforms"):
        TTA(Identity(), transforms="d8")
    with pytest.raises(ValueError, match="unknown activation"):
        TTA(Identity(), activation="relu")
    with pytest.raises(ValueError, match="unknown task"):
        TTA(Identity(), task="detection")

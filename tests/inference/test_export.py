"""Export to TorchScript and ONNX: outputs of the exported files equal PyTorch's (onnxruntime for ONNX)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from ternaus_zoo import create_model
from ternaus_zoo.inference.ensemble import Ensemble
from ternaus_zoo.inference.export import export_onnx, export_torchscript
from ternaus_zoo.inference.tiling import SlidingWindowPredictor
from ternaus_zoo.inference.tta import TTA
from tests.fakes import TINY_SEGMENTATION_FAMILIES


def small_unet(seed: int = 0, num_classes: int = 1):
    torch.manual_seed(seed)
    return create_model("unet", num_filters=8, depth=3, num_classes=num_classes).eval()


def ensemble_with_tta():
    return TTA(Ensemble([small_unet(0), small_unet(1)]), "d4", activation="sigmoid").eval()


def run_onnx(path, images: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def strict_export_onnx(*args, **kwargs):
    """``export_onnx`` where a failure of the default (dynamo) exporter fails the test instead of falling back."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="the default \\(dynamo\\) ONNX exporter failed")
        return export_onnx(*args, **kwargs)


def test_onnx_export_of_a_zoo_model(tmp_path):
    model = small_unet(num_classes=3)
    difference = strict_export_onnx(model, tmp_path / "unet.onnx", tile_size=64)
    assert difference is not None and difference <= 1e-4
    images = torch.randn(1, 3, 64, 64)  # a batch size that was neither traced nor checked
    with torch.no_grad():
        assert torch.allclose(run_onnx(tmp_path / "unet.onnx", images), model(images), atol=1e-4)


def test_onnx_export_of_an_ensemble_with_d4_tta(tmp_path):
    model = ensemble_with_tta()
    difference = strict_export_onnx(model, tmp_path / "ensemble.onnx", tile_size=32)
    assert difference <= 1e-4
    images = torch.randn(5, 3, 32, 32)
    found = run_onnx(tmp_path / "ensemble.onnx", images)
    with torch.no_grad():
        assert torch.allclose(found, model(images), atol=1e-4)
    assert ((found >= 0) & (found <= 1)).all()


def test_onnx_export_of_multiscale_flip_tta(tmp_path):
    model = TTA(small_unet(), "flips", scales=(0.75, 1.0, 1.25), activation="sigmoid").eval()
    assert strict_export_onnx(model, tmp_path / "scales.onnx", tile_size=64) <= 1e-4


def test_exported_onnx_model_tiles_a_larger_image(tmp_path):
    model = small_unet()
    strict_export_onnx(model, tmp_path / "unet.onnx", tile_size=32, check=False)
    session = onnxruntime.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])

    def onnx_model(tiles: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"images": np.ascontiguousarray(tiles.numpy())})[0])

    image = torch.randn(3, 70, 90)
    options = {"tile_size": 32, "batch_size": 3, "activation": "sigmoid", "progress": False}
    expected = SlidingWindowPredictor(model, **options)(image)
    assert torch.allclose(SlidingWindowPredictor(onnx_model, **options)(image), expected, atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_torchscript_round_trip(tmp_path):
    model = ensemble_with_tta()
    difference = export_torchscript(model, tmp_path / "ensemble.pt", tile_size=32)
    assert difference <= 1e-5
    loaded = torch.jit.load(str(tmp_path / "ensemble.pt"))
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)


def test_tile_size_must_be_a_multiple_of_the_model(tmp_path):
    with pytest.raises(ValueError, match=r"size_multiple 4.*Export at 48 or 52"):
        export_onnx(small_unet(), tmp_path / "x.onnx", tile_size=50)
    with pytest.raises(ValueError, match="size_multiple 4"):
        export_torchscript(small_unet(), tmp_path / "x.pt", tile_size=30)


def test_unknown_exporter(tmp_path):
    with pytest.raises(ValueError, match="unknown exporter"):
        export_onnx(small_unet(), tmp_path / "x.onnx", tile_size=32, exporter="tensorrt")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_unet11_exports_to_onnx_and_torchscript(tmp_path):
    model = create_model("unet11").eval()
    assert strict_export_onnx(model, tmp_path / "unet11.onnx", tile_size=64) <= 1e-4
    assert export_torchscript(model, tmp_path / "unet11.pt", tile_size=64) <= 1e-4


@pytest.mark.parametrize(("name", "kwargs"), TINY_SEGMENTATION_FAMILIES, ids=lambda value: str(value))
def test_every_segmentation_family_exports_with_the_default_exporter(name, kwargs, tmp_path):
    model = create_model(name, **kwargs).eval()
    difference = strict_export_onnx(model, tmp_path / "model.onnx", tile_size=64, exporter="dynamo")
    assert difference <= 1e-4

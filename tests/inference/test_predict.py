"""Predicting folders with checkpoints or a bagging manifest, TTA and tiling, on checkpoints written here."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from ternaus_zoo.inference import TTA, Ensemble
from ternaus_zoo.inference.predict import (
    FolderPredictor,
    build_predictor,
    load_predictor,
    predict_folder,
    prediction_spec,
    read_manifest,
)
from ternaus_zoo.models import create_model

KWARGS = {"num_filters": 4, "depth": 3}  # size_multiple 4


def _checkpoint(path: Path, seed: int, val_size: int | None = 32) -> Path:
    """A Lightning-style checkpoint of a tiny random U-Net, as SegmentationModule writes it."""
    torch.manual_seed(seed)
    model = create_model("unet", **KWARGS)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{key}": value for key, value in model.state_dict().items()},
            "hyper_parameters": {
                "model": "unet",
                "model_kwargs": KWARGS,
                "num_classes": 1,
                "in_channels": 3,
                "threshold": 0.5,
            },
            "datamodule_hyper_parameters": {"val_size": val_size},
        },
        path,
    )
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """``bag/manifest.json`` over two folds' checkpoints, paths relative to the bag as ``bag`` writes them."""
    bag = tmp_path / "bag"
    for fold in (0, 1):
        _checkpoint(bag / f"fold{fold}" / "checkpoints" / "best-epoch000.ckpt", seed=fold)
        _checkpoint(bag / f"fold{fold}" / "checkpoints" / "last.ckpt", seed=10 + fold)
    content = {
        "format": "ternaus_zoo.bag/1",
        "checkpoints": [f"fold{fold}/checkpoints/best-epoch000.ckpt" for fold in (0, 1)],
        "last_checkpoints": [f"fold{fold}/checkpoints/last.ckpt" for fold in (0, 1)],
        "threshold": 0.5,
        "thresholds": {"default": 0.5, "oof_best": 0.4},
        "config": {"data": {"val_size": 40}},
    }
    (bag / "manifest.json").write_text(json.dumps(content))
    return bag / "manifest.json"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for name, (height, width) in {"wide": (37, 61), "square": (48, 48), "tall": (70, 29)}.items():
        cv2.imwrite(str(folder / f"{name}.png"), generator.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return folder


def test_read_manifest_and_prediction_spec(manifest):
    content = read_manifest(manifest)
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in content["checkpoints"])
    spec = prediction_spec(manifest=manifest)
    assert [path.parent.parent.name for path in spec.checkpoints] == ["fold0", "fold1"]
    assert spec.checkpoints[0].name == "best-epoch000.ckpt"
    assert (spec.threshold, spec.oof_threshold, spec.val_size) == (0.5, 0.4, 40)  # val_size: the manifest's config
    assert spec.in_channels == 3 and spec.activation == "sigmoid"
    last = prediction_spec(manifest=manifest, which="last")
    assert [path.name for path in last.checkpoints] == ["last.ckpt", "last.ckpt"]
    single = prediction_spec([spec.checkpoints[0]])
    assert single.val_size == 32 and single.oof_threshold is None  # from the checkpoint's data module


def test_prediction_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to predict"):
        prediction_spec()
    with pytest.raises(FileNotFoundError, match="manifest"):
        prediction_spec(manifest=tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="checkpoints not found"):
        prediction_spec([tmp_path / "missing.ckpt"])


def test_build_predictor_averages_probabilities_and_is_d4_equivariant():
    torch.manual_seed(0)
    models = [create_model("unet", **KWARGS).eval() for _ in range(2)]
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = (models[0](images).sigmoid() + models[1](images).sigmoid()) / 2
        assert torch.allclose(build_predictor(models)(images), expected, atol=1e-6)
        d4 = build_predictor(models, "d4")
        assert isinstance(d4, TTA) and isinstance(d4.model, Ensemble) and d4.info.size_multiple == 4
        output = d4(images)
        assert output.min() >= 0 and output.max() <= 1
        # averaging over the whole group makes the prediction commute with its transforms
        assert torch.allclose(d4(images.flip(-1)), output.flip(-1), atol=1e-5)
        assert torch.allclose(d4(images.transpose(-2, -1)), output.transpose(-2, -1), atol=1e-5)
        logits = build_predictor(models, activation=None)(images)
        assert torch.allclose(logits, (models[0](images) + models[1](images)) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="unknown tta"):
        build_predictor(models, "rot")


@pytest.mark.parametrize(
    ("tta", "geometric", "scales"), [("scales", 1, 3), ("hflip+scales", 2, 3), ("d4+scales", 8, 3)]
)
def test_multi_scale_tta_from_its_cli_name(tta, geometric, scales):
    torch.manual_seed(0)
    models = [create_model("unet", **KWARGS).eval()]
    predictor = build_predictor(models, tta)
    assert len(predictor.transforms) == geometric and predictor.scales == (0.75, 1.0, 1.25)
    assert len(predictor) == geometric * scales
    images = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = torch.stack(
            [
                predictor.predict_one(images, transform, scale)
                for transform in predictor.transforms
                for scale in predictor.scales
            ]
        ).mean(0)
        assert torch.allclose(predictor(images), expected, atol=1e-6)
        assert not torch.allclose(predictor(images), build_predictor(models)(images), atol=1e-4)


def test_predict_folder_with_a_manifest_d4_and_tiles_writes_masks_at_original_size(manifest, images, tmp_path):
    spec = prediction_spec(manifest=manifest)
    model = load_predictor(spec, tta="d4")
    output = tmp_path / "masks"
    written = predict_folder(model, images, output, tile_size=16, tile_overlap=0.5, save_probabilities=True)
    assert [path.name for path in written] == ["square.png", "tall.png", "wide.png"]
    for path in written:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask.shape == cv2.imread(str(images / path.name)).shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 255}
        probabilities = np.load(path.with_suffix(".npy"))
        assert probabilities.shape == (1, *mask.shape) and 0 <= probabilities.min() <= probabilities.max() <= 1
        clear = np.abs(probabilities[0].astype(np.float32) - 0.5) > 1e-3  # float16 rounding near the threshold
        assert np.array_equal((mask == 255)[clear], (probabilities[0] > 0.5)[clear])


def test_tiled_tiffs_are_read_by_windows_into_tiff_masks_equal_to_the_whole_read(manifest, images, tmp_path):
    """With tiles, a TIFF goes block by block into ``<stem>.tif``; its mask is the one its PNG twin gets."""
    tifffile.imwrite(images / "tiff.tif", cv2.imread(str(images / "wide.png"))[..., ::-1], tile=(16, 16))
    model = load_predictor(prediction_spec(manifest=manifest))
    written = predict_folder(model, images, tmp_path / "masks", tile_size=16, tile_overlap=0.5, precision="32-true")
    assert [path.name for path in written] == ["square.png", "tall.png", "tiff.tif", "wide.png"]
    np.testing.assert_array_equal(tifffile.imread(written[2]), cv2.imread(str(written[3]), cv2.IMREAD_UNCHANGED))


def test_tiles_covering_the_image_give_the_whole_image_prediction():
    """A tile as large as the (padded) image: tiling must not change the prediction."""
    torch.manual_seed(0)
    model = build_predictor([create_model("unet", **KWARGS).eval()])
    image = torch.randn(3, 16, 16)
    whole = FolderPredictor(model).predict_image(image)
    tiled = FolderPredictor(model, tile_size=16).predict_image(image)
    assert whole.shape == tiled.shape == (1, 16, 16)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_overlays_beside_the_masks_paint_the_predicted_foreground(manifest, images, tmp_path):
    from ternaus_zoo.cli_inference import predict_ensemble

    output = tmp_path / "masks"
    predict_ensemble(
        [f"--manifest={manifest}", f"--data.predict_dir={images}", f"--writer.output_dir={output}", "--writer.overlay"]
    )
    for name in ("square", "tall", "wide"):
        mask = cv2.imread(str(output / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(images / f"{name}.png"))
        painted = cv2.imread(str(output / "overlays" / f"{name}.png"))
        assert painted.shape == image.shape
        background = mask == 0
        assert np.array_equal(painted[background], image[background])  # unpainted pixels are the image's own
        red = np.array([75, 25, 230], np.float64)  # CLASS_COLOURS[1] in BGR, half opacity
        expected = np.round(0.5 * image[~background].astype(np.float64) + 0.5 * red)
        assert np.abs(painted[~background].astype(np.float64) - expected).max() <= 1
    assert sorted(path.name for path in output.glob("*.png")) == ["square.png", "tall.png", "wide.png"]


def test_tiles_at_the_checkpoints_scale_match_the_whole_image_route(tmp_path, capsys):
    """A 48 px image, val_size 32: tiles of 32 at the default scale (32 / 48) see what the plain route sees."""
    from ternaus_zoo.cli_inference import predict_ensemble

    checkpoint = _checkpoint(tmp_path / "model.ckpt", seed=3, val_size=32)
    folder = tmp_path / "images"
    folder.mkdir()
    smooth = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8), (0, 0), 3)
    cv2.imwrite(str(folder / "image.png"), smooth)
    common = [f"--ckpt_path={checkpoint}", f"--data.predict_dir={folder}", "--writer.save_probabilities"]
    predict_ensemble([*common, "--tta=none", f"--writer.output_dir={tmp_path / 'whole'}"])
    predict_ensemble([*common, "--tile_size=32", f"--writer.output_dir={tmp_path / 'tiled'}"])
    assert "tiles 32 at scale 32 / longest side" in capsys.readouterr().out
    whole = np.load(tmp_path / "whole" / "image.npy").astype(np.float32)
    tiled = np.load(tmp_path / "tiled" / "image.npy").astype(np.float32)
    assert tiled.shape == whole.shape == (1, 48, 48)
    assert np.abs(tiled - whole).mean() < 0.01
    predict_ensemble([*common, "--tile_size=32", "--tile_scale=1", f"--writer.output_dir={tmp_path / 'native'}"])
    native = np.load(tmp_path / "native" / "image.npy").astype(np.float32)
    assert np.abs(native - whole).mean() > 2 * np.abs(tiled - whole).mean()  # the scale is what made them agree

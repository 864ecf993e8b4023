"""Sliding-window prediction: blending weights, tile layout, and tiled == whole-image predictions."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
import torch
from torch import Tensor, nn

from ternaus_zoo.data import read_class_mask
from ternaus_zoo.data.windows import open_tiff_windows
from ternaus_zoo.inference.tiling import (
    SlidingWindowPredictor,
    blend_weights,
    blend_window,
    plan_axis,
    predict_tiff,
    tile_starts,
)

BLENDS = ["gaussian", "pyramid", "constant"]


class Identity(nn.Module):
    def forward(self, images: Tensor) -> Tensor:
        return images


class Ones(nn.Module):
    def forward(self, images: Tensor) -> Tensor:
        return torch.ones_like(images[:, :1])


def local_net(radius: int = 3, in_channels: int = 3, seed: int = 0) -> nn.Module:
    """A fully convolutional net of ``radius`` 3x3 convolutions: each output sees ``radius`` px around it."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = in_channels
    for index in range(radius):
        out = 2 if index == radius - 1 else 6
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.Tanh()]
        channels = out
    return nn.Sequential(*layers[:-1]).eval()


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("size", [1, 2, 7, 64, 65])
def test_window_positive_symmetric_peaked(blend, size):
    window = blend_window(size, blend)
    assert window.shape == (size,)
    assert (window > 0).all()
    assert np.allclose(window, window[::-1])
    assert window.max() == window[(size - 1) // 2] == 1.0
    if blend != "constant" and size > 2:
        assert window[0] < window[(size - 1) // 2]
        half = window[: (size + 1) // 2]
        assert (np.diff(half) >= 0).all()  # rises to the centre


@pytest.mark.parametrize("blend", BLENDS)
def test_weights_2d_symmetric_with_centre_peak(blend):
    weights = blend_weights(33, blend)
    assert weights.shape == (33, 33)
    assert (weights > 0).all()
    for symmetric in (weights.T, weights.flip(0), weights.flip(1)):
        assert torch.allclose(weights, symmetric)
    assert weights[16, 16] == weights.max()


def test_tile_starts_are_full_tiles_with_the_last_shifted_inward():
    assert tile_starts(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert tile_starts(512, 256, 192) == [0, 192, 256]
    assert tile_starts(256, 256, 192) == [0]
    assert tile_starts(100, 256, 192) == [0]
    for length in (257, 300, 1000, 1023):
        starts = tile_starts(length, 256, 200)
        assert starts[0] == 0 and starts[-1] + 256 == length
        assert all(b - a <= 200 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("length", [50, 256, 700, 901])
def test_normalised_axis_weights_sum_to_one(blend, length):
    plan = plan_axis(length, 128, 96, blend_window(128, blend))
    total = np.zeros(length)
    for start, weights in zip(plan.starts, plan.weights, strict=True):
        total[start : start + plan.extent] += weights
    assert np.allclose(total, 1.0, atol=1e-12)


@pytest.mark.parametrize("blend", BLENDS)
def test_constant_prediction_is_reconstructed_exactly(blend):
    predictor = SlidingWindowPredictor(Ones(), tile_size=128, overlap=0.3, blend=blend, progress=False)
    output = predictor(torch.zeros(3, 700, 900))
    assert output.shape == (1, 700, 900)
    assert torch.allclose(output, torch.ones_like(output), atol=1e-6)


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("size", [(700, 900), (100, 150), (128, 300)])
def test_identity_model_gives_the_image_back(blend, size):
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
    predictor = SlidingWindowPredictor(Identity(), 128, overlap=0.25, blend=blend, batch_size=3, progress=False)
    assert torch.allclose(predictor(image), image, atol=1e-5)


def test_tiled_equals_whole_image_prediction_of_a_local_model():
    """With the context-poor ``margin = receptive radius`` dropped at inner tile sides, the blend is exact."""
    radius = 3
    model = local_net(radius)
    image = torch.randn(3, 700, 900, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(image[None])[0]
    tiled = SlidingWindowPredictor(model, tile_size=128, overlap=0.25, margin=radius, progress=False)(image)
    assert torch.allclose(tiled, whole, atol=1e-5)
    # without the margin the tile borders (zero padding inside the image) show: the check above has teeth
    naive = SlidingWindowPredictor(model, tile_size=128, overlap=0.25, blend="constant", progress=False)(image)
    assert (naive - whole).abs().max() > 1e-3


def test_gaussian_blend_keeps_tile_border_errors_small():
    model = local_net(3)
    image = torch.randn(3, 300, 400, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(image[None])[0]
    errors = {
        blend: (SlidingWindowPredictor(model, 96, overlap=0.5, blend=blend, progress=False)(image) - whole).abs().mean()
        for blend in BLENDS
    }
    assert errors["gaussian"] < errors["constant"] and errors["pyramid"] < errors["constant"]


def test_float16_accumulator_sigmoid_and_batched_input():
    model = local_net(2)
    image = torch.randn(1, 3, 300, 260, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(image).sigmoid()
    predictor = SlidingWindowPredictor(
        model, 64, overlap=0.5, margin=2, activation="sigmoid", accumulator_dtype=torch.float16, progress=False
    )
    output = predictor(image)
    assert output.shape == (1, 2, 300, 260) and output.dtype == torch.float16
    assert torch.allclose(output.float(), whole, atol=2e-3)


def test_uint8_numpy_input_preprocessed_per_tile_into_a_memmap(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(3, 150, 210), dtype=np.uint8)
    path = tmp_path / "probabilities.npy"
    predictor = SlidingWindowPredictor(
        Identity(),
        tile_size=64,
        preprocess=lambda tiles: tiles.float() / 255,
        output_path=path,
        num_classes=3,
        progress=False,
    )
    output = predictor(image)
    stored = np.load(path, mmap_mode="r")
    assert stored.shape == (3, 150, 210)
    assert np.allclose(stored, output.numpy()) and np.allclose(stored, image / 255, atol=1e-5)


def test_zoo_model_with_tta_runs_tiled():
    from ternaus_zoo import create_model
    from ternaus_zoo.inference.tta import TTA

    model = TTA(create_model("unet", num_filters=4, depth=3), "hflip")
    output = SlidingWindowPredictor(model, tile_size=64, activation="sigmoid", progress=False)(torch.randn(3, 90, 150))
    assert output.shape == (1, 90, 150)
    assert ((output >= 0) & (output <= 1)).all()
    with pytest.warns(UserWarning, match="size_multiple"):
        SlidingWindowPredictor(model, tile_size=62)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowPredictor(Identity(), tile_size=64, overlap=1.0)
    with pytest.raises(ValueError, match="margin"):
        SlidingWindowPredictor(Identity(), tile_size=64, margin=32)
    with pytest.raises(ValueError, match="2 \\* margin"):
        SlidingWindowPredictor(Identity(), tile_size=64, stride=60, margin=8, progress=False)(torch.zeros(1, 200, 200))
    with pytest.raises(ValueError, match="one image"):
        SlidingWindowPredictor(Identity(), tile_size=64)(torch.zeros(2, 1, 100, 100))
    with pytest.raises(ValueError, match="logits"):
        SlidingWindowPredictor(nn.Flatten(), tile_size=64, progress=False)(torch.zeros(1, 100, 100))


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, time
    import numpy as np, torch
    from torch import nn
    from ternaus_zoo.inference.tiling import SlidingWindowPredictor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)).eval()
    image = np.random.default_rng(0).integers(0, 256, size=(3, 5000, 5000), dtype=np.uint8)
    with torch.no_grad():  # warm up the allocator and kernels on one tile
        model(torch.zeros(2, 3, 512, 512))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    predictor = SlidingWindowPredictor(
        model, tile_size=512, batch_size=2, accumulator_dtype=torch.float16,
        preprocess=lambda tiles: tiles.float() / 255, progress=False,
    )
    output = predictor(image)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {"shape": list(output.shape), "dtype": str(output.dtype), "peak_increase_mb": (after - before) / 1024,
              "seconds": time.perf_counter() - start, "finite": bool(torch.isfinite(output).all())}
    print(json.dumps(report))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in kilobytes on Linux only")
def test_5000x5000_image_runs_with_memory_bounded_by_the_tile():
    """A whole-image forward pass would need 5000*5000*8*4 B = 800 MB for one activation; tiling needs the
    50 MB float16 output plus tile-sized activations."""
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 5000, 5000] and report["dtype"] == "torch.float16" and report["finite"]
    assert report["peak_increase_mb"] < 200, report  # measured: about 85 MB


class Recorder(nn.Module):
    """Identity on its first channel, keeping every batch of tiles it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, images: Tensor) -> Tensor:
        self.seen.append(images.clone())
        return images[:, :1]


def test_scaled_tiles_are_cut_at_full_resolution_and_resized_for_the_model():
    """scale 0.25: tiles of 32 model pixels cover 128 image pixels; the output stays at 200 x 300."""
    import torch.nn.functional as F

    ramp = torch.linspace(0, 1, 300)[None, None, :] * torch.linspace(0.5, 1, 200)[None, :, None]
    image = ramp.expand(3, -1, -1).contiguous()
    recorder = Recorder()
    predictor = SlidingWindowPredictor(recorder, tile_size=32, scale=0.25, overlap=0.25, progress=False)
    output = predictor(image)
    assert output.shape == (1, 200, 300)
    tiles = torch.cat(recorder.seen)
    # rows start at 0 and 72, columns at 0, 96 and 172: tiles of 128 image pixels with stride 96
    assert tiles.shape == (len(tile_starts(200, 128, 96)) * len(tile_starts(300, 128, 96)), 3, 32, 32) == (6, 3, 32, 32)
    expected_first = F.interpolate(image[None, :, :128, :128], size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(tiles[:1], expected_first)
    # down and up again reproduces a smooth image at full resolution, away from the image border
    assert (output[0, 8:-8, 8:-8] - image[0, 8:-8, 8:-8]).abs().max() < 0.01


def test_scaled_tile_larger_than_the_image_is_the_resized_image_padded():
    """A 40 x 60 image at scale 0.5 fits one 32 px tile: the model sees it at 20 x 30, padded to 32 x 32."""
    recorder = Recorder()
    image = torch.rand(3, 40, 60)
    output = SlidingWindowPredictor(recorder, tile_size=32, scale=0.5, progress=False)(image)
    (tile,) = recorder.seen
    assert tile.shape == (1, 3, 32, 32)
    resized = torch.nn.functional.interpolate(image[None], size=(20, 30), mode="bilinear", antialias=True)
    torch.testing.assert_close(tile[:, :, 6:26, 1:31], resized)  # centred: (32 - 20) / 2 rows, (32 - 30) / 2 columns
    assert output.shape == (1, 40, 60)


def test_uint8_tiles_are_resized_before_their_conversion():
    recorder = Recorder()
    image = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    dtypes = []

    def preprocess(tiles: Tensor) -> Tensor:
        dtypes.append((tiles.dtype, tuple(tiles.shape[-2:])))
        return tiles.float() / 255

    SlidingWindowPredictor(recorder, tile_size=16, scale=0.5, preprocess=preprocess, progress=False)(image)
    assert dtypes and all(entry == (torch.uint8, (16, 16)) for entry in dtypes)


def test_blocks_put_together_equal_the_whole_image_prediction():
    image = torch.rand(3, 150, 233)
    predictor = SlidingWindowPredictor(local_net(), tile_size=32, overlap=0.25, progress=False, activation="sigmoid")
    whole = predictor(image)
    pieces = torch.full_like(whole, float("nan"))
    for y, x, block in predictor.blocks(image, block_tiles=2):
        assert torch.isnan(pieces[:, y : y + block.shape[1], x : x + block.shape[2]]).all()  # no block twice
        pieces[:, y : y + block.shape[1], x : x + block.shape[2]] = block
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("multilabel", [False, True])
def test_predict_tiff_writes_the_mask_of_the_whole_image_prediction(tmp_path, multilabel):
    pixels = np.random.default_rng(0).integers(0, 255, (130, 170, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "image.tif", pixels, tile=(32, 32), photometric="rgb")
    predictor = SlidingWindowPredictor(
        local_net(), tile_size=32, progress=False, activation="sigmoid", preprocess=lambda tiles: tiles.float() / 255
    )
    with open_tiff_windows(tmp_path / "image.tif") as windows:
        written = predict_tiff(predictor, windows, tmp_path / "mask.tif", multilabel=multilabel)
    probabilities = predictor(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))  # two channels
    if multilabel:  # a 0/255 channel per class
        np.testing.assert_array_equal(tifffile.imread(written), (probabilities > 0.5).numpy().transpose(1, 2, 0) * 255)
    else:  # class indices, as the data sets read them back
        np.testing.assert_array_equal(read_class_mask(written, 2), probabilities.argmax(0).numpy())

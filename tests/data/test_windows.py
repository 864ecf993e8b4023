"""Windows of a TIFF read lazily (for tiled prediction of large images) give the pixels read_image gives."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from ternaus_zoo.data import DataError, read_image
from ternaus_zoo.data.windows import open_tiff_windows

from .synthetic import random_image, write

RGB = random_image(150, 210)
CASES = {
    "tiled RGB": (RGB, {"tile": (64, 64), "photometric": "rgb"}),
    "striped, deflate": (RGB, {"photometric": "rgb", "compression": "zlib", "rowsperstrip": 16}),
    "planar RGB": (np.ascontiguousarray(RGB.transpose(2, 0, 1)), {"photometric": "rgb", "planarconfig": "separate"}),
    "16-bit grey": (RGB[..., 0].astype(np.uint16) * 257, {"tile": (32, 32)}),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels", [None, 3])
def test_a_window_equals_that_part_of_the_whole_image(tmp_path, case, channels):
    pixels, options = CASES[case]
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, pixels, **options)
    whole = read_image(path, channels).transpose(2, 0, 1)
    with open_tiff_windows(path, channels) as windows:
        assert windows.shape == whole.shape
        window = windows[:, 37:141, 70:203]
    assert window.dtype == whole.dtype
    np.testing.assert_array_equal(window, whole[:, 37:141, 70:203])


def test_files_read_whole_are_not_windowed(tmp_path):
    stack = tmp_path / "stack.tif"  # pages of one size are channels
    tifffile.imwrite(stack, np.stack([RGB[..., 0]] * 3), photometric="minisblack")
    assert open_tiff_windows(stack) is None
    assert open_tiff_windows(write(tmp_path / "image.png", RGB)) is None


def test_an_impossible_channel_count_names_the_file(tmp_path):
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, random_image(20, 30, channels=5), photometric="minisblack", planarconfig="contig")
    with pytest.raises(DataError, match=r"five\.tif.*5-channel image to 3 channels"):
        open_tiff_windows(path, channels=3)

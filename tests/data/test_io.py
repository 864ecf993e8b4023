"""Reading images and masks: channel orders, bit depths, thresholds, and errors that name the file."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from ternaus_zoo.data import DataError, list_images, read_binary_mask, read_class_mask, read_image, to_float
from ternaus_zoo.data.io import convert_channels

from .synthetic import disc_mask, random_image, write


def test_grey_image_has_one_channel(tmp_path):
    pixels = random_image(5, 7, channels=1)
    image = read_image(write(tmp_path / "grey.png", pixels))
    assert image.shape == (5, 7, 1) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[:, :, 0], pixels)


def test_rgb_image_is_converted_from_bgr(tmp_path):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    image = read_image(write(tmp_path / "blue.png", bgr))
    assert image.shape == (4, 6, 3)
    assert image[0, 0].tolist() == [0, 0, 200]


def test_rgba_image_keeps_alpha_last(tmp_path):
    bgra = np.zeros((4, 6, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 100, 50  # red, alpha
    image = read_image(write(tmp_path / "rgba.png", bgra))
    assert image.shape == (4, 6, 4) and image[0, 0].tolist() == [100, 0, 0, 50]


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_image_is_scaled_by_its_own_maximum(tmp_path, channels):
    pixels = np.full((3, 4, channels), 65535, np.uint16)
    pixels[0, 0] = 257  # would read as 1.0 (or overflow) if treated as 8-bit
    image = read_image(write(tmp_path / "deep.png", pixels[:, :, 0] if channels == 1 else pixels))
    assert image.dtype == np.float32 and image.shape == (3, 4, channels)
    assert image.max() == pytest.approx(1.0)
    assert image[0, 0, 0] == pytest.approx(257 / 65535)


def test_16_bit_tiff(tmp_path):
    pixels = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    image = read_image(write(tmp_path / "deep.tif", pixels))
    np.testing.assert_allclose(image[:, :, 0], pixels / 65535, rtol=1e-6)


def test_to_float_maps_both_kinds_to_unit_range():
    assert to_float(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0
    half = np.full((2, 2, 1), 0.5, np.float32)
    assert to_float(half) is half


def test_convert_channels():
    grey = np.full((2, 3, 1), 7, np.uint8)
    assert convert_channels(grey, 3).shape == (2, 3, 3)
    rgba = np.zeros((2, 3, 4), np.uint8)
    assert convert_channels(rgba, 3).shape == (2, 3, 3)
    assert convert_channels(rgba, 1).shape == (2, 3, 1)
    with pytest.raises(DataError, match="2-channel"):
        convert_channels(np.zeros((2, 3, 2), np.uint8), 3)


def test_read_image_converts_channels_on_request(tmp_path):
    path = write(tmp_path / "grey.png", random_image(5, 7, channels=1))
    assert read_image(path, channels=3).shape == (5, 7, 3)


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: empty file"):
        read_image(path)


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"corrupt\.jpg: not a readable image"):
        read_image(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


def test_jpeg_mask_is_binarised_by_threshold(tmp_path):
    mask = disc_mask(64, 64)
    path = tmp_path / "mask.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 50])
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert len(np.unique(raw)) > 2  # JPEG noise: values other than 0 and 255
    binary = read_binary_mask(path)
    assert binary.dtype == np.uint8 and set(np.unique(binary).tolist()) == {0, 1}
    assert (binary != (mask > 127)).mean() < 0.01


def test_binary_mask_uses_the_red_channel_of_colour_files(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[:2, :, 2] = 255  # red in the top half
    assert read_binary_mask(write(tmp_path / "red.png", bgr))[:, 0].tolist() == [1, 1, 0, 0]


def test_zero_one_mask_with_default_threshold_raises(tmp_path):
    path = write(tmp_path / "01.png", (disc_mask(8, 8) > 0).astype(np.uint8))
    with pytest.raises(DataError, match=r"01\.png.*threshold=0"):
        read_binary_mask(path)
    assert read_binary_mask(path, threshold=0).sum() > 0


def test_class_mask_values_are_checked(tmp_path):
    mask = np.array([[0, 1], [2, 11]], np.uint8)
    path = write(tmp_path / "classes.png", mask)
    np.testing.assert_array_equal(read_class_mask(path, num_classes=11, ignore_index=11), mask)
    with pytest.raises(DataError, match=r"classes\.png: mask values 11 are outside the declared classes 0\.\.2"):
        read_class_mask(path, num_classes=3)
    with pytest.raises(DataError, match=r"2, 11 are outside .* or 255 \(ignore\)"):
        read_class_mask(path, num_classes=2, ignore_index=255)


def test_colour_class_mask_is_refused(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[0, 0] = (0, 128, 255)
    with pytest.raises(DataError, match="colour image"):
        read_class_mask(write(tmp_path / "palette.png", bgr), num_classes=3)
    grey_as_rgb = np.repeat(np.array([[0, 1], [2, 1]], np.uint8)[:, :, None], 3, axis=2)
    assert read_class_mask(write(tmp_path / "grey3.png", grey_as_rgb), num_classes=3).shape == (2, 2)


def test_list_images_pairs_stems_and_ignores_other_files(tmp_path, caplog):
    write(tmp_path / "b.JPG", random_image(4, 4))
    write(tmp_path / "a.png", random_image(4, 4))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="ternaus_zoo.data"):
        found = list_images(tmp_path)
    assert list(found) == ["a", "b"] and found["b"].name == "b.JPG"
    assert "ignored 2 non-image entries" in caplog.text and "notes.txt" in caplog.text


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_images(tmp_path / "empty")
    write(tmp_path / "dup" / "x.png", random_image(4, 4))
    write(tmp_path / "dup" / "x.jpg", random_image(4, 4))
    with pytest.raises(DataError, match=r"share a stem.*x\.jpg and x\.png"):
        list_images(tmp_path / "dup")

"""Formats beyond OpenCV's: GIF and palette PNG (Pillow), multi-page and multi-channel TIFF (tifffile).

Every test writes its own files: Pillow for GIF and palette PNG, tifffile for multi-page TIFF, OpenCV
for the rest.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from ternaus_zoo.data import DataError, SegmentationDataset, list_images, read_binary_mask, read_class_mask, read_image

from .synthetic import disc_mask, random_image, write

# VOC-like colours: none of them is its own index, and they are not grey
COLOURS = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]


def bands(height: int = 6, width: int = 8, classes: int = 4) -> np.ndarray:
    """``uint8`` ``(H, W)`` class indices ``0..classes-1`` in vertical bands."""
    return (np.arange(width)[None, :].repeat(height, 0) * classes // width).astype(np.uint8)


def save_palette(path, indices: np.ndarray, colours, **options):
    """A palette ("P" mode) file of ``indices`` with the palette ``colours``, written by Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("P", indices.shape[::-1])
    image.putdata(indices.ravel().tolist())
    image.putpalette([value for colour in colours for value in colour])
    image.save(path, **options)
    return path


def save_grey_gif(path, grey: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(path)
    return path


# GIF


def test_gif_image_gives_its_colours_in_rgb_order(tmp_path):
    indices = bands()
    path = save_palette(tmp_path / "image.gif", indices, COLOURS)
    image = read_image(path)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.array(COLOURS, np.uint8)[indices])


def test_gif_image_is_its_first_frame(tmp_path):
    first, second = (Image.new("P", (4, 3), index) for index in (1, 2))
    for frame in (first, second):
        frame.putpalette([value for colour in COLOURS for value in colour])
    first.save(tmp_path / "animated.gif", save_all=True, append_images=[second])
    assert Image.open(tmp_path / "animated.gif").n_frames == 2
    assert read_image(tmp_path / "animated.gif")[0, 0].tolist() == list(COLOURS[1])


def test_grey_gif_image_has_one_channel(tmp_path):
    grey = random_image(5, 7, channels=1)
    path = save_grey_gif(tmp_path / "grey.gif", grey)
    image = read_image(path)
    assert image.shape == (5, 7, 1)
    np.testing.assert_array_equal(image[:, :, 0], grey)
    assert read_image(path, channels=3).shape == (5, 7, 3)


def test_gif_binary_mask(tmp_path):
    mask = disc_mask(20, 24)  # 0 and 255
    path = save_grey_gif(tmp_path / "mask.gif", mask)
    # Pillow stores it as palette indices 0/1 with a black/white palette: read by its grey levels
    assert Image.open(path).mode == "P" and set(np.unique(np.asarray(Image.open(path)))) == {0, 1}
    binary = read_binary_mask(path)
    assert binary.dtype == np.uint8 and binary.shape == (20, 24)
    np.testing.assert_array_equal(binary, (mask > 0).astype(np.uint8))


def test_gif_class_mask_with_a_colour_palette_gives_indices(tmp_path):
    indices = bands()
    path = save_palette(tmp_path / "classes.gif", indices, COLOURS)
    np.testing.assert_array_equal(read_class_mask(path, num_classes=4), indices)


def test_corrupt_gif_is_named(tmp_path):
    path = tmp_path / "corrupt.gif"
    path.write_bytes(b"GIF89a" + b"\x00" * 7 + b"garbage")
    with pytest.raises(DataError, match=r"corrupt\.gif: not a readable image"):
        read_image(path)
    with pytest.raises(DataError, match=r"corrupt\.gif: not a readable image"):
        read_binary_mask(path)


def test_truncated_gif_is_named(tmp_path):
    whole = save_grey_gif(tmp_path / "whole.gif", random_image(32, 32, channels=1)).read_bytes()
    path = tmp_path / "truncated.gif"
    path.write_bytes(whole[: len(whole) - 40])
    with pytest.raises(DataError, match=r"truncated\.gif: not a readable image"):
        read_image(path)


def test_list_images_finds_gif(tmp_path):
    save_grey_gif(tmp_path / "a.gif", disc_mask(8, 8))
    write(tmp_path / "b.png", random_image(8, 8))
    assert list(list_images(tmp_path)) == ["a", "b"]


# palette PNG


def test_palette_png_mask_gives_its_indices_not_its_colours(tmp_path):
    indices = bands()
    path = save_palette(tmp_path / "classes.png", indices, COLOURS)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 3  # OpenCV would expand it to colours
    mask = read_class_mask(path, num_classes=4)
    assert mask.dtype == np.uint8 and mask.shape == (6, 8)
    np.testing.assert_array_equal(mask, indices)
    with pytest.raises(DataError, match=r"classes\.png: mask values 3 are outside the declared classes 0\.\.2"):
        read_class_mask(path, num_classes=3)
    np.testing.assert_array_equal(read_binary_mask(path, threshold=0), (indices > 0).astype(np.uint8))


def test_palette_png_mask_of_zeros_and_ones_needs_threshold_zero(tmp_path):
    indices = (bands() > 1).astype(np.uint8)
    path = save_palette(tmp_path / "binary.png", indices, COLOURS[:2])
    with pytest.raises(DataError, match=r"binary\.png.*threshold=0"):
        read_binary_mask(path)
    np.testing.assert_array_equal(read_binary_mask(path, threshold=0), indices)


def test_palette_png_with_ignore_index(tmp_path):
    indices = bands()
    indices[0, 0] = 255  # VOC's void
    colours = COLOURS + [(0, 0, 0)] * 251 + [(224, 224, 192)]
    path = save_palette(tmp_path / "void.png", indices, colours)
    np.testing.assert_array_equal(read_class_mask(path, num_classes=4, ignore_index=255), indices)


def test_grey_palette_png_mask_gives_its_grey_levels(tmp_path):
    # a black/white palette, as some tools save a 0/255 mask: read like the grey file it looks like
    indices = (bands() > 1).astype(np.uint8)
    path = save_palette(tmp_path / "grey.png", indices, [(0, 0, 0), (255, 255, 255)])
    np.testing.assert_array_equal(read_binary_mask(path), indices)
    np.testing.assert_array_equal(read_class_mask(path, num_classes=256), indices * 255)


def test_palette_png_image_gives_its_colours(tmp_path):
    indices = bands()
    image = read_image(save_palette(tmp_path / "image.png", indices, COLOURS))
    np.testing.assert_array_equal(image, np.array(COLOURS, np.uint8)[indices])


# TIFF


def test_16_bit_rgb_tiff_is_scaled_and_in_rgb_order(tmp_path):
    bgr = np.zeros((3, 4, 3), np.uint16)
    bgr[..., 0], bgr[..., 2] = 65535, 257  # blue, red in OpenCV's order
    image = read_image(write(tmp_path / "deep.tif", bgr))
    assert image.dtype == np.float32 and image.shape == (3, 4, 3)
    np.testing.assert_allclose(image[0, 0], [257 / 65535, 0, 1], rtol=1e-6)


def test_float_tiff_is_kept(tmp_path):
    pixels = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    image = read_image(write(tmp_path / "float.tif", pixels))
    assert image.dtype == np.float32 and image.shape == (3, 4, 1)
    np.testing.assert_array_equal(image[:, :, 0], pixels)


def test_three_page_16_bit_tiff_stacks_pages_as_channels(tmp_path):
    pages = np.stack([np.full((5, 6), value, np.uint16) for value in (0, 1000, 65535)])
    pages[1, 2, 3] = 30000
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tiff:
        for page in pages:
            tiff.write(page, photometric="minisblack")
    assert len(tifffile.TiffFile(path).pages) == 3
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (5, 6, 3)
    assert image.min() >= 0 and image.max() <= 1
    np.testing.assert_allclose(image, pages.transpose(1, 2, 0) / 65535, rtol=1e-6)
    assert image[2, 3, 1] == pytest.approx(30000 / 65535)


def test_multi_page_tiff_compressed_by_opencv(tmp_path):
    # LZW, which tifffile decodes only with the optional imagecodecs package and OpenCV's libtiff always
    pages = [np.full((4, 5), value, np.uint8) for value in (10, 20, 30)]
    path = tmp_path / "lzw.tif"
    assert cv2.imwritemulti(str(path), pages)
    image = read_image(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("layout", ["pages", "planes"])
def test_channels_first_five_channel_tiff(tmp_path, layout):
    pixels = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7) * 100
    path = tmp_path / "chw.tif"
    if layout == "pages":  # tifffile's default for a (C, H, W) array: C pages
        tifffile.imwrite(path, pixels)
    else:  # one page of 5 planar samples
        tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="separate")
    image = read_image(path)
    assert image.shape == (6, 7, 5) and image.dtype == np.float32
    np.testing.assert_allclose(image, pixels.transpose(1, 2, 0) / 65535, rtol=1e-6)


@pytest.mark.parametrize("layout", ["pages", "interleaved"])
def test_channels_last_five_channel_tiff(tmp_path, layout):
    pixels = random_image(12, 10, channels=5)
    path = tmp_path / "hwc.tif"
    if layout == "pages":  # tifffile's default for an (H, W, 5) array: 12 pages of 10 x 5
        tifffile.imwrite(path, pixels)
    else:
        tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="contig")
    image = read_image(path)
    assert image.shape == (12, 10, 5) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels)


def test_planar_rgb_tiff(tmp_path):
    rgb = random_image(6, 7, channels=3)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, rgb.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(path), rgb)


def test_uint32_tiff_is_scaled_by_its_maximum(tmp_path):
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.full((3, 4), 2**31, np.uint32))
    image = read_image(path)
    assert image.dtype == np.float32 and image[0, 0, 0] == pytest.approx(0.5)


def test_multi_page_tiff_masks(tmp_path):
    path = tmp_path / "mask.tif"
    first = disc_mask(8, 8)
    tifffile.imwrite(path, np.stack([first, 255 - first]))
    np.testing.assert_array_equal(read_binary_mask(path), (first > 0).astype(np.uint8))  # the first page
    with pytest.raises(DataError, match=r"mask\.tif: the class mask is a colour image \(its 2 channels differ\)"):
        read_class_mask(path, num_classes=256)


def test_corrupt_tiff_is_named(tmp_path):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 20)
    with pytest.raises(DataError, match=r"corrupt\.tif: not a readable TIFF"):
        read_image(path)


# end to end


def test_segmentation_dataset_over_tif_images_and_gif_masks(tmp_path):
    """The retina layout: ``images/*.tif`` (8-bit RGB) and ``masks/*.gif`` (0/255)."""
    masks = {}
    for index in range(3):
        stem = f"{21 + index}_training"
        write(tmp_path / "images" / f"{stem}.tif", random_image(20, 24, seed=index))
        masks[stem] = disc_mask(20, 24) if index else np.zeros((20, 24), np.uint8)
        save_grey_gif(tmp_path / "masks" / f"{stem}.gif", masks[stem])
    dataset = SegmentationDataset(tmp_path / "images", tmp_path / "masks")
    assert dataset.stems == sorted(masks) and len(dataset) == 3
    for index, stem in enumerate(dataset.stems):
        item = dataset[index]
        assert item["name"] == stem and item["image"].shape == (3, 20, 24)
        expected_image = cv2.cvtColor(random_image(20, 24, seed=index), cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
        np.testing.assert_allclose(item["image"].numpy(), expected_image / 255, rtol=1e-6)
        assert item["mask"].shape == (1, 20, 24)
        np.testing.assert_array_equal(item["mask"][0].numpy(), (masks[stem] > 0).astype(np.float32))

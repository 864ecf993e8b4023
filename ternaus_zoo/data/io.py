"""Reading images and masks from disk, each format with the library made for it, with errors that name the file.

Conventions (every other module of :mod:`ternaus_zoo.data` relies on them):

* images are ``(H, W, C)`` numpy arrays in RGB(A) channel order, ``C >= 1`` (a grey file gives
  ``C == 1``). 8-bit files stay ``uint8`` (0..255, the fast path of albumentations); any other
  unsigned integer depth (16-bit PNG/TIFF...) becomes ``float32`` in [0, 1], divided by the maximum
  of its dtype (65535 for ``uint16``), so a 16-bit file is never read as if it were 8-bit. Float
  files are taken as already in [0, 1]. :func:`to_float` brings both kinds to ``float32`` [0, 1].
* masks are ``(H, W)`` integer arrays: ``uint8`` {0, 1} for binary masks, class indices for class
  masks.

The format is told by the file's first bytes, not by its extension, and each goes to its decoder in
:mod:`ternaus_zoo.data.formats`: GIF, and palette PNG read as a mask, to Pillow
(:mod:`~ternaus_zoo.data.formats.pillow`); TIFF to tifffile or OpenCV (:mod:`~ternaus_zoo.data.formats.tiff`);
every other format to OpenCV (:mod:`~ternaus_zoo.data.formats.opencv`). Each module's docstring says what its
files give.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ternaus_zoo.data.errors import DataError, PathLike, format_examples
from ternaus_zoo.data.formats.opencv import read_rgb
from ternaus_zoo.data.formats.pillow import read_pillow
from ternaus_zoo.data.formats.tiff import read_tiff

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF


def read_header(path: PathLike, size: int = 32) -> bytes:
    """The first ``size`` bytes of the file, which tell its format.

    Raises:
        DataError: the file is missing, unreadable or empty.
    """
    try:
        with open(path, "rb") as file:
            header = file.read(size)
    except OSError as error:
        raise DataError(path, f"cannot be read: {error}") from error
    if not header:
        raise DataError(path, "empty file (0 bytes)")
    return header


def _read_pixels(path: Path, mask: bool = False) -> np.ndarray:
    """The file's pixels as ``(H, W, C)`` in RGB(A) order and the file's own dtype, each format read
    by its library (see the module docstring); ``mask=True`` gives palette PNGs to Pillow too.

    Raises:
        DataError: the file is missing, empty, corrupt, or in a format none of the libraries reads.
    """
    header = read_header(path)
    if header.startswith(_GIF_SIGNATURES):
        return read_pillow(path, mask)
    # colour type 3 in the PNG's first chunk (IHDR): a palette PNG
    if mask and header.startswith(_PNG_SIGNATURE) and header[12:16] == b"IHDR" and header[25:26] == b"\x03":
        return read_pillow(path, mask)
    if header.startswith(TIFF_SIGNATURES):
        return read_tiff(path)
    return read_rgb(path)


def to_supported_dtype(image: np.ndarray, path: Path) -> np.ndarray:
    """Keep ``uint8``; scale other unsigned integers to ``float32`` [0, 1] by their dtype's maximum."""
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.unsignedinteger):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return image.astype(np.float32, copy=False)
    raise DataError(path, f"unsupported pixel type {image.dtype} (expected unsigned integers or floats)")


def convert_channels(image: np.ndarray, channels: int, path: PathLike = "<array>") -> np.ndarray:
    """Bring an ``(H, W, C)`` image to ``channels`` channels.

    Grey to RGB repeats the channel, RGB(A) to grey uses OpenCV's luminance, RGBA to RGB drops alpha;
    any other change raises :class:`DataError`.
    """
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have in (3, 4) and channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)[:, :, None]
    if have == 4 and channels == 3:
        return np.ascontiguousarray(image[:, :, :3])
    raise DataError(path, f"cannot convert a {have}-channel image to {channels} channels")


def image_with_channels(image: np.ndarray | PathLike, channels: int) -> np.ndarray:
    """An image file (:func:`read_image`) or an ``(H, W[, C])`` array as it gives them, as ``(H, W, channels)``."""
    if isinstance(image, str | os.PathLike):
        return read_image(image, channels)
    return convert_channels(image[..., None] if image.ndim == 2 else image, channels)


def read_image(path: PathLike, channels: int | None = None) -> np.ndarray:
    """An image file as ``(H, W, C)`` RGB(A): ``uint8`` for 8-bit files, else ``float32`` in [0, 1].

    Args:
        path: PNG, JPEG, BMP, WebP, GIF (first frame), TIFF (multi-page and multi-channel too)...;
            grey, RGB, RGBA or more channels, 8 or 16 bits or float (see the module docstring).
        channels: if given, convert to this many channels (see :func:`convert_channels`); by default
            the file's own channel count is kept.
    """
    path = Path(path)
    image = to_supported_dtype(_read_pixels(path), path)
    return image if channels is None else convert_channels(image, channels, path)


def to_float(image: np.ndarray) -> np.ndarray:
    """A :func:`read_image` array as ``float32`` in [0, 1] (``uint8`` is divided by 255)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    return image.astype(np.float32, copy=False)


def read_binary_mask(path: PathLike, threshold: int = 127) -> np.ndarray:
    """A mask file as ``uint8`` ``(H, W)`` in {0, 1}: first channel (red for colour files) ``> threshold``.

    The threshold copes with JPEG masks, whose values scatter around 0 and 255. A mask holding only the
    values 0 and 1 with ``threshold >= 1`` would silently become all background, so it raises instead
    (a colour palette mask of indices 0 and 1 too: pass ``threshold=0``).
    """
    path = Path(path)
    values = np.ascontiguousarray(_read_pixels(path, mask=True)[:, :, 0])
    if threshold >= 1 and values.max() == 1 and set(np.unique(values).tolist()) == {0, 1}:
        raise DataError(
            path,
            f"the mask holds only the values 0 and 1, so threshold={threshold} would make it all background; "
            "pass threshold=0 for 0/1 masks",
        )
    return (values > threshold).astype(np.uint8)


def read_class_mask(path: PathLike, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """A mask file of class indices as ``(H, W)`` ``uint8``/``uint16``, checked against the declared classes.

    Every value must be ``< num_classes`` or equal ``ignore_index``. A palette PNG or GIF with colours
    gives its palette indices (one with only grey colours, its grey levels: see the module docstring).
    Any other colour file is accepted only if its channels are equal (a grey image saved as RGB); a
    multi-page TIFF only if its pages are equal.
    """
    path = Path(path)
    pixels = _read_pixels(path, mask=True)
    if not np.issubdtype(pixels.dtype, np.unsignedinteger):
        raise DataError(path, f"class masks must hold unsigned integer indices, found {pixels.dtype}")
    if pixels.shape[2] > 1:
        colours = pixels[:, :, :3] if pixels.shape[2] in (3, 4) else pixels  # alpha is not a class
        if not (colours == colours[:, :, :1]).all():
            raise DataError(
                path,
                f"the class mask is a colour image (its {colours.shape[2]} channels differ); class masks must be "
                "single-channel index images or palette images",
            )
    mask = np.ascontiguousarray(pixels[:, :, 0])
    if mask.max() >= num_classes:
        outside = np.unique(mask[mask >= num_classes])
        if ignore_index is not None:
            outside = outside[outside != ignore_index]
        if outside.size:
            allowed = f"0..{num_classes - 1}" + (f" or {ignore_index} (ignore)" if ignore_index is not None else "")
            raise DataError(
                path, f"mask values {format_examples(outside.tolist())} are outside the declared classes {allowed}"
            )
    return mask


def read_multilabel_mask(path: PathLike, num_classes: int, threshold: int = 127) -> np.ndarray:
    """A multi-channel mask file (one channel per class, classes may overlap) as ``uint8`` ``(H, W, K)`` in {0, 1}.

    Each channel is binarised as :func:`read_binary_mask` does (``> threshold`` on its raw values; float files
    ``> 0.5``). A PNG holds 1, 3 or 4 channels; a TIFF any number (its pages or channels, see the module
    docstring). The channel count must be ``num_classes``.
    """
    path = Path(path)
    pixels = _read_pixels(path)
    if pixels.shape[2] != num_classes:
        raise DataError(path, f"a multi-label mask needs one channel per class: {pixels.shape[2]}, not {num_classes}")
    cut = 0.5 if np.issubdtype(pixels.dtype, np.floating) else threshold
    return np.ascontiguousarray(pixels > cut).astype(np.uint8)

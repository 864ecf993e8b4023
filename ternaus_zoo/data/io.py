"""Reading images and masks from disk with OpenCV, with errors that name the file.

Conventions (every other module of :mod:`ternaus_zoo.data` relies on them):

* images are ``(H, W, C)`` numpy arrays in RGB(A) channel order, ``C >= 1`` (a grey file gives
  ``C == 1``). 8-bit files stay ``uint8`` (0..255, the fast path of albumentations); any other
  unsigned integer depth (16-bit PNG/TIFF...) becomes ``float32`` in [0, 1], divided by the maximum
  of its dtype (65535 for ``uint16``), so a 16-bit file is never read as if it were 8-bit. Float
  files are taken as already in [0, 1]. :func:`to_float` brings both kinds to ``float32`` [0, 1].
* masks are ``(H, W)`` integer arrays: ``uint8`` {0, 1} for binary masks, class indices for class
  masks.

Files are read in full (no ``cv2.IMREAD_REDUCED_*``): the geometry of image and mask must agree to
the pixel, and the augmentations crop before they resize, so a reduced read would save little. EXIF
orientation is ignored (``IMREAD_UNCHANGED``) for images and masks alike, so they stay aligned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".pbm", ".pgm", ".ppm", ".pnm", ".tif", ".tiff"}
)

PathLike = str | os.PathLike
logger = logging.getLogger("ternaus_zoo.data")


class DataError(ValueError):
    """A problem with one input file (or pair of files); ``path`` names it."""

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def format_examples(items: Iterable[object], limit: int = 5) -> str:
    """``"a, b, c (and 7 more)"``: the first ``limit`` items of a list, for error messages."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def list_images(folder: PathLike) -> dict[str, Path]:
    """Image files of ``folder`` by stem (file name without its last extension), sorted by stem.

    Hidden files and files whose extension OpenCV does not read as an image (``IMAGE_EXTENSIONS``,
    case-insensitive) are ignored (their count is logged at INFO level); sub-folders are not searched.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
        DataError: the folder holds no image file, or two files share a stem (``a.png`` and
            ``a.jpg``): both are named.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    found: dict[str, Path] = {}
    duplicates: list[str] = []
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            ignored.append(path.name)
            continue
        if path.stem in found:
            duplicates.append(f"{found[path.stem].name} and {path.name}")
        else:
            found[path.stem] = path
    if ignored:
        logger.info("ignored %d non-image entries in %s: %s", len(ignored), folder, format_examples(ignored))
    if duplicates:
        raise DataError(folder, f"several files share a stem, so pairing is ambiguous: {format_examples(duplicates)}")
    if not found:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(folder, f"no image files (looked for {extensions})")
    return dict(sorted(found.items()))


def decode(path: PathLike) -> np.ndarray:
    """The file's pixels as OpenCV stores them (``cv2.IMREAD_UNCHANGED``: BGR order, native dtype).

    Raises:
        DataError: the file is missing, empty, or not an image OpenCV can decode.
    """
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(path, f"cannot be read: {error}") from error
    if buffer.size == 0:
        raise DataError(path, "empty file (0 bytes)")
    pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise DataError(path, "not a readable image (corrupt or unsupported format)")
    return pixels


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA ``(H, W[, C])`` to RGB/RGBA ``(H, W, C)``."""
    if pixels.ndim == 2:
        return pixels[:, :, None]
    if pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return pixels


def _to_supported_dtype(image: np.ndarray, path: Path) -> np.ndarray:
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


def read_image(path: PathLike, channels: int | None = None) -> np.ndarray:
    """An image file as ``(H, W, C)`` RGB(A): ``uint8`` for 8-bit files, else ``float32`` in [0, 1].

    Args:
        path: any format OpenCV reads (PNG, JPEG, TIFF...; grey, RGB, RGBA, 8 or 16 bits).
        channels: if given, convert to this many channels (see :func:`convert_channels`); by default
            the file's own channel count is kept.
    """
    path = Path(path)
    image = _to_supported_dtype(_to_rgb(decode(path)), path)
    return image if channels is None else convert_channels(image, channels, path)


def to_float(image: np.ndarray) -> np.ndarray:
    """A :func:`read_image` array as ``float32`` in [0, 1] (``uint8`` is divided by 255)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    return image.astype(np.float32, copy=False)


def _first_channel(pixels: np.ndarray) -> np.ndarray:
    """The first channel in RGB order (red) of an OpenCV BGR(A) array, or the array if grey."""
    if pixels.ndim == 2:
        return pixels
    return pixels[:, :, 2] if pixels.shape[2] in (3, 4) else pixels[:, :, 0]


def read_binary_mask(path: PathLike, threshold: int = 127) -> np.ndarray:
    """A mask file as ``uint8`` ``(H, W)`` in {0, 1}: first channel (red for colour files) ``> threshold``.

    The threshold copes with JPEG masks, whose values scatter around 0 and 255. A mask holding only the
    values 0 and 1 with ``threshold >= 1`` would silently become all background, so it raises instead.
    """
    path = Path(path)
    values = np.ascontiguousarray(_first_channel(decode(path)))
    if threshold >= 1 and values.max() == 1 and set(np.unique(values).tolist()) == {0, 1}:
        raise DataError(
            path,
            f"the mask holds only the values 0 and 1, so threshold={threshold} would make it all background; "
            "pass threshold=0 for 0/1 masks",
        )
    return (values > threshold).astype(np.uint8)


def read_class_mask(path: PathLike, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """A mask file of class indices as ``(H, W)`` ``uint8``/``uint16``, checked against the declared classes.

    Every value must be ``< num_classes`` or equal ``ignore_index``. A colour file is accepted only if
    its channels are equal (a grey image saved as RGB); palette PNGs are expanded to colours by OpenCV
    and are therefore refused: save class masks as single-channel index images.
    """
    path = Path(path)
    pixels = decode(path)
    if not np.issubdtype(pixels.dtype, np.unsignedinteger):
        raise DataError(path, f"class masks must hold unsigned integer indices, found {pixels.dtype}")
    if pixels.ndim == 3:
        colours = pixels[:, :, : min(3, pixels.shape[2])]
        if not (colours == colours[:, :, :1]).all():
            raise DataError(
                path,
                "the class mask is a colour image (channels differ); class masks must be single-channel "
                "index images (palette PNGs are expanded to colours by OpenCV)",
            )
        pixels = pixels[:, :, 0]
    mask = np.ascontiguousarray(pixels)
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

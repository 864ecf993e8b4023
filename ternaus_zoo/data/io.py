"""Reading images and masks from disk, each format with the library made for it, with errors that name the file.

Conventions (every other module of :mod:`ternaus_zoo.data` relies on them):

* images are ``(H, W, C)`` numpy arrays in RGB(A) channel order, ``C >= 1`` (a grey file gives
  ``C == 1``). 8-bit files stay ``uint8`` (0..255, the fast path of albumentations); any other
  unsigned integer depth (16-bit PNG/TIFF...) becomes ``float32`` in [0, 1], divided by the maximum
  of its dtype (65535 for ``uint16``), so a 16-bit file is never read as if it were 8-bit. Float
  files are taken as already in [0, 1]. :func:`to_float` brings both kinds to ``float32`` [0, 1].
* masks are ``(H, W)`` integer arrays: ``uint8`` {0, 1} for binary masks, class indices for class
  masks.

Which library reads what (the format is told by the file's first bytes, not by its extension):

* OpenCV (the fast path): PNG, JPEG, BMP, WebP, JPEG 2000, PBM/PGM/PPM, and single-page TIFF of up
  to 4 channels, stored interleaved, in ``uint8``, ``uint16``, ``float32`` or 1 bit.
* Pillow: GIF (the first frame), and palette PNG masks. A palette ("P" mode) file read as a *mask*
  gives each pixel's palette index (a VOC-style class mask) when its palette has colours; when every
  colour its pixels use is grey, it is a grey image stored with a palette (GIF always stores one;
  Pillow writes a 0/255 mask as a black/white palette) and gives those grey levels, as the same
  mask saved without a palette would. Read as an *image*, a GIF gives its colours (RGB, or RGBA when
  it has a transparent colour), or one grey channel when its colours are all grey; palette PNG
  images stay with OpenCV, which gives their colours.
* tifffile: TIFF that OpenCV would misread: several pages, more than 4 channels, planar
  ("separate") channels, or another pixel type (``uint32``, ``float64``...). The pages are stacked
  as channels, page after page, each page's own channels in order; a page stored as ``(C, H, W)``
  planes and one stored as ``(H, W, C)`` pixels both give ``(H, W, C)``. Rule for a stack of
  single-channel pages ``(P, A, B)``: it is ``P`` pages of ``A x B`` pixels, giving ``(A, B, P)``,
  unless ``B <= 8 < P``: then it is an ``(H, W, C) = (P, A, B)`` array that its writer stored as
  ``H`` pages of ``W x C`` pixels (``tifffile.imwrite`` does that with an ``(H, W, C)`` array whose
  ``C`` is not 3 or 4), and it is read as that array. Masks take the first channel (the first page).
  Pages that tifffile cannot decompress without the optional ``imagecodecs`` package (LZW, JPEG...:
  ``pip install ternaus_zoo[tiff]``) are decoded by OpenCV when it reads each page faithfully.

Files are read in full (no ``cv2.IMREAD_REDUCED_*``): the geometry of image and mask must agree to
the pixel, and the augmentations crop before they resize, so a reduced read would save little. EXIF
and TIFF orientation are ignored (``IMREAD_UNCHANGED``) for images and masks alike, so they stay aligned.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from ternaus_zoo.errors import MissingPathError, UserError

IMAGE_EXTENSIONS = frozenset(
    {
        ".bmp",
        ".gif",
        ".jpeg",
        ".jpg",
        ".jpe",
        ".jp2",
        ".png",
        ".webp",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pnm",
        ".tif",
        ".tiff",
    }
)

PathLike = str | os.PathLike
logger = logging.getLogger("ternaus_zoo.data")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF
# pixel types of a TIFF page that every supported OpenCV (>= 4.8) decodes; bool is a 1-bit page
_OPENCV_TIFF_DTYPES = frozenset({np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.bool_)})
# what Pillow and tifffile raise on corrupt or truncated files (UnidentifiedImageError is an OSError;
# TiffFileError derives from ValueError only since tifffile 2025.9.20)
_DECODER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    tifffile.TiffFileError,
)
# a stack of more pages than this, each at most this wide, is an (H, W, C) array stored page by page
_MAX_STACKED_CHANNELS = 8


class DataError(UserError, ValueError):
    """A problem with one input file (or pair of files); ``path`` names it."""

    def __init__(self, path: PathLike, reason: str | None = None) -> None:
        # one argument: the whole message, as a DataLoader worker re-raises it in the main process
        super().__init__(f"{path}: {reason}" if reason is not None else str(path))
        self.path = Path(path)
        self.reason = reason or ""


def format_examples(items: Iterable[object], limit: int = 5) -> str:
    """``"a, b, c (and 7 more)"``: the first ``limit`` items of a list, for error messages."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def list_images(folder: PathLike) -> dict[str, Path]:
    """Image files of ``folder`` by stem (file name without its last extension), sorted by stem.

    Hidden files and files whose extension the readers do not take as an image (``IMAGE_EXTENSIONS``,
    case-insensitive) are ignored (their count is logged at INFO level); sub-folders are not searched.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
        DataError: the folder holds no image file, or two files share a stem (``a.png`` and
            ``a.jpg``): both are named.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"image folder not found: {folder}")
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


def _read_header(path: Path, size: int = 32) -> bytes:
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


def _grey_levels(image: Image.Image, indices: np.ndarray) -> np.ndarray | None:
    """The grey level of each pixel of a palette image, or ``None`` if a colour it uses is not grey."""
    palette = np.zeros((256, 3), np.uint8)
    entries = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)[:256]
    palette[: len(entries)] = entries
    used = palette[np.flatnonzero(np.bincount(indices.ravel(), minlength=256))]
    if not ((used == used[:, :1]).all()):
        return None
    return palette[:, 0][indices]


def _decode_pillow(path: Path, mask: bool) -> np.ndarray:
    """A GIF (first frame) or palette PNG as ``(H, W, C)`` in RGB(A) order.

    Pillow, not OpenCV: OpenCV has no GIF decoder before 4.11 (and 4.11 builds it only on request;
    this package accepts OpenCV >= 4.8), and its decoders always expand a palette to colours,
    losing the palette indices that class masks are made of. See the module docstring for what a
    palette file gives as a mask and as an image.
    """
    try:
        with Image.open(path) as image:
            image.seek(0)  # the first frame of an animated GIF
            image.load()
            transparent = "A" in image.mode or "transparency" in image.info
            pixels = None
            if image.mode in ("P", "PA"):
                indices = np.asarray(image)
                indices = indices[:, :, 0] if indices.ndim == 3 else indices  # "PA": index and alpha
                grey = _grey_levels(image, indices)
                if mask:
                    pixels = indices if grey is None else grey
                elif grey is not None and not transparent:
                    pixels = grey  # a grey image that its writer stored with a palette
            elif image.mode in ("L", "RGB", "RGBA"):
                pixels = np.asarray(image)
            if pixels is None:  # colour palettes, "1", "LA"...: their colours, keeping the transparency
                pixels = np.asarray(image.convert("RGBA" if transparent else "RGB"))
    except (*_DECODER_ERRORS, Image.DecompressionBombError) as error:
        raise DataError(path, f"not a readable image (corrupt or unsupported format): {error}") from error
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _pages_to_channels(pixels: np.ndarray, axes: str) -> np.ndarray:
    """tifffile's array with its ``axes`` (``Y``/``X`` the height and width) as ``(H, W, C)``."""
    if axes == "IYX" and pixels.shape[2] <= _MAX_STACKED_CHANNELS < pixels.shape[0]:
        return pixels  # an (H, W, C) array stored as H pages of W x C pixels (see the module docstring)
    hwc = np.moveaxis(pixels, [axes.index("Y"), axes.index("X")], [0, 1])
    return np.ascontiguousarray(hwc.reshape(*hwc.shape[:2], -1))


def _opencv_reads(page: tifffile.TiffPage | tifffile.TiffFrame) -> bool:
    """Whether OpenCV decodes this TIFF page faithfully: up to 4 interleaved channels of a type it reads."""
    samples = page.samplesperpixel
    interleaved = samples == 1 or page.planarconfig == 1  # PlanarConfiguration 1: contiguous
    return samples <= 4 and interleaved and page.dtype in _OPENCV_TIFF_DTYPES


def _decode_pages_opencv(path: Path, all_pages: bool) -> tuple[np.ndarray, str]:
    """The pages (or the first page) with OpenCV, stacked as tifffile would: ``(array, axes)``.

    For pages that tifffile cannot decompress without the optional ``imagecodecs`` package (LZW,
    JPEG...), which OpenCV's libtiff decodes.
    """
    if not all_pages:
        return _to_rgb(decode(path)), "YXS"
    done, pages = cv2.imdecodemulti(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if not done or not pages:
        raise DataError(path, "not a readable TIFF (corrupt or unsupported format)")
    stack = np.stack([_to_rgb(page) for page in pages])
    return (stack[..., 0], "IYX") if stack.shape[3] == 1 else (stack, "IYXS")


def _decode_tiff(path: Path) -> np.ndarray:
    """A TIFF as ``(H, W, C)`` in RGB(A) order: tifffile when OpenCV would misread it, else OpenCV."""
    try:
        with tifffile.TiffFile(path) as tiff:
            pages = list(tiff.pages)
            if not pages:
                raise tifffile.TiffFileError("no image in it")
            first = pages[0]
            by_opencv = all(_opencv_reads(page) for page in pages)
            if len(pages) == 1 and by_opencv:
                pixels = None  # OpenCV's fast path, below
            else:
                # pages of several sizes are thumbnails or reduced resolutions: the first page only
                same = all(page.shape == first.shape and page.dtype == first.dtype for page in pages)
                stacked = len(pages) > 1 and same
                try:
                    if stacked:
                        pixels, axes = tiff.asarray(key=slice(None)), "I" + first.axes
                    else:
                        pixels, axes = first.asarray(), first.axes
                except _DECODER_ERRORS:
                    if not by_opencv:  # e.g. LZW with more than 4 channels: tifffile needs imagecodecs
                        raise
                    pixels, axes = _decode_pages_opencv(path, stacked)
    except DataError:
        raise
    except _DECODER_ERRORS as error:
        hint = " (pip install imagecodecs, or ternaus_zoo[tiff])" if "imagecodecs" in str(error) else ""
        raise DataError(path, f"not a readable TIFF (corrupt or unsupported): {error}{hint}") from error
    if pixels is None:
        return _to_rgb(decode(path))
    if pixels.dtype == np.bool_:  # 1-bit pages, as OpenCV reads them
        pixels = pixels.astype(np.uint8) * np.uint8(255)
    return _pages_to_channels(pixels, axes)


def _read_pixels(path: Path, mask: bool = False) -> np.ndarray:
    """The file's pixels as ``(H, W, C)`` in RGB(A) order and the file's own dtype, each format read
    by its library (see the module docstring); ``mask=True`` gives palette PNGs to Pillow too.

    Raises:
        DataError: the file is missing, empty, corrupt, or in a format none of the libraries reads.
    """
    header = _read_header(path)
    if header.startswith(_GIF_SIGNATURES):
        return _decode_pillow(path, mask)
    # colour type 3 in the PNG's first chunk (IHDR): a palette PNG
    if mask and header.startswith(_PNG_SIGNATURE) and header[12:16] == b"IHDR" and header[25:26] == b"\x03":
        return _decode_pillow(path, mask)
    if header.startswith(_TIFF_SIGNATURES):
        return _decode_tiff(path)
    return _to_rgb(decode(path))


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
        path: PNG, JPEG, BMP, WebP, GIF (first frame), TIFF (multi-page and multi-channel too)...;
            grey, RGB, RGBA or more channels, 8 or 16 bits or float (see the module docstring).
        channels: if given, convert to this many channels (see :func:`convert_channels`); by default
            the file's own channel count is kept.
    """
    path = Path(path)
    image = _to_supported_dtype(_read_pixels(path), path)
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

"""tifffile: TIFF that OpenCV would misread: several pages, more than 4 channels, planar ("separate")
channels, or another pixel type (``uint32``, ``float64``...); the other TIFFs go to OpenCV's fast path.

The pages are stacked as channels, page after page, each page's own channels in order; a page stored as
``(C, H, W)`` planes and one stored as ``(H, W, C)`` pixels both give ``(H, W, C)``. Rule for a stack of
single-channel pages ``(P, A, B)``: it is ``P`` pages of ``A x B`` pixels, giving ``(A, B, P)``, unless
``B <= 8 < P``: then it is an ``(H, W, C) = (P, A, B)`` array that its writer stored as ``H`` pages of
``W x C`` pixels (``tifffile.imwrite`` does that with an ``(H, W, C)`` array whose ``C`` is not 3 or 4), and it
is read as that array. Masks take the first channel (the first page). Pages that tifffile cannot decompress
without the optional ``imagecodecs`` package (LZW, JPEG...: ``pip install ternaus_zoo[tiff]``) are decoded by
OpenCV when it reads each page faithfully.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from ternaus_zoo.data.errors import DECODER_ERRORS, DataError
from ternaus_zoo.data.formats.opencv import read_rgb, to_rgb

# pixel types of a TIFF page that every supported OpenCV (>= 4.8) decodes; bool is a 1-bit page
_OPENCV_TIFF_DTYPES = frozenset({np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.bool_)})
# a stack of more pages than this, each at most this wide, is an (H, W, C) array stored page by page
_MAX_STACKED_CHANNELS = 8


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
        return read_rgb(path), "YXS"
    done, pages = cv2.imdecodemulti(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if not done or not pages:
        raise DataError(path, "not a readable TIFF (corrupt or unsupported format)")
    stack = np.stack([to_rgb(page) for page in pages])
    return (stack[..., 0], "IYX") if stack.shape[3] == 1 else (stack, "IYXS")


def _unreadable(path: Path, error: Exception) -> DataError:
    hint = " (pip install imagecodecs, or ternaus_zoo[tiff])" if "imagecodecs" in str(error) else ""
    return DataError(path, f"not a readable TIFF (corrupt or unsupported): {error}{hint}")


def read_tiff(path: Path) -> np.ndarray:
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
                except DECODER_ERRORS:
                    if not by_opencv:  # e.g. LZW with more than 4 channels: tifffile needs imagecodecs
                        raise
                    pixels, axes = _decode_pages_opencv(path, stacked)
    except DataError:
        raise
    except DECODER_ERRORS as error:
        raise _unreadable(path, error) from error
    if pixels is None:
        return read_rgb(path)
    if pixels.dtype == np.bool_:  # 1-bit pages, as OpenCV reads them
        pixels = pixels.astype(np.uint8) * np.uint8(255)
    return _pages_to_channels(pixels, axes)

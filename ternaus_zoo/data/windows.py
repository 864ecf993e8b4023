"""Windows of a large TIFF, read lazily: only the tiles (or strips) under each window are decoded.

Whole-slide and satellite images are too large to read at once; :class:`TiffWindows` presents a TIFF's image
as a ``(C, H, W)`` array whose slices are read on demand through tifffile's zarr store, with the conventions of
:func:`ternaus_zoo.data.io.read_image` (RGB(A) order, ``uint8`` kept, deeper integers as ``float32`` in [0, 1]).
Memory is bounded by the window for tiled TIFFs; a striped TIFF decodes whole strips, as wide as the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from ternaus_zoo.data.errors import DECODER_ERRORS, DataError, PathLike
from ternaus_zoo.data.io import TIFF_SIGNATURES, convert_channels, read_header, to_supported_dtype


class TiffWindows:
    """The first image of a TIFF (its full-resolution level) as a lazily read ``(C, H, W)`` array.

    ``windows[:, y0:y1, x0:x1]`` reads that window, ``(C, y1 - y0, x1 - x0)``; ``channels`` converts every
    window as :func:`~ternaus_zoo.data.io.convert_channels` does. Use :func:`open_tiff_windows` to tell first
    whether a file can be read this way. Close it (or use it as a context manager) to release the file.
    """

    def __init__(self, path: PathLike, channels: int | None = None) -> None:
        import zarr  # here: a second of import time that only large TIFFs need

        self.path = Path(path)
        try:
            self._store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
            self._array = zarr.open(self._store, mode="r")
            with tifffile.TiffFile(self.path) as tiff:
                axes = tiff.series[0].levels[0].axes
        except DECODER_ERRORS as error:
            raise DataError(self.path, f"not a readable TIFF (corrupt or unsupported): {error}") from error
        # the array's axes to (Y, X, S): grey pages have no S, planar ones store S first
        self._order = [axes.index("Y"), axes.index("X")] + ([axes.index("S")] if "S" in axes else [])
        have = self._array.shape[axes.index("S")] if "S" in axes else 1
        self.channels = channels if channels is not None else have
        self.shape = (self.channels, self._array.shape[axes.index("Y")], self._array.shape[axes.index("X")])
        self.ndim = 3
        convert_channels(np.zeros((1, 1, have), np.uint8), self.channels, self.path)  # refuse a bad count now

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        channels, rows, columns = key
        window = [slice(None)] * self._array.ndim
        window[self._order[0]], window[self._order[1]] = rows, columns
        try:
            pixels = np.asarray(self._array[tuple(window)])
        except DECODER_ERRORS as error:
            raise DataError(self.path, f"cannot decode a window of the TIFF: {error}") from error
        pixels = pixels.transpose(self._order) if len(self._order) == 3 else pixels[:, :, None]
        if pixels.dtype == np.bool_:  # 1-bit pages, as read_image reads them
            pixels = pixels.astype(np.uint8) * np.uint8(255)
        image = convert_channels(to_supported_dtype(pixels, self.path), self.channels, self.path)
        return np.ascontiguousarray(image.transpose(2, 0, 1)[channels])

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> TiffWindows:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_tiff_windows(path: PathLike, channels: int | None = None) -> TiffWindows | None:
    """:class:`TiffWindows` over ``path`` if it is a TIFF whose image :func:`~ternaus_zoo.data.io.read_image`
    takes from its first page alone, in a compression tifffile decodes; ``None`` for any other file (another
    format, several pages of one size, which are stacked as channels, or LZW, JPEG... without ``imagecodecs``):
    read those whole."""
    if not read_header(path).startswith(TIFF_SIGNATURES):
        return None
    try:
        with tifffile.TiffFile(path) as tiff:
            first = tiff.pages[0]
            stacked = len(tiff.pages) > 1 and all(
                page.shape == first.shape and page.dtype == first.dtype for page in tiff.pages
            )
            # LZW, JPEG... without the optional imagecodecs: OpenCV decodes the file, whole
            decodable = first.compression in tifffile.TIFF.DECOMPRESSORS
    except DECODER_ERRORS as error:
        raise DataError(path, f"not a readable TIFF (corrupt or unsupported): {error}") from error
    return TiffWindows(path, channels) if decodable and not stacked else None

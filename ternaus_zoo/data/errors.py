"""What every reader and dataset of :mod:`ternaus_zoo.data` reports a bad file with: :class:`DataError`."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import tifffile

from ternaus_zoo.errors import UserError

PathLike = str | os.PathLike

# what Pillow and tifffile raise on corrupt or truncated files (UnidentifiedImageError is an OSError;
# TiffFileError derives from ValueError only since tifffile 2025.9.20)
DECODER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    tifffile.TiffFileError,
)


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

"""What kind of masks a data set holds, told from the values of a few of them: binary (0/255, 0/1, or JPEG
masks whose values scatter near both ends), class indices (with a void value), or one channel per class.

:func:`kind_of_values` decides from mask arrays as :func:`ternaus_zoo.data.read_class_mask` (palette indices,
grey levels) or :func:`ternaus_zoo.data.read_image` (colour files whose channels differ) give them, ``(H, W, C)``.
Where it cannot tell, it raises :class:`~ternaus_zoo.errors.BadValueError` saying what it found and which option
to pass (``mask_mode=``, ``ignore_index=``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ternaus_zoo.errors import BadValueError

MASK_MODES = ("binary", "classes", "multilabel")
# a mask is JPEG-like binary when this share of its pixels lies within an eighth of the range of either end
NEAR_BINARY_SHARE = 0.99
# colour masks whose binarised channels agree on this share of pixels are one binary mask stored as colour
SAME_CHANNELS_SHARE = 0.99
# class masks hold few, nearly contiguous indices: at most this many, and max + 1 <= CONTIGUITY x their count
MAX_CLASSES = 1024
CONTIGUITY = 2
# and they are piecewise constant: at least this share of their pixels equal their right-hand neighbour
# (noise or a photograph given as masks: about 1 / the number of values)
MIN_COHERENCE = 0.5


@dataclass(frozen=True)
class MaskKind:
    """The reading of a data set's masks that :class:`ternaus_zoo.data.SegmentationDataset` takes.

    Attributes:
        mode: ``"binary"``, ``"classes"`` or ``"multilabel"``.
        description: what was found, for the fingerprint (``"binary, JPEG-like values near 0 and 255"``).
        threshold: the binarisation threshold on the raw values (binary and multi-label masks), else ``None``.
        num_classes: output channels; ``None`` for class masks, whose count comes from the full pass.
        class_names: the classes' names where the data names them (class folders, COCO categories).
    """

    mode: str
    description: str
    threshold: int | float | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] = ()


def _top(dtype: np.dtype) -> int | float:
    """The largest value of the masks' type: 255 for 8 bits, 65535 for 16, 1.0 for floats in [0, 1]."""
    return int(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def _histogram(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``arrays`` and how many pixels hold each, pooled."""
    if all(np.issubdtype(array.dtype, np.integer) for array in arrays):
        counts = sum(np.bincount(array.ravel(), minlength=_top(array.dtype) + 1) for array in arrays)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(np.concatenate([array.ravel() for array in arrays]), return_counts=True)


def _split(lo: int | float, hi: int | float) -> int | float:
    """The threshold between two values: ``(0, 255) -> 127``, ``(0, 1) -> 0`` (``mask > threshold``)."""
    return (lo + hi) // 2 if isinstance(lo, (int, np.integer)) else (lo + hi) / 2


def binary_threshold(values: np.ndarray, counts: np.ndarray, top: int | float) -> int | float | None:
    """The threshold of binary masks with this value histogram, or ``None`` if they do not look binary.

    Two values (or one) split in the middle; more values are binary when :data:`NEAR_BINARY_SHARE` of the
    pixels lie within an eighth of the range of 0 or ``top`` and values just under ``top`` occur too (JPEG
    masks ring on both sides of an edge; class indices beside a void 255 have nothing between 255 and the
    classes): threshold ``top // 2`` (127 for 8 bits).
    """
    if len(values) == 1:
        return _split(0, top)
    if len(values) == 2:
        return _split(values[0].item(), values[1].item())
    high = values >= top - top / 8
    near_ends = counts[(values <= top / 8) | high].sum() / counts.sum()
    if (high & (values < top)).any() and near_ends >= NEAR_BINARY_SHARE:
        return _split(0, top)
    return None


def _listed(values: np.ndarray, limit: int = 12) -> str:
    shown = ", ".join(str(value) for value in values[:limit].tolist())
    return shown + (f" ... ({len(values)} distinct)" if len(values) > limit else "")


def coherence(arrays: Sequence[np.ndarray]) -> float:
    """The share of pixels equal to their right-hand neighbour, over ``arrays`` ``(H, W)``."""
    same = sum(int((array[:, 1:] == array[:, :-1]).sum()) for array in arrays)
    return same / max(1, sum(array[:, 1:].size for array in arrays))


def _classes_fit(labelled: np.ndarray, with_void: bool) -> bool:
    """Whether the values could be class indices: integers, at least 3 of them (2 beside a void value),
    few and nearly contiguous from 0."""
    return (
        np.issubdtype(labelled.dtype, np.integer)
        and len(labelled) >= (2 if with_void else 3)
        and labelled.max() < MAX_CLASSES
        and labelled.max() + 1 <= CONTIGUITY * len(labelled)
    )


def _single_channel(
    arrays: Sequence[np.ndarray], where: str, mask_mode: str | None, ignore_index: int | None
) -> MaskKind:
    """The kind of single-channel masks ``(H, W)`` from their pooled value histogram."""
    values, counts = _histogram(arrays)
    top = _top(arrays[0].dtype)
    with_void = ignore_index is not None and ignore_index in values
    labelled = values[values != ignore_index] if with_void else values
    threshold = binary_threshold(values, counts, top)
    if mask_mode == "binary":
        # masks that do not look binary: values above half the range are foreground, or any non-zero value
        fallback = _split(0, top) if values.max() > top / 2 else 0
        chosen = threshold if threshold is not None else fallback
        return MaskKind("binary", f"binary by request, values {_listed(values)}", chosen, 1)
    if mask_mode == "multilabel":
        chosen = threshold if threshold is not None else _split(0, top)
        return MaskKind("multilabel", "one channel: a single label", chosen, 1)
    if mask_mode == "classes" or with_void or threshold is None:
        piecewise = coherence(arrays)
        if mask_mode == "classes" or (_classes_fit(labelled, with_void) and piecewise >= MIN_COHERENCE):
            void = f", void {ignore_index}" if with_void else ""
            return MaskKind("classes", f"class indices {_listed(labelled)}{void}")
        void_hint = ""
        if _classes_fit(labelled[:-1], True) and piecewise >= MIN_COHERENCE:
            void_hint = (
                f"; if {labelled[-1]} marks unlabelled pixels, pass ignore_index={labelled[-1]} (--ignore_index)"
            )
        raise BadValueError(
            f"{where}: cannot tell the kind of these masks: values {_listed(values)} of type {values.dtype}, "
            f"{piecewise:.0%} of the pixels equal to their neighbour{void_hint}; pass mask_mode= "
            "(--mask_mode binary|classes|multilabel)"
        )
    found = (
        f"JPEG-like values near 0 and {top} ({len(values)} distinct)"
        if len(values) > 2
        else f"values {_listed(values)}"
    )
    return MaskKind("binary", f"binary, {found}", threshold, 1)


def _multi_channel(arrays: Sequence[np.ndarray], where: str, mask_mode: str | None) -> MaskKind:
    """The kind of masks stored as several channels that differ: one binary mask stored as colour (JPEG
    noise between the channels), or one channel per class."""
    channels = max(array.shape[2] for array in arrays)
    if mask_mode == "classes":
        raise BadValueError(
            f"{where}: mask_mode=classes needs single-channel masks of class indices, these have {channels} "
            "channels that differ (colour-coded classes must be converted to one index per pixel first)"
        )
    stacked = [array for array in arrays if array.shape[2] == channels]
    top = _top(stacked[0].dtype)
    thresholds = []
    for channel in range(channels):
        values, counts = _histogram([array[:, :, channel] for array in stacked])
        threshold = binary_threshold(values, counts, top)
        if threshold is None and mask_mode is None:
            raise BadValueError(
                f"{where}: cannot tell the kind of these {channels}-channel masks: channel {channel} holds values "
                f"{_listed(values)}, not binary; convert colour-coded classes to class indices, or pass "
                "mask_mode= (--mask_mode binary|multilabel)"
            )
        thresholds.append(_split(0, top) if threshold is None else threshold)
    threshold = thresholds[0] if len(set(thresholds)) == 1 else _split(0, top)
    binarised = [array[:, :, :channels] > threshold for array in stacked]
    agree = np.mean([(masks == masks[:, :, :1]).all(axis=2).mean() for masks in binarised])
    if mask_mode == "binary" or (mask_mode is None and agree >= SAME_CHANNELS_SHARE):
        return MaskKind("binary", f"binary, {channels}-channel colour masks: the first channel", threshold, 1)
    return MaskKind("multilabel", f"multi-label, one of {channels} channels per class", threshold, channels)


def kind_of_values(
    arrays: Sequence[np.ndarray], where: str, *, mask_mode: str | None = None, ignore_index: int | None = None
) -> MaskKind:
    """The kind of masks read as ``(H, W, C)`` arrays (``C == 1`` for index and grey masks).

    Args:
        arrays: a few masks of the data set, as read.
        where: the masks' folder, named in errors.
        mask_mode: the user's choice (one of :data:`MASK_MODES`), where given: then only the threshold or the
            channels are inferred.
        ignore_index: a void value: then masks holding it are class masks.

    Raises:
        BadValueError: the values fit no kind; the message lists them and the option to pass.
    """
    if any(array.shape[2] > 1 for array in arrays):
        return _multi_channel(arrays, where, mask_mode)
    return _single_channel([array[:, :, 0] for array in arrays], where, mask_mode, ignore_index)

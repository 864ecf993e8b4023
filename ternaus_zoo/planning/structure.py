"""Geometry of the structures in a mask: their width (distance transform sampled on the skeleton), their
connected components, and whether file names are the frames of a sequence.

The **width** of a structure at a skeleton pixel is ``2 d - 1``: ``d`` is the Euclidean distance in native
pixels from that pixel to the nearest pixel outside the structure (OpenCV's exact distance transform), so a
stripe 5 px wide gives 5 (an even width gives one less: the centre of a 4 px stripe lies between two pixels).
The image border ends a structure (the plane is framed by a pixel of outside): what lies beyond it is not
known, so a structure that the border cuts is measured as far as it is seen.

``skeletonize`` (scikit-image) peels one layer of pixels per pass, so its cost grows with the thickness of
the structures. Each connected component is therefore skeletonized at a scale where its typical ridge (the
median of the local maxima of the distance) is at most :data:`RIDGE_PX` pixels from its edge, and its
thickest point at most :data:`MAX_PASSES`: thin structures (vessels, membranes) at native resolution, thick
ones (polyps, sky) shrunk by a power of two, their widths given back at native resolution and counted once
per native pixel of skeleton length (a skeleton pixel shrunk by ``s`` stands for ``s`` of them). The
components of one scale are skeletonized together, so a plane costs a few calls whatever its components.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

# components are skeletonized at a scale where their typical ridge and their thickest point are at most
# this far from their edge
RIDGE_PX = 16
MAX_PASSES = 64
# and on at most this many pixels (a plane larger than this is shrunk whatever its structures)
MAX_SKELETON_PIXELS = 4_000_000
# a run of frames: at least this many files of one prefix, this share of them at the prefix's usual step
MIN_FRAMES = 3
REGULAR_STEPS = 0.8
# a sequence: at least this share of the files belong to runs of frames
SEQUENCE_SHARE = 0.5
_FRAME = re.compile(r"^(.*\D)(\d+)$")  # a prefix ending in a non-digit, then the frame number


def _skeleton_widths(inside: np.ndarray, distance: np.ndarray | None, scale: int) -> np.ndarray:
    """Widths ``2 d - 1`` at the skeleton pixels of ``inside`` ``(H, W)`` uint8 {0, 1}, skeletonized after
    shrinking it by ``scale`` (``distance``: its distance transform at native resolution, for ``scale == 1``)."""
    if scale > 1:  # the plane inside its frame of outside, shrunk, then framed again
        height, width = inside.shape[0] - 2, inside.shape[1] - 2
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        shrunk = cv2.resize(inside[1:-1, 1:-1] * np.uint8(255), size, interpolation=cv2.INTER_AREA) > 127
        inside = np.pad(shrunk.astype(np.uint8), 1)
        if not inside.any():
            return np.empty(0, np.float32)
        distance = None
    if distance is None:
        distance = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    skeleton = skeletonize(inside.astype(bool))
    return np.repeat(2 * distance[skeleton] * scale - 1, scale).astype(np.float32)


def measure_plane(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The structures of ``plane`` ``(H, W)`` (non-zero = inside): their widths in native pixels, one per
    skeleton pixel (``float32``; none where the plane is empty), and the areas in pixels of its 8-connected
    components."""
    inside = np.pad((plane > 0).astype(np.uint8), 1)  # the frame of outside: the border ends structures
    count, labels, stats, _ = cv2.connectedComponentsWithStats(inside, connectivity=8)
    areas = stats[1:count, cv2.CC_STAT_AREA]
    if count == 1:
        return np.empty(0, np.float32), areas
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    index = np.arange(1, count)
    # the local maxima of the distance: few pixels, and each component's thickest point is one of them
    ridge = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (labels > 0)
    peaks, owners = distance[ridge], labels[ridge]
    typical = np.asarray(ndimage.median(peaks, owners, index)) / RIDGE_PX
    thickest = np.asarray(ndimage.maximum(peaks, owners, index)) / MAX_PASSES
    smallest = math.sqrt(inside.size / MAX_SKELETON_PIXELS)
    levels = np.ceil(np.log2(np.maximum(np.maximum(typical, thickest), max(1.0, smallest)))).astype(int)
    widths = []
    for level in np.unique(levels):
        chosen = np.concatenate([[False], levels == level])[labels].astype(np.uint8)
        widths.append(_skeleton_widths(chosen, distance if level == 0 else None, 2 ** int(level)))
    return np.concatenate(widths), areas


def looks_like_sequence(stems: Iterable[str]) -> bool:
    """Whether file stems look like video frames: a shared prefix and a frame number (``0001TP_008550``,
    ``Seq05VD_f00000``, ``frame_0001``), consecutive or evenly spaced within each prefix.

    Bare numbers (``0``, ``1`` ...) are not taken as frames: they number the files of any data set.
    """
    stems = list(stems)
    runs: dict[str, list[int]] = defaultdict(list)
    for stem in stems:
        found = _FRAME.match(stem)
        if found:
            runs[found.group(1)].append(int(found.group(2)))
    framed = 0
    for numbers in runs.values():
        if len(numbers) < MIN_FRAMES:
            continue
        steps = np.diff(sorted(numbers))
        step, regular = Counter(steps.tolist()).most_common(1)[0]
        if step > 0 and regular >= REGULAR_STEPS * len(steps):
            framed += len(numbers)
    return framed >= MIN_FRAMES and framed >= SEQUENCE_SHARE * len(stems)

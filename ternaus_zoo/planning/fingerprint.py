"""The fingerprint of a segmentation data set: what the planner needs to know about a folder of images and masks.

:func:`fingerprint` reads the folder once, with the readers training uses (:class:`ternaus_zoo.data.SegmentationDataset`
pairs the files by stem, reads COCO files and class folders), and measures: image sizes, channels, bit depth and
per-channel mean/std; the kind of masks (:mod:`ternaus_zoo.planning.masks_kind`) and the class pixel frequencies;
the per-image foreground fraction, the connected components and the **structure width** (the median width of
the thinner of foreground and background, or of the thinnest class: :mod:`ternaus_zoo.planning.structure`);
whether the file names are frames of a sequence; and which candidate encoders have ImageNet weights in the local
torchvision cache.

Statistics are taken on an evenly spaced sample of at most ``max_images`` pairs (all of them in smaller sets;
``n_sampled`` says how many). The result is cached as JSON under ``$TERNAUS_ZOO_CACHE/fingerprints/`` (default
``~/.cache/ternaus_zoo/fingerprints/``), keyed by the resolved folder, the names, sizes and modification times
of its files and the options: planning again is instant, and a changed file measures again. The ImageNet cache
is looked at again on every call (a download since does not wait for the data to change).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torchvision.models import get_model_weights
from tqdm import tqdm

from ternaus_zoo.data import DataError, SegmentationDataset, list_images, read_class_mask, read_image
from ternaus_zoo.errors import BadValueError, MissingPathError
from ternaus_zoo.planning.masks_kind import MASK_MODES, MaskKind, kind_of_values
from ternaus_zoo.planning.structure import looks_like_sequence, measure_plane
from ternaus_zoo.weights import torchvision_cache_file

VERSION = 1
# encoders of the planner's candidate models (linknet34 / albunet34: resnet34; unet11: vgg11 or vgg11_bn)
CANDIDATE_ENCODERS = ("resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg16")
MAX_IMAGES = 200  # pairs read for the statistics
KIND_SAMPLE = 16  # masks read to tell their kind
RAW_CLASSES = 65536  # read_class_mask checks nothing below this: the raw values of 8- and 16-bit masks
MIN_WIDTH_SAMPLES = 20  # skeleton pixels a class needs before its width counts for the structure width
CACHE_VARIABLE = "TERNAUS_ZOO_CACHE"
T = TypeVar("T")


@dataclass
class Fingerprint:
    """What a segmentation data set holds; sizes are ``(H, W)`` lists, widths in pixels at native resolution.

    ``class_frequencies`` has one value per output channel: the foreground share of a binary mask, of each
    channel of multi-label masks, or each class's share of the labelled pixels of class masks.
    ``widths`` maps ``"foreground"``/``"background"`` (binary) or each class or channel to its median width;
    ``structure_width`` is the smallest of them. ``timings`` is the planner's (empty here).
    """

    data_dir: str
    masks: str
    n_images: int
    n_sampled: int
    sample: str
    size_median: list[int]
    size_min: list[int]
    size_max: list[int]
    channels: int
    bit_depth: int
    mean: list[float]
    std: list[float]
    mask_kind: str
    mask_mode: str
    num_classes: int
    ignore_index: int | None
    class_names: list[str]
    mask_threshold: float | None
    class_frequencies: list[float]
    ignored_fraction: float
    foreground_median: float
    foreground_mean: float
    foreground_min: float
    foreground_max: float
    empty_share: float
    components_per_image: float
    component_median_area: float
    widths: dict[str, float]
    structure_width: float
    sequence: bool
    imagenet_cached: dict[str, bool]
    seconds: float
    timings: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION
    key: str = ""

    def to_json(self) -> str:
        """The fingerprint as indented JSON; :meth:`from_json` reads it back equal."""
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        """A fingerprint from :meth:`to_json`'s text; other keys or another version raise ``ValueError``."""
        values = json.loads(text)
        names = {item.name for item in dataclasses.fields(cls)}
        if not isinstance(values, dict) or set(values) != names or values["version"] != VERSION:
            found = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise ValueError(f"not a fingerprint of version {VERSION}: keys {found}")
        return cls(**values)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_json` to ``path`` (replacing it whole, never half-written)."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(self.to_json())
        partial.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Fingerprint:
        """Read a fingerprint file; one that is not one (or of another version) raises ``BadValueError``."""
        try:
            return cls.from_json(Path(path).read_text())
        except FileNotFoundError:
            raise MissingPathError(f"fingerprint file not found: {path}") from None
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            raise BadValueError(f"{path}: {error}; delete it to fingerprint the data again") from None


def imagenet_cached(encoders: tuple[str, ...] = CANDIDATE_ENCODERS) -> dict[str, bool]:
    """Whether torchvision's ImageNet weights of each encoder are in the local cache (``torch.hub.get_dir()``)."""
    return {name: torchvision_cache_file(get_model_weights(name).IMAGENET1K_V1).is_file() for name in encoders}


def cache_dir() -> Path:
    """``$TERNAUS_ZOO_CACHE/fingerprints``, by default ``~/.cache/ternaus_zoo/fingerprints``."""
    root = os.environ.get(CACHE_VARIABLE)
    return (Path(root) if root else Path.home() / ".cache" / "ternaus_zoo") / "fingerprints"


def _files(path: Path, recursive: bool) -> Iterator[tuple[str, int, int]]:
    """``(relative name, size, mtime in ns)`` of the files under ``path`` (``path`` itself if it is a file)."""
    if path.is_file():
        stat = path.stat()
        yield path.name, stat.st_size, stat.st_mtime_ns
        return
    for root, folders, names in os.walk(path):
        folders.sort()
        if not recursive:
            folders.clear()
        for name in sorted(names):
            stat = (Path(root) / name).stat()
            yield str((Path(root) / name).relative_to(path)), stat.st_size, stat.st_mtime_ns


def cache_key(data_dir: Path, masks: str, options: dict[str, Any]) -> str:
    """A hash of the resolved folder, its files' names, sizes and modification times, and the options."""
    content = {
        "version": VERSION,
        "data_dir": str(data_dir.resolve()),
        "masks": masks,
        "options": options,
        "images": list(_files(data_dir / "images", recursive=False)),
        "masks_files": list(_files(data_dir / masks, recursive=True)),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:24]


def _check_folder(data_dir: Path, masks: Path) -> None:
    """Refuse, in one line, a folder that is not a segmentation data set the fingerprint can read."""
    if not data_dir.is_dir():
        raise MissingPathError(f"data set folder not found: {data_dir}")
    if not any(data_dir.iterdir()):
        raise MissingPathError(f"{data_dir} is empty: a segmentation data set holds images/ and masks/")
    if not masks.exists() and (data_dir / "labels.csv").is_file():
        raise BadValueError(
            f"{data_dir} holds labels.csv and no {masks.name}: a classification data set; `plan` is for "
            "segmentation: train a classifier with `ternaus-zoo classify fit --config CONFIG.yaml`"
        )
    if not (data_dir / "images").is_dir():
        raise MissingPathError(f"{data_dir} holds no images/ folder: a segmentation data set holds images/ and masks/")
    if not masks.exists():
        raise MissingPathError(
            f"masks not found: {masks} (pass masks= (--masks) for another sub-folder or a COCO .json)"
        )


def _evenly(items: Sequence[T], limit: int) -> list[T]:
    """At most ``limit`` of ``items``, evenly spaced, the first and the last included."""
    indices = np.linspace(0, len(items) - 1, min(len(items), limit)).round().astype(int)
    return [items[index] for index in sorted(set(indices.tolist()))]


def _raw_mask(path: Path) -> np.ndarray:
    """A mask's values ``(H, W, C)``: palette indices or grey levels (``C == 1``), or the channels of a colour
    file whose channels differ (``read_class_mask`` refuses those)."""
    try:
        return read_class_mask(path, RAW_CLASSES)[:, :, None]
    except DataError:
        return read_image(path)


def _mask_kind(
    images: Path, masks: Path, mask_mode: str | None, ignore_index: int | None
) -> tuple[MaskKind, list[str] | None]:
    """The masks' kind, and the class folders of multi-label masks (``None`` otherwise)."""
    folders = sorted(path.name for path in masks.iterdir() if path.is_dir()) if masks.is_dir() else []
    if folders:
        if mask_mode not in (None, "multilabel"):
            raise BadValueError(f"{masks} holds class folders ({', '.join(folders)}): mask_mode must be multilabel")
        per_folder = max(1, KIND_SAMPLE // len(folders))
        files = [path for name in folders for path in _evenly(list(list_images(masks / name).values()), per_folder)]
        found = kind_of_values([_raw_mask(path) for path in files], str(masks), mask_mode="binary")
        description = f"multi-label, one folder per class ({found.description})"
        return MaskKind("multilabel", description, found.threshold, len(folders), tuple(folders)), folders
    probe = SegmentationDataset(images, masks, mask_mode="binary")
    if probe.coco is not None:
        names = tuple(probe.coco.class_names)
        mode = mask_mode or ("binary" if len(names) == 2 else "classes")
        if mode == "multilabel":
            raise BadValueError(f"{masks}: COCO masks are read as binary or classes, not {mode}")
        if mode == "binary":
            return MaskKind(mode, f"COCO, {len(names) - 1} categories as one foreground", None, 1), None
        return MaskKind(mode, f"COCO, {len(names) - 1} categories", None, len(names), names), None
    files = [probe.masks[stem] for stem in _evenly(probe.stems, KIND_SAMPLE)]
    arrays = [_raw_mask(path) for path in files]
    return kind_of_values(arrays, str(masks), mask_mode=mask_mode, ignore_index=ignore_index), None


def _bit_depth(image: np.ndarray) -> int:
    """8 or 16 where the ``[0, 1]`` values of ``read_image`` are multiples of 1/255 or 1/65535, else 32 (float)."""
    values = image.ravel()[:: max(1, image.size // 20_000)].astype(np.float64)
    for bits in (8, 16):
        levels = values * (2**bits - 1)
        if np.abs(levels - np.round(levels)).max() < 0.01:
            return bits
    return 32


class _Tally:
    """The running sums of the pass."""

    def __init__(self, kind: MaskKind, ignore_index: int | None) -> None:
        self.kind, self.ignore_index = kind, ignore_index
        self.sizes: list[tuple[int, int]] = []
        self.channel_sum = self.channel_squares = 0.0
        self.pixels = 0
        self.bit_depth = 0
        self.class_pixels = np.zeros(0, np.int64)
        self.ignored = 0
        self.foreground: list[float] = []
        self.components: list[int] = []
        self.areas: list[np.ndarray] = []
        self.widths: dict[str, list[np.ndarray]] = {}

    def planes(self, mask: np.ndarray) -> tuple[dict[str, np.ndarray], set[str], np.ndarray]:
        """The mask's planes to measure (by name), the names of those whose components count, its foreground."""
        names = self.kind.class_names
        if self.kind.mode == "binary":
            inside = mask[0] > 0
            return {"foreground": inside, "background": ~inside}, {"foreground"}, inside
        if self.kind.mode == "multilabel":
            named = {names[channel] if names else str(channel): mask[channel] > 0 for channel in range(len(mask))}
            return named, set(named), mask.any(axis=0)
        present = [int(value) for value in np.unique(mask) if value != self.ignore_index]
        named = {names[value] if names else str(value): mask == value for value in present}
        # class 0 is the background (COCO's and VOC's convention): its components are not counted
        counted = {name for value, name in zip(present, named, strict=True) if value != 0}
        foreground = mask != 0
        if self.ignore_index is not None:
            foreground &= mask != self.ignore_index
        return named, counted, foreground

    def add(self, image: np.ndarray, mask: np.ndarray) -> None:
        """One pair as the dataset gives it: image ``(C, H, W)`` in [0, 1]; mask ``(1, H, W)``, ``(K, H, W)``
        or ``(H, W)`` class indices."""
        self.sizes.append(image.shape[1:])
        self.channel_sum = self.channel_sum + image.sum(axis=(1, 2), dtype=np.float64)
        self.channel_squares = self.channel_squares + np.square(image, dtype=np.float64).sum(axis=(1, 2))
        self.pixels += image.shape[1] * image.shape[2]
        self.bit_depth = max(self.bit_depth, _bit_depth(image))
        if self.kind.mode == "classes":
            counts = np.bincount(mask.ravel())
            if self.ignore_index is not None and self.ignore_index < len(counts):
                self.ignored += counts[self.ignore_index]
                counts[self.ignore_index] = 0
        else:
            counts = (mask > 0).reshape(len(mask), -1).sum(axis=1)
        length = max(len(counts), len(self.class_pixels))
        self.class_pixels = np.pad(self.class_pixels, (0, length - len(self.class_pixels)))
        self.class_pixels[: len(counts)] += counts
        named, counted, foreground = self.planes(mask)
        self.foreground.append(float(foreground.mean()))
        components = 0
        for name, plane in named.items():
            widths, areas = measure_plane(plane)
            self.widths.setdefault(name, []).append(widths)
            if name in counted:
                components += len(areas)
                self.areas.append(areas)
        self.components.append(components)


def _median(values: list | np.ndarray) -> float:
    return float(np.median(values)) if len(values) else 0.0


def _measure(
    data_dir: Path, masks: str, mask_mode: str | None, ignore_index: int | None, max_images: int, progress: bool
) -> Fingerprint:
    """Read the sample and measure it (no cache)."""
    started = time.perf_counter()
    images, masks_path = data_dir / "images", data_dir / masks
    list_images(images)  # an empty images/ folder: one line naming it, before the masks are looked at
    kind, folders = _mask_kind(images, masks_path, mask_mode, ignore_index)
    dataset = SegmentationDataset(
        images,
        masks_path,
        mask_mode=kind.mode,
        threshold=kind.threshold if kind.threshold is not None else 127,
        num_classes=kind.num_classes or RAW_CLASSES,
        ignore_index=ignore_index,
        class_folders=folders,
    )
    tally = _Tally(kind, ignore_index if kind.mode == "classes" else None)
    sample = _evenly(range(len(dataset)), max_images)
    # on a terminal only (disable=None), and erased when done: an error met on the way stays the one line shown
    name = f"fingerprint {data_dir.name}"
    for index in tqdm(sample, name, unit="image", file=sys.stderr, leave=False, disable=None if progress else True):
        item = dataset[index]
        tally.add(item["image"].numpy(), item["mask"].numpy())
    sizes = np.array(tally.sizes)
    mean = tally.channel_sum / tally.pixels
    std = np.sqrt(np.maximum(tally.channel_squares / tally.pixels - mean**2, 0))
    # class masks: as many classes as the largest index found (the void value's count was set to 0)
    num_classes = kind.num_classes or int(np.flatnonzero(tally.class_pixels).max(initial=0)) + 1
    class_pixels = np.pad(tally.class_pixels, (0, max(0, num_classes - len(tally.class_pixels))))[:num_classes]
    labelled = class_pixels.sum() if kind.mode == "classes" else tally.pixels
    widths = {name: np.concatenate(found) for name, found in tally.widths.items()}
    medians = {name: round(_median(found), 2) for name, found in widths.items() if len(found)}
    counted = [medians[name] for name, found in widths.items() if len(found) >= MIN_WIDTH_SAMPLES]
    areas = np.concatenate(tally.areas) if tally.areas else np.empty(0)
    foreground = np.array(tally.foreground)
    return Fingerprint(
        data_dir=str(data_dir.resolve()),
        masks=masks,
        n_images=len(dataset),
        n_sampled=len(sample),
        sample=f"every statistic from {len(sample)} of {len(dataset)} pairs evenly spaced by stem; n_images and "
        "sequence from all the file names",
        size_median=[int(side) for side in np.median(sizes, axis=0)],
        size_min=[int(side) for side in sizes.min(axis=0)],
        size_max=[int(side) for side in sizes.max(axis=0)],
        channels=len(mean),
        bit_depth=tally.bit_depth,
        mean=[round(float(value), 4) for value in mean],
        std=[round(float(value), 4) for value in std],
        mask_kind=kind.description,
        mask_mode=kind.mode,
        num_classes=num_classes,
        ignore_index=ignore_index,
        class_names=list(kind.class_names),
        mask_threshold=kind.threshold,
        class_frequencies=[round(float(count / max(labelled, 1)), 6) for count in class_pixels],
        ignored_fraction=round(tally.ignored / tally.pixels, 6),
        foreground_median=round(float(np.median(foreground)), 4),
        foreground_mean=round(float(foreground.mean()), 4),
        foreground_min=round(float(foreground.min()), 4),
        foreground_max=round(float(foreground.max()), 4),
        empty_share=round(float((foreground == 0).mean()), 4),
        components_per_image=_median(tally.components),
        component_median_area=_median(areas),
        widths=medians,
        structure_width=min(counted) if counted else 0.0,
        sequence=looks_like_sequence(dataset.stems),
        imagenet_cached={},
        seconds=round(time.perf_counter() - started, 2),
    )


def fingerprint(
    data_dir: str | os.PathLike,
    *,
    mask_mode: str | None = None,
    ignore_index: int | None = None,
    masks: str = "masks",
    max_images: int = MAX_IMAGES,
    cache: bool = True,
    progress: bool = True,
) -> Fingerprint:
    """The :class:`Fingerprint` of ``data_dir`` (``images/`` and ``masks/``, paired by stem), cached.

    Args:
        data_dir: the data set folder.
        mask_mode: ``"binary"``, ``"classes"`` or ``"multilabel"`` where the values cannot tell (default: inferred).
        ignore_index: the mask value of a void class: masks holding it are class masks.
        masks: the masks sub-folder of ``data_dir``, or its COCO annotation file (``annotations.json``).
        max_images: at most this many pairs are read, evenly spaced over the sorted stems.
        cache: read and write the cache (see the module docstring).
        progress: a progress bar on stderr, where stderr is a terminal.

    Raises:
        UserError: an empty or missing folder, a classification data set (``labels.csv``), masks whose kind
            cannot be told (the message says what was found and which option to pass), an unreadable file.
    """
    data_dir = Path(data_dir)
    _check_folder(data_dir, data_dir / masks)
    if max_images < 1:
        raise BadValueError(f"max_images must be >= 1, got {max_images}")
    if mask_mode is not None and mask_mode not in MASK_MODES:
        raise BadValueError(f"--mask_mode must be one of {', '.join(MASK_MODES)}, not {mask_mode!r}")
    if ignore_index is not None and ignore_index < 0:
        raise BadValueError(f"--ignore_index must be a value of the mask files (>= 0), not {ignore_index}")
    options = {"mask_mode": mask_mode, "ignore_index": ignore_index, "max_images": max_images}
    key = cache_key(data_dir, masks, options)
    stored = cache_dir() / f"{key}.json"
    found = None
    if cache and stored.is_file():
        try:
            found = Fingerprint.from_json(stored.read_text())
        except ValueError:
            found = None  # a damaged or older cache entry: measured again and replaced
    if found is None:
        found = _measure(data_dir, masks, mask_mode, ignore_index, max_images, progress)
        found.key = key
        if cache:
            stored.parent.mkdir(parents=True, exist_ok=True)
            found.save(stored)
    found.imagenet_cached = imagenet_cached()
    return found

"""Listing image folders and pairing images with masks by file stem (file names only: nothing is read here)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ternaus_zoo.data.errors import DataError, PathLike, format_examples
from ternaus_zoo.errors import MissingPathError

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

logger = logging.getLogger("ternaus_zoo.data")


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


def find_class_folders(masks_dir: Path, num_classes: int | None, names: Iterable[str] | None) -> list[str] | None:
    """The per-class sub-folders of a multi-label ``masks_dir`` in channel order (default: every sub-folder,
    sorted by name), or ``None`` when it has none (one multi-channel file per image)."""
    if not masks_dir.is_dir():
        raise DataError(masks_dir, "mask folder not found")
    found = sorted(path.name for path in masks_dir.iterdir() if path.is_dir())
    if not found:
        return None
    chosen = list(names) if names is not None else found
    missing = [name for name in chosen if name not in found]
    if missing or len(chosen) != num_classes:
        raise DataError(
            masks_dir,
            f"multi-label masks by class folder need {num_classes} of them (num_classes): "
            f"asked for {chosen}, found {found}",
        )
    return chosen


def list_class_masks(masks_dir: Path, class_folders: list[str]) -> dict[str, dict[str, Path]]:
    """``{class folder: {stem: file}}``, checked to hold the same stems in every folder."""
    listed = {name: list_images(masks_dir / name) for name in class_folders}
    first, *others = class_folders
    for name in others:
        differ = sorted(set(listed[name]) ^ set(listed[first]))
        if differ:
            raise DataError(masks_dir / name, f"holds other masks than {first}/: {format_examples(differ)} in one only")
    return listed


@dataclass(frozen=True)
class Pairing:
    """Images of ``images_dir`` matched by stem with masks of ``masks_dir`` (the mask of ``ID`` is
    ``ID{mask_suffix}``): ``masks`` maps each paired image stem to its mask file."""

    images_dir: Path
    masks_dir: Path
    mask_suffix: str
    masks: dict[str, Path]
    no_mask: list[Path]
    no_image: list[Path]

    def problems(self) -> list[tuple[Path, str]]:
        """The unpaired files as ``(file, reason)``."""
        return [(path, f"no mask in {self.masks_dir}") for path in self.no_mask] + [
            (path, f"no image in {self.images_dir}") for path in self.no_image
        ]

    def error(self) -> DataError:
        """One error naming the unpaired files of both folders, and how to skip them."""
        lines = []
        if self.no_mask:
            names = format_examples(path.name for path in self.no_mask)
            lines.append(f"{len(self.no_mask)} image(s) without a mask in {self.masks_dir}: {names}")
        if self.no_image:
            names = format_examples(path.name for path in self.no_image)
            lines.append(f"{len(self.no_image)} mask(s) without an image in {self.images_dir}: {names}")
        hint = f" (masks are matched as ID{self.mask_suffix}.*)" if self.mask_suffix else ""
        skip = "; pass skip_bad=True (--data.skip_bad=true) to skip them"
        return DataError(self.images_dir, "; ".join(lines) + hint + skip)


def pair_by_stem(
    images_dir: Path, images: dict[str, Path], masks_dir: Path, masks: dict[str, Path], mask_suffix: str = ""
) -> Pairing:
    """Match ``images`` and ``masks`` (``{stem: file}``, as :func:`list_images` gives) by stem."""
    paired = {stem: masks[stem + mask_suffix] for stem in images if stem + mask_suffix in masks}
    used = {stem + mask_suffix for stem in paired}
    no_mask = [images[stem] for stem in images if stem not in paired]
    no_image = [path for stem, path in masks.items() if stem not in used]
    return Pairing(images_dir, masks_dir, mask_suffix, paired, no_mask, no_image)

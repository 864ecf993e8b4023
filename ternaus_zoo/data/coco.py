"""Masks given as a COCO annotation file (polygons or RLE), rasterised per image with pycocotools.

Category ids map to class indices in the order of their ids: the smallest id is class 1, the next class 2 and
so on; 0 is the background (pixels no annotation covers). Binary masks are the union of every annotation.
Where annotations overlap in a class mask, the smaller one wins: annotations are painted largest first, so an
object lying on another (a person on a road) keeps its pixels. pycocotools is an optional extra
(``pip install ternaus_zoo[coco]``).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ternaus_zoo.data.errors import DataError

PathLike = str | os.PathLike


def is_coco_file(path: PathLike) -> bool:
    """Whether ``masks`` names a COCO annotation file rather than a folder of mask images."""
    return Path(path).suffix.lower() == ".json"


class CocoMasks:
    """The masks of one COCO annotation file, by image stem (``file_name`` without folders and extension).

    Args:
        path: the JSON file (``images``, ``annotations``, ``categories``).

    Attributes:
        category_ids: the category ids in class order (class ``k`` is ``category_ids[k - 1]``).
        class_names: ``["background", *category names]``, one per class index.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        try:
            content = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise DataError(self.path, "COCO annotation file not found") from None
        except (OSError, ValueError) as error:
            raise DataError(self.path, f"not a readable COCO annotation file ({error})") from None
        missing = [key for key in ("images", "annotations", "categories") if key not in content]
        if not isinstance(content, dict) or missing:
            raise DataError(self.path, f"not a COCO annotation file: no {missing or 'object'}")
        categories = sorted(content["categories"], key=lambda category: category["id"])
        self.category_ids = [category["id"] for category in categories]
        self.class_names = ["background", *(str(category.get("name", category["id"])) for category in categories)]
        self._class_of = {category_id: index + 1 for index, category_id in enumerate(self.category_ids)}
        self.images: dict[str, dict[str, Any]] = {}
        for image in content["images"]:
            stem = Path(image["file_name"]).stem
            if stem in self.images:
                raise DataError(self.path, f"two images share the stem {stem!r}")
            self.images[stem] = image
        self._annotations: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for annotation in content["annotations"]:
            if annotation.get("category_id") not in self._class_of:
                raise DataError(self.path, f"annotation {annotation.get('id')} has an unknown category_id")
            self._annotations[annotation["image_id"]].append(annotation)

    @property
    def num_classes(self) -> int:
        """Classes of a class mask, the background included."""
        return len(self.category_ids) + 1

    def mask(self, stem: str, mode: str = "classes") -> np.ndarray:
        """``(H, W)`` ``uint8`` mask of the image ``stem``: class indices, or {0, 1} for ``mode="binary"``."""
        # pycocotools is imported here: an optional extra, needed only for COCO annotation files
        try:
            from pycocotools import mask as coco_mask
        except ImportError:
            raise DataError(self.path, "reading COCO annotations needs pycocotools: pip install pycocotools") from None
        image = self.images[stem]
        height, width = int(image["height"]), int(image["width"])
        regions = []
        for annotation in self._annotations.get(image["id"], []):
            segmentation = annotation["segmentation"]
            if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
                encoded = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                encoded = coco_mask.frPyObjects(segmentation, height, width)
            else:  # compressed RLE
                encoded = segmentation
            if list(encoded["size"]) != [height, width]:
                raise DataError(
                    self.path,
                    f"annotation {annotation.get('id')} of {stem} is {encoded['size']}, not {[height, width]}",
                )
            covered = coco_mask.decode(encoded).astype(bool)
            regions.append((int(covered.sum()), self._class_of[annotation["category_id"]], covered))
        mask = np.zeros((height, width), np.uint8)
        for _, class_index, covered in sorted(regions, key=lambda region: -region[0]):  # largest first
            mask[covered] = 1 if mode == "binary" else class_index
        return mask

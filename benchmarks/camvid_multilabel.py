"""A multi-label segmentation set derived from camvid-val: two classes that overlap, one mask folder each.

    python -m benchmarks.camvid_multilabel [--output runs/data/camvid-ground]

CamVid labels every pixel with one class, so overlapping classes must be derived. Two are, honestly:

* ``road``: the pixels of class 3 (road);
* ``ground``: road or pavement (classes 3 and 4): every road pixel is also ground, so the classes overlap.

Void pixels (class 11, unlabelled) are negatives of both: a 0/255 mask file cannot mark a pixel as unknown.
The images are linked, not copied (the data set is never copied into the project); the masks are written as
``<output>/masks/road/NAME.png`` and ``<output>/masks/ground/NAME.png`` (0/255), the layout of
``mask_mode: multilabel`` (``configs/camvid_ground_multilabel.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import ROOT, data_root
from ternaus_zoo.data.io import read_class_mask
from ternaus_zoo.data.listing import list_images

DERIVED = {"road": (3,), "ground": (3, 4)}


def derive(source: Path, output: Path) -> int:
    """Write the derived set of ``source`` (camvid-val) into ``output``; returns the number of images."""
    images = list_images(source / "images")
    (output / "images").mkdir(parents=True, exist_ok=True)
    for stem, path in images.items():
        link = output / "images" / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
        mask = read_class_mask(source / "masks" / f"{stem}.png", num_classes=11, ignore_index=11)
        for name, classes in DERIVED.items():
            folder = output / "masks" / name
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{stem}.png"), np.isin(mask, classes).astype(np.uint8) * 255)
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "data" / "camvid-ground")
    options = parser.parse_args()
    count = derive(data_root() / "camvid-val", options.output)
    print(f"camvid-ground: {count} images, masks/{{{','.join(DERIVED)}}} in {options.output}")


if __name__ == "__main__":
    main()

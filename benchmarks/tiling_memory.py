"""Peak memory of tiled prediction of large TIFFs (``predict_tiff``) against the image's size: it must stay flat.

    python -m benchmarks.pinned COMMIT -- python -m benchmarks.tiling_memory

For each size (5,000, 10,000 and 20,000 px squares by default) a tiled RGB ``uint8`` TIFF is written (256 px
tiles, uncompressed), then predicted in a fresh process by a tiny model (one 3 x 3 convolution: the model is not
what is measured, and a U-Net would take an hour on a 20,000 px image on a CPU) with 512 px tiles, a quarter
overlap and blocks of 4 x 4 tiles, its mask written into a TIFF. The child loads torch and the model, predicts
one tile once (so torch's one-time allocations count in the baseline), resets the kernel's high-water mark
(``/proc/self/clear_refs``), reads its resident memory (the baseline), predicts the image and reads the
high-water mark again: the peak above the baseline is the memory the prediction itself took. Linux only. Writes
``benchmarks/results/tiling_memory.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import ArgumentParser, environment, markdown_table, results_dir

SIZES = (5000, 10000, 20000)
TILE = 256  # the TIFF's own tiles
MODEL_TILE = 512  # the tiles the model sees
BLOCK_TILES = 4
FLAT = 0.10  # the largest peak may exceed the smallest by this fraction


def write_tiff(path: Path, size: int) -> None:
    """A ``size x size`` RGB ``uint8`` TIFF in 256 px tiles, written tile by tile (never held whole)."""
    import tifffile

    pattern = np.random.default_rng(0).integers(0, 256, (TILE, TILE, 3), dtype=np.uint8)
    count = -(-size // TILE)

    def tiles() -> Iterator[np.ndarray]:
        for row in range(count):
            for column in range(count):
                yield np.roll(pattern, row * 7 + column * 13, axis=(0, 1)[row % 2])

    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(image: str, mask: str) -> None:
    """The child: prints ``{"baseline_mib", "peak_mib", "seconds", "tiles"}`` as JSON."""
    import torch

    from ternaus_zoo.data.windows import open_tiff_windows
    from ternaus_zoo.inference.tiling import SlidingWindowPredictor, predict_tiff

    torch.set_num_threads(2)
    torch.manual_seed(0)
    predictor = SlidingWindowPredictor(
        torch.nn.Conv2d(3, 1, 3, padding=1),
        tile_size=MODEL_TILE,
        overlap=0.25,
        batch_size=4,
        activation="sigmoid",
        preprocess=lambda tiles: (tiles.float() / 255 - 0.5) / 0.25,
        progress=False,
    )
    predictor(torch.zeros(3, MODEL_TILE, MODEL_TILE, dtype=torch.uint8))  # one-time allocations, before the baseline
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark (VmHWM) back to the current RSS
    baseline = _status_kib("VmRSS")
    started = time.perf_counter()
    with open_tiff_windows(image) as windows:
        predict_tiff(predictor, windows, mask, block_tiles=BLOCK_TILES)
    seconds = time.perf_counter() - started
    rows, columns = predictor.plan(*_shape(image))
    result = {
        "baseline_mib": baseline / 1024,
        "peak_mib": (_status_kib("VmHWM") - baseline) / 1024,
        "seconds": seconds,
        "tiles": len(rows.starts) * len(columns.starts),
    }
    print(json.dumps(result))


def _shape(image: str) -> tuple[int, int]:
    import tifffile

    with tifffile.TiffFile(image) as tiff:
        return tiff.pages[0].shape[:2]


def main() -> None:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="image sides in pixels")
    options = parser.parse_args()
    rows, peaks = [], []
    with tempfile.TemporaryDirectory() as temporary:
        for size in options.sizes:
            image, mask = Path(temporary) / f"{size}.tif", Path(temporary) / f"{size}_mask.tif"
            write_tiff(image, size)
            code = f"from benchmarks.tiling_memory import measure; measure({str(image)!r}, {str(mask)!r})"
            output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            peaks.append(result["peak_mib"])
            rows.append([f"{size:,}", f"{result['tiles']:,}", f"{result['seconds']:.0f}",
                         f"{result['baseline_mib']:.0f}", f"{result['peak_mib']:.1f}",
                         f"{image.stat().st_size / 2**20:,.0f}"])  # fmt: skip
            print(rows[-1], flush=True)
            image.unlink()
            mask.unlink()
    spread = max(peaks) / min(peaks) - 1
    verdict = "flat" if spread <= FLAT else "NOT flat"
    header = ["side px", "tiles", "seconds", "baseline RSS MiB", "peak above baseline MiB", "TIFF MiB"]
    text = "\n\n".join(
        [
            "# Tiled prediction of large TIFFs: peak memory against image size",
            environment(),
            f"`predict_tiff`, tiles of {MODEL_TILE} px with a quarter overlap, blocks of {BLOCK_TILES} x {BLOCK_TILES} "
            "tiles, one 3 x 3 convolution as the model; each size in a fresh process (see the benchmark's docstring "
            "for what is measured).",
            markdown_table(header, rows),
            f"Largest peak / smallest peak - 1 = {spread:.1%}: {verdict} (the bound is {FLAT:.0%}).",
        ]
    )
    path = results_dir(options) / "tiling_memory.md"
    path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Sliding-window prediction of images of any size, with memory bounded by the tile.

The model only ever sees ``(batch_size, C, tile_size, tile_size)`` tiles, so its activations are bounded
by the tile. A call returns the image-sized ``(K, H, W)`` prediction (``float16`` halves it; an
``output_path`` puts it in a memory-mapped ``.npy`` file instead of RAM); :meth:`SlidingWindowPredictor.blocks`
yields it block by block instead, and :func:`predict_tiff` writes a TIFF's mask that way, reading only the
windows its tiles need: memory bounded by the block, whatever the image's size. The input may be a lazily
read array (``numpy.memmap``, ``uint8``, :class:`~ternaus_zoo.data.windows.TiffWindows`): tiles are cut,
converted and normalised one batch at a time.

Blending: every tile's prediction is multiplied by a separable window ``w_i(y) * w_j(x)`` (Gaussian,
pyramid or constant) and by ``1 / (S_y(y) * S_x(x))``, where ``S`` is the sum of the 1D windows of all
tiles covering a row or column. Because the tiles lie on a grid, the 2D weight sum factorises into these
two 1D sums, so the normalised weights of the tiles covering a pixel add up to exactly one, the
accumulator holds the final blended prediction at once, and no image-sized weight map is needed.

Written here rather than taken from MONAI or pytorch-toolbelt (neither is a dependency); torch has no
sliding-window inference of its own.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ternaus_zoo.data.windows import TiffWindows
from ternaus_zoo.inference.tta import Activation, apply_activation
from ternaus_zoo.inference.writers import MaskTiff, probabilities_to_mask

Blend = Literal["gaussian", "pyramid", "constant"]
ImageLike = Tensor | np.ndarray | TiffWindows


def blend_window(size: int, blend: Blend = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """A 1D blending window of ``size`` samples: positive, symmetric, largest in the centre.

    Args:
        size: tile side in pixels.
        blend: ``"gaussian"`` (``exp(-d**2 / (2 sigma**2))`` with ``sigma = sigma_scale * size``, the
            nnU-Net choice of 1/8), ``"pyramid"`` (a triangle: ``min(i + 1, size - i)``, scaled to a peak of
            1; its outer product is the separable "tent" pyramid) or ``"constant"`` (plain averaging).
        sigma_scale: Gaussian standard deviation as a fraction of ``size``.

    Returns:
        ``(size,)`` float64 array with values in ``(0, 1]``.
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    positions = np.arange(size, dtype=np.float64)
    if blend == "constant":
        return np.ones(size)
    if blend == "pyramid":
        window = np.minimum(positions + 1, size - positions)
        return window / window.max()
    if blend == "gaussian":
        if sigma_scale <= 0:
            raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
        centre = (size - 1) / 2
        window = np.exp(-((positions - centre) ** 2) / (2 * (sigma_scale * size) ** 2))
        return window / window.max()
    raise ValueError(f"unknown blend {blend!r}; choose 'gaussian', 'pyramid' or 'constant'")


def blend_weights(tile_size: int, blend: Blend = "gaussian", sigma_scale: float = 0.125) -> Tensor:
    """The ``(tile_size, tile_size)`` float32 weight map of one tile: the outer product of :func:`blend_window`."""
    window = blend_window(tile_size, blend, sigma_scale)
    return torch.from_numpy(np.outer(window, window)).float()


def tile_starts(length: int, tile_size: int, stride: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``length`` pixels.

    Tiles step by ``stride``; the last one is shifted inward so that it ends at the border, so every tile
    is a full tile lying inside the image. An axis shorter than the tile gets one tile at 0 (padded).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size + 1, stride))
    if starts[-1] != length - tile_size:
        starts.append(length - tile_size)
    return starts


@dataclass(frozen=True)
class AxisPlan:
    """Where the tiles lie along one image axis and how they are weighted.

    Attributes:
        starts: image offset of each tile's first pixel inside the image.
        extent: image pixels each tile covers, ``min(tile_size, length)``.
        offset: tile index of the first image pixel (the padding before the image on a short axis, else 0).
        weights: one ``(extent,)`` window per tile, already divided by the sum of all windows at each pixel,
            so the weights of the tiles covering a pixel add up to one.
    """

    starts: tuple[int, ...]
    extent: int
    offset: int
    weights: tuple[np.ndarray, ...]


def plan_axis(length: int, tile_size: int, stride: int, window: np.ndarray, margin: int = 0) -> AxisPlan:
    """The tiles of one axis and their normalised 1D weights.

    ``margin`` pixels at a tile side that lies inside the image get weight 0 (the predictions there lack
    context); the tiles must overlap by at least ``2 * margin`` so that every pixel keeps a positive weight.
    """
    starts = tile_starts(length, tile_size, stride)
    if length <= tile_size:
        extent, offset = length, (tile_size - length) // 2
    else:
        extent, offset = tile_size, 0
    windows = []
    total = np.zeros(length, dtype=np.float64)
    for start in starts:
        weights = window[offset : offset + extent].copy()
        if margin > 0 and length > tile_size:
            if start > 0:
                weights[:margin] = 0
            if start + tile_size < length:
                weights[tile_size - margin :] = 0
        windows.append(weights)
        total[start : start + extent] += weights
    if not (total > 0).all():
        first = int(np.argmin(total > 0))
        raise ValueError(
            f"pixel {first} of an axis of {length} gets no weight: tiles of {tile_size} with stride {stride} overlap "
            f"by {tile_size - stride} px, less than 2 * margin = {2 * margin}; raise the overlap or lower the margin"
        )
    normalised = tuple(w / total[s : s + extent] for w, s in zip(windows, starts, strict=True))
    return AxisPlan(tuple(starts), extent, offset, normalised)


def _split(padding: int) -> tuple[int, int]:
    """``padding`` pixels as ``(before, after)``, centring what they pad."""
    return padding // 2, padding - padding // 2


def _pad_tiles(tiles: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    if not any(padding):
        return tiles
    left, right, top, bottom = padding
    fits = max(left, right) < tiles.shape[-1] and max(top, bottom) < tiles.shape[-2]
    return F.pad(tiles, padding, mode="reflect" if fits else "replicate")


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class SlidingWindowPredictor:
    """Predict a ``(C, H, W)`` image of any size tile by tile and blend the tiles.

    Args:
        model: maps ``(B, C, T, T)`` to ``(B, K, T, T)`` logits (a zoo model, a :class:`TTA`, an
            :class:`Ensemble`, a loaded TorchScript module or any callable module). It is put in eval mode.
        tile_size: side ``T`` of the square tiles the model sees; choose a multiple of the model's
            ``info.size_multiple`` (and, for an exported model, its export size).
        scale: the model sees the image resized by this factor, the scale it was trained at (0.5: images
            halved). A tile then covers ``round(T / scale)`` image pixels, cut from the full-resolution image and
            resized to ``T`` one batch at a time; the output stays at full resolution.
        overlap: fraction of a tile shared with the next one (0.25), used when ``stride`` is not given.
        stride: step between tiles in image pixels, overriding ``overlap``.
        batch_size: tiles per forward pass.
        blend: ``"gaussian"``, ``"pyramid"`` or ``"constant"`` (see :func:`blend_window`).
        margin: image pixels at inner tile sides that get weight 0; with ``margin >= r`` for a model of receptive
            radius ``r`` the tiled prediction equals the whole-image one (needs ``overlap >= 2 * margin``).
        num_classes: output channels ``K``; taken from the first batch when ``None``.
        activation: ``"sigmoid"``/``"softmax"`` blends probabilities (and returns them); ``None`` blends logits.
        accumulator_dtype: dtype of the image-sized output (``torch.float16`` halves its memory).
        output_path: write the output to this ``.npy`` file, memory-mapped, instead of holding it in RAM.
        preprocess: applied to every ``(B, C, T, T)`` batch of tiles after conversion to float on the
            device, e.g. normalisation of ``uint8`` tiles; ``None``: tiles are only cast to float32.
        device: where the model runs; default the device of its parameters. The output stays on the CPU.
        progress: show a tqdm bar over the tiles.

    Call:
        ``predictor(image)`` with ``image`` ``(C, H, W)`` or ``(1, C, H, W)``, a tensor or a NumPy array,
        returns ``(K, H, W)`` (or ``(1, K, H, W)``) on the CPU in ``accumulator_dtype``; with ``output_path``
        the tensor shares memory with the memory-mapped file (read it back with
        ``numpy.load(path, mmap_mode="r")``).
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        tile_size: int = 512,
        scale: float = 1.0,
        overlap: float = 0.25,
        stride: int | None = None,
        batch_size: int = 4,
        blend: Blend = "gaussian",
        margin: int = 0,
        num_classes: int | None = None,
        activation: Activation = None,
        accumulator_dtype: torch.dtype = torch.float32,
        output_path: str | os.PathLike | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        device: torch.device | str | None = None,
        progress: bool = True,
        sigma_scale: float = 0.125,
    ) -> None:
        if tile_size < 1:
            raise ValueError(f"tile_size must be >= 1, got {tile_size}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        window_size = max(1, round(tile_size / scale))  # image pixels a tile covers
        if stride is None:
            if not 0 <= overlap < 1:
                raise ValueError(f"overlap must be in [0, 1), got {overlap}")
            stride = max(1, round(window_size * (1 - overlap)))
        if not 1 <= stride <= window_size:
            raise ValueError(f"stride must be in [1, {window_size}] (the tile in image pixels), got {stride}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if margin < 0 or 2 * margin >= window_size:
            raise ValueError(f"margin must be in [0, {window_size / 2:g}) (half a tile in image pixels), got {margin}")
        if activation not in ("sigmoid", "softmax", None):
            raise ValueError(f"unknown activation {activation!r}; choose 'sigmoid', 'softmax' or None")
        info = getattr(model, "info", None)
        multiple = getattr(info, "size_multiple", 1)
        if tile_size % multiple:
            warnings.warn(
                f"tile_size {tile_size} is not a multiple of the model's size_multiple {multiple}: every tile is "
                f"padded inside the model; {math.ceil(tile_size / multiple) * multiple} costs the same",
                stacklevel=2,
            )
        if isinstance(model, nn.Module):
            model.eval()
        self.model = model
        self.tile_size = tile_size
        self.scale = scale
        self.window_size = window_size
        self.stride = stride
        self.batch_size = batch_size
        self.blend = blend
        self.margin = margin
        self.num_classes = num_classes
        self.activation = activation
        self.accumulator_dtype = accumulator_dtype
        self.output_path = output_path
        self.preprocess = preprocess
        self.device = (
            torch.device(device)
            if device is not None
            else (_model_device(model) if isinstance(model, nn.Module) else torch.device("cpu"))
        )
        self.progress = progress
        self.window = blend_window(window_size, blend, sigma_scale)

    def plan(self, height: int, width: int) -> tuple[AxisPlan, AxisPlan]:
        """The row and column tile plans of an ``height x width`` image."""
        return (
            plan_axis(height, self.window_size, self.stride, self.window, self.margin),
            plan_axis(width, self.window_size, self.stride, self.window, self.margin),
        )

    def _allocate(self, num_classes: int, height: int, width: int) -> tuple[Tensor, np.memmap | None]:
        if self.output_path is None:
            return torch.zeros((num_classes, height, width), dtype=self.accumulator_dtype), None
        numpy_dtype = torch.empty((), dtype=self.accumulator_dtype).numpy().dtype
        array = np.lib.format.open_memmap(
            os.fspath(self.output_path), mode="w+", dtype=numpy_dtype, shape=(num_classes, height, width)
        )
        return torch.from_numpy(array), array

    def _model_extent(self, plan: AxisPlan) -> int:
        """Model pixels of a tile's image extent along one axis: ``T`` for a whole tile; a short axis is resized
        by ``scale`` and padded up to ``T``."""
        if plan.extent == self.window_size:
            return self.tile_size
        return max(1, min(self.tile_size, round(plan.extent * self.scale)))

    def _load_tiles(
        self,
        image: ImageLike,
        boxes: list[tuple[int, int]],
        plans: tuple[AxisPlan, AxisPlan],
        extents: tuple[int, int],
        padding: tuple[int, int, int, int],
    ) -> Tensor:
        """``(B, C, T, T)`` model input: the crops at ``boxes``, resized to ``extents`` model pixels (still in their
        stored dtype: a ``uint8`` crop stays ``uint8`` until it is tile-sized), converted, padded by ``padding``
        (``left, right, top, bottom``) to ``T``."""
        rows, columns = plans
        crops = [image[:, y : y + rows.extent, x : x + columns.extent] for y, x in boxes]
        tiles = torch.stack(crops) if isinstance(image, Tensor) else torch.from_numpy(np.stack(crops))
        if tuple(tiles.shape[-2:]) != extents:
            tiles = F.interpolate(tiles, size=extents, mode="bilinear", align_corners=False, antialias=self.scale < 1)
        tiles = tiles.to(self.device)
        tiles = self.preprocess(tiles) if self.preprocess is not None else tiles.float()
        return _pad_tiles(tiles, padding)

    def _image_shape(self, image: ImageLike) -> tuple[int, int]:
        if image.ndim != 3:
            raise ValueError(f"expected an image (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
        return int(image.shape[1]), int(image.shape[2])

    def _accumulate(
        self,
        image: ImageLike,
        plans: tuple[AxisPlan, AxisPlan],
        tiles: list[tuple[int, int]],
        box: tuple[int, int, int, int],
        allocate: Callable[[int], Tensor],
        bar: tqdm,
    ) -> Tensor:
        """The blended prediction ``(K, y1 - y0, x1 - x0)`` of the region ``box = (y0, y1, x0, x1)`` from ``tiles``
        (``(row, column)`` indices into ``plans``: every tile that overlaps the region), in ``allocate(K)``."""
        rows, columns = plans
        y0, y1, x0, x1 = box
        extents = (self._model_extent(rows), self._model_extent(columns))
        (top, bottom), (left, right) = (_split(self.tile_size - extent) for extent in extents)
        output: Tensor | None = None
        for first in range(0, len(tiles), self.batch_size):
            batch = tiles[first : first + self.batch_size]
            starts = [(rows.starts[i], columns.starts[j]) for i, j in batch]
            inputs = self._load_tiles(image, starts, plans, extents, (left, right, top, bottom))
            logits = self.model(inputs)
            if logits.ndim != 4 or tuple(logits.shape[-2:]) != (self.tile_size, self.tile_size):
                raise ValueError(
                    f"the model maps tiles of {self.tile_size}x{self.tile_size} to shape {tuple(logits.shape)}; "
                    f"sliding-window prediction needs (B, K, {self.tile_size}, {self.tile_size}) logits"
                )
            predictions = apply_activation(logits, self.activation).float()
            predictions = predictions[:, :, top : top + extents[0], left : left + extents[1]]
            if extents != (rows.extent, columns.extent):  # back to the image's own pixels
                predictions = F.interpolate(
                    predictions, size=(rows.extent, columns.extent), mode="bilinear", align_corners=False
                )
            predictions = predictions.cpu()
            if output is None:
                output = allocate(predictions.shape[1])
            if predictions.shape[1] != output.shape[0]:
                raise ValueError(f"the model returned {predictions.shape[1]} channels, expected {output.shape[0]}")
            for prediction, (i, j), (y, x) in zip(predictions, batch, starts, strict=True):
                # the part of the tile inside the region, in tile and in region coordinates
                top_in, bottom_in = max(y0, y), min(y1, y + rows.extent)
                left_in, right_in = max(x0, x), min(x1, x + columns.extent)
                # the separable weights broadcast, row by column, instead of an outer-product map per tile
                row_weights = torch.from_numpy(rows.weights[i][top_in - y : bottom_in - y]).float()[:, None]
                column_weights = torch.from_numpy(columns.weights[j][left_in - x : right_in - x]).float()
                part = prediction[:, top_in - y : bottom_in - y, left_in - x : right_in - x]
                region = output[:, top_in - y0 : bottom_in - y0, left_in - x0 : right_in - x0]
                region += (part * row_weights * column_weights).to(output.dtype)
            bar.update(len(batch))
        assert output is not None
        return output

    @torch.inference_mode()
    def __call__(self, image: ImageLike) -> Tensor:
        batched = image.ndim == 4
        if batched:
            if image.shape[0] != 1:
                raise ValueError(f"expected one image (C, H, W) or (1, C, H, W), got shape {tuple(image.shape)}")
            image = image[0]
        height, width = self._image_shape(image)
        rows, columns = self.plan(height, width)
        tiles = [(i, j) for i in range(len(rows.starts)) for j in range(len(columns.starts))]
        memmap: list[np.memmap] = []

        def allocate(num_classes: int) -> Tensor:
            output, array = self._allocate(self.num_classes or num_classes, height, width)
            memmap.extend([array] if array is not None else [])
            return output

        with tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not self.progress) as bar:
            output = self._accumulate(image, (rows, columns), tiles, (0, height, 0, width), allocate, bar)
        for array in memmap:
            array.flush()
        return output[None] if batched else output

    @torch.inference_mode()
    def blocks(self, image: ImageLike, block_tiles: int = 4) -> Iterator[tuple[int, int, Tensor]]:
        """Predict ``image`` (``(C, H, W)``, e.g. a lazily read :class:`~ternaus_zoo.data.windows.TiffWindows`)
        block by block, in memory bounded by the block, whatever the image's size.

        Blocks are ``block_tiles x block_tiles`` tiles, their borders on tile starts; a block's tiles are blended
        with the same weights as in a whole-image call, so the blocks put together equal ``predictor(image)``. The
        tiles that overlap two blocks (one row or column of tiles per border, with an overlap under a half) are
        predicted for each: about ``1 / block_tiles`` more work along each axis.

        Yields:
            ``(y, x, probabilities)``: the block's top-left pixel and its ``(K, h, w)`` blended prediction on the
            CPU in ``accumulator_dtype``, row of blocks after row of blocks, left to right.
        """
        if block_tiles < 1:
            raise ValueError(f"block_tiles must be >= 1, got {block_tiles}")
        height, width = self._image_shape(image)
        rows, columns = self.plan(height, width)
        row_blocks, column_blocks = (
            _blocks(plan, length, block_tiles) for plan, length in ((rows, height), (columns, width))
        )

        def allocate_block(box: tuple[int, int, int, int]) -> Callable[[int], Tensor]:
            return lambda num_classes: torch.zeros(
                (self.num_classes or num_classes, box[1] - box[0], box[3] - box[2]), dtype=self.accumulator_dtype
            )

        total = sum(len(r) * len(c) for (_, _, r) in row_blocks for (_, _, c) in column_blocks)
        with tqdm(total=total, desc="tiles", unit="tile", disable=not self.progress) as bar:
            for y0, y1, row_tiles in row_blocks:
                for x0, x1, column_tiles in column_blocks:
                    tiles = [(i, j) for i in row_tiles for j in column_tiles]
                    box = (y0, y1, x0, x1)
                    yield y0, x0, self._accumulate(image, (rows, columns), tiles, box, allocate_block(box), bar)


def _blocks(plan: AxisPlan, length: int, block_tiles: int) -> list[tuple[int, int, list[int]]]:
    """Blocks along one axis: ``(start, end, indices of the tiles overlapping [start, end))``, with borders at the
    start of every ``block_tiles``-th tile."""
    borders = [0, *(plan.starts[k] for k in range(block_tiles, len(plan.starts), block_tiles)), length]
    return [
        (start, end, [i for i, s in enumerate(plan.starts) if s < end and s + plan.extent > start])
        for start, end in itertools.pairwise(borders)
        if end > start
    ]


def predict_tiff(
    predictor: SlidingWindowPredictor,
    image: TiffWindows,
    mask_path: str | os.PathLike,
    *,
    threshold: float = 0.5,
    multilabel: bool = False,
    block_tiles: int = 4,
) -> Path:
    """Write the mask of a large TIFF (read by windows: :func:`~ternaus_zoo.data.windows.open_tiff_windows`) into
    the TIFF ``mask_path`` block by block: memory is bounded by the tiles and one block
    (:meth:`SlidingWindowPredictor.blocks`), not by the image, for tiled TIFFs (a striped one decodes strips as wide
    as the image).

    The predictor must give probabilities (a probability model or ``activation``) of images as read (``preprocess``
    normalising ``uint8`` or [0, 1] tiles). The mask is what :class:`~ternaus_zoo.inference.writers.MaskWriter`
    writes as a PNG (0/255 at ``threshold`` for one channel, class indices for several), as an uncompressed
    ``uint8`` TIFF; multi-label masks hold one 0/255 channel per class, ``(H, W, K)``. Returns ``mask_path``.
    """
    height, width = image.shape[1:]
    mask_file: MaskTiff | None = None
    for y, x, probabilities in predictor.blocks(image, block_tiles):
        mask = probabilities_to_mask(probabilities.float(), threshold, multilabel)
        mask = mask.transpose(1, 2, 0) if multilabel else mask
        if mask_file is None:
            mask_file = MaskTiff(mask_path, height, width, mask.shape[2] if multilabel else 1)
        mask_file.write(y, x, mask)
    return Path(mask_path)

"""Masks from an exported ONNX file alone: onnxruntime runs the graph tile by tile, and the file's metadata
(``ternaus-zoo export --format onnx`` writes it) says everything done around the graph, as ``ternaus-zoo predict``
does it around the model: the input (pixels in [0, 1], or normalised tiles), the tile, the evaluation size that
sets the scale each image is seen at, the output (probabilities, or logits and their activation), the threshold
and the post-processing steps applied to the stitched full-resolution mask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ternaus_zoo.data.io import image_with_channels
from ternaus_zoo.errors import UserError
from ternaus_zoo.inference.export import INPUT_NAME
from ternaus_zoo.inference.postprocessing import steps_from_dicts
from ternaus_zoo.inference.tiling import SlidingWindowPredictor
from ternaus_zoo.inference.writers import cleaned_mask

PREFIX = "ternaus_zoo."
# the metadata the predictor needs; files exported before `val_size`, `threshold` ... were recorded lack them
REQUIRED_KEYS = ("input", "layout", "mean", "std", "output", "activation", "val_size", "threshold", "multilabel")


class OnnxPredictor:
    """An exported ``.onnx`` file as a predictor of full-resolution masks.

    Args:
        path: the file ``ternaus-zoo export --format onnx`` wrote (its graph takes ``(batch, C, T, T)`` tiles).
        tile_overlap: fraction of a tile shared with its neighbour.
        tile_batch_size: tiles per run of the graph.
        providers: onnxruntime execution providers (default: the CPU's).

    Each image is seen at the export's evaluation scale (``val_size`` / its longest side; 1 without a
    ``val_size``), cut into ``T`` tiles there and blended back at full resolution
    (:class:`~ternaus_zoo.inference.tiling.SlidingWindowPredictor`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tile_overlap: float = 0.25,
        tile_batch_size: int = 4,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise UserError("OnnxPredictor runs the file with onnxruntime: pip install 'ternaus_zoo[onnx]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist (ternaus-zoo export --format onnx --output FILE writes it)")
        self.session = onnxruntime.InferenceSession(str(self.path), providers=list(providers))
        stored = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in REQUIRED_KEYS if PREFIX + key not in stored]
        if missing:
            raise UserError(
                f"{self.path} lacks the metadata {', '.join(PREFIX + key for key in missing)}: export it again "
                "with ternaus-zoo export --format onnx"
            )
        self.metadata = {key.removeprefix(PREFIX): value for key, value in stored.items() if key.startswith(PREFIX)}
        _, channels, tile, _ = self.session.get_inputs()[0].shape
        self.channels, self.tile_size = int(channels), int(tile)
        self.pixel_input = self.metadata["input"].startswith("pixels")
        self.mean = torch.tensor(json.loads(self.metadata["mean"])).view(1, -1, 1, 1)
        self.std = torch.tensor(json.loads(self.metadata["std"])).view(1, -1, 1, 1)
        self.logits = self.metadata["output"] == "logits"
        self.activation = self.metadata["activation"]
        self.val_size: int | None = json.loads(self.metadata["val_size"])
        self.threshold = float(json.loads(self.metadata["threshold"]))
        self.multilabel = bool(json.loads(self.metadata["multilabel"]))
        self.steps = steps_from_dicts(json.loads(self.metadata.get("postprocessing", "[]")))
        self.tile_overlap, self.tile_batch_size = tile_overlap, tile_batch_size

    def run(self, tiles: Tensor) -> Tensor:
        """The graph on ``(B, C, T, T)`` float32 tiles (as its input metadata says)."""
        (output,) = self.session.run(None, {INPUT_NAME: tiles.float().numpy()})
        return torch.from_numpy(output)

    def preprocess(self, tiles: Tensor) -> Tensor:
        """Tiles as read (``uint8``, or float in [0, 1]) to the graph's input: pixels, or normalised pixels."""
        pixels = tiles.float() / 255 if tiles.dtype == torch.uint8 else tiles.float()
        return pixels if self.pixel_input else (pixels - self.mean) / self.std

    def read(self, image: np.ndarray | str | os.PathLike) -> np.ndarray:
        """``(H, W, C)`` with the graph's channels, from a file or an array as ``read_image`` gives it."""
        return image_with_channels(image, self.channels)

    def probabilities(self, image: np.ndarray | str | os.PathLike) -> Tensor:
        """``(K, H, W)`` float32 probabilities of an image (an ``(H, W[, C])`` array, or a file) at its size."""
        pixels = self.read(image)
        height, width = pixels.shape[:2]
        tiler = SlidingWindowPredictor(
            self.run,
            tile_size=self.tile_size,
            scale=self.val_size / max(height, width) if self.val_size else 1.0,
            overlap=self.tile_overlap,
            batch_size=self.tile_batch_size,
            activation=self.activation if self.logits else None,
            preprocess=self.preprocess,
            progress=False,
        )
        return tiler(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()

    def predict_mask(self, image: np.ndarray | str | os.PathLike) -> np.ndarray:
        """The mask of an image, as ``predict`` writes it: thresholded, then the exported post-processing steps
        applied in order. ``(H, W)`` ``uint8`` (0/255, or class indices), ``(K, H, W)`` for multi-label."""
        return cleaned_mask(self.probabilities(image), self.threshold, self.multilabel, self.steps)

"""Writing predictions to disk as they come, not holding them in memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pytorch_lightning.callbacks import BasePredictionWriter


def probabilities_to_mask(probabilities: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """``(C, H, W)`` probabilities to a ``uint8`` ``(H, W)`` mask: 0/255 for one channel, class indices otherwise."""
    if probabilities.shape[0] == 1:
        return ((probabilities[0] > threshold).to(torch.uint8) * 255).cpu().numpy()
    return probabilities.argmax(dim=0).to(torch.uint8).cpu().numpy()


class MaskWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<name>.png`` for every predicted image, at the image's original size.

    The prediction step must return ``{"name": [...], "probabilities": [(C, H, W), ...]}``.

    Args:
        output_dir: folder for the masks (created).
        threshold: foreground threshold of single-channel outputs.
        save_probabilities: also write ``<name>.npy`` with the ``float16`` probabilities ``(C, H, W)``.
    """

    def __init__(self, output_dir: str = "predictions", threshold: float = 0.5, save_probabilities: bool = False):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.threshold = threshold
        self.save_probabilities = save_probabilities

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, probabilities in zip(prediction["name"], prediction["probabilities"], strict=True):
            path = self.output_dir / f"{name}.png"
            if not cv2.imwrite(str(path), probabilities_to_mask(probabilities, self.threshold)):
                raise OSError(f"could not write {path}")
            if self.save_probabilities:
                np.save(self.output_dir / f"{name}.npy", probabilities.to(torch.float16).cpu().numpy())

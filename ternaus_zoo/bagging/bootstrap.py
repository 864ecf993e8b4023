"""Bootstrap samples: each fold's model trains on as many draws, with replacement, as it has training images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch.utils.data import Dataset

from ternaus_zoo.bagging.layout import PathLike


class BootstrapDataset(Dataset):
    """``dataset`` indexed through ``indices`` (with repeats); ``reseed`` reaches the wrapped dataset."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(index) for index in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def reseed(self, seed: int) -> None:
        if hasattr(self.dataset, "reseed"):
            self.dataset.reseed(seed)


def bootstrap_indices(size: int, seed: int) -> np.ndarray:
    """``size`` draws with replacement from ``range(size)``, sorted; about 63 % of the items appear."""
    return np.sort(np.random.default_rng(seed).integers(0, size, size=size))


class BootstrapSample(Callback):
    """Replace the data module's ``train_dataset`` by a bootstrap sample of it when fitting starts.

    Runs after the data module's ``setup`` (Lightning calls callbacks' ``setup`` after it), so the
    sample is drawn again, identically, when a fold resumes. Writes ``directory/bootstrap.csv``
    (``stem,count``).
    """

    def __init__(self, seed: int, directory: PathLike | None = None) -> None:
        self.seed = seed
        self.directory = Path(directory) if directory is not None else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "train_dataset", None)
        if dataset is None:
            raise RuntimeError("bootstrap sampling needs a data module with a train_dataset after setup()")
        indices = bootstrap_indices(len(dataset), self.seed)
        datamodule.train_dataset = BootstrapDataset(dataset, indices)
        stems = getattr(dataset, "stems", None)
        if self.directory is not None and stems is not None and trainer.is_global_zero:
            counts = np.bincount(indices, minlength=len(dataset))
            self.directory.mkdir(parents=True, exist_ok=True)
            lines = ["stem,count", *(f"{stem},{count}" for stem, count in zip(stems, counts, strict=True) if count)]
            (self.directory / "bootstrap.csv").write_text("\n".join(lines) + "\n")

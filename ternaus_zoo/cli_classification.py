"""The ``ternaus-zoo-cls`` command line: LightningCLI's ``fit``, ``validate``, ``test`` and ``predict`` over
:class:`~ternaus_zoo.training.classification.ClassificationModule` and
:class:`~ternaus_zoo.data.multilabel.ClassificationDataModule`, with the trainer defaults of ``ternaus-zoo``.

``predict`` writes one CSV (``--writer.output_path``) of every image's probabilities and 0/1 labels (at the
thresholds tuned on the validation fold and stored in the checkpoint) through :class:`LabelWriter`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter

from ternaus_zoo.cli import ZooCLI, build_cli
from ternaus_zoo.data.multilabel import ClassificationDataModule
from ternaus_zoo.training.classification import ClassificationModule

USAGE = """usage: ternaus-zoo-cls {fit,validate,test,predict} ...

  fit | validate | test | predict   LightningCLI subcommands over the classification module, e.g.
                                    ternaus-zoo-cls fit --config configs/miml_gapnet.yaml
                                    ternaus-zoo-cls predict --config X.yaml --ckpt_path best.ckpt \\
                                        --writer.output_path predictions.csv

`ternaus-zoo-cls fit --help` lists every option of a subcommand.
"""


class LabelWriter(BasePredictionWriter):
    """Writes the predictions of a classifier to one CSV file as batches come.

    Columns: ``name``, ``prob_<label>`` for every label, then ``<label>`` (0/1) for every label. Label names
    are the module's ``label_names``, else the data module's, else ``0..C-1``. The prediction step must return
    ``{"name": [...], "probabilities": (B, C), "labels": (B, C)}`` (see ``ClassificationModule.predict_step``).
    With several processes each writes ``<stem>.rank<r>.csv``.

    Args:
        output_path: the CSV file (its folder is created; an existing file is replaced).
        digits: decimals of the probabilities.
    """

    def __init__(self, output_path: str = "predictions.csv", digits: int = 5) -> None:
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)
        self.digits = digits
        self._header_written = False

    def path(self, trainer: Trainer) -> Path:
        if trainer.world_size > 1:
            return self.output_path.with_name(f"{self.output_path.stem}.rank{trainer.global_rank}.csv")
        return self.output_path

    @staticmethod
    def label_names(trainer: Trainer, pl_module: LightningModule, count: int) -> list[str]:
        names = getattr(pl_module.hparams, "label_names", None) or getattr(trainer.datamodule, "label_names", None)
        return list(names) if names and len(names) == count else [str(index) for index in range(count)]

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._header_written = False

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probabilities, labels = prediction["probabilities"], prediction["labels"]
        path = self.path(trainer)
        mode = "a" if self._header_written else "w"
        if not self._header_written:
            path.parent.mkdir(parents=True, exist_ok=True)
        with path.open(mode, newline="") as file:
            writer = csv.writer(file)
            if not self._header_written:
                names = self.label_names(trainer, pl_module, probabilities.shape[1])
                writer.writerow(["name", *(f"prob_{name}" for name in names), *names])
                self._header_written = True
            for name, probs, predicted in zip(prediction["name"], probabilities.tolist(), labels.tolist(), strict=True):
                writer.writerow([name, *(f"{value:.{self.digits}f}" for value in probs), *map(int, predicted)])


class ClassificationCLI(ZooCLI):
    """:class:`ternaus_zoo.cli.ZooCLI` over the classification module, with a :class:`LabelWriter` for ``predict``."""

    linked = ("in_channels", "num_classes")
    writer_class = LabelWriter


def build_classification_cli(args: Sequence[str], run: bool = True) -> ClassificationCLI:
    """The LightningCLI over the classification module and data module; ``run=False`` only parses and builds."""
    return build_cli(args, run, ClassificationCLI, ClassificationModule, ClassificationDataModule)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``ternaus-zoo-cls`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    build_classification_cli(argv)


if __name__ == "__main__":
    main()

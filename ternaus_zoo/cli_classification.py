"""``ternaus-zoo classify``: LightningCLI's ``fit``, ``validate``, ``test`` and ``predict`` over
:class:`~ternaus_zoo.training.classification.ClassificationModule` and
:class:`~ternaus_zoo.data.ClassificationDataModule`, with the trainer defaults of ``ternaus-zoo``.

``predict`` writes one CSV (``--writer.output_path``) of every image's probabilities and 0/1 labels (at the
thresholds tuned on the validation fold and stored in the checkpoint) through
:class:`~ternaus_zoo.inference.writers.LabelWriter`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ternaus_zoo.cli_lightning import ZooCLI, build_cli
from ternaus_zoo.data.classification_datamodule import ClassificationDataModule
from ternaus_zoo.inference.writers import LabelWriter
from ternaus_zoo.training.classification import ClassificationModule

USAGE = """usage: ternaus-zoo classify {fit,validate,test,predict} ...

  fit | validate | test | predict   LightningCLI subcommands over the classification module, e.g.
                                    ternaus-zoo classify fit --config configs/miml_gapnet.yaml
                                    ternaus-zoo classify predict --config X.yaml --ckpt_path best.ckpt \\
                                        --writer.output_path predictions.csv

`ternaus-zoo classify fit --help` lists every option of a subcommand.
"""


class ClassificationCLI(ZooCLI):
    """:class:`ternaus_zoo.cli.ZooCLI` over the classification module, with a :class:`LabelWriter` for ``predict``."""

    linked = ("in_channels", "num_classes")
    writer_class = LabelWriter
    task = "classification"


def build_classification_cli(args: Sequence[str], run: bool = True) -> ClassificationCLI:
    """The LightningCLI over the classification module and data module; ``run=False`` only parses and builds."""
    return build_cli(args, run, ClassificationCLI, ClassificationModule, ClassificationDataModule)


def classify(argv: Sequence[str]) -> None:
    """``ternaus-zoo classify <subcommand> ...``: the classification command line."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    build_classification_cli(argv)

"""LightningCLI over the zoo's modules: the trainer defaults, the data module told which model it feeds, a
writer for ``predict``, and a notice on Ctrl-C. :mod:`ternaus_zoo.cli` (segmentation) and
:mod:`ternaus_zoo.cli_classification` build on it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.errors import MissingPathError
from ternaus_zoo.inference import MaskWriter
from ternaus_zoo.inference.pretrained import TRAINING_CONFIG_KEY
from ternaus_zoo.interrupts import InterruptNotice
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.registry import Task, registered
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.weights import WeightsError, load_container

# values of Lightning's ckpt_path that are not files
LIGHTNING_CHECKPOINT_NAMES = ("best", "last", "hpc")

TRAINER_DEFAULTS = {
    "logger": [
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        # TensorBoard in its own folder: two loggers under one folder would count versions apart
        {"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs/tensorboard"}},
    ],
    "callbacks": [
        {"class_path": "pytorch_lightning.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        # a look at a few validation images and their predictions every 5 epochs (TensorBoard, PNG files)
        {"class_path": "ternaus_zoo.training.callbacks.PredictionGrid", "init_args": {"every_n_epochs": 5}},
    ],
    "precision": fast_precision(),
}


# lines Lightning prints that no user option caused: advertisements, the ModelCheckpoint our modules add,
# a deprecation inside Lightning itself, the model summary's note on the default bf16 precision
QUIET_LOG_PREFIXES = ("💡 Tip:", "The following callbacks returned in `LightningModule.configure_callbacks`")
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision bf16-mixed is not supported by the model summary",
)


def _wanted(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(QUIET_LOG_PREFIXES)


def quiet_lightning() -> None:
    """Drop the lines of :data:`QUIET_LOG_PREFIXES` and :data:`QUIET_WARNINGS` from the command's output."""
    for handler in logging.getLogger("pytorch_lightning").handlers or logging.getLogger().handlers:
        if _wanted not in handler.filters:
            handler.addFilter(_wanted)
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def check_checkpoint(path: str | Path | None, task: Task) -> Mapping[str, Any] | None:
    """Refuse, before Lightning reads it, a ``--ckpt_path`` that is missing, no checkpoint, or of the other task.

    Raises:
        MissingPathError: no such file.
        WeightsError: not a Lightning checkpoint of a zoo module, or a checkpoint of a ``task`` model's
            counterpart (a classifier given to ``ternaus-zoo predict``).
    """
    if path is None or str(path) in LIGHTNING_CHECKPOINT_NAMES or str(path).startswith("registry"):
        return None
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"checkpoint {path} does not exist (--ckpt_path)")
    content = load_container(path)
    hyper_parameters = content.get("hyper_parameters") if isinstance(content, Mapping) else None
    name = hyper_parameters.get("model") if isinstance(hyper_parameters, Mapping) else None
    if not isinstance(name, str):
        raise WeightsError(f"{path} is not a checkpoint of a ternaus_zoo run (no hyper_parameters['model'])")
    found = registered(name)[1].task
    if found != task:
        command = "ternaus-zoo classify" if found == "classification" else "ternaus-zoo"
        raise WeightsError(f"{path} is a checkpoint of the {found} model {name!r}: use `{command} ...` for it")
    return content


class ConfigInCheckpoint(SaveConfigCallback):
    """Lightning's ``config.yaml`` in the run folder, and the same resolved configuration (the seed included) in
    every checkpoint under :data:`TRAINING_CONFIG_KEY`, where ``export --format pretrained`` finds the training
    command to write on the model card."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[TRAINING_CONFIG_KEY] = plain_config(self.parser, self.config)


class ZooCLI(LightningCLI):
    """LightningCLI with the data module told which model it feeds, and a mask writer for ``predict``."""

    linked: tuple[str, ...] = ("in_channels", "num_classes", "ignore_index")
    writer_class: type = MaskWriter
    task: Task = "segmentation"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model", "data.model_name")
        for name in self.linked:
            parser.link_arguments(f"model.{name}", f"data.{name}")
        parser.add_lightning_class_args(self.writer_class, "writer")
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})
        parser.set_defaults({"seed_everything": 0})  # reproducible by default (and no "No seed found" warning)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        # added here, not to the configurable callbacks: a config's own `trainer.callbacks` must not drop it
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(InterruptNotice())
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.given_options = {str(arg).split("=", 1)[0] for arg in args or ()}
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters into the config here, before any hook: check it first
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        content = check_checkpoint(self.config[subcommand].get("ckpt_path"), self.task)
        super()._parse_ckpt_path()
        # the evaluation size the run was validated at, as `predict --manifest/--tta` reads it: one rule for
        # both routes (`--data.val_size=null` on the command line keeps the full resolution)
        data = self.config[subcommand].get("data")
        saved = (content or {}).get("datamodule_hyper_parameters") or {}
        if (
            data is not None
            and "val_size" in data
            and data.val_size is None
            and "--data.val_size" not in self.given_options
        ):
            data.val_size = saved.get("val_size")


def build_cli(
    args: Sequence[str],
    run: bool = True,
    cli_class: type[ZooCLI] = ZooCLI,
    model_class: type = SegmentationModule,
    datamodule_class: type = SegmentationDataModule,
) -> ZooCLI:
    """The LightningCLI over a module and a data module; ``run=False`` only parses and instantiates."""
    # LightningCLI warns when it is given `args` while sys.argv holds arguments too, which is always the case
    # under the console script. sys.argv itself must stay: Lightning's DDP launcher re-runs it in the workers.
    quiet_lightning()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
        return cli_class(
            model_class,
            datamodule_class,
            args=list(args),
            run=run,
            save_config_callback=ConfigInCheckpoint,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"default_env": False},
        )


def resolved_config(cli: LightningCLI) -> dict[str, Any]:
    """The parsed configuration as plain data, ``None`` values and link targets included."""
    return plain_config(cli.parser, cli.config, link_targets=True)


def plain_config(parser: ArgumentParser, config: Namespace, link_targets: bool = False) -> dict[str, Any]:
    """A parsed configuration as plain data, ``None`` values included, as Lightning's ``config.yaml`` holds it
    (``--config`` reads it back); ``link_targets``: with the values linked from other options too."""
    try:
        text = parser.dump(config, skip_unset=False, skip_validation=True, skip_link_targets=not link_targets)
    except TypeError:  # jsonargparse < 4.49 names them skip_none and skip_check
        text = parser.dump(config, skip_none=False, skip_check=True, skip_link_targets=not link_targets)
    return yaml.safe_load(text)

"""LightningCLI over the zoo's modules: the trainer defaults, the data module told which model it feeds, a
writer for ``predict``, and a notice on Ctrl-C. :mod:`ternaus_zoo.cli` (segmentation) and
:mod:`ternaus_zoo.cli_classification` build on it.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.errors import BadValueError, MissingPathError
from ternaus_zoo.inference import MaskWriter
from ternaus_zoo.inference.pretrained import TRAINING_CONFIG_KEY
from ternaus_zoo.interrupts import InterruptNotice
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.registry import Task, registered
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.weights import WeightsError, load_container

# values of Lightning's ckpt_path that are not files
LIGHTNING_CHECKPOINT_NAMES = ("best", "last", "hpc")

# where the default loggers write, under `runs/` or `--trainer.default_root_dir`; TensorBoard in its own folder:
# two loggers under one folder would count versions apart
RUNS_DIR = "runs"
LOGGER_FOLDERS = {
    "pytorch_lightning.loggers.CSVLogger": "",
    "pytorch_lightning.loggers.TensorBoardLogger": "tensorboard",
}
TRAINER_DEFAULTS = {
    "logger": [
        {"class_path": name, "init_args": {"save_dir": str(Path(RUNS_DIR, folder))}}
        for name, folder in LOGGER_FOLDERS.items()
    ],
    "callbacks": [
        {"class_path": "pytorch_lightning.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        # a look at a few validation images and their predictions every 5 epochs (TensorBoard, PNG files)
        {"class_path": "ternaus_zoo.training.callbacks.PredictionGrid", "init_args": {"every_n_epochs": 5}},
    ],
    "precision": fast_precision(),
}


# lines Lightning prints that no user option caused: advertisements, the ModelCheckpoint our modules add,
# a deprecation inside Lightning itself, the model summary's note on the default bf16 precision, and the checkpoint
# callbacks' state of another run folder not restored (predicting from a checkpoint: this run's folder is new)
QUIET_LOG_PREFIXES = ("💡 Tip:", "The following callbacks returned in `LightningModule.configure_callbacks`")
QUIET_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision bf16-mixed is not supported by the model summary",
    r"The dirpath has changed from",
)
# the loggers Lightning gives a handler of its own (to stderr) when the root logger has none
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")


def _wanted(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(QUIET_LOG_PREFIXES)


class ConsoleHandler(logging.StreamHandler):
    """Lightning's information ("Seed set to 0", the devices, the model summary) to stdout beside its progress
    bar, its warnings and errors to stderr: stderr holds only what went wrong, and a mistake is one line there."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(_wanted)

    def emit(self, record: logging.LogRecord) -> None:
        # the stream looked up at every record, not kept: sys.stdout and sys.stderr may be replaced (capture)
        self.stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        super().emit(record)


def quiet_lightning() -> None:
    """Lightning's own handlers replaced by :class:`ConsoleHandler`; the lines of :data:`QUIET_LOG_PREFIXES` and
    :data:`QUIET_WARNINGS` dropped from the command's output."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
                logger.addHandler(ConsoleHandler())
    for handler in logging.getLogger().handlers:  # where Lightning's loggers propagate (no handler of their own)
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

    def before_instantiate_classes(self) -> None:
        # the default loggers' folders follow --trainer.default_root_dir (the run folder with them)
        subcommand = self.config.get("subcommand")
        trainer = (self.config[subcommand] if subcommand else self.config).get("trainer")
        root = trainer.get("default_root_dir") if trainer is not None else None
        loggers = trainer.get("logger") if root is not None else None
        for logger in loggers if isinstance(loggers, list) else []:
            folder = LOGGER_FOLDERS.get(getattr(logger, "class_path", None))
            init_args = getattr(logger, "init_args", None)
            if folder is not None and init_args and init_args.get("save_dir") == str(Path(RUNS_DIR, folder)):
                init_args.save_dir = str(Path(root, folder))

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
        try:
            return cli_class(
                model_class,
                datamodule_class,
                args=list(args),
                run=run,
                save_config_callback=ConfigInCheckpoint,
                save_config_kwargs={"overwrite": True},
                # a parsing error raised, not printed with the usage: the command line reports it on one line
                parser_kwargs={"default_env": False, "exit_on_error": False},
            )
        except ArgumentError as error:
            raise BadValueError(parsing_error(error)) from error


def parsing_error(error: ArgumentError) -> str:
    """jsonargparse's message with the option spelt as on the command line: ``--model.lr: Expected a float``."""
    text = re.sub(r'Parser key "([^"]+)":', r"--\1:", str(error))
    return re.sub(r"<class '([\w.]+)'>", r"\1", text)


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

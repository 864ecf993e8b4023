"""The ``ternaus-zoo`` command line.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's subcommands over
``SegmentationModule`` and ``SegmentationDataModule``; ``lr-find`` and ``demo`` are plain functions,
``lr-find`` reusing the same parser and config (``LightningCLI(run=False)``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.tuner import Tuner

from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.inference import MaskWriter
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.training.demo import run_demo

USAGE = """usage: ternaus-zoo {fit,validate,test,predict,lr-find,demo} ...

  fit | validate | test | predict   LightningCLI subcommands, e.g.
                                    ternaus-zoo fit --config configs/kvasir_unet11.yaml
                                    ternaus-zoo predict --config X.yaml --ckpt_path best.ckpt --writer.output_dir out/
  lr-find                           learning-rate range test with the same config; prints the suggestion
  demo                              train a small U-Net on synthetic shapes (no data, no network)

`ternaus-zoo fit --help` lists every option of a subcommand.
"""

TRAINER_DEFAULTS = {
    "logger": [
        {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        # TensorBoard in its own folder: two loggers under one folder would count versions apart
        {"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs/tensorboard"}},
    ],
    "callbacks": [
        {"class_path": "pytorch_lightning.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
    ],
}


class ZooCLI(LightningCLI):
    """LightningCLI with the data module told which model it feeds, and a mask writer for ``predict``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model", "data.model_name")
        parser.link_arguments("model.in_channels", "data.in_channels")
        parser.link_arguments("model.num_classes", "data.num_classes")
        parser.link_arguments("model.ignore_index", "data.ignore_index")
        parser.add_lightning_class_args(MaskWriter, "writer")
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})


def build_cli(args: Sequence[str], run: bool = True) -> ZooCLI:
    """The LightningCLI over our module and data module; ``run=False`` only parses and instantiates."""
    return ZooCLI(
        SegmentationModule,
        SegmentationDataModule,
        args=list(args),
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"default_env": False},
    )


def lr_find(args: Sequence[str]) -> float | None:
    """Lightning's learning-rate range test on the model and data of a ``fit`` config.

    Extra options: ``--min_lr``, ``--max_lr``, ``--num_training`` (steps); the plot is written to
    ``<log_dir>/lr_find.png``.
    """
    extra = argparse.ArgumentParser(prog="ternaus-zoo lr-find", add_help=False)
    extra.add_argument("--min_lr", type=float, default=1e-6)
    extra.add_argument("--max_lr", type=float, default=1.0)
    extra.add_argument("--num_training", type=int, default=100)
    options, rest = extra.parse_known_args(args)
    cli = build_cli(rest, run=False)
    finder = Tuner(cli.trainer).lr_find(
        cli.model,
        datamodule=cli.datamodule,
        min_lr=options.min_lr,
        max_lr=options.max_lr,
        num_training=options.num_training,
        update_attr=False,
    )
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=True)
    path = f"{cli.trainer.log_dir or '.'}/lr_find.png"
    figure.savefig(path)
    print(f"lr-find: suggested learning rate {suggestion}; plot in {path}")
    return suggestion


def demo(args: Sequence[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="ternaus-zoo demo", description=run_demo.__doc__)
    parser.add_argument("--output_dir", default="runs/demo")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max_steps", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    return run_demo(options.output_dir, minutes=options.minutes, max_steps=options.max_steps, seed=options.seed)


COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {"lr-find": lr_find, "demo": demo}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    build_cli(argv)


if __name__ == "__main__":
    main()

"""The ``ternaus-zoo`` command line.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's subcommands over
``SegmentationModule`` and ``SegmentationDataModule``; ``lr-find``, ``bag``, ``export`` and ``demo`` are
plain functions, ``lr-find`` and ``bag`` reusing the same parser and config (``LightningCLI(run=False)``).
``predict`` with ``--manifest``, ``--tta``, ``--tile_size`` or several ``--ckpt_path`` is a plain function
too (:func:`predict_ensemble`); without them it stays LightningCLI's.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.tuner import Tuner

from ternaus_zoo.bagging import FoldRun, assemble, fold_logger_config, train_bag
from ternaus_zoo.cli_inference import _takes_predict_ensemble, export, predict_ensemble, predict_parser
from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.inference import MaskWriter
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.training.demo import run_demo

USAGE = """usage: ternaus-zoo {fit,validate,test,predict,lr-find,bag,export,demo} ...

  fit | validate | test | predict   LightningCLI subcommands, e.g.
                                    ternaus-zoo fit --config configs/kvasir_unet11.yaml
                                    ternaus-zoo predict --config X.yaml --ckpt_path best.ckpt --writer.output_dir out/
  predict --manifest M | --ckpt_path X [--tta d4] [--tile_size 512 --tile_overlap 0.25]
                                    an ensemble (or one model) with test-time augmentation and tiling
  lr-find                           learning-rate range test with the same config; prints the suggestion
  bag                               one model per fold (--config X --folds 5), OOF predictions, a manifest;
                                    --only_fold k per device or array task, then --assemble
  export                            a checkpoint or manifest (+ TTA) to ONNX or TorchScript at a fixed tile size
  demo                              train a small U-Net on synthetic shapes (no data, no network)

`ternaus-zoo fit --help` (or `bag --help`, `export --help`) lists every option of a command.
"""

PREDICT_ROUTES_HELP = """ternaus-zoo predict takes one of two routes:
  with --manifest, --pretrained, --tta, --tile_size, --tile_overlap or several --ckpt_path: the options below;
  otherwise (one --ckpt_path, no TTA, no tiles): LightningCLI's predict, whose options follow the line.

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
    "precision": fast_precision(),
}


class ZooCLI(LightningCLI):
    """LightningCLI with the data module told which model it feeds, and a mask writer for ``predict``."""

    linked: tuple[str, ...] = ("in_channels", "num_classes", "ignore_index")
    writer_class: type = MaskWriter

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.model", "data.model_name")
        for name in self.linked:
            parser.link_arguments(f"model.{name}", f"data.{name}")
        parser.add_lightning_class_args(self.writer_class, "writer")
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})


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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
        return cli_class(
            model_class,
            datamodule_class,
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


BAG_HELP = """Train one model per fold with the config and overrides of `fit`; every fold is its own Lightning
run in <bag_dir>/fold<k>/ (resumable). Every other option is LightningCLI's, e.g. --config X.yaml
--trainer.max_epochs=20 --model.lr=1e-3. Parallel: --only_fold $SLURM_ARRAY_TASK_ID per device or
array task, then --assemble once they are done."""


def _resolved_config(cli: LightningCLI) -> dict[str, Any]:
    """The parsed configuration as plain data, ``None`` values and link targets included."""
    try:
        text = cli.parser.dump(cli.config, skip_unset=False, skip_validation=True, skip_link_targets=False)
    except TypeError:  # jsonargparse < 4.49 names them skip_none and skip_check
        text = cli.parser.dump(cli.config, skip_none=False, skip_check=True, skip_link_targets=False)
    return yaml.safe_load(text)


def bag(args: Sequence[str]) -> dict[str, Any] | None:
    """``ternaus-zoo bag --config X --folds K [--bag_dir D] [--only_fold k ...] [--assemble] [--bootstrap]``.

    Trains the unfinished folds (all, or ``--only_fold``) with :func:`ternaus_zoo.bagging.train_bag`,
    each from ``build_cli(args + --data.fold=k --data.n_folds=K --trainer.logger=<fold k's loggers>)``,
    and writes ``<bag_dir>/manifest.json`` once every fold is done; ``--assemble`` only writes the
    manifest, from the finished folds. Returns the manifest when one was written.
    """
    extra = argparse.ArgumentParser(prog="ternaus-zoo bag", description=BAG_HELP, add_help=False)
    extra.add_argument("--folds", type=int, default=None, help="number of folds K (sets --data.n_folds)")
    extra.add_argument("--bag_dir", default="runs/bag", help="folder of the bag (default runs/bag)")
    extra.add_argument("--only_fold", type=int, nargs="+", default=None, help="train only these folds")
    extra.add_argument("--assemble", action="store_true", help="write the manifest from the finished folds")
    extra.add_argument("--bootstrap", action="store_true", help="train each fold on a bootstrap sample")
    extra.add_argument("--bootstrap_seed", type=int, default=None, help="seed of the samples (0; needs --bootstrap)")
    extra.add_argument("-h", "--help", action="store_true")
    options, rest = extra.parse_known_args(args)
    if options.help:
        extra.print_help()
        return None
    if options.bootstrap_seed is not None and not options.bootstrap:
        extra.error("--bootstrap_seed only applies with --bootstrap (each fold on a bootstrap sample)")
    if options.assemble and options.only_fold is not None:
        extra.error("--assemble trains nothing, so --only_fold has no meaning with it: give one or the other")
    if options.bootstrap and options.bootstrap_seed is None:
        options.bootstrap_seed = 0
    bag_dir = Path(options.bag_dir)
    if options.assemble:
        manifest = assemble(bag_dir, options.folds)
        print(f"bag: wrote {bag_dir / 'manifest.json'} ({len(manifest['checkpoints'])} checkpoints)")
        return manifest
    if options.folds is None:
        extra.error("--folds K is required (the number of folds; also sets --data.n_folds)")

    def build_fold(fold: int) -> FoldRun:
        overrides = [
            f"--data.n_folds={options.folds}",
            f"--data.fold={fold}",
            f"--trainer.logger={json.dumps(fold_logger_config(bag_dir, fold))}",
        ]
        cli = build_cli([*rest, *overrides], run=False)
        config = _resolved_config(cli)
        config.pop("writer", None)  # predict's options
        config.get("trainer", {}).pop("logger", None)  # fold k's own folders
        return FoldRun(cli.trainer, cli.model, cli.datamodule, config)

    manifest = train_bag(
        build_fold,
        bag_dir,
        options.folds,
        folds=options.only_fold,
        bootstrap_seed=options.bootstrap_seed if options.bootstrap else None,
        write_manifest=options.only_fold is None,
    )
    if manifest is not None:
        print(f"bag: wrote {bag_dir / 'manifest.json'}")
    elif options.only_fold is not None:
        print(f"bag: folds {options.only_fold} done; write the manifest with `ternaus-zoo bag ... --assemble`")
    return manifest


def demo(args: Sequence[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="ternaus-zoo demo", description=run_demo.__doc__)
    parser.add_argument("--output_dir", default="runs/demo")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max_steps", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    return run_demo(options.output_dir, minutes=options.minutes, max_steps=options.max_steps, seed=options.seed)


COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {
    "lr-find": lr_find,
    "bag": bag,
    "export": export,
    "demo": demo,
}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    if argv[0] == "predict" and ("-h" in argv or "--help" in argv):
        # predict has two routes: show the options of both
        print(PREDICT_ROUTES_HELP + predict_parser().format_help() + "\n" + "=" * 80)
    elif argv[0] == "predict" and _takes_predict_ensemble(argv[1:]):
        predict_ensemble(argv[1:])
        return
    build_cli(argv)


if __name__ == "__main__":
    main()

"""The ``ternaus-zoo`` command line, one entry point for both tasks.

Segmentation: ``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI's subcommands over
``SegmentationModule`` and ``SegmentationDataModule``; ``lr-find``, ``bag``, ``export`` and ``demo`` are
plain functions, ``lr-find`` and ``bag`` reusing the same parser and config (``LightningCLI(run=False)``).
``predict`` with ``--manifest``, ``--tta``, ``--tile_size`` or several ``--ckpt_path`` is a plain function
too (:func:`predict_ensemble`); without them it stays LightningCLI's. Classification: ``ternaus-zoo classify
{fit,validate,test,predict}`` (:mod:`ternaus_zoo.cli_classification`; ``ternaus-zoo-cls`` is its alias).

Errors the user can fix (:class:`ternaus_zoo.errors.UserError`) end the command with exit status 2 and one
line; ``--debug`` (anywhere on the line) or ``TERNAUS_ZOO_DEBUG=1`` shows the traceback instead. Ctrl-C
ends it with status 130 and a line saying what is kept and how to resume.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.tuner import Tuner

from ternaus_zoo.bagging import FoldRun, assemble, fold_logger_config, train_bag
from ternaus_zoo.bagging.layout import BAG_CONFIG_FILE
from ternaus_zoo.cli_arguments import ArgumentParser, at_least, positive_float
from ternaus_zoo.cli_classification import classify
from ternaus_zoo.cli_inference import (
    _takes_predict_ensemble,
    check_predict_folder,
    export,
    export_parser,
    predict_ensemble,
    predict_parser,
)
from ternaus_zoo.cli_lightning import build_cli, quiet_lightning, resolved_config
from ternaus_zoo.errors import BadValueError, MissingPathError, UserError
from ternaus_zoo.inference.predict import TTA_CHOICES
from ternaus_zoo.interrupts import was_interrupted
from ternaus_zoo.training.demo import run_demo

DEBUG_VARIABLE = "TERNAUS_ZOO_DEBUG"
LR_FIND_MIN_STEPS = 12

USAGE = """usage: ternaus-zoo COMMAND ... [--debug], a COMMAND of the list below

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
  plan DATA [--budget 60m]          fingerprint a folder of images and masks, time this machine, write a
                                    config that `fit --config plan.yaml` runs within the budget
  auto DATA --budget 60m --out DIR  plan, train, score and save a model folder with a report, in one command
  select BAG [BAG ...] --out DIR    choose the ensemble, TTA, threshold and post-processing on out-of-fold
                                    predictions; write one saved-model folder
  classify {fit,validate,test,predict}
                                    the same LightningCLI subcommands for classification models, e.g.
                                    ternaus-zoo classify fit --config configs/miml_gapnet.yaml

A mistake in the input (a missing file, a bad value) ends with one line and exit status 2; add --debug
(or set TERNAUS_ZOO_DEBUG=1) for the traceback.

`ternaus-zoo fit --help` (or `bag --help`, `export --help`) lists every option of a command.
"""

PREDICT_ROUTES_HELP = """ternaus-zoo predict takes one of two routes:
  with --manifest, --pretrained, --tta, --tile_size, --tile_overlap or several --ckpt_path: the options below;
  otherwise (one --ckpt_path, no TTA, no tiles): LightningCLI's predict, whose options follow the line.
Both routes predict at the checkpoint's evaluation size (its data.val_size, the longest side) unless
--data.val_size is given (--data.val_size=null: full resolution), and write masks at each image's own size.
With --tile_size the full-resolution image is cut into tiles, read as stored and normalised tile by tile,
so memory is the image, the tiles and the output (val_size does not apply).

"""


def print_help_with_lightning(parser: argparse.ArgumentParser) -> None:
    """The command's own options, then every LightningCLI option it passes on (those of ``fit``)."""
    print(parser.format_help() + "\nand every option of `ternaus-zoo fit`:\n" + "=" * 80)
    try:
        build_cli(["--help"], run=False)
    except SystemExit as stop:  # argparse exits after printing the help
        if stop.code not in (0, None):
            raise


def lr_find_parser() -> ArgumentParser:
    """``lr-find``'s own options; the others are ``fit``'s."""
    parser = ArgumentParser(prog="ternaus-zoo lr-find", description=lr_find.__doc__, add_help=False)
    parser.add_argument("--min_lr", type=positive_float, default=1e-6, help="the first rate tried")
    parser.add_argument("--max_lr", type=positive_float, default=1.0, help="the last rate tried")
    parser.add_argument(
        "--num_training", type=int, default=100, help=f"steps, at least {LR_FIND_MIN_STEPS}: one rate each"
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help, then every option of fit")
    return parser


def lr_find(args: Sequence[str]) -> float | None:
    """Lightning's learning-rate range test on the model and data of a ``fit`` config.

    Extra options: ``--min_lr``, ``--max_lr``, ``--num_training`` (steps); the plot is written to
    ``<log_dir>/lr_find.png``.
    """
    extra = lr_find_parser()
    options, rest = extra.parse_known_args(args)
    if options.help:
        print_help_with_lightning(extra)
        return None
    if options.min_lr >= options.max_lr:
        raise BadValueError(f"--min_lr={options.min_lr:g} must be below --max_lr={options.max_lr:g}")
    if options.num_training < LR_FIND_MIN_STEPS:
        raise BadValueError(
            f"--num_training={options.num_training}: lr-find needs at least {LR_FIND_MIN_STEPS} steps to suggest a "
            "rate (Lightning's suggestion skips the first 10 points of the curve and the last)"
        )
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
    if suggestion is None:
        points = len(finder.results.get("lr", []))
        print(
            f"lr-find: no suggestion: the loss curve stopped after {points} of {options.num_training} steps (the "
            f"loss diverged, or the data ran out) and a suggestion needs {LR_FIND_MIN_STEPS}; lower --max_lr or "
            f"raise --num_training; plot in {path}"
        )
    else:
        print(f"lr-find: suggested learning rate {suggestion:.3g}; plot in {path}")
    return suggestion


BAG_HELP = """Train one model per fold with the config and overrides of `fit`; every fold is its own Lightning
run in <bag_dir>/fold<k>/ (resumable). Every other option is LightningCLI's, e.g. --config X.yaml
--trainer.max_epochs=20 --model.lr=1e-3. Parallel: --only_fold $SLURM_ARRAY_TASK_ID per device or
array task, then --assemble once they are done."""


def bag_parser() -> ArgumentParser:
    """``bag``'s own options; the others are ``fit``'s."""
    parser = ArgumentParser(prog="ternaus-zoo bag", description=BAG_HELP, add_help=False)
    parser.add_argument("--folds", type=at_least(2), default=None, help="number of folds K (sets --data.n_folds)")
    parser.add_argument("--bag_dir", default="runs/bag", help="folder of the bag")
    parser.add_argument("--only_fold", type=at_least(0), nargs="+", default=None, help="train only these folds")
    parser.add_argument("--assemble", action="store_true", help="write the manifest from the finished folds")
    parser.add_argument("--bootstrap", action="store_true", help="train each fold on a bootstrap sample")
    parser.add_argument(
        "--bootstrap_seed", type=at_least(0), default=None, help="seed of the samples (0; needs --bootstrap)"
    )
    parser.add_argument(
        "--oof_tta",
        choices=TTA_CHOICES,
        default="none",
        help="also write each fold's out-of-fold predictions under this TTA (fold<k>/oof_tta/), which "
        "ternaus-zoo select then tries; folds already done keep what they wrote",
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help, then every option of fit")
    return parser


def bag(args: Sequence[str]) -> dict[str, Any] | None:
    """``ternaus-zoo bag --config X --folds K [--bag_dir D] [--only_fold k ...] [--assemble] [--bootstrap]``.

    Trains the unfinished folds (all, or ``--only_fold``) with :func:`ternaus_zoo.bagging.train_bag`,
    each from ``build_cli(args + --data.fold=k --data.n_folds=K --trainer.logger=<fold k's loggers>)``,
    and writes ``<bag_dir>/manifest.json`` once every fold is done; ``--assemble`` only writes the
    manifest, from the finished folds. Returns the manifest when one was written.
    """
    extra = bag_parser()
    options, rest = extra.parse_known_args(args)
    if options.help:
        print_help_with_lightning(extra)
        return None
    if options.bootstrap_seed is not None and not options.bootstrap:
        extra.error("--bootstrap_seed only applies with --bootstrap (each fold on a bootstrap sample)")
    if options.assemble and options.only_fold is not None:
        extra.error("--assemble trains nothing, so --only_fold has no meaning with it: give one or the other")
    if options.assemble and options.oof_tta != "none":
        extra.error("--assemble predicts nothing, so --oof_tta has no meaning with it: give one or the other")
    if options.bootstrap and options.bootstrap_seed is None:
        options.bootstrap_seed = 0
    bag_dir = Path(options.bag_dir)
    if options.assemble:
        if not (bag_dir / BAG_CONFIG_FILE).is_file():
            what = "does not exist" if not bag_dir.exists() else f"is not a bag (no {BAG_CONFIG_FILE})"
            raise MissingPathError(f"--bag_dir {bag_dir} {what}: nothing to assemble")
        manifest = assemble(bag_dir, options.folds)
        print(f"bag: wrote {bag_dir / 'manifest.json'} ({len(manifest['checkpoints'])} checkpoints)")
        return manifest
    if options.folds is None:
        extra.error("--folds K is required (the number of folds; also sets --data.n_folds)")
    outside = [fold for fold in options.only_fold or () if not 0 <= fold < options.folds]
    if outside:
        extra.error(f"--only_fold {' '.join(map(str, outside))}: the folds are 0..{options.folds - 1} (--folds)")

    def build_fold(fold: int) -> FoldRun:
        overrides = [
            f"--data.n_folds={options.folds}",
            f"--data.fold={fold}",
            f"--trainer.logger={json.dumps(fold_logger_config(bag_dir, fold))}",
        ]
        cli = build_cli([*rest, *overrides], run=False)
        config = resolved_config(cli)
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
        oof_tta=options.oof_tta,
    )
    if manifest is not None:
        print(f"bag: wrote {bag_dir / 'manifest.json'}")
    elif options.only_fold is not None:
        print(f"bag: folds {options.only_fold} done; write the manifest with `ternaus-zoo bag ... --assemble`")
    return manifest


def demo_parser() -> ArgumentParser:
    """``demo``'s options."""
    parser = ArgumentParser(prog="ternaus-zoo demo", description=run_demo.__doc__)
    parser.add_argument("--output_dir", default="runs/demo", help="where the logs and predictions.png go")
    parser.add_argument("--minutes", type=at_least(0.0, float), default=3.0, help="training time, at most")
    parser.add_argument("--max_steps", type=at_least(-1), default=-1, help="training steps, at most (-1: no limit)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the shapes and of the model")
    return parser


def demo(args: Sequence[str]) -> dict[str, float]:
    """``ternaus-zoo demo``: :func:`~ternaus_zoo.training.demo.run_demo` with Lightning's console kept quiet."""
    options = demo_parser().parse_args(args)
    quiet_lightning()
    return run_demo(options.output_dir, minutes=options.minutes, max_steps=options.max_steps, seed=options.seed)


# the parsers of the plain commands (predict: its --manifest/--tta/--tile_size route)
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "lr-find": lr_find_parser,
    "bag": bag_parser,
    "export": export_parser,
    "demo": demo_parser,
    "predict": predict_parser,
}
COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {
    "lr-find": lr_find,
    "bag": bag,
    "export": export,
    "demo": demo,
    "classify": classify,
}
# commands whose module is imported only when they run (the planner and the selection need none of the above)
LAZY_COMMANDS = {
    "plan": "ternaus_zoo.cli_planning:plan",
    "auto": "ternaus_zoo.cli_planning:auto",
    "select": "ternaus_zoo.cli_select:select",
}


def lazy_command(name: str) -> Callable[[Sequence[str]], object]:
    """The function behind a command of :data:`LAZY_COMMANDS`, imported now."""
    module, function = LAZY_COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_command(argv: Sequence[str]) -> None:
    """Dispatch one command line (without the program name) to its command."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    if argv[0] in LAZY_COMMANDS:
        lazy_command(argv[0])(argv[1:])
        return
    if argv[0] == "predict" and ("-h" in argv or "--help" in argv):
        # predict has two routes: show the options of both
        print(PREDICT_ROUTES_HELP + predict_parser().format_help() + "\n" + "=" * 80)
    elif argv[0] == "predict":
        check_predict_folder(argv[1:])
        if _takes_predict_ensemble(argv[1:]):
            predict_ensemble(argv[1:])
            return
    build_cli(argv)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line; for an error a DataLoader worker re-raised, the original one."""
    text = str(error)
    if "Original Traceback" in text:  # "Caught DataError in DataLoader worker process 0. Original Traceback ..."
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``ternaus-zoo`` console script: user errors as one line and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        run_command([argument for argument in argv if argument != "--debug"])
    except UserError as error:
        if debug:
            raise
        print(f"ternaus-zoo: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("ternaus-zoo: interrupted before any run had started: nothing to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as stop:
        # Lightning exits with status 1 after Ctrl-C; InterruptNotice has said what is kept
        if stop.code == 1 and was_interrupted():
            raise SystemExit(130) from None
        raise


def classification_alias() -> None:
    """``ternaus-zoo-cls ...``: the alias of ``ternaus-zoo classify ...`` (kept for one release)."""
    print("ternaus-zoo-cls is now `ternaus-zoo classify`; the alias goes in the next release", file=sys.stderr)
    main(["classify", *sys.argv[1:]])


if __name__ == "__main__":
    main()

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

from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.inference import MaskWriter, export_onnx, export_torchscript
from ternaus_zoo.inference.predict import TTA_CHOICES, load_predictor, predict_folder, prediction_spec
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.training.bagging import FoldRun, assemble, fold_logger_config, train_bag
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

    Trains the unfinished folds (all, or ``--only_fold``) with :func:`ternaus_zoo.training.bagging.train_bag`,
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
    extra.add_argument("--bootstrap_seed", type=int, default=0)
    extra.add_argument("-h", "--help", action="store_true")
    options, rest = extra.parse_known_args(args)
    if options.help:
        extra.print_help()
        return None
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
        with warnings.catch_warnings():  # args are passed on purpose, beside sys.argv's `bag ...`
            warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended", UserWarning)
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


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("null", "none", "0") else int(text)


def _model_options(parser: argparse.ArgumentParser) -> None:
    """Options choosing the models and their wrapping, shared by ``predict --manifest`` and ``export``."""
    parser.add_argument("--ckpt_path", action="append", default=[], help="a checkpoint (repeat for an ensemble)")
    parser.add_argument("--manifest", default=None, help="a bagging manifest (ternaus-zoo bag)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="the manifest's checkpoints")
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none", help="test-time augmentation")
    parser.add_argument("--reduction", choices=("mean", "geometric_mean"), default="mean", help="ensemble mean")


PREDICT_ROUTE = ("--manifest", "--tta", "--tile_size", "--tile_overlap")


def _takes_predict_ensemble(args: Sequence[str]) -> bool:
    """``predict`` arguments that LightningCLI's predict does not know, or several checkpoints."""
    names = [arg.split("=", 1)[0] for arg in args]
    return any(name in PREDICT_ROUTE for name in names) or names.count("--ckpt_path") > 1


def predict_ensemble(args: Sequence[str]) -> list[Path]:
    """``ternaus-zoo predict (--ckpt_path X ... | --manifest M) [--tta d4] [--tile_size N --tile_overlap f]
    --data.predict_dir=IN --writer.output_dir=OUT``: masks at each image's original size.

    The LightningCLI spellings ``--data.predict_dir``, ``--data.val_size``, ``--data.num_workers``,
    ``--writer.output_dir``, ``--writer.threshold``, ``--writer.save_probabilities`` and
    ``--trainer.accelerator`` are accepted (``--data.dataset``/``--data.data_root`` too, unused), so adding
    ``--tta d4`` to a predict command keeps it working. ``--writer.threshold=oof`` takes the manifest's
    OOF-tuned threshold; the default is the manifest's (or the checkpoint's) threshold. ``val_size``
    defaults to the checkpoint's evaluation size. Returns the mask files.
    """
    parser = argparse.ArgumentParser(prog="ternaus-zoo predict", description=predict_ensemble.__doc__)
    _model_options(parser)
    parser.add_argument("--tile_size", type=int, default=None, help="predict in tiles of this side")
    parser.add_argument("--tile_overlap", type=float, default=0.25)
    parser.add_argument("--tile_batch_size", type=int, default=4)
    parser.add_argument("--data.predict_dir", "--input", dest="input", required=True, help="folder of images")
    parser.add_argument("--data.val_size", "--val_size", dest="val_size", type=_optional_int, default=-1)
    parser.add_argument("--data.num_workers", "--num_workers", dest="num_workers", type=int, default=0)
    parser.add_argument("--writer.output_dir", "--output", dest="output", default="predictions")
    parser.add_argument("--writer.threshold", "--threshold", dest="threshold", default=None, help="a number or oof")
    parser.add_argument(
        "--writer.save_probabilities", "--save_probabilities", dest="save_probabilities", type=_boolean,
        nargs="?", const=True, default=False,
    )  # fmt: skip
    parser.add_argument("--trainer.accelerator", "--accelerator", dest="accelerator", default="auto")
    parser.add_argument("--data.dataset", "--data.data_root", dest="unused", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(args)
    spec = prediction_spec(options.ckpt_path, options.manifest, options.checkpoint)
    if options.threshold is None:
        threshold = spec.threshold
    elif options.threshold == "oof":
        if spec.oof_threshold is None:
            parser.error("--writer.threshold=oof needs a manifest with an OOF-tuned threshold (binary masks)")
        threshold = spec.oof_threshold
    else:
        threshold = float(options.threshold)
    val_size = spec.val_size if options.val_size == -1 else options.val_size
    model = load_predictor(spec, options.tta, options.reduction)
    written = predict_folder(
        model,
        options.input,
        options.output,
        val_size=val_size,
        in_channels=spec.in_channels,
        threshold=threshold,
        save_probabilities=options.save_probabilities,
        tile_size=options.tile_size,
        tile_overlap=options.tile_overlap,
        tile_batch_size=options.tile_batch_size,
        accelerator=options.accelerator,
        num_workers=options.num_workers,
    )
    print(
        f"predict: {len(written)} masks in {options.output} ({len(spec.checkpoints)} model(s), tta {options.tta}, "
        f"tiles {options.tile_size or 'none'}, val_size {val_size}, threshold {threshold:g})"
    )
    return written


def export(args: Sequence[str]) -> float | None:
    """``ternaus-zoo export (--ckpt_path X ... | --manifest M) [--tta d4] --format onnx|torchscript
    --tile_size 512 --output model.onnx``: the model, or the ensemble with its TTA, as one graph taking
    ``(batch, C, T, T)`` normalised tiles and returning probabilities (``--logits``: logits); checked
    against PyTorch (onnxruntime for ONNX). Returns the largest difference found."""
    parser = argparse.ArgumentParser(prog="ternaus-zoo export", description=export.__doc__)
    _model_options(parser)
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument("--tile_size", type=int, default=512, help="the fixed height and width T")
    parser.add_argument("--output", required=True, help="the .onnx or .pt file")
    parser.add_argument("--logits", action="store_true", help="return logits instead of probabilities")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted difference to PyTorch")
    options = parser.parse_args(args)
    spec = prediction_spec(options.ckpt_path, options.manifest, options.checkpoint)
    model = load_predictor(spec, options.tta, options.reduction, probabilities=not options.logits)
    if options.format == "onnx":
        difference = export_onnx(
            model, options.output, options.tile_size, spec.in_channels, options.opset, options.exporter,
            atol=options.atol,
        )  # fmt: skip
    else:
        difference = export_torchscript(model, options.output, options.tile_size, spec.in_channels, atol=options.atol)
    print(
        f"export: {options.output} ({options.format}, {len(spec.checkpoints)} model(s), tta {options.tta}, "
        f"tile {options.tile_size}, {'logits' if options.logits else 'probabilities'}); "
        f"largest difference to PyTorch {difference:.2g}"
    )
    return difference


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
    if argv[0] == "predict" and _takes_predict_ensemble(argv[1:]):
        predict_ensemble(argv[1:])
        return
    build_cli(argv)


if __name__ == "__main__":
    main()

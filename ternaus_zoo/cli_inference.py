"""The inference commands of ``ternaus-zoo``: ``predict`` with an ensemble, TTA, tiles or a saved folder, and
``export`` (ONNX, TorchScript or a self-describing folder). Plain argparse functions over
:mod:`ternaus_zoo.inference`; ``ternaus_zoo.cli`` routes to them.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ternaus_zoo.cli_arguments import ArgumentParser, at_least, boolean, number, positive_float
from ternaus_zoo.errors import BadValueError, MissingPathError
from ternaus_zoo.inference import export_onnx, export_torchscript
from ternaus_zoo.inference.ensemble import model_from_checkpoint
from ternaus_zoo.inference.export import PixelInput
from ternaus_zoo.inference.postprocessing import steps_from_dicts
from ternaus_zoo.inference.predict import (
    TTA_CHOICES,
    PredictionSpec,
    build_predictor,
    predict_folder,
    prediction_spec,
)
from ternaus_zoo.inference.pretrained import (
    prediction_settings,
    pretrained_spec,
    read_pretrained,
    save_predictor_pretrained,
    training_card,
)


def given_options(args: Sequence[str]) -> set[str]:
    """The option names on a command line: ``["--tta", "d4", "--output=x"]`` -> ``{"--tta", "--output"}``."""
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def refuse_options(given: set[str], options: Sequence[str], reason: str) -> None:
    """Raise a :class:`BadValueError` naming the first of ``options`` that was given, and ``reason``."""
    for option in options:
        if option in given:
            raise BadValueError(f"{option} does not apply {reason}")


def _fraction(text: str) -> float:
    value = number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _threshold(text: str) -> float | str:
    if text == "oof":
        return text
    value = number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1] or oof, got {text}")
    return value


def _tile_scale_note(options: argparse.Namespace, spec: PredictionSpec) -> str:
    if options.tile_size is None:
        return ""
    if options.tile_scale is not None:
        return f" at scale {options.tile_scale:g}"
    return f" at scale {spec.val_size} / longest side" if spec.val_size else " at scale 1"


def _optional_size(text: str) -> int | None:
    if text.lower() in ("null", "none", "0"):
        return None
    return at_least(-1)(text)


def _model_options(parser: argparse.ArgumentParser) -> None:
    """Options choosing the models and their wrapping, shared by ``predict --manifest`` and ``export``."""
    parser.add_argument("--ckpt_path", action="append", default=[], help="a checkpoint (repeat for an ensemble)")
    parser.add_argument("--manifest", default=None, help="a bagging manifest (ternaus-zoo bag)")
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="with --manifest: which checkpoint of each fold"
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="none",
        help="test-time augmentation: flips and quarter turns; 'scales' predicts at 0.75, 1 and 1.25 times the "
        "size, '<set>+scales' every transform of the set at each scale",
    )
    parser.add_argument(
        "--reduction",
        choices=("mean", "geometric_mean"),
        default="mean",
        help="how the predictions of several models are combined (with --pretrained: the folder's, unless given)",
    )


def _models_and_spec(options: argparse.Namespace, given: set[str]) -> tuple[list[nn.Module], PredictionSpec, str, str]:
    """The models, their prediction settings, the TTA and the reduction chosen by ``_model_options`` (and
    ``--pretrained``, whose saved TTA and reduction apply unless given on the command line); ``given``: the
    options on the command line, some of which cannot apply to the models chosen.

    Raises:
        BadValueError: no models named, or an option that cannot apply to them.
    """
    pretrained = getattr(options, "pretrained", None)
    if pretrained:
        refuse_options(
            given,
            ("--ckpt_path", "--manifest", "--checkpoint"),
            "with --pretrained: the folder holds the models and their settings",
        )
    elif not options.ckpt_path and not options.manifest:
        command = "predict" if "input" in options else "export"
        raise BadValueError(f"no model to {command} with: give --ckpt_path (one or more), --manifest or --pretrained")
    elif not options.manifest:
        refuse_options(
            given, ("--checkpoint",), "without --manifest: it picks the best or last checkpoint of each fold"
        )
    if pretrained:
        models, config = read_pretrained(pretrained)
        saved = config.get("prediction") or {}
        spec = pretrained_spec(config, pretrained)
        tta = options.tta if "--tta" in given else saved.get("tta", "none")
        reduction = options.reduction if "--reduction" in given else saved.get("reduction", options.reduction)
    else:
        spec = prediction_spec(options.ckpt_path, options.manifest, options.checkpoint)
        models = [model_from_checkpoint(path) for path in spec.checkpoints]
        tta, reduction = options.tta, options.reduction
    if len(models) == 1:
        refuse_options(given, ("--reduction",), "to one model: it combines the predictions of several")
    return models, spec, tta, reduction


PREDICT_ROUTE = ("--manifest", "--tta", "--tile_size", "--tile_overlap", "--tile_scale", "--pretrained")
# the data options of predicting a folder (--data.predict_dir), on both routes; the others describe a training set
PREDICT_DATA_OPTIONS = ("--data.predict_dir", "--data.val_size", "--data.num_workers")


def _takes_predict_ensemble(args: Sequence[str]) -> bool:
    """``predict`` arguments that LightningCLI's predict does not know, or several checkpoints."""
    names = [arg.split("=", 1)[0] for arg in args]
    return any(name in PREDICT_ROUTE for name in names) or names.count("--ckpt_path") > 1


def check_predict_folder(args: Sequence[str]) -> None:
    """Refuse, on either ``predict`` route, a training set's data option given with ``--data.predict_dir``.

    Raises:
        BadValueError: naming the option (``--data.dataset``: the images are those of ``--data.predict_dir``).
    """
    given = given_options(args)
    if "--data.predict_dir" in given or "--input" in given:
        others = sorted(name for name in given if name.startswith("--data.") and name not in PREDICT_DATA_OPTIONS)
        refuse_options(
            given,
            others,
            "with --data.predict_dir: the images predicted are that folder's, and of the data options only "
            f"{', '.join(PREDICT_DATA_OPTIONS[1:])} apply",
        )


def predict_parser() -> argparse.ArgumentParser:
    """The options of :func:`predict_ensemble`, with their defaults (also shown by ``ternaus-zoo predict --help``)."""
    parser = ArgumentParser(prog="ternaus-zoo predict", description=predict_ensemble.__doc__)
    _model_options(parser)
    parser.add_argument("--pretrained", default=None, help="a folder of export --format pretrained (or a hub id)")
    parser.add_argument(
        "--tile_size",
        type=at_least(1),
        default=None,
        help="predict in tiles of this side (model pixels), cut from the full-resolution image; masks stay at "
        "full resolution (val_size does not apply); default with --pretrained: the tile the folder saved (a model "
        "trained on patches), unless --data.val_size is given",
    )
    parser.add_argument(
        "--tile_scale",
        type=positive_float,
        default=None,
        help="with --tile_size: the factor the model sees the image resized by, tile by tile (0.5: each tile covers "
        "2 x tile_size image pixels); default: the training's evaluation scale, the checkpoint's data.val_size / "
        "each image's longest side (1 when the checkpoint has no val_size)",
    )
    parser.add_argument(
        "--tile_overlap",
        type=_fraction,
        default=0.25,
        help="with --tile_size: fraction of a tile shared with its neighbour",
    )
    parser.add_argument(
        "--tile_batch_size", type=at_least(1), default=4, help="with --tile_size: tiles per forward pass"
    )
    parser.add_argument("--data.predict_dir", "--input", dest="input", required=True, help="folder of images")
    parser.add_argument(
        "--data.val_size", "--val_size", dest="val_size", type=_optional_size, default=-1,
        help="longest side before predicting; -1: the checkpoint's evaluation size, none: full resolution",
    )  # fmt: skip
    parser.add_argument(
        "--data.num_workers", "--num_workers", dest="num_workers", type=at_least(0), default=0, help="loader processes"
    )
    parser.add_argument("--writer.output_dir", "--output", dest="output", default="predictions", help="mask folder")
    parser.add_argument(
        "--writer.threshold", "--threshold", dest="threshold", type=_threshold, default=None,
        help="a probability, or oof (the manifest's OOF-tuned one); default: the manifest's or the checkpoint's",
    )  # fmt: skip
    parser.add_argument(
        "--writer.save_probabilities", "--save_probabilities", dest="save_probabilities", type=boolean,
        nargs="?", const=True, default=False, help="also write float16 <name>.npy probabilities",
    )  # fmt: skip
    parser.add_argument(
        "--writer.overlay", "--overlay", dest="overlay", type=boolean, nargs="?", const=True, default=False,
        help="also write overlays/<name>.png: each image with its mask painted on",
    )  # fmt: skip
    parser.add_argument(
        "--trainer.accelerator",
        "--accelerator",
        dest="accelerator",
        choices=("auto", "cpu", "gpu", "cuda", "mps"),
        default="auto",
        help="the device kind (Lightning's accelerator); one device",
    )
    return parser


def predict_ensemble(args: Sequence[str]) -> list[Path]:
    """``ternaus-zoo predict (--ckpt_path X ... | --manifest M | --pretrained P) [--tta d4] [--tile_size N
    --tile_overlap f] --data.predict_dir=IN --writer.output_dir=OUT``: masks at each image's original size.

    The LightningCLI spellings ``--data.predict_dir``, ``--data.val_size``, ``--data.num_workers``,
    ``--writer.output_dir``, ``--writer.threshold``, ``--writer.save_probabilities``, ``--writer.overlay`` and
    ``--trainer.accelerator`` are accepted, so adding ``--tta d4`` to a predict command keeps it working.
    ``--writer.threshold=oof`` takes the manifest's OOF-tuned threshold; the default is the manifest's (or the
    checkpoint's) threshold. ``val_size`` defaults to the checkpoint's evaluation size. An option that cannot
    apply (``--checkpoint`` without ``--manifest``, ``--tile_overlap`` without ``--tile_size`` ...) is an
    error. Returns the mask files.
    """
    parser = predict_parser()
    check_predict_folder(args)
    options = parser.parse_args(args)
    given = given_options(args)
    tile_options = ("--tile_scale", "--tile_overlap", "--tile_batch_size")
    if options.tile_size is None and not options.pretrained:  # refused before loading; a folder may save a tile
        refuse_options(given, tile_options, "without --tile_size")
    models, spec, tta, reduction = _models_and_spec(options, given)
    if options.pretrained and options.tile_size is None and not given & {"--data.val_size", "--val_size"}:
        options.tile_size = spec.tile_size  # trained on patches: tiles of the patch side unless told otherwise
    if options.tile_size is None:
        refuse_options(given, tile_options, "without --tile_size (and the folder saved no tile)")
    if options.threshold is None:
        threshold = spec.threshold
    elif options.threshold == "oof":
        if spec.oof_threshold is None:
            parser.error("--writer.threshold=oof needs a manifest with an OOF-tuned threshold (binary masks)")
        threshold = spec.oof_threshold
    else:
        threshold = options.threshold
    if options.tile_size is not None:
        if options.val_size not in (-1, None):
            raise BadValueError(
                f"--data.val_size={options.val_size} does not apply with --tile_size: tiles are cut from the "
                "full-resolution image (leave --data.val_size out)"
            )
        val_size = None
    else:
        val_size = spec.val_size if options.val_size == -1 else options.val_size
    model = build_predictor(models, tta, spec.activation, reduction, spec.weights)
    written = predict_folder(
        model,
        options.input,
        options.output,
        val_size=val_size,
        in_channels=spec.in_channels,
        threshold=threshold,
        save_probabilities=options.save_probabilities,
        overlay=options.overlay,
        multilabel=spec.multilabel,
        class_names=spec.class_names,
        tile_size=options.tile_size,
        tile_overlap=options.tile_overlap,
        tile_batch_size=options.tile_batch_size,
        tile_scale=options.tile_scale,
        scale_size=spec.val_size,
        accelerator=options.accelerator,
        num_workers=options.num_workers,
        postprocessing=steps_from_dicts(spec.postprocessing),
    )
    print(
        f"predict: {len(written)} masks in {options.output} ({len(models)} model(s), tta {tta}, "
        f"tiles {options.tile_size or 'none'}{_tile_scale_note(options, spec)}, val_size {val_size}, "
        f"threshold {threshold:g})"
    )
    return written


# the options of each export format; any other format's given with it is an error
FORMAT_OPTIONS = {
    "onnx": ("--tile_size", "--logits", "--normalized_input", "--atol", "--opset", "--exporter", "--pretrained"),
    "torchscript": ("--tile_size", "--logits", "--normalized_input", "--atol", "--pretrained"),
    "pretrained": ("--metrics", "--metrics_source"),
}


def export_parser() -> argparse.ArgumentParser:
    """The options of :func:`export` (``ternaus-zoo export --help``)."""
    parser = ArgumentParser(prog="ternaus-zoo export", description=export.__doc__)
    _model_options(parser)
    parser.add_argument(
        "--format",
        choices=tuple(FORMAT_OPTIONS),
        default="onnx",
        help="onnx or torchscript: one graph at a fixed tile size; pretrained: a folder for from_pretrained",
    )
    parser.add_argument(
        "--tile_size", type=at_least(1), default=512, help="the fixed height and width T (a multiple of the model's)"
    )
    parser.add_argument(
        "--output", required=True, help="the .onnx or .pt file to write, or the folder (--format pretrained)"
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="onnx, torchscript: a saved model folder (or hub id) as one graph, with its TTA, member weights and "
        "(in the ONNX metadata) its post-processing steps",
    )
    parser.add_argument("--metrics", default=None, help="pretrained: a JSON file of measured metrics for the card")
    parser.add_argument("--metrics_source", default=None, help="pretrained: where the metrics come from")
    parser.add_argument("--logits", action="store_true", help="return logits instead of probabilities")
    parser.add_argument("--opset", type=at_least(7), default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="ONNX: torch.onnx's exporter; auto tries dynamo, then the TorchScript-based one",
    )
    parser.add_argument(
        "--atol", type=at_least(0.0, float), default=1e-4, help="largest accepted difference to PyTorch"
    )
    parser.add_argument(
        "--normalized_input",
        action="store_true",
        help="the graph takes normalised tiles ((pixels - mean) / std); default: pixels in [0, 1], normalised inside",
    )
    return parser


def export(args: Sequence[str]) -> float | None:
    """``ternaus-zoo export (--ckpt_path X ... | --manifest M) [--tta d4] --format onnx|torchscript
    --tile_size 512 --output model.onnx``: the model, or the ensemble with its TTA, as one graph taking
    ``(batch, C, T, T)`` tiles of pixels in [0, 1] (the normalisation is inside the graph; ``--normalized_input``:
    normalised tiles) and returning probabilities (``--logits``: logits); checked against PyTorch (onnxruntime
    for ONNX), whose file also says all this in its metadata. Returns the largest difference found.

    ``--format pretrained --output FOLDER``: a self-describing folder (``config.json``, safetensors
    weights, a ``README.md`` model card) that ``ternaus_zoo.from_pretrained`` and ``predict --pretrained``
    read; from a manifest, an ensemble folder with the TTA, the reduction and the OOF-tuned threshold.
    ``--metrics FILE.json`` (name -> value) and ``--metrics_source`` put measured numbers on the card.
    An option of another format is an error."""
    options = export_parser().parse_args(args)
    given = given_options(args)
    others = {name for fmt, names in FORMAT_OPTIONS.items() if fmt != options.format for name in names}
    refuse_options(given, sorted(others - set(FORMAT_OPTIONS[options.format])), f"to --format {options.format}")
    if options.metrics_source is not None and options.metrics is None:
        raise BadValueError("--metrics_source says where --metrics come from: give --metrics too")
    models, spec, tta, reduction = _models_and_spec(options, given)
    if options.format == "pretrained":
        export_pretrained(models, spec, options, args)
        return None
    multiple = max(model.info.size_multiple for model in models)
    if options.tile_size % multiple:
        raise BadValueError(
            f"--tile_size={options.tile_size} is not a multiple of {multiple}, the size multiple of "
            f"{models[0].info.name}: try {max(multiple, round(options.tile_size / multiple) * multiple)}"
        )
    model = build_predictor(models, tta, None if options.logits else spec.activation, reduction, spec.weights)
    info = models[0].info.for_channels(spec.in_channels)
    if not options.normalized_input:
        model = PixelInput(model, info.mean, info.std)
    if options.format == "onnx":
        metadata = {
            "ternaus_zoo.input": "normalised tiles (pixels - mean) / std"
            if options.normalized_input
            else "pixels in [0, 1] (8-bit values / 255); mean and std are applied inside the graph",
            "ternaus_zoo.layout": f"(batch, {spec.in_channels}, {options.tile_size}, {options.tile_size}), RGB order",
            "ternaus_zoo.mean": json.dumps(list(info.mean)),
            "ternaus_zoo.std": json.dumps(list(info.std)),
            "ternaus_zoo.output": "logits" if options.logits else f"{spec.activation} probabilities",
            "ternaus_zoo.tta": tta,
            # what inference.onnx_predictor.OnnxPredictor does around the graph, as `predict` does around the model
            "ternaus_zoo.activation": spec.activation,
            "ternaus_zoo.val_size": json.dumps(spec.val_size),
            "ternaus_zoo.threshold": json.dumps(spec.threshold),
            "ternaus_zoo.multilabel": json.dumps(spec.multilabel),
            # the cleaning steps of a --pretrained folder, for the mask thresholded from the stitched output
            "ternaus_zoo.postprocessing": json.dumps(spec.postprocessing),
        }
        difference = export_onnx(
            model, options.output, options.tile_size, spec.in_channels, options.opset, options.exporter,
            atol=options.atol, metadata=metadata,
        )  # fmt: skip
    else:
        difference = export_torchscript(model, options.output, options.tile_size, spec.in_channels, atol=options.atol)
    print(
        f"export: {options.output} ({options.format}, {len(models)} model(s), tta {tta}, "
        f"tile {options.tile_size}, {'logits' if options.logits else 'probabilities'}); "
        f"largest difference to PyTorch {difference:.2g}"
    )
    return difference


def export_pretrained(
    models: list[nn.Module], spec: PredictionSpec, options: argparse.Namespace, args: Sequence[str]
) -> None:
    """The ``--format pretrained`` branch of :func:`export`: the card records the source and the command."""
    source = options.manifest or ", ".join(str(path) for path in spec.checkpoints)
    card: dict[str, Any] = {
        "command": shlex.join(["ternaus-zoo", "export", *args]),
        "notes": f"Exported from {source}.",
        **training_card(spec.checkpoints[0], options.manifest),
    }
    if options.metrics:
        if not Path(options.metrics).is_file():
            raise MissingPathError(f"--metrics {options.metrics} does not exist")
        card["metrics"] = json.loads(Path(options.metrics).read_text())
        card["metrics_source"] = options.metrics_source or options.metrics
    prediction = prediction_settings(spec, options.tta, options.reduction)
    folder = save_predictor_pretrained(models, options.output, prediction, card)
    size = sum(path.stat().st_size for path in folder.iterdir()) / 2**20
    print(f"export: {folder} (pretrained, {len(models)} model(s), tta {options.tta}, {size:.1f} MiB)")

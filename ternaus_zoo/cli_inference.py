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

from ternaus_zoo.errors import BadValueError
from ternaus_zoo.inference import export_onnx, export_torchscript
from ternaus_zoo.inference.ensemble import model_from_checkpoint
from ternaus_zoo.inference.export import PixelInput
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


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _scale(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive factor, got {text}")
    return value


def _tile_scale_note(options: argparse.Namespace, spec: PredictionSpec) -> str:
    if options.tile_size is None:
        return ""
    if options.tile_scale is not None:
        return f" at scale {options.tile_scale:g}"
    return f" at scale {spec.val_size} / longest side" if spec.val_size else " at scale 1"


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("null", "none", "0") else int(text)


def _model_options(parser: argparse.ArgumentParser) -> None:
    """Options choosing the models and their wrapping, shared by ``predict --manifest`` and ``export``."""
    parser.add_argument("--ckpt_path", action="append", default=[], help="a checkpoint (repeat for an ensemble)")
    parser.add_argument("--manifest", default=None, help="a bagging manifest (ternaus-zoo bag)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="the manifest's checkpoints")
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="none",
        help="test-time augmentation: flips and quarter turns; 'scales' predicts at 0.75, 1 and 1.25 times the "
        "size, '<set>+scales' every transform of the set at each scale",
    )
    parser.add_argument("--reduction", choices=("mean", "geometric_mean"), default="mean", help="ensemble mean")


def _models_and_spec(options: argparse.Namespace) -> tuple[list[nn.Module], PredictionSpec, str, str]:
    """The models, their prediction settings, the TTA and the reduction chosen by ``_model_options`` (and
    ``--pretrained``, whose saved TTA and reduction apply unless given on the command line)."""
    if getattr(options, "pretrained", None):
        models, config = read_pretrained(options.pretrained)
        saved = config.get("prediction") or {}
        spec = pretrained_spec(config, options.pretrained)
        tta = options.tta if options.tta != "none" else saved.get("tta", "none")
        return models, spec, tta, saved.get("reduction", options.reduction)
    spec = prediction_spec(options.ckpt_path, options.manifest, options.checkpoint)
    return [model_from_checkpoint(path) for path in spec.checkpoints], spec, options.tta, options.reduction


PREDICT_ROUTE = ("--manifest", "--tta", "--tile_size", "--tile_overlap", "--tile_scale", "--pretrained")


def _takes_predict_ensemble(args: Sequence[str]) -> bool:
    """``predict`` arguments that LightningCLI's predict does not know, or several checkpoints."""
    names = [arg.split("=", 1)[0] for arg in args]
    return any(name in PREDICT_ROUTE for name in names) or names.count("--ckpt_path") > 1


def predict_parser() -> argparse.ArgumentParser:
    """The options of :func:`predict_ensemble`, with their defaults (also shown by ``ternaus-zoo predict --help``)."""
    parser = argparse.ArgumentParser(
        prog="ternaus-zoo predict",
        description=predict_ensemble.__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _model_options(parser)
    parser.add_argument("--pretrained", default=None, help="a folder of export --format pretrained (or a hub id)")
    parser.add_argument(
        "--tile_size",
        type=int,
        default=None,
        help="predict in tiles of this side (model pixels), cut from the full-resolution image; masks stay at "
        "full resolution (val_size does not apply)",
    )
    parser.add_argument(
        "--tile_scale",
        type=_scale,
        default=None,
        help="with --tile_size: the factor the model sees the image resized by, tile by tile (0.5: each tile covers "
        "2 x tile_size image pixels); default: the training's evaluation scale, the checkpoint's data.val_size / "
        "each image's longest side (1 when the checkpoint has no val_size)",
    )
    parser.add_argument("--tile_overlap", type=float, default=0.25, help="fraction of a tile shared with its neighbour")
    parser.add_argument("--tile_batch_size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--data.predict_dir", "--input", dest="input", required=True, help="folder of images")
    parser.add_argument(
        "--data.val_size", "--val_size", dest="val_size", type=_optional_int, default=-1,
        help="longest side before predicting; -1: the checkpoint's evaluation size, none: full resolution",
    )  # fmt: skip
    parser.add_argument(
        "--data.num_workers", "--num_workers", dest="num_workers", type=int, default=0, help="loader processes"
    )
    parser.add_argument("--writer.output_dir", "--output", dest="output", default="predictions", help="mask folder")
    parser.add_argument("--writer.threshold", "--threshold", dest="threshold", default=None, help="a number or oof")
    parser.add_argument(
        "--writer.save_probabilities", "--save_probabilities", dest="save_probabilities", type=_boolean,
        nargs="?", const=True, default=False, help="also write float16 <name>.npy probabilities",
    )  # fmt: skip
    parser.add_argument(
        "--writer.overlay", "--overlay", dest="overlay", type=_boolean, nargs="?", const=True, default=False,
        help="also write overlays/<name>.png: each image with its mask painted on",
    )  # fmt: skip
    parser.add_argument(
        "--trainer.accelerator", "--accelerator", dest="accelerator", default="auto", help="cpu, gpu or auto"
    )
    parser.add_argument("--data.dataset", "--data.data_root", dest="unused", default=None, help=argparse.SUPPRESS)
    return parser


def predict_ensemble(args: Sequence[str]) -> list[Path]:
    """``ternaus-zoo predict (--ckpt_path X ... | --manifest M) [--tta d4] [--tile_size N --tile_overlap f]
    --data.predict_dir=IN --writer.output_dir=OUT``: masks at each image's original size.

    The LightningCLI spellings ``--data.predict_dir``, ``--data.val_size``, ``--data.num_workers``,
    ``--writer.output_dir``, ``--writer.threshold``, ``--writer.save_probabilities``, ``--writer.overlay`` and
    ``--trainer.accelerator`` are accepted (``--data.dataset``/``--data.data_root`` too, unused), so adding
    ``--tta d4`` to a predict command keeps it working. ``--writer.threshold=oof`` takes the manifest's
    OOF-tuned threshold; the default is the manifest's (or the checkpoint's) threshold. ``val_size``
    defaults to the checkpoint's evaluation size. Returns the mask files.
    """
    parser = predict_parser()
    options = parser.parse_args(args)
    if options.tile_scale is not None and options.tile_size is None:
        raise BadValueError("--tile_scale applies to tiles only: give --tile_size too")
    models, spec, tta, reduction = _models_and_spec(options)
    if options.threshold is None:
        threshold = spec.threshold
    elif options.threshold == "oof":
        if spec.oof_threshold is None:
            parser.error("--writer.threshold=oof needs a manifest with an OOF-tuned threshold (binary masks)")
        threshold = spec.oof_threshold
    else:
        threshold = float(options.threshold)
    if options.tile_size is not None:
        if options.val_size not in (-1, None):
            raise BadValueError(
                f"--data.val_size={options.val_size} does not apply with --tile_size: tiles are cut from the "
                "full-resolution image (leave --data.val_size out)"
            )
        val_size = None
    else:
        val_size = spec.val_size if options.val_size == -1 else options.val_size
    model = build_predictor(models, tta, spec.activation, reduction)
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
    )
    print(
        f"predict: {len(written)} masks in {options.output} ({len(models)} model(s), tta {tta}, "
        f"tiles {options.tile_size or 'none'}{_tile_scale_note(options, spec)}, val_size {val_size}, "
        f"threshold {threshold:g})"
    )
    return written


def export(args: Sequence[str]) -> float | None:
    """``ternaus-zoo export (--ckpt_path X ... | --manifest M) [--tta d4] --format onnx|torchscript
    --tile_size 512 --output model.onnx``: the model, or the ensemble with its TTA, as one graph taking
    ``(batch, C, T, T)`` tiles of pixels in [0, 1] (the normalisation is inside the graph; ``--normalized_input``:
    normalised tiles) and returning probabilities (``--logits``: logits); checked against PyTorch (onnxruntime
    for ONNX), whose file also says all this in its metadata. Returns the largest difference found.

    ``--format pretrained --output FOLDER``: a self-describing folder (``config.json``, safetensors
    weights, a ``README.md`` model card) that ``ternaus_zoo.from_pretrained`` and ``predict --pretrained``
    read; from a manifest, an ensemble folder with the TTA, the reduction and the OOF-tuned threshold.
    ``--metrics FILE.json`` (name -> value) and ``--metrics_source`` put measured numbers on the card."""
    parser = argparse.ArgumentParser(prog="ternaus-zoo export", description=export.__doc__)
    _model_options(parser)
    parser.add_argument("--format", choices=("onnx", "torchscript", "pretrained"), default="onnx")
    parser.add_argument("--tile_size", type=int, default=512, help="the fixed height and width T")
    parser.add_argument("--output", required=True, help="the .onnx or .pt file, or the pretrained folder")
    parser.add_argument("--metrics", default=None, help="pretrained: a JSON file of measured metrics for the card")
    parser.add_argument("--metrics_source", default=None, help="pretrained: where the metrics come from")
    parser.add_argument("--logits", action="store_true", help="return logits instead of probabilities")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted difference to PyTorch")
    parser.add_argument(
        "--normalized_input",
        action="store_true",
        help="the graph takes normalised tiles ((pixels - mean) / std); default: pixels in [0, 1], normalised inside",
    )
    options = parser.parse_args(args)
    models, spec, tta, reduction = _models_and_spec(options)
    if options.format == "pretrained":
        export_pretrained(models, spec, options, args)
        return None
    model = build_predictor(models, tta, None if options.logits else spec.activation, reduction)
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
        card["metrics"] = json.loads(Path(options.metrics).read_text())
        card["metrics_source"] = options.metrics_source or options.metrics
    prediction = prediction_settings(spec, options.tta, options.reduction)
    folder = save_predictor_pretrained(models, options.output, prediction, card)
    size = sum(path.stat().st_size for path in folder.iterdir()) / 2**20
    print(f"export: {folder} (pretrained, {len(models)} model(s), tta {options.tta}, {size:.1f} MiB)")

"""Predict a folder of images with one checkpoint, several, or a bagging manifest, with TTA and tiling.

``ternaus-zoo predict --manifest runs/bag/X/manifest.json --tta d4 --tile_size 256 --data.predict_dir=IN
--writer.output_dir=OUT`` goes through here (``ternaus-zoo predict --ckpt_path X`` without these options
stays LightningCLI's). The chain, for every image:

1. read, resize so that the longest side is ``val_size`` (the training's evaluation size, from the
   checkpoint's data module or the manifest's config; ``None`` keeps the resolution) and normalise
   with the model's statistics (:func:`ternaus_zoo.data.transforms.val_transforms`);
2. predict probabilities with :func:`build_predictor`: ``TTA(Ensemble(models, activation), tta)``,
   the ensemble averaging probabilities (or their normalised geometric mean) and the TTA averaging
   those over the augmentations; with ``tile_size`` the image is cut into overlapping tiles
   (:class:`~ternaus_zoo.inference.tiling.SlidingWindowPredictor`, Gaussian blending);
3. resize the probabilities back to the file's size and write ``<name>.png`` (0/255 at ``threshold``,
   or class indices) and optionally ``<name>.npy`` with :class:`~ternaus_zoo.inference.writers.MaskWriter`;
   with tiles, a TIFF is read by windows and its mask written block by block into ``<name>.tif`` instead
   (:func:`~ternaus_zoo.inference.tiling.predict_tiff`).

Manifest (written by ``ternaus-zoo bag``, JSON): ``checkpoints`` and ``last_checkpoints`` (paths
relative to the manifest's folder), ``threshold``, ``thresholds.oof_best`` and ``config.data.val_size``
are read here; the rest is described in :mod:`ternaus_zoo.bagging`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ternaus_zoo.data.datasets import ImageFolderDataset
from ternaus_zoo.data.listing import list_images
from ternaus_zoo.data.transforms import restore_original_size, val_transforms, valid_size
from ternaus_zoo.data.windows import open_tiff_windows
from ternaus_zoo.errors import BadValueError, MissingPathError, UserError
from ternaus_zoo.inference.ensemble import Ensemble, Reduction, model_from_checkpoint
from ternaus_zoo.inference.postprocessing import PostProcessingStep
from ternaus_zoo.inference.tiling import SlidingWindowPredictor, predict_tiff
from ternaus_zoo.inference.tta import DEFAULT_SCALES, GEOMETRIC_SETS, TTA, Activation
from ternaus_zoo.inference.writers import MaskWriter
from ternaus_zoo.interrupts import InterruptNotice
from ternaus_zoo.metrics import class_labels
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.registry import ModelInfo
from ternaus_zoo.weights import load_container

PathLike = str | os.PathLike
_GEOMETRIC_CHOICES = [name for name in GEOMETRIC_SETS if name not in ("identity", "scales")]
# "scales": the image at DEFAULT_SCALES (0.75, 1, 1.25); "<set>+scales": every transform of the set at each scale
TTA_CHOICES = ("none", *_GEOMETRIC_CHOICES, "scales", *[f"{name}+scales" for name in _GEOMETRIC_CHOICES])
Which = Literal["best", "last"]


@dataclass
class PredictionSpec:
    """What a set of checkpoints says about predicting with them.

    Attributes:
        checkpoints: the checkpoint files.
        threshold: foreground threshold (the module's, or the manifest's).
        oof_threshold: the manifest's OOF-tuned threshold, if any.
        val_size: longest side the images are resized to (the training's evaluation size), or ``None``.
        in_channels: input channels of the models.
        num_classes: output channels; ``1`` means sigmoid, more softmax (unless ``multilabel``).
        multilabel: the channels are classes that may overlap, a sigmoid each.
        class_names: the module's class names, if any.
        tile_size: the side of the patches the models were trained on (``data.patch_size``), the default tile of
            prediction; ``None`` when they were trained on whole images.
        weights: the models' weights in the ensemble (a saved folder's, chosen by ``ternaus-zoo select``);
            ``None``: equal.
        postprocessing: the cleaning steps applied to each mask, as saved (``PostProcessingStep.to_dict``).
    """

    checkpoints: list[Path]
    threshold: float = 0.5
    oof_threshold: float | None = None
    val_size: int | None = None
    in_channels: int = 3
    num_classes: int = 1
    multilabel: bool = False
    class_names: list[str] | None = None
    tile_size: int | None = None
    weights: list[float] | None = None
    postprocessing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def activation(self) -> Activation:
        return "sigmoid" if self.num_classes == 1 or self.multilabel else "softmax"


def read_manifest(path: PathLike) -> dict[str, Any]:
    """A bagging manifest with its checkpoint paths made absolute (relative ones are relative to its folder)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"manifest {path} does not exist (ternaus-zoo bag ... writes <bag_dir>/manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a bagging manifest: not a JSON file ({error})") from None
    if not isinstance(manifest, dict) or "checkpoints" not in manifest:
        keys = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(f"{path} is not a bagging manifest: it has no 'checkpoints' (found: {keys})")
    for key in ("checkpoints", "last_checkpoints"):
        manifest[key] = [str(path.parent / item) if item is not None else None for item in manifest.get(key, [])]
    return manifest


def prediction_spec(
    checkpoints: Sequence[PathLike] = (), manifest: PathLike | None = None, which: Which = "best"
) -> PredictionSpec:
    """Checkpoints and settings from explicit checkpoint paths and/or a manifest.

    ``val_size``, ``tile_size`` (``data.patch_size``), ``in_channels`` and ``num_classes`` are read from the first
    checkpoint (its module and data module hyperparameters), the thresholds from the manifest when there is one.
    """
    paths = [Path(path) for path in checkpoints]
    threshold: float | None = None
    oof_threshold = val_size = None
    if manifest is not None:
        content = read_manifest(manifest)
        chosen = content["checkpoints"] if which == "best" else content["last_checkpoints"]
        if any(item is None for item in chosen):
            raise ValueError(f"{manifest}: some folds have no {which} checkpoint")
        paths += [Path(item) for item in chosen]
        threshold = content.get("threshold")
        oof_threshold = (content.get("thresholds") or {}).get("oof_best")
        val_size = ((content.get("config") or {}).get("data") or {}).get("val_size")
    if not paths:
        raise ValueError("nothing to predict with: give a checkpoint (--ckpt_path) or a manifest (--manifest)")
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise MissingPathError(f"checkpoints not found: {missing}")
    first = load_container(paths[0])
    hyper_parameters = first.get("hyper_parameters", {}) if isinstance(first, Mapping) else {}
    data_parameters = first.get("datamodule_hyper_parameters", {}) if isinstance(first, Mapping) else {}
    if val_size is None:
        val_size = data_parameters.get("val_size")
    return PredictionSpec(
        checkpoints=paths,
        threshold=float(threshold if threshold is not None else hyper_parameters.get("threshold", 0.5)),
        oof_threshold=oof_threshold,
        val_size=val_size,
        in_channels=int(hyper_parameters.get("in_channels", 3)),
        num_classes=int(hyper_parameters.get("num_classes", 1)),
        multilabel=bool(hyper_parameters.get("multilabel", False)),
        class_names=hyper_parameters.get("class_names"),
        tile_size=data_parameters.get("patch_size"),
    )


def build_predictor(
    models: Sequence[nn.Module],
    tta: str = "none",
    activation: Activation = "sigmoid",
    reduction: Reduction = "mean",
    weights: Sequence[float] | None = None,
) -> nn.Module:
    """One ``nn.Module`` over several models: ``(B, C_in, H, W)`` normalised images to ``(B, K, H, W)``.

    ``TTA(Ensemble(models, reduction, activation), tta, activation=None)``: with an ``activation`` the
    output is probabilities (the ensemble averages the models' probabilities, the TTA averages those);
    with ``activation=None`` it is logits (mean logits of the models, averaged over the augmentations),
    for wrappers that apply the activation themselves. ``tta``: one of :data:`TTA_CHOICES`. The module
    keeps ``info`` (for tiling and export sizes) and is in eval mode.
    """
    if tta not in TTA_CHOICES:
        raise ValueError(f"unknown tta {tta!r}; choose one of {TTA_CHOICES}")
    model: nn.Module = Ensemble(list(models), reduction=reduction, activation=activation, weights=weights)
    if tta != "none":
        geometric, _, scaled = tta.partition("+")
        model = TTA(model, geometric, scales=DEFAULT_SCALES if scaled else None, activation=None)
    return model.eval()


def load_predictor(
    spec: PredictionSpec, tta: str = "none", reduction: Reduction = "mean", probabilities: bool = True
) -> nn.Module:
    """:func:`build_predictor` over the models rebuilt from ``spec.checkpoints`` (probabilities out, or logits)."""
    models = [model_from_checkpoint(path) for path in spec.checkpoints]
    return build_predictor(models, tta, spec.activation if probabilities else None, reduction)


class FolderPredictor(pl.LightningModule):
    """A prediction step around any module returning probabilities, with optional tiling.

    Args:
        model: ``(B, C, H, W)`` normalised images to ``(B, K, H, W)`` probabilities (:func:`build_predictor`).
        val_size: the evaluation size the batches were resized to (``val_transforms``), ``None`` for none.
        tile_size: predict in ``tile_size`` tiles (a multiple of the model's ``size_multiple``); ``None``:
            the whole (resized) image at once.
        tile_overlap: fraction of a tile shared with its neighbour.
        tile_batch_size: tiles per forward pass.
        tile_scale: the factor the model sees the image resized by, tile by tile (the tiles are cut from the
            full-resolution image and the output is at full resolution); ``None``: the training's evaluation
            scale of each image, ``scale_size / longest side`` (1 without ``scale_size``).
        scale_size: the checkpoint's evaluation size (``data.val_size``), for ``tile_scale=None``.
        raw_info: given with ``tile_size``, the batches hold images as read (``ImageFolderDataset(raw=True)``),
            normalised tile by tile with its mean and std, and the tiles are blended in float16.

    ``predict_step`` takes batches of ``ImageFolderDataset(..., val_transforms(info, val_size))`` and
    returns ``{"name": [...], "probabilities": [(K, H, W) float32 at each file's size]}`` for ``MaskWriter``.
    """

    def __init__(
        self,
        model: nn.Module,
        val_size: int | None = None,
        tile_size: int | None = None,
        tile_overlap: float = 0.25,
        tile_batch_size: int = 4,
        tile_scale: float | None = 1.0,
        scale_size: int | None = None,
        raw_info: ModelInfo | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.val_size = val_size
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.tile_batch_size = tile_batch_size
        self.tile_scale = tile_scale
        self.scale_size = scale_size
        self.statistics = None if raw_info is None else (torch.tensor(raw_info.mean), torch.tensor(raw_info.std))

    def normalise(self, tiles: Tensor) -> Tensor:
        """``(B, C, T, T)`` tiles as read (``uint8``, or float in [0, 1]) to the model's normalised input."""
        assert self.statistics is not None
        mean, std = (value.to(tiles.device).view(1, -1, 1, 1) for value in self.statistics)
        pixels = tiles.float() / 255 if tiles.dtype == torch.uint8 else tiles.float()
        return (pixels - mean) / std

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def scale_of(self, height: int, width: int) -> float:
        """The factor tiles of an ``height x width`` image are resized by (see ``tile_scale``)."""
        if self.tile_scale is not None:
            return self.tile_scale
        return self.scale_size / max(height, width) if self.scale_size else 1.0

    def tiler(self, height: int, width: int) -> SlidingWindowPredictor:
        """The sliding-window predictor of an ``height x width`` image (``tile_size`` given)."""
        assert self.tile_size is not None
        raw = self.statistics is not None
        return SlidingWindowPredictor(
            self.model,
            tile_size=self.tile_size,
            scale=self.scale_of(height, width),
            overlap=self.tile_overlap,
            batch_size=self.tile_batch_size,
            device=self.device,
            progress=False,
            preprocess=self.normalise if raw else None,
            accumulator_dtype=torch.float16 if raw else torch.float32,
        )

    def predict_image(self, image: Tensor) -> Tensor:
        """``(C, h, w)`` normalised image (no padding) to ``(K, h, w)`` float32 probabilities on the CPU."""
        if self.tile_size is None:
            return self.model(image[None])[0].float().cpu()
        return self.tiler(*image.shape[-2:])(image).float()

    def predict_step(self, batch: dict[str, Any], batch_index: int) -> dict[str, Any]:
        outputs = []
        for image, size in zip(batch["image"], batch["original_size"], strict=True):
            original = tuple(int(side) for side in size.tolist())
            height, width = valid_size(original, self.val_size)
            probabilities = self.predict_image(image[:, :height, :width])  # the padding cropped away
            outputs.append(restore_original_size(probabilities, original, self.val_size))
        return {"name": batch["name"], "probabilities": outputs}


def predict_folder(
    model: nn.Module,
    input_dir: PathLike,
    output_dir: PathLike,
    *,
    val_size: int | None = None,
    in_channels: int | None = None,
    threshold: float = 0.5,
    save_probabilities: bool = False,
    overlay: bool = False,
    multilabel: bool = False,
    class_names: list[str] | None = None,
    tile_size: int | None = None,
    tile_overlap: float = 0.25,
    tile_batch_size: int = 4,
    tile_scale: float | None = 1.0,
    scale_size: int | None = None,
    accelerator: str = "auto",
    num_workers: int = 0,
    progress: bool = False,
    precision: str | None = None,
    postprocessing: Sequence[PostProcessingStep] = (),
) -> list[Path]:
    """Write ``<output_dir>/<stem>.png`` (and ``.npy`` probabilities) for every image of ``input_dir``.

    Args:
        model: probabilities out (:func:`build_predictor`), with ``info`` (statistics, ``size_multiple``).
        input_dir: a folder of images (any OpenCV format).
        output_dir: where the masks go (created).
        val_size: resize the longest side to this before predicting (``None``: full resolution); not with
            ``tile_size``, which tiles the full-resolution image read as it is (bounded memory).
        in_channels: convert the images to this many channels (default: the file's).
        threshold: foreground threshold of single-channel outputs.
        save_probabilities: also write ``float16`` ``(K, H, W)`` ``.npy`` files.
        overlay: also write ``<output_dir>/overlays/<stem>.png``, each image with its mask painted on.
        multilabel, class_names: multi-label probabilities, written as ``<output_dir>/<class name>/<stem>.png``.
        tile_size, tile_overlap, tile_batch_size, tile_scale, scale_size: see :class:`FolderPredictor`. With
            ``tile_size``, a TIFF that reads by windows (:func:`~ternaus_zoo.data.windows.open_tiff_windows`) is
            predicted block by block into ``<stem>.tif`` (unless ``save_probabilities``, ``overlay``,
            ``multilabel`` or ``postprocessing``, which need it whole): memory bounded whatever its size. Other
            files are read whole.
        accelerator: Lightning's (``"cpu"``, ``"gpu"``, ``"auto"``); one device.
        num_workers: loader processes.
        progress: Lightning's progress bar.
        precision: Lightning's; default :func:`~ternaus_zoo.precision.fast_precision` (bfloat16
            autocast where the hardware has it); the model is also put in channels-last memory format.
        postprocessing: cleaning steps applied to each thresholded mask at the image's original size (after
            the tiles are stitched).

    Returns:
        The mask files written, sorted.
    """
    info = getattr(model, "info", None)
    if info is None:
        raise ValueError(f"{type(model).__name__} has no `info` (ModelInfo): wrap zoo models (build_predictor)")
    info = info.for_channels(in_channels or info.in_channels)
    model = model.to(memory_format=torch.channels_last)  # 1.2x on CPU: benchmarks/results/speed_options.md
    raw_info = info if tile_size is not None else None
    module = FolderPredictor(
        model, val_size, tile_size, tile_overlap, tile_batch_size, tile_scale, scale_size, raw_info=raw_info
    )
    writer = MaskWriter(
        str(output_dir),
        threshold=threshold,
        save_probabilities=save_probabilities,
        overlay=overlay,
        multilabel=multilabel,
        class_names=class_names,
        postprocessing=postprocessing,
    )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        callbacks=[writer, InterruptNotice()],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        precision=precision or fast_precision(),
    )
    by_windows: dict[str, Path] = {}
    if tile_size is not None:
        # tiles of the full-resolution image, read as it is (uint8) and normalised tile by tile: memory is the
        # image as stored, the tiles, and the output (a float32 copy of a 5000x5000 RGB image alone is 300 MB)
        if val_size is not None:
            raise BadValueError(f"val_size={val_size} does not apply with tile_size: tiles are cut at full resolution")
        images = list_images(input_dir)
        if not (save_probabilities or overlay or multilabel or postprocessing):  # these need the whole image
            by_windows = _predict_tiffs(trainer, module, images, Path(output_dir), in_channels, threshold)
        if len(by_windows) == len(images):
            return sorted(by_windows.values())
        rest = [stem for stem in images if stem not in by_windows]
        dataset = ImageFolderDataset(input_dir, channels=in_channels, raw=True, stems=rest)
    else:
        dataset = ImageFolderDataset(input_dir, val_transforms(info, val_size), channels=in_channels)
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if multilabel:
        folders = class_labels(info.num_classes, class_names)
        return sorted(Path(output_dir) / folder / f"{stem}.png" for folder in folders for stem in dataset.stems)
    return sorted([*by_windows.values(), *(Path(output_dir) / f"{stem}.png" for stem in dataset.stems)])


def _predict_tiffs(
    trainer: pl.Trainer,
    module: FolderPredictor,
    images: dict[str, Path],
    output_dir: Path,
    channels: int | None,
    threshold: float,
) -> dict[str, Path]:
    """Predict the TIFFs of ``images`` that read by windows (:func:`~ternaus_zoo.data.windows.open_tiff_windows`)
    into ``<output_dir>/<stem>.tif``, block by block (:func:`~ternaus_zoo.inference.tiling.predict_tiff`), in
    memory bounded whatever their size, on the trainer's device and precision; ``{stem: mask file}``."""
    written = {}
    module.to(trainer.strategy.root_device)
    for stem, path in images.items():
        windows = open_tiff_windows(path, channels)
        if windows is None:
            continue
        with windows, torch.inference_mode(), trainer.strategy.precision_plugin.forward_context():
            tiler = module.tiler(*windows.shape[1:])
            written[stem] = predict_tiff(tiler, windows, output_dir / f"{stem}.tif", threshold=threshold)
    return written

"""``from_pretrained``: a saved model or ensemble folder, or a hub repository, back as one module.

A folder holds ``config.json`` (``kind``: ``"model"`` or ``"ensemble"``) and safetensors weights; its
``prediction`` section (evaluation size, threshold, TTA, reduction; from format 2 the ``postprocessing`` steps
applied to each full-resolution mask) says how ``ternaus-zoo predict --pretrained`` uses it. Ensemble folders
(``ternaus-zoo export --format pretrained --manifest M``) hold one ``member<k>.safetensors`` per fold model; from
format 2 each member may carry its settings (``weight`` in the weighted mean, ``val_size``). Nothing here
unpickles: configuration is JSON, weights safetensors.

The module :func:`from_pretrained` returns carries the folder's settings (``saved_prediction``), so that
:func:`predict_mask` gives, for one image, the mask ``ternaus-zoo predict --pretrained`` writes: post-processing
included.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from torch import nn

from ternaus_zoo.data.datasets import make_item, raw_item
from ternaus_zoo.data.io import image_with_channels
from ternaus_zoo.data.transforms import val_transforms
from ternaus_zoo.inference.postprocessing import steps_from_dicts
from ternaus_zoo.inference.predict import FolderPredictor, PredictionSpec, build_predictor, read_manifest
from ternaus_zoo.inference.writers import cleaned_mask
from ternaus_zoo.models.pretrained import (
    CONFIG_FILE,
    FORMAT_VERSION,
    LIBRARY,
    WEIGHTS_FILE,
    PretrainedError,
    load_weights_file,
    model_config,
    model_from_config,
    read_config,
    save_pretrained,
    write_config,
)
from ternaus_zoo.precision import fast_precision
from ternaus_zoo.registry import registered
from ternaus_zoo.weights import load_container

HUB_FILES = ("config.json", "*.safetensors", "README.md")
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
# where `ternaus-zoo fit` stores the resolved configuration it ran with (seed included) in every checkpoint
TRAINING_CONFIG_KEY = "training_config"


def prediction_settings(spec: PredictionSpec, tta: str, reduction: str) -> dict[str, Any]:
    """The ``prediction`` section of a folder's ``config.json``."""
    return {
        "val_size": spec.val_size,
        "threshold": spec.threshold,
        "oof_threshold": spec.oof_threshold,
        "tta": tta,
        "reduction": reduction,
        "multilabel": spec.multilabel,
        # trained on patches (data.patch_size): predict in tiles of the patch, at the scale of val_size
        "tile_size": spec.tile_size,
        "postprocessing": list(spec.postprocessing),
    }


def training_card(checkpoint: str | os.PathLike, manifest: str | os.PathLike | None = None) -> dict[str, Any]:
    """How a model was trained, as fields of its card (see :func:`~ternaus_zoo.models.pretrained.model_card`).

    ``fit_config`` and ``fit_command``: the configuration ``ternaus-zoo fit`` stored in the checkpoint
    (:data:`TRAINING_CONFIG_KEY`) and ``ternaus-zoo fit`` (``classify fit`` for a classifier); for a bag, the
    manifest's configuration and the ``ternaus-zoo bag`` command with its folds, folder and bootstrap seed.
    ``training_config`` instead, for a checkpoint written before ternaus_zoo stored its configuration (the
    module's and the data module's hyperparameters). ``data``: the data set and the held-out fold in words.
    """
    if manifest is not None:
        bag = read_manifest(manifest)
        command = ["ternaus-zoo", "bag", f"--folds={bag['n_folds']}", f"--bag_dir={Path(manifest).parent}"]
        seeds = [
            entry["bootstrap_seed"] - entry["fold"] for entry in bag["folds"] if entry["bootstrap_seed"] is not None
        ]
        if seeds:  # each fold k drew its sample with seed + k
            command += ["--bootstrap", f"--bootstrap_seed={seeds[0]}"]
        card = {"fit_config": bag.get("config"), "fit_command": shlex.join(command)}
    else:
        content = load_container(checkpoint)
        content = content if isinstance(content, Mapping) else {}
        hyper_parameters = dict(content.get("hyper_parameters") or {})
        if TRAINING_CONFIG_KEY in content:
            task = registered(hyper_parameters["model"])[1].task
            command = "ternaus-zoo classify fit" if task == "classification" else "ternaus-zoo fit"
            card = {"fit_config": content[TRAINING_CONFIG_KEY], "fit_command": command}
        else:
            data = dict(content.get("datamodule_hyper_parameters") or {})
            card = {"training_config": {"model": hyper_parameters, "data": data}}
    data = (card.get("fit_config") or card.get("training_config") or {}).get("data") or {}
    if data.get("dataset"):
        card["data"] = f"{data['dataset']} (fold {data.get('fold')} of {data.get('n_folds')} held out for validation)"
    return card


def save_predictor_pretrained(
    models: Sequence[nn.Module],
    folder: str | os.PathLike,
    prediction: Mapping[str, Any],
    card: Mapping[str, Any] | None = None,
    member_settings: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write one model (``kind: "model"``) or several (``kind: "ensemble"``) with their ``prediction`` settings.

    One model without TTA is written as :func:`~ternaus_zoo.models.pretrained.save_pretrained` writes it
    (plus the settings), so both ``from_pretrained`` and the model-only loader read it. ``member_settings``: one
    mapping per model stored with it (``weight``: its weight in the ensemble's weighted mean; ``val_size`` ...).
    """
    if member_settings is not None and len(member_settings) != len(models):
        raise ValueError(f"{len(member_settings)} member settings for {len(models)} models")
    folder = Path(folder)
    if len(models) == 1 and prediction.get("tta", "none") == "none":
        return save_pretrained(models[0], folder, card, extra={"prediction": dict(prediction)})
    folder.mkdir(parents=True, exist_ok=True)
    members = []
    for index, model in enumerate(models):
        file = f"member{index}.safetensors"
        save_model(model, str(folder / file), metadata={"format": "pt", "library": LIBRARY})
        members.append({"file": file, **model_config(model), **dict(member_settings[index] if member_settings else {})})
    config = {
        "format_version": FORMAT_VERSION,
        "library": LIBRARY,
        "kind": "ensemble",
        "description": f"ensemble of {len(models)} {members[0]['model']} models, {prediction.get('tta', 'none')} TTA",
        "info": members[0]["info"],
        "members": members,
        "prediction": dict(prediction),
    }
    write_config(folder, config, card)
    return folder


def resolve_folder(source: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder, or a hub repository id downloaded (or, with ``HF_HUB_OFFLINE=1``, read from the cache)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or not REPO_ID.fullmatch(str(source)):
        raise PretrainedError(f"{source} is not a folder holding {CONFIG_FILE} (nor a hub id such as 'user/name')")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise PretrainedError(
            f"{source!r} is not a local folder, and reading a hub repository needs huggingface_hub "
            "(pip install 'ternaus_zoo[hub]')"
        ) from None
    try:
        return Path(snapshot_download(str(source), revision=revision, allow_patterns=list(HUB_FILES)))
    except LocalEntryNotFoundError as error:
        raise PretrainedError(
            f"{source!r} is neither a local folder nor in the hub cache, and downloads are off (HF_HUB_OFFLINE=1) "
            f"or the hub cannot be reached: {error}"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise PretrainedError(f"could not read the hub repository {source!r}: {error}") from None


def read_pretrained(source: str | os.PathLike, revision: str | None = None) -> tuple[list[nn.Module], dict[str, Any]]:
    """The member models (eval mode) of a saved model or ensemble folder, and its ``config.json``."""
    folder = resolve_folder(source, revision)
    config = read_config(folder)
    kind = config.get("kind", "model")
    if kind == "model":
        model = model_from_config(config, str(folder / CONFIG_FILE))
        return [load_weights_file(model, folder / WEIGHTS_FILE)], config
    if kind != "ensemble" or not config.get("members"):
        raise PretrainedError(f"{folder / CONFIG_FILE}: unknown kind {kind!r} (expected 'model' or 'ensemble')")
    models = []
    for index, member in enumerate(config["members"]):
        model = model_from_config(member, f"{folder / CONFIG_FILE} member {index}")
        models.append(load_weights_file(model, folder / member["file"]))
    return models, config


def pretrained_spec(config: Mapping[str, Any], folder: str | os.PathLike) -> PredictionSpec:
    """What a folder's ``config.json`` says about predicting with it (as a checkpoint's spec would)."""
    prediction = config.get("prediction") or {}
    info = config.get("info") or {}
    members = config.get("members") or []
    return PredictionSpec(
        checkpoints=[Path(folder)],
        threshold=float(prediction.get("threshold", 0.5)),
        oof_threshold=prediction.get("oof_threshold"),
        val_size=prediction.get("val_size"),
        in_channels=int(info.get("in_channels", 3)),
        num_classes=int(info.get("num_classes", 1)),
        multilabel=bool(prediction.get("multilabel", False)),
        class_names=list(info.get("class_names") or []) or None,
        tile_size=prediction.get("tile_size"),
        weights=[float(member.get("weight", 1.0)) for member in members] if members else None,
        postprocessing=list(prediction.get("postprocessing") or []),
    )


@dataclass(frozen=True)
class SavedPrediction:
    """How a saved folder predicts; :func:`from_pretrained` leaves it on the module as ``saved_prediction``.

    Attributes:
        spec: evaluation size, tile, threshold, classes, members' weights and post-processing steps.
        probabilities: the module returns probabilities (an ensemble folder: members, weights and TTA inside)
            rather than logits (a model folder).
    """

    spec: PredictionSpec
    probabilities: bool


def from_pretrained(source: str | os.PathLike, revision: str | None = None) -> nn.Module:
    """Rebuild what ``save_pretrained`` or ``ternaus-zoo export --format pretrained`` wrote.

    Args:
        source: a local folder, or a hub repository id (``"user/name"``, with ``huggingface_hub``
            installed; ``HF_HUB_OFFLINE=1`` reads only the local cache and fails at once when it is absent).
        revision: the hub revision (branch, tag or commit).

    Returns:
        For a model folder, the model (logits out, eval mode, ``info`` restored: class names,
        thresholds). For an ensemble folder, one predictor: the members' probabilities reduced as saved (weighted
        by their ``weight``), under the saved TTA, ``(B, C, H, W)`` normalised images to ``(B, K, H, W)``
        probabilities. Either carries the folder's settings as ``saved_prediction`` (:class:`SavedPrediction`):
        :func:`predict_mask` turns an image into the folder's mask, its post-processing steps applied.
    """
    models, config = read_pretrained(source, revision)
    spec = pretrained_spec(config, source)
    if config.get("kind", "model") == "model":
        module, probabilities = models[0], False
    else:
        prediction = config.get("prediction") or {}
        tta, reduction = prediction.get("tta", "none"), prediction.get("reduction", "mean")
        module, probabilities = build_predictor(models, tta, spec.activation, reduction, spec.weights), True
    module.saved_prediction = SavedPrediction(spec, probabilities)
    return module


def predict_mask(module: nn.Module, image: np.ndarray | str | os.PathLike, precision: str | None = None) -> np.ndarray:
    """The mask ``ternaus-zoo predict --pretrained`` writes for one image, from a module of :func:`from_pretrained`.

    The folder's chain: the image at its evaluation size (or cut into its tiles, at that scale), the members and
    TTA as saved, the probabilities brought back to the image's size, the threshold, then the folder's
    post-processing steps in order.

    Args:
        module: what :func:`from_pretrained` returned (it carries ``saved_prediction``).
        image: ``(H, W, C)`` or ``(H, W)`` as :func:`~ternaus_zoo.data.io.read_image` gives it (RGB ``uint8``, or
            float in [0, 1]), or an image file.
        precision: ``"bf16-mixed"`` (bfloat16 autocast) or ``"32-true"``; default
            :func:`~ternaus_zoo.precision.fast_precision`, as ``predict`` uses.

    Returns:
        ``(H, W)`` ``uint8``: 0/255 for one output channel, class indices for several; ``(K, H, W)`` 0/255 for a
        multi-label folder.
    """
    settings = getattr(module, "saved_prediction", None)
    if not isinstance(settings, SavedPrediction):
        raise ValueError(f"{type(module).__name__} carries no saved settings: load it with from_pretrained(folder)")
    spec = settings.spec
    image = image_with_channels(image, spec.in_channels)
    predictor = module if settings.probabilities else build_predictor([module], "none", spec.activation)
    predictor = predictor.to(memory_format=torch.channels_last)  # as predict_folder runs it
    info = module.info.for_channels(spec.in_channels)
    if spec.tile_size:  # as `predict --pretrained` tiles a folder trained on patches: at the evaluation scale
        step = FolderPredictor(
            predictor, None, spec.tile_size, tile_scale=None, scale_size=spec.val_size, raw_info=info
        )
        item = raw_item("image", image)
    else:
        step = FolderPredictor(predictor, spec.val_size)
        item = make_item("image", image, val_transforms(info, spec.val_size))
    batch = {"image": item["image"][None], "original_size": item["original_size"][None], "name": [item["name"]]}
    bfloat16 = (precision or fast_precision()) == "bf16-mixed"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
        probabilities = step.predict_step(batch, 0)["probabilities"][0]
    return cleaned_mask(probabilities, spec.threshold, spec.multilabel, steps_from_dicts(spec.postprocessing))

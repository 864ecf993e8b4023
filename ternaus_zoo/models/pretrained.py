"""Self-describing model folders: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

``save_pretrained(model, folder)`` writes what :func:`load_pretrained_model` needs to rebuild the model
with no pickle and none of the training code: the registry name and its keyword arguments, the
:class:`~ternaus_zoo.registry.ModelInfo` (task, classes and their names, mean/std, size multiple, tuned
thresholds) and the weights through the ``safetensors`` package. ``ternaus_zoo.from_pretrained``
(``inference/pretrained.py``) also reads ensemble folders and hub repositories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_model, save_model
from torch import nn

from ternaus_zoo.errors import UserError
from ternaus_zoo.models.factory import create_model
from ternaus_zoo.registry import ModelInfo

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FIT_CONFIG_FILE = "training_config.yaml"  # the name the card's Reproduce lines give the training configuration
# 2: an ensemble's members carry their settings (weight, evaluation size) and ``prediction`` the kept
# post-processing steps (``ternaus-zoo select``); version-1 folders read as before
FORMAT_VERSION = 2
LIBRARY = "ternaus_zoo"


class PretrainedError(UserError, RuntimeError):
    """A model folder (or hub repository) that cannot be read, with the file and the key named."""


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` content of a model built by ``create_model`` (``model.build_config``)."""
    build = getattr(model, "build_config", None)
    info = getattr(model, "info", None)
    if build is None or info is None:
        raise PretrainedError(
            f"{type(model).__name__} was not built by ternaus_zoo.create_model (no build_config/info): "
            "rebuild it with create_model, then load its weights"
        )
    return {
        "format_version": FORMAT_VERSION,
        "library": LIBRARY,
        "kind": "model",
        "model": build["name"],
        "num_classes": build["num_classes"],
        "in_channels": build["in_channels"],
        "kwargs": dict(build["kwargs"]),
        "info": info.to_dict(),
    }


def model_card(config: Mapping[str, Any], card: Mapping[str, Any] | None = None) -> str:
    """A Markdown model card: architecture, then what ``card`` gives (``data``, ``metrics``, ``fit_config``
    with ``fit_command``, ``command``, ``training_config``, ``notes``), with the loading snippet.

    ``fit_config`` (the resolved configuration the training ran with, seed included) becomes the first lines
    of "Reproduce": written to ``training_config.yaml``, then ``fit_command`` (``ternaus-zoo fit``,
    ``ternaus-zoo bag --folds 5`` ...) with ``--config`` over it; ``command`` (the export) follows."""
    card = dict(card or {})
    info = config.get("info", {})
    lines = [
        "---",
        f"library_name: {LIBRARY}",
        f"tags: [{info.get('task', 'segmentation')}, pytorch, {LIBRARY}]",
        "---",
        "",
        f"# {card.get('title', config.get('model', 'ensemble'))}",
        "",
        f"- architecture: {info.get('description') or config.get('description', '')}",
        f"- registry name: `{config.get('model', '-')}`, keyword arguments `{json.dumps(config.get('kwargs', {}))}`",
        f"- input: {info.get('in_channels', '?')} channels, normalised with mean {info.get('mean')} and std "
        f"{info.get('std')}; sides padded to multiples of {info.get('size_multiple')}",
        f"- output: {info.get('num_classes', '?')} logit channels"
        + (f", classes {list(info['class_names'])}" if info.get("class_names") else ""),
    ]
    if info.get("thresholds"):
        lines.append(f"- tuned thresholds: {list(info['thresholds'])}")
    if card.get("data"):
        lines.append(f"- training data: {card['data']}")
    if card.get("metrics"):
        lines += ["", "## Measured", "", "| metric | value |", "| --- | --- |"]
        lines += [
            f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in card["metrics"].items()
        ]
        if card.get("metrics_source"):
            lines += ["", f"From {card['metrics_source']}."]
    reproduce = []
    if card.get("fit_config"):  # the training command first: its configuration written out, then the command
        text = yaml.safe_dump(card["fit_config"], sort_keys=False).rstrip()
        command = f"{card['fit_command']} --config {FIT_CONFIG_FILE}"
        reproduce += [f"cat > {FIT_CONFIG_FILE} <<'EOF'", text, "EOF", command]
    if card.get("command"):
        reproduce.append(str(card["command"]))
    if reproduce:
        lines += ["", "## Reproduce", "", "```bash", *reproduce, "```"]
    if card.get("training_config"):
        text = yaml.safe_dump(card["training_config"], sort_keys=False)
        lines += ["", "## Training configuration", "", "```yaml", text.rstrip(), "```"]
    if card.get("notes"):
        lines += ["", str(card["notes"])]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import ternaus_zoo",
        "model = ternaus_zoo.from_pretrained('path/to/this/folder')",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_config(folder: Path, config: Mapping[str, Any], card: Mapping[str, Any] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / CARD_FILE).write_text(model_card(config, card))


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    card: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a ``README.md`` model card for ``model`` into ``folder``.

    Args:
        model: a model from ``create_model`` (its ``info`` may carry class names and thresholds).
        folder: created if missing; files of an earlier save are replaced.
        card: what the card should say beyond the architecture: ``data``, ``metrics`` (name -> value),
            ``metrics_source``, ``fit_config``, ``fit_command``, ``command``, ``training_config``, ``notes``,
            ``title``.
        extra: more top-level ``config.json`` sections (the ``prediction`` settings of an export).

    Returns:
        The folder.
    """
    folder = Path(folder)
    config = {**model_config(model), **(extra or {})}
    write_config(folder, config, card)
    # save_model (not save_file): TernausNet's aliased attributes share tensors, which save_model stores once
    save_model(model, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "library": LIBRARY})
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json``, checked to be a ternaus_zoo configuration of a known format version."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise PretrainedError(f"{folder} is not a saved model folder: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PretrainedError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("library") != LIBRARY:
        raise PretrainedError(f'{path} was not written by {LIBRARY} (no "library": "{LIBRARY}")')
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PretrainedError(
            f"{path} has format_version {version!r}; this version of {LIBRARY} reads up to {FORMAT_VERSION}: upgrade it"
        )
    return config


def model_from_config(config: Mapping[str, Any], source: str = "config") -> nn.Module:
    """The architecture a model ``config`` describes (random weights), with its saved ``info``."""
    for key in ("model", "num_classes", "in_channels"):
        if key not in config:
            raise PretrainedError(f"{source} has no {key!r}")
    model = create_model(
        config["model"],
        num_classes=config["num_classes"],
        in_channels=config["in_channels"],
        **config.get("kwargs", {}),
    )
    if "info" in config:
        model.info = ModelInfo.from_dict(config["info"])
    return model


def load_weights_file(model: nn.Module, path: Path) -> nn.Module:
    """Load a ``.safetensors`` file written by :func:`save_pretrained` into ``model``, strictly."""
    if not path.is_file():
        raise PretrainedError(f"{path} is missing")
    try:
        load_model(model, str(path), strict=True)
    except (RuntimeError, OSError) as error:
        raise PretrainedError(f"{path} does not fit {type(model).__name__}: {error}") from error
    return model.eval()


def load_pretrained_model(folder: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by :func:`save_pretrained` in ``folder``, in eval mode."""
    folder = Path(folder)
    config = read_config(folder)
    if config.get("kind", "model") != "model":
        raise PretrainedError(f"{folder} holds a {config['kind']!r}, not one model: use ternaus_zoo.from_pretrained")
    return load_weights_file(model_from_config(config, str(folder / CONFIG_FILE)), folder / WEIGHTS_FILE)

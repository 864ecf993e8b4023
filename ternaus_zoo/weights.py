"""Loading weights into zoo models: ImageNet encoders through torchvision, and local checkpoints.

``weights="imagenet"`` takes the URL of torchvision's weights entry (``VGG11_Weights.IMAGENET1K_V1`` ...),
downloads the file once into ``$TORCH_HOME/hub/checkpoints`` and reads it from there afterwards: its sha256
must start with the hash in torchvision's file name (``resnet34-b627a593.pth``) and it is read with
``torch.load(weights_only=True)``, so a file placed in the cache never runs code (torchvision's own
``get_state_dict`` unpickles it with ``weights_only=False``). Without a network and without the cached
file the error names the file, the folder and the URL; a download never hangs.

``weights=PATH`` reads a full model state dict, an encoder-only state dict (ours, or a torchvision
classifier's), an original TernausNet checkpoint (``{"model": ...}``, with or without ``module.``) or
a Lightning checkpoint (``{"state_dict": {"model.<key>": ...}}``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from ternaus_zoo.errors import MissingPathError, UserError

DOWNLOAD_TIMEOUT_S = 30.0
OFFLINE_VARIABLES = ("TERNAUS_ZOO_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE")


@dataclass(frozen=True)
class EncoderWeights:
    """Where a model's pretrained encoder is and how torchvision's weights map onto it.

    Attributes:
        imagenet: the torchvision weights entry, e.g. ``VGG11_Weights.IMAGENET1K_V1``.
        encoder: attribute path of the encoder inside the model (``"encoder"``).
        source_prefix: prefix of the encoder's keys in torchvision's state dict (``"features."`` for VGG).
        ignored_prefixes: torchvision keys that have no place in the encoder (the classifier).
        first_conv: the encoder key of the first convolution's weight, adapted for ``in_channels != 3``.
    """

    imagenet: WeightsEnum
    encoder: str = "encoder"
    source_prefix: str = ""
    ignored_prefixes: tuple[str, ...] = ()
    first_conv: str = "0.weight"


class WeightsError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with the file and the key named."""


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt a pretrained first-convolution weight ``(O, 3, k, k)`` to ``(O, in_channels, k, k)``.

    Fewer channels: each gets the sum of the RGB filters divided by ``in_channels``, so a grey image
    repeated over the channels gives the RGB response (one channel = the sum of the RGB filters).
    More channels: the RGB filters are kept and every extra channel gets their mean.
    """
    source_channels = weight.shape[1]
    if in_channels == source_channels:
        return weight
    if in_channels < source_channels:
        summed = weight.sum(dim=1, keepdim=True) / in_channels
        return summed.repeat(1, in_channels, 1, 1)
    extra = weight.mean(dim=1, keepdim=True).repeat(1, in_channels - source_channels, 1, 1)
    return torch.cat([weight, extra], dim=1)


def _submodule(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def torchvision_cache_file(weights: WeightsEnum) -> Path:
    """The file torchvision reads ``weights`` from: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _offline() -> bool:
    return any(os.environ.get(variable, "").lower() in ("1", "true", "yes") for variable in OFFLINE_VARIABLES)


def _check_hash(path: Path, weights: WeightsEnum) -> None:
    """Refuse ``path`` unless its sha256 starts with the hash torchvision's file name carries."""
    found = torch.hub.HASH_REGEX.search(path.name)
    if found is None:
        raise WeightsError(f"{path}: the file name of {weights} carries no sha256 prefix to check the file against")
    expected = found.group(1)
    digest = hashlib.sha256()
    with path.open("rb") as file:  # in blocks, not hashlib.file_digest: that needs Python 3.11
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(expected):
        raise WeightsError(
            f"{path} is not {weights}: its sha256 must start with {expected} (it starts with "
            f"{digest.hexdigest()[: len(expected)]}); delete it and download {weights.url} again"
        )


def fetch_imagenet_state_dict(weights: WeightsEnum) -> dict[str, Tensor]:
    """torchvision's state dict for ``weights``, from the cache, downloading it once if allowed; the file's
    hash is checked and it is read with ``weights_only=True``."""
    cached = torchvision_cache_file(weights)
    where = (
        f"Download {weights.url} and save it as {cached} (folder {cached.parent}; set TORCH_HOME to use another "
        "cache), or pass weights=<path to a local checkpoint>."
    )
    if not cached.is_file():
        if _offline():
            raise WeightsError(
                f"{weights} is not cached and downloads are off ({'/'.join(OFFLINE_VARIABLES)}). {where}"
            )
        cached.parent.mkdir(parents=True, exist_ok=True)
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:  # writes a temporary file and moves it into place only when complete
            torch.hub.download_url_to_file(weights.url, str(cached), progress=True)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise WeightsError(f"could not download {weights}: {error}. {where}") from error
        finally:
            socket.setdefaulttimeout(previous_timeout)
    _check_hash(cached, weights)
    return read_checkpoint(cached)


def load_container(path: str | os.PathLike) -> object:
    """The object saved in a checkpoint file (a Lightning checkpoint dict, a state dict ...), on the CPU.

    Always ``torch.load(weights_only=True)``: tensors, containers and plain Python values only. A file
    that carries other pickled objects is refused (unpickling can run arbitrary code); any failure raises
    :class:`WeightsError` naming the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            raise WeightsError(
                f"{path} carries pickled Python objects{f' ({found.group(1)})' if found else ''}, which ternaus_zoo "
                "never unpickles (torch.load(weights_only=True)); save a plain state dict instead "
                "(torch.save(model.state_dict(), path))"
            ) from None
        raise WeightsError(f"{path} is not a PyTorch checkpoint (torch.load: {error})") from error
    except Exception as error:
        reason = f"{type(error).__name__} {error}"
        raise WeightsError(f"{path} is not a PyTorch checkpoint (torch.load: {reason})") from error


def read_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a local checkpoint, unwrapped from Lightning/TernausNet containers and ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"weights file {path} does not exist")
    content = load_container(path)
    for container_key in ("state_dict", "model", "model_state_dict"):
        if isinstance(content, Mapping) and isinstance(content.get(container_key), Mapping):
            content = content[container_key]
            break
    if not isinstance(content, Mapping) or not all(isinstance(value, Tensor) for value in content.values()):
        raise WeightsError(f"{path} holds no state dict (a mapping of names to tensors)")
    state = dict(content)
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _check_shapes(target: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    expected = target.state_dict()
    for key, value in state.items():
        if expected[key].shape != value.shape:
            raise WeightsError(
                f"{source}: key {key!r} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )


def _load_encoder(model: nn.Module, state: Mapping[str, Tensor], spec: EncoderWeights, source: str) -> None:
    """Strictly load a (torchvision-named or encoder-named) state dict into the model's encoder."""
    encoder = _submodule(model, spec.encoder)
    mapped = {
        key.removeprefix(spec.source_prefix) if key.startswith(spec.source_prefix) else key: value
        for key, value in state.items()
        if not key.startswith(spec.ignored_prefixes or ("\0",))
    }
    first_conv = mapped.get(spec.first_conv)
    expected_channels = encoder.state_dict()[spec.first_conv].shape[1]
    if first_conv is not None and first_conv.shape[1] != expected_channels:
        mapped[spec.first_conv] = adapt_first_conv(first_conv, expected_channels)
    _check_shapes(encoder, mapped, source)
    encoder.load_state_dict(mapped, strict=True)


def _key_difference(state: Mapping[str, Tensor], target: nn.Module) -> str:
    expected = set(target.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    return f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}" + (
        "..." if len(unexpected) > 5 else ""
    )


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a local checkpoint into ``model`` (whole model first, then its encoder)."""
    state = read_checkpoint(path)
    source = str(path)
    model_keys = set(model.state_dict())
    candidates = [state]
    if any(key.startswith("model.") for key in state):  # a Lightning module holding the model as `self.model`
        candidates.append(
            {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
        )
    for candidate in candidates:
        if set(candidate) == model_keys:
            _check_shapes(model, candidate, source)
            model.load_state_dict(candidate, strict=True)
            return
    spec: EncoderWeights | None = getattr(model, "encoder_weights", None)
    if spec is not None:
        encoder_keys = set(_submodule(model, spec.encoder).state_dict())
        for candidate in candidates:
            names = {
                key.removeprefix(spec.source_prefix)
                for key in candidate
                if not key.startswith(spec.ignored_prefixes or ("\0",))
            }
            if names == encoder_keys:
                _load_encoder(model, candidate, spec, source)
                return
    raise WeightsError(
        f"{source} matches neither {type(model).__name__} nor its encoder: {_key_difference(candidates[-1], model)}"
    )


def resolve_pretrained(spec: EncoderWeights, tag: str) -> WeightsEnum:
    """The torchvision weights entry a pretrained ``tag`` names: ``"imagenet"`` is the family's default
    (``spec.imagenet``), any other tag a member of the same enum, case-insensitive (``"imagenet1k_v2"``)."""
    if tag == "imagenet":
        return spec.imagenet
    members = type(spec.imagenet)
    try:
        return members[tag.upper()]
    except KeyError:
        known = ["imagenet", *(member.name.lower() for member in members)]
        raise WeightsError(f"unknown pretrained weights {tag!r} for this encoder; choose one of {known}") from None


def is_pretrained_tag(weights: str | os.PathLike) -> bool:
    """``True`` for a tag such as ``"imagenet"`` or ``"imagenet1k_v2"``, ``False`` for a path (or an existing file)."""
    return isinstance(weights, str) and weights.lower().startswith("imagenet") and not Path(weights).exists()


def load_weights(model: nn.Module, weights: str | os.PathLike | None) -> nn.Module:
    """Apply ``weights`` (``None``, a pretrained tag or a path) to ``model`` in place and return it."""
    if weights is None:
        return model
    if is_pretrained_tag(weights):
        spec: EncoderWeights | None = getattr(model, "encoder_weights", None)
        if spec is None:
            raise WeightsError(f"{type(model).__name__} has no ImageNet-pretrained encoder; use weights=None or a path")
        entry = resolve_pretrained(spec, str(weights))
        _load_encoder(model, fetch_imagenet_state_dict(entry), spec, str(entry))
        return model
    load_checkpoint(model, weights)
    return model

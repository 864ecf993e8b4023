"""Export a model, or an ensemble with its TTA, to TorchScript and ONNX at a fixed tile size.

The exported graph takes ``(batch, C, T, T)`` with a dynamic batch and a fixed tile ``T``; images of
any size are then predicted by :class:`~ternaus_zoo.inference.tiling.SlidingWindowPredictor` around it.
Zoo segmentation models pad their input to ``info.size_multiple`` with Python integers computed from
the input shape, which a trace freezes; at a tile size that is a multiple of ``size_multiple`` that
padding is a no-op, so ``T`` must be such a multiple (checked here).

ONNX: the default exporter of torch 2.14 (``dynamo=True``, through ``torch.export``) needs
``onnxscript``; where it is missing or fails, the TorchScript-based exporter (``dynamo=False``) is used.
The result is checked against PyTorch with onnxruntime on a batch of a size other than the one traced.

The models take normalised images (``(pixels - mean) / std``); :class:`PixelInput` puts that
normalisation inside the graph, so a deployment feeds pixels in [0, 1] (``ternaus-zoo export`` does this by
default), and ``metadata`` is written into the ONNX file (``metadata_props``) to say what the input is.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

Exporter = Literal["auto", "dynamo", "torchscript"]
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class PixelInput(nn.Module):
    """``(B, C, H, W)`` pixels in [0, 1] (8-bit values / 255) -> ``model`` on ``(pixels - mean) / std``.

    The normalisation of the evaluation transform, as a graph operation, so an exported file takes pixels.
    Keeps ``model.info`` (tile sizes are checked against it).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} and {len(std)}")
        self.model = model
        self.info = getattr(model, "info", None)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model((pixels - self.mean) / self.std)


def write_onnx_metadata(path: str | os.PathLike, metadata: Mapping[str, str]) -> None:
    """Add ``metadata`` to an ONNX file's ``metadata_props`` (what its input is, what it returns)."""
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        model.metadata_props.add(key=str(key), value=str(value))
    onnx.save(model, str(path))


def size_multiple(model: nn.Module) -> int:
    """``model.info.size_multiple`` (zoo models, :class:`TTA`, :class:`Ensemble`), 1 when unknown."""
    info = getattr(model, "info", None)
    return int(getattr(info, "size_multiple", 1))


def _check_tile_size(model: nn.Module, tile_size: int) -> None:
    multiple = size_multiple(model)
    if tile_size < 1 or tile_size % multiple:
        raise ValueError(
            f"tile_size {tile_size} is not a multiple of {type(model).__name__}'s size_multiple {multiple}; the model "
            f"pads with sizes a trace would freeze. Export at {max(multiple, tile_size // multiple * multiple)} or "
            f"{(tile_size // multiple + 1) * multiple}"
        )


def example_input(tile_size: int, in_channels: int = 3, batch_size: int = 2, seed: int = 0) -> Tensor:
    """A reproducible random ``(batch_size, in_channels, tile_size, tile_size)`` float32 input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, in_channels, tile_size, tile_size, generator=generator)


@contextmanager
def _quiet_tracer():
    # The zoo's shape checks and padding turn shapes into Python values; at a multiple of size_multiple
    # those are constants on purpose, so the tracer's warnings about them are noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _max_difference(expected: Tensor, found: Tensor | np.ndarray, what: str, atol: float) -> float:
    found = torch.as_tensor(found)
    if tuple(found.shape) != tuple(expected.shape):
        raise ValueError(f"{what}: output shape {tuple(found.shape)}, PyTorch gives {tuple(expected.shape)}")
    difference = (found.float() - expected.float()).abs().max().item()
    if not difference <= atol:
        raise ValueError(f"{what}: outputs differ from PyTorch's by {difference:.3g} > atol={atol:g}")
    return difference


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    tile_size: int = 256,
    in_channels: int = 3,
    check: bool = True,
    atol: float = 1e-4,
) -> float | None:
    """Trace ``model`` (in eval mode) at ``(B, in_channels, tile_size, tile_size)`` and save it to ``path``.

    With ``check`` the saved file is loaded back and run on a batch of 3 tiles (the trace used 2).

    Returns:
        The largest absolute difference between the loaded module's and PyTorch's outputs, or ``None``
        without ``check``. Raises ``ValueError`` when it exceeds ``atol``.
    """
    _check_tile_size(model, tile_size)
    model.eval()
    path = Path(path)
    with torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(model, example_input(tile_size, in_channels), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    if not check:
        return None
    images = example_input(tile_size, in_channels, batch_size=3, seed=1)
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return _max_difference(model(images), loaded(images), f"TorchScript {path}", atol)


def _export_dynamo(model: nn.Module, images: Tensor, path: Path, opset: int | None) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (images,),
        str(path),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_shapes=({0: batch},),
        external_data=False,
    )


def _export_torchscript_based(model: nn.Module, images: Tensor, path: Path, opset: int | None) -> None:
    with _quiet_tracer():
        # Chosen on purpose (explicitly or as the fallback that already warned), so its deprecation notice is noise.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based", DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(
            model,
            (images,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    tile_size: int = 256,
    in_channels: int = 3,
    opset: int | None = None,
    exporter: Exporter = "auto",
    check: bool = True,
    atol: float = 1e-4,
    metadata: Mapping[str, str] | None = None,
) -> float | None:
    """Export ``model`` (in eval mode) to ONNX: input ``images`` ``(batch, in_channels, T, T)``, output ``logits``.

    Args:
        model: a zoo model, :class:`TTA` or :class:`Ensemble` (whatever its forward returns is the output:
            probabilities when the wrapper applies an activation).
        path: the ``.onnx`` file (weights inside it; fine below ONNX's 2 GB limit).
        tile_size: the fixed height and width ``T``, a multiple of the model's ``size_multiple``.
        in_channels: input channels.
        opset: ONNX opset; ``None`` for the exporter's default.
        exporter: ``"dynamo"`` (torch 2.14's default, needs ``onnxscript``), ``"torchscript"`` (the
            ``dynamo=False`` exporter) or ``"auto"``: the default exporter, falling back to the other with a
            warning that says why.
        check: run the file with onnxruntime on a batch of 3 tiles and compare with PyTorch.
        atol: the largest accepted absolute difference.
        metadata: written into the file's ``metadata_props`` (:func:`write_onnx_metadata`).

    Returns:
        The largest absolute difference between onnxruntime's and PyTorch's outputs, or ``None`` without
        ``check``. Raises ``ValueError`` when it exceeds ``atol``.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"unknown exporter {exporter!r}; choose 'auto', 'dynamo' or 'torchscript'")
    _check_tile_size(model, tile_size)
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = example_input(tile_size, in_channels)
    with torch.no_grad():
        if exporter == "torchscript":
            _export_torchscript_based(model, images, path, opset)
        elif exporter == "dynamo":
            _export_dynamo(model, images, path, opset)
        else:
            try:
                _export_dynamo(model, images, path, opset)
            except Exception as error:  # ImportError without onnxscript; export errors on unsupported code
                warnings.warn(
                    f"the default (dynamo) ONNX exporter failed ({type(error).__name__}: {str(error)[:200]}); "
                    "falling back to dynamo=False",
                    stacklevel=2,
                )
                _export_torchscript_based(model, images, path, opset)
    if metadata:
        write_onnx_metadata(path, metadata)
    if not check:
        return None
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = example_input(tile_size, in_channels, batch_size=3, seed=1)
    (found,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
    with torch.no_grad():
        return _max_difference(model(batch), found, f"ONNX {path}", atol)

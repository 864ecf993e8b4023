"""Deprecated aliases of names that moved: one module-level ``__getattr__`` builder for every old place."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(old_module: str, moved: Mapping[str, str], submodules: tuple[str, ...] = ()) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old_module`` resolving each name of ``moved`` (name -> new module)
    on first access, with a ``DeprecationWarning`` naming the new place; the new module is imported lazily.
    ``submodules``: names of ``old_module``'s own submodules, imported on access without a warning."""

    def resolve(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{old_module}.{name}")
        if name not in moved:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(f"{old_module}.{name} moved to {moved[name]}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(moved[name]), name)

    return resolve

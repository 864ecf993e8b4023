"""The package's import graph keeps the layers of docs/architecture.md: every module-level import of a
module runs to a lower layer or stays inside its own package; no cycle, no arrow back up."""

from __future__ import annotations

import ast
from pathlib import Path

import ternaus_zoo

PACKAGE = Path(ternaus_zoo.__file__).parent
# top-level part of the package -> its layer; a part may import only parts of lower layers (and itself)
LAYERS = {
    "cli": 7,  # the one entry point: routes to every command
    "cli_planning": 7,  # plan and auto, routed to (lazily) by cli.py
    "cli_select": 7,  # select: argparse over planning/, routed to (lazily) by cli.py
    "planning": 6,  # decides from fingerprints, timings and out-of-fold predictions through the layers below
    "cli_classification": 6,
    "bagging": 5,
    "cli_lightning": 5,  # LightningCLI over the modules, shared by both tasks' commands
    "cli_inference": 5,  # predict and export: argparse over inference/, routed to by cli.py
    "training": 4,
    "inference": 4,
    "data": 3,
    "models": 3,
    "registry": 2,
    "losses": 1,
    "metrics": 1,
    "weights": 1,
    "precision": 1,
    "cli_arguments": 1,  # the plain commands' argparse: one-line mistakes, defaults shown; imports only errors
    "interrupts": 1,
    "deprecation": 0,
    "errors": 0,
}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _imports(path: Path) -> list[str]:
    """The ``ternaus_zoo`` modules imported at module level (function-level imports are lazy on purpose)."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ternaus_zoo"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("ternaus_zoo")]
    return found


def test_every_part_has_a_layer():
    parts = {
        path.stem if path.parent == PACKAGE else path.relative_to(PACKAGE).parts[0] for path in PACKAGE.rglob("*.py")
    }
    assert parts - {"__init__"} <= set(LAYERS), sorted(parts - set(LAYERS))


def test_imports_run_down_the_layers():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative == Path("__init__.py"):
            continue  # the public API gathers names from every layer
        part = relative.parts[0].removesuffix(".py")
        for module in _imports(path):
            target = _part(module)
            if target == part:
                continue
            if target == "__init__" or LAYERS[target] >= LAYERS[part]:
                violations.append(f"{relative} ({part}, layer {LAYERS[part]}) imports {module}")
    assert not violations, "\n".join(violations)

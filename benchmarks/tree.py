"""The tree a benchmark runs from: its root, its data folder and its git state.

Only the standard library: ``benchmarks.pinned`` uses this while the package in this tree may be half edited.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The data sets' folder: ``TERNAUS_ZOO_DATA``, else ``../shared/data`` beside the project."""
    return Path(os.environ.get("TERNAUS_ZOO_DATA", ROOT.parent / "shared" / "data")).resolve()


def _git(root: Path, *arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def uncommitted_files(root: Path | None = None) -> list[str]:
    """Tracked files of the tree at ``root`` (default: this one) that differ from its commit, staged or not.

    ``benchmarks/results/`` is left out: the benchmarks write there themselves (a ladder rewrites its file after
    every row). Raises ``subprocess.CalledProcessError`` or ``OSError`` outside a git checkout.
    """
    changed = _git(root or ROOT, "diff", "--name-only", "HEAD", "--", ".", ":(exclude)benchmarks/results")
    return changed.splitlines()


def git_commit(root: Path | None = None) -> str:
    """The tree's short commit, ``+uncommitted`` where tracked files outside the results differ from it."""
    try:
        commit = _git(root or ROOT, "rev-parse", "--short", "HEAD")
        return commit + ("+uncommitted" if uncommitted_files(root) else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

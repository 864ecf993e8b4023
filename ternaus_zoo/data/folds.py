"""Deterministic splits of file stems: the benchmark hold-out, K folds (optionally grouped), CSV files.

A split depends only on the set of stems, the seed and the groups, never on the order the stems were
listed in, so the same folder gives the same folds on every machine. ``save_folds``/``load_folds``
write and read the split as ``stem,fold`` lines so that a run can be reproduced exactly; the data
module marks hold-out items with fold :data:`HOLDOUT` (-1) in the same file.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ternaus_zoo.data.errors import format_examples

HOLDOUT = -1
Groups = Mapping[str, Hashable] | Callable[[str], Hashable]


def _unique_sorted(stems: Iterable[str]) -> list[str]:
    stems = list(stems)
    repeated = sorted(stem for stem, count in Counter(stems).items() if count > 1)
    if repeated:
        raise ValueError(f"stems must be unique, repeated: {format_examples(repeated)}")
    return sorted(stems)


def holdout_split(stems: Iterable[str], every: int = 5) -> tuple[list[str], list[str]]:
    """The project's benchmark rule: hold-out ``sorted(stems)[::every]``, the rest for training.

    Returns:
        ``(holdout, rest)``, both sorted. For 1000 Kvasir-SEG stems and ``every=5``: 200 and 800.
    """
    if every < 2:
        raise ValueError(f"every must be >= 2 (every={every} would hold out everything)")
    ordered = _unique_sorted(stems)
    holdout = ordered[::every]
    chosen = set(holdout)
    return holdout, [stem for stem in ordered if stem not in chosen]


def contiguous_groups(stems: Iterable[str], n_blocks: int) -> dict[str, int]:
    """Cut the sorted stems into ``n_blocks`` contiguous blocks of near-equal size: ``stem -> block``.

    For sequences whose neighbours are near-copies (CamVid frames of one video), pass the result as
    ``groups`` to :func:`make_folds` so that each block lies in a single fold.
    """
    ordered = _unique_sorted(stems)
    if not 1 <= n_blocks <= len(ordered):
        raise ValueError(f"n_blocks must be between 1 and the number of stems ({len(ordered)}), got {n_blocks}")
    bounds = np.linspace(0, len(ordered), n_blocks + 1).round().astype(int)
    return {stem: block for block in range(n_blocks) for stem in ordered[bounds[block] : bounds[block + 1]]}


def _group_of(groups: Groups | None, stem: str) -> Hashable:
    if groups is None:
        return stem
    if callable(groups):
        return groups(stem)
    if stem not in groups:
        raise KeyError(f"stem {stem!r} has no group in the groups mapping")
    return groups[stem]


def make_folds(stems: Iterable[str], n_folds: int = 5, seed: int = 0, groups: Groups | None = None) -> dict[str, int]:
    """Assign every stem a fold in ``0..n_folds-1``, deterministically for a seed.

    Groups (all stems of a group go to one fold) are shuffled by ``seed``, then placed, largest first,
    into the fold holding the fewest stems so far. Without ``groups`` every stem is its own group and
    fold sizes differ by at most one. The result does not depend on the order of ``stems``.

    Args:
        stems: unique identifiers (file stems).
        n_folds: number of folds, at least 2 and at most the number of groups.
        seed: different seeds give different assignments.
        groups: ``stem -> group key`` as a mapping or a callable (for example the video a frame
            belongs to, or :func:`contiguous_groups`).

    Returns:
        ``{stem: fold}`` sorted by stem.
    """
    ordered = _unique_sorted(stems)
    members: dict[Hashable, list[str]] = defaultdict(list)
    for stem in ordered:
        members[_group_of(groups, stem)].append(stem)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if n_folds > len(members):
        raise ValueError(f"n_folds={n_folds} exceeds the number of groups ({len(members)}): some folds would be empty")
    # Sorting by (type, text) makes the order independent of the input even for mixed key types.
    keys = sorted(members, key=lambda key: (type(key).__name__, str(key)))
    shuffled = [keys[index] for index in np.random.default_rng(seed).permutation(len(keys))]
    shuffled.sort(key=lambda key: -len(members[key]))  # stable: equal sizes keep the shuffled order
    sizes = [0] * n_folds
    folds: dict[str, int] = {}
    for key in shuffled:
        fold = sizes.index(min(sizes))
        sizes[fold] += len(members[key])
        folds.update(dict.fromkeys(members[key], fold))
    return dict(sorted(folds.items()))


def save_folds(folds: Mapping[str, int], path: str | os.PathLike) -> Path:
    """Write ``{stem: fold}`` as a ``stem,fold`` CSV file (with header, sorted by stem); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["stem", "fold"])
        writer.writerows(sorted((stem, int(fold)) for stem, fold in folds.items()))
    return path


def load_folds(path: str | os.PathLike) -> dict[str, int]:
    """Read a file written by :func:`save_folds`; errors name the file and the line."""
    path = Path(path)
    folds: dict[str, int] = {}
    with path.open(newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header != ["stem", "fold"]:
            raise ValueError(f"{path}: expected the header 'stem,fold', found {header}")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2 or not row[1].lstrip("-").isdigit():
                raise ValueError(f"{path}, line {line}: expected 'stem,fold' with an integer fold, found {row}")
            if row[0] in folds:
                raise ValueError(f"{path}, line {line}: stem {row[0]!r} appears twice")
            folds[row[0]] = int(row[1])
    return folds

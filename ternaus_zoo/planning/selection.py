"""Choose by out-of-fold evidence: the ensemble of bags, the threshold and the mask cleaning.

Everything is scored on the bags' stored out-of-fold (OOF) probabilities, resized back to each image's original
resolution and compared with its mask there, with the validation metrics (:mod:`ternaus_zoo.metrics`): the
objective is the micro Dice of binary masks and the mean IoU over classes otherwise (``../shared/BENCHMARKS.md``),
with the per-image Dice beside it.

* :func:`greedy_ensemble`: Caruana et al.'s forward selection with replacement (ICML 2004): start empty, add the bag
  that raises the score most (a bag may be added again, so the weights come out of the selection), keep the best
  prefix. :func:`select` runs it nested too: chosen on K-1 folds, scored on the fold left out.
* :func:`paired_bootstrap`: the 95 % interval of a change's gain over images resampled with replacement.
* :func:`select`: the table of bags, the ensemble, then the post-processing trials in order (TTA where stored,
  threshold, small components, largest component, holes), each kept only where its interval excludes zero and no
  class's score falls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ternaus_zoo.data import restore_original_size
from ternaus_zoo.inference.postprocessing import PostProcessingStep, apply_steps, component_areas
from ternaus_zoo.metrics import class_labels, confusion_stats, dice_score, iou_score
from ternaus_zoo.planning.bags import OutOfFoldBag

__all__ = [
    "SELECTION_FORMAT",
    "OutOfFoldSet",
    "Pipeline",
    "greedy_ensemble",
    "objective",
    "paired_bootstrap",
    "select",
]

SELECTION_FORMAT = "ternaus_zoo.selection/1"
THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))
AREA_QUANTILES = (0.05, 0.1, 0.25, 0.5)
Threshold = float | tuple[float, ...] | None


@dataclass(frozen=True)
class Pipeline:
    """How OOF probabilities become a mask: the bags' weights (selection counts), the threshold (binary: one
    float; multi-label: one per class; classes: ``None``, the argmax), the cleaning steps and the TTA whose stored
    predictions are used (``"none"``: the plain ones)."""

    members: tuple[int, ...]
    threshold: Threshold
    steps: tuple[PostProcessingStep, ...] = ()
    tta: str = "none"

    @property
    def weights(self) -> np.ndarray:
        counts = np.asarray(self.members, dtype=np.float64)
        return counts / counts.sum()

    def key(self) -> tuple:
        divisor = math.gcd(*self.members)
        return (tuple(count // divisor for count in self.members), self.tta, self.threshold, self.steps)


@dataclass
class OutOfFoldSet:
    """The bags' OOF probabilities of the same images with their masks, and a cache of per-image counts.

    ``probabilities[b][i]``: bag ``b``'s ``(C, h, w)`` of image ``i``; ``masks[i]``: see
    :func:`~ternaus_zoo.planning.bags.load_masks`; ``folds``: ``(N,)``; ``tta``: the TTA every bag also stored its
    predictions under (``None`` otherwise), those in ``tta_probabilities`` (indexed as ``probabilities``).
    """

    mode: str
    num_classes: int
    class_names: list[str]
    stems: list[str]
    folds: np.ndarray
    sizes: list[tuple[int, int]]
    masks: list[np.ndarray] = field(repr=False)
    probabilities: list[list[np.ndarray]] = field(repr=False)
    ignore_index: int | None = None
    tta: str | None = None
    tta_probabilities: list[list[np.ndarray]] = field(default_factory=list, repr=False)
    _cache: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_bags(cls, bags: Sequence[OutOfFoldBag], masks: dict[str, np.ndarray]) -> OutOfFoldSet:
        first = bags[0]
        stems = sorted(first.folds)
        stored = {bag.tta for bag in bags}
        tta = stored.pop() if len(stored) == 1 else None  # every bag under the same TTA
        return cls(
            mode=first.mask_mode,
            num_classes=first.num_classes,
            class_names=class_labels(first.num_classes, first.class_names),
            stems=stems,
            folds=np.array([first.folds[stem] for stem in stems]),
            sizes=[first.original_sizes[stem] for stem in stems],
            masks=[masks[stem] for stem in stems],
            probabilities=[[bag.probabilities[stem] for stem in stems] for bag in bags],
            ignore_index=first.config.get("data", {}).get("ignore_index"),
            tta=tta,
            tta_probabilities=[[bag.tta_probabilities[stem] for stem in stems] for bag in bags] if tta else [],
        )

    def ensemble_probabilities(self, members: Sequence[int], index: int, tta: str = "none") -> torch.Tensor:
        """``(C, H, W)`` float32: the weighted mean of the bags' probabilities of image ``index`` (under ``tta``:
        those stored under it), at its original size (averaged at the stored size when the bags share it: the
        bilinear resize is linear)."""
        if tta not in ("none", self.tta):
            raise ValueError(f"the bags stored no out-of-fold predictions under the TTA {tta!r}")
        source = self.probabilities if tta == "none" else self.tta_probabilities
        weights = np.asarray(members, dtype=np.float64) / sum(members)
        chosen = [(weight, source[bag][index]) for bag, weight in enumerate(weights) if weight > 0]
        size = self.sizes[index]
        if len({array.shape for _, array in chosen}) == 1:
            mean = sum(weight * torch.from_numpy(array).float() for weight, array in chosen)
            return restore_original_size(mean.float(), size)
        return sum(weight * restore_original_size(torch.from_numpy(array).float(), size) for weight, array in chosen)

    def to_mask(self, probabilities: torch.Tensor, threshold: Threshold) -> np.ndarray:
        """Probabilities ``(C, H, W)`` to the mask of :mod:`~ternaus_zoo.inference.postprocessing` (foreground where
        ``probability > threshold``, as ``ternaus-zoo predict`` writes masks)."""
        if self.mode == "classes":
            return probabilities.argmax(0).numpy()
        if self.mode == "binary":
            return (probabilities[0] > threshold).numpy()
        return (probabilities > torch.tensor(threshold)[:, None, None]).numpy()

    def image_counts(self, mask: np.ndarray, index: int) -> np.ndarray:
        """``(C, 3)`` TP, FP, FN of a predicted mask against image ``index``'s ground truth."""
        truth = torch.from_numpy(self.masks[index])
        predicted = torch.from_numpy(mask)
        if self.mode == "classes":
            counts = confusion_stats(
                predicted[None].long(),
                truth[None],
                mode="multiclass",
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
            )
            return torch.stack(counts[:3], -1)[0].numpy()
        if self.mode == "binary":
            predicted, truth = predicted[None], truth[None]
        channels = [
            confusion_stats(p[None].long(), t[None].long(), mode="binary")
            for p, t in zip(predicted, truth, strict=True)
        ]
        return np.stack([torch.cat(counts[:3], 1)[0].numpy() for counts in channels])

    def counts(self, pipelines: Sequence[Pipeline]) -> list[np.ndarray]:
        """``(N, C, 3)`` per-image counts of each pipeline (cached); pipelines sharing their members and TTA share
        one pass over the images, which resizes the probabilities once."""
        missing = [pipeline for pipeline in pipelines if pipeline.key() not in self._cache]
        by_source: dict[tuple[tuple[int, ...], str], list[Pipeline]] = {}
        for pipeline in missing:
            by_source.setdefault(pipeline.key()[:2], []).append(pipeline)
        for (members, tta), group in by_source.items():
            rows: list[list[np.ndarray]] = [[] for _ in group]
            for index in range(len(self.stems)):
                probabilities = self.ensemble_probabilities(members, index, tta)
                for row, pipeline in zip(rows, group, strict=True):
                    mask = apply_steps(self.to_mask(probabilities, pipeline.threshold), pipeline.steps, self.mode)
                    row.append(self.image_counts(mask, index))
            for row, pipeline in zip(rows, group, strict=True):
                self._cache[pipeline.key()] = np.stack(row)
        return [self._cache[pipeline.key()] for pipeline in pipelines]

    def masks_of(self, pipeline: Pipeline) -> list[np.ndarray]:
        """The predicted masks of every image (for component areas)."""
        return [
            apply_steps(
                self.to_mask(self.ensemble_probabilities(pipeline.members, index, pipeline.tta), pipeline.threshold),
                pipeline.steps,
                self.mode,
            )
            for index in range(len(self.stems))
        ]


def objective(totals: np.ndarray, mode: str) -> np.ndarray:
    """The selection score of summed counts ``(..., C, 3)``: micro Dice (binary) or mean IoU over the classes
    present (else), float64 ``(...)``; a class absent from both prediction and truth is left out of the mean."""
    flat = torch.from_numpy(np.asarray(totals).reshape(-1, *np.shape(totals)[-2:]))
    tp, fp, fn = flat.unbind(-1)
    if mode == "binary":
        score = dice_score(tp, fp, fn, reduction="none", dtype=torch.float64)[:, 0]
    else:
        per_class = iou_score(tp, fp, fn, reduction="none", dtype=torch.float64)
        score = torch.where(tp + fp + fn > 0, per_class, torch.nan).nanmean(1)
    return score.numpy().reshape(np.shape(totals)[:-2])


def class_scores(counts: np.ndarray) -> np.ndarray:
    """Per-class IoU ``(C,)`` of per-image counts ``(N, C, 3)`` summed (NaN for an absent class)."""
    tp, fp, fn = torch.from_numpy(counts).unbind(-1)
    return iou_score(tp, fp, fn, reduction="per_class", dtype=torch.float64).numpy()


def per_image_dice(counts: np.ndarray) -> np.ndarray:
    """``(N,)``: each image's Dice, averaged over the classes (1.0 where a class is absent from both)."""
    tp, fp, fn = torch.from_numpy(counts).unbind(-1)
    return dice_score(tp, fp, fn, reduction="none", dtype=torch.float64).mean(1).numpy()


def summarise(counts: np.ndarray, mode: str, names: Sequence[str]) -> dict[str, Any]:
    """The scores of per-image counts ``(N, C, 3)``: ``score`` (the objective), micro ``dice`` and ``iou``,
    ``dice_per_image``, and ``iou_per_class`` by name for several classes."""
    tp, fp, fn = torch.from_numpy(counts).unbind(-1)
    summary = {
        "score": float(objective(counts.sum(0), mode)),
        "dice": float(dice_score(tp, fp, fn, "micro", dtype=torch.float64)),
        "iou": float(iou_score(tp, fp, fn, "micro", dtype=torch.float64)),
        "dice_per_image": float(per_image_dice(counts).mean()),
    }
    if len(names) > 1:
        summary["iou_per_class"] = {
            name: _finite(value) for name, value in zip(names, class_scores(counts), strict=True)
        }
    return summary


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def paired_bootstrap(
    before: np.ndarray, after: np.ndarray, mode: str, samples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """The gain of ``after`` over ``before`` (per-image counts ``(N, C, 3)`` of the same images) and its 95 %
    percentile interval over ``samples`` resamplings of the images with replacement (the same draws for both).

    Returns:
        ``(gain, low, high)``.
    """
    count = len(before)
    draws = np.random.default_rng(seed).integers(0, count, size=(samples, count))
    weights = np.zeros((samples, count))
    np.add.at(weights, (np.arange(samples)[:, None], draws), 1.0)
    shape = before.shape[1:]
    gains = objective((weights @ after.reshape(count, -1)).reshape(samples, *shape), mode) - objective(
        (weights @ before.reshape(count, -1)).reshape(samples, *shape), mode
    )
    gain = float(objective(after.sum(0), mode) - objective(before.sum(0), mode))
    low, high = np.nanpercentile(gains, [2.5, 97.5])
    return gain, float(low), float(high)


def greedy_ensemble(
    score_of: Callable[[tuple[int, ...]], float], n_bags: int, max_steps: int
) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
    """Forward selection with replacement: ``max_steps`` times add the bag whose addition scores best (ties: the
    first bag), then keep the best prefix (ties: the shortest).

    Args:
        score_of: selection counts ``(n_bags,)`` -> score (higher is better).

    Returns:
        ``(counts, history)``: the chosen counts and, per step, ``{"members", "added", "score", "candidates"}``.
    """
    counts = [0] * n_bags
    history: list[dict[str, Any]] = []
    for _ in range(max_steps):
        candidates = []
        for bag in range(n_bags):
            trial = tuple(count + (index == bag) for index, count in enumerate(counts))
            candidates.append(score_of(trial))
        added = int(np.argmax(candidates))  # the first among equal scores
        counts[added] += 1
        history.append({"members": list(counts), "added": added, "score": candidates[added], "candidates": candidates})
    best = max(range(len(history)), key=lambda step: (history[step]["score"], -step))
    return tuple(history[best]["members"]), history


def _trial_record(
    data: OutOfFoldSet, name: str, before: Pipeline, after: Pipeline, samples: int, seed: int, **details: Any
) -> dict[str, Any]:
    """Score ``after`` against ``before``: the gain, its interval, the class scores, the images it changed most."""
    old, new = data.counts([before, after])
    gain, low, high = paired_bootstrap(old, new, data.mode, samples, seed)
    old_classes, new_classes = class_scores(old), class_scores(new)
    fallen = [
        name_
        for name_, a, b in zip(data.class_names, old_classes, new_classes, strict=True)
        if not math.isnan(a) and (math.isnan(b) or b < a - 1e-12)
    ]
    change = per_image_dice(new) - per_image_dice(old)
    order = np.argsort(change, kind="stable")
    kept = low > 0 and not fallen
    return {
        "step": name,
        **details,
        "score_before": float(objective(old.sum(0), data.mode)),
        "score": float(objective(new.sum(0), data.mode)),
        "gain": gain,
        "interval": [low, high],
        "classes_fallen": fallen,
        "kept": bool(kept),
        "helped": [{"image": data.stems[i], "dice_gain": float(change[i])} for i in order[::-1][:5] if change[i] > 0],
        "hurt": [{"image": data.stems[i], "dice_gain": float(change[i])} for i in order[:5] if change[i] < 0],
    }


def _nearest_best(scores: Sequence[float], preferred: float, positions: Sequence[float]) -> int:
    """Index of the highest score; among equal ones the position nearest ``preferred`` (the current setting)."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    tied = np.flatnonzero(scores >= scores.max() - 1e-12)
    return int(tied[np.argmin(np.abs(np.asarray(positions)[tied] - preferred))])


def _best(data: OutOfFoldSet, pipelines: list[Pipeline]) -> tuple[Pipeline, list[float]]:
    """The best-scoring pipeline (ties: the first) and every score."""
    scores = [float(objective(counts.sum(0), data.mode)) for counts in data.counts(pipelines)]
    return pipelines[_nearest_best(scores, 0, range(len(scores)))], scores


def _threshold_trial(data: OutOfFoldSet, current: Pipeline, samples: int, seed: int) -> tuple[dict, Pipeline]:
    if data.mode == "binary":
        grid = [replace(current, threshold=threshold) for threshold in THRESHOLD_GRID]
        scores = [float(objective(counts.sum(0), data.mode)) for counts in data.counts(grid)]
        candidate = grid[_nearest_best(scores, current.threshold, THRESHOLD_GRID)]
    else:  # multi-label: each class its own threshold; the mean IoU is highest where each class's IoU is
        uniform = [replace(current, threshold=(value,) * data.num_classes) for value in THRESHOLD_GRID]
        per_class = np.stack([class_scores(counts) for counts in data.counts(uniform)])  # (grid, C)
        chosen = tuple(
            THRESHOLD_GRID[_nearest_best(column, preferred, THRESHOLD_GRID)]
            for column, preferred in zip(per_class.T, current.threshold, strict=True)
        )
        candidate = replace(current, threshold=chosen)
        scores = [float(np.nanmean(row)) for row in per_class]
    record = _trial_record(data, "threshold", current, candidate, samples, seed, value=candidate.threshold,
                           grid=dict(zip(map(str, THRESHOLD_GRID), scores, strict=True)))  # fmt: skip
    return record, candidate


def _area_grid(data: OutOfFoldSet, current: Pipeline) -> list[float]:
    """Fractions of the image area at quantiles of the OOF foreground components' areas."""
    fractions = []
    for mask in data.masks_of(current):
        foreground = mask if data.mode == "binary" else mask.any(0) if data.mode == "multilabel" else mask != 0
        fractions.append(component_areas(foreground) / foreground.size)
    fractions = np.concatenate(fractions) if fractions else np.zeros(0)
    if fractions.size == 0:
        return []
    return sorted({float(value) for value in np.quantile(fractions, AREA_QUANTILES) if value > 0})


def _cleaning_candidates(data: OutOfFoldSet, current: Pipeline) -> list[tuple[str, list[PostProcessingStep]]]:
    """The trials after the threshold, in order: each a name and its candidate steps (the best one is tried)."""
    several = data.mode != "binary"
    trials = [
        ("remove_small", [PostProcessingStep("remove_small", "foreground", f) for f in _area_grid(data, current)]),
        ("keep_largest", [PostProcessingStep("keep_largest", "foreground")]),
    ]
    if several:
        trials.append(("keep_largest", [PostProcessingStep("keep_largest", "per_class")]))
    trials.append(("fill_holes", [PostProcessingStep("fill_holes", "per_class" if several else "foreground")]))
    return trials


def select(
    bags: Sequence[OutOfFoldBag],
    masks: dict[str, np.ndarray],
    max_steps: int = 10,
    samples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score each bag, choose the ensemble (nested and on all folds), then the threshold and the cleaning steps.

    Args:
        bags: finished bags sharing folds and task (:func:`~ternaus_zoo.planning.bags.check_same_task`).
        masks: ``{stem: mask}`` from :func:`~ternaus_zoo.planning.bags.load_masks`.
        max_steps: forward-selection steps (ensemble size with repeats).
        samples: bootstrap resamplings of each trial's interval.
        seed: the bootstrap's seed.

    Returns:
        The content of ``selection.json``: ``bags`` (each scored alone), ``ensemble`` (weights, history, the nested
        score and its gain over the best single bag with its interval), ``trials`` (every one, kept or not) and
        ``final`` (the pipeline to ship: weights, threshold, TTA, kept steps, its score).
    """
    data = OutOfFoldSet.from_bags(bags, masks)
    n_bags = len(bags)
    threshold: Threshold = None
    if data.mode == "binary":
        threshold = bags[0].threshold
    elif data.mode == "multilabel":
        threshold = (bags[0].threshold,) * data.num_classes
    singles = [Pipeline(tuple(int(b == bag) for b in range(n_bags)), threshold) for bag in range(n_bags)]
    table = [
        {"bag": str(bag.path), "name": bag.name, **summarise(counts, data.mode, data.class_names)}
        for bag, counts in zip(bags, data.counts(singles), strict=True)
    ]
    best_single = int(np.argmax([row["score"] for row in table]))

    def scorer(images: np.ndarray) -> Callable[[tuple[int, ...]], float]:
        def score_of(members: tuple[int, ...]) -> float:
            (counts,) = data.counts([Pipeline(members, threshold)])
            return float(objective(counts[images].sum(0), data.mode))

        return score_of

    members, history = greedy_ensemble(scorer(np.ones(len(data.stems), bool)), n_bags, max_steps)
    nested_counts = np.zeros_like(data.counts([singles[0]])[0])
    per_fold = []
    for fold in sorted(set(data.folds.tolist())):
        chosen, _ = greedy_ensemble(scorer(data.folds != fold), n_bags, max_steps)
        held_out = data.folds == fold
        (counts,) = data.counts([Pipeline(chosen, threshold)])
        nested_counts[held_out] = counts[held_out]
        per_fold.append(
            {"fold": fold, "members": list(chosen), "score": float(objective(counts[held_out].sum(0), data.mode))}
        )
    (single_counts,) = data.counts([singles[best_single]])
    gain, low, high = paired_bootstrap(single_counts, nested_counts, data.mode, samples, seed)
    ensemble = {
        "members": {bag.name: count for bag, count in zip(bags, members, strict=True)},
        "weights": {
            bag.name: float(weight) for bag, weight in zip(bags, Pipeline(members, threshold).weights, strict=True)
        },
        "history": history,
        "score": summarise(data.counts([Pipeline(members, threshold)])[0], data.mode, data.class_names),
        "nested": {
            **summarise(nested_counts, data.mode, data.class_names),
            "per_fold": per_fold,
            "best_single": bags[best_single].name,
            "gain_over_best_single": gain,
            "interval": [low, high],
        },
    }

    current = Pipeline(members, threshold)
    trials: list[dict[str, Any]] = []
    if data.tta is None:
        reason = "the bags stored no out-of-fold predictions under one TTA (ternaus-zoo bag --oof_tta d4 stores them)"
        trials.append({"step": "tta", "tried": False, "reason": reason})
    else:
        candidate = replace(current, tta=data.tta)
        record = _trial_record(data, "tta", current, candidate, samples, seed, value=data.tta)
        trials.append(record)
        current = candidate if record["kept"] else current
    if data.mode == "classes":
        trials.append({"step": "threshold", "tried": False, "reason": "class masks take the argmax"})
    else:
        record, candidate = _threshold_trial(data, current, samples, seed)
        trials.append(record)
        current = candidate if record["kept"] else current
    for name, steps in _cleaning_candidates(data, current):
        if not steps:
            trials.append({"step": name, "tried": False, "reason": "no predicted component to measure"})
            continue
        grid = [replace(current, steps=(*current.steps, step)) for step in steps]
        candidate, scores = _best(data, grid)
        details: dict[str, Any] = {"value": candidate.steps[-1].to_dict()}
        if len(grid) > 1:
            details["grid"] = {str(step.min_fraction): score for step, score in zip(steps, scores, strict=True)}
        record = _trial_record(data, name, current, candidate, samples, seed, **details)
        trials.append(record)
        current = candidate if record["kept"] else current
    final_counts = data.counts([current])[0]
    return {
        "format": SELECTION_FORMAT,
        "task": {"mask_mode": data.mode, "num_classes": data.num_classes, "class_names": data.class_names},
        "objective": "micro Dice" if data.mode == "binary" else "mean IoU",
        "n_images": len(data.stems),
        "bootstrap": {"samples": samples, "seed": seed, "interval": 0.95},
        "bags": table,
        "ensemble": ensemble,
        "trials": trials,
        "final": {
            "members": ensemble["members"],
            "weights": ensemble["weights"],
            "tta": current.tta,
            "threshold": list(current.threshold) if isinstance(current.threshold, tuple) else current.threshold,
            "postprocessing": [step.to_dict() for step in current.steps],
            **summarise(final_counts, data.mode, data.class_names),
        },
    }

"""Multi-label classification metrics: macro F1 / F-beta / recall, per-class thresholds and their search.

Inputs are ``(N, C)`` logits or probabilities and ``(N, C)`` 0/1 targets. A label is predicted where
``probability >= threshold``, with one scalar threshold or one per class (a ``(C,)`` tensor). The scores are
computed here from per-label counts (and cross-checked against torchmetrics in the tests): torchmetrics' multi-label
functions take only a scalar threshold, predict where ``probability > threshold``, apply a sigmoid only when values
look like logits, and refuse ``num_labels=1``; the threshold search needs the same F-beta on counts anyway.

Zero division: a label with no positive targets and no positive predictions has ``F = 0/0``; it scores
``zero_division`` (default ``1.0``: nothing to find and nothing found, as the segmentation metrics' empty/empty rule)
and stays in the macro mean. Recall ``tp / (tp + fn)`` of a label without positive targets is ``zero_division`` too.
torchmetrics and scikit-learn default to ``zero_division=0``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "MultilabelMetrics",
    "apply_thresholds",
    "multilabel_f1",
    "multilabel_fbeta",
    "multilabel_recall",
    "search_thresholds",
]

Average = Literal["macro", "none"]


def _probabilities(output: Tensor, from_logits: bool) -> Tensor:
    if output.ndim != 2:
        raise ValueError(f"multi-label output must be (N, C), got {tuple(output.shape)}")
    output = output.detach()
    if not output.is_floating_point():
        raise ValueError(f"multi-label output must hold logits or probabilities, got {output.dtype}")
    output = _upcast_half(output)
    return torch.sigmoid(output) if from_logits else output


def _upcast_half(values: Tensor) -> Tensor:
    # In float16/bfloat16 the sigmoid rounds logits near 0 to 0.5 and the thresholds get rounded to that precision.
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def _check_targets(target: Tensor, shape: torch.Size) -> Tensor:
    if target.shape != shape:
        raise ValueError(f"target {tuple(target.shape)} and output {tuple(shape)} shapes differ")
    if ((target != 0) & (target != 1)).any():
        raise ValueError("multi-label targets must be 0/1")
    return target.detach().bool()


def apply_thresholds(output: Tensor, threshold: float | Tensor = 0.5, *, from_logits: bool = True) -> Tensor:
    """Binarise multi-label scores: label ``c`` of sample ``n`` is predicted where ``probability >= threshold[c]``.

    Args:
        output: ``(N, C)`` logits (``from_logits=True``) or probabilities.
        threshold: a float, or a ``(C,)`` tensor of per-class thresholds (probabilities).
        from_logits: whether to apply a sigmoid first.

    Returns:
        ``(N, C)`` ``torch.long`` 0/1 predictions.
    """
    probs = _probabilities(output, from_logits)
    threshold = torch.as_tensor(threshold, dtype=probs.dtype, device=probs.device)
    if threshold.ndim > 1 or (threshold.ndim == 1 and threshold.shape[0] != probs.shape[1]):
        raise ValueError(f"threshold must be a float or a ({probs.shape[1]},) tensor, got {tuple(threshold.shape)}")
    return (probs >= threshold).long()


def multilabel_fbeta(
    output: Tensor,
    target: Tensor,
    *,
    beta: float = 1.0,
    threshold: float | Tensor = 0.5,
    from_logits: bool = True,
    average: Average = "macro",
    zero_division: float = 1.0,
) -> Tensor:
    """F-beta score of multi-label predictions, ``(1 + b²) tp / ((1 + b²) tp + b² fn + fp)`` per label.

    Args:
        output: ``(N, C)`` logits or probabilities.
        target: ``(N, C)`` 0/1.
        beta: recall is ``beta`` times as important as precision (``2.0`` for F2).
        threshold: a float or a ``(C,)`` tensor, see :func:`apply_thresholds`.
        from_logits: whether ``output`` holds logits.
        average: ``"macro"`` (scalar: unweighted mean over labels) or ``"none"`` (``(C,)``).
        zero_division: score of a label with ``tp + fp + fn == 0``; see the module docstring.

    Returns:
        A float32 scalar (``"macro"``) or ``(C,)`` tensor (``"none"``).
    """
    tp, fp, fn = _label_counts(output, target, threshold, from_logits)
    return _average(_fbeta_from_counts(tp, fp, fn, beta, zero_division), average)


def multilabel_f1(
    output: Tensor,
    target: Tensor,
    *,
    threshold: float | Tensor = 0.5,
    from_logits: bool = True,
    average: Average = "macro",
    zero_division: float = 1.0,
) -> Tensor:
    """F1 score of multi-label predictions: :func:`multilabel_fbeta` with ``beta=1``."""
    return multilabel_fbeta(
        output,
        target,
        beta=1.0,
        threshold=threshold,
        from_logits=from_logits,
        average=average,
        zero_division=zero_division,
    )


def multilabel_recall(
    output: Tensor,
    target: Tensor,
    *,
    threshold: float | Tensor = 0.5,
    from_logits: bool = True,
    average: Average = "macro",
    zero_division: float = 1.0,
) -> Tensor:
    """Recall ``tp / (tp + fn)`` of multi-label predictions; arguments as in :func:`multilabel_fbeta`.

    A label without positive targets scores ``zero_division``.
    """
    tp, _, fn = _label_counts(output, target, threshold, from_logits)
    tp, positives = tp.float(), (tp + fn).float()  # float32: MPS has no float64
    recall = torch.where(positives > 0, tp / positives.clamp_min(1), torch.full_like(tp, zero_division))
    return _average(recall, average)


def _label_counts(
    output: Tensor, target: Tensor, threshold: float | Tensor, from_logits: bool
) -> tuple[Tensor, Tensor, Tensor]:
    # By hand: torchmetrics has no per-class thresholds (see the module docstring); three sums per label.
    preds = apply_thresholds(output, threshold, from_logits=from_logits).bool()
    target = _check_targets(target, preds.shape)
    tp = (preds & target).sum(0)
    return tp, preds.sum(0) - tp, target.sum(0) - tp


def _average(scores: Tensor, average: Average) -> Tensor:
    if average == "macro":
        return scores.mean().float()
    if average == "none":
        return scores.float()
    raise ValueError(f"average must be 'macro' or 'none', got {average!r}")


def _fbeta_from_counts(tp: Tensor, fp: Tensor, fn: Tensor, beta: float, zero_division: float) -> Tensor:
    beta2 = float(beta) ** 2
    num = (1.0 + beta2) * tp.float()  # float32: MPS has no float64
    den = num + beta2 * fn.float() + fp.float()
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.full_like(den, zero_division))


def search_thresholds(
    probs: Tensor,
    targets: Tensor,
    beta: float = 1.0,
    candidates: Tensor | None = None,
    *,
    tie_break: Literal["middle", "lowest"] = "middle",
    zero_division: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """For each class, the candidate threshold that maximises that class's F-beta on validation predictions.

    Vectorised over classes and candidates: the probabilities of each class are sorted once, and a binary search
    (``torch.searchsorted``) gives for every candidate how many samples, and how many positives, lie at or above it.

    Args:
        probs: ``(N, C)`` probabilities (not logits).
        targets: ``(N, C)`` 0/1.
        beta: F-beta's beta (1 for F1, 2 for F2).
        candidates: ``(K,)`` thresholds shared by all classes, or ``(C, K)`` per class (e.g. ``probs.T`` to try
            every observed probability). Default: ``torch.linspace(0.05, 0.95, 19)``, i.e. 0.05, 0.10, ..., 0.95.
        tie_break: among the candidates that reach the best score (sorted ascending, ``m`` of them), ``"middle"``
            picks the ``ceil(m / 2)``-th (the lower median: predictions on the validation set are the same on a
            plateau, and its middle is the farthest from both edges); ``"lowest"`` picks the first.
        zero_division: F-beta of a class with ``tp + fp + fn == 0`` (a class without positives, predicted nowhere);
            with the default ``1.0`` such a class gets a threshold above all its probabilities when the candidates
            allow one, with ``0.0`` every candidate ties.

    Returns:
        ``(thresholds, best_scores)``: ``(C,)`` tensors; thresholds in ``probs``' dtype (float32 for float16 and
        bfloat16 ``probs``), scores float32.
        ``apply_thresholds(probs, thresholds, from_logits=False)`` reproduces ``best_scores`` as per-class F-beta.
    """
    # By hand: neither torchmetrics nor smp searches per-class thresholds.
    if probs.ndim != 2 or probs.shape != targets.shape:
        raise ValueError(f"probs and targets must both be (N, C), got {tuple(probs.shape)}, {tuple(targets.shape)}")
    if tie_break not in ("middle", "lowest"):
        raise ValueError(f"tie_break must be 'middle' or 'lowest', got {tie_break!r}")
    num_samples, num_classes = probs.shape
    probs = _upcast_half(probs.detach()).T.contiguous()  # (C, N)
    positive = _check_targets(targets, targets.shape).T.long()  # (C, N)

    if candidates is None:
        candidates = torch.linspace(0.05, 0.95, 19)
    candidates = candidates.detach().to(device=probs.device, dtype=probs.dtype)
    if candidates.ndim == 1:
        candidates = candidates.expand(num_classes, -1)
    if candidates.ndim != 2 or candidates.shape[0] != num_classes or candidates.shape[1] == 0:
        raise ValueError(f"candidates must be (K,) or ({num_classes}, K), got {tuple(candidates.shape)}")
    candidates = candidates.sort(dim=1).values.contiguous()  # (C, K), ascending

    sorted_probs, order = probs.sort(dim=1)  # (C, N), ascending
    sorted_positive = positive.gather(1, order)
    # positives_from[c, i]: positives among the samples at sorted positions i..N-1 (zero at i = N).
    positives_from = torch.cat([sorted_positive.flip(1).cumsum(1).flip(1), positive.new_zeros(num_classes, 1)], dim=1)
    below = torch.searchsorted(sorted_probs, candidates)  # (C, K): samples with probability < candidate
    tp = positives_from.gather(1, below)
    fp = (num_samples - below) - tp
    fn = positive.sum(1, keepdim=True) - tp
    scores = _fbeta_from_counts(tp, fp, fn, beta, zero_division)  # (C, K)

    best = scores.max(dim=1).values
    tied = scores >= best[:, None] - 1e-12
    rank = (tied.sum(1, keepdim=True) + 1) // 2 if tie_break == "middle" else torch.ones_like(best[:, None]).long()
    pick = (tied & (tied.cumsum(1) == rank)).long().argmax(1, keepdim=True)  # the first (only) such index
    return candidates.gather(1, pick).squeeze(1), best.float()


class MultilabelMetrics(Metric):
    """Macro F1, F2 and recall of multi-label predictions over a data set, as a ``torchmetrics.Metric``.

    The states keep every probability and target (``(N, C)``, gathered across processes with ``"cat"``), so that
    the thresholds can be tuned on the whole validation set at the end of an epoch with :meth:`tuned_thresholds`.

    Args:
        num_labels: ``C``.
        threshold: a float or a ``(C,)`` tensor of per-class thresholds; stored as the float32 buffer
            ``self.threshold``, which may be replaced by a tensor, e.g. the result of :meth:`tuned_thresholds`.
        from_logits: whether ``update`` receives logits (a sigmoid is applied) or probabilities.
        zero_division: score of a label with a zero denominator; see :mod:`ternaus_zoo.metrics.classification`.
        **kwargs: passed to ``torchmetrics.Metric``.

    ``compute()`` returns float32 scalars ``f1_macro``, ``f2_macro`` and ``recall_macro``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    probs: list[Tensor]
    target: list[Tensor]
    threshold: Tensor

    def __init__(
        self,
        num_labels: int,
        threshold: float | Tensor = 0.5,
        from_logits: bool = True,
        zero_division: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        if threshold.ndim > 1 or (threshold.ndim == 1 and threshold.shape[0] != num_labels):
            raise ValueError(f"threshold must be a float or a ({num_labels},) tensor, got {tuple(threshold.shape)}")
        self.num_labels = num_labels
        self.from_logits = from_logits
        self.zero_division = zero_division
        self.register_buffer("threshold", threshold, persistent=False)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: ``output`` ``(N, C)`` logits or probabilities, ``target`` ``(N, C)`` 0/1."""
        probs = _probabilities(output, self.from_logits)
        if probs.shape[1] != self.num_labels:
            raise ValueError(f"expected {self.num_labels} labels, got output {tuple(probs.shape)}")
        self.probs.append(probs.float())
        self.target.append(_check_targets(target, probs.shape).float())

    def _gathered(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.probs), dim_zero_cat(self.target)

    def compute(self) -> dict[str, Tensor]:
        """Macro scores at ``self.threshold`` over everything seen since the last ``reset()``."""
        probs, target = self._gathered()
        kwargs = {"threshold": self.threshold, "from_logits": False, "zero_division": self.zero_division}
        return {
            "f1_macro": multilabel_fbeta(probs, target, beta=1.0, **kwargs),
            "f2_macro": multilabel_fbeta(probs, target, beta=2.0, **kwargs),
            "recall_macro": multilabel_recall(probs, target, **kwargs),
        }

    def tuned_thresholds(
        self, beta: float = 1.0, candidates: Tensor | None = None, tie_break: Literal["middle", "lowest"] = "middle"
    ) -> tuple[Tensor, Tensor]:
        """:func:`search_thresholds` on the probabilities and targets gathered from all processes.

        Returns:
            ``(thresholds, best_scores)``, each ``(C,)``. Does not change ``self.threshold``.
        """
        if self._is_synced:  # already inside a synchronised context
            probs, target = self._gathered()
        else:
            with self.sync_context(
                dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
            ):
                probs, target = self._gathered()
        return search_thresholds(
            probs, target, beta=beta, candidates=candidates, tie_break=tie_break, zero_division=self.zero_division
        )

"""Multi-label metrics: hand-made values, per-class thresholds, threshold search, torchmetrics cross-checks."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.functional.classification import (
    binary_fbeta_score,
    multilabel_f1_score,
    multilabel_fbeta_score,
    multilabel_recall,
)

from ternaus_zoo.metrics import (
    MultilabelMetrics,
    apply_thresholds,
    multilabel_f1,
    multilabel_fbeta,
    search_thresholds,
)
from ternaus_zoo.metrics import multilabel_recall as our_recall

# Hand case, 4 samples x 3 labels (probabilities). At threshold 0.5:
#   label 0: probs .9 .7 .3 .1, target 1 1 1 0 -> pred 1 1 0 0: tp 2, fp 0, fn 1
#            F1 = 2*2/(2*2+1) = 4/5, F2 = 5*2/(5*2+4*1) = 5/7, recall 2/3
#   label 1: probs .2 .8 .6 .4, target 0 1 0 1 -> pred 0 1 1 0: tp 1, fp 1, fn 1: F1 = 2/4, F2 = 5/(5+4+1) = 1/2, R 1/2
#   label 2: probs .6 .1 .4 .2, target 0 0 0 0 -> pred 1 0 0 0: tp 0, fp 1, fn 0: F1 = F2 = 0, recall 0/0 -> 1
#   macro: F1 (4/5 + 1/2 + 0)/3 = 13/30, F2 (5/7 + 1/2 + 0)/3 = 17/42, recall (2/3 + 1/2 + 1)/3 = 13/18
PROBS = torch.tensor([[0.9, 0.2, 0.6], [0.7, 0.8, 0.1], [0.3, 0.6, 0.4], [0.1, 0.4, 0.2]])
TARGET = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 0]])

# Threshold search hand case, 6 samples x 3 classes, default candidates 0.05, 0.10, ..., 0.95 (no probability sits
# on a candidate, so float rounding cannot move a sample across one):
#   class 0: probs .9 .8 .72 | .28 .2 .1 (positives | negatives): F1 = 1 for t in (.28, .72] -> 9 candidates
#            .30 ... .70; middle (5th of 9) = .50, lowest = .30; F-beta 1 for every beta
#   class 1: positives .97 .62 .42 .22, negatives .33 .05:
#            t <= .05: tp 4 fp 2 -> F1 8/10;  t in (.05, .22] (.10 .15 .20): tp 4 fp 1 -> F1 8/9 (best)
#            (.22, .33] (.25 .30): tp 3 fp 1 fn 1 -> 6/8;  (.33, .42] (.35 .40): tp 3 fn 1 -> 6/7
#            (.42, .62]: tp 2 fn 2 -> 4/6;  (.62, .97): tp 1 fn 3 -> 2/5
#            best F1 8/9 at .10 .15 .20: middle .15, lowest .10; F2 there 5*4/(5*4+1) = 20/21 (vs 10/11 at .05,
#            15/19 at .35), so the same thresholds
#   class 2: no positives, probs .12 .22 .32 .42 .52 .62: F = 0/0 -> zero_division 1 for t > .62 (7 candidates
#            .65 ... .95): middle (4th) .80, lowest .65; 0 below. With zero_division 0, all 19 tie at 0: middle .50
SEARCH_PROBS = torch.tensor(
    [
        [0.90, 0.97, 0.12],
        [0.80, 0.62, 0.22],
        [0.72, 0.42, 0.32],
        [0.28, 0.22, 0.42],
        [0.20, 0.33, 0.52],
        [0.10, 0.05, 0.62],
    ]
)
SEARCH_TARGET = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_hand_case_macro_scores():
    kwargs = {"threshold": 0.5, "from_logits": False}
    assert multilabel_f1(PROBS, TARGET, **kwargs).item() == pytest.approx(13 / 30)
    assert multilabel_fbeta(PROBS, TARGET, beta=2.0, **kwargs).item() == pytest.approx(17 / 42)
    assert our_recall(PROBS, TARGET, **kwargs).item() == pytest.approx(13 / 18)
    per_label = multilabel_f1(PROBS, TARGET, average="none", **kwargs)
    assert per_label.tolist() == pytest.approx([4 / 5, 1 / 2, 0.0])
    # zero_division=0 (torchmetrics' and scikit-learn's default): label 2's recall 0/0 -> 0: (2/3 + 1/2 + 0)/3
    assert our_recall(PROBS, TARGET, zero_division=0.0, **kwargs).item() == pytest.approx(7 / 18)


def test_logits_equal_probabilities():
    logits = torch.logit(PROBS)
    assert multilabel_f1(logits, TARGET).item() == pytest.approx(13 / 30)
    assert torch.equal(apply_thresholds(logits, 0.5), apply_thresholds(PROBS, 0.5, from_logits=False))


def test_per_class_thresholds():
    # thresholds .25 .5 .7: label 0 pred 1 1 1 0 -> tp 3 -> F1 1; label 1 unchanged 1/2;
    # label 2 predicted nowhere, no positives -> 0/0 -> 1 (zero_division=1) or 0
    thresholds = torch.tensor([0.25, 0.5, 0.7])
    assert apply_thresholds(PROBS, thresholds, from_logits=False).T.tolist() == [
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ]
    f1 = multilabel_f1(PROBS, TARGET, threshold=thresholds, from_logits=False)
    assert f1.item() == pytest.approx((1 + 1 / 2 + 1) / 3)
    f1 = multilabel_f1(PROBS, TARGET, threshold=thresholds, from_logits=False, zero_division=0.0)
    assert f1.item() == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_single_label():
    # label 0 of the hand case alone (torchmetrics' multilabel functions refuse num_labels=1): F1 4/5, recall 2/3
    assert multilabel_f1(PROBS[:, :1], TARGET[:, :1], from_logits=False).item() == pytest.approx(4 / 5)
    assert our_recall(PROBS[:, :1], TARGET[:, :1], from_logits=False).item() == pytest.approx(2 / 3)


def test_probability_equal_to_threshold_is_positive():
    assert apply_thresholds(torch.tensor([[0.5, 0.4999]]), 0.5, from_logits=False).tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: apply_thresholds(PROBS, torch.tensor([0.5, 0.5])), r"\(3,\) tensor"),
        (lambda: multilabel_f1(PROBS, TARGET[:, :2]), "shapes differ"),
        (lambda: multilabel_f1(PROBS, TARGET * 2), "0/1"),
        (lambda: multilabel_f1(PROBS[0], TARGET[0]), r"\(N, C\)"),
        (lambda: search_thresholds(PROBS, TARGET, candidates=torch.rand(2, 5)), "candidates"),
        (lambda: search_thresholds(PROBS, TARGET, tie_break="highest"), "tie_break"),
        (lambda: MultilabelMetrics(3, threshold=torch.rand(4)), "threshold"),
    ],
)
def test_bad_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_scores_match_torchmetrics(seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(30, 5, generator=gen)
    target = (torch.rand(30, 5, generator=gen) < 0.3).long()
    target[:, 4] = 0  # a label without positives: its recall is 0/0
    probs = torch.sigmoid(logits)
    for zero_division in (0.0, 1.0):
        tm = {"num_labels": 5, "threshold": 0.4, "zero_division": zero_division}
        ours = {"threshold": 0.4, "zero_division": zero_division}
        assert torch.allclose(multilabel_f1(logits, target, **ours), multilabel_f1_score(probs, target, **tm))
        assert torch.allclose(
            multilabel_fbeta(logits, target, beta=2.0, **ours), multilabel_fbeta_score(probs, target, beta=2.0, **tm)
        )
        assert torch.allclose(our_recall(logits, target, **ours), multilabel_recall(probs, target, **tm))


@pytest.mark.parametrize(
    ("tie_break", "zero_division", "thresholds"),
    [
        ("middle", 1.0, [0.50, 0.15, 0.80]),
        ("lowest", 1.0, [0.30, 0.10, 0.65]),
        ("middle", 0.0, [0.50, 0.15, 0.50]),
    ],
)
def test_search_hand_case(tie_break, zero_division, thresholds):
    found, best = search_thresholds(SEARCH_PROBS, SEARCH_TARGET, tie_break=tie_break, zero_division=zero_division)
    assert found.tolist() == pytest.approx(thresholds)
    assert best.tolist() == pytest.approx([1.0, 8 / 9, zero_division])
    _, best_f2 = search_thresholds(SEARCH_PROBS, SEARCH_TARGET, beta=2.0, tie_break=tie_break)
    assert best_f2.tolist() == pytest.approx([1.0, 20 / 21, 1.0])


def test_search_explicit_and_per_class_candidates():
    # class 1 with candidates .1 .3 .5 .7 .9: F1 8/9, 6/8, 4/6, 2/5, 2/5 -> .1
    thresholds, best = search_thresholds(
        SEARCH_PROBS, SEARCH_TARGET, candidates=torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7])
    )
    assert thresholds[1].item() == pytest.approx(0.1)
    assert best[1].item() == pytest.approx(8 / 9)
    # every observed probability as a candidate ((C, N) = probs.T): class 1's best cut is at its lowest positive, .22
    thresholds, best = search_thresholds(SEARCH_PROBS, SEARCH_TARGET, candidates=SEARCH_PROBS.T, tie_break="lowest")
    assert thresholds[:2].tolist() == pytest.approx([0.72, 0.22])
    assert best[:2].tolist() == pytest.approx([1.0, 8 / 9])


def _brute_force_search(probs, target, beta, candidates, zero_division):
    """Loop over classes and candidates, scoring with torchmetrics; lower-median tie-break."""
    thresholds, scores = [], []
    for c in range(probs.shape[1]):
        per_candidate = []
        for t in candidates.tolist():
            preds = apply_thresholds(probs[:, c : c + 1], t, from_logits=False)[:, 0]
            score = binary_fbeta_score(preds, target[:, c], beta=beta, zero_division=zero_division)
            per_candidate.append(score.item())
        best = max(per_candidate)
        tied = [t for t, s in zip(candidates.tolist(), per_candidate, strict=True) if s >= best - 1e-6]
        thresholds.append(tied[(len(tied) + 1) // 2 - 1])
        scores.append(best)
    return torch.tensor(thresholds), torch.tensor(scores)


@pytest.mark.parametrize(("seed", "beta", "zero_division"), [(0, 1.0, 1.0), (1, 2.0, 1.0), (2, 1.0, 0.0)])
def test_search_matches_brute_force(seed, beta, zero_division):
    gen = torch.Generator().manual_seed(seed)
    probs = (torch.rand(40, 6, generator=gen) * 100).round() / 100  # ties, and values on candidates
    target = (torch.rand(40, 6, generator=gen) < probs).long()
    target[:, 5] = 0
    candidates = torch.linspace(0.05, 0.95, 19)
    thresholds, best = search_thresholds(probs, target, beta=beta, zero_division=zero_division)
    expected_thresholds, expected_best = _brute_force_search(probs, target, beta, candidates, zero_division)
    assert torch.allclose(best, expected_best)
    assert torch.allclose(thresholds, expected_thresholds)
    # the thresholds found reproduce the scores, through the public scoring function
    rescored = multilabel_fbeta(
        probs, target, beta=beta, threshold=thresholds, from_logits=False, average="none", zero_division=zero_division
    )
    assert torch.allclose(rescored, best)


# ---------------------------------------------------------------- MultilabelMetrics


def _random_batches(seed: int, sizes=(5, 3, 8, 4)):
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for n in sizes:
        logits = torch.randn(n, 4, generator=gen)
        batches.append((logits, (torch.rand(n, 4, generator=gen) < torch.sigmoid(logits)).long()))
    return batches


def test_metric_hand_case():
    metric = MultilabelMetrics(3, from_logits=False)
    metric.update(PROBS[:2], TARGET[:2])
    metric.update(PROBS[2:], TARGET[2:])
    result = metric.compute()
    assert set(result) == {"f1_macro", "f2_macro", "recall_macro"}
    assert {k: v.item() for k, v in result.items()} == pytest.approx(
        {"f1_macro": 13 / 30, "f2_macro": 17 / 42, "recall_macro": 13 / 18}
    )


def test_metric_per_class_threshold_and_tuning():
    metric = MultilabelMetrics(3, threshold=torch.tensor([0.25, 0.5, 0.7]), from_logits=False)
    metric.update(PROBS, TARGET)
    assert metric.compute()["f1_macro"].item() == pytest.approx(5 / 6)  # see test_per_class_thresholds

    metric = MultilabelMetrics(3)
    metric.update(torch.logit(SEARCH_PROBS[:4]), SEARCH_TARGET[:4])
    metric.update(torch.logit(SEARCH_PROBS[4:]), SEARCH_TARGET[4:])
    thresholds, best = metric.tuned_thresholds()
    assert thresholds.tolist() == pytest.approx([0.50, 0.15, 0.80])
    assert best.tolist() == pytest.approx([1.0, 8 / 9, 1.0])
    metric.threshold = thresholds  # tuned thresholds in use: the macro F1 is the mean of the best scores
    assert metric.compute()["f1_macro"].item() == pytest.approx(best.mean().item())


def test_metric_accumulation_merge_and_sync(as_rank0_of_two):
    batches = _random_batches(seed=0)
    one_shot = MultilabelMetrics(4, threshold=0.4)
    one_shot.update(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    expected = one_shot.compute()
    expected_tuned = one_shot.tuned_thresholds(beta=2.0)

    accumulated = MultilabelMetrics(4, threshold=0.4)
    for batch in batches:
        accumulated.update(*batch)
    for key, value in accumulated.compute().items():
        assert torch.allclose(value, expected[key]), key

    merged, other = MultilabelMetrics(4, threshold=0.4), MultilabelMetrics(4, threshold=0.4)
    for i, batch in enumerate(batches):
        (merged if i < 2 else other).update(*batch)
    merged.merge_state(other)
    for key, value in merged.compute().items():
        assert torch.allclose(value, expected[key]), key

    rank0, rank1 = MultilabelMetrics(4, threshold=0.4), MultilabelMetrics(4, threshold=0.4)
    for i, batch in enumerate(batches):
        (rank0 if i < 2 else rank1).update(*batch)
    as_rank0_of_two(rank0, rank1)
    for key, value in rank0.compute().items():
        assert torch.allclose(value, expected[key]), key
    tuned = rank0.tuned_thresholds(beta=2.0)  # gathers the other rank's predictions too
    assert torch.equal(tuned[0], expected_tuned[0]) and torch.allclose(tuned[1], expected_tuned[1])
    assert len(rank0.probs) == 2 and rank0.probs[0].shape == (5, 4)  # the local state is restored

"""Segmentation metrics from confusion statistics: hand-made cases, edge cases, cross-checks with smp/torchmetrics."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
from torchmetrics.functional.classification import (
    binary_jaccard_index,
    binary_stat_scores,
    multiclass_jaccard_index,
    multiclass_stat_scores,
)

from ternaus_zoo.metrics import binary_summary, confusion_stats, dice_score, iou_score, mean_iou

from .cases import BINARY_PROBS, BINARY_TARGET, MC_PRED, MC_TARGET


def _stack(*stats):
    return torch.stack([s.flatten() for s in stats])


def test_binary_hand_case_stats_and_scores():
    tp, fp, fn, tn = confusion_stats(BINARY_PROBS, BINARY_TARGET, mode="binary", from_logits=False)
    assert tp.shape == (3, 1) and tp.dtype == torch.long
    assert _stack(tp, fp, fn, tn).tolist() == [[2, 0, 0], [1, 0, 4], [1, 0, 1], [2, 6, 1]]
    assert iou_score(tp, fp, fn).item() == pytest.approx(2 / 9)
    assert dice_score(tp, fp, fn).item() == pytest.approx(4 / 11)
    assert iou_score(tp, fp, fn, "per_image").item() == pytest.approx(1 / 2)
    assert dice_score(tp, fp, fn, "per_image").item() == pytest.approx(5 / 9)
    assert iou_score(tp, fp, fn, "none").flatten().tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert dice_score(tp, fp, fn, "per_class").tolist() == pytest.approx([4 / 11])


def test_binary_logits_channel_dim_and_threshold_equality():
    logits = torch.logit(BINARY_PROBS)[:, None]  # (B, 1, H, W) logits, target (B, H, W)
    from_logits = confusion_stats(logits, BINARY_TARGET, mode="binary")
    from_probs = confusion_stats(BINARY_PROBS, BINARY_TARGET[:, None], mode="binary", from_logits=False)
    for a, b in zip(from_logits, from_probs, strict=True):
        assert torch.equal(a, b)
    # probability == threshold is positive (as smp, unlike torchmetrics' strict ">")
    tp, fp, _, _ = confusion_stats(torch.full((1, 2, 2), 0.5), torch.ones(1, 2, 2), mode="binary", from_logits=False)
    assert tp.item() == 4 and fp.item() == 0
    # threshold 0.75 drops image 0's 0.7 prediction (a true positive at (1, 1)): tp 1, fp 1, fn 2
    image0 = BINARY_PROBS[:1], BINARY_TARGET[:1]
    tp, fp, fn, _ = confusion_stats(*image0, mode="binary", from_logits=False, threshold=0.75)
    assert (tp.item(), fp.item(), fn.item()) == (1, 1, 2)


def test_binary_hard_predictions_and_bool_targets():
    pred = (BINARY_PROBS >= 0.5).long()
    stats = confusion_stats(pred, BINARY_TARGET.bool(), mode="binary", threshold=0.99)  # threshold unused for ints
    expected = confusion_stats(BINARY_PROBS, BINARY_TARGET, mode="binary", from_logits=False)
    for a, b in zip(stats, expected, strict=True):
        assert torch.equal(a, b)


def test_binary_ignore_index():
    target = BINARY_TARGET.clone()
    target[0, 0, 0] = 255  # image 0's true positive at (0, 0) is ignored: tp 1, fp 1, fn 1, tn 2 -> IoU 1/3
    target[2, 1, 2] = 255  # image 2's only positive is ignored: tp 0, fp 4, fn 0, tn 1 -> IoU 0
    tp, fp, fn, tn = confusion_stats(BINARY_PROBS, target, mode="binary", from_logits=False, ignore_index=255)
    assert _stack(tp, fp, fn, tn).tolist() == [[1, 0, 0], [1, 0, 4], [1, 0, 0], [2, 6, 1]]
    assert iou_score(tp, fp, fn, "none").flatten().tolist() == pytest.approx([1 / 3, 1.0, 0.0])


def test_empty_empty_image_counts_one_but_not_in_micro():
    empty = torch.zeros(2, 1, 4, 4)
    tp, fp, fn, _ = confusion_stats(empty, empty.long(), mode="binary", from_logits=False)
    assert iou_score(tp, fp, fn, "none").tolist() == [[1.0], [1.0]]
    assert iou_score(tp, fp, fn, "per_image").item() == 1.0
    assert dice_score(tp, fp, fn, "micro").item() == 1.0  # nothing anywhere: perfect, not 0/0
    assert math.isnan(iou_score(tp, fp, fn, "per_class").item())  # but no per-class IoU is defined
    # one empty/empty image next to a wrong one: per image (1 + 0)/2, micro 0/16
    pred = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[:, None]
    tp, fp, fn, _ = confusion_stats(pred, torch.zeros(2, 1, 4, 4).long(), mode="binary", from_logits=False)
    assert iou_score(tp, fp, fn, "per_image").item() == 0.5
    assert iou_score(tp, fp, fn, "micro").item() == 0.0


def test_multiclass_hand_case():
    tp, fp, fn, tn = confusion_stats(MC_PRED, MC_TARGET, mode="multiclass", num_classes=4, ignore_index=255)
    assert tp.shape == (1, 4)
    assert _stack(tp, fp, fn, tn).tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 4, 5]]
    per_class = iou_score(tp, fp, fn, "per_class")
    assert per_class[:3].tolist() == pytest.approx([1 / 3, 1 / 3, 1.0])
    assert math.isnan(per_class[3].item())
    assert mean_iou(tp, fp, fn).item() == pytest.approx(5 / 9)
    assert iou_score(tp, fp, fn, "micro").item() == pytest.approx(3 / 7)
    assert dice_score(tp, fp, fn, "micro").item() == pytest.approx(6 / 10)
    assert iou_score(tp, fp, fn, "per_image").item() == pytest.approx(2 / 3)
    assert dice_score(tp, fp, fn, "per_class")[:3].tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_multiclass_scores_equal_indices():
    logits = torch.nn.functional.one_hot(MC_PRED, 4).permute(0, 3, 1, 2).float() * 3 - 1  # argmax == MC_PRED
    from_scores = confusion_stats(logits, MC_TARGET, mode="multiclass", ignore_index=255)  # num_classes from C
    from_indices = confusion_stats(MC_PRED, MC_TARGET, mode="multiclass", num_classes=4, ignore_index=255)
    for a, b in zip(from_scores, from_indices, strict=True):
        assert torch.equal(a, b)


def test_mean_iou_all_absent_is_nan():
    zeros = torch.zeros(2, 3, dtype=torch.long)
    assert math.isnan(mean_iou(zeros, zeros, zeros).item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output": torch.rand(2, 3, 4, 4), "target": torch.zeros(2, 3, 4, 4), "mode": "binary"}, "binary mode"),
        ({"output": torch.rand(2, 4, 4), "target": torch.full((2, 4, 4), 2), "mode": "binary"}, "0/1"),
        ({"output": torch.rand(2, 4, 4), "target": torch.zeros(2, 5, 4), "mode": "binary"}, "shapes differ"),
        ({"output": torch.rand(2, 4, 4), "target": torch.zeros(2, 4, 4), "mode": "multilabel"}, "mode"),
        (
            {"output": MC_PRED, "target": MC_TARGET, "mode": "multiclass", "num_classes": 4, "ignore_index": 0},
            "outside",
        ),
        ({"output": MC_PRED, "target": MC_TARGET, "mode": "multiclass", "num_classes": 4}, r"\[0, 4\)"),
        ({"output": MC_PRED, "target": MC_TARGET, "mode": "multiclass"}, "num_classes is required"),
        ({"output": torch.rand(1, 3, 2, 3), "target": MC_TARGET, "mode": "multiclass", "num_classes": 4}, "channels"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        confusion_stats(**kwargs)


def test_bad_reduction_raises():
    tp = torch.ones(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="reduction"):
        iou_score(tp, tp, tp, reduction="macro")


# ---------------------------------------------------------------- cross-checks on random inputs


def _random_multiclass(seed: int, batch=4, classes=5, size=6, ignore=255):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, size, size, generator=gen)
    target = torch.randint(0, classes, (batch, size, size), generator=gen)
    target[torch.rand(batch, size, size, generator=gen) < 0.15] = ignore
    return logits, target


def _random_binary(seed: int, batch=4, size=6):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(batch, 1, size, size, generator=gen)
    target = (torch.rand(batch, 1, size, size, generator=gen) < 0.4).long()
    return probs, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_stats_match_smp_and_torchmetrics(seed):
    logits, target = _random_multiclass(seed)
    tp, fp, fn, tn = confusion_stats(logits, target, mode="multiclass", ignore_index=255)

    smp_stats = smp.metrics.get_stats(logits.argmax(1), target, mode="multiclass", num_classes=5, ignore_index=255)
    for ours, theirs in zip((tp, fp, fn, tn), smp_stats, strict=True):
        assert torch.equal(ours, theirs)

    tm = multiclass_stat_scores(  # (B, C, 5): tp, fp, tn, fn, support
        logits, target, num_classes=5, average="none", multidim_average="samplewise", ignore_index=255
    )
    assert torch.equal(torch.stack([tp, fp, tn, fn], -1), tm[..., :4])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_stats_match_smp_and_torchmetrics(seed):
    probs, target = _random_binary(seed)
    tp, fp, fn, tn = confusion_stats(probs, target, mode="binary", from_logits=False)
    smp_stats = smp.metrics.get_stats(probs, target, mode="binary", threshold=0.5)
    for ours, theirs in zip((tp, fp, fn, tn), smp_stats, strict=True):
        assert torch.equal(ours, theirs)

    target[:, :, :2] = 255  # smp has no ignore_index in binary mode; torchmetrics does
    tp, fp, fn, tn = confusion_stats(probs, target, mode="binary", from_logits=False, ignore_index=255)
    tm = binary_stat_scores(probs, target, multidim_average="samplewise", ignore_index=255)  # (B, 5)
    assert torch.equal(torch.cat([tp, fp, tn, fn], 1), tm[:, :4])


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_match_smp_reductions(seed):
    logits, target = _random_multiclass(seed)
    target[0] = 0  # image 0: only class 0, so classes 1-4 are empty/empty where not predicted
    logits[0, 0] += 10
    stats = confusion_stats(logits, target, mode="multiclass", ignore_index=255)
    tp, fp, fn, tn = stats
    assert (tp + fp + fn == 0).any()  # the empty/empty rule is exercised
    for ours, theirs in ((iou_score, smp.metrics.iou_score), (dice_score, smp.metrics.f1_score)):
        assert torch.allclose(ours(tp, fp, fn, "micro"), theirs(tp, fp, fn, tn, reduction="micro"))
        # our per-image rule == smp's "macro-imagewise" with zero_division=1 (smp's default "warn" gives 0)
        expected = theirs(tp, fp, fn, tn, reduction="macro-imagewise", zero_division=1.0)
        assert torch.allclose(ours(tp, fp, fn, "per_image"), expected)
        assert torch.allclose(ours(tp, fp, fn, "none"), theirs(tp, fp, fn, tn, reduction="none", zero_division=1.0))
    # every class occurs somewhere, so mean IoU == smp's "macro" (per class over the set, then the mean)
    assert torch.allclose(mean_iou(tp, fp, fn), smp.metrics.iou_score(tp, fp, fn, tn, reduction="macro"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_torchmetrics_jaccard(seed):
    logits, target = _random_multiclass(seed)
    tp, fp, fn, _ = confusion_stats(logits, target, mode="multiclass", ignore_index=255)
    kwargs = {"num_classes": 5, "ignore_index": 255}
    assert torch.allclose(mean_iou(tp, fp, fn), multiclass_jaccard_index(logits, target, average="macro", **kwargs))
    assert torch.allclose(
        iou_score(tp, fp, fn, "micro"), multiclass_jaccard_index(logits, target, average="micro", **kwargs)
    )
    assert torch.allclose(
        iou_score(tp, fp, fn, "per_class"), multiclass_jaccard_index(logits, target, average="none", **kwargs)
    )

    probs, binary_target = _random_binary(seed)
    binary_target[:, :, 0] = 255
    tp, fp, fn, _ = confusion_stats(probs, binary_target, mode="binary", from_logits=False, ignore_index=255)
    expected = binary_jaccard_index(probs, binary_target, threshold=0.5, ignore_index=255)
    assert torch.allclose(iou_score(tp, fp, fn, "micro"), expected)


def test_absent_class_definitions_differ_from_libraries():
    # The hand case's class 3 is absent. Ours: NaN per class, excluded from mean IoU (5/9).
    tp, fp, fn, tn = confusion_stats(MC_PRED, MC_TARGET, mode="multiclass", num_classes=4, ignore_index=255)
    # torchmetrics: the same mean (absent classes excluded), but 0 (zero_division) in the per-class table
    tm_kwargs = {"num_classes": 4, "ignore_index": 255}
    assert multiclass_jaccard_index(MC_PRED, MC_TARGET, average="macro", **tm_kwargs).item() == pytest.approx(5 / 9)
    assert multiclass_jaccard_index(MC_PRED, MC_TARGET, average="none", **tm_kwargs)[3].item() == 0.0
    # smp "macro": the absent class counts as zero_division: (1/3 + 1/3 + 1 + 0)/4 = 5/12, or with 1: 2/3
    assert smp.metrics.iou_score(tp, fp, fn, tn, reduction="macro", zero_division=0).item() == pytest.approx(5 / 12)
    assert smp.metrics.iou_score(tp, fp, fn, tn, reduction="macro", zero_division=1).item() == pytest.approx(2 / 3)
    # smp "micro" on an all-empty set is 0/0 = NaN (no zero_division handling); ours is 1.0
    zeros = torch.zeros(1, 1, dtype=torch.long)
    assert math.isnan(smp.metrics.iou_score(zeros, zeros, zeros, zeros, reduction="micro").item())
    assert iou_score(zeros, zeros, zeros, "micro").item() == 1.0


def test_float64_scores_keep_apart_what_float32_ties():
    """Two thresholds one false positive apart over 100 million pixels: equal in float32, ordered in float64."""
    tp, fp, fn = (
        torch.tensor([[100_000_000], [100_000_000]]),
        torch.tensor([[1], [2]]),
        torch.zeros(2, 1, dtype=torch.long),
    )
    single = iou_score(tp, fp, fn, "none")
    assert single.dtype == torch.float32 and single[0] == single[1]
    double = iou_score(tp, fp, fn, "none", dtype=torch.float64)
    assert double.dtype == torch.float64 and double[0] > double[1]
    assert (
        dice_score(tp, fp, fn, "micro", dtype=torch.float64).item() == 400_000_000 / 400_000_003
    )  # summed over both rows
    assert mean_iou(tp, fp, fn, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="floating-point"):
        iou_score(tp, fp, fn, dtype=torch.long)


def test_binary_summary_on_counts_worked_out_by_hand():
    """Image 1: prediction 1100 against truth 1010 (tp fp fn tn = 1 1 1 1); image 2: 1111 against 1110 (3 1 0 0).
    Pooled: tp 4, fp 2, fn 1, tn 1."""
    prediction = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).view(2, 1, 2, 2)
    truth = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 0]]).view(2, 1, 2, 2)
    summary = binary_summary(*confusion_stats(prediction, truth, mode="binary", from_logits=False))
    expected = {
        "dice": 8 / 11,
        "iou": 4 / 7,
        "dice_per_image": (2 / 4 + 6 / 7) / 2,
        "iou_background": 1 / 4,
        "mean_iou": (4 / 7 + 1 / 4) / 2,
    }
    assert summary == pytest.approx(expected, abs=1e-6)

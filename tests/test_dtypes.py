"""Every loss and metric in float32, float64, float16/bfloat16 and under CPU autocast, against float64 (issue 16).

The reference is always the float64 computation of the *same* values: for low-precision logits, their exact cast to
float64. Tolerances (``torch.testing.assert_close``):

* losses, float32 inputs: ``rtol=1e-5, atol=1e-6`` on the value, ``rtol=1e-4, atol=1e-6`` on the gradient;
* losses, float64 inputs: torch's float64 defaults (``rtol=1e-7, atol=1e-7``);
* losses, half inputs and under autocast: ``rtol=1e-4, atol=1e-5`` on the value (computed in float32, so
  float32 rounding only; a loss computed in bfloat16 is off by ~1e-3);
* metrics: confusion counts and F-scores exactly equal; per-image means ``rtol=1e-6``; tuned thresholds
  ``atol=1e-6`` (float32 against float64 candidates).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ternaus_zoo.losses import LOSSES, build_loss
from ternaus_zoo.metrics import (
    MultilabelMetrics,
    SegmentationMetrics,
    apply_thresholds,
    confusion_stats,
    dice_score,
    iou_score,
    mean_iou,
    multilabel_fbeta,
    multilabel_recall,
    search_thresholds,
)

HALF = (torch.bfloat16, torch.float16)
IGNORE = 255
NUM_CLASSES = 4
NUM_LABELS = 5


def _inputs(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits and targets: (2, 1, 16, 16) binary, (2, 4, 16, 16) multi-class, (8, 5) multi-label."""
    generator = torch.Generator().manual_seed(seed)
    if kind.startswith("binary"):
        logits = torch.randn(2, 1, 16, 16, generator=generator) * 3
        target = (torch.rand(2, 1, 16, 16, generator=generator) > 0.6).float()
    elif kind.startswith("multiclass"):
        logits = torch.randn(2, NUM_CLASSES, 16, 16, generator=generator) * 3
        target = torch.randint(0, NUM_CLASSES, (2, 16, 16), generator=generator)
    else:
        logits = torch.randn(8, NUM_LABELS, generator=generator) * 3
        target = (torch.rand(8, NUM_LABELS, generator=generator) > 0.5).float()
    if kind.endswith("ignore"):
        ignored = torch.rand(target.shape, generator=generator) < 0.2
        target = target.masked_fill(ignored, IGNORE)
    return logits, target


_KIND = {"binary": "binary", "multiclass": "multiclass", "multilabel": "multilabel"}
LOSS_CASES = {name: (lambda name=name: build_loss(name), _KIND[cls.task]) for name, cls in LOSSES.items()}
LOSS_CASES |= {
    "bce+jaccard": (lambda: build_loss({"bce": 0.5, "jaccard": 0.5}), "binary"),
    "bce+lovasz_hinge,ignore": (
        lambda: build_loss({"bce": 0.5, "lovasz_hinge": 0.5}, ignore_index=IGNORE),
        "binary_ignore",
    ),
    "lovasz_hinge,batch": (lambda: build_loss({"lovasz_hinge": {"per_image": False}}), "binary"),
    "dice,per_image,log": (lambda: build_loss({"dice": {"per_image": True, "log_loss": True}}), "binary"),
    "ce+lovasz_softmax,ignore": (
        lambda: build_loss({"ce": 0.5, "lovasz_softmax": 0.5}, ignore_index=IGNORE),
        "multiclass_ignore",
    ),
    "lovasz_softmax,all,per_image": (
        lambda: build_loss({"lovasz_softmax": {"classes": "all", "per_image": True}}),
        "multiclass",
    ),
    "ce_jaccard,weights,ignore": (
        lambda: build_loss({"ce_jaccard": {"class_weights": [1.0, 2.0, 0.5, 1.0]}}, ignore_index=IGNORE),
        "multiclass_ignore",
    ),
    "focal,alpha": (lambda: build_loss({"focal": {"alpha": [0.25, 0.5, 0.75, 1.0]}}), "multiclass"),
    "weighted_bce,weights": (
        lambda: build_loss({"weighted_bce": {"class_weights": [1, 2, 3, 4, 5], "pos_weight": [2, 1, 1, 1, 3]}}),
        "multilabel",
    ),
}

VALUE_TOLERANCE = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float64: {},
    torch.bfloat16: {"rtol": 1e-4, "atol": 1e-5},
    torch.float16: {"rtol": 1e-4, "atol": 1e-5},
}


def _reference(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 loss of ``logits``' values and its gradient."""
    leaf = logits.detach().double().requires_grad_()
    value = loss(leaf, target)
    value.backward()
    return value.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF], ids=str)
@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_loss_in_each_dtype_matches_float64(case, dtype):
    make, kind = LOSS_CASES[case]
    loss = make()
    logits, target = _inputs(kind)
    logits = logits.to(dtype).requires_grad_()
    expected, expected_grad = _reference(loss, logits, target)

    value = loss(logits, target)
    assert value.dtype == (torch.float32 if dtype in HALF else dtype)
    torch.testing.assert_close(value.detach().double(), expected, **VALUE_TOLERANCE[dtype])
    value.backward()
    assert logits.grad.dtype == dtype
    assert torch.isfinite(logits.grad).all()
    if dtype != torch.float16:  # float16 gradients flush the smallest entries to 0
        grad_tolerance = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {}
        if dtype == torch.bfloat16:
            grad_tolerance = {"rtol": 1e-2, "atol": 1e-4}  # the gradient itself is rounded to bfloat16
        torch.testing.assert_close(logits.grad.double(), expected_grad, **grad_tolerance)


def _autocast_or_skip(dtype: torch.dtype) -> None:
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = nn.functional.conv2d(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 1, 1))
    except (RuntimeError, TypeError) as error:
        pytest.skip(f"CPU autocast to {dtype} is not supported by this torch build: {error}")
    if out.dtype != dtype:
        pytest.skip(f"CPU autocast to {dtype} leaves conv2d in {out.dtype} on this torch build")


@pytest.mark.parametrize("amp_dtype", HALF, ids=str)
@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_loss_under_cpu_autocast_is_float32(case, amp_dtype):
    _autocast_or_skip(amp_dtype)
    make, kind = LOSS_CASES[case]
    loss = make()
    inputs, target = _inputs(kind)
    inputs.requires_grad_()
    channels = inputs.shape[1]
    head = nn.Conv2d(channels, channels, 1) if inputs.ndim == 4 else nn.Linear(channels, channels)
    with torch.no_grad():  # identity: the logits are the inputs, rounded to amp_dtype
        head.weight.copy_(torch.eye(channels).view_as(head.weight))
        head.bias.zero_()

    with torch.autocast("cpu", dtype=amp_dtype):
        logits = head(inputs)
        value = loss(logits, target)
    assert logits.dtype == amp_dtype
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    expected, _ = _reference(loss, logits, target)
    torch.testing.assert_close(value.detach().double(), expected, **VALUE_TOLERANCE[amp_dtype])
    value.backward()
    assert inputs.grad.dtype == torch.float32 and head.weight.grad.dtype == torch.float32
    assert torch.isfinite(inputs.grad).all() and torch.isfinite(head.weight.grad).all()
    assert inputs.grad.abs().sum() > 0


# --- metrics ---------------------------------------------------------------------------------------------------------

METRIC_DTYPES = [torch.float32, torch.float64, *HALF]


def _near_threshold_logits(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Logits of scale 0.01: many probabilities lie within half-precision rounding of 0.5."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.01


def _probs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _assert_counts_equal(got, expected) -> None:
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.long
        assert torch.equal(g, e)


def _assert_scores_equal(tp, fp, fn, ref_tp, ref_fp, ref_fn) -> None:
    for reduction in ("micro", "per_image", "per_class", "none"):
        for score in (iou_score, dice_score):
            got = score(tp, fp, fn, reduction=reduction)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, score(ref_tp, ref_fp, ref_fn, reduction=reduction), rtol=0, atol=0)
    torch.testing.assert_close(mean_iou(tp, fp, fn), mean_iou(ref_tp, ref_fp, ref_fn), rtol=0, atol=0)
    # the scores are computed in float32 (no float64 on MPS): within float32 rounding of the exact float64 ratios
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn), 1.0)
    dice = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 1.0)
    torch.testing.assert_close(iou_score(ref_tp, ref_fp, ref_fn, reduction="none").double(), iou, rtol=1e-6, atol=0)
    torch.testing.assert_close(dice_score(ref_tp, ref_fp, ref_fn, reduction="none").double(), dice, rtol=1e-6, atol=0)
    micro = tp.sum() / (tp + fp + fn).sum()
    torch.testing.assert_close(iou_score(ref_tp, ref_fp, ref_fn, reduction="micro").double(), micro, rtol=1e-6, atol=0)


class _Float64Ops(TorchDispatchMode):
    """Records every aten op that returns a float64 tensor (an op Apple MPS cannot run)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, (tuple, list)) else [result]
        if any(isinstance(out, torch.Tensor) and out.dtype == torch.float64 for out in outputs):
            self.ops.append(str(func))
        return result


def test_metrics_and_losses_run_no_float64_op_on_float32_inputs():
    """On float32 (or half) inputs nothing is computed in float64, so the same code runs on MPS."""
    binary_logits, binary_target = _inputs("binary")
    class_logits, class_target = _inputs("multiclass_ignore")
    label_logits, label_target = _inputs("multilabel")
    with _Float64Ops() as recorder:
        for make, kind in LOSS_CASES.values():
            logits, target = _inputs(kind)
            logits.requires_grad_()
            make()(logits, target).backward()
        segmentation = SegmentationMetrics(num_classes=NUM_CLASSES, ignore_index=IGNORE)
        segmentation.update(class_logits, class_target)
        segmentation.compute()
        binary = SegmentationMetrics(num_classes=1)
        binary.update(binary_logits, binary_target.long())
        binary.compute()
        labels = MultilabelMetrics(NUM_LABELS)
        labels.update(label_logits.half(), label_target.long())
        labels.compute()
        labels.tuned_thresholds(beta=2.0)
        multilabel_recall(label_logits, label_target)
        search_thresholds(label_logits.sigmoid(), label_target.long(), beta=1.0)
    assert recorder.ops == []


@pytest.mark.parametrize("dtype", METRIC_DTYPES, ids=str)
@pytest.mark.parametrize(("from_logits", "threshold"), [(True, 0.5), (False, 0.35), (False, 0.7)])
def test_binary_confusion_stats_match_float64(dtype, from_logits, threshold):
    shape = (4, 1, 16, 16)
    output = (_near_threshold_logits(shape, 1) if from_logits else _probs(shape, 1)).to(dtype)
    target = (_probs(shape, 2) > 0.5).long()
    target[0, 0, 0] = IGNORE
    kwargs = {"mode": "binary", "from_logits": from_logits, "threshold": threshold, "ignore_index": IGNORE}
    stats = confusion_stats(output, target, **kwargs)
    expected = confusion_stats(output.double(), target, **kwargs)
    _assert_counts_equal(stats, expected)
    _assert_scores_equal(*stats[:3], *expected[:3])


@pytest.mark.parametrize("dtype", METRIC_DTYPES, ids=str)
def test_multiclass_confusion_stats_match_float64(dtype):
    output = _near_threshold_logits((2, NUM_CLASSES, 16, 16), 3).to(dtype)
    target = torch.randint(0, NUM_CLASSES, (2, 16, 16), generator=torch.Generator().manual_seed(4))
    target[:, :2] = IGNORE
    stats = confusion_stats(output, target, mode="multiclass", ignore_index=IGNORE)
    expected = confusion_stats(output.double(), target, mode="multiclass", ignore_index=IGNORE)
    _assert_counts_equal(stats, expected)
    _assert_scores_equal(*stats[:3], *expected[:3])


LABEL_THRESHOLDS = torch.tensor([0.3, 0.35, 0.45, 0.55, 0.7])


@pytest.mark.parametrize("dtype", METRIC_DTYPES, ids=str)
@pytest.mark.parametrize(("from_logits", "threshold"), [(True, 0.5), (False, 0.35), (False, LABEL_THRESHOLDS)])
def test_multilabel_scores_match_float64(dtype, from_logits, threshold):
    shape = (256, NUM_LABELS)
    output = (_near_threshold_logits(shape, 5) if from_logits else _probs(shape, 5)).to(dtype)
    target = (_probs(shape, 6) > 0.5).long()
    kwargs = {"threshold": threshold, "from_logits": from_logits}
    assert torch.equal(apply_thresholds(output, **kwargs), apply_thresholds(output.double(), **kwargs))
    for average in ("macro", "none"):
        for beta in (1.0, 2.0):
            got = multilabel_fbeta(output, target, beta=beta, average=average, **kwargs)
            assert got.dtype == torch.float32
            expected = multilabel_fbeta(output.double(), target, beta=beta, average=average, **kwargs)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        got = multilabel_recall(output, target, average=average, **kwargs)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, multilabel_recall(output.double(), target, average=average, **kwargs))


@pytest.mark.parametrize("dtype", METRIC_DTYPES, ids=str)
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_search_thresholds_matches_float64(dtype, beta):
    probs = _probs((256, NUM_LABELS), 7).to(dtype)
    target = (_probs((256, NUM_LABELS), 8) > 0.6).long()
    thresholds, scores = search_thresholds(probs, target, beta=beta)
    expected_thresholds, expected_scores = search_thresholds(probs.double(), target, beta=beta)
    assert thresholds.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(thresholds.double(), expected_thresholds, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=0)


def _assert_no_float64_state(metric) -> None:
    """Apple MPS has no float64: no state may be float64, whatever the inputs."""
    for name, value in metric.metric_state.items():
        for tensor in value if isinstance(value, list) else [value]:
            assert tensor.dtype != torch.float64, f"state {name} is float64"


@pytest.mark.parametrize("dtype", METRIC_DTYPES, ids=str)
@pytest.mark.parametrize("num_classes", [1, NUM_CLASSES])
def test_segmentation_metrics_match_float64(dtype, num_classes):
    channels = 1 if num_classes == 1 else num_classes
    metric = SegmentationMetrics(num_classes=num_classes, ignore_index=IGNORE)
    all_stats = []
    for seed in range(3):
        output = _near_threshold_logits((3, channels, 8, 8), 10 + seed).to(dtype)
        target = torch.randint(0, max(num_classes, 2), (3, 8, 8), generator=torch.Generator().manual_seed(20 + seed))
        target[0, 0] = IGNORE
        if num_classes == 1:
            target = target.unsqueeze(1)
        metric.update(output, target)
        mode = "binary" if num_classes == 1 else "multiclass"
        all_stats.append(confusion_stats(output.double(), target, mode=mode, ignore_index=IGNORE))
    _assert_no_float64_state(metric)
    result = metric.compute()
    tp, fp, fn, _ = (torch.cat(parts) for parts in zip(*all_stats, strict=True))
    assert torch.equal(metric.tp, tp.sum(0)) and torch.equal(metric.fp, fp.sum(0)) and torch.equal(metric.fn, fn.sum(0))
    # The float64 reference of the per-image means: exact ratios of the counts, averaged in float64.
    iou = (tp.double() / (tp + fp + fn).double()).nan_to_num(1.0)
    dice = (2 * tp.double() / (2 * tp + fp + fn).double()).nan_to_num(1.0)
    for key, reference in (("iou_per_image", iou.mean()), ("dice_per_image", dice.mean())):
        assert result[key].dtype == torch.float32
        torch.testing.assert_close(result[key].double(), reference, rtol=1e-6, atol=0)
    micro = tp.sum().double() / (tp + fp + fn).sum().double()
    torch.testing.assert_close(result["iou"].double(), micro, rtol=1e-6, atol=0)


def test_segmentation_per_image_sums_stay_exact_over_many_images():
    metric = SegmentationMetrics(num_classes=1)
    generator = torch.Generator().manual_seed(30)
    outputs = torch.randn(2000, 1, 3, 3, generator=generator)
    targets = (torch.rand(2000, 1, 3, 3, generator=generator) > 0.5).long()
    for output, target in zip(outputs.split(50), targets.split(50), strict=True):
        metric.update(output, target)
    tp, fp, fn, _ = confusion_stats(outputs.double(), targets, mode="binary")
    expected = (tp.double() / (tp + fp + fn).double()).nan_to_num(1.0).mean()
    torch.testing.assert_close(metric.compute()["iou_per_image"].double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", METRIC_DTYPES, ids=str)
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("threshold", [0.5, LABEL_THRESHOLDS], ids=["0.5", "per_label"])
def test_multilabel_metrics_match_float64(dtype, from_logits, threshold):
    metric = MultilabelMetrics(NUM_LABELS, threshold=threshold, from_logits=from_logits)
    outputs, targets = [], []
    for seed in range(3):
        shape = (64, NUM_LABELS)
        output = (_near_threshold_logits(shape, 40 + seed) if from_logits else _probs(shape, 40 + seed)).to(dtype)
        target = (_probs(shape, 50 + seed) > 0.5).long()
        metric.update(output, target)
        outputs.append(output.double())
        targets.append(target)
    _assert_no_float64_state(metric)
    output, target = torch.cat(outputs), torch.cat(targets)
    kwargs = {"threshold": torch.as_tensor(threshold, dtype=torch.float64), "from_logits": from_logits}
    result = metric.compute()
    torch.testing.assert_close(result["f1_macro"], multilabel_fbeta(output, target, beta=1.0, **kwargs), rtol=0, atol=0)
    torch.testing.assert_close(result["f2_macro"], multilabel_fbeta(output, target, beta=2.0, **kwargs), rtol=0, atol=0)
    torch.testing.assert_close(result["recall_macro"], multilabel_recall(output, target, **kwargs), rtol=0, atol=0)
    probs = torch.sigmoid(output) if from_logits else output
    thresholds, scores = metric.tuned_thresholds(beta=2.0)
    expected_thresholds, expected_scores = search_thresholds(probs, target, beta=2.0)
    torch.testing.assert_close(thresholds.double(), expected_thresholds, rtol=0, atol=1e-6)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=0)

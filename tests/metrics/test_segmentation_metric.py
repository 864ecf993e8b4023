"""SegmentationMetrics: hand-made values, batch accumulation, merged and distributed states."""

from __future__ import annotations

import math

import pytest
import torch

from ternaus_zoo.metrics import SegmentationMetrics, confusion_stats, iou_score, mean_iou

from .cases import BINARY_PROBS, BINARY_TARGET, MC_PRED, MC_TARGET


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], equal_nan=True), key


def _random_batches(seed: int, classes: int, sizes=(3, 1, 4)):
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for batch in sizes:
        channels = 1 if classes == 1 else classes
        output = torch.randn(batch, channels, 5, 5, generator=gen)
        if classes == 1:
            target = (torch.rand(batch, 1, 5, 5, generator=gen) < 0.3).long()
        else:
            target = torch.randint(0, classes, (batch, 5, 5), generator=gen)
        target[torch.rand(target.shape, generator=gen) < 0.1] = 255
        batches.append((output, target))
    batches.append((batches[0][0][:1] * 0 - 5, batches[0][1][:1] * 0))  # an empty/empty image (all logits -5)
    return batches


def test_binary_hand_case():
    # values worked out in test_functional: micro IoU 2/9, Dice 4/11; per image IoU 1/2, Dice 5/9
    metric = SegmentationMetrics(from_logits=False)
    metric.update(BINARY_PROBS[:, None], BINARY_TARGET[:, None])
    result = metric.compute()
    assert set(result) == {"iou", "dice", "iou_per_image", "dice_per_image"}
    expected = {"iou": 2 / 9, "dice": 4 / 11, "iou_per_image": 1 / 2, "dice_per_image": 5 / 9}
    assert {key: value.item() for key, value in result.items()} == pytest.approx(expected)


def test_binary_logits_in_batches():
    # the same case fed as logits, one image per update
    metric = SegmentationMetrics()
    for image in range(3):
        metric.update(torch.logit(BINARY_PROBS[image : image + 1]), BINARY_TARGET[image : image + 1])
    assert metric.compute()["iou_per_image"].item() == pytest.approx(1 / 2)
    assert metric.compute()["iou"].item() == pytest.approx(2 / 9)


def test_multiclass_hand_case():
    # per class IoU 1/3, 1/3, 1, NaN (class 3 absent); mean 5/9; micro IoU 3/7, Dice 6/10; per image IoU 2/3,
    # per image Dice (1/2 + 1/2 + 1 + 1)/4 = 3/4
    metric = SegmentationMetrics(num_classes=4, ignore_index=255)
    metric.update(MC_PRED, MC_TARGET)
    result = metric.compute()
    assert set(result) == {"iou", "dice", "iou_per_image", "dice_per_image", "miou", "iou_per_class", "dice_per_class"}
    assert result["iou_per_class"].shape == result["dice_per_class"].shape == (4,)
    assert result["iou_per_class"][:3].tolist() == pytest.approx([1 / 3, 1 / 3, 1.0])
    assert result["dice_per_class"][:3].tolist() == pytest.approx([1 / 2, 1 / 2, 1.0])  # 2 IoU / (1 + IoU)
    assert math.isnan(result["iou_per_class"][3].item()) and math.isnan(result["dice_per_class"][3].item())
    scalars = {key: value.item() for key, value in result.items() if not key.endswith("_per_class")}
    expected = {"iou": 3 / 7, "dice": 6 / 10, "iou_per_image": 2 / 3, "dice_per_image": 3 / 4, "miou": 5 / 9}
    assert scalars == pytest.approx(expected)


@pytest.mark.parametrize("classes", [1, 4])
def test_accumulation_equals_one_shot_and_functional(classes):
    batches = _random_batches(seed=classes, classes=classes)
    accumulated = SegmentationMetrics(num_classes=classes, ignore_index=255)
    for output, target in batches:
        accumulated.update(output, target)

    one_shot = SegmentationMetrics(num_classes=classes, ignore_index=255)
    one_shot.update(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    _assert_same(accumulated.compute(), one_shot.compute())

    mode = "binary" if classes == 1 else "multiclass"
    stats = [confusion_stats(o, t, mode=mode, num_classes=classes, ignore_index=255) for o, t in batches]
    tp, fp, fn, _ = (torch.cat(s) for s in zip(*stats, strict=True))
    result = accumulated.compute()
    assert torch.allclose(result["iou"], iou_score(tp, fp, fn, "micro"))
    assert torch.allclose(result["iou_per_image"], iou_score(tp, fp, fn, "per_image"))
    if classes > 1:
        assert torch.allclose(result["miou"], mean_iou(tp, fp, fn))


@pytest.mark.parametrize("classes", [1, 4])
def test_merged_states_equal_one_shot(classes):
    batches = _random_batches(seed=10 + classes, classes=classes)
    one_shot, rank0, rank1 = (SegmentationMetrics(num_classes=classes, ignore_index=255) for _ in range(3))
    for i, (output, target) in enumerate(batches):
        one_shot.update(output, target)
        (rank0 if i % 2 == 0 else rank1).update(output, target)
    rank0.merge_state(rank1)
    _assert_same(rank0.compute(), one_shot.compute())


@pytest.mark.parametrize("classes", [1, 4])
def test_distributed_sync_equals_one_shot(classes, as_rank0_of_two):
    batches = _random_batches(seed=20 + classes, classes=classes)
    one_shot, rank0, rank1 = (SegmentationMetrics(num_classes=classes, ignore_index=255) for _ in range(3))
    for i, (output, target) in enumerate(batches):
        one_shot.update(output, target)
        (rank0 if i < 2 else rank1).update(output, target)
    local_tp = rank0.tp.clone()
    as_rank0_of_two(rank0, rank1)
    _assert_same(rank0.compute(), one_shot.compute())
    assert torch.equal(rank0.tp, local_tp)  # local states are restored after the synced compute


def test_state_size_does_not_grow():
    metric = SegmentationMetrics(num_classes=3)
    sizes = {name: value.numel() for name, value in metric.metric_state.items()}
    for output, target in _random_batches(seed=3, classes=3, sizes=(2, 2, 2, 2)):
        metric.update(output, target.clamp_max(2))
    assert {name: value.numel() for name, value in metric.metric_state.items()} == sizes
    assert metric.num_images.item() == 9


def test_reset_and_nothing_seen():
    metric = SegmentationMetrics()
    metric.update(BINARY_PROBS, BINARY_TARGET)
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        result = metric.compute()
    assert all(math.isnan(value.item()) for value in result.values())


def test_gradients_not_needed():
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    metric = SegmentationMetrics()
    metric.update(logits, torch.ones(2, 1, 4, 4))
    assert not metric.compute()["iou"].requires_grad


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(num_classes=0)

"""LOSSES, build_loss and WeightedSumLoss."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from ternaus_zoo.losses import (
    LOSSES,
    BCEJaccardLoss,
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    FocalLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
    WeightedSumLoss,
    build_loss,
)

EXPECTED_NAMES = {
    "bce",
    "bce_jaccard",
    "jaccard",
    "dice",
    "lovasz_hinge",
    "binary_focal",
    "ce",
    "ce_jaccard",
    "lovasz_softmax",
    "focal",
    "multilabel_focal",
    "weighted_bce",
}


def _binary_inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 6, 6, generator=generator), (torch.rand(2, 1, 6, 6, generator=generator) < 0.4).float()


def _multiclass_inputs():
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 6, 6), generator=generator)
    target[0, 0] = 11
    return torch.randn(2, 3, 6, 6, generator=generator), target


def test_table_names_and_tasks():
    assert set(LOSSES) == EXPECTED_NAMES
    for name, cls in LOSSES.items():
        assert issubclass(cls, nn.Module), name
        assert cls.task in ("binary", "multiclass", "multilabel"), name
        assert isinstance(build_loss(name), cls)


def test_build_by_name_uses_defaults():
    loss = build_loss("bce_jaccard")
    assert isinstance(loss, BCEJaccardLoss) and loss.jaccard_weight == 0.3 and loss.log_jaccard


def test_build_weighted_sum_from_weights():
    logits, target = _binary_inputs()
    loss = build_loss({"bce": 0.5, "lovasz_hinge": 0.25})
    assert isinstance(loss, WeightedSumLoss)
    expected = 0.5 * BinaryCrossEntropyLoss()(logits, target) + 0.25 * LovaszHingeLoss()(logits, target)
    torch.testing.assert_close(loss(logits, target), expected)
    terms = loss.terms(logits, target)
    torch.testing.assert_close(terms["lovasz_hinge"], LovaszHingeLoss()(logits, target))


def test_build_with_keyword_arguments():
    logits, target = _multiclass_inputs()
    loss = build_loss(
        {"lovasz_softmax": {"weight": 2.0, "ignore_index": 11, "per_image": True}, "ce": {"ignore_index": 11}}
    )
    assert loss.losses["lovasz_softmax"].ignore_index == 11 and loss.weights == {"lovasz_softmax": 2.0, "ce": 1.0}
    expected = 2 * LovaszSoftmaxLoss(per_image=True, ignore_index=11)(logits, target)
    expected = expected + CrossEntropyLoss(ignore_index=11)(logits, target)
    torch.testing.assert_close(loss(logits, target), expected)


def test_build_from_yaml():
    config = yaml.safe_load(
        """
        loss:
          ce: {weight: 0.5, class_weights: [1.0, 2.0, 0.5], ignore_index: 11}
          focal: {weight: 0.5, gamma: 1, ignore_index: 11}
        """
    )["loss"]
    logits, target = _multiclass_inputs()
    expected = 0.5 * CrossEntropyLoss(class_weights=[1.0, 2.0, 0.5], ignore_index=11)(logits, target)
    expected = expected + 0.5 * FocalLoss(gamma=1, ignore_index=11)(logits, target)
    torch.testing.assert_close(build_loss(config)(logits, target), expected)


def test_unknown_names_list_the_known_ones():
    for config in ("lovasz", {"bce": 1.0, "dice_loss": 1.0}):
        with pytest.raises(KeyError, match="known losses") as info:
            build_loss(config)
        assert "lovasz_hinge" in str(info.value) and "weighted_bce" in str(info.value)


def test_bad_configs():
    with pytest.raises(TypeError, match="bce_jaccard"):
        build_loss({"bce_jaccard": {"jacard_weight": 0.5}})
    with pytest.raises(TypeError, match="expected a weight"):
        build_loss({"bce": "half"})
    with pytest.raises(TypeError, match="expected a weight"):
        build_loss({"bce": True})
    with pytest.raises(TypeError, match="a name, a mapping"):
        build_loss(["bce"])
    with pytest.raises(ValueError, match="at least one"):
        build_loss({})


def test_module_passes_through_and_weighted_sum_checks_names():
    module = LovaszHingeLoss(per_image=False)
    assert build_loss(module) is module
    with pytest.raises(ValueError, match="do not match"):
        WeightedSumLoss({"bce": BinaryCrossEntropyLoss()}, {"dice": 1.0})
    logits, target = _binary_inputs()
    unweighted = WeightedSumLoss({"bce": BinaryCrossEntropyLoss(), "hinge": LovaszHingeLoss()})
    expected = BinaryCrossEntropyLoss()(logits, target) + LovaszHingeLoss()(logits, target)
    torch.testing.assert_close(unweighted(logits, target), expected)


def test_ignore_index_default_reaches_every_loss_that_takes_one():
    loss = build_loss({"ce": 0.5, "lovasz_softmax": {"weight": 0.5, "ignore_index": 7}, "focal": 1.0}, ignore_index=3)
    assert loss.losses["ce"].ignore_index == 3
    assert loss.losses["focal"].ignore_index == 3
    assert loss.losses["lovasz_softmax"].ignore_index == 7  # the loss's own argument wins
    assert build_loss("ce").ignore_index is None


def test_ignored_pixels_leave_the_cross_entropy_unchanged():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    void = target.clone()
    void[:, :2] = 3  # void rows: with ignore_index 3 they must not count (and must not raise)
    expected = torch.nn.functional.cross_entropy(
        logits.permute(0, 2, 3, 1)[:, 2:].reshape(-1, 3), target[:, 2:].reshape(-1)
    )
    torch.testing.assert_close(build_loss({"ce": 1.0}, ignore_index=3)(logits, void), expected)

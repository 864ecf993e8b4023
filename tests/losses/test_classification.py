"""Multi-label classification losses and the plain cross-entropy wrappers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ternaus_zoo.losses import BinaryCrossEntropyLoss, CrossEntropyLoss, MultiLabelFocalLoss, WeightedBCELoss

LN3 = math.log(3.0)


def protein_atlas_focal(logits, target, gamma=2.0):
    """The Human Protein Atlas kernel's focal loss, written out: stable BCE times sigmoid(-x (2t - 1))^gamma."""
    max_val = (-logits).clamp(min=0)
    bce = logits - logits * target + max_val + ((-max_val).exp() + (-logits - max_val).exp()).log()
    modulation = (F.logsigmoid(-logits * (target * 2.0 - 1.0)) * gamma).exp()
    return (modulation * bce).sum(dim=1).mean()


def test_multilabel_focal_matches_protein_atlas_recipe_values_and_gradients():
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 28, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    target = (torch.rand(4, 28, generator=generator) < 0.2).double()
    for gamma in (0.0, 1.0, 2.0):
        ours = MultiLabelFocalLoss(gamma=gamma)(logits, target)
        expected = protein_atlas_focal(logits, target, gamma)
        torch.testing.assert_close(ours, expected)
        torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(expected, logits)[0])


def test_multilabel_focal_class_weights_and_alpha_by_hand():
    # One sample, two classes: logit 0 / target 1 -> 0.25 ln 2; logit ln 3 / target 0 -> 0.5625 ln 4.
    # class_weights [2, 0.5]: 2 * 0.25 ln 2 + 0.5 * 0.5625 ln 4 (summed over classes, batch of one).
    # alpha 0.25 on top: 0.25 for the positive entry, 0.75 for the negative one.
    logits = torch.tensor([[0.0, LN3]])
    target = torch.tensor([[1, 0]])
    a, b = 0.25 * math.log(2), 0.5625 * math.log(4)
    assert MultiLabelFocalLoss(class_weights=[2.0, 0.5])(logits, target).item() == pytest.approx(2 * a + 0.5 * b)
    got = MultiLabelFocalLoss(alpha=0.25, class_weights=[2.0, 0.5])(logits, target).item()
    assert got == pytest.approx(2 * 0.25 * a + 0.5 * 0.75 * b)


def test_weighted_bce_by_hand():
    # logits [[0, ln 3]], target [[1, 0]]: BCE terms ln 2 and -ln(1 - 0.75) = ln 4.
    logits = torch.tensor([[0.0, LN3]])
    target = torch.tensor([[1.0, 0.0]])
    assert WeightedBCELoss()(logits, target).item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    # class_weights [2, 0.5]: mean of 2 ln 2 and 0.5 ln 4 = ln 2 over the B * C = 2 entries: 1.5 ln 2.
    assert WeightedBCELoss(class_weights=[2.0, 0.5])(logits, target).item() == pytest.approx(1.5 * math.log(2))
    # pos_weight [3, 3] scales the positive term only: (3 ln 2 + ln 4) / 2.
    got = WeightedBCELoss(pos_weight=[3.0, 3.0])(logits, target).item()
    assert got == pytest.approx((3 * math.log(2) + math.log(4)) / 2)


def test_multilabel_shape_checks():
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        WeightedBCELoss()(torch.randn(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="does not match"):
        MultiLabelFocalLoss()(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2 values for 3 classes"):
        WeightedBCELoss(class_weights=[1.0, 1.0])(torch.randn(2, 3), torch.zeros(2, 3))


def test_cross_entropy_matches_torch_and_is_zero_when_everything_is_ignored():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 5, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 3, 5), generator=generator)
    target[0, 0] = 11
    weights = [0.5, 1.0, 2.0, 0.1]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights, dtype=torch.float64), ignore_index=11)
    torch.testing.assert_close(CrossEntropyLoss(class_weights=weights, ignore_index=11)(logits, target), expected)
    # torch returns NaN (0 / 0) here; ours a differentiable 0.
    everything_ignored = torch.full_like(target, 11)
    assert F.cross_entropy(logits, everything_ignored, ignore_index=11).isnan()
    leaf = logits.clone().requires_grad_()
    loss = CrossEntropyLoss(ignore_index=11)(leaf, everything_ignored)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf))


def test_binary_cross_entropy_matches_torch_with_pos_weight_and_ignore():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 4, 4, generator=generator, dtype=torch.float64)
    target = (torch.rand(2, 1, 4, 4, generator=generator) < 0.3).double()
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(2.5, dtype=torch.float64))
    torch.testing.assert_close(BinaryCrossEntropyLoss(pos_weight=2.5)(logits, target), expected)
    keep = torch.rand(2, 1, 4, 4, generator=generator) < 0.5
    got = BinaryCrossEntropyLoss(ignore_index=255)(logits, torch.where(keep, target, 255.0))
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits[keep], target[keep]))

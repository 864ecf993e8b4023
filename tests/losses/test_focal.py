"""Binary and multi-class focal losses against hand-computed values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ternaus_zoo.losses import BinaryFocalLoss, FocalLoss

LN3 = math.log(3.0)

# Binary hand case: pixel A logit 0, target 1: p_t = 0.5, FL = 0.5^2 * ln 2 = 0.1732868.
# Pixel B logit ln 3, target 0: p = 0.75, p_t = 0.25, FL = 0.75^2 * -ln 0.25 = 0.5625 * 1.3862944 = 0.7797906.
BINARY_LOGITS = torch.tensor([[0.0, LN3]], dtype=torch.float64)
BINARY_TARGET = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
FL_A, FL_B = 0.25 * math.log(2), 0.5625 * math.log(4)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (None, (FL_A + FL_B) / 2),  # 0.4765387
        (0.25, (0.25 * FL_A + 0.75 * FL_B) / 2),  # alpha_t = 0.25 for the foreground, 0.75 for the background
    ],
)
def test_binary_focal_hand_computed(alpha, expected):
    assert BinaryFocalLoss(alpha=alpha)(BINARY_LOGITS, BINARY_TARGET).item() == pytest.approx(expected, abs=1e-9)


def test_binary_focal_hand_derived_gradient():
    # FL(x, t=1) = -(1 - p)^g log p, p = sigmoid(x): dFL/dx = (1 - p)^g (g p log p - (1 - p)).
    # A: p = 0.5, g = 2: 0.25 * (-ln 2 - 0.5) = -0.2982868. B (t = 0) is A's formula at -x with q = sigmoid(-x)
    # = 0.25, negated: -(0.5625 * (2 * 0.25 * ln 0.25 - 0.75)) = 0.8117702. The mean halves both.
    logits = BINARY_LOGITS.clone().requires_grad_()
    BinaryFocalLoss()(logits, BINARY_TARGET).backward()
    expected_a = 0.25 * (-math.log(2) - 0.5) / 2
    expected_b = -(0.5625 * (2 * 0.25 * math.log(0.25) - 0.75)) / 2
    torch.testing.assert_close(logits.grad, torch.tensor([[expected_a, expected_b]], dtype=torch.float64))


def test_multiclass_focal_hand_computed():
    # Two pixels with logits [0, ln 3]: p = [0.25, 0.75].
    # Label 1: p_t = 0.75, FL = 0.25^2 * -ln 0.75 = 0.0179801. Label 0: p_t = 0.25, FL = 0.75^2 * ln 4 = 0.7797906.
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]], dtype=torch.float64).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    fl_1, fl_0 = 0.0625 * -math.log(0.75), 0.5625 * math.log(4)
    assert FocalLoss()(logits, target).item() == pytest.approx((fl_1 + fl_0) / 2, abs=1e-9)
    # alpha per class [0.1, 0.9]; the mean still divides by the number of pixels.
    assert FocalLoss(alpha=[0.1, 0.9])(logits, target).item() == pytest.approx((0.9 * fl_1 + 0.1 * fl_0) / 2, abs=1e-9)


def test_gamma_zero_is_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 3, 3), generator=generator)
    torch.testing.assert_close(FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target))
    binary_target = (target > 1).double().unsqueeze(1)
    expected = F.binary_cross_entropy_with_logits(logits[:, :1], binary_target)
    torch.testing.assert_close(BinaryFocalLoss(gamma=0)(logits[:, :1], binary_target), expected)


def test_focal_ignored_pixels_count_as_removed():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 6, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 3, (1, 2, 6), generator=generator)
    keep = torch.rand(1, 2, 6, generator=generator) < 0.6
    got = FocalLoss(alpha=[1.0, 0.5, 2.0], ignore_index=9)(logits, torch.where(keep, target, 9))
    expected = FocalLoss(alpha=[1.0, 0.5, 2.0])(logits[:, :, keep[0]].unsqueeze(2), target[keep].view(1, 1, -1))
    torch.testing.assert_close(got, expected)

    binary = (target == 1).double()
    got = BinaryFocalLoss(alpha=0.3, ignore_index=9)(logits[:, 0], torch.where(keep, binary, 9.0))
    expected = BinaryFocalLoss(alpha=0.3)(logits[:, 0][keep].view(1, -1), binary[keep].view(1, -1))
    torch.testing.assert_close(got, expected)


def test_invalid_alpha():
    with pytest.raises(ValueError, match="alpha"):
        BinaryFocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="alpha has 2 values for 3 classes"):
        FocalLoss(alpha=[1.0, 1.0])(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))

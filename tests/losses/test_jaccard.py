"""Soft Jaccard / Dice and the TernausNet BCE+Jaccard and CE+Jaccard losses."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from ternaus_zoo.losses import BCEJaccardLoss, CrossEntropyJaccardLoss, SoftDiceLoss, SoftJaccardLoss

LN3 = math.log(3.0)

# Hand case: logits [0, ln 3, -ln 3] -> p = [0.5, 0.75, 0.25]; target [1, 1, 0].
# sum(p t) = 1.25, sum(p) = 1.5, sum(t) = 2: J = 1.25 / (3.5 - 1.25) = 5/9, D = 2 * 1.25 / 3.5 = 5/7.
# BCE = (-ln 0.5 - ln 0.75 - ln 0.75) / 3 = (0.693147 + 0.287682 + 0.287682) / 3 = 0.422837.
HAND_LOGITS = torch.tensor([[[[0.0, LN3, -LN3]]]], dtype=torch.float64)
HAND_TARGET = torch.tensor([[[[1.0, 1.0, 0.0]]]], dtype=torch.float64)
HAND_BCE = (math.log(2) + 2 * math.log(4 / 3)) / 3


def ternausnet_loss_binary(outputs, targets, jaccard_weight, eps=1e-15):
    """The robot-surgery LossBinary formula, written out: (1 - w) BCE - w log J over the batch."""
    bce = F.binary_cross_entropy_with_logits(outputs, targets)
    probs = torch.sigmoid(outputs)
    jaccard_target = (targets == 1).to(probs.dtype)
    intersection = (probs * jaccard_target).sum()
    union = probs.sum() + jaccard_target.sum()
    return (1 - jaccard_weight) * bce - jaccard_weight * torch.log((intersection + eps) / (union - intersection + eps))


def ternausnet_loss_multi(outputs, targets, jaccard_weight, class_weights=None, eps=1e-15):
    """The robot-surgery LossMulti formula: (1 - w) CE - w sum_c log J_c, softmax probabilities over the batch."""
    log_probs = F.log_softmax(outputs, dim=1)
    loss = (1 - jaccard_weight) * F.nll_loss(log_probs, targets, weight=class_weights)
    for cls in range(outputs.shape[1]):
        jaccard_target = (targets == cls).to(outputs.dtype)
        jaccard_output = log_probs[:, cls].exp()
        intersection = (jaccard_output * jaccard_target).sum()
        union = jaccard_output.sum() + jaccard_target.sum()
        loss = loss - jaccard_weight * torch.log((intersection + eps) / (union - intersection + eps))
    return loss


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (SoftJaccardLoss(), 1 - 5 / 9),
        (SoftJaccardLoss(log_loss=True), -math.log(5 / 9)),
        (SoftDiceLoss(), 1 - 5 / 7),
        (SoftDiceLoss(log_loss=True), -math.log(5 / 7)),
        (BCEJaccardLoss(), 0.7 * HAND_BCE - 0.3 * math.log(5 / 9)),  # 0.472322
        (BCEJaccardLoss(log_jaccard=False), 0.7 * HAND_BCE + 0.3 * (1 - 5 / 9)),  # 0.429319
        (BCEJaccardLoss(jaccard_weight=0.0), HAND_BCE),
    ],
)
def test_binary_hand_computed(loss, expected):
    assert loss(HAND_LOGITS, HAND_TARGET).item() == pytest.approx(expected, abs=1e-6)


def test_bce_jaccard_matches_ternausnet_formula_values_and_gradients():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(3, 1, 5, 6, generator=generator) < 0.3).double()
    for weight in (0.0, 0.3, 1.0):
        ours = BCEJaccardLoss(jaccard_weight=weight)(logits, target)
        expected = ternausnet_loss_binary(logits, target, weight)
        torch.testing.assert_close(ours, expected)
        torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(expected, logits)[0])


def test_target_layouts_and_dtypes_agree():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 4, 4, generator=generator)
    target = (torch.rand(2, 1, 4, 4, generator=generator) < 0.5).long()
    for loss in (BCEJaccardLoss(), SoftJaccardLoss(), SoftDiceLoss()):
        reference = loss(logits, target.float())
        for other_logits, other_target in ((logits, target), (logits, target[:, 0]), (logits[:, 0], target[:, 0])):
            torch.testing.assert_close(loss(other_logits, other_target), reference)
    with pytest.raises(ValueError, match="does not match"):
        SoftJaccardLoss()(logits, target[:, :, :2])


def test_per_image_is_the_mean_of_single_image_losses():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 4, 5, generator=generator, dtype=torch.float64)
    target = (torch.rand(3, 1, 4, 5, generator=generator) < torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1, 1)).double()
    for cls in (SoftJaccardLoss, SoftDiceLoss):
        per_image = cls(per_image=True, log_loss=True)(logits, target)
        singles = torch.stack([cls(log_loss=True)(logits[b : b + 1], target[b : b + 1]) for b in range(3)])
        torch.testing.assert_close(per_image, singles.mean())
        assert abs(per_image.item() - cls(log_loss=True)(logits, target).item()) > 1e-3


def test_binary_ignored_pixels_count_as_removed():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 1, 3, 8, generator=generator, dtype=torch.float64)
    target = (torch.rand(1, 1, 3, 8, generator=generator) < 0.5).double()
    keep = torch.rand(1, 1, 3, 8, generator=generator) < 0.7
    ignored = torch.where(keep, target, 255.0)
    for loss_type in (BCEJaccardLoss, SoftJaccardLoss, SoftDiceLoss):
        got = loss_type(ignore_index=255)(logits, ignored)
        expected = loss_type()(logits[keep].view(1, -1), target[keep].view(1, -1))
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("log_loss", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_jaccard_and_dice_match_smp(log_loss, ignore_index):
    # smp sums over the whole batch in binary mode, like ours; smp's smooth is our eps. smp zeroes the loss of
    # an empty target, so the target here has foreground.
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 6, 6, generator=generator)
    target = (torch.rand(2, 1, 6, 6, generator=generator) < 0.4).float()
    if ignore_index is not None:
        target[torch.rand(target.shape, generator=generator) < 0.2] = ignore_index
    # smp 0.6 computes Dice as a Tversky index: (I + s) / ((sum p + sum t) / 2 + s), i.e. our eps = 2 s.
    for ours, theirs, eps in ((SoftJaccardLoss, smp.losses.JaccardLoss, 1.0), (SoftDiceLoss, smp.losses.DiceLoss, 2.0)):
        expected = theirs("binary", smooth=1.0, log_loss=log_loss, ignore_index=ignore_index)(logits, target)
        torch.testing.assert_close(
            ours(eps=eps, log_loss=log_loss, ignore_index=ignore_index)(logits, target), expected
        )


def test_multiclass_hand_computed():
    # Pixel 0: logits [0, 0] -> p = [0.5, 0.5], label 0. Pixel 1: logits [0, ln 3] -> p = [0.25, 0.75], label 1.
    # CE = (-ln 0.5 - ln 0.75) / 2 = 0.490415.
    # Class 0: p = [0.5, 0.25], t = [1, 0]: I = 0.5, sum p + sum t = 1.75, J0 = 0.5 / 1.25 = 0.4.
    # Class 1: p = [0.5, 0.75], t = [0, 1]: I = 0.75, sum p + sum t = 2.25, J1 = 0.75 / 1.5 = 0.5.
    # w = 0.3: 0.7 * 0.490415 - 0.3 * (ln 0.4 + ln 0.5) = 0.826122; without log: 0.7 * 0.490415 + 0.3 * 1.1.
    logits = torch.tensor([[[0.0, 0.0], [0.0, LN3]]], dtype=torch.float64).view(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    ce = (math.log(2) + math.log(4 / 3)) / 2
    got = CrossEntropyJaccardLoss(jaccard_weight=0.3)(logits, target)
    assert got.item() == pytest.approx(0.7 * ce - 0.3 * (math.log(0.4) + math.log(0.5)), abs=1e-9)
    got = CrossEntropyJaccardLoss(jaccard_weight=0.3, log_jaccard=False)(logits, target)
    assert got.item() == pytest.approx(0.7 * ce + 0.3 * (0.6 + 0.5), abs=1e-9)


@pytest.mark.parametrize("class_weights", [None, [0.2, 1.0, 3.0, 0.5]])
def test_ce_jaccard_matches_robot_surgery_formula_values_and_gradients(class_weights):
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5), generator=generator)  # class 3 absent: a large but finite term
    weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float64)
    ours = CrossEntropyJaccardLoss(jaccard_weight=0.4, class_weights=class_weights)(logits, target)
    expected = ternausnet_loss_multi(logits, target, 0.4, weights)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(expected, logits)[0])


def test_ce_jaccard_ignored_pixels_count_as_removed_and_per_image():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 4, 4), generator=generator)
    keep = torch.rand(2, 4, 4, generator=generator) < 0.7
    loss = CrossEntropyJaccardLoss(class_weights=[1.0, 2.0, 0.5], ignore_index=11)
    got = loss(logits, torch.where(keep, target, 11))
    flat_logits = logits.permute(1, 0, 2, 3)[:, keep].unsqueeze(0)
    expected = CrossEntropyJaccardLoss(class_weights=[1.0, 2.0, 0.5])(flat_logits, target[keep].unsqueeze(0))
    torch.testing.assert_close(got, expected)

    per_image = CrossEntropyJaccardLoss(per_image=True)
    singles = torch.stack([per_image(logits[b : b + 1], target[b : b + 1]) for b in range(2)])
    torch.testing.assert_close(per_image(logits, target), singles.mean())


def test_invalid_arguments():
    with pytest.raises(ValueError, match="jaccard_weight"):
        BCEJaccardLoss(jaccard_weight=1.5)
    with pytest.raises(ValueError, match="3 values for 2 classes"):
        CrossEntropyJaccardLoss(class_weights=[1, 1, 1])(
            torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
        )
    with pytest.raises(TypeError, match="integer class indices"):
        CrossEntropyJaccardLoss()(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2))

"""Lovasz hinge / Lovasz-Softmax against hand computations, a brute-force Lovasz extension and smp.

The oracle below is plain Python (itertools): it evaluates the Jaccard set loss on explicit sets and never
calls the package.
"""

from __future__ import annotations

import itertools
import math

import pytest
import segmentation_models_pytorch as smp
import torch

from ternaus_zoo.losses import LovaszHingeLoss, LovaszSoftmaxLoss, lovasz_grad, lovasz_hinge, lovasz_softmax

# ---------------------------------------------------------------- brute-force oracle (plain Python)


def jaccard_set_loss(mistakes: frozenset[int], foreground: frozenset[int]) -> float:
    """Delta_J(M) = |M| / |F u M| on explicit sets, 0 for the empty set."""
    return len(mistakes) / len(foreground | mistakes) if mistakes else 0.0


def greedy_increments(order: tuple[int, ...], foreground: frozenset[int]) -> dict[int, float]:
    """Delta_J({order[:k]}) - Delta_J({order[:k-1]}) for every element, by building the sets one by one."""
    increments, prefix = {}, frozenset()
    for pixel in order:
        grown = prefix | {pixel}
        increments[pixel] = jaccard_set_loss(grown, foreground) - jaccard_set_loss(prefix, foreground)
        prefix = grown
    return increments


def lovasz_extension_sorted(errors: list[float], foreground: frozenset[int]) -> tuple[float, dict[int, float]]:
    """sum_i m_(i) (Delta_J({1..i}) - Delta_J({1..i-1})), errors sorted descending; also the increments."""
    order = tuple(sorted(range(len(errors)), key=lambda i: -errors[i]))
    increments = greedy_increments(order, foreground)
    return sum(errors[i] * increments[i] for i in order), increments


def lovasz_extension_max(errors: list[float], foreground: frozenset[int]) -> float:
    """For a submodular set function the Lovasz extension is the max over all orderings of the greedy sum."""
    best = -math.inf
    for order in itertools.permutations(range(len(errors))):
        increments = greedy_increments(order, foreground)
        best = max(best, sum(errors[i] * increments[i] for i in order))
    return best


def hinge_errors(logits: list[float], labels: list[int]) -> list[float]:
    return [max(0.0, 1.0 - x * (2 * y - 1)) for x, y in zip(logits, labels, strict=True)]


def test_oracle_premise_jaccard_set_loss_is_submodular():
    # The max-over-orderings oracle is the Lovasz extension only for a submodular set function (Yu & Blaschko).
    pixels = range(5)
    subsets = [frozenset(s) for r in range(6) for s in itertools.combinations(pixels, r)]
    for foreground in (frozenset(), frozenset({0}), frozenset({1, 3, 4})):
        for a, b in itertools.product(subsets, repeat=2):
            lhs = jaccard_set_loss(a, foreground) + jaccard_set_loss(b, foreground)
            rhs = jaccard_set_loss(a | b, foreground) + jaccard_set_loss(a & b, foreground)
            assert lhs >= rhs - 1e-12


# ---------------------------------------------------------------- hand-worked cases


def test_hinge_hand_computed_value_and_gradient():
    # logits [2, -1, 0.5], labels [1, 1, 0]; signs [1, 1, -1]; errors 1 - x * s = [-1, 2, 1.5].
    # Sorted: 2 (pixel 1, fg), 1.5 (pixel 2, bg), -1 (pixel 0, fg); |F| = 2.
    # Delta_J({1}) = 1 / |{0, 1}| = 1/2; Delta_J({1, 2}) = 2 / |{0, 1, 2}| = 2/3; Delta_J(all) = 3/3 = 1.
    # Gradient of the extension: [1/2, 1/6, 1/3]; loss = 2 * 1/2 + 1.5 * 1/6 + relu(-1) * 1/3 = 1.25.
    # d loss / d x: pixel 1: -s * 1/2 = -0.5; pixel 2: -s * 1/6 = +1/6; pixel 0: 0 (hinge inactive).
    logits = torch.tensor([[[2.0, -1.0, 0.5]]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[[1, 1, 0]]])
    loss = lovasz_hinge(logits, labels, per_image=True)
    loss.backward()
    assert loss.item() == pytest.approx(1.25, abs=1e-12)
    torch.testing.assert_close(logits.grad, torch.tensor([[[0.0, -0.5, 1 / 6]]], dtype=torch.float64))


def test_hinge_image_without_foreground_costs_its_largest_error():
    # logits [0.5, -2], labels [0, 0]: errors 1 + x = [1.5, -1]; |F| = 0 so Delta_J(M) = 1 for any M != {}:
    # gradient [1, 0] on the sorted errors (the reference's lovasz_grad), loss = 1.5, d loss / d x0 = 1.
    logits = torch.tensor([[0.5, -2.0]], dtype=torch.float64, requires_grad=True)
    loss = lovasz_hinge(logits, torch.zeros(1, 2), per_image=True)
    loss.backward()
    assert loss.item() == pytest.approx(1.5)
    torch.testing.assert_close(logits.grad, torch.tensor([[1.0, 0.0]], dtype=torch.float64))


def test_hinge_per_image_versus_batch_hand_computed():
    # Image A: the hand case above, loss 1.25. Image B: logits [1.5, -2], labels [0, 0]: errors [2.5, -1],
    # no foreground, loss 2.5. per_image: (1.25 + 2.5) / 2 = 1.875.
    # Batch: errors [-1, 2, 1.5, 2.5, -1], |F| = 2 (pixels 0 and 1). Sorted: 2.5 (B0, bg), 2 (A1, fg),
    # 1.5 (A2, bg), then negatives. Delta_J: {B0}: 1 / |{A0, A1, B0}| = 1/3; {B0, A1}: 2/3; {B0, A1, A2}: 3/4.
    # loss = 2.5 * 1/3 + 2 * (2/3 - 1/3) + 1.5 * (3/4 - 2/3) = 0.8333 + 0.6667 + 0.125 = 1.625.
    logits = torch.tensor([[2.0, -1.0, 0.5], [1.5, -2.0, -3.0]], dtype=torch.float64)
    labels = torch.tensor([[1, 1, 0], [0, 0, 255]])
    assert lovasz_hinge(logits, labels, per_image=True, ignore_index=255).item() == pytest.approx(1.875)
    assert lovasz_hinge(logits, labels, per_image=False, ignore_index=255).item() == pytest.approx(1.625)
    assert LovaszHingeLoss(ignore_index=255)(logits, labels).item() == pytest.approx(1.875)  # default per_image


def _two_class_logits(prob_class_1: list[float]) -> torch.Tensor:
    # logits (1, 2, N): class 0 logit 0, class 1 logit log(p / (1 - p)), so softmax gives p for class 1.
    p = torch.tensor(prob_class_1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))]).unsqueeze(0)


def test_softmax_hand_computed_present_classes():
    # p1 = [0.8, 0.3, 0.6], p0 = 1 - p1, labels [1, 0, 0].
    # Class 1: fg [1, 0, 0], errors |fg - p1| = [0.2, 0.3, 0.6]; sorted 0.6 (bg), 0.3 (bg), 0.2 (fg), |F| = 1:
    #   Delta_J 1/2, 2/3, 3/3 -> increments 1/2, 1/6, 1/3 -> 0.3 + 0.05 + 0.0666667 = 0.4166667.
    # Class 0: fg [0, 1, 1], errors |fg - p0| = [0.2, 0.3, 0.6]; sorted 0.6 (fg), 0.3 (fg), 0.2 (bg), |F| = 2:
    #   Delta_J 1/2, 2/2, 3/3 -> increments 1/2, 1/2, 0 -> 0.3 + 0.15 = 0.45.
    # Mean over the present classes: (0.45 + 0.4166667) / 2 = 0.4333333; classes=[1]: 0.4166667.
    logits = _two_class_logits([0.8, 0.3, 0.6])
    labels = torch.tensor([[1, 0, 0]])
    assert lovasz_softmax(logits, labels).item() == pytest.approx(0.4333333333)
    assert lovasz_softmax(logits, labels, classes=[1]).item() == pytest.approx(0.4166666667)


def test_softmax_hand_computed_absent_class_present_versus_all():
    # p1 = [0.8, 0.3, 0.6], labels [0, 0, 0]: class 1 is absent.
    # Class 0: fg all, errors = p1 = [0.8, 0.3, 0.6], |F| = 3: increments 1/3 each -> (0.8 + 0.6 + 0.3) / 3.
    # Class 1: no foreground, Delta_J = 1 for any non-empty set -> its largest error, 0.8.
    # "present": 0.5666667 (class 1 skipped); "all": (0.5666667 + 0.8) / 2 = 0.6833333.
    logits = _two_class_logits([0.8, 0.3, 0.6])
    labels = torch.zeros(1, 3, dtype=torch.long)
    assert lovasz_softmax(logits, labels, classes="present").item() == pytest.approx(0.5666666667)
    assert lovasz_softmax(logits, labels, classes="all").item() == pytest.approx(0.6833333333)


def test_softmax_without_present_class_is_a_differentiable_zero():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), 7)
    for per_image in (False, True):
        loss = LovaszSoftmaxLoss(ignore_index=7, per_image=per_image)(logits, labels)
        assert loss.item() == 0.0 and loss.dim() == 0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(logits))


# ---------------------------------------------------------------- against the brute-force oracle


def test_lovasz_grad_matches_set_increments_with_ignored_pixels():
    # Foreground flags in sorted order, with ignored positions: the increment of an ignored pixel is 0 and
    # the others are those of the sequence with the ignored pixels removed.
    fg = [1, 0, 0, 1, 0, 1, 0]
    valid = [True, False, True, True, False, True, True]
    kept = [i for i in range(len(fg)) if valid[i]]
    foreground = frozenset(i for i in kept if fg[i])
    expected_kept = greedy_increments(tuple(kept), foreground)
    expected = [expected_kept.get(i, 0.0) for i in range(len(fg))]
    got = lovasz_grad(torch.tensor(fg, dtype=torch.float64), torch.tensor(valid))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # An all-background sequence whose first pixels are ignored: Delta_J of the empty prefix is 0.
    got = lovasz_grad(torch.zeros(3, dtype=torch.float64), torch.tensor([False, True, True]))
    torch.testing.assert_close(got, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(6))
def test_hinge_matches_brute_force_extension_and_its_gradient(seed):
    generator = torch.Generator().manual_seed(seed)
    n = 6
    logits = (torch.randn(n, generator=generator, dtype=torch.float64) * 2).requires_grad_()
    labels = (torch.rand(n, generator=generator) < (0.5 if seed else 0.0)).long()  # seed 0: no foreground
    x, y = logits.tolist(), labels.tolist()
    errors = hinge_errors(x, y)
    foreground = frozenset(i for i in range(n) if y[i])
    expected, increments = lovasz_extension_sorted(errors, foreground)
    assert expected == pytest.approx(lovasz_extension_max(errors, foreground), abs=1e-12)

    loss = lovasz_hinge(logits.view(1, 1, 2, 3), labels.view(1, 1, 2, 3), per_image=False)
    loss.backward()
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # d m_i / d x_i = -(2 y_i - 1) where the hinge is active, 0 elsewhere.
    expected_grad = [-(2 * y[i] - 1) * increments[i] if errors[i] > 0 else 0.0 for i in range(n)]
    torch.testing.assert_close(logits.grad, torch.tensor(expected_grad, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(4))
def test_softmax_matches_brute_force_extension_and_autograd_of_the_formula(seed):
    generator = torch.Generator().manual_seed(100 + seed)
    num_classes, n = 3, 5
    logits = torch.randn(1, num_classes, n, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, num_classes, (1, n), generator=generator)
    labels[0, 0] = 0  # class 0 always present; others by chance
    classes = "all" if seed % 2 else "present"

    probs = torch.softmax(logits, dim=1)[0]
    per_class = []
    for c in range(num_classes):
        foreground = frozenset(i for i in range(n) if labels[0, i].item() == c)
        if classes == "present" and not foreground:
            continue
        errors_t = (torch.tensor([float(i in foreground) for i in range(n)], dtype=torch.float64) - probs[c]).abs()
        errors = errors_t.tolist()
        value, increments = lovasz_extension_sorted(errors, foreground)
        assert value == pytest.approx(lovasz_extension_max(errors, foreground), abs=1e-12)
        # The reference formula with the oracle's increments as constants: autograd gives the gradient.
        per_class.append(sum(errors_t[i] * increments[i] for i in range(n)))
    expected = torch.stack(per_class).mean()
    (expected_grad,) = torch.autograd.grad(expected, logits)

    loss = lovasz_softmax(logits, labels, classes=classes)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    torch.testing.assert_close(grad, expected_grad)


def test_ties_and_zero_errors_match_brute_force_value():
    # Integer logits give tied hinge errors and exact zeros (relu), where the sort order is arbitrary; the
    # value of the Lovasz extension does not depend on it.
    x = [1.0, 1.0, -1.0, 0.0, 2.0, 0.0, -1.0]
    y = [1, 1, 0, 0, 1, 1, 1]
    errors = hinge_errors(x, y)  # [0, 0, 0, 1, 0, 1, 2]
    foreground = frozenset(i for i in range(len(y)) if y[i])
    expected = lovasz_extension_max(errors, foreground)
    got = lovasz_hinge(torch.tensor([x], dtype=torch.float64), torch.tensor([y]), per_image=False)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    # Saturated softmax (logits +-1e4): errors exactly 0 or 1, tied.
    labels = torch.tensor([[0, 1, 1, 0, 2]])
    logits = torch.full((1, 3, 5), -1e4, dtype=torch.float64)
    logits[0, [0, 1, 2, 1, 0], range(5)] = 1e4  # pixels 2 and 4 predicted wrong
    expected = 0.0
    for c in range(3):
        fg = frozenset(i for i in range(5) if labels[0, i] == c)
        predicted = [logits[0, c, i].item() > 0 for i in range(5)]
        expected += lovasz_extension_max([float((i in fg) != predicted[i]) for i in range(5)], fg) / 3
    assert lovasz_softmax(logits, labels).item() == pytest.approx(expected, abs=1e-12)


def test_ignored_pixels_count_as_removed():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 9, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 9), generator=generator)
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[0, [1, 5]] = False
    keep[1, [0, 2, 8]] = False
    labels_ignored = torch.where(keep, labels, torch.full_like(labels, 255))
    for per_image in (False, True):
        got = lovasz_softmax(logits, labels_ignored, per_image=per_image, ignore_index=255)
        if per_image:
            parts = [lovasz_softmax(logits[b : b + 1, :, keep[b]], labels[b : b + 1, keep[b]]) for b in range(2)]
            expected = torch.stack(parts).mean()
        else:
            flat_logits = logits.permute(1, 0, 2)[:, keep].unsqueeze(0)
            expected = lovasz_softmax(flat_logits, labels[keep].unsqueeze(0))
        assert got.item() == pytest.approx(expected.item(), abs=1e-12)

    binary = (labels % 2).double()
    got = lovasz_hinge(logits[:, 0], torch.where(keep, binary, 255.0), per_image=True, ignore_index=255)
    parts = [lovasz_hinge(logits[b : b + 1, 0, keep[b]], binary[b : b + 1, keep[b]]) for b in range(2)]
    assert got.item() == pytest.approx(torch.stack(parts).mean().item(), abs=1e-12)


def test_per_image_average_counts_fully_ignored_images_as_zero():
    # As the reference lovasz_hinge: an image with only void pixels contributes logits.sum() * 0.
    logits = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 1, 3, 3)).double()
    labels[1] = 255
    both = lovasz_hinge(logits, labels, per_image=True, ignore_index=255)
    first = lovasz_hinge(logits[:1], labels[:1], per_image=True)
    assert both.item() == pytest.approx(first.item() / 2)


# ---------------------------------------------------------------- against smp (the reference code, float32 only)


def _with_grad(loss_fn, logits, labels):
    leaf = logits.detach().clone().requires_grad_()
    value = loss_fn(leaf, labels)
    value.backward()
    return value.detach(), leaf.grad


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_hinge_matches_smp(per_image, ignore_index):
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(3, 1, 6, 7, generator=generator, dtype=torch.float32) * 3
    labels = (torch.rand(3, 1, 6, 7, generator=generator) < 0.4).float()
    labels[2] = 0  # an image without foreground
    if ignore_index is not None:
        labels[torch.rand(labels.shape, generator=generator) < 0.2] = ignore_index
    ours = _with_grad(LovaszHingeLoss(per_image=per_image, ignore_index=ignore_index), logits, labels)
    theirs = _with_grad(smp.losses.LovaszLoss("binary", per_image=per_image, ignore_index=ignore_index), logits, labels)
    torch.testing.assert_close(ours, theirs)


def test_hinge_default_is_per_image_unlike_smp_default():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 1, 5, 5, generator=generator)
    labels = (torch.rand(2, 1, 5, 5, generator=generator) < 0.3).float()
    labels[1] = 0
    ours = LovaszHingeLoss()(logits, labels)
    torch.testing.assert_close(ours, smp.losses.LovaszLoss("binary", per_image=True)(logits, labels))
    assert abs(ours.item() - smp.losses.LovaszLoss("binary")(logits, labels).item()) > 1e-3


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("ignore_index", [None, 11])
def test_softmax_matches_smp(per_image, ignore_index):
    generator = torch.Generator().manual_seed(12)
    logits = torch.randn(3, 5, 6, 7, generator=generator, dtype=torch.float32) * 2
    labels = torch.randint(0, 4, (3, 6, 7), generator=generator)  # class 4 never present
    labels[1] = torch.randint(0, 2, (6, 7), generator=generator)  # an image with only classes 0 and 1
    if ignore_index is not None:
        labels[torch.rand(labels.shape, generator=generator) < 0.2] = ignore_index
    ours = _with_grad(LovaszSoftmaxLoss(per_image=per_image, ignore_index=ignore_index), logits, labels)
    reference = smp.losses.LovaszLoss("multiclass", per_image=per_image, ignore_index=ignore_index)
    torch.testing.assert_close(ours, _with_grad(reference, logits, labels))


def test_invalid_classes_and_shapes_are_refused():
    with pytest.raises(ValueError, match="classes"):
        LovaszSoftmaxLoss(classes="some")
    with pytest.raises(ValueError, match="out of range"):
        LovaszSoftmaxLoss(classes=[0, 3])(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="C >= 2"):
        LovaszSoftmaxLoss()(torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="one channel"):
        LovaszHingeLoss()(torch.randn(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))

"""Every loss of LOSSES: finite scalar values and gradients on degenerate inputs, extreme logits, half precision."""

from __future__ import annotations

import pytest
import torch

from ternaus_zoo.losses import LOSSES

IGNORE = 255
SHAPES = {"binary": (2, 1, 8, 8), "multiclass": (2, 4, 8, 8), "multilabel": (4, 5)}


def make_target(task: str, case: str, generator: torch.Generator) -> torch.Tensor:
    shape = SHAPES[task]
    if task == "multiclass":
        classes = shape[1]
        shape = (shape[0], *shape[2:])
        values = {
            "empty": torch.zeros(shape, dtype=torch.long),  # background only
            "full": torch.full(shape, classes - 1),  # one foreground class everywhere
            "random": torch.randint(0, classes, shape, generator=generator),
        }
    else:
        values = {
            "empty": torch.zeros(shape),
            "full": torch.ones(shape),
            "random": (torch.rand(shape, generator=generator) < 0.5).float(),
        }
    if case in values:
        return values[case]
    target = values["random"].clone()
    ignored = (
        torch.ones(shape, dtype=torch.bool) if case == "all_ignored" else torch.rand(shape, generator=generator) < 0.3
    )
    target[ignored] = IGNORE
    return target


def make_logits(task: str, case: str, target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shape = SHAPES[task]
    if case == "normal":
        return torch.randn(shape, generator=generator)
    # +-1e4: confidently right ("right") or confidently wrong ("wrong") where the target is known.
    if task == "multiclass":
        hot = torch.nn.functional.one_hot(target.clamp(max=shape[1] - 1), shape[1]).movedim(-1, 1).float()
    else:
        hot = target.clamp(max=1).reshape(shape).float()
    sign = 2 * hot - 1
    return 1e4 * (sign if case == "right" else -sign)


def check(name: str, target_case: str, logits_case: str, dtype: torch.dtype) -> None:
    cls = LOSSES[name]
    generator = torch.Generator().manual_seed(0)
    target = make_target(cls.task, target_case, generator)
    loss_fn = cls(ignore_index=IGNORE) if "ignored" in target_case else cls()
    logits = make_logits(cls.task, logits_case, target, generator).to(dtype).requires_grad_()
    loss = loss_fn(logits, target)
    assert loss.dim() == 0
    assert torch.isfinite(loss), f"{name}: {loss}"
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == dtype and logits.grad.shape == logits.shape
    assert torch.isfinite(logits.grad).all(), name


TARGET_CASES = [
    (name, case)
    for name in sorted(LOSSES)
    for case in ("empty", "full", "random", "some_ignored", "all_ignored")
    # multi-label classification losses have no ignore_index
    if not (LOSSES[name].task == "multilabel" and "ignored" in case)
]


@pytest.mark.parametrize("logits_case", ["normal", "right", "wrong"])
@pytest.mark.parametrize(("name", "target_case"), TARGET_CASES)
def test_finite_scalar_and_gradient(name, target_case, logits_case):
    check(name, target_case, logits_case, torch.float32)


@pytest.mark.parametrize("logits_case", ["normal", "wrong"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_precision_is_computed_in_float32(name, dtype, logits_case):
    check(name, "random", logits_case, dtype)
    cls = LOSSES[name]
    generator = torch.Generator().manual_seed(1)
    target = make_target(cls.task, "random", generator)
    logits = make_logits(cls.task, logits_case, target, generator).to(dtype)
    # The same rounded logits in float32 give the same value: the loss upcasts before reducing.
    torch.testing.assert_close(cls()(logits, target), cls()(logits.float(), target), rtol=1e-6, atol=1e-6)

"""MixUp and CutMix within a batch, with the labels (and auxiliary targets) mixed accordingly.

Each sample ``i`` is mixed with sample ``index[i]`` of the same batch (a random permutation), with a
weight ``lam ~ Beta(alpha, alpha)``:

* :func:`mixup` (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018):
  ``x = lam * x + (1 - lam) * x[index]``, the same for the labels and the auxiliary targets;
* :func:`cutmix` (Yun et al., "CutMix", ICCV 2019): a box of area about ``(1 - lam) * H * W`` of ``x[index]``
  is pasted into ``x``; ``lam`` is then corrected to the uncovered fraction (the box is clipped at the
  borders) and the labels mixed with it; auxiliary targets are cut with the same box (scaled to their
  resolution), so each pixel keeps the target of the image it came from.

Auxiliary targets follow :mod:`ternaus_zoo.data.aux_targets`: ``(B, C, h, w)`` in ``[0, 1]``, negative where
unknown. MixUp keeps a pixel known only where both samples know it.

Randomness: with ``rng=None`` the permutation and ``lam`` come from torch's global generator (so
``seed_everything`` governs them); a ``numpy.random.Generator`` (or an int seed) makes a call reproducible
on its own; ``lam=``, ``index=`` and ``box=`` fix them outright (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ternaus_zoo.data.aux_targets import IGNORE

Rng = np.random.Generator | int | None
Box = tuple[int, int, int, int]
"""``(top, left, bottom, right)`` in pixels, bottom and right exclusive."""


@dataclass
class MixedBatch:
    """The result of a mix.

    Attributes:
        images: ``(B, C_in, H, W)``.
        labels: ``(B, C)`` float, mixed.
        aux: ``(B, C, h, w)`` mixed auxiliary targets, or ``None``.
        lam: weight of the original sample (for CutMix, the fraction of the image it keeps).
        index: ``(B,)`` the partner of every sample.
        box: CutMix's box in image pixels, ``None`` for MixUp.
    """

    images: Tensor
    labels: Tensor
    aux: Tensor | None
    lam: float
    index: Tensor
    box: Box | None = None


def _generator(rng: Rng) -> np.random.Generator | None:
    return np.random.default_rng(rng) if isinstance(rng, int) else rng


def sample_lambda(alpha: float, rng: Rng = None) -> float:
    """``lam ~ Beta(alpha, alpha)``; ``alpha <= 0`` gives 1 (no mixing)."""
    if alpha <= 0:
        return 1.0
    generator = _generator(rng)
    if generator is None:
        return float(torch.distributions.Beta(alpha, alpha).sample())
    return float(generator.beta(alpha, alpha))


def sample_index(batch_size: int, rng: Rng = None, device: torch.device | None = None) -> Tensor:
    """A random permutation of ``range(batch_size)`` (``(B,)`` int64)."""
    generator = _generator(rng)
    if generator is None:
        return torch.randperm(batch_size, device=device)
    return torch.from_numpy(generator.permutation(batch_size)).to(device)


def _labels(labels: Tensor) -> Tensor:
    if labels.dim() != 2:
        raise ValueError(f"labels must be (B, C) (one-hot or 0/1 per class), got {tuple(labels.shape)}")
    return labels.float()


def _check(images: Tensor, labels: Tensor, aux: Tensor | None) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if labels.shape[0] != images.shape[0] or (aux is not None and aux.shape[0] != images.shape[0]):
        shapes = (tuple(images.shape), tuple(labels.shape), None if aux is None else tuple(aux.shape))
        raise ValueError(f"images, labels and aux differ in batch size: {shapes}")
    if aux is not None and aux.dim() != 4:
        raise ValueError(f"aux targets must be (B, C, h, w), got {tuple(aux.shape)}")


def mixup(
    images: Tensor,
    labels: Tensor,
    aux: Tensor | None = None,
    *,
    alpha: float = 0.4,
    lam: float | None = None,
    index: Tensor | None = None,
    rng: Rng = None,
) -> MixedBatch:
    """MixUp: ``lam * sample + (1 - lam) * sample[index]`` for images, labels and auxiliary targets.

    Args:
        images: ``(B, C_in, H, W)``.
        labels: ``(B, C)`` 0/1, one-hot or soft.
        aux: ``(B, C, h, w)`` auxiliary targets (negative = unknown), or ``None``.
        alpha: Beta's parameter (ignored when ``lam`` is given).
        lam: a fixed weight in ``[0, 1]``.
        index: a fixed ``(B,)`` partner index.
        rng: see the module docstring.

    Returns:
        A :class:`MixedBatch`; its ``aux`` is :data:`IGNORE` where either sample's target is unknown.
    """
    labels = _labels(labels)
    _check(images, labels, aux)
    generator = _generator(rng)
    lam = sample_lambda(alpha, generator) if lam is None else float(lam)
    index = sample_index(len(images), generator, images.device) if index is None else index.to(images.device)
    mixed_images = lam * images + (1.0 - lam) * images[index]
    mixed_labels = lam * labels + (1.0 - lam) * labels[index]
    mixed_aux = None
    if aux is not None:
        partner = aux[index]
        known = (aux >= 0) & (partner >= 0)
        mixed_aux = (lam * aux + (1.0 - lam) * partner).masked_fill(~known, IGNORE)
    return MixedBatch(mixed_images, mixed_labels, mixed_aux, lam, index)


def cutmix_box(height: int, width: int, lam: float, rng: Rng = None) -> Box:
    """A box of area about ``(1 - lam) * H * W`` (side ratios ``sqrt(1 - lam)``) at a uniform centre,
    clipped at the image borders: ``(top, left, bottom, right)``."""
    generator = _generator(rng)
    cut = math.sqrt(max(0.0, 1.0 - lam))
    cut_h, cut_w = round(height * cut), round(width * cut)
    if generator is None:
        centre_y, centre_x = (int(v) for v in (torch.randint(height, ()), torch.randint(width, ())))
    else:
        centre_y, centre_x = int(generator.integers(height)), int(generator.integers(width))
    top, bottom = max(0, centre_y - cut_h // 2), min(height, centre_y + cut_h - cut_h // 2)
    left, right = max(0, centre_x - cut_w // 2), min(width, centre_x + cut_w - cut_w // 2)
    return top, left, bottom, right


def _scale_box(box: Box, size: tuple[int, int], new_size: tuple[int, int]) -> Box:
    """The box in another resolution (rounded to the nearest pixel edge)."""
    (height, width), (new_h, new_w) = size, new_size
    top, left, bottom, right = box
    return (
        round(top * new_h / height),
        round(left * new_w / width),
        round(bottom * new_h / height),
        round(right * new_w / width),
    )


def cutmix(
    images: Tensor,
    labels: Tensor,
    aux: Tensor | None = None,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    index: Tensor | None = None,
    box: Box | None = None,
    rng: Rng = None,
) -> MixedBatch:
    """CutMix: paste a box of ``images[index]`` into ``images``; labels mixed by the area kept.

    Args:
        images: ``(B, C_in, H, W)``.
        labels: ``(B, C)`` 0/1, one-hot or soft.
        aux: ``(B, C, h, w)`` auxiliary targets at any resolution, or ``None``; the box is scaled to it.
        alpha: Beta's parameter of the area (ignored when ``lam`` or ``box`` is given).
        lam: the intended fraction kept (the box then has area about ``(1 - lam) * H * W``).
        index: a fixed ``(B,)`` partner index.
        box: a fixed ``(top, left, bottom, right)`` box in image pixels (overrides ``lam``).
        rng: see the module docstring.

    Returns:
        A :class:`MixedBatch` whose ``lam`` is ``1 - box area / (H * W)``, the weight of the labels.
    """
    labels = _labels(labels)
    _check(images, labels, aux)
    generator = _generator(rng)
    height, width = images.shape[-2:]
    if box is None:
        lam = sample_lambda(alpha, generator) if lam is None else float(lam)
        box = cutmix_box(height, width, lam, generator)
    top, left, bottom, right = box
    if not (0 <= top <= bottom <= height and 0 <= left <= right <= width):
        raise ValueError(f"box {box} is not inside the {height}x{width} image")
    index = sample_index(len(images), generator, images.device) if index is None else index.to(images.device)
    mixed_images = images.clone()
    mixed_images[:, :, top:bottom, left:right] = images[index, :, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    mixed_labels = kept * labels + (1.0 - kept) * labels[index]
    mixed_aux = None
    if aux is not None:
        a_top, a_left, a_bottom, a_right = _scale_box(box, (height, width), tuple(aux.shape[-2:]))
        mixed_aux = aux.clone()
        mixed_aux[:, :, a_top:a_bottom, a_left:a_right] = aux[index, :, a_top:a_bottom, a_left:a_right]
    return MixedBatch(mixed_images, mixed_labels, mixed_aux, kept, index, box)


class BatchMixer:
    """MixUp and/or CutMix applied to a batch with probability ``prob``, for a training step.

    With both alphas positive, one of the two is picked per batch (CutMix with probability
    ``switch_prob``), as in timm's ``Mixup``.

    Args:
        mixup_alpha: MixUp's Beta parameter (0: off; 0.2-0.4 is usual).
        cutmix_alpha: CutMix's Beta parameter (0: off; 1.0 is usual).
        prob: probability that a batch is mixed at all.
        switch_prob: probability of CutMix when both are on.
    """

    def __init__(
        self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0, switch_prob: float = 0.5
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"alphas must be >= 0, got mixup {mixup_alpha}, cutmix {cutmix_alpha}")
        if not (0.0 <= prob <= 1.0 and 0.0 <= switch_prob <= 1.0):
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, images: Tensor, labels: Tensor, aux: Tensor | None = None, rng: Rng = None) -> MixedBatch:
        """Mix ``images`` ``(B, C_in, H, W)``, ``labels`` ``(B, C)`` and ``aux`` ``(B, C, h, w)`` (or not)."""
        generator = _generator(rng)

        def uniform() -> float:
            return float(torch.rand(())) if generator is None else float(generator.random())

        if not self.enabled or len(images) < 2 or uniform() >= self.prob:
            index = torch.arange(len(images), device=images.device)
            return MixedBatch(images, _labels(labels), aux, 1.0, index)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or uniform() < self.switch_prob)
        if use_cutmix:
            return cutmix(images, labels, aux, alpha=self.cutmix_alpha, rng=generator)
        return mixup(images, labels, aux, alpha=self.mixup_alpha, rng=generator)

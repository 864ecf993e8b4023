"""Padding to the model's multiple and cropping back."""

from __future__ import annotations

import pytest
import torch

from ternaus_zoo.models import crop_padding, pad_to_multiple


@pytest.mark.parametrize("size", [(32, 32), (33, 70), (5, 3), (1, 64)])
@pytest.mark.parametrize("multiple", [16, 32, 64])
def test_pad_then_crop_is_identity(size, multiple):
    images = torch.randn(2, 3, *size)
    padded, padding = pad_to_multiple(images, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - size[0] < multiple and padded.shape[-1] - size[1] < multiple
    torch.testing.assert_close(crop_padding(padded, padding), images, rtol=0, atol=0)


def test_no_padding_when_already_a_multiple():
    images = torch.randn(1, 1, 64, 32)
    padded, padding = pad_to_multiple(images, 32)
    assert padded is images and padding == (0, 0, 0, 0)


def test_padding_is_centred_and_reflects():
    images = torch.arange(6.0).reshape(1, 1, 1, 6)  # one row 0..5, padded to width 8: one column each side
    padded, padding = pad_to_multiple(images.expand(1, 1, 2, 6), 8)
    assert padding == (1, 1, 3, 3)
    # Height 2 cannot reflect 3 rows, so the whole pad falls back to replication.
    assert padded[0, 0, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 5]
    padded, _ = pad_to_multiple(images.expand(1, 1, 8, 6), 8)
    assert padded[0, 0, 0].tolist() == [1, 0, 1, 2, 3, 4, 5, 4]

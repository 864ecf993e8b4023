"""benchmarks.select's replay of a selection on the hold-out: each trial scored on top of the steps kept before it,
with the predictions of the TTA it chose."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.select import replay, score


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def test_replay_scores_each_trial_after_the_kept_ones():
    truths = {"a": _square(16, 2, 2, 6), "b": _square(16, 8, 8, 5)}
    plain = {stem: truth * 0.9 + 0.05 for stem, truth in truths.items()}
    plain["a"][12, 12] = 0.95  # a speck only the plain predictions have
    under_tta = {stem: truth * 0.9 + 0.05 for stem, truth in truths.items()}
    under_tta["b"][0, 0] = 0.95  # a speck under TTA
    probabilities = {"none": plain, "d4": under_tta}
    selection = {
        "ensemble": {"score": {"score": 0.9}},
        "trials": [
            {"step": "tta", "value": "d4", "kept": True, "gain": 0.01, "interval": [0.001, 0.02]},
            {"step": "threshold", "value": 0.99, "kept": False, "gain": -0.5, "interval": [-0.6, -0.4]},
            {"step": "remove_small", "tried": False, "reason": "no component"},
            {"step": "keep_largest", "value": {"name": "keep_largest", "scope": "foreground"}, "kept": True,
             "gain": 0.02, "interval": [0.01, 0.03]},
        ],
    }  # fmt: skip
    rows = replay(selection, probabilities, truths, 0.5)
    assert [row["step"] for row in rows] == ["ensemble", "tta", "threshold", "remove_small", "keep_largest"]
    # by hand: 61 foreground pixels; the plain predictions add one false positive, so do the TTA ones
    assert rows[0]["holdout"]["dice"] == pytest.approx(122 / 123)
    assert rows[1]["holdout_gain"] == pytest.approx(0.0)
    assert rows[2]["holdout"]["dice"] == pytest.approx(0.0)  # nothing above 0.99: not kept, so it does not carry on
    assert rows[3] == {"step": "remove_small", "tried": False, "reason": "no component"}
    # keep_largest on the TTA predictions (kept before it) drops b's speck, not a's: perfect
    assert rows[4]["holdout"]["dice"] == pytest.approx(1.0) and rows[4]["holdout_gain"] == pytest.approx(1 / 123)
    assert score(plain, truths, 0.5, [])["mean_iou"] < 1.0

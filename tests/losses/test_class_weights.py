"""Per-class loss weights for rare classes: from pixel frequencies, and a wrong count met on the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ternaus_zoo.cli import main
from ternaus_zoo.errors import BadValueError
from ternaus_zoo.losses import CrossEntropyLoss, frequency_weights
from tests.data.synthetic import random_image, write


def test_frequency_weights_lift_rare_classes_by_the_inverse_square_root_and_keep_an_average_pixel_at_one():
    frequencies = [0.9, 0.0999, 0.0001, 0.0]
    weights = frequency_weights(frequencies)
    assert weights[2] / weights[0] == pytest.approx(math.sqrt(0.9 / 0.0001))
    assert weights[1] / weights[0] == pytest.approx(math.sqrt(0.9 / 0.0999))
    assert sum(f * w for f, w in zip(frequencies, weights, strict=True)) == pytest.approx(1.0)
    assert weights[3] == max(weights[:3])  # absent from the masks: never in a target, kept finite
    inverse = frequency_weights(frequencies, power=1.0)
    assert inverse[2] / inverse[0] == pytest.approx(9000)
    CrossEntropyLoss(class_weights=weights)  # what the plan writes is what the loss takes


@pytest.mark.parametrize("frequencies", [[0.0, 0.0], [0.5, -0.1], [0.5, float("nan")]])
def test_frequency_weights_refuse_what_is_not_a_frequency(frequencies):
    with pytest.raises(BadValueError, match="class frequencies"):
        frequency_weights(frequencies)


def test_class_weights_of_the_wrong_count_end_fit_with_one_line(tmp_path, monkeypatch, capsys):
    for index in range(4):
        write(tmp_path / "data" / "images" / f"{index}.png", random_image(32, 32, seed=index))
        bands = np.repeat(np.arange(32)[None] * 3 // 32, 32, axis=0).astype(np.uint8)  # classes 0, 1, 2
        write(tmp_path / "data" / "masks" / f"{index}.png", bands)
    monkeypatch.chdir(tmp_path)
    arguments = [
        "fit",
        f"--data.dataset={tmp_path / 'data'}",
        "--data.mask_mode=classes",
        "--model.num_classes=3",
        '--model.loss={"ce": {"class_weights": [1.0, 2.0]}}',
        "--model.model=unet",
        '--model.model_kwargs={"num_filters": 4, "depth": 3}',
        "--data.num_workers=0",
        "--data.n_folds=2",
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(error.splitlines()) == 1
    assert "class_weights has 2 values for 3 classes" in error

"""The prediction writers, called as Lightning calls them, and the deprecated ``writer`` module."""

from __future__ import annotations

import csv
import importlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from ternaus_zoo.inference.postprocessing import steps_from_dicts
from ternaus_zoo.inference.writers import LabelWriter, MaskWriter, OutOfFoldWriter, binary_oof_statistics

TRAINER = SimpleNamespace(world_size=1, global_rank=0, datamodule=None)


def test_mask_writer_writes_masks_and_probabilities(tmp_path):
    probabilities = torch.tensor([[[0.2, 0.7], [0.9, 0.5]]])
    writer = MaskWriter(str(tmp_path), threshold=0.5, save_probabilities=True)
    writer.write_on_batch_end(TRAINER, None, {"name": ["a"], "probabilities": [probabilities]}, None, None, 0, 0)
    assert cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_GRAYSCALE).tolist() == [[0, 255], [255, 0]]
    assert np.load(tmp_path / "a.npy").dtype == np.float16


def test_mask_writer_cleans_each_mask_with_the_kept_steps(tmp_path):
    """A ring (its hole filled) and a one-pixel speck (dropped) at threshold 0.5; class masks keep their indices."""
    probabilities = torch.zeros(1, 10, 10)
    probabilities[0, 1:6, 1:6] = 0.9
    probabilities[0, 3, 3] = 0.1  # the ring's hole
    probabilities[0, 8, 8] = 0.8  # the speck: 1 pixel of 100
    steps = steps_from_dicts(
        [{"name": "remove_small", "min_fraction": 0.02}, {"name": "fill_holes", "scope": "per_class"}]
    )
    expected = np.zeros((10, 10), np.uint8)
    expected[1:6, 1:6] = 255
    classes = torch.cat([1 - probabilities, probabilities])  # background and the foreground as class 1
    for name, scores in (("binary", probabilities), ("classes", classes)):
        writer = MaskWriter(str(tmp_path), save_probabilities=True, postprocessing=steps)
        writer.write_on_batch_end(TRAINER, None, {"name": [name], "probabilities": [scores]}, None, None, 0, 0)
        written = cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(written, expected if name == "binary" else expected // 255), name
        assert np.array_equal(np.load(tmp_path / f"{name}.npy"), scores.half().numpy())  # not cleaned
    multilabel = MaskWriter(str(tmp_path / "multi"), multilabel=True, class_names=["a", "b"], postprocessing=steps)
    batch = {"name": ["m"], "probabilities": [torch.cat([probabilities, probabilities.flip(-1)])]}
    multilabel.write_on_batch_end(TRAINER, None, batch, None, None, 0, 0)
    assert np.array_equal(cv2.imread(str(tmp_path / "multi" / "a" / "m.png"), cv2.IMREAD_GRAYSCALE), expected)
    flipped = cv2.imread(str(tmp_path / "multi" / "b" / "m.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(flipped, expected[:, ::-1])


def test_label_writer_appends_batches_under_one_header(tmp_path):
    writer = LabelWriter(str(tmp_path / "out" / "labels.csv"), digits=2)
    module = SimpleNamespace(hparams=SimpleNamespace(label_names=["cat", "dog"]))
    writer.on_predict_start(TRAINER, module)
    for name, value in (("x", 0.25), ("y", 0.75)):
        prediction = {"name": [name], "probabilities": torch.tensor([[value, 1 - value]]), "labels": torch.eye(2)[:1]}
        writer.write_on_batch_end(TRAINER, module, prediction, None, None, 0, 0)
    rows = list(csv.reader((tmp_path / "out" / "labels.csv").open()))
    assert rows == [
        ["name", "prob_cat", "prob_dog", "cat", "dog"],
        ["x", "0.25", "0.75", "1", "0"],
        ["y", "0.75", "0.25", "1", "0"],
    ]


def test_out_of_fold_writer_stores_eval_size_probabilities_and_full_size_scores(tmp_path):
    mask = np.zeros((8, 16), dtype=np.uint8)
    mask[:, :4] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    probabilities = torch.rand(1, 8, 16, generator=torch.Generator().manual_seed(0))
    writer = OutOfFoldWriter(tmp_path / "oof", eval_size=8, threshold=0.5, masks={"m": tmp_path / "m.png"})
    writer.write_on_batch_end(TRAINER, None, {"name": ["m"], "probabilities": [probabilities]}, None, None, 0)
    with np.load(tmp_path / "oof" / "m.npz") as record:
        assert record["probabilities"].shape == (1, 4, 8) and record["probabilities"].dtype == np.float16
        assert record["original_size"].tolist() == [8, 16]
        expected = binary_oof_statistics(probabilities[0], torch.from_numpy(mask > 127))
        assert all(np.array_equal(record[key], value) for key, value in expected.items())


def test_the_writer_module_is_a_deprecated_alias():
    writer = importlib.import_module("ternaus_zoo.inference.writer")
    with pytest.warns(DeprecationWarning, match="ternaus_zoo.inference.writers.MaskWriter"):
        assert writer.MaskWriter is MaskWriter
    with pytest.raises(AttributeError):
        writer.LabelWriter  # noqa: B018

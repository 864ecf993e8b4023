"""Class names of multi-class segmentation: from the data module into the module, its logged per-class scores
(``val/iou/<name>``), the checkpoint, the rebuilt and the saved model, the test table, and the bag's per-class
out-of-fold scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from ternaus_zoo.bagging import ClassConfusion, class_scores, pool_class_scores
from ternaus_zoo.cli import main
from ternaus_zoo.data import SegmentationDataModule, valid_size
from ternaus_zoo.errors import BadValueError
from ternaus_zoo.inference import model_from_checkpoint
from ternaus_zoo.metrics import confusion_stats, dice_score, iou_score
from ternaus_zoo.models.pretrained import CONFIG_FILE, save_pretrained
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.weights import load_container
from tests.training.test_cli import TINY

NAMES = ["background", "left", "right"]
TINY_UNET = {"model": "unet", "model_kwargs": {"num_filters": 4, "depth": 3}}
CLASSES = {"num_classes": 3, "ignore_index": 9}


def _module(**options) -> SegmentationModule:
    return SegmentationModule(**TINY_UNET, **CLASSES, loss={"ce": {"weight": 1.0, "ignore_index": 9}}, **options)


def _data(folder: Path, **options) -> SegmentationDataModule:
    settings = {"image_size": 32, "val_size": 32, "batch_size": 2, "num_workers": 0, "n_folds": 2}
    return SegmentationDataModule(
        dataset=str(folder), model_name="unet", mask_mode="classes", **CLASSES, **{**settings, **options}
    )


def _trainer(tmp_path: Path, **options) -> pl.Trainer:
    settings = {"enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": tmp_path}
    return pl.Trainer(**{"logger": False, **settings, **options})


def test_names_travel_into_the_logs_the_checkpoint_the_model_and_the_test_table(class_folder, tmp_path, capsys):
    module = _module()  # no names of its own: it adopts the data module's
    data = _data(class_folder, class_names=NAMES, holdout_every=4)
    trainer = _trainer(tmp_path, max_epochs=1, logger=CSVLogger(tmp_path, name="", version="run"))
    trainer.fit(module, datamodule=data)  # with a logger: Lightning merges both hyperparameters without a clash

    with open(tmp_path / "run" / "metrics.csv") as file:
        header = next(csv.reader(file))
    for score in ("iou", "dice"):
        assert {f"val/{score}/{name}" for name in NAMES} <= set(header)
    assert {"val/iou", "val/dice", "val/miou"} <= set(header)  # the aggregate keys stay

    (best,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    checkpoint = load_container(best)
    assert checkpoint["hyper_parameters"]["class_names"] == NAMES
    assert "class_names" not in checkpoint["datamodule_hyper_parameters"]  # saved once, by the module
    model = model_from_checkpoint(best)
    assert model.info.class_names == tuple(NAMES)
    config = json.loads((save_pretrained(model, tmp_path / "saved") / CONFIG_FILE).read_text())
    assert config["info"]["class_names"] == NAMES
    assert SegmentationModule.load_from_checkpoint(best).class_names == NAMES

    capsys.readouterr()
    (results,) = trainer.test(module, datamodule=data, ckpt_path=best)
    output = capsys.readouterr().out
    assert {f"test/{score}/{name}" for score in ("iou", "dice") for name in NAMES} <= set(results)
    table = output[output.index("Per-class test scores") :]
    assert output.index("Per-class test scores") > output.index("test/miou")  # after Lightning's own table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[3 : 3 + len(NAMES)]}
    assert list(rows) == NAMES
    for name, (iou, dice) in rows.items():
        assert float(iou) == pytest.approx(results[f"test/iou/{name}"], abs=5e-5)
        assert float(dice) == pytest.approx(results[f"test/dice/{name}"], abs=5e-5)


def _expected_scores(data: SegmentationDataModule, predicted_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU and Dice of a model that predicts ``predicted_class`` everywhere, from the validation masks
    as the module scores them (at the evaluation size, without the padding)."""
    data.setup("validate")
    totals = torch.zeros(3, 3, dtype=torch.long)
    for index in range(len(data.val_dataset)):
        item = data.val_dataset[index]
        height, width = valid_size(tuple(item["original_size"].tolist()), data.val_size)
        mask = item["mask"][None, :height, :width]
        prediction = torch.full_like(mask, predicted_class)
        tp, fp, fn, _ = confusion_stats(prediction, mask, mode="multiclass", num_classes=3, ignore_index=9)
        totals += torch.cat([tp, fp, fn])
        # by hand as well: every scored pixel is predicted as the class
        scored = mask != 9
        assert int(tp[0, predicted_class]) == int((mask == predicted_class).sum())
        assert int(fp[0, predicted_class]) == int((scored & (mask != predicted_class)).sum())
    tp, fp, fn = (row[None] for row in totals)
    return iou_score(tp, fp, fn, reduction="per_class"), dice_score(tp, fp, fn, reduction="per_class")


@pytest.mark.parametrize("names", [NAMES, None])
def test_logged_per_class_scores_are_those_of_the_confusion_counts(class_folder, tmp_path, names):
    module = _module(class_names=names)
    logits = torch.tensor([-5.0, 5.0, -5.0])  # "left" everywhere
    module.forward = lambda images: logits.view(1, 3, 1, 1).expand(len(images), 3, *images.shape[-2:])
    data = _data(class_folder)
    (scores,) = _trainer(tmp_path).validate(module, datamodule=data)
    iou, dice = _expected_scores(data, predicted_class=1)
    assert 0 < iou[1] < 1 and iou[0] == 0 and iou[2] == 0
    labels = names or ["class0", "class1", "class2"]
    for index, name in enumerate(labels):
        assert scores[f"val/iou/{name}"] == pytest.approx(float(iou[index]), abs=1e-6)
        assert scores[f"val/dice/{name}"] == pytest.approx(float(dice[index]), abs=1e-6)
    assert scores["val/miou"] == pytest.approx(float(iou.mean()), abs=1e-6)


def test_a_wrong_number_of_names_is_refused_naming_both_numbers(class_folder, tmp_path):
    with pytest.raises(BadValueError, match=r"data\.class_names has 2 names for num_classes=3"):
        _data(class_folder, class_names=["background", "left"])
    with pytest.raises(BadValueError, match=r"model\.class_names has 4 names for num_classes=3"):
        _module(class_names=[*NAMES, "extra"])
    with pytest.raises(BadValueError, match="distinct, non-empty names"):
        _data(class_folder, class_names=["left", "left", "right"])
    with pytest.raises(BadValueError, match="must be a list of names"):
        _data(class_folder, class_names="background")
    # names given to both that differ: refused when the run starts, before training
    module = _module(class_names=NAMES)
    with pytest.raises(BadValueError, match=r"differ from the model's class_names"):
        _trainer(tmp_path, max_epochs=1).fit(module, datamodule=_data(class_folder, class_names=["a", "b", "c"]))


def test_class_confusion_scores_the_argmax_at_the_masks_resolution(tmp_path):
    mask = np.array([[0, 1, 2, 9], [1, 1, 2, 2]], np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), mask)
    probabilities = torch.zeros(3, 2, 4)
    probabilities[1] = 0.8  # "left" everywhere but the last column
    probabilities[2, :, 3] = 0.9
    confusion = ClassConfusion({"a": tmp_path / "a.png"}, num_classes=3, ignore_index=9)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    confusion.on_predict_start(trainer, pl.LightningModule())
    confusion.on_predict_batch_end(trainer, pl.LightningModule(), {"name": ["a"], "probabilities": [probabilities]},
                                   None, 0)  # fmt: skip
    confusion.on_predict_end(trainer, pl.LightningModule())
    # scored pixels (9 left out): predicted 1 1 1 | 1 1 1 2 against 0 1 2 | 1 1 2 2
    assert confusion.counts == {"tp": [0, 3, 1], "fp": [0, 3, 0], "fn": [1, 0, 2]}
    scores = class_scores(confusion.counts, NAMES)
    assert scores["iou_per_class"] == {"background": 0.0, "left": 0.5, "right": pytest.approx(1 / 3)}
    assert scores["dice_per_class"] == {"background": 0.0, "left": pytest.approx(2 / 3), "right": 0.5}
    assert scores["miou"] == pytest.approx((0.5 + 1 / 3) / 3)

    pooled = pool_class_scores([scores, class_scores({"tp": [2, 0, 0], "fp": [0, 0, 0], "fn": [0, 0, 0]}, NAMES)])
    assert pooled["class_counts"] == {"tp": [2, 3, 1], "fp": [0, 3, 0], "fn": [1, 0, 2]}
    assert pooled["iou_per_class"]["background"] == pytest.approx(2 / 3)
    absent = class_scores({"tp": [1, 0, 0], "fp": [0, 0, 0], "fn": [0, 0, 0]})
    assert absent["iou_per_class"] == {"class0": 1.0, "class1": None, "class2": None}  # None, not NaN, in JSON
    assert pool_class_scores([scores, {"n_images": 2}]) == {}  # a fold without counts: no pooled scores


def test_multiclass_bag_manifest_holds_per_class_oof_scores_by_name(class_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bag_dir = tmp_path / "bag"
    options = [
        "--model.num_classes=3",
        "--model.ignore_index=9",
        '--model.loss={"ce": {"weight": 1.0, "ignore_index": 9}}',
        "--data.mask_mode=classes",
        f"--data.class_names={json.dumps(NAMES)}",
    ]
    main(["bag", f"--bag_dir={bag_dir}", f"--data.dataset={class_folder}", "--trainer.max_epochs=1", "--folds=2",
          *TINY, *options])  # fmt: skip
    manifest = json.loads((bag_dir / "manifest.json").read_text())
    oof = manifest["oof"]
    assert oof["class_names"] == NAMES and list(oof["iou_per_class"]) == NAMES and list(oof["dice_per_class"]) == NAMES

    # the pooled counts are the folds' counts summed, and they cover every labelled pixel of the 8 masks once
    masks = np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in (class_folder / "masks").iterdir()])
    counts = oof["class_counts"]
    for key in ("tp", "fp", "fn"):
        per_fold = np.array([entry["oof"]["class_counts"][key] for entry in manifest["folds"]])
        assert per_fold.shape == (2, 3) and counts[key] == per_fold.sum(0).tolist()
    for index in range(3):
        assert counts["tp"][index] + counts["fn"][index] == int((masks == index).sum())
    assert sum(counts["tp"]) + sum(counts["fp"]) == int((masks != 9).sum())
    for index, name in enumerate(NAMES):
        denominator = counts["tp"][index] + counts["fp"][index] + counts["fn"][index]
        expected = counts["tp"][index] / denominator if denominator else None
        assert oof["iou_per_class"][name] == (pytest.approx(expected) if expected is not None else None)

    for entry in manifest["folds"]:
        assert list(entry["oof"]["iou_per_class"]) == NAMES
        assert {f"val/iou/{name}" for name in NAMES} <= set(entry["metrics"])
    assert {f"val/iou/{name}" for name in NAMES} <= set(manifest["metrics"])
    checkpoint = load_container(bag_dir / manifest["checkpoints"][0])
    assert checkpoint["hyper_parameters"]["class_names"] == NAMES

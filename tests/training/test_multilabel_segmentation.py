"""Multi-label segmentation end to end: a binary loss per channel, per-class scores, the flag adopted from the data
module into the checkpoint, and both predict routes writing one mask folder per class."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from ternaus_zoo.cli import main
from ternaus_zoo.losses import PerChannelLoss, SoftJaccardLoss, build_loss
from ternaus_zoo.metrics import SegmentationMetrics, confusion_stats, iou_score
from tests.data.test_multilabel_masks import write_class_folders
from tests.training.test_cli import TINY


def test_per_channel_loss_is_the_mean_of_each_channels_binary_loss():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    target = (torch.rand(2, 3, 8, 8, generator=generator) > 0.5).float()
    jaccard = SoftJaccardLoss()
    expected = sum(jaccard(logits[:, k : k + 1], target[:, k : k + 1]) for k in range(3)) / 3
    torch.testing.assert_close(PerChannelLoss(jaccard)(logits, target), expected)
    # the pooled (all channels as one mask) Jaccard differs: per channel is what multi-label needs
    assert not torch.isclose(jaccard(logits.reshape(2, 1, 24, 8), target.reshape(2, 1, 24, 8)), expected)
    built = build_loss({"bce": 0.5, "jaccard": 0.5}, per_channel=True)
    assert all(isinstance(term, PerChannelLoss) for term in built.losses.values())
    with pytest.raises(ValueError, match="'ce' is multiclass"):
        build_loss("ce", per_channel=True)


def test_multilabel_metrics_score_each_channel_as_a_binary_mask():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 2, 8, 8, generator=generator)
    target = (torch.rand(4, 2, 8, 8, generator=generator) > 0.6).long()
    metric = SegmentationMetrics(num_classes=2, multilabel=True)
    metric.update(logits, target)
    scores = metric.compute()
    for k in range(2):
        tp, fp, fn, _ = confusion_stats(logits[:, k : k + 1], target[:, k : k + 1], mode="binary")
        expected = iou_score(tp.sum(0, keepdim=True), fp.sum(0, keepdim=True), fn.sum(0, keepdim=True))
        torch.testing.assert_close(scores["iou_per_class"][k], expected)
    torch.testing.assert_close(scores["miou"], scores["iou_per_class"].mean())


def test_fit_adopts_multilabel_and_both_predict_routes_write_a_folder_per_class(tmp_path, monkeypatch):
    write_class_folders(tmp_path / "streets", count=8, size=32)
    monkeypatch.chdir(tmp_path)
    names = '--data.class_names=["road", "ground"]'
    main(["fit", f"--data.dataset={tmp_path / 'streets'}", "--data.mask_mode=multilabel", "--model.num_classes=2",
          names, *TINY, "--trainer.max_epochs=1"])  # fmt: skip
    (run,) = (tmp_path / "runs" / "lightning_logs").iterdir()
    with open(run / "metrics.csv") as file:
        header = next(csv.reader(file))
    assert {"val/miou", "val/iou/road", "val/iou/ground"} <= set(header)
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["hyper_parameters"]["multilabel"] is True

    images = tmp_path / "streets" / "images"
    for route in (["--tta=none"], ["--tta=hflip", "--tile_size=16"]):
        output = tmp_path / f"out{len(route)}"
        main(["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={images}", f"--writer.output_dir={output}",
              *route])  # fmt: skip
        assert sorted(path.name for path in output.iterdir()) == ["ground", "road"], route
        for folder in ("road", "ground"):
            masks = sorted((output / folder).glob("*.png"))
            assert len(masks) == 8
            mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (32, 32) and set(np.unique(mask).tolist()) <= {0, 255}
    lightning_route = tmp_path / "out1"
    # the checkpoint alone says multi-label and names the classes
    main(["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={images}",
          f"--writer.output_dir={tmp_path / 'lightning'}"])  # fmt: skip
    assert sorted(path.name for path in (tmp_path / "lightning").iterdir()) == ["ground", "road"]
    for name in ("road", "ground"):  # both routes predict the same masks
        for path in sorted((lightning_route / name).glob("*.png")):
            same = cv2.imread(str(tmp_path / "lightning" / name / path.name), cv2.IMREAD_UNCHANGED)
            assert (same == cv2.imread(str(path), cv2.IMREAD_UNCHANGED)).mean() > 0.99


def test_a_multilabel_model_refuses_other_masks(tmp_path, monkeypatch, capsys):
    from tests.test_user_errors import write_pairs

    write_pairs(tmp_path / "plain", count=4)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", f"--data.dataset={tmp_path / 'plain'}", "--model.multilabel=true", *TINY])
    assert stop.value.code == 2
    assert "a multi-label model needs data.mask_mode=multilabel, got 'binary'" in capsys.readouterr().err


def test_a_multilabel_bag_manifest_pools_per_class_oof_scores(tmp_path, monkeypatch):
    truth = write_class_folders(tmp_path / "streets", count=6, size=24)
    monkeypatch.chdir(tmp_path)
    bag_dir = tmp_path / "bag"
    main(["bag", f"--bag_dir={bag_dir}", f"--data.dataset={tmp_path / 'streets'}", "--data.mask_mode=multilabel",
          "--model.num_classes=2", '--data.class_names=["road", "ground"]', "--folds=2", "--trainer.max_epochs=1",
          *TINY])  # fmt: skip
    manifest = json.loads((bag_dir / "manifest.json").read_text())
    oof, folds = manifest["oof"], manifest["folds"]
    assert oof["class_names"] == ["road", "ground"] and set(oof["iou_per_class"]) == {"road", "ground"}
    counts = {key: np.array(oof["class_counts"][key]) for key in ("tp", "fp", "fn")}
    for key, pooled in counts.items():  # the folds' counts summed
        assert pooled.tolist() == np.sum([entry["oof"]["class_counts"][key] for entry in folds], 0).tolist()
    # every labelled pixel of each (overlapping) class is counted once, at the masks' original resolution
    assert (counts["tp"] + counts["fn"]).tolist() == np.sum(list(truth.values()), (0, 2, 3)).tolist()
    iou = counts["tp"] / (counts["tp"] + counts["fp"] + counts["fn"])
    assert [oof["iou_per_class"][name] for name in ("road", "ground")] == pytest.approx(iou.tolist())
    assert oof["miou"] == pytest.approx(iou.mean())

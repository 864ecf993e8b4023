"""Every shipped YAML config parses and builds its model, loss and data module (without training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ternaus_zoo.cli import build_cli
from tests.test_cli_classification import CLASSIFICATION_CONFIGS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
SEGMENTATION = {
    "kvasir_unet11.yaml": ("kvasir-seg", 1, "binary"),
    "kvasir_cpu_hour.yaml": ("kvasir-seg", 1, "binary"),
    "membrane_unet11.yaml": ("membrane", 1, "binary"),
    "camvid_unet11.yaml": ("camvid-val", 11, "classes"),
    "membrane_scratch_10min.yaml": ("membrane", 1, "binary"),
    "camvid_scratch_10min.yaml": ("camvid-val", 11, "classes"),
    "camvid_scratch_10min_bag3.yaml": ("camvid-val", 11, "classes"),
}


@pytest.mark.parametrize("name", sorted(SEGMENTATION))
def test_segmentation_config_builds(name, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset, classes, mode = SEGMENTATION[name]
    cli = build_cli([f"--config={CONFIGS[0].parent / name}", "--model.weights=null"], run=False)
    assert cli.model.model.info.num_classes == classes
    assert cli.datamodule.root == data_root / dataset
    assert cli.datamodule.mask_mode == mode
    assert cli.datamodule.num_classes == classes  # linked from the model
    ignore_index = cli.model.hparams.ignore_index
    if ignore_index is not None:  # every loss term leaves the void pixels out (the CamVid crash)
        terms = [loss for loss in cli.model.loss.modules() if hasattr(loss, "ignore_index")]
        assert terms and all(loss.ignore_index == ignore_index for loss in terms)
    cli.datamodule.setup("fit")
    assert len(cli.datamodule.train_dataset) > len(cli.datamodule.val_dataset) > 0


def test_multilabel_config_on_the_set_derived_from_camvid(data_root, tmp_path, monkeypatch):
    """configs/camvid_ground_multilabel.yaml over benchmarks.camvid_multilabel's "road" and "ground" (road or
    pavement): two channels, road within ground, as the derivation promises."""
    from benchmarks.camvid_multilabel import derive

    assert derive(data_root / "camvid-val", tmp_path / "camvid-ground") == 101
    monkeypatch.chdir(tmp_path)
    config = CONFIGS[0].parent / "camvid_ground_multilabel.yaml"
    cli = build_cli([f"--config={config}", "--model.weights=null", f"--data.data_root={tmp_path}"], run=False)
    assert cli.datamodule.mask_mode == "multilabel" and cli.datamodule.class_names == ["road", "ground"]
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.val_dataloader()))
    masks = batch["mask"]
    assert masks.shape[1] == 2 and masks.dtype == torch.float32
    assert (masks[:, 0] <= masks[:, 1]).all() and masks[:, 0].sum() > 0
    assert masks[:, 1].sum() > masks[:, 0].sum()  # pavement adds to the road


def test_every_config_is_tested():
    classification = {name for name, *_ in CLASSIFICATION_CONFIGS}
    multilabel = {"camvid_ground_multilabel.yaml"}
    assert {path.name for path in CONFIGS} == set(SEGMENTATION) | classification | multilabel

"""Training patches at the working scale (``data.patch_size``), centred on rare classes (``data.foreground_share``)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from ternaus_zoo.cli import main
from ternaus_zoo.data.patches import patch_transforms
from ternaus_zoo.inference.pretrained import pretrained_spec
from ternaus_zoo.registry import registered

RGB = registered("unet11")[1].for_channels(3)
GREY = RGB.for_channels(1)


def _patches(transform, image: np.ndarray, mask: np.ndarray, count: int, seed: int = 0) -> list[dict]:
    transform.set_random_seed(seed)
    return [transform(image=image, mask=mask) for _ in range(count)]


def test_patches_are_cut_at_the_working_scale_with_the_jitter_asked_for():
    # a band of 100 rows across a 400 x 400 image: 50 rows at val_size 200, inside every 160 px patch
    image = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    mask = np.zeros((400, 400), np.uint8)
    mask[100:200] = 1
    fixed = patch_transforms(RGB, 160, 200, scale=(1.0, 1.0), d4=False)
    for patch in _patches(fixed, image, mask, 10):
        assert patch["image"].shape == (3, 160, 160) and patch["image"].dtype == torch.float32
        assert patch["mask"].shape == (160, 160)
        assert (patch["mask"].sum(0) == 50).all()
    jittered = patch_transforms(RGB, 160, 200, scale=(0.85, 1.15), d4=False)
    rows = {int(patch["mask"].sum(0).max()) for patch in _patches(jittered, image, mask, 20)}
    assert len(rows) > 3 and min(rows) >= 42 and max(rows) <= 58


def test_native_resolution_keeps_a_one_pixel_line_one_pixel_wide():
    image = np.zeros((90, 70), np.uint8)
    image[:, 33] = 255
    mask = (image > 0).astype(np.uint8)
    transform = patch_transforms(GREY, 32, None, scale=(1.0, 1.0), color=False, foreground_share=1.0)
    for patch in _patches(transform, image, mask, 10):
        values, counts = torch.unique(patch["image"], return_counts=True)
        # two values only (nothing interpolated): the line, 32 px long and 1 px wide (D4 may turn it)
        assert len(values) == 2 and counts[values.argmax()] == 32
        assert patch["mask"].sum() == 32


def test_foreground_share_one_puts_a_tiny_object_in_every_patch():
    image = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    mask = np.zeros((300, 300), np.uint8)
    mask[250:253, 40:43] = 1
    centred = patch_transforms(RGB, 32, None, scale=(1.0, 1.0), foreground_share=1.0)
    assert all(patch["mask"].sum() > 0 for patch in _patches(centred, image, mask, 50))
    uniform = patch_transforms(RGB, 32, None, scale=(1.0, 1.0))
    assert sum(bool(patch["mask"].sum() > 0) for patch in _patches(uniform, image, mask, 50)) < 10


@pytest.mark.parametrize("multilabel", [False, True])
def test_class_aware_patches_reach_a_rare_class_far_more_often_than_uniform_ones(multilabel):
    classes = np.zeros((200, 200), np.uint8)
    classes[:, :120] = 1  # a frequent class
    classes[150:154, 170:174] = 2  # a rare one: 0.04 % of the pixels
    classes[:10] = 255  # void
    # multi-label: one channel per class, background 0 dropped
    mask = np.stack([classes == 1, classes == 2], axis=-1).astype(np.uint8) if multilabel else classes
    image = np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8)

    def share_with_rare(foreground_share: float) -> float:
        transform = patch_transforms(
            RGB, 32, None, scale=(1.0, 1.0), foreground_share=foreground_share, ignore_values=(0, 255)
        )
        patches = _patches(transform, image, mask, 200)
        rare = [(patch["mask"][..., 1] if multilabel else patch["mask"] == 2).any() for patch in patches]
        return float(np.mean(rare))

    uniform, aware = share_with_rare(0.0), share_with_rare(1.0)
    assert aware > 0.35 and aware > 5 * uniform  # half of the centred patches; about 4 % of the uniform ones


def test_images_smaller_than_the_patch_are_padded_with_mask_fill_and_the_mean_colour():
    image = np.full((20, 24, 3), 200, np.uint8)
    mask = np.ones((20, 24), np.uint8)
    transform = patch_transforms(RGB, 32, None, scale=(1.0, 1.0), color=False, mask_fill=11)
    for patch in _patches(transform, image, mask, 5):
        padded = patch["mask"] == 11
        assert int(padded.sum()) == 32 * 32 - 20 * 24 and int((patch["mask"] == 1).sum()) == 20 * 24
        assert (patch["image"][:, padded] == 0).all() and (patch["image"][:, ~padded] != 0).all()


def test_the_same_seed_gives_the_same_patches():
    image = np.random.default_rng(3).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    mask = (np.random.default_rng(4).random((120, 100)) > 0.99).astype(np.uint8)
    transform = patch_transforms(RGB, 32, 90, foreground_share=0.5)
    first, again, other = (_patches(transform, image, mask, 5, seed) for seed in (7, 7, 8))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True))


TINY = [
    "--model.model=unet",
    '--model.model_kwargs={"num_filters": 4, "depth": 3}',
    "--data.batch_size=2",
    "--data.num_workers=0",
    "--data.n_folds=2",
    "--trainer.accelerator=cpu",
    "--trainer.max_steps=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _run(folder: Path) -> Path:
    (run,) = (folder / "runs" / "lightning_logs").iterdir()
    return run


def test_fit_trains_on_patches_at_native_resolution_and_the_saved_folder_records_the_tile(
    make_folder, tmp_path, monkeypatch, capsys
):
    images, _ = make_folder(n=6, size=(40, 56))
    monkeypatch.chdir(tmp_path)
    patches = ["--data.patch_size=32", "--data.foreground_share=0.5", "--data.val_size=null"]
    main(["fit", f"--data.dataset={images.parent}", *TINY, *patches])
    run = _run(tmp_path)
    checkpoint = run / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 2
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (data["patch_size"], data["foreground_share"], data["val_size"]) == (32, 0.5, None)
    main(["export", f"--ckpt_path={checkpoint}", "--format=pretrained", "--output=saved"])
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert (config["prediction"]["tile_size"], config["prediction"]["val_size"]) == (32, None)
    assert pretrained_spec(config, tmp_path / "saved").tile_size == 32
    # predicting with the folder tiles at the saved side by default; --tile_scale needs no --tile_size then
    main(["predict", "--pretrained=saved", f"--data.predict_dir={images}", "--output=masks", "--tile_scale=1"])
    assert "tiles 32 at scale 1" in capsys.readouterr().out
    shapes = [cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape for mask in sorted(Path("masks").glob("*.png"))]
    assert shapes == [(40, 56)] * 6
    main(["predict", "--pretrained=saved", f"--data.predict_dir={images}", "--output=resized", "--data.val_size=32"])
    assert "tiles none" in capsys.readouterr().out


def test_a_plan_with_class_weights_and_class_aware_patches_runs_from_its_yaml(make_folder, tmp_path, monkeypatch):
    images, _ = make_folder(n=6, size=(40, 56), classes=3)
    monkeypatch.chdir(tmp_path)
    plan = {
        "model": {"num_classes": 3, "loss": {"ce": {"weight": 1.0, "class_weights": [0.2, 1.0, 3.0]}}},
        "data": {"dataset": str(images.parent), "mask_mode": "classes", "patch_size": 32, "foreground_share": 1.0},
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    main(["fit", "--config=plan.yaml", *TINY])
    checkpoint = torch.load(_run(tmp_path) / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert checkpoint["hyper_parameters"]["loss"]["ce"]["class_weights"] == [0.2, 1.0, 3.0]


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("--data.foreground_share=1.5", "data.foreground_share"),
        ("--data.patch_scale=[1.2, 0.8]", "data.patch_scale"),
        ("--data.patch_size=30", "data.patch_size 30 is not a multiple"),  # the tile of prediction too
    ],
)
def test_bad_patch_options_end_with_one_line_naming_them(option, named, make_folder, tmp_path, monkeypatch, capsys):
    images, _ = make_folder(n=4, size=(40, 56))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", f"--data.dataset={images.parent}", *TINY, option])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and named in error and len(error.splitlines()) == 1

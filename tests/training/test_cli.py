"""End to end through the command line, in-process: fit, validate, predict from the checkpoint alone,
lr-find and the demo, on tiny inputs."""

from __future__ import annotations

import csv
import json
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
import yaml

from ternaus_zoo.cli import _takes_predict_ensemble, lr_find, main
from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.inference import from_pretrained, model_from_checkpoint
from ternaus_zoo.inference.predict import load_predictor, prediction_spec
from ternaus_zoo.inference.pretrained import TRAINING_CONFIG_KEY
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.weights import load_container
from tests.fakes import TINY_CLI

TINY = [*TINY_CLI, "--model.lr=0.01", "--trainer.enable_model_summary=false"]


def _fit(folder: Path, *extra: str) -> Path:
    main(["fit", f"--data.dataset={folder}", "--trainer.max_epochs=2", *TINY, *extra])
    (run,) = Path("runs/lightning_logs").iterdir()
    return run


def test_fit_writes_checkpoints_logs_config_and_folds(shapes_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _fit(shapes_folder)
    checkpoints = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    scores = [float(row["val/iou"]) for row in rows if row.get("val/iou")]
    assert scores and all(0 <= score <= 1 for score in scores) and "val/dice" in rows[0]
    assert list(Path("runs/tensorboard").rglob("events.out.tfevents*"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["model"] == "unet" and config["data"]["dataset"] == str(shapes_folder)
    assert (run / "folds.csv").is_file()
    checkpoint = load_container(run / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["model"] == "unet"
    assert checkpoint["global_step"] == 2 * 2  # 6 training images (fold 0 holds out 4 of 8 -> 4), batch 2


def test_both_predict_routes_take_the_evaluation_size_from_the_checkpoint(shapes_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = _fit(shapes_folder) / "checkpoints" / "last.ckpt"  # trained and validated at val_size 32
    used = []
    loader = SegmentationDataModule.predict_dataloader
    monkeypatch.setattr(
        SegmentationDataModule, "predict_dataloader", lambda self: used.append(self.val_size) or loader(self)
    )
    images = shapes_folder / "images"
    common = [f"--ckpt_path={checkpoint}", f"--data.predict_dir={images}", "--writer.save_probabilities=true"]
    lightning = ["predict", *common, "--data.num_workers=0"]  # one checkpoint, no TTA: LightningCLI's route
    main([*lightning, "--writer.output_dir=lightning"])  # no --data.val_size
    main(["predict", *common, "--tta=none", "--writer.output_dir=ensemble"])
    main([*lightning, "--data.val_size=null", "--writer.output_dir=full"])  # asks for the full resolution
    assert used == [32, None]
    for path in sorted(images.iterdir()):
        plain, ensemble = (
            np.load(Path(name) / f"{path.stem}.npy").astype(np.float32) for name in ("lightning", "ensemble")
        )
        assert np.abs(plain - ensemble).max() < 2e-2  # the same size; bf16 and float16 files round apart


def test_predict_from_the_checkpoint_alone_writes_masks_at_original_size(shapes_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _fit(shapes_folder)
    output = tmp_path / "predicted"
    main(
        [
            "predict",
            f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",  # no data set: the folder alone is read
            f"--data.predict_dir={shapes_folder / 'images'}",
            "--data.num_workers=0",
            "--data.val_size=32",
            f"--writer.output_dir={output}",
            "--writer.save_probabilities=true",
        ]
    )
    for image_path in sorted((shapes_folder / "images").iterdir()):
        mask = cv2.imread(str(output / f"{image_path.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == cv2.imread(str(image_path)).shape[:2]
        assert set(mask.ravel().tolist()) <= {0, 255}
        assert (output / f"{image_path.stem}.npy").is_file()


def test_checkpoint_rebuilds_its_model_without_config(shapes_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _fit(shapes_folder)
    module = SegmentationModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert module.model.info.name == "unet"
    assert module(torch.randn(1, 3, 20, 30)).shape == (1, 1, 20, 30)


def test_lr_find_suggests_a_rate_inside_the_range_it_swept(shapes_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    arguments = ["--min_lr=1e-5", "--max_lr=1", f"--data.dataset={shapes_folder}", *TINY]
    suggestion = lr_find(["--num_training=20", *arguments])
    assert isinstance(suggestion, float) and 1e-5 < suggestion < 1
    assert f"suggested learning rate {suggestion:.3g}" in capsys.readouterr().out
    assert list(Path("runs").rglob("lr_find.png"))
    with pytest.raises(SystemExit) as stop:  # too few steps for any suggestion: said, not "None"
        main(["lr-find", "--num_training=6", *arguments])
    assert stop.value.code == 2
    assert "--num_training=6: lr-find needs at least 12 steps" in capsys.readouterr().err


def test_the_console_script_prints_no_warning_the_user_did_not_cause():
    script = Path(sys.executable).with_name("ternaus-zoo")  # the console script of this environment
    result = subprocess.run([str(script), "fit", "--help"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "--model.lr" in result.stdout
    assert "LightningCLI's args parameter" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--folds=2", "--bootstrap_seed=3"], "--bootstrap_seed only applies with --bootstrap"),
        (["--folds=2", "--assemble", "--only_fold", "0"], "--only_fold has no meaning with it"),
    ],
)
def test_bag_options_that_contradict_each_other_are_errors(arguments, message, tmp_path):
    script = Path(sys.executable).with_name("ternaus-zoo")
    result = subprocess.run(
        [str(script), "bag", f"--bag_dir={tmp_path}", *arguments], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_predict_help_lists_the_options_of_both_routes():
    script = Path(sys.executable).with_name("ternaus-zoo")
    result = subprocess.run([str(script), "predict", "--help"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    for option in ("--manifest", "--pretrained", "--tta", "--tile_size", "--tile_overlap", "--writer.threshold"):
        assert option in result.stdout
    text = " ".join(result.stdout.split())  # argparse wraps at the terminal's width
    assert "{none,hflip,vflip,flips,d4,scales,hflip+scales,vflip+scales,flips+scales,d4+scales}" in text
    assert "(default: 0.25)" in text
    assert "--trainer.max_epochs" in result.stdout  # LightningCLI's own predict options follow


def test_help_lists_every_command(capsys):
    main([])
    text = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "lr-find", "bag", "export", "demo"):
        assert command in text


@pytest.mark.parametrize(
    ("command", "own"),
    [("lr-find", ["--min_lr", "--max_lr", "--num_training", "(default: 100)"]),
     ("bag", ["--folds", "--bag_dir", "--only_fold", "--assemble", "--bootstrap_seed", "(default: runs/bag)"])],
)  # fmt: skip
def test_help_of_commands_over_fit_lists_their_options_and_fits(command, own, capsys):
    main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    for option in [*own, "--trainer.max_epochs", "--model.lr", "--data.batch_size"]:
        assert option in text, option


@pytest.mark.timeout(300)
def test_demo_trains_and_draws(tmp_path, capsys):
    main(["demo", f"--output_dir={tmp_path}", "--max_steps=3"])
    assert "held-out IoU" in capsys.readouterr().out
    assert (tmp_path / "predictions.png").stat().st_size > 1000


def test_bag_then_predict_with_the_manifest_d4_and_tiles_then_export_onnx(shapes_folder, tmp_path, monkeypatch):
    """The bagging workflow end to end: a 2-fold bag, its ensemble with D4 TTA predicted in tiles, and
    exported to ONNX, whose output matches PyTorch's (onnxruntime)."""
    monkeypatch.chdir(tmp_path)
    bag_dir = tmp_path / "bag"
    main(
        ["bag", "--folds=2", f"--bag_dir={bag_dir}", f"--data.dataset={shapes_folder}", "--trainer.max_epochs=1", *TINY]
    )
    manifest = bag_dir / "manifest.json"
    assert manifest.is_file()

    output = tmp_path / "masks"
    arguments = ["--tta=d4", "--tile_size=16", "--tile_overlap=0.5", f"--writer.output_dir={output}"]
    main(["predict", f"--manifest={manifest}", f"--data.predict_dir={shapes_folder / 'images'}", *arguments])
    for image_path in sorted((shapes_folder / "images").iterdir()):
        mask = cv2.imread(str(output / f"{image_path.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == cv2.imread(str(image_path)).shape[:2]
        assert set(mask.ravel().tolist()) <= {0, 255}
    scaled = tmp_path / "scaled"  # multi-scale TTA from the command line
    images = shapes_folder / "images"
    main(
        [
            "predict",
            f"--manifest={manifest}",
            f"--data.predict_dir={images}",
            "--tta=hflip+scales",
            f"--writer.output_dir={scaled}",
        ]
    )
    assert sorted(path.stem for path in scaled.glob("*.png")) == sorted(path.stem for path in images.iterdir())

    onnx_path = tmp_path / "bag.onnx"
    main(["export", f"--manifest={manifest}", "--tta=d4", "--format=onnx", "--tile_size=32", f"--output={onnx_path}"])
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))  # 8-bit values / 255
    (found,) = session.run(None, {session.get_inputs()[0].name: pixels.numpy()})
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["ternaus_zoo.input"].startswith("pixels in [0, 1]")
    mean, std = (torch.tensor(json.loads(metadata[f"ternaus_zoo.{key}"])).view(1, 3, 1, 1) for key in ("mean", "std"))
    assert metadata["ternaus_zoo.output"] == "sigmoid probabilities" and metadata["ternaus_zoo.tta"] == "d4"
    with torch.no_grad():  # the graph normalises as the evaluation transform does
        expected = load_predictor(prediction_spec(manifest=manifest), tta="d4")((pixels - mean) / std)
    assert found.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(found, expected.numpy(), atol=1e-4)
    assert found.min() >= 0 and found.max() <= 1  # probabilities of the averaged ensemble

    # the same ensemble as a self-describing folder: one predictor, and predict --pretrained writes the same masks
    folder = tmp_path / "bag_pretrained"
    main(["export", f"--manifest={manifest}", "--tta=d4", "--format=pretrained", f"--output={folder}"])
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(folder)((pixels - mean) / std), expected, rtol=0, atol=1e-6)
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "ensemble" and len(config["members"]) == 2 and config["prediction"]["tta"] == "d4"
    assert config["prediction"]["val_size"] == 32 and "oof_threshold" in config["prediction"]
    file, text, bag, _ = _reproduce(folder)
    assert yaml.safe_load(text) == json.loads(manifest.read_text())["config"]
    assert bag == f"ternaus-zoo bag --folds=2 --bag_dir={bag_dir} --config {file}"
    again = tmp_path / "masks_pretrained"
    predicted = ["--tile_size=16", "--tile_overlap=0.5", f"--writer.output_dir={again}"]
    main(["predict", f"--pretrained={folder}", f"--data.predict_dir={shapes_folder / 'images'}", *predicted])
    for mask in sorted(output.iterdir()):
        np.testing.assert_array_equal(cv2.imread(str(again / mask.name)), cv2.imread(str(mask)))


def test_a_bag_shorter_than_its_validation_interval_uses_last_ckpt(shapes_folder, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    bag = ["bag", "--folds=2", "--only_fold", "0", f"--bag_dir={tmp_path / 'bag'}", f"--data.dataset={shapes_folder}"]
    main([*bag, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=2", *TINY])
    entry = json.loads((tmp_path / "bag" / "fold0" / "done.json").read_text())
    assert entry["best_checkpoint"] == entry["last_checkpoint"] == "fold0/checkpoints/last.ckpt"
    assert "validation never ran" in caplog.text and "using last.ckpt" in caplog.text


def _reproduce(folder: Path) -> tuple[str, str, str, str]:
    """The Reproduce block of a saved folder's card: the configuration's file name and text, the training command
    and the export command."""
    card = (folder / "README.md").read_text()
    block = re.search(r"## Reproduce\n\n```bash\n(.*?)\n```", card, re.DOTALL).group(1)
    return re.fullmatch(r"cat > (\S+) <<'EOF'\n(.*)\nEOF\n(.*)\n(.*)", block, re.DOTALL).groups()


def test_export_pretrained_from_a_checkpoint_rebuilds_the_model(shapes_folder, tmp_path, monkeypatch):
    """The folder gives the checkpoint's outputs, and its card's Reproduce lines, run, train the same weights:
    `fit` stores its resolved configuration (seed included) in the checkpoint, the card writes it out and runs
    `ternaus-zoo fit --config` over it before the export command."""
    monkeypatch.chdir(tmp_path)
    checkpoint = _fit(shapes_folder, "--seed_everything=3", "--trainer.max_epochs=1") / "checkpoints" / "last.ckpt"
    stored = load_container(checkpoint)[TRAINING_CONFIG_KEY]
    assert stored["seed_everything"] == 3 and stored["data"]["dataset"] == str(shapes_folder)
    folder = tmp_path / "pretrained"
    main(["export", f"--ckpt_path={checkpoint}", "--format=pretrained", f"--output={folder}"])
    images = torch.randn(2, 3, 40, 24)
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(folder)(images), model_from_checkpoint(checkpoint)(images))
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "model" and config["model"] == "unet" and config["prediction"]["val_size"] == 32
    assert sum(path.stat().st_size for path in folder.iterdir()) < checkpoint.stat().st_size

    file, text, fit, export = _reproduce(folder)
    assert yaml.safe_load(text) == stored and fit == f"ternaus-zoo fit --config {file}"
    assert export == shlex.join(
        ["ternaus-zoo", "export", f"--ckpt_path={checkpoint}", "--format=pretrained", f"--output={folder}"]
    )
    Path(file).write_text(text)
    main(shlex.split(fit)[1:])
    (again,) = Path("runs/lightning_logs").glob("version_1/checkpoints/last.ckpt")
    retrained = load_container(again)["state_dict"]
    for key, value in load_container(checkpoint)["state_dict"].items():
        torch.testing.assert_close(retrained[key], value, rtol=0, atol=0, msg=key)


def test_predict_routes_plain_checkpoint_calls_to_lightning():
    assert not _takes_predict_ensemble(["--ckpt_path=a.ckpt", "--data.dataset=x", "--writer.output_dir=o"])
    assert _takes_predict_ensemble(["--ckpt_path=a.ckpt", "--tta", "d4"])
    assert _takes_predict_ensemble(["--manifest=m.json"])
    assert _takes_predict_ensemble(["--ckpt_path=a.ckpt", "--tile_size=512"])
    assert _takes_predict_ensemble(["--ckpt_path=a.ckpt", "--ckpt_path=b.ckpt"])

"""The folder a selection ships, from a real tiny bag: its members reproduce their out-of-fold probabilities, and
its masks are those the selection scored."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ternaus_zoo.cli import main
from ternaus_zoo.inference import build_predictor, read_pretrained, save_predictor_pretrained
from ternaus_zoo.inference.postprocessing import apply_steps, steps_from_dicts
from ternaus_zoo.inference.predict import predict_folder
from ternaus_zoo.inference.pretrained import pretrained_spec
from ternaus_zoo.models.pretrained import CONFIG_FILE
from ternaus_zoo.planning.bags import load_bag, load_masks
from ternaus_zoo.planning.selection import select
from ternaus_zoo.planning.shipping import write_selection_folder
from tests.planning.test_selection import _square_masks, write_masks
from tests.training.test_cli import TINY


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A 2-fold bag of a tiny U-Net on 8 square masks (full resolution), its selection and its folder."""
    masks, _ = _square_masks(8)
    # 30 x 30: not a multiple of the model's size multiple, so the models pad; out of fold as in predict
    data = write_masks(tmp_path / "data", masks)
    for stem, mask in masks.items():  # images that show the squares, so that the masks are learnable
        cv2.imwrite(str(data / "images" / f"{stem}.png"), np.repeat(mask[..., None], 3, -1).astype(np.uint8) * 200)
    monkeypatch.chdir(tmp_path)
    main(["bag", f"--bag_dir={tmp_path / 'bag'}", f"--data.dataset={data}", "--trainer.max_epochs=2", "--folds=2",
          *TINY, "--data.val_size=null", "--oof_tta=d4"])  # fmt: skip
    bag = load_bag(tmp_path / "bag")
    selection = select([bag], load_masks(bag), max_steps=1, samples=50)
    folder = write_selection_folder([bag], selection, tmp_path / "ship", "the table")
    return bag, selection, folder, data


def test_the_folder_holds_each_fold_model_with_its_settings(shipped):
    _, selection, folder, _ = shipped
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["format_version"] == 2 and config["kind"] == "ensemble"
    assert [(member["fold"], member["weight"], member["val_size"]) for member in config["members"]] == [
        (0, 0.5, None),
        (1, 0.5, None),
    ]
    assert config["prediction"]["postprocessing"] == selection["final"]["postprocessing"]
    assert config["prediction"]["threshold"] == selection["final"]["threshold"]
    assert "the table" in (folder / "README.md").read_text()


def test_each_member_reproduces_its_oof_and_the_selection_masks(shipped, tmp_path):
    bag, _, folder, data = shipped
    models, config = read_pretrained(folder)
    spec = pretrained_spec(config, folder)
    steps = steps_from_dicts(spec.postprocessing)
    precision = (bag.config.get("trainer") or {}).get("precision") or "32-true"
    for fold, model in enumerate(models):
        out = tmp_path / f"member{fold}"
        predictor = build_predictor([model], "none", spec.activation)
        predict_folder(predictor, data / "images", out, save_probabilities=True, precision=precision,
                       threshold=spec.threshold, postprocessing=steps)  # fmt: skip
        stems = [stem for stem, k in bag.folds.items() if k == fold]
        assert stems
        for stem in stems:
            ours = np.load(out / f"{stem}.npy")
            np.testing.assert_allclose(ours.astype(np.float32), bag.probabilities[stem].astype(np.float32), atol=1e-3)
            # the mask the selection scored: its OOF probabilities, thresholded, cleaned by the kept steps
            scored = apply_steps(bag.probabilities[stem][0] > spec.threshold, steps, "binary")
            written = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 0
            assert np.array_equal(written, scored), stem


def test_each_member_under_tta_reproduces_its_oof_under_tta(shipped, tmp_path):
    """``bag --oof_tta d4`` stored what ``predict --tta d4`` gives with the fold's model: what select tries."""
    bag, _, folder, data = shipped
    assert bag.tta == "d4" and set(bag.tta_probabilities) == set(bag.probabilities)
    models, config = read_pretrained(folder)
    spec = pretrained_spec(config, folder)
    precision = (bag.config.get("trainer") or {}).get("precision") or "32-true"
    for fold, model in enumerate(models):
        out = tmp_path / f"member{fold}"
        predict_folder(build_predictor([model], "d4", spec.activation), data / "images", out, save_probabilities=True,
                       precision=precision)  # fmt: skip
        stems = [stem for stem, k in bag.folds.items() if k == fold]
        for stem in stems:
            ours = np.load(out / f"{stem}.npy").astype(np.float32)
            np.testing.assert_allclose(ours, bag.tta_probabilities[stem].astype(np.float32), atol=1e-3)
            assert not np.allclose(ours, bag.probabilities[stem].astype(np.float32), atol=1e-3)  # not the plain ones


def test_a_one_member_folder_predicts_through_the_console_command(shipped, tmp_path):
    _, _, folder, data = shipped
    models, config = read_pretrained(folder)
    save_predictor_pretrained(models[:1], tmp_path / "one", config["prediction"])
    main(["predict", f"--pretrained={tmp_path / 'one'}", f"--data.predict_dir={data / 'images'}", "--output=masks"])
    assert len(list((tmp_path / "masks").glob("*.png"))) == 8

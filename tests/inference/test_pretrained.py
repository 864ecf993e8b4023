"""Saved model folders: config.json + safetensors + a model card, rebuilt with no pickle and no hub."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

import ternaus_zoo
from ternaus_zoo import WeightsError, create_model
from ternaus_zoo.cli import main
from ternaus_zoo.errors import UserError
from ternaus_zoo.inference import (
    OnnxPredictor,
    build_predictor,
    from_pretrained,
    predict_mask,
    read_pretrained,
    save_predictor_pretrained,
)
from ternaus_zoo.inference.ensemble import Ensemble
from ternaus_zoo.inference.export import PixelInput, export_onnx
from ternaus_zoo.inference.postprocessing import apply_steps, component_areas, steps_from_dicts
from ternaus_zoo.inference.pretrained import training_card
from ternaus_zoo.models.pretrained import (
    CONFIG_FILE,
    PretrainedError,
    load_pretrained_model,
    model_from_config,
)
from ternaus_zoo.weights import load_container, read_checkpoint
from tests.fakes import TINY_SEGMENTATION_FAMILIES

FIXTURE = Path(__file__).parents[1] / "fixtures" / "pretrained_v1"
FAMILIES = [*TINY_SEGMENTATION_FAMILIES, ("aux_resnet18", {}), ("gapnet_pl", {})]


@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=lambda value: str(value))
def test_save_then_load_gives_identical_outputs(name, kwargs, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, **kwargs).eval()
    model.save_pretrained(tmp_path / "saved")
    assert sorted(path.name for path in (tmp_path / "saved").iterdir()) == [
        "README.md",
        CONFIG_FILE,
        "model.safetensors",
    ]
    loaded = ternaus_zoo.from_pretrained(tmp_path / "saved")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert loaded.info == model.info and not loaded.training


def test_the_config_alone_rebuilds_the_architecture(tmp_path):
    model = create_model("unet11", num_classes=3, in_channels=4, num_filters=8)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    rebuilt = model_from_config(config)
    assert type(rebuilt) is type(model)
    assert {key: value.shape for key, value in rebuilt.state_dict().items()} == {
        key: value.shape for key, value in model.state_dict().items()
    }
    assert config["model"] == "unet11" and config["kwargs"] == {"num_filters": 8} and config["in_channels"] == 4


def test_class_names_and_thresholds_travel_in_the_info(tmp_path):
    import dataclasses

    model = create_model("aux_resnet18", num_classes=2)
    model.info = dataclasses.replace(model.info, class_names=("cat", "dog"), thresholds=(0.3, 0.6))
    model.save_pretrained(tmp_path, card={"metrics": {"f1_macro": 0.61}, "command": "python -m benchmarks.x"})
    loaded = load_pretrained_model(tmp_path)
    assert loaded.info.class_names == ("cat", "dog") and loaded.info.thresholds == (0.3, 0.6)
    card = (tmp_path / "README.md").read_text()
    assert "f1_macro | 0.6100" in card and "python -m benchmarks.x" in card and "'cat', 'dog'" in card


def test_a_bootstrap_bag_is_reproduced_by_its_bag_command_with_the_seed(tmp_path):
    """Fold k of a bootstrap bag drew its sample with seed + k: the card's command gives the bag's seed back."""
    manifest = tmp_path / "bag" / "manifest.json"
    manifest.parent.mkdir()
    folds = [{"fold": fold, "bootstrap_seed": 7 + fold} for fold in (1, 2)]  # fold 0 unfinished
    config = {"seed_everything": 3, "data": {"dataset": "shapes", "fold": 1, "n_folds": 3}}
    manifest.write_text(json.dumps({"checkpoints": [], "n_folds": 3, "folds": folds, "config": config}))
    card = training_card(manifest.parent / "fold1.ckpt", manifest)
    bag = f"ternaus-zoo bag --folds=3 --bag_dir={manifest.parent} --bootstrap --bootstrap_seed=7"
    assert card["fit_config"] == config and card["fit_command"] == bag
    create_model("unet", num_filters=2, depth=2).save_pretrained(tmp_path / "saved", card=card)
    text = (tmp_path / "saved" / "README.md").read_text()
    assert "seed_everything: 3" in text and f"{bag} --config training_config.yaml\n" in text


def test_weights_are_safetensors_not_pickle(tmp_path):
    model = create_model("unet11", num_filters=4)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    # the original TernausNet attribute names alias the encoder: each shared tensor is stored once
    assert "encoder.0.weight" in tensors or "conv1.weight" in tensors
    assert len(tensors) < len(model.state_dict())
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads((tmp_path / "model.safetensors").read_bytes())


def test_a_folder_written_by_version_1_still_loads():
    """A real format-1 folder (weights included, written by ternaus_zoo 0.1.0; its card says how) is rebuilt
    by today's code and gives the logits it gave then."""
    assert json.loads((FIXTURE / CONFIG_FILE).read_text())["format_version"] == 1
    model = from_pretrained(FIXTURE)
    expected = load_file(FIXTURE.with_name("pretrained_v1_expected.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(model(expected["images"]), expected["logits"], rtol=0, atol=1e-5)


def test_an_ensemble_folder_is_one_predictor(tmp_path):
    torch.manual_seed(0)
    members = [create_model("unet", num_filters=4, depth=2).eval() for _ in range(3)]
    prediction = {"val_size": 64, "threshold": 0.4, "oof_threshold": 0.35, "tta": "d4", "reduction": "mean"}
    save_predictor_pretrained(members, tmp_path, prediction)
    predictor = from_pretrained(tmp_path)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = build_predictor(members, "d4", "sigmoid", "mean")(images)
        torch.testing.assert_close(predictor(images), expected, rtol=0, atol=1e-6)
    models, config = read_pretrained(tmp_path)
    assert len(models) == 3 and config["prediction"] == prediction


def test_a_version_2_folder_weights_its_members_and_predict_cleans_its_masks(tmp_path, monkeypatch):
    """Members weighted as saved (from_pretrained and predict --pretrained); the saved steps applied to each
    full-resolution mask: the masks equal the uncleaned ones after apply_steps."""
    torch.manual_seed(0)
    members = [create_model("unet", num_filters=4, depth=2).eval() for _ in range(2)]
    steps = [{"name": "keep_largest", "scope": "foreground"}, {"name": "fill_holes", "scope": "foreground"}]
    # untrained, the members' probabilities lie within 0.476-0.481: a threshold inside gives speckled masks
    prediction = {"val_size": None, "threshold": 0.479, "tta": "none", "reduction": "mean"}
    settings = [{"weight": 3.0, "val_size": None}, {"weight": 1.0, "val_size": None}]
    for name, kept in (("plain", []), ("cleaned", steps)):
        save_predictor_pretrained(members, tmp_path / name, {**prediction, "postprocessing": kept}, None, settings)
    config = json.loads((tmp_path / "cleaned" / CONFIG_FILE).read_text())
    assert config["format_version"] == 2 and [member["weight"] for member in config["members"]] == [3.0, 1.0]
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = Ensemble(members, activation="sigmoid", weights=[3, 1])(images)
        torch.testing.assert_close(from_pretrained(tmp_path / "cleaned")(images), expected, rtol=0, atol=1e-6)

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        pixels = np.random.default_rng(index).integers(0, 256, (40, 36, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"image{index}.png"), pixels)
    monkeypatch.chdir(tmp_path)
    for name in ("plain", "cleaned"):
        main(["predict", f"--pretrained={name}", f"--data.predict_dir={folder}", f"--output=out_{name}"])
    changed = 0
    for index in range(3):
        plain, cleaned = (
            cv2.imread(f"out_{name}/image{index}.png", cv2.IMREAD_GRAYSCALE) for name in ("plain", "cleaned")
        )
        expected_mask = apply_steps(plain > 0, steps_from_dicts(steps), "binary").astype(np.uint8) * 255
        assert np.array_equal(cleaned, expected_mask), index
        changed += int((cleaned != plain).any())
    assert changed  # the steps did something to these noisy masks
    # the ONNX export of the folder lists its steps, for the mask thresholded from the graph's output
    main(["export", "--pretrained=cleaned", "--format=onnx", "--tile_size=32", "--output=cleaned.onnx"])
    session = onnxruntime.InferenceSession("cleaned.onnx", providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["ternaus_zoo.postprocessing"]) == steps


STEPS = [{"name": "keep_largest", "scope": "foreground"}, {"name": "fill_holes", "scope": "foreground"}]


def _noisy_images(folder: Path, shape: tuple[int, int] = (40, 36), count: int = 3) -> list[Path]:
    folder.mkdir()
    paths = [folder / f"image{index}.png" for index in range(count)]
    for index, path in enumerate(paths):
        cv2.imwrite(str(path), np.random.default_rng(index).integers(0, 256, (*shape, 3), dtype=np.uint8))
    return paths


# untrained, member 0 gives probabilities within 0.481-0.489 on these images, and the 3:1 pair 0.476-0.481: a
# threshold inside gives speckled masks, which the steps change
FOLDERS = {
    "model": ({"val_size": None, "threshold": 0.4857, "tta": "none"}, [{"weight": 1.0}]),
    "ensemble": ({"val_size": None, "threshold": 0.479, "tta": "none"}, [{"weight": 3.0}, {"weight": 1.0}]),
    "ensemble_tiled": (
        {"val_size": None, "threshold": 0.479, "tta": "none", "tile_size": 32},
        [{"weight": 3.0}, {"weight": 1.0}],
    ),
}


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_predict_mask_of_from_pretrained_is_the_mask_predict_writes(kind, tmp_path, monkeypatch):
    """One image through from_pretrained + predict_mask gives, pixel for pixel, the cleaned mask that
    ``predict --pretrained`` writes (a model folder, an ensemble folder, one trained on patches: tiled)."""
    torch.manual_seed(0)
    members = [create_model("unet", num_filters=4, depth=2).eval() for _ in range(2)]
    prediction, settings = FOLDERS[kind]
    folder = tmp_path / "saved"
    save_predictor_pretrained(members[: len(settings)], folder, {**prediction, "postprocessing": STEPS}, None, settings)
    assert json.loads((folder / CONFIG_FILE).read_text())["kind"] == kind.removesuffix("_tiled")
    paths = _noisy_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    main(["predict", f"--pretrained={folder}", f"--data.predict_dir={tmp_path / 'images'}", "--output=out"])
    module = from_pretrained(folder)
    for path in paths:
        written = cv2.imread(f"out/{path.name}", cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(predict_mask(module, path), written), path.name
        assert len(component_areas(written > 0)) <= 1  # keep_largest applied
        array = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(predict_mask(module, array), written)  # an array as read_image gives it


def test_predict_mask_needs_a_module_of_from_pretrained():
    with pytest.raises(ValueError, match="from_pretrained"):
        predict_mask(create_model("unet", num_filters=4, depth=2), np.zeros((32, 32, 3), np.uint8))


def test_the_onnx_predictor_applies_the_exported_settings_and_steps_after_the_graph(tmp_path, monkeypatch):
    """The exported file alone: its probabilities are the folder's, and its masks are those probabilities
    thresholded and cleaned by the folder's steps (which change them)."""
    torch.manual_seed(0)
    members = [create_model("unet", num_filters=4, depth=2).eval() for _ in range(2)]
    prediction, settings = FOLDERS["ensemble"]
    save_predictor_pretrained(members, tmp_path / "saved", {**prediction, "postprocessing": STEPS}, None, settings)
    monkeypatch.chdir(tmp_path)
    main(["export", "--pretrained=saved", "--format=onnx", "--tile_size=32", "--output=saved.onnx"])
    predictor = OnnxPredictor("saved.onnx")
    assert (predictor.tile_size, predictor.threshold, predictor.val_size) == (32, 0.479, None)
    assert predictor.steps == steps_from_dicts(STEPS)
    module = from_pretrained("saved")
    (path,) = _noisy_images(tmp_path / "images", shape=(32, 32), count=1)  # one tile: the whole image
    pixels = torch.from_numpy(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        expected = PixelInput(module, module.info.mean, module.info.std)(pixels)[0]
    probabilities = predictor.probabilities(path)
    torch.testing.assert_close(probabilities, expected, rtol=0, atol=1e-5)
    mask = predictor.predict_mask(path)
    plain = (probabilities[0] > 0.479).numpy()
    assert np.array_equal(mask > 0, apply_steps(plain, steps_from_dicts(STEPS), "binary"))
    assert not np.array_equal(mask > 0, plain)


def test_an_onnx_file_without_our_metadata_is_refused(tmp_path):
    model = create_model("unet", num_filters=4, depth=2).eval()
    export_onnx(model, tmp_path / "bare.onnx", 32)
    with pytest.raises(UserError, match=r"lacks the metadata ternaus_zoo\.input.*export it again"):
        OnnxPredictor(tmp_path / "bare.onnx")
    with pytest.raises(UserError, match="does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")


def test_missing_and_foreign_folders_are_clear_errors(tmp_path):
    with pytest.raises(PretrainedError, match=r"config\.json is missing"):
        from_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(PretrainedError, match="not written by ternaus_zoo"):
        from_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"library": "ternaus_zoo", "format_version": 99}))
    with pytest.raises(PretrainedError, match="format_version 99"):
        from_pretrained(tmp_path)


def test_a_hub_id_offline_without_cache_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.perf_counter()
    with pytest.raises(PretrainedError, match="neither a local folder nor in the hub cache"):
        from_pretrained("ternaus/unet11-kvasir")
    assert time.perf_counter() - started < 20  # a hang would be minutes; a loaded CPU takes seconds to import


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": create_model("unet", num_filters=2, depth=2).state_dict(), "extra": Path("x")}, path)
    with pytest.raises(WeightsError, match=r"pickled Python objects.*never unpickles"):
        load_container(path)
    with pytest.raises(WeightsError, match="pickled"):
        read_checkpoint(path)

"""Every mistake a user can make on the command line, as they meet it: the command ends with exit status 2 and
exactly one line on stderr naming the file, key or value, and no traceback. Each case runs in-process through
``ternaus_zoo.cli.main``; one case per command also runs the real ``ternaus-zoo`` console script in a
subprocess (where Lightning's output and the warnings reach stderr as a user sees them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ternaus_zoo.cli import main
from ternaus_zoo.models import create_model

SCRIPT = Path(sys.executable).with_name("ternaus-zoo")  # the console script of this environment
TINY_MODEL = ["--model.model=unet", '--model.model_kwargs={"num_filters": 4}']
QUIET = [
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",  # tiny inputs: fewer steps than Lightning's interval would be warned about
]


def run(arguments: list[str], cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TERNAUS_ZOO_DEBUG"}
    env |= {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", **environment}
    return subprocess.run(
        [str(SCRIPT), *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def write_pairs(folder: Path, count: int = 6, size: int = 32) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        cv2.imwrite(str(folder / "images" / f"{index}.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        mask = np.zeros((size, size), np.uint8)
        mask[8:20, 8:20] = 255
        cv2.imwrite(str(folder / "masks" / f"{index}.png"), mask)
    return folder


def write_mistakes(root: Path) -> Path:
    """Data sets under ``root``: ``good`` and one broken copy per mistake, and files of the wrong kind."""
    write_pairs(root / "good")
    (write_pairs(root / "corrupt") / "images" / "3.png").write_bytes(b"this is not a PNG")
    cv2.imwrite(str(write_pairs(root / "unpaired") / "images" / "extra.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(write_pairs(root / "resized") / "masks" / "2.png"), np.zeros((16, 16), np.uint8))
    (root / "empty" / "images").mkdir(parents=True)
    (root / "empty" / "masks").mkdir()
    (root / "not_a_checkpoint.ckpt").write_text("hello")
    (root / "other.json").write_text(json.dumps({"folds": 3}))
    torch.save({"hyper_parameters": {"model": "gapnet"}, "state_dict": {}}, root / "classifier.ckpt")
    (root / "typo.yaml").write_text("model:\n  modle: unet\n")
    (root / "not_a_bag").mkdir()
    (root / "not_a_bag" / "fold0").mkdir()
    model = create_model("unet", num_filters=4, depth=3)  # size multiple 4
    hyper_parameters = {"model": "unet", "model_kwargs": {"num_filters": 4, "depth": 3}, "num_classes": 1}
    state_dict = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state_dict, "hyper_parameters": hyper_parameters}, root / "unet.ckpt")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_mistakes(tmp_path_factory.mktemp("data"))


def fit(root: Path, dataset: str, *extra: str) -> list[str]:
    data = [f"--data.dataset={dataset}", f"--data.data_root={root}", "--data.image_size=32", "--data.val_size=32"]
    return ["fit", *data, "--data.batch_size=2", "--data.num_workers=0", *TINY_MODEL, *QUIET, *extra]


def predict(root: Path, *source: str) -> list[str]:
    return ["predict", *source, f"--data.predict_dir={root / 'good' / 'images'}", f"--writer.output_dir={root / 'out'}"]


# (case, arguments from the data root, what the one line must name)
CASES = [
    ("missing data folder", lambda r: fit(r, "nowhere"), ["nowhere/images", "data set folder not found"]),
    ("corrupt image", lambda r: fit(r, "corrupt", "--data.num_workers=1"), ["corrupt/images/3.png", "not a readable"]),
    ("image without mask", lambda r: fit(r, "unpaired"), ["extra.png", "without a mask"]),
    ("mask of another size", lambda r: fit(r, "resized"), ["2.png", "differs from its mask"]),
    ("wrong channel count", lambda r: fit(r, "good", "--model.in_channels=4"), ["3-channel image to 4 channels"]),
    ("empty folder", lambda r: fit(r, "empty"), ["empty/images", "no image files"]),
    ("unknown model", lambda r: fit(r, "good", "--model.model=unet12"), ["unknown model 'unet12'", "unet11"]),
    ("config key that does not exist", lambda r: fit(r, "good", "--model.nosuchkey=1"), ["nosuchkey"]),
    ("config file key that does not exist", lambda r: fit(r, "good", f"--config={r / 'typo.yaml'}"), ["modle"]),
    ("config file that does not exist", lambda r: fit(r, "good", f"--config={r / 'nope.yaml'}"), ["nope.yaml"]),
    ("fit checkpoint that does not exist", lambda r: fit(r, "good", f"--ckpt_path={r / 'no.ckpt'}"), ["no.ckpt"]),
    (
        "checkpoint of the wrong kind",
        lambda r: fit(r, "good", f"--ckpt_path={r / 'not_a_checkpoint.ckpt'}"),
        ["not_a_checkpoint.ckpt", "not a PyTorch checkpoint"],
    ),
    (
        "checkpoint of the other task",
        lambda r: fit(r, "good", f"--ckpt_path={r / 'classifier.ckpt'}"),
        ["classifier.ckpt", "classification model 'gapnet'", "ternaus-zoo classify"],
    ),
    ("predict checkpoint that does not exist", lambda r: predict(r, f"--ckpt_path={r / 'no.ckpt'}", "--tta=d4"),
     ["no.ckpt"]),
    ("tile scale without tiles", lambda r: predict(r, f"--ckpt_path={r / 'no.ckpt'}", "--tile_scale=0.5"),
     ["--tile_scale", "--tile_size"]),
    ("tile scale that is no factor", lambda r: predict(r, f"--ckpt_path={r / 'no.ckpt'}", "--tile_size=16",
     "--tile_scale=-1"), ["--tile_scale", "must be positive"]),
    ("manifest that does not exist", lambda r: predict(r, f"--manifest={r / 'no.json'}"),
     ["no.json", "does not exist"]),
    ("manifest of the wrong kind", lambda r: predict(r, f"--manifest={r / 'other.json'}"),
     ["other.json", "not a bagging manifest"]),
    ("predict without a model", lambda r: predict(r, "--tta=d4"), ["no model", "--ckpt_path", "--pretrained"]),
    ("bag assembled from nothing", lambda r: ["bag", "--assemble", f"--bag_dir={r / 'nowhere'}"],
     ["nowhere", "does not exist"]),
    ("bag assembled from a folder without bag.yaml", lambda r: ["bag", "--assemble", f"--bag_dir={r / 'not_a_bag'}"],
     ["not_a_bag", "bag.yaml"]),
    ("bag fold outside the folds", lambda r: ["bag", "--only_fold", "5", "--folds", "2", f"--bag_dir={r / 'bag'}"],
     ["--only_fold 5", "0..1"]),
    ("bag assembled with a TTA to predict", lambda r: ["bag", "--assemble", "--oof_tta=d4", f"--bag_dir={r / 'bag'}"],
     ["--assemble predicts nothing", "--oof_tta"]),
    ("validation fold outside the folds", lambda r: fit(r, "good", "--data.fold=7", "--data.n_folds=5"),
     ["data.fold", "0..4", "got 7"]),
    ("unknown loss", lambda r: fit(r, "good", "--model.loss=nosuchloss"),
     ["unknown loss 'nosuchloss'", "bce_jaccard", "lovasz_hinge"]),
    ("export tile size of another multiple", lambda r: ["export", f"--ckpt_path={r / 'unet.ckpt'}", "--tile_size=30",
     f"--output={r / 'unet.onnx'}"], ["--tile_size=30", "multiple of 4"]),
    ("predict with a folder and checkpoints",
     lambda r: predict(r, f"--pretrained={r}", f"--ckpt_path={r / 'unet.ckpt'}"), ["--ckpt_path", "--pretrained"]),
    ("predict a folder with a data set", lambda r: predict(r, f"--ckpt_path={r / 'unet.ckpt'}", "--data.dataset=good"),
     ["--data.dataset", "--data.predict_dir"]),
    ("export option of another format", lambda r: ["export", f"--ckpt_path={r / 'unet.ckpt'}", "--format=pretrained",
     "--opset=17", f"--output={r / 'folder'}"], ["--opset", "--format pretrained"]),
]  # fmt: skip
# one case per command through the console script
CONSOLE_CASES = (
    "missing data folder",
    "predict without a model",
    "bag fold outside the folds",
    "export tile size of another multiple",
)


def run_in_process(arguments: list[str], cwd: Path, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TERNAUS_ZOO_DEBUG", raising=False)
    capsys.readouterr()
    # the warnings a console would print (pytest records them instead), as lines of stderr; Python hides
    # deprecation warnings by default
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as stop:
        warnings.simplefilter("always")
        main(arguments)
    shown = [f"{warning.message}\n" for warning in caught if not issubclass(warning.category, DeprecationWarning)]
    return stop.value.code, capsys.readouterr().err + "".join(shown)


def assert_one_line(code: int, stderr: str, named: list[str]) -> None:
    assert code == 2, stderr[-3000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ternaus-zoo: error: "), stderr[-3000:]
    for text in named:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize(("case", "arguments", "named"), CASES, ids=[case for case, _, _ in CASES])
def test_user_error_is_one_line_with_exit_status_2(case, arguments, named, root, capsys, monkeypatch):
    assert_one_line(*run_in_process(arguments(root), root, capsys, monkeypatch), named)


@pytest.mark.parametrize("case", CONSOLE_CASES)
def test_the_console_script_says_the_same_one_line(case, root):
    ((arguments, named),) = [(arguments, named) for name, arguments, named in CASES if name == case]
    result = run(arguments(root), cwd=root)
    assert_one_line(result.returncode, result.stderr, named)


def test_debug_shows_the_traceback(root):
    for extra, environment in ((["--debug"], {}), ([], {"TERNAUS_ZOO_DEBUG": "1"})):
        result = run([*fit(root, "nowhere"), *extra], cwd=root, **environment)
        assert result.returncode == 1 and "Traceback" in result.stderr, result.stderr[-2000:]
        assert "MissingPathError: data set folder not found" in result.stderr


def test_classification_alias_still_works(root):
    script = SCRIPT.with_name("ternaus-zoo-cls")
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr
    assert "ternaus-zoo classify fit" in result.stdout
    assert "ternaus-zoo-cls is now `ternaus-zoo classify`" in result.stderr

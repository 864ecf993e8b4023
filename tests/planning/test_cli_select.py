"""``ternaus-zoo select`` end to end on two tiny real bags, and its mistakes as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ternaus_zoo.cli import main
from tests.planning.test_selection import _square_masks, write_bag
from tests.training.test_bagging import _bag


def test_select_two_real_bags(shapes_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _bag(shapes_folder, tmp_path / "small", "--folds=2")
    _bag(shapes_folder, tmp_path / "wide", "--folds=2", '--model.model_kwargs={"num_filters": 8, "depth": 3}')
    capsys.readouterr()
    main(["select", str(tmp_path / "small"), str(tmp_path / "wide"), "--out", "chosen", "--bootstrap=200"])
    printed = capsys.readouterr().out
    selection = json.loads((tmp_path / "chosen" / "selection.json").read_text())
    assert [row["name"] for row in selection["bags"]] == ["small", "wide"]
    assert "it beats the best single bag" in printed and "select: wrote" in printed
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    # each bag alone at the bag's own threshold: the pooled OOF Dice the manifest reports, up to the float16 storage
    assert selection["bags"][0]["dice"] == pytest.approx(manifest["oof"]["dice"], abs=0.02)
    assert selection["n_images"] == 8 and len(selection["ensemble"]["nested"]["per_fold"]) == 2
    assert sum(selection["final"]["weights"].values()) == pytest.approx(1.0)
    assert selection["command"][:2] == ["ternaus-zoo", "select"]
    # the folder is the chosen ensemble: the fold models of the bags with a weight, weighted as chosen
    config = json.loads((tmp_path / "chosen" / "config.json").read_text())
    chosen = {name: weight for name, weight in selection["final"]["weights"].items() if weight > 0}
    assert (config["format_version"], config["kind"], len(config["members"])) == (2, "ensemble", 2 * len(chosen))
    for name, weight in chosen.items():  # each bag's weight shared by its two fold models
        shares = [member["weight"] for member in config["members"] if Path(member["bag"]).name == name]
        assert shares == [pytest.approx(weight / 2)] * 2
    main(["predict", "--pretrained=chosen", f"--data.predict_dir={shapes_folder / 'images'}", "--output=masks"])
    assert len(list((tmp_path / "masks").glob("*.png"))) == 8


def _write_pair(tmp_path, **second):
    masks, probabilities = _square_masks(4)
    folds = {stem: index % 2 for index, stem in enumerate(sorted(masks))}
    write_bag(tmp_path / "a", probabilities, folds)
    if "folds" in second:
        folds = second.pop("folds")
    if second:
        probabilities = {stem: np.stack([1 - p[0], p[0]]) for stem, p in probabilities.items()}
    write_bag(tmp_path / "b", probabilities, folds, **second)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"folds": {"image00": 1, "image01": 1, "image02": 0, "image03": 1}}, "image image00 is in fold 1"),
        ({"mask_mode": "classes", "num_classes": 2}, "a classes bag of 2 class(es)"),
    ],
)
def test_bags_that_do_not_match_end_in_one_line(tmp_path, capsys, second, message):
    _write_pair(tmp_path, **second)
    with pytest.raises(SystemExit) as stop:
        main(["select", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and len(error.splitlines()) == 1 and message in error
    assert not (tmp_path / "out").exists()


def test_unfinished_bag_and_bad_options_through_the_console_script(tmp_path, capsys):
    _write_pair(tmp_path)
    (tmp_path / "b" / "fold0" / "done.json").unlink()
    command = [sys.executable, "-m", "ternaus_zoo.cli", "select", str(tmp_path / "a"), str(tmp_path / "b")]
    result = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "fold 0 is unfinished" in result.stderr
    cases = [
        ([str(tmp_path / "a"), "--max_steps=0"], "--max_steps: must be at least 1, got 0"),
        ([str(tmp_path / "nowhere")], "bag folder not found"),
        ([str(tmp_path / "a")], "the following arguments are required: --out"),
    ]
    for arguments, message in cases:  # the same path in-process (the subprocess above is the slow part)
        with pytest.raises(SystemExit) as stop:
            main(["select", *arguments] + (["--out", str(tmp_path / "out")] if "--out" not in message else []))
        error = capsys.readouterr().err
        assert stop.value.code == 2 and len(error.splitlines()) == 1 and message in error


def test_help_shows_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = capsys.readouterr().out
    for option in ("--out", "--data_root", "--max_steps", "--bootstrap", "--seed"):
        assert option in text
    assert text.count("(default:") >= 5

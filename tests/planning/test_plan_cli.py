"""``ternaus-zoo plan`` and ``auto`` as a user meets them: through ``ternaus_zoo.cli.main`` on a tiny data set, and
once on a real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ternaus_zoo.cli import main
from ternaus_zoo.planning.timing import Timing, Trial


def run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(arguments)
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


TIMED: list[str] = []


def fake_trial(trial: Trial, device: object) -> Timing:
    """Timings of a machine where the larger candidate steps 4x slower than the smaller one."""
    TIMED.append(f"{trial.model}{trial.model_kwargs.get('num_filters', '')}")
    larger = trial.model == "albunet34" or trial.model_kwargs.get("num_filters") == 32
    return Timing(step_s=0.2 if larger else 0.05, predict_s=0.01)


@pytest.fixture(autouse=True)
def _cache_and_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERNAUS_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("ternaus_zoo.cli_planning.time_trial", fake_trial)
    TIMED.clear()


def test_plan_writes_a_config_fit_accepts_and_planning_again_is_the_same_plan(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan" / "plan.yaml"
    code, printed, errors = run(["plan", str(shapes_folder), "--budget", "5m", "--out", str(out)], capsys)
    assert code == 0, errors
    assert "plan: wrote" in printed
    config = yaml.safe_load(out.read_text())
    assert config["data"]["dataset"] == str(shapes_folder)
    assert config["data"]["mask_mode"] == "binary" and config["model"]["num_classes"] == 1
    assert config["model"]["train_minutes"] > 0 and config["trainer"]["max_epochs"] == -1
    # from scratch here (no ImageNet weights in the test's cache): the data set's own statistics
    assert config["model"]["weights"] is None and len(config["model"]["model_kwargs"]["mean"]) == 3
    text = out.read_text()
    lines = [line.strip() for line in text.splitlines()]
    values = [index for index, line in enumerate(lines) if line and not line.startswith("#") and not line.endswith(":")]
    assert len(values) > 20
    for index in values:  # every value under its reason
        assert lines[index - 1].startswith("# "), lines[index]
    fingerprint = json.loads((out.parent / "fingerprint.json").read_text())
    assert fingerprint["timings"]["trials"] and fingerprint["timings"]["planning_s"] >= 0
    # the same fingerprint and timings: the same plan, without timing again
    code, printed, errors = run(["plan", str(shapes_folder), "--budget", "5m", "--out", str(out)], capsys)
    # timed once, by the first plan: the shapes are 7 px wide, so the candidates are U-Nets with full-resolution skips
    assert code == 0 and TIMED == ["unet32", "unet16"]
    assert out.read_text() == text


def test_a_budget_too_small_names_the_minimum(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, errors = run(["plan", str(shapes_folder), "--budget", "20s", "--out", str(tmp_path / "p.yaml")], capsys)
    # after the fingerprint's progress bar, one line
    assert code == 2 and errors.strip().splitlines()[-1].startswith("ternaus-zoo: error: a budget of 0.3 min")
    assert errors.count("ternaus-zoo: error") == 1 and "give at least --budget" in errors


@pytest.mark.parametrize("budget", ["soon", "-1m"])
def test_a_budget_that_is_no_duration_is_one_line(
    budget: str, shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, errors = run(["plan", str(shapes_folder), f"--budget={budget}"], capsys)
    assert code == 2 and errors.count("\n") == 1 and "--budget" in errors


def test_an_empty_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    code, _, errors = run(["plan", str(tmp_path / "empty"), "--out", str(tmp_path / "p.yaml")], capsys)
    assert code == 2 and errors.count("\n") == 1, errors


def test_auto_plans_trains_scores_saves_and_resumes_without_planning_again(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "auto"
    arguments = ["auto", str(shapes_folder), "--budget", "45s", "--out", str(out)]
    code, printed, errors = run(arguments, capsys)
    assert code == 0, errors
    scores = json.loads((out / "scores.json").read_text())
    assert 0 <= scores["dice"] <= 1 and len(scores["per_image"]) == scores["images"] > 0
    assert (out / "model" / "config.json").is_file() and (out / "report.png").is_file()
    report = (out / "report.md").read_text()
    assert "![worst images](worst.png)" in report and f"{scores['dice']:.4f}" in report
    assert "train/minutes" in (out / "bag" / "fold0" / "metrics.csv").read_text().splitlines()[0]
    spent = json.loads((out / "clock.json").read_text())["spent_s"]
    plan = (out / "plan.yaml").read_text()
    code, printed, errors = run(arguments, capsys)
    assert code == 0, errors
    assert "not planning again" in printed and (out / "plan.yaml").read_text() == plan
    assert json.loads((out / "clock.json").read_text())["spent_s"] > spent
    # another budget would be ignored by the resumed run: refused, with the way out
    code, _, errors = run([*arguments[:3], "2m", *arguments[4:]], capsys)
    assert code == 2 and errors.count("\n") == 1 and "was planned with --budget 45s, not 2m" in errors


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        # membrane's 5 px boundaries keep the native scale: patches of it, a U-Net with full-resolution skips
        ("membrane", [], {"data.val_size": None, "data.patch_size": 256, "model.model": "unet"}),
        # kvasir's 150 px polyps: whole images at 256 px, as the one-hour recipe; a ResNet34 model (the larger one:
        # at the fake timings it fits 24 passes in the hour)
        ("kvasir-seg", [], {"data.val_size": 256, "data.image_size": 256, "model.model": "albunet34"}),
        # camvid's 3 px poles: native, contiguous blocks, rare classes weighted and sampled
        (
            "camvid-val",
            ["--ignore_index", "11"],
            {"data.val_size": None, "data.group_blocks": 3, "data.foreground_share": 0.5, "model.ignore_index": 11},
        ),
    ],
)
def test_plans_of_the_real_data_sets(
    name: str, options: list[str], expected: dict, dataset_dir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.yaml"
    code, _, errors = run(["plan", str(dataset_dir(name)), "--budget", "60m", "--out", str(out), *options], capsys)
    assert code == 0, errors
    config = yaml.safe_load(out.read_text())
    for key, value in expected.items():
        section, option = key.split(".")
        assert config[section][option] == value, key
    if name == "camvid-val":
        weights = config["model"]["loss"]["ce"]["class_weights"]
        assert len(weights) == 11 and weights.index(max(weights)) in (2, 6, 9, 10)  # pole, sign, pedestrian, cyclist

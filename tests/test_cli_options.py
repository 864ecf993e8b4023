"""Every option the zoo defines, walked from the parsers themselves (a new option is walked without a change
here): a value of the wrong type or out of range ends the command with exit status 2 and one line on stderr
naming the option or the value, before any training starts; and every option of every command has help text
and shows its default. In-process through ``ternaus_zoo.cli.main``; one subprocess per command confirms that
the console script behaves the same."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
from jsonargparse import ArgumentParser as JsonArgumentParser

from ternaus_zoo.cli import PARSERS, main
from ternaus_zoo.cli_lightning import ZooCLI, build_cli
from ternaus_zoo.data.shapes import draw_shapes
from ternaus_zoo.training import SegmentationModule
from tests.fakes import TINY_CLI

SCRIPT = Path(sys.executable).with_name("ternaus-zoo")
TINY = [
    *TINY_CLI,
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
# values of a type that any value of the type is right for, and why: not walked with that value
ANY_VALUE = {
    ("model.ignore_index", "-1000"): "any integer: a mask value that is never a class",
    ("data.run_dir", "nosuch"): "a folder to write folds.csv in, created",
    ("data.predict_dir", "nosuch"): "read by predict only, walked with predict's options",
    ("--writer.output_dir", "nosuch"): "a folder to write, created",
    ("--output", "nosuch"): "a file or folder to write",
    ("--output_dir", "nosuch"): "a folder to write, created",
    ("--bag_dir", "nosuch"): "a folder to write, created",
    ("--metrics_source", "nosuch"): "free text on the model card",
}


class ParserBuiltError(Exception):
    """Raised by :class:`_ParserOnly` with the parser LightningCLI built."""


class _ParserOnly(ZooCLI):
    def parse_arguments(self, parser, args) -> None:
        raise ParserBuiltError(parser)


def fit_parser() -> JsonArgumentParser:
    """The parser of ``ternaus-zoo fit`` (its options are those of every LightningCLI command)."""
    with pytest.raises(ParserBuiltError) as parsed:
        build_cli([], run=False, cli_class=_ParserOnly)
    return parsed.value.args[0]


def wrong_values(hint: object) -> list[str]:
    """Values of the wrong type, and out of range, for an option of type ``hint``."""
    arguments = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(arguments) == 1:
        return wrong_values(arguments[0])
    if origin is typing.Literal:
        return ["nosuch"]
    if hint is bool:
        return ["maybe"]
    if hint in (int, float):
        return ["abc", "-1000"]
    if origin is tuple:
        return ["abc", "[-1000, -1000]"]
    if origin is dict:
        return ["notadict"]
    if origin is list:
        return ["5"]
    return ["nosuch"]  # a name or a path that does not exist, and unions of them with mappings


def lightning_cases() -> list[tuple[str, str]]:
    actions = [action for action in fit_parser()._actions if action.dest.split(".")[0] in ("model", "data")]
    cases = [
        (action.dest, value)
        for action in actions
        if type(action).__name__ == "ActionTypeHint"  # not the linked ones (set through model.*), nor --help
        for value in wrong_values(action._typehint)
    ]
    return [case for case in cases if case not in ANY_VALUE]


def plain_cases() -> list[tuple[str, str, str]]:
    cases = []
    for command, parser in PARSERS.items():
        for action in parser()._actions:
            if not action.option_strings or action.nargs == 0:  # positionals (none) and flags
                continue
            option = action.option_strings[0]
            values = ["nosuch"] if action.choices else ["abc", "-1000"] if action.type else ["nosuch"]
            cases += [(command, option, value) for value in values if (option, value) not in ANY_VALUE]
    return cases


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny data set and a checkpoint of one training step on it."""
    root = tmp_path_factory.mktemp("trained")
    folder = root / "shapes"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for index in range(6):
        image, mask = draw_shapes(32, np.random.default_rng(index))
        cv2.imwrite(str(folder / "images" / f"case{index}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"case{index}.png"), mask * 255)
    main(["fit", f"--data.dataset={folder}", *TINY, "--trainer.max_steps=1", f"--trainer.default_root_dir={root}"])
    (checkpoint,) = root.glob("lightning_logs/version_0/checkpoints/last.ckpt")
    return {"root": root, "data": folder, "images": folder / "images", "checkpoint": checkpoint}


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started: the mistake was not caught before")

    monkeypatch.setattr(SegmentationModule, "training_step", refuse)


def one_line_error(arguments: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    lines = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2, (arguments, lines)
    assert len(lines) == 1 and lines[0].startswith("ternaus-zoo: error: "), (arguments, lines)
    return lines[0]


@pytest.mark.parametrize(("option", "value"), lightning_cases())
def test_a_wrong_module_or_data_option_is_one_line(option, value, trained, tmp_path, no_training, capsys):
    base = ["fit", f"--data.dataset={trained['data'].name}", f"--data.data_root={trained['data'].parent}", *TINY]
    line = one_line_error([*base, f"--trainer.default_root_dir={tmp_path}", f"--{option}={value}"], capsys)
    assert option in line or value in line, line


def plain_base(command: str, trained: dict[str, Path], tmp_path: Path) -> list[str]:
    """A command line of ``command`` that runs (the bad option is added after it)."""
    checkpoint = f"--ckpt_path={trained['checkpoint']}"
    return {
        "lr-find": ["lr-find", f"--data.dataset={trained['data']}", *TINY, f"--trainer.default_root_dir={tmp_path}"],
        "bag": ["bag", "--folds=2", f"--bag_dir={tmp_path}", f"--data.dataset={trained['data']}", *TINY],
        "export": ["export", checkpoint, f"--output={tmp_path / 'model.onnx'}", "--tile_size=32"],
        "demo": ["demo", f"--output_dir={tmp_path}", "--max_steps=1"],
        "predict": [
            "predict",
            checkpoint,
            f"--data.predict_dir={trained['images']}",
            f"--output={tmp_path}",
            "--tta=d4",
        ],
    }[command]


@pytest.mark.parametrize(("command", "option", "value"), plain_cases())
def test_a_wrong_plain_option_is_one_line(command, option, value, trained, tmp_path, no_training, capsys):
    line = one_line_error([*plain_base(command, trained, tmp_path), f"{option}={value}"], capsys)
    assert option in line or value in line, line


def test_the_walk_covers_every_option_the_zoo_defines():
    walked = {option for option, _ in lightning_cases()}
    for name in ("model.lr", "model.loss", "model.threshold", "data.fold", "data.val_size", "data.batch_size"):
        assert name in walked
    plain = {(command, option) for command, option, _ in plain_cases()}
    for case in (
        ("bag", "--only_fold"),
        ("export", "--tile_size"),
        ("predict", "--tile_overlap"),
        ("lr-find", "--max_lr"),
    ):
        assert case in plain


@pytest.mark.parametrize(
    "arguments",
    [
        ["fit", "--model.lr=abc"],
        ["bag", "--folds=abc"],
        ["export", "--ckpt_path=x.ckpt", "--output=y", "--tile_size=abc"],
        ["predict", "--tta=d4", "--data.predict_dir=.", "--tile_size=abc"],
        ["lr-find", "--max_lr=abc"],
        ["demo", "--minutes=abc"],
    ],
    ids=lambda arguments: arguments[0],
)
def test_the_console_script_reports_the_same_one_line(arguments, tmp_path):
    result = subprocess.run(
        [str(SCRIPT), *arguments], cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.splitlines()
    assert line.startswith("ternaus-zoo: error: ") and "abc" in line, line


def _plain_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.dest != "help"]


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_plain_option_has_help_and_shows_its_default(command):
    parser = PARSERS[command]()
    text = " ".join(parser.format_help().split())
    for action in _plain_actions(parser):
        assert action.help and action.help != argparse.SUPPRESS, (command, action.option_strings)
        assert f"{' '.join(action.help.split())} (default: {action.default})" in text, (command, action.dest)


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_every_lightning_option_of_the_zoo_has_help_and_shows_its_default(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    blocks = re.split(r"\n  (?=-)", capsys.readouterr().out.split("options:", 1)[1])  # one block an option
    shown = {block.split()[0]: " ".join(block.split()) for block in blocks if block.strip()}
    for action in fit_parser()._actions:
        if action.dest.split(".")[0] in ("model", "data", "writer") and type(action).__name__ == "ActionTypeHint":
            block = shown[f"--{action.dest}"]
            assert action.help and "default:" in block, (command, block)

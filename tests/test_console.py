"""A quiet console: the whole stderr of ``demo``, ``fit``, ``predict`` (both routes) and ``bag`` on tiny inputs
holds only lines we print on purpose, and the run folder follows ``--trainer.default_root_dir``.

The commands run through ``ternaus_zoo.cli.main`` in one fresh interpreter (the console script's entry point,
with Python's own warning filters, which pytest would replace in-process), one process for all of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ternaus_zoo.data.shapes import draw_shapes
from tests.fakes import TINY_CLI

# the lines these commands may print on stderr: the marker this test prints before each command, nothing else
ALLOWED = (re.compile(r"=== \S+$"),)
RUNNER = """
import json, sys
from ternaus_zoo.cli import main
for arguments in json.loads(sys.argv[1]):
    print("===", arguments[0], file=sys.stderr, flush=True)
    main(arguments)
"""
TINY = [
    *TINY_CLI,
    "--trainer.max_epochs=1",
    "--trainer.log_every_n_steps=1",  # tiny inputs: fewer steps than Lightning's interval would be warned about
]


def write_shapes(folder: Path, count: int = 6, size: int = 32) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for index in range(count):
        image, mask = draw_shapes(size, np.random.default_rng(index))
        cv2.imwrite(str(folder / "images" / f"case{index}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"case{index}.png"), mask * 255)
    return folder


@pytest.mark.timeout(600)
def test_the_commands_print_nothing_on_stderr_but_what_we_mean(tmp_path):
    data = write_shapes(tmp_path / "shapes")
    work = tmp_path / "work"  # the working directory: nothing may land in its runs/
    work.mkdir()
    root = tmp_path / "root"
    checkpoint = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    images = f"--data.predict_dir={data / 'images'}"
    commands = [
        ["demo", f"--output_dir={tmp_path / 'demo'}", "--max_steps=2"],
        ["fit", f"--data.dataset={data}", *TINY, f"--trainer.default_root_dir={root}"],
        ["predict", f"--ckpt_path={checkpoint}", images, f"--writer.output_dir={tmp_path / 'lightning'}"],
        ["predict", f"--ckpt_path={checkpoint}", images, "--tta=d4", f"--writer.output_dir={tmp_path / 'tta'}"],
        ["bag", "--folds=2", f"--bag_dir={tmp_path / 'bag'}", f"--data.dataset={data}", *TINY, "--oof_tta=d4"],
    ]
    environment = {key: value for key, value in os.environ.items() if key != "TERNAUS_ZOO_DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(commands)],
        cwd=work,
        env={**environment, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    unexpected = [line for line in result.stderr.splitlines() if not any(p.match(line) for p in ALLOWED)]
    assert not unexpected, "\n".join(unexpected)
    assert "held-out IoU" in result.stdout and "bag: wrote" in result.stdout

    # --trainer.default_root_dir moved fit's run folder (checkpoints, logs, TensorBoard) out of runs/
    assert checkpoint.is_file() and (checkpoint.parents[1] / "metrics.csv").is_file()
    assert list((root / "tensorboard").rglob("events.out.tfevents*"))
    assert not list(work.rglob("*.ckpt")) and not list(work.rglob("metrics.csv"))
    for folder in ("lightning", "tta"):
        assert len(list((tmp_path / folder).glob("*.png"))) == 6

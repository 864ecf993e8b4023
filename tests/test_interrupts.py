"""Ctrl-C (SIGINT) during ``fit``, ``bag`` and ``predict`` of the real console script: what was finished stays
usable, the command says how to resume, and resuming works."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import cv2
import pytest
import torch

from tests.test_user_errors import QUIET, SCRIPT, TINY_MODEL, run, write_pairs

pytestmark = pytest.mark.timeout(600)


def interrupt_when(arguments: list[str], cwd: Path, ready) -> subprocess.CompletedProcess:
    """Start the console script, send SIGINT once ``ready()`` holds, and return the finished process."""
    process = subprocess.Popen(
        [str(SCRIPT), *arguments], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the command ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def training(root: Path, epochs: int) -> list[str]:
    return [
        f"--data.data_root={root}",
        "--data.dataset=tiny",
        "--data.image_size=32",
        "--data.val_size=32",
        "--data.batch_size=2",
        "--data.num_workers=0",
        *TINY_MODEL,
        *QUIET,
        f"--trainer.max_epochs={epochs}",
        "--trainer.log_every_n_steps=1",
    ]


@pytest.fixture
def root(tmp_path) -> Path:
    write_pairs(tmp_path / "data" / "tiny", count=6)
    return tmp_path


def test_fit_then_predict_interrupted_and_resumed(root):
    data = root / "data"
    last = root / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    result = interrupt_when(["fit", *training(data, 200)], root, last.is_file)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    notice = [line for line in result.stderr.splitlines() if "interrupted" in line][-1]
    assert f"--ckpt_path={last}" in notice, notice
    stopped_at = torch.load(last, weights_only=True)["epoch"]

    # a checkpoint's "epoch" is the 0-based epoch it ended, so max_epochs=stopped_at + 3 is two epochs more
    resumed = run(["fit", *training(data, stopped_at + 3), f"--ckpt_path={last}"], cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = root / "runs" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"  # the resumed run's
    assert torch.load(last, weights_only=True)["epoch"] == stopped_at + 2

    images = root / "many"
    images.mkdir()
    picture = cv2.imread(str(data / "tiny" / "images" / "0.png"))
    for index in range(400):
        cv2.imwrite(str(images / f"{index:03d}.png"), picture)
    output = root / "masks"
    predicting = ["predict", f"--ckpt_path={last}", "--tta=d4", f"--data.predict_dir={images}"]
    result = interrupt_when(
        [*predicting, f"--writer.output_dir={output}"], root, lambda: len(list(output.glob("*.png"))) >= 3
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "masks written so far" in result.stderr
    written = sorted(output.glob("*.png"))
    assert 3 <= len(written) < 400
    assert all(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (32, 32) for path in written)


def test_bag_interrupted_keeps_finished_folds_and_resumes(root):
    data, bag_dir = root / "data", root / "bag"
    command = ["bag", "--folds=2", f"--bag_dir={bag_dir}", *training(data, 30)]
    fold1_last = bag_dir / "fold1" / "checkpoints" / "last.ckpt"
    result = interrupt_when(command, root, fold1_last.is_file)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "`ternaus-zoo bag`: run the same command again" in result.stderr
    fold0 = (bag_dir / "fold0" / "done.json").read_text()
    assert not (bag_dir / "fold1" / "done.json").exists()

    resumed = run(command, cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (bag_dir / "fold0" / "done.json").read_text() == fold0  # fold 0 was not trained again
    assert json.loads((bag_dir / "fold1" / "done.json").read_text())["resumed"] is True
    assert len(json.loads((bag_dir / "manifest.json").read_text())["checkpoints"]) == 2

"""The same command line, distributed: two CPU processes (gloo) fit together and agree on the metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import TINY_CLI

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_two_process_ddp_fit_on_cpu(shapes_folder, tmp_path):
    probe = tmp_path / "ranks"
    command = [
        sys.executable,
        "-m",
        "ternaus_zoo.cli",
        "fit",
        f"--data.dataset={shapes_folder}",
        *TINY_CLI,
        "--trainer.max_epochs=1",
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=tests.training.rank_probe.RankMetrics",
        f"--trainer.callbacks.output_dir={probe}",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert "val/iou" in ranks[0]
    assert ranks[0] == ranks[1], "the metrics are synchronised across processes"


@pytest.mark.timeout(600)
def test_two_process_validation_of_an_odd_split_counts_each_image_once(tmp_path, monkeypatch):
    """7 images, a 3-image validation fold: two processes give the numbers of one (no image repeated)."""
    import cv2
    import numpy as np

    from ternaus_zoo.cli import main
    from ternaus_zoo.data import load_folds

    root = tmp_path / "odd"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(7):
        cv2.imwrite(str(root / "images" / f"{index}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[: 4 * (index + 1), :] = 255  # a different foreground share per image, so a repeat shows
        cv2.imwrite(str(root / "masks" / f"{index}.png"), mask)
    common = [
        f"--data.dataset={root}",
        "--model.model=unet",
        '--model.model_kwargs={"num_filters": 4, "depth": 3}',
        "--data.image_size=32",
        "--data.val_size=32",
        "--data.batch_size=1",
        "--data.num_workers=0",
        "--data.n_folds=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=tests.training.rank_probe.RankMetrics",
    ]
    monkeypatch.chdir(tmp_path)
    main(["fit", *common, "--trainer.max_epochs=1", f"--trainer.callbacks.output_dir={tmp_path / 'fit'}"])
    (run,) = (tmp_path / "runs" / "lightning_logs").iterdir()
    folds = load_folds(run / "folds.csv")
    fold = next(k for k in (0, 1) if sum(value == k for value in folds.values()) % 2)  # the odd fold
    checkpoint = run / "checkpoints" / "last.ckpt"
    validate = ["validate", *common, f"--data.fold={fold}", f"--ckpt_path={checkpoint}", "--trainer.logger=false"]
    main([*validate, f"--trainer.callbacks.output_dir={tmp_path / 'one'}"])
    command = [sys.executable, "-m", "ternaus_zoo.cli", *validate, "--trainer.strategy=ddp", "--trainer.devices=2"]
    command.append(f"--trainer.callbacks.output_dir={tmp_path / 'two'}")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())
    two = [json.loads((tmp_path / "two" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert two[0] == two[1]
    for key in ("val/iou", "val/dice", "val/iou_per_image", "val/dice_per_image"):
        assert two[0][key] == pytest.approx(one[key], abs=1e-5), key

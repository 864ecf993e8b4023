"""The same command line, distributed: two CPU processes (gloo) fit together and agree on the metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
        "--model.model=unet",
        '--model.model_kwargs={"num_filters": 4, "depth": 3}',
        "--data.image_size=32",
        "--data.val_size=32",
        "--data.batch_size=2",
        "--data.num_workers=0",
        "--data.n_folds=2",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
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

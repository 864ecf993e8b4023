"""``ternaus-zoo predict --tile_size`` on a 5000x5000 image, as a user runs it: the console script's peak memory
stays within the image as stored, the tiles and the output, not a float32 copy of the whole image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ternaus_zoo.models import create_model

SCRIPT = Path(sys.executable).with_name("ternaus-zoo")
# the child's peak resident memory, in a parent that runs nothing else (ru_maxrss: kilobytes on Linux)
PEAK = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"  # noqa: E501


def peak_mb(command: list[str]) -> float:
    result = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.strip().splitlines()[-1]) / 1024


@pytest.mark.timeout(900)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in kilobytes on Linux only")
def test_tiled_prediction_of_a_5000_px_image_in_bounded_memory(tmp_path):
    model = create_model("unet", num_filters=4, depth=3)
    hyper_parameters = {"model": "unet", "model_kwargs": {"num_filters": 4, "depth": 3}, "num_classes": 1}
    checkpoint = tmp_path / "tiny.ckpt"
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"hyper_parameters": hyper_parameters, "state_dict": state}, checkpoint)
    rows = np.linspace(0, 255, 5000, dtype=np.float32)
    for side, folder in ((512, "small"), (5000, "large")):
        (tmp_path / folder).mkdir()
        grey = ((rows[:side, None] + rows[None, :side]) / 2).astype(np.uint8)
        cv2.imwrite(str(tmp_path / folder / "image.png"), np.dstack([grey, 255 - grey, grey]))

    def predict(folder: str) -> float:
        output = tmp_path / f"{folder}_masks"
        command = [str(SCRIPT), "predict", f"--ckpt_path={checkpoint}", "--tile_size=512", "--tile_batch_size=2",
                   f"--data.predict_dir={tmp_path / folder}", f"--writer.output_dir={output}"]  # fmt: skip
        peak = peak_mb(command)
        assert (
            cv2.imread(str(output / "image.png"), cv2.IMREAD_UNCHANGED).shape
            == (int(folder == "large") * 4488 + 512,) * 2
        )
        return peak

    baseline, large = predict("small"), predict("large")
    print(f"peak RSS: 512 px {baseline:.0f} MB, 5000 px {large:.0f} MB")
    # measured here: +123 MB over the 512 px run (the image as stored is 72 MB, the 8-bit mask 24 MB); a float32
    # copy of the whole image alone would add 286 MB, and so fail this bound
    assert large - baseline < 250, (baseline, large)

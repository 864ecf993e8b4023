"""A callback for the DDP test: each process writes the validation metrics it ended with."""

from __future__ import annotations

import json
from pathlib import Path

from pytorch_lightning.callbacks import Callback


class RankMetrics(Callback):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def on_validation_end(self, trainer, pl_module) -> None:  # after fit's last validation, or `validate`
        if trainer.sanity_checking:
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))

"""What Ctrl-C leaves behind: a callback that says, when a run is interrupted, what is kept and how to resume.

Lightning catches ``KeyboardInterrupt`` inside ``fit``/``predict``, tears the run down (loggers flushed) and
exits with status 1; this callback's ``on_exception`` runs before that exit, and :func:`was_interrupted`
lets the command line turn the exit into the usual 130.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

__all__ = ["InterruptNotice", "was_interrupted"]

_INTERRUPTED: list[bool] = []


def was_interrupted() -> bool:
    """Whether a run of this process was stopped by Ctrl-C (SIGINT)."""
    return bool(_INTERRUPTED)


def _last_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The newest ``last.ckpt`` a checkpoint callback of ``trainer`` wrote (every epoch's end)."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            for name in (callback.last_model_path, callback.best_model_path):
                if name and Path(name).name == "last.ckpt" and Path(name).is_file():
                    return Path(name).resolve()
    return None


class InterruptNotice(Callback):
    """On Ctrl-C: one message on stderr naming what was finished and the command that resumes."""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        _INTERRUPTED.append(True)
        if trainer.state.fn == "predict":
            message = (
                "the masks written so far are complete files; run the same command again to predict every image "
                "(it starts over)"
            )
        else:
            last = _last_checkpoint(trainer)
            message = (
                f"the last finished epoch is saved in {last}; `ternaus-zoo fit`: resume with the same options and "
                f"--ckpt_path={last}; `ternaus-zoo bag`: run the same command again (finished folds are kept, "
                "this fold resumes from its last.ckpt)"
                if last is not None
                else "no epoch had finished, so nothing is saved: run the command again"
            )
        print(f"ternaus-zoo: interrupted: {message}", file=sys.stderr, flush=True)

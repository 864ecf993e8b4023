"""Schedules that follow the run's progress: with a training-time budget (``model.train_minutes``) and an injected
clock, a machine twice as slow gets the same schedule over half the steps, validation excluded; the run stops when
the budget is spent with the annealed model in ``last.ckpt``; a resumed run continues the clock of its checkpoint;
validation is spaced by training time; cycles end with snapshots; the options are checked as the user gives them."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback

from ternaus_zoo.cli import main
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.training.base import encoder_of
from ternaus_zoo.training.progress import RunProgress, TrainingClock
from tests.training.test_cli import TINY
from tests.training.test_module import TINY_UNET, _data

BUDGET_SECONDS = 12.0
LR = 0.01


class FakeTime:
    """A clock that moves only when told to."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Machine(Callback):
    """Each training batch takes ``batch_seconds`` of the fake clock (from its start), each validation batch
    ``val_seconds``."""

    def __init__(self, clock: FakeTime, batch_seconds: float, val_seconds: float = 100.0) -> None:
        self.clock, self.batch_seconds, self.val_seconds = clock, batch_seconds, val_seconds

    def on_train_batch_start(self, *args) -> None:
        self.clock.now += self.batch_seconds

    def on_validation_batch_end(self, *args) -> None:
        self.clock.now += self.val_seconds


class Record(Callback):
    """The progress and rate of every training batch, and the training seconds at every validation."""

    def __init__(self) -> None:
        self.progress: list[float] = []
        self.rates: list[float] = []
        self.validated_at: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.progress.append(pl_module.progress())
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_start(self, trainer, pl_module) -> None:
        if pl_module.training_clock is not None and not trainer.sanity_checking:
            self.validated_at.append(pl_module.training_clock.seconds)


class StopAt(Callback):
    """Stops the run after ``steps`` steps, as an interruption would."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def _run(
    folder: Path,
    root: Path,
    batch_seconds: float | None = None,
    callbacks: tuple[Callback, ...] = (),
    ckpt_path: Path | None = None,
    max_epochs: int = -1,
    max_steps: int = -1,
    **options,
) -> tuple[SegmentationModule, pl.Trainer, Record]:
    """A tiny U-Net (2 steps an epoch), ``onecycle`` unless told otherwise; with ``batch_seconds``, a budget of
    :data:`BUDGET_SECONDS` on a fake clock where a batch takes that long."""
    record = Record()
    settings = {"lr": LR, "scheduler": "onecycle", "scheduler_kwargs": {"max_lr": LR}}
    extra: list[Callback] = []
    if batch_seconds is not None:
        settings["train_minutes"] = BUDGET_SECONDS / 60
        clock = FakeTime(start=5000.0 if ckpt_path else 1000.0)  # a resumed run's clock has another origin
        extra.append(Machine(clock, batch_seconds))
    module = SegmentationModule(**TINY_UNET, **{**settings, **options})
    if batch_seconds is not None:
        module.time_source = clock
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[*extra, record, *callbacks],
    )
    trainer.fit(module, datamodule=_data(folder), ckpt_path=ckpt_path)
    return module, trainer, record


def _saved_clock(path: Path) -> dict[str, float]:
    return torch.load(path, weights_only=True)["callbacks"]["TrainingClock"]


def test_a_machine_twice_as_slow_gets_the_same_schedule_over_half_the_steps(shapes_folder, tmp_path):
    fast_module, fast, on_fast = _run(shapes_folder, tmp_path / "fast", batch_seconds=1.0)
    _, slow, on_slow = _run(shapes_folder, tmp_path / "slow", batch_seconds=2.0)
    # validation takes 100 fake seconds a batch: counted, it would have ended both runs at the first one
    assert (fast.global_step, slow.global_step) == (12, 6)
    assert on_fast.progress == pytest.approx([step / 12 for step in range(12)])
    assert on_slow.progress == pytest.approx(on_fast.progress[::2])
    assert on_slow.rates == pytest.approx(on_fast.rates[::2])
    # the one-cycle shape: warm-up to the peak at 30 % of the budget, then annealed by its end
    assert on_fast.rates[0] == pytest.approx(LR / 25)
    assert max(on_fast.rates) == pytest.approx(LR, rel=0.05) and on_fast.rates.index(max(on_fast.rates)) == 4
    assert on_fast.rates[-1] < LR / 20 and on_slow.rates[-1] < LR / 5
    # the same function of progress as a run of 12 counted steps
    _, _, by_steps = _run(shapes_folder, tmp_path / "steps", max_steps=12)
    assert on_fast.rates == pytest.approx(by_steps.rates)
    # it stopped when the budget was spent, and last.ckpt holds the model it ended with
    assert fast_module.training_clock.seconds == BUDGET_SECONDS
    last = tmp_path / "fast" / "checkpoints" / "last.ckpt"
    assert _saved_clock(last)["elapsed"] == BUDGET_SECONDS
    saved = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[key], value) for key, value in fast_module.state_dict().items())


def test_a_resumed_run_continues_the_clock_of_its_checkpoint(shapes_folder, tmp_path):
    _, _, whole = _run(shapes_folder, tmp_path / "whole", batch_seconds=1.0)
    _, first, before = _run(shapes_folder, tmp_path / "run", batch_seconds=1.0, callbacks=(StopAt(6),))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert first.global_step == 6 and _saved_clock(last)["elapsed"] == 6.0
    module, second, after = _run(shapes_folder, tmp_path / "run", batch_seconds=1.0, ckpt_path=last)
    assert second.global_step == 12 and module.training_clock.seconds == BUDGET_SECONDS
    assert before.rates + after.rates == pytest.approx(whole.rates)
    # resumed once more, from the end of the finished run: nothing is left to train
    _, third, _ = _run(shapes_folder, tmp_path / "run", batch_seconds=1.0, ckpt_path=last)
    assert third.global_step == 12


def test_validation_is_spaced_by_training_time(shapes_folder, tmp_path):
    _, trainer, record = _run(shapes_folder, tmp_path, batch_seconds=1.0, val_every_minutes=3 / 60)
    # every 3 s of training (not at the ends of the 2-step epochs), and once more where the budget ends
    assert record.validated_at == [3.0, 6.0, 9.0, 12.0]
    assert trainer.checkpoint_callback is not None
    assert any(path.name.startswith("best-epoch") for path in (tmp_path / "checkpoints").iterdir())


def test_step_cyclic_over_a_budget_snapshots_every_cycle(shapes_folder, tmp_path):
    options = {"scheduler": "step_cyclic", "scheduler_kwargs": {"cycles": 3, "factors": [1.0, 0.1]}}
    _, _, record = _run(shapes_folder, tmp_path, batch_seconds=1.0, **options)
    assert record.rates == pytest.approx([LR, LR, LR, LR / 10] * 3)  # epochs_per_rate (3, 1): shares of a cycle
    snapshots = sorted(path.name for path in (tmp_path / "checkpoints").glob("snapshot-*"))
    assert snapshots == ["snapshot-cycle01.ckpt", "snapshot-cycle02.ckpt", "snapshot-cycle03.ckpt"]


class EncoderWeights(Callback):
    def __init__(self) -> None:
        self.copies: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.copies.append(next(encoder_of(pl_module.model).parameters()).detach().clone())


def test_the_encoder_is_frozen_for_the_first_fraction_of_the_run(shapes_folder, tmp_path):
    weights = EncoderWeights()
    _run(shapes_folder, tmp_path, callbacks=(weights,), max_steps=8, lr=0.05, freeze_encoder_fraction=0.5)
    changed = [
        not torch.equal(before, after) for before, after in zip(weights.copies, weights.copies[1:], strict=False)
    ]
    assert changed == [False] * 4 + [True] * 3  # frozen for steps 0-3 of 8


def test_with_max_epochs_and_a_budget_the_schedule_ends_with_whichever_comes_first():
    clock = TrainingClock(budget_seconds=100.0)
    progress = RunProgress(total_steps=10, clock=clock)
    clock.seconds = 20.0
    assert progress(5) == Fraction(1, 2)  # the steps lead
    clock.seconds = 80.0
    assert progress(5) == Fraction(4, 5)  # the budget leads


def _fail(capsys, *arguments: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["fit", *TINY, *arguments])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model.scheduler=onecycle", "--trainer.max_time=00:00:01:00"], "trainer.max_time alone gives the"),
        (["--model.train_minutes=1", "--model.swa_lr=0.01"], "swa_lr does not combine with train_minutes"),
        (["--model.val_every_minutes=1"], "val_every_minutes spaces validation by training time: it needs"),
        (["--model.train_minutes=1", "--model.scheduler=cyclic"], "needs scheduler_kwargs cycles"),
        (
            [
                "--model.train_minutes=1",
                "--model.scheduler=cosine_restarts",
                '--model.scheduler_kwargs={"cycle_epochs": 2}',
            ],
            "cycle_epochs counts epochs, which model.train_minutes does not fix",
        ),
        (
            [
                "--model.scheduler=cyclic",
                '--model.scheduler_kwargs={"mode": "exp_range", "gamma": 0.9, "cycles": 2}',
                "--model.train_minutes=1",
            ],
            "mode='exp_range' shrinks the peak by gamma every step",
        ),
        (["--model.freeze_encoder_fraction=0.2", "--model.freeze_encoder_epochs=1"], "both set the freeze"),
        (["--model.freeze_encoder_fraction=1.5"], r"freeze_encoder_fraction must be in \[0, 1\)"),
        (['--model.scheduler_kwargs={"cycles": 0}', "--model.scheduler=cyclic"], "cycles must be a whole number"),
    ],
)
def test_options_the_budget_cannot_follow_end_with_one_line(
    options, message, shapes_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    line = _fail(capsys, f"--data.dataset={shapes_folder}", *options)
    assert re.search(message, line), line


def test_fit_with_a_budget_from_a_config_stops_when_it_is_spent(shapes_folder, tmp_path, monkeypatch):
    """The YAML keys a plan writes, run by ``ternaus-zoo fit --config`` on the real clock."""
    monkeypatch.chdir(tmp_path)
    config = {
        "trainer": {"max_epochs": -1},
        "model": {
            "scheduler": "onecycle",
            "train_minutes": 0.03,
            "val_every_minutes": 0.01,
            "freeze_encoder_fraction": 0.1,
        },
        "data": {"dataset": str(shapes_folder)},
    }
    Path("plan.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config=plan.yaml", *TINY])
    (last,) = Path("runs").rglob("last.ckpt")
    clock = _saved_clock(last)
    assert 1.79 <= clock["elapsed"] < 60  # stopped once its 1.8 s of training were spent, not after 1000 epochs


def test_last_checkpoint_of_a_timed_run_is_spaced_by_time_and_written_at_the_stop(monkeypatch):
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    from ternaus_zoo.training.callbacks import SpacedLastCheckpoint

    written = []
    monkeypatch.setattr(
        ModelCheckpoint, "on_train_epoch_end", lambda self, trainer, module: written.append(trainer.current_epoch)
    )
    now = [0.0]
    callback = SpacedLastCheckpoint(10.0, clock=lambda: now[0])
    trainer = SimpleNamespace(should_stop=False, max_epochs=-1, current_epoch=0)
    for epoch, seconds in enumerate([3, 6, 11, 14, 22]):  # epochs of a few seconds each
        now[0], trainer.current_epoch = seconds, epoch
        callback.on_train_epoch_end(trainer, None)
    now[0], trainer.current_epoch, trainer.should_stop = 23, 5, True  # the budget is spent one second later
    callback.on_train_epoch_end(trainer, None)
    assert written == [2, 4, 5]

"""SegmentationModule: optimisers, discriminative rates, encoder freezing (batch-norm statistics included),
snapshots, SWA, multi-class, the flat training options and checkpoints written with them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, StochasticWeightAveraging

from ternaus_zoo.data import SegmentationDataModule
from ternaus_zoo.errors import BadValueError
from ternaus_zoo.training import SegmentationModule
from ternaus_zoo.training.base import encoder_of, norm_layers
from ternaus_zoo.training.optimization import Optimization

TINY_UNET = {"model": "unet", "model_kwargs": {"num_filters": 4, "depth": 3}}


def _data(folder: Path, **options) -> SegmentationDataModule:
    settings = {"image_size": 32, "val_size": 32, "batch_size": 2, "num_workers": 0, "n_folds": 2}
    return SegmentationDataModule(dataset=str(folder), model_name="unet", **{**settings, **options})


def _fit(module, data, tmp_path, epochs=2, callbacks=()) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=data)
    return trainer


class RecordRates(Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_discriminative_rates_split_encoder_and_decoder():
    module = SegmentationModule(model="linknet34", lr=1e-3, encoder_lr_ratio=0.1)
    decoder, encoder = module.parameter_groups()
    assert decoder["lr"] == 1e-3 and encoder["lr"] == pytest.approx(1e-4)
    encoder_ids = {id(p) for p in module.model.encoder.parameters()}
    assert {id(p) for p in encoder["params"]} == encoder_ids
    assert not encoder_ids & {id(p) for p in decoder["params"]}
    assert len(encoder["params"]) + len(decoder["params"]) == len(list(module.model.parameters()))


@pytest.mark.parametrize(
    ("name", "expected"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizers(name, expected, shapes_folder, tmp_path):
    trainer = _fit(SegmentationModule(**TINY_UNET, optimizer=name), _data(shapes_folder), tmp_path, epochs=1)
    (optimizer,) = trainer.optimizers
    assert type(optimizer) is expected
    if name == "sgd":
        assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"]


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        SegmentationModule(**TINY_UNET, optimizer="rmsprop")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scheduler": "linear"}, "unknown schedule 'linear'"),
        ({"scheduler_kwargs": {"max_rate": 1.0}}, r"unknown scheduler_kwargs \['max_rate'\]"),
        (
            {"scheduler": "cosine_restarts", "scheduler_kwargs": {"max_lr": 0.1, "base_lr": 0.01}},
            r"scheduler_kwargs \['base_lr', 'max_lr'\] do not apply to the 'cosine_restarts' schedule",
        ),
        ({"scheduler": "constant", "scheduler_kwargs": {"cycle_epochs": 2}}, "which takes no options"),
        ({"scheduler": "onecycle", "scheduler_kwargs": {"mode": "exp_range"}}, r"\['mode'\] do not apply"),
        ({"scheduler": "cyclic", "scheduler_kwargs": {"mode": "exp_range"}}, "gamma=1.0 is the triangular mode"),
        ({"scheduler": "cyclic", "scheduler_kwargs": {"mode": "exp_range", "gamma": 1.2}}, "needs 0 < gamma < 1"),
        ({"scheduler": "cyclic", "scheduler_kwargs": {"gamma": 0.9}}, "gamma applies to mode='exp_range' only"),
        ({"scheduler": "cyclic", "scheduler_kwargs": {"mode": "sawtooth"}}, "the cyclic modes are"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"freeze_encoder_epochs": -1}, "freeze_encoder_epochs must be >= 0"),
    ],
)
def test_training_options_are_checked_when_the_module_is_built(options, message):
    with pytest.raises(BadValueError, match=message):
        SegmentationModule(**TINY_UNET, **options)
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        SegmentationModule(**TINY_UNET, learning_rate=0.1)


def test_flat_training_options_build_one_object_saved_with_its_defaults():
    module = SegmentationModule(**TINY_UNET, lr=0.02, scheduler="onecycle")
    assert module.optimization == Optimization(lr=0.02, scheduler="onecycle")
    assert module.hparams.lr == 0.02 and module.hparams.model == "unet"
    assert {
        key: module.hparams[key] for key in Optimization().hyperparameters()
    } == module.optimization.hyperparameters()


def test_cli_parser_lists_every_training_option_with_type_and_default():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SegmentationModule, "model")
    text = parser.format_help()
    for name in Optimization().hyperparameters():
        assert f"--model.{name}" in text
    assert "(type: float, default: 0.001)" in " ".join(text.split())
    options = ["--model.lr=0.01", "--model.optimizer=sgd", "--model.scheduler=onecycle"]
    config = parser.parse_args([*options, '--model.scheduler_kwargs={"max_lr": 0.1}'])
    assert config.model.lr == 0.01 and config.model.swa_epoch_start == 0.8
    assert SegmentationModule(**config.model.as_dict()).optimization.scheduler_kwargs == {"max_lr": 0.1}


def test_checkpoint_with_the_old_flat_hyperparameters_loads(tmp_path):
    """A checkpoint saved before the options became one object: every argument flat in ``hyper_parameters``."""
    hyper_parameters = {
        **TINY_UNET,
        "num_classes": 1,
        "in_channels": 3,
        "weights": None,
        "loss": "bce_jaccard",
        "optimizer": "sgd",
        "lr": 0.02,
        "encoder_lr_ratio": 0.5,
        "weight_decay": 0.0,
        "freeze_encoder_epochs": 1,
        "scheduler": "cyclic",
        "scheduler_kwargs": {"cycle_epochs": 4},
        "threshold": 0.5,
        "ignore_index": None,
        "swa_lr": None,
        "swa_epoch_start": 0.8,
        "channels_last": True,
    }
    state = SegmentationModule(**TINY_UNET).state_dict()
    path = tmp_path / "old.ckpt"
    checkpoint = {"state_dict": state, "hyper_parameters": hyper_parameters, "hparams_name": "kwargs"}
    torch.save({**checkpoint, "pytorch-lightning_version": pl.__version__}, path)
    module = SegmentationModule.load_from_checkpoint(path)
    assert module.optimization == Optimization(
        optimizer="sgd", lr=0.02, encoder_lr_ratio=0.5, freeze_encoder_epochs=1, scheduler="cyclic",
        scheduler_kwargs={"cycle_epochs": 4},
    )  # fmt: skip
    added_since = {"class_names": None, "multilabel": False, "freeze_encoder_fraction": 0.0}
    added_since |= {"train_minutes": None, "val_every_minutes": None}
    assert dict(module.hparams) == {**hyper_parameters, **added_since}
    assert torch.equal(module.state_dict()["model.final.weight"], state["model.final.weight"])


class EncoderCopies(Callback):
    def __init__(self) -> None:
        self.copies: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.copies.append(self._first(pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.copies.append(self._first(pl_module))

    @staticmethod
    def _first(pl_module) -> torch.Tensor:
        return next(encoder_of(pl_module.model).parameters()).detach().clone()


def test_encoder_frozen_for_the_first_epochs(shapes_folder, tmp_path):
    copies = EncoderCopies()
    module = SegmentationModule(**TINY_UNET, lr=0.05, freeze_encoder_epochs=1)
    _fit(module, _data(shapes_folder), tmp_path, epochs=2, callbacks=[copies])
    start, after_frozen_epoch, after_training_epoch = copies.copies
    assert torch.equal(start, after_frozen_epoch)
    assert not torch.equal(after_frozen_epoch, after_training_epoch)


def _norm_statistics(module: torch.nn.Module) -> list[torch.Tensor]:
    return [buffer.clone() for layer in norm_layers(module) for buffer in (layer.running_mean, layer.running_var)]


def _linknet_parts(module: SegmentationModule) -> tuple[torch.nn.Module, torch.nn.Module]:
    model = module.model
    return model.encoder, torch.nn.ModuleList([model.decoder4, model.decoder3, model.decoder2, model.decoder1])


def test_frozen_encoder_keeps_its_batch_norm_statistics(shapes_folder, tmp_path):
    module = SegmentationModule(model="linknet34", weights=None, freeze_encoder_epochs=1)
    encoder, decoder = _linknet_parts(module)
    encoder_before, decoder_before = _norm_statistics(encoder), _norm_statistics(decoder)
    trainer = pl.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=_data(shapes_folder, image_size=64, val_size=64))
    assert trainer.global_step == 2
    for before, after in zip(encoder_before, _norm_statistics(encoder), strict=True):
        assert torch.equal(before, after)
    assert not all(map(torch.equal, decoder_before, _norm_statistics(decoder)))


def test_freezing_survives_train_calls_and_unfreezing_restores_train_mode():
    module = SegmentationModule(model="linknet34", weights=None)
    encoder_norms, decoder_norms = (list(norm_layers(part)) for part in _linknet_parts(module))
    module.freeze_encoder()
    module.eval().train()  # as Lightning's loops do
    assert not any(layer.training for layer in encoder_norms) and all(layer.training for layer in decoder_norms)
    assert not any(parameter.requires_grad for parameter in module.model.encoder.parameters())
    module.freeze_encoder(False)
    assert all(layer.training for layer in encoder_norms)
    assert all(parameter.requires_grad for parameter in module.model.encoder.parameters())


def test_step_cyclic_rates_and_snapshot_per_cycle(shapes_folder, tmp_path):
    rates = RecordRates()
    module = SegmentationModule(
        **TINY_UNET,
        lr=0.01,
        scheduler="step_cyclic",
        scheduler_kwargs={"factors": [1.0, 0.1], "epochs_per_rate": [1, 1]},
    )
    trainer = _fit(module, _data(shapes_folder), tmp_path, epochs=4, callbacks=[rates])
    # 2 steps an epoch: each rate held 2 steps, a cycle of 4 steps, repeated
    assert rates.rates == pytest.approx([0.01, 0.01, 0.001, 0.001] * 2)
    snapshots = sorted(path.name for path in (Path(trainer.default_root_dir) / "checkpoints").glob("snapshot-*"))
    assert snapshots == ["snapshot-cycle01.ckpt", "snapshot-cycle02.ckpt"]


def test_per_step_cyclic_schedule_changes_the_rate_every_batch(shapes_folder, tmp_path):
    rates = RecordRates()
    module = SegmentationModule(
        **TINY_UNET, lr=0.01, scheduler="cyclic", scheduler_kwargs={"base_lr": 0.001, "cycle_epochs": 2}
    )
    _fit(module, _data(shapes_folder), tmp_path, epochs=2, callbacks=[rates])
    assert rates.rates == pytest.approx([0.001, 0.0055, 0.01, 0.0055])


def test_stochastic_weight_averaging_keeps_the_averaged_weights_in_the_checkpoint_predict_uses(shapes_folder, tmp_path):
    module = SegmentationModule(**TINY_UNET, swa_lr=0.01, swa_epoch_start=1)
    snapshots = []

    class Weights(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            snapshots.append({key: value.clone() for key, value in pl_module.state_dict().items()})

    trainer = _fit(module, _data(shapes_folder), tmp_path, epochs=3, callbacks=[Weights()])
    (swa,) = [callback for callback in trainer.callbacks if isinstance(callback, StochasticWeightAveraging)]
    assert swa.n_averaged is not None and int(swa.n_averaged) >= 2  # weights of several epochs were averaged
    checkpoints = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt"]  # no "best" epoch checkpoint to be taken instead of the average
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weight = next(key for key in saved if key.endswith("weight") and saved[key].ndim == 4)
    assert torch.equal(saved[weight], swa._average_model.state_dict()[weight])  # the callback's running average
    assert not torch.allclose(saved[weight], snapshots[2][weight], atol=1e-4)  # not the last epoch's own weights


def test_validation_scores_only_the_real_pixels_not_the_padding(tmp_path):
    """Wide images padded to a square (val_size) and a model that says "foreground" everywhere: IoU is the
    foreground share of the real pixels; counting the padding's background would halve it."""
    root = tmp_path / "wide"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(4):
        cv2.imwrite(str(root / "images" / f"{index}.png"), np.full((24, 48, 3), 128, np.uint8))
        mask = np.zeros((24, 48), np.uint8)
        mask[:, : 12 * (index + 1)] = 255
        cv2.imwrite(str(root / "masks" / f"{index}.png"), mask)
    module = SegmentationModule(**TINY_UNET)
    module.forward = lambda images: torch.full((len(images), 1, *images.shape[-2:]), 10.0)  # all foreground
    data = _data(root, val_size=48, holdout_every=0)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    (scores,) = trainer.validate(module, datamodule=data)
    data.setup("validate")
    stems = [data.val_dataloader().dataset[i]["name"] for i in range(len(data.val_dataloader().dataset))]
    foreground = sum(12 * (int(stem) + 1) * 24 for stem in stems)
    assert scores["val/iou"] == pytest.approx(foreground / (len(stems) * 24 * 48), abs=1e-6)


def test_multiclass_fit_with_lovasz_softmax_logs_mean_iou(class_folder, tmp_path):
    module = SegmentationModule(
        **TINY_UNET,
        num_classes=3,
        ignore_index=9,
        loss={"ce": {"weight": 0.5, "ignore_index": 9}, "lovasz_softmax": {"weight": 0.5, "ignore_index": 9}},
    )
    data = _data(class_folder, mask_mode="classes", num_classes=3, ignore_index=9)
    trainer = _fit(module, data, tmp_path, epochs=1)
    assert module.monitor == "val/miou"
    assert 0 <= float(trainer.callback_metrics["val/miou"]) <= 1
    assert list((Path(tmp_path) / "checkpoints").glob("best-*.ckpt"))


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_layout_leaves_the_logits_unchanged(channels_last):
    torch.manual_seed(0)
    module = SegmentationModule(**TINY_UNET, channels_last=channels_last).eval()
    reference = SegmentationModule(**TINY_UNET, channels_last=not channels_last).eval()
    reference.load_state_dict(module.state_dict())
    convolution = next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(module(images), reference(images), atol=1e-5, rtol=1e-4)

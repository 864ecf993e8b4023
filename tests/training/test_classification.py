"""ClassificationModule on tiny synthetic batches (losses, the auxiliary term, thresholds in checkpoints, predict)
and MixUp/CutMix label mixing on hand-made tensors."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ternaus_zoo.data.aux_targets import IGNORE
from ternaus_zoo.metrics.classification import search_thresholds
from ternaus_zoo.training.classification import ClassificationModule, masked_bce_with_logits
from ternaus_zoo.training.mixing import BatchMixer, cutmix, cutmix_box, mixup
from ternaus_zoo.weights import load_container

# training_step called outside a Trainer logs nowhere, which Lightning warns about
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


def batch(size: int = 4, classes: int = 3, side: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(size, 3, side, side, generator=generator),
        "labels": torch.randint(0, 2, (size, classes), generator=generator).float(),
    }


# -- MixUp / CutMix ---------------------------------------------------------------------------------


def test_mixup_mixes_images_labels_and_aux_with_lam():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    labels = torch.eye(4)[:, :3]
    aux = torch.zeros(4, 3, 2, 2)
    aux[1, :, 0, 0] = IGNORE
    index = torch.tensor([1, 0, 3, 2])
    mixed = mixup(images, labels, aux, lam=0.3, index=index)
    assert torch.allclose(mixed.images[0], torch.full((1, 2, 2), 0.3 * 0 + 0.7 * 1))
    assert torch.allclose(mixed.labels[0], torch.tensor([0.3, 0.7, 0.0]))
    assert torch.allclose(mixed.labels[2], torch.tensor([0.0, 0.0, 0.3]))  # partner 3 has no label
    assert mixed.aux[0, :, 0, 0].eq(IGNORE).all() and mixed.aux[1, :, 0, 0].eq(IGNORE).all()
    assert mixed.aux[0, :, 1, 1].eq(0).all() and mixed.lam == 0.3


def test_cutmix_pastes_the_box_and_mixes_labels_by_area():
    images = torch.zeros(2, 1, 4, 4)
    images[1] = 1.0
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    aux = torch.zeros(2, 2, 8, 8)  # twice the image resolution
    aux[1] = 1.0
    mixed = cutmix(images, labels, aux, box=(0, 0, 2, 4), index=torch.tensor([1, 0]))
    assert mixed.images[0, 0, :2].eq(1).all() and mixed.images[0, 0, 2:].eq(0).all()
    assert mixed.lam == 0.5 and torch.allclose(mixed.labels[0], torch.tensor([0.5, 0.5]))
    assert mixed.aux[0, :, :4].eq(1).all() and mixed.aux[0, :, 4:].eq(0).all()  # same box, scaled
    assert mixed.aux[1, :, :4].eq(0).all() and mixed.aux[1, :, 4:].eq(1).all()
    # labels follow the uncovered area of a clipped box
    corner = cutmix(images, labels, box=(3, 3, 4, 4), index=torch.tensor([1, 0]))
    assert corner.lam == 1 - 1 / 16 and torch.allclose(corner.labels[0], torch.tensor([15 / 16, 1 / 16]))


def test_seeded_mixing_is_reproducible_and_follows_beta():
    data = batch(8)
    first = cutmix(data["image"], data["labels"], alpha=1.0, rng=3)
    second = cutmix(data["image"], data["labels"], alpha=1.0, rng=3)
    assert first.box == second.box and torch.equal(first.labels, second.labels)
    top, left, bottom, right = first.box
    assert first.lam == pytest.approx(1 - (bottom - top) * (right - left) / 32**2)
    mixed = mixup(data["image"], data["labels"], alpha=0.4, rng=5)
    expected = mixed.lam * data["labels"] + (1 - mixed.lam) * data["labels"][mixed.index]
    assert torch.allclose(mixed.labels, expected) and 0 <= mixed.lam <= 1
    assert cutmix_box(10, 10, lam=1.0, rng=0)[2:] == cutmix_box(10, 10, lam=1.0, rng=0)[:2]  # empty box


def test_batch_mixer_off_and_on():
    data = batch(4)
    unchanged = BatchMixer()(data["image"], data["labels"])
    assert unchanged.images is data["image"] and unchanged.lam == 1.0
    assert BatchMixer(mixup_alpha=0.4, prob=0.0)(data["image"], data["labels"]).lam == 1.0
    mixed = BatchMixer(cutmix_alpha=1.0)(data["image"], data["labels"], rng=1)
    assert mixed.box is not None
    with pytest.raises(ValueError, match="alphas"):
        BatchMixer(mixup_alpha=-1)


# -- losses -----------------------------------------------------------------------------------------


def test_aux_term_is_in_the_loss_and_its_gradient():
    data = batch()
    torch.manual_seed(0)
    plain = ClassificationModule("aux_resnet18", num_classes=3, aux_weight=0.0)
    torch.manual_seed(0)
    aux = ClassificationModule("aux_resnet18", num_classes=3, aux_weight=0.5, aux_target="labels")
    plain.train(), aux.train()
    plain_loss, aux_loss = plain.training_step(data, 0), aux.training_step(data, 0)
    logits, maps = aux.model(data["image"])
    cls = aux.classification_loss(logits, data["labels"])
    expected = cls + 0.5 * F.binary_cross_entropy_with_logits(maps, data["labels"][:, :, None, None].expand_as(maps))
    assert torch.allclose(aux_loss, expected, atol=1e-5) and torch.allclose(plain_loss, cls, atol=1e-5)
    plain_loss.backward(), aux_loss.backward()
    assert plain.model.aux_head.weight.grad is None
    assert aux.model.aux_head.weight.grad.abs().sum() > 0
    assert not torch.allclose(
        plain.model.encoder.layer2[0].conv1.weight.grad, aux.model.encoder.layer2[0].conv1.weight.grad
    )


def test_aux_loss_is_masked_where_no_target_is_known():
    module = ClassificationModule("aux_resnet18", num_classes=2, aux_weight=1.0, aux_target="mask")
    maps = torch.randn(2, 2, 4, 4, requires_grad=True)
    targets = torch.zeros(2, 2, 32, 32)
    targets[1] = IGNORE  # the second sample has no mask
    value = module.auxiliary_loss(maps, targets)
    assert torch.allclose(value, F.binary_cross_entropy_with_logits(maps[0], torch.zeros(2, 4, 4)))
    assert masked_bce_with_logits(maps, maps.detach(), torch.zeros_like(maps, dtype=torch.bool)) == 0
    with pytest.raises(KeyError, match="aux_mask"):
        module.training_step(batch(classes=2), 0)
    with pytest.raises(ValueError, match="pooled by stride 8"):
        module.auxiliary_loss(torch.randn(2, 2, 3, 3), targets)


def test_hpa_channel_targets():
    module = ClassificationModule(
        "aux_resnet18", num_classes=2, aux_weight=1.0, aux_target="channel", aux_threshold=0.5
    )
    info = module.model.info
    images = torch.zeros(1, 3, 2, 2)
    raw_green = torch.tensor([[0.9, 0.1], [0.6, 0.2]])
    images[0, 1] = (raw_green - info.mean[1]) / info.std[1]
    targets = module.aux_targets({"image": images}, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(targets[0, 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]])) and targets[0, 1].eq(0).all()


def test_multiclass_cross_entropy_with_label_smoothing_and_argmax_labels():
    module = ClassificationModule("gapnet_pl", num_classes=3, task="multiclass", label_smoothing=0.1)
    logits = torch.randn(4, 3)
    classes = torch.tensor([0, 2, 1, 2])
    expected = F.cross_entropy(logits, classes, label_smoothing=0.1)
    assert torch.allclose(module.classification_loss(logits, module.labelling.targets(classes)), expected)
    assert module.predict_labels(torch.tensor([[0.2, 0.7, 0.1]])).tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match="leave loss unset"):
        ClassificationModule("gapnet_pl", num_classes=3, task="multiclass", loss="weighted_bce")
    with pytest.raises(ValueError, match="multi-label losses"):
        ClassificationModule("gapnet_pl", num_classes=3, loss="ce")


def test_class_weights_reach_the_multilabel_loss():
    module = ClassificationModule("gapnet_pl", num_classes=2, loss="multilabel_focal", class_weights=[1.0, 0.0])
    logits, labels = torch.randn(3, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    only_first = ClassificationModule("gapnet_pl", num_classes=2, loss="multilabel_focal")
    assert torch.allclose(module.classification_loss(logits, labels), only_first.loss(logits[:, :1], labels[:, :1]))


# -- thresholds through a real (tiny) fit -----------------------------------------------------------


class Tiny(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.data = batch(n, classes=3, side=32, seed=seed)

    def __len__(self) -> int:
        return len(self.data["image"])

    def __getitem__(self, index: int) -> dict:
        return {"image": self.data["image"][index], "labels": self.data["labels"][index], "name": f"x{index}"}


def test_thresholds_are_tuned_saved_and_used_by_predict(tmp_path):
    pl.seed_everything(0)
    train, val = DataLoader(Tiny(4, 1), batch_size=2), DataLoader(Tiny(12, 2), batch_size=6)
    module = ClassificationModule(
        "aux_resnet18", num_classes=3, aux_weight=0.3, aux_target="labels", mixup_alpha=0.4, cutmix_alpha=1.0
    )
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train, val)
    assert module.monitor == "val/f1_macro_tuned" and "val/f1_macro_tuned" in trainer.callback_metrics
    module.eval()
    with torch.no_grad():
        probs = torch.cat([module(b["image"]).sigmoid() for b in val])
    targets = torch.cat([b["labels"] for b in val])
    expected, best = search_thresholds(probs, targets)
    assert torch.allclose(module.thresholds, expected)
    assert trainer.callback_metrics["val/f1_macro_tuned"] == pytest.approx(float(best.mean()), abs=1e-6)

    (best_path,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    checkpoint = load_container(best_path)
    assert checkpoint["thresholds"] == pytest.approx(expected.tolist())
    restored = ClassificationModule.load_from_checkpoint(best_path)
    assert torch.allclose(restored.thresholds, expected) and restored.hparams.model == "aux_resnet18"
    del checkpoint["state_dict"]["thresholds"]  # the plain list alone also restores them
    legacy = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy)
    assert torch.allclose(ClassificationModule.load_from_checkpoint(legacy).thresholds, expected)

    restored.eval()
    sample = next(iter(val))
    with torch.no_grad():
        output = restored.predict_step(sample, 0)
    assert output["probabilities"].shape == (6, 3) and output["name"] == [f"x{i}" for i in range(6)]
    assert torch.equal(output["labels"], (output["probabilities"] >= expected).long())

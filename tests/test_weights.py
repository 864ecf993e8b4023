"""Loading ImageNet encoders (from a TORCH_HOME the tests fill themselves) and local checkpoints."""

from __future__ import annotations

import pathlib
import re
import time
from urllib.error import URLError

import pytest
import torch
from torchvision.models import ResNet34_Weights, get_model, get_model_weights

from ternaus_zoo import WeightsError, create_model
from ternaus_zoo.weights import adapt_first_conv, load_container, torchvision_cache_file
from tests.fakes import cache_as_torchvision, cache_torchvision_weights

# registry name -> (torchvision model whose ImageNet file it reads, prefix of the encoder in that file,
#                   attribute path of the encoder in our model, create_model kwargs)
PRETRAINED = {
    "unet11": ("vgg11", "features.", "encoder", {}),
    "unet16": ("vgg16", "features.", "encoder", {}),
    "albunet34": ("resnet34", "", "encoder", {}),
    "linknet34": ("resnet34", "", "encoder", {}),
    "smp.Unet": ("resnet34", "", "smp_model.encoder", {"encoder_name": "resnet34"}),
}


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_imagenet_weights_fill_the_encoder_exactly(name, monkeypatch):
    """A state dict saved under a name carrying its own sha256 prefix (as torchvision names its files) loads."""
    source, prefix, encoder_path, kwargs = PRETRAINED[name]
    state = cache_torchvision_weights(monkeypatch, source)
    model = create_model(name, weights="imagenet", **kwargs)
    encoder_state = model.get_submodule(encoder_path).state_dict()
    compared = 0
    for key, value in encoder_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(value, state[prefix + key], rtol=0, atol=0)
        compared += 1
    expected = [k for k in state if k.startswith(prefix) and not k.startswith("fc.") and "num_batches" not in k]
    assert compared == len(expected)


def test_imagenet_first_conv_adapted_to_four_and_one_channels(monkeypatch):
    state = cache_torchvision_weights(monkeypatch, "vgg11")
    rgb = state["features.0.weight"]
    four = create_model("unet11", in_channels=4, weights="imagenet").encoder[0].weight.detach()
    torch.testing.assert_close(four[:, :3], rgb, rtol=0, atol=0)
    torch.testing.assert_close(four[:, 3], rgb.mean(dim=1))
    grey = create_model("unet11", in_channels=1, weights="imagenet").encoder[0].weight.detach()
    torch.testing.assert_close(grey[:, 0], rgb.sum(dim=1))


def test_adapted_first_conv_responds_to_grey_like_rgb():
    weight = torch.randn(8, 3, 3, 3)
    grey = torch.randn(1, 1, 5, 5)
    rgb_response = torch.nn.functional.conv2d(grey.expand(1, 3, 5, 5), weight)
    for channels in (1, 2):
        adapted = adapt_first_conv(weight, channels)
        torch.testing.assert_close(torch.nn.functional.conv2d(grey.expand(1, channels, 5, 5), adapted), rgb_response)


def test_offline_without_cache_names_the_file_and_does_not_hang():
    started = time.perf_counter()
    with pytest.raises(WeightsError) as error:
        create_model("unet11", weights="imagenet")
    expected = torchvision_cache_file(get_model_weights("vgg11").IMAGENET1K_V1)
    assert str(expected) in str(error.value) and str(expected.parent) in str(error.value)
    assert "https://download.pytorch.org/models/vgg11" in str(error.value)
    assert time.perf_counter() - started < 60  # a network wait would take minutes; a loaded CPU takes ~20 s


def _allow_downloads(monkeypatch):
    for variable in ("TERNAUS_ZOO_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)


def test_failed_download_names_the_file(monkeypatch):
    _allow_downloads(monkeypatch)

    def refuse(*args, **kwargs):
        raise URLError("no network in this test")

    monkeypatch.setattr("torch.hub.download_url_to_file", refuse)
    with pytest.raises(WeightsError, match="no network in this test") as error:
        create_model("albunet34", weights="imagenet")
    assert str(torchvision_cache_file(get_model_weights("resnet34").IMAGENET1K_V1)) in str(error.value)


class _Payload:
    """Unpickling this creates ``marker``: what a planted checkpoint could do instead."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _payload_state(marker: pathlib.Path) -> dict:
    return {"conv1.weight": torch.zeros(64, 3, 7, 7), "payload": _Payload(marker)}


def _unsafe_load(path, **kwargs):
    return torch.load(path, weights_only=False)


def test_a_planted_file_under_the_real_name_is_refused_by_its_hash(tmp_path, monkeypatch):
    """The hash check alone: even with an unpickling loader the payload never runs."""
    monkeypatch.setattr("ternaus_zoo.weights.load_container", _unsafe_load)
    marker = tmp_path / "ran"
    planted = torchvision_cache_file(ResNet34_Weights.IMAGENET1K_V1)
    assert planted.name == "resnet34-b627a593.pth"
    planted.parent.mkdir(parents=True)
    torch.save(_payload_state(marker), planted)
    with pytest.raises(
        WeightsError, match=rf"^{re.escape(str(planted))} is not .*sha256 must start with b627a593[^\n]*$"
    ):
        create_model("linknet34", weights="imagenet")
    assert not marker.exists()


def test_a_planted_file_with_its_own_true_hash_is_refused_by_weights_only(tmp_path, monkeypatch):
    """``weights_only=True`` alone: the file passes the hash check (the entry's URL names its true hash)."""
    marker = tmp_path / "ran"
    planted = cache_as_torchvision(monkeypatch, ResNet34_Weights.IMAGENET1K_V1, _payload_state(marker))
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(planted))} carries pickled Python objects"):
        create_model("linknet34", weights="imagenet")
    assert not marker.exists()


def test_a_download_is_checked_like_a_cached_file(tmp_path, monkeypatch):
    _allow_downloads(monkeypatch)
    marker = tmp_path / "ran"
    monkeypatch.setattr("ternaus_zoo.weights.load_container", _unsafe_load)
    monkeypatch.setattr(
        "torch.hub.download_url_to_file", lambda url, dst, **kwargs: torch.save(_payload_state(marker), dst)
    )
    with pytest.raises(WeightsError, match="sha256 must start with b627a593"):
        create_model("linknet34", weights="imagenet")
    assert not marker.exists()


def test_model_without_pretrained_encoder_says_so():
    with pytest.raises(WeightsError, match="no ImageNet-pretrained encoder"):
        create_model("unet", weights="imagenet")


@torch.no_grad()
def _outputs_equal(first, second):
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(first.eval()(images), second.eval()(images), rtol=0, atol=0)


def test_full_state_dict_file(tmp_path):
    source = create_model("linknet34", num_classes=2)
    torch.save(source.state_dict(), tmp_path / "full.pth")
    _outputs_equal(create_model("linknet34", num_classes=2, weights=tmp_path / "full.pth"), source)


def test_encoder_only_file_fills_only_the_encoder(tmp_path):
    source = create_model("albunet34")
    torch.save(source.encoder.state_dict(), tmp_path / "encoder.pth")
    loaded = create_model("albunet34", weights=str(tmp_path / "encoder.pth"))
    for key, value in source.encoder.state_dict().items():
        torch.testing.assert_close(loaded.encoder.state_dict()[key], value, rtol=0, atol=0)
    assert not torch.equal(loaded.final.weight, source.final.weight)


def test_torchvision_classifier_file_as_encoder(tmp_path):
    torch.manual_seed(3)
    vgg = get_model("vgg11", weights=None)
    torch.save(vgg.state_dict(), tmp_path / "vgg11.pth")
    loaded = create_model("unet11", weights=tmp_path / "vgg11.pth")
    torch.testing.assert_close(loaded.conv5.weight, vgg.features[18].weight, rtol=0, atol=0)


def test_lightning_checkpoint(tmp_path):
    source = create_model("unet11")
    state = {f"model.{key}": value for key, value in source.state_dict().items()}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.6.0", "epoch": 3}, tmp_path / "last.ckpt")
    _outputs_equal(create_model("unet11", weights=tmp_path / "last.ckpt"), source)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        create_model("unet11", weights="nowhere.pth")


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.pth"):
        create_model("unet11", weights=path)


class _Hyperparameters(dict):
    """A pickled Python object, as Lightning stores hyperparameters: the safe loader refuses it."""


def test_load_container_never_unpickles_objects(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"hyper_parameters": _Hyperparameters(lr=0.1), "state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(WeightsError, match=r"objects\.ckpt carries pickled Python objects \(.*_Hyperparameters\)"):
        load_container(path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pth")
    assert load_container(tmp_path / "plain.pth")["w"].tolist() == [0]


def test_load_container_raises_weights_error_on_other_files(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.ckpt is not a PyTorch checkpoint"):
        load_container(path)


def test_state_dict_of_another_model_names_the_keys(tmp_path):
    torch.save(create_model("linknet34").state_dict(), tmp_path / "linknet.pth")
    with pytest.raises(WeightsError, match=r"linknet.pth.*missing keys \['center"):
        create_model("unet11", weights=tmp_path / "linknet.pth")


def test_shape_mismatch_names_the_key_and_shapes(tmp_path):
    torch.save(create_model("unet11", num_classes=2).state_dict(), tmp_path / "two.pth")
    expected = r"'final.weight' has shape \(2, 32, 1, 1\), the model expects \(1, 32, 1, 1\)"
    with pytest.raises(WeightsError, match=expected):
        create_model("unet11", num_classes=1, weights=tmp_path / "two.pth")

"""A model's own input statistics (``create_model(mean=..., std=...)``): a model trained from scratch on a data
set's mean and std keeps them in its info and in the config that rebuilds it."""

import pytest

from ternaus_zoo import UserError, create_model


def test_statistics_reach_the_info_and_survive_a_rebuild() -> None:
    model = create_model("unet", num_classes=1, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    assert model.info.mean == (0.5, 0.4, 0.3) and model.info.std == (0.2, 0.25, 0.3)
    config = model.build_config
    rebuilt = create_model(config["name"], num_classes=config["num_classes"], **config["kwargs"])
    assert rebuilt.info.mean == model.info.mean and rebuilt.info.std == model.info.std


def test_default_statistics_are_the_registered_ones() -> None:
    assert create_model("unet").info.mean == (0.485, 0.456, 0.406)


def test_one_value_per_channel_is_required() -> None:
    with pytest.raises(UserError, match=r"\['mean'\].*one value per input channel \(1\)"):
        create_model("unet", in_channels=1, mean=[0.5, 0.5, 0.5])

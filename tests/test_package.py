"""The public API: everything in ``__all__`` resolves, and importing the models needs no Lightning."""

from __future__ import annotations

import subprocess
import sys

import ternaus_zoo


def test_every_public_name_resolves():
    for name in ternaus_zoo.__all__:
        assert getattr(ternaus_zoo, name) is not None, name


def test_models_import_without_lightning():
    code = "import sys, ternaus_zoo; ternaus_zoo.create_model('unet'); print('pytorch_lightning' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"

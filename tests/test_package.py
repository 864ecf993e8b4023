"""The public API: everything in ``__all__`` resolves, importing the models needs no Lightning, and importing the
data layer needs no model code."""

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


def test_data_layer_imports_no_model_code():
    """``import ternaus_zoo.data`` loads no model family and no smp; a data module still finds its model's
    statistics and size multiple by name (the registry imports the families on that first lookup)."""
    code = (
        "import sys, ternaus_zoo.data\n"
        "print(sorted(m for m in sys.modules if m.startswith(('segmentation_models_pytorch', 'ternaus_zoo.models'))))\n"
        "module = ternaus_zoo.data.SegmentationDataModule(dataset='none', model_name='unet', in_channels=1)\n"
        "print(module.info.size_multiple, module.info.mean)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, info = output.split("\n", 1)
    assert loaded == "[]"
    assert info.split() == ["16", "(0.449,)"]

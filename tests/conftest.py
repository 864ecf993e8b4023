"""Test-wide settings: no network, and the real data sets from TERNAUS_ZOO_DATA.

A test that needs a data set takes the ``data_root`` fixture (or ``dataset_dir(name)``); it skips with
the reason where the data is absent. Under CI with the data present, such a skip is turned into a
failure, so a broken path cannot pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TERNAUS_ZOO_OFFLINE", "1")

DATA_VARIABLE = "TERNAUS_ZOO_DATA"


def _data_root() -> Path | None:
    value = os.environ.get(DATA_VARIABLE)
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip(f"real data sets not found: set {DATA_VARIABLE} to the folder holding membrane/, kvasir-seg/ ...")
    return root


@pytest.fixture(scope="session")
def dataset_dir(data_root: Path):
    def find(name: str) -> Path:
        folder = data_root / name
        if not folder.is_dir():
            pytest.skip(f"data set {name!r} not found under {data_root}")
        return folder

    return find


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory, monkeypatch):
    """Every test gets an empty TORCH_HOME, so nothing reads a real cache or reaches a hub."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    uses_data = "data_root" in getattr(item, "fixturenames", ()) or item.get_closest_marker("data")
    if report.skipped and uses_data and os.environ.get("CI") == "true" and _data_root() is not None:
        report.outcome = "failed"
        report.longrepr = f"a data test skipped in CI although {DATA_VARIABLE}={_data_root()} exists: {report.longrepr}"

"""Every notebook runs top to bottom with the small-size switch (``TERNAUS_ZOO_QUICK=1``): the same cells as
the committed copies, on tiny inputs and a few steps. The executed copy is not written back."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(name: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("TERNAUS_ZOO_QUICK", "1")
    monkeypatch.setenv("TERNAUS_ZOO_DATA", str(data_root))
    monkeypatch.setenv("TERNAUS_ZOO_NOTEBOOK_RUNS", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list[str]:
    """The ``kind`` payloads (``image``: PNG or JPEG, ``text/plain`` ...) of every code cell's outputs."""
    kinds = ("image/png", "image/jpeg") if kind == "image" else (kind,)
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            found += [output["data"][name] for name in kinds if name in output.get("data", {})]
            if kind == "text/plain" and output.get("output_type") == "stream":
                found.append(output["text"])
    return found


@pytest.mark.parametrize(
    ("name", "figures", "texts"),
    [
        ("01_quickstart", 3, ["UNet11", "all cell (trivial)", "steps"]),
        ("02_kvasir_ladder", 3, ["+ D4 TTA", "D4 TTA (8 views each)", "small 2-fold bag", "Dice < 0.5:"]),
        ("03_classification", 1, ["F1"]),
    ],
)
def test_notebook_runs_quick(name, figures, texts, data_root, tmp_path, monkeypatch):
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert outputs(committed, "image"), f"the committed {name}.ipynb has no plots: execute it before committing"
    notebook = execute(name, data_root, tmp_path, monkeypatch)
    assert len(outputs(notebook, "image")) >= figures
    text = "\n".join(outputs(notebook, "text/plain"))
    for expected in texts:
        assert expected in text, f"{name}: {expected!r} missing from the outputs"

"""``ternaus-zoo classify`` in-process: fit, then predict from the checkpoint alone on a tiny CSV data set; the shipped
classification configs parse and build (with the real data)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ternaus_zoo.cli import main
from ternaus_zoo.cli_classification import build_classification_cli
from ternaus_zoo.inference import model_from_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LABELS = ("red", "green", "blue")
# every shipped classification config: (file, data set, classes, labels derived from masks)
CLASSIFICATION_CONFIGS = [
    ("miml_gapnet.yaml", "miml", 5, False),
    ("miml_aux_resnet34.yaml", "miml", 5, False),
    ("camvid_labels_aux_resnet34.yaml", "camvid-val", 11, True),
]


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    """15 images 24x30 whose labels say which colour channels are bright, and ``labels.csv``."""
    root = tmp_path / "colours"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["Filenames," + ",".join(LABELS)]
    for index in range(15):
        labels = rng.integers(0, 2, 3)
        image = rng.integers(0, 60, (24, 30, 3)) + 150 * labels
        cv2.imwrite(str(root / "images" / f"img{index:02d}.png"), image.astype(np.uint8)[..., ::-1])
        rows.append(f"img{index:02d}.png," + ",".join(map(str, labels)))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


TINY = [
    "--model.model=aux_resnet18",
    "--model.num_classes=3",
    "--model.aux_weight=0.5",
    "--model.aux_target=labels",
    "--model.mixup_alpha=0.4",
    "--model.lr=0.001",
    "--data.image_size=32",
    "--data.batch_size=4",
    "--data.num_workers=0",
    "--data.n_folds=3",
    "--trainer.accelerator=cpu",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_progress_bar=false",
]


def test_fit_then_predict_from_the_checkpoint_alone(csv_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["classify", "fit", f"--data.dataset={csv_folder}", "--trainer.max_epochs=2", *TINY])
    (run,) = Path("runs/lightning_logs").iterdir()
    checkpoints = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    tuned = [float(row["val/f1_macro_tuned"]) for row in rows if row.get("val/f1_macro_tuned")]
    assert len(tuned) == 2 and all(0 <= value <= 1 for value in tuned)
    assert any(row.get("train/aux_loss") for row in rows)
    assert (run / "folds.csv").is_file() and (run / "config.yaml").is_file()
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    thresholds = torch.tensor(checkpoint["thresholds"])
    # the tuned thresholds travel with the rebuilt model (and so into a saved folder)
    rebuilt = model_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert torch.tensor(rebuilt.info.thresholds).tolist() == thresholds.float().tolist()

    output = tmp_path / "out" / "predictions.csv"
    main(
        [
            "classify",
            "predict",
            f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"--data.dataset={csv_folder}",
            "--data.num_workers=0",
            "--data.image_size=32",
            "--trainer.enable_progress_bar=false",
            f"--writer.output_path={output}",
        ]
    )
    predicted = list(csv.DictReader(output.open()))
    names = sorted(f"img{i:02d}.png" for i in range(15))[::5]
    assert [row["name"] for row in predicted] == names  # the hold-out
    assert list(predicted[0]) == ["name", *(f"prob_{label}" for label in LABELS), *LABELS]
    for row in predicted:
        probabilities = torch.tensor([float(row[f"prob_{label}"]) for label in LABELS])
        labels = [int(row[label]) for label in LABELS]
        assert labels == (probabilities >= thresholds).long().tolist()


def test_help(capsys):
    main(["classify"])
    assert "ternaus-zoo classify fit --config" in capsys.readouterr().out


@pytest.mark.data
@pytest.mark.parametrize(("name", "dataset", "classes", "aux"), CLASSIFICATION_CONFIGS)
def test_classification_configs_build(name, dataset, classes, aux, data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_classification_cli([f"--config={CONFIGS / name}", "--model.weights=null"], run=False)
    assert cli.model.model.info.num_classes == classes and cli.datamodule.root == data_root / dataset
    assert cli.datamodule.num_classes == classes  # linked from the model
    cli.datamodule.setup("fit")
    assert len(cli.datamodule.train_dataset) > len(cli.datamodule.val_dataset) > 0
    assert cli.datamodule.label_names == (cli.model.hparams.label_names if not aux else [str(i) for i in range(11)])
    assert ("aux_mask" in cli.datamodule.train_dataset[0]) == aux

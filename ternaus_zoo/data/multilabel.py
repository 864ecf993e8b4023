"""Deprecated: the label datasets moved to :mod:`ternaus_zoo.data.label_datasets` and the data module to
:mod:`ternaus_zoo.data.classification_datamodule` (all four names are also in :mod:`ternaus_zoo.data`)."""

from ternaus_zoo.deprecation import moved_names

MOVED = {
    "read_label_csv": "ternaus_zoo.data.label_datasets",
    "MultiLabelDataset": "ternaus_zoo.data.label_datasets",
    "MaskLabelDataset": "ternaus_zoo.data.label_datasets",
    "ClassificationDataModule": "ternaus_zoo.data.classification_datamodule",
}
__all__ = sorted(MOVED)
__getattr__ = moved_names(__name__, MOVED)

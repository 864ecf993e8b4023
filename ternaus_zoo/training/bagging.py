"""Deprecated: bagging moved to the top-level package :mod:`ternaus_zoo.bagging`.

Names resolve on first access (importing this module does not import :mod:`ternaus_zoo.bagging`).
"""

from ternaus_zoo.deprecation import moved_names

_NAMES = (
    "BootstrapDataset", "BootstrapSample", "FoldRun", "OutOfFoldWriter", "assemble", "bag_signature",
    "best_threshold", "binary_oof_statistics", "bootstrap_indices", "check_bag_config", "fold_dir",
    "fold_logger_config", "is_fold_done", "read_fold_entry", "summarise_oof", "threshold_curve", "to_eval_size",
    "train_bag", "train_fold",
)  # fmt: skip
__getattr__ = moved_names(__name__, dict.fromkeys(_NAMES, "ternaus_zoo.bagging"))

"""The selection on hand-written out-of-fold files: the greedy ensemble against a brute-force re-score, the nested
choice, the bootstrap, and the post-processing trials kept only where they help."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ternaus_zoo.errors import BadValueError, MissingPathError
from ternaus_zoo.planning.bags import check_same_task, load_bag, load_masks
from ternaus_zoo.planning.selection import greedy_ensemble, objective, paired_bootstrap, select

SIZE = 12


def write_bag(
    folder: Path,
    probabilities: Mapping[str, np.ndarray],
    folds: Mapping[str, int],
    dataset: Path | None = None,
    mask_mode: str = "binary",
    num_classes: int = 1,
    tta_probabilities: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """A finished bag of hand-written OOF files: ``bag.yaml``, ``manifest.json``, ``fold<k>/{done.json, folds.csv,
    oof/<stem>.npz}``; probabilities ``(C, H, W)`` stored at the original size (no resize); with
    ``tta_probabilities``, ``oof_tta/<stem>.npz`` too, stored under the TTA "d4"."""
    n_folds = max(folds.values()) + 1
    data = {"dataset": str(dataset or folder / "data"), "mask_mode": mask_mode, "n_folds": n_folds}
    data.update(model_name="unet", num_classes=num_classes, val_size=None)
    config = {"model": {"model": "unet", "num_classes": num_classes}, "data": data}
    folder.mkdir(parents=True)
    (folder / "bag.yaml").write_text(yaml.safe_dump(config))
    entries = [{"fold": fold, **({"oof_tta": {"tta": "d4"}} if tta_probabilities else {})} for fold in range(n_folds)]
    manifest = {"n_folds": n_folds, "threshold": 0.5, "missing_folds": [], "folds": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for fold, entry in enumerate(entries):
        directory = folder / f"fold{fold}"
        (directory / "oof").mkdir(parents=True)
        (directory / "oof_tta").mkdir()
        (directory / "done.json").write_text(json.dumps(entry))
        (directory / "folds.csv").write_text("stem,fold\n" + "".join(f"{s},{k}\n" for s, k in sorted(folds.items())))
    for folder_name, arrays in (("oof", probabilities), ("oof_tta", tta_probabilities or {})):
        for stem, array in arrays.items():
            path = folder / f"fold{folds[stem]}" / folder_name / f"{stem}.npz"
            np.savez(path, probabilities=array.astype(np.float16), original_size=np.array(array.shape[-2:]))
    return folder


def write_masks(folder: Path, masks: Mapping[str, np.ndarray]) -> Path:
    """A data set folder of black images and 0/255 masks."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for stem, mask in masks.items():
        cv2.imwrite(str(folder / "images" / f"{stem}.png"), np.zeros((*mask.shape, 3), np.uint8))
        cv2.imwrite(str(folder / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)
    return folder


def _random_bags(tmp_path: Path, n_bags: int = 3, n_images: int = 8):
    """Bags of noisy probabilities of random masks, each bag noisier in another region."""
    rng = np.random.default_rng(0)
    stems = [f"image{index}" for index in range(n_images)]
    masks = {stem: rng.random((SIZE, SIZE)) < 0.4 for stem in stems}
    folds = {stem: index % 2 for index, stem in enumerate(stems)}
    bags = []
    for bag in range(n_bags):
        noise = 0.25 + 0.2 * bag
        probabilities = {
            stem: np.clip(mask + rng.normal(0, noise, mask.shape), 0, 1)[None].astype(np.float16)
            for stem, mask in masks.items()
        }
        bags.append(load_bag(write_bag(tmp_path / f"bag{bag}", probabilities, folds)))
    return bags, masks


def _brute_force_dice(bags, masks, members, stems) -> float:
    """Micro Dice of the weighted mean of the stored float16 probabilities, thresholded at 0.5, by plain NumPy."""
    tp = fp = fn = 0
    weights = np.asarray(members, np.float64) / sum(members)
    for stem in stems:
        mean = sum(w * bag.probabilities[stem][0].astype(np.float32) for w, bag in zip(weights, bags, strict=True))
        predicted, truth = mean > 0.5, masks[stem]
        tp += (predicted & truth).sum()
        fp += (predicted & ~truth).sum()
        fn += (~predicted & truth).sum()
    return 2 * tp / (2 * tp + fp + fn)


def test_greedy_selection_matches_a_brute_force_rescore(tmp_path):
    bags, masks = _random_bags(tmp_path)
    selection = select(bags, masks, max_steps=5, samples=200)
    stems = sorted(masks)
    for row, bag in zip(selection["bags"], bags, strict=True):
        assert row["score"] == pytest.approx(_brute_force_dice(bags, masks, [b is bag for b in bags], stems), abs=1e-6)
    history = selection["ensemble"]["history"]
    counts = [0, 0, 0]
    for step in history:
        alternatives = [
            _brute_force_dice(bags, masks, [c + (i == j) for i, c in enumerate(counts)], stems) for j in range(3)
        ]
        assert step["candidates"] == pytest.approx(alternatives, abs=1e-6)
        assert step["added"] == int(np.argmax(alternatives))
        counts[step["added"]] += 1
    best = max(range(len(history)), key=lambda index: (history[index]["score"], -index))
    assert list(selection["ensemble"]["members"].values()) == history[best]["members"]
    assert selection["ensemble"]["score"]["score"] == pytest.approx(history[best]["score"])

    # nested: each fold's ensemble is chosen on the other fold's images alone, and scored on its own
    for entry in selection["ensemble"]["nested"]["per_fold"]:
        inside = [stem for index, stem in enumerate(stems) if index % 2 != entry["fold"]]
        chosen, _ = greedy_ensemble(
            lambda members, inside=inside: _brute_force_dice(bags, masks, members, inside), 3, 5
        )
        assert entry["members"] == list(chosen)
        held_out = [stem for index, stem in enumerate(stems) if index % 2 == entry["fold"]]
        assert entry["score"] == pytest.approx(_brute_force_dice(bags, masks, chosen, held_out), abs=1e-6)


def test_greedy_adds_a_bag_again_and_keeps_the_best_prefix():
    scores = {(1, 0): 0.5, (0, 1): 0.6, (1, 1): 0.7, (0, 2): 0.6, (2, 1): 0.65, (1, 2): 0.8, (2, 2): 0.7, (1, 3): 0.79}
    counts, history = greedy_ensemble(lambda members: scores.get(members, 0.0), 2, 4)
    assert [step["added"] for step in history] == [1, 0, 1, 1] and counts == (1, 2)


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(1)
    before = rng.integers(50, 100, size=(40, 1, 3))
    after = before.copy()
    after[:, 0, 1] = np.maximum(before[:, 0, 1] - 10, 0)  # fewer false positives on every image
    gain, low, high = paired_bootstrap(before, after, "binary", samples=500)
    assert gain == pytest.approx(objective(after.sum(0), "binary") - objective(before.sum(0), "binary"))
    assert 0 < low < gain < high
    gain, low, high = paired_bootstrap(before, before, "binary", samples=100)
    assert gain == low == high == 0


def _square_masks(n_images: int):
    """Masks of a 10x10 and a 5x5 square on a 30x30 image, and probabilities that find both, with a 1-px hole in
    the big one and two 1-px false-positive specks."""
    masks, probabilities = {}, {}
    for index in range(n_images):
        mask = np.zeros((30, 30), bool)
        mask[3:13, 3:13] = True
        mask[20:25, 18 + index % 5 : 23 + index % 5] = True
        predicted = mask.astype(np.float32) * 0.9 + 0.05
        predicted[7, 7] = 0.0
        predicted[27, 2] = predicted[2, 27] = 0.95
        masks[f"image{index:02d}"] = mask
        probabilities[f"image{index:02d}"] = predicted[None].astype(np.float16)
    return masks, probabilities


def test_post_processing_kept_only_where_it_helps(tmp_path):
    masks, probabilities = _square_masks(20)
    folds = {stem: index % 2 for index, stem in enumerate(sorted(masks))}
    bag = load_bag(write_bag(tmp_path / "bag", probabilities, folds))
    selection = select([bag], masks, max_steps=2, samples=300)
    assert selection["trials"][0]["step"] == "tta" and selection["trials"][0]["tried"] is False
    threshold = next(trial for trial in selection["trials"] if trial["step"] == "threshold")
    assert threshold["value"] == 0.5 and not threshold["kept"]  # every threshold of the grid ties
    remove = next(trial for trial in selection["trials"] if trial["step"] == "remove_small")
    assert remove["kept"] and remove["interval"][0] > 0 and remove["gain"] > 0
    assert remove["value"]["min_fraction"] > 1 / 900  # the specks (1 px of 900) go, the squares stay
    largest = next(trial for trial in selection["trials"] if trial["step"] == "keep_largest")
    assert not largest["kept"] and largest["gain"] < 0 and largest["hurt"]  # it would drop the small squares
    holes = next(trial for trial in selection["trials"] if trial["step"] == "fill_holes")
    assert holes["kept"] and holes["gain"] > 0 and {entry["image"] for entry in holes["helped"]} <= set(masks)
    assert [step["name"] for step in selection["final"]["postprocessing"]] == ["remove_small", "fill_holes"]
    assert selection["final"]["dice"] == pytest.approx(1.0)
    assert [trial["step"] for trial in selection["trials"]] == [
        "tta", "threshold", "remove_small", "keep_largest", "fill_holes"
    ]  # fmt: skip


def _noisy(masks: Mapping[str, np.ndarray], noise: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        stem: np.clip(mask + rng.normal(0, noise, mask.shape), 0, 1)[None].astype(np.float16)
        for stem, mask in masks.items()
    }


@pytest.mark.parametrize(("tta_noise", "kept"), [(0.1, True), (0.8, False)])
def test_tta_is_tried_where_every_bag_stored_it_and_kept_only_where_it_helps(tmp_path, tta_noise, kept):
    """Bags whose OOF predictions under TTA are cleaner (or noisier) than the plain ones: the TTA is kept (or not),
    scored on the stored predictions as a brute-force re-score finds."""
    rng = np.random.default_rng(1)
    stems = [f"image{index:02d}" for index in range(16)]
    masks = {stem: rng.random((SIZE, SIZE)) < 0.4 for stem in stems}
    folds = {stem: index % 2 for index, stem in enumerate(stems)}
    bags = []
    for b in range(2):
        plain, under_tta = _noisy(masks, 0.45, b), _noisy(masks, tta_noise, 10 + b)
        bags.append(load_bag(write_bag(tmp_path / f"bag{b}", plain, folds, tta_probabilities=under_tta)))
    assert all(bag.tta == "d4" and set(bag.tta_probabilities) == set(stems) for bag in bags)
    selection = select(bags, masks, max_steps=2, samples=300)
    tta = selection["trials"][0]
    assert tta["step"] == "tta" and tta["value"] == "d4" and tta["kept"] is kept and (tta["gain"] > 0) is kept
    assert selection["final"]["tta"] == ("d4" if kept else "none")
    # the trial scored the chosen ensemble on the plain, then on the TTA predictions (threshold 0.5, no step yet)
    members = list(selection["ensemble"]["members"].values())
    under_tta = [replace(bag, probabilities=bag.tta_probabilities) for bag in bags]
    assert tta["score_before"] == pytest.approx(_brute_force_dice(bags, masks, members, stems), abs=1e-6)
    assert tta["score"] == pytest.approx(_brute_force_dice(under_tta, masks, members, stems), abs=1e-6)


def test_tta_is_not_tried_where_a_bag_did_not_store_it(tmp_path):
    masks, probabilities = _square_masks(6)
    folds = {stem: index % 2 for index, stem in enumerate(sorted(masks))}
    with_tta = load_bag(write_bag(tmp_path / "a", probabilities, folds, tta_probabilities=probabilities))
    without = load_bag(write_bag(tmp_path / "b", probabilities, folds))
    assert (with_tta.tta, without.tta) == ("d4", None)
    tta = select([with_tta, without], masks, max_steps=1, samples=50)["trials"][0]
    assert tta["step"] == "tta" and tta["tried"] is False and "--oof_tta" in tta["reason"]


def test_bags_must_share_folds_task_and_classes(tmp_path):
    masks, probabilities = _square_masks(4)
    folds = {stem: index % 2 for index, stem in enumerate(sorted(masks))}
    first = load_bag(write_bag(tmp_path / "a", probabilities, folds))
    swapped = {**folds, "image01": 0, "image02": 1}
    other = load_bag(write_bag(tmp_path / "b", probabilities, swapped))
    with pytest.raises(BadValueError, match="image image01 is in fold 0 of one and 1 of the other"):
        check_same_task([first, other])
    classes = {stem: np.stack([1 - array[0], array[0]]) for stem, array in probabilities.items()}
    two = load_bag(write_bag(tmp_path / "c", classes, folds, mask_mode="classes", num_classes=2))
    with pytest.raises(BadValueError, match="classes bag of 2 class"):
        check_same_task([first, two])


def test_unfinished_bag_names_the_missing_fold(tmp_path):
    masks, probabilities = _square_masks(4)
    folder = write_bag(tmp_path / "a", probabilities, {stem: index % 2 for index, stem in enumerate(sorted(masks))})
    (folder / "fold1" / "done.json").unlink()
    with pytest.raises(MissingPathError, match="fold 1 is unfinished"):
        load_bag(folder)
    with pytest.raises(MissingPathError, match=r"no bag\.yaml"):
        load_bag(tmp_path)


def test_masks_are_read_at_their_original_size(tmp_path):
    masks, probabilities = _square_masks(4)
    data = write_masks(tmp_path / "data", masks)
    folds = {stem: index % 2 for index, stem in enumerate(sorted(masks))}
    bag = load_bag(write_bag(tmp_path / "bag", probabilities, folds, dataset=data))
    read = load_masks(bag)
    assert sorted(read) == sorted(masks) and all(np.array_equal(read[stem], masks[stem]) for stem in masks)


@pytest.mark.parametrize("mode", ["classes", "multilabel"])
def test_every_mask_mode_is_selected(tmp_path, mode):
    """Class masks (background and squares, argmax) and multi-label masks (the squares in two channels)."""
    masks, probabilities = _square_masks(12)
    if mode == "classes":
        probabilities = {stem: np.concatenate([1 - p, p]) for stem, p in probabilities.items()}
        masks = {stem: mask.astype(np.int64) for stem, mask in masks.items()}
    else:
        probabilities = {stem: np.concatenate([p, p]) for stem, p in probabilities.items()}
        masks = {stem: np.stack([mask, mask]) for stem, mask in masks.items()}
    folds = {stem: index % 2 for index, stem in enumerate(sorted(masks))}
    bag = load_bag(write_bag(tmp_path / "bag", probabilities, folds, mask_mode=mode, num_classes=2))
    selection = select([bag], masks, max_steps=1, samples=200)
    assert selection["objective"] == "mean IoU" and set(selection["bags"][0]["iou_per_class"]) == {"class0", "class1"}
    steps = [trial["step"] for trial in selection["trials"]]
    assert steps == ["tta", "threshold", "remove_small", "keep_largest", "keep_largest", "fill_holes"]
    assert selection["trials"][4]["value"] == {"name": "keep_largest", "scope": "per_class"}
    assert selection["final"]["threshold"] == (None if mode == "classes" else [0.5, 0.5])
    assert [step["name"] for step in selection["final"]["postprocessing"]] == ["remove_small", "fill_holes"]
    assert selection["final"]["score"] == pytest.approx(1.0)

"""The data set fingerprint: known answers on small synthetic folders, the mask kinds, the errors a user meets
through ``ternaus-zoo plan``, the cache, and the four shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from torchvision.models import ResNet34_Weights

from ternaus_zoo.cli import main
from ternaus_zoo.errors import BadValueError
from ternaus_zoo.planning import fingerprint as fingerprint_module
from ternaus_zoo.planning.fingerprint import Fingerprint, fingerprint
from ternaus_zoo.planning.structure import looks_like_sequence, measure_plane
from ternaus_zoo.weights import torchvision_cache_file
from tests.data.test_coco import write_coco


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own fingerprint cache."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TERNAUS_ZOO_CACHE", str(folder))
    return folder


def write_set(root: Path, masks: dict[str, np.ndarray], extension: str = ".png", images: dict | None = None) -> Path:
    """``root/images/<stem>.png`` (a grey ramp, or ``images[stem]``) beside ``root/masks/<stem><extension>``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, mask in masks.items():
        height, width = mask.shape[:2]
        image = (images or {}).get(stem)
        if image is None:
            image = np.repeat(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], height, 0).repeat(3, 2)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{stem}{extension}"), mask)
    return root


def stripes(height: int, width: int = 64, stripe: int = 5, period: int = 16, value: int = 255) -> np.ndarray:
    """Vertical stripes ``stripe`` px wide every ``period`` px, full height."""
    mask = np.zeros((height, width), np.uint8)
    for start in range(0, width, period):
        mask[:, start : start + stripe] = value
    return mask


def disk(size: int = 64, radius: int = 14, value: int = 255) -> np.ndarray:
    return cv2.circle(np.zeros((size, size), np.uint8), (size // 2, size // 2), radius, value, -1)


def test_stripes_give_their_width_sizes_statistics_and_components(tmp_path):
    # channel 0 is half black, half white (mean 0.5, std 0.5), channel 1 a constant 51 (mean 0.2, std 0)
    images, masks = {}, {}
    for stem, height in (("a", 48), ("b", 64), ("c", 80)):
        image = np.zeros((height, 64, 3), np.uint8)
        image[:, 32:, 2] = 255  # OpenCV writes BGR: the file's red channel
        image[:, :, 1] = 51
        images[stem], masks[stem] = image, stripes(height)
    found = fingerprint(write_set(tmp_path / "stripes", masks, images=images), progress=False)
    assert found.mask_mode == "binary" and found.mask_threshold == 127 and found.num_classes == 1
    assert (found.n_images, found.n_sampled) == (3, 3)
    assert (found.size_median, found.size_min, found.size_max) == ([64, 64], [48, 64], [80, 64])
    assert (found.channels, found.bit_depth) == (3, 8)
    assert found.mean == pytest.approx([0.5, 0.2, 0.0], abs=1e-4)
    assert found.std == pytest.approx([0.5, 0.0, 0.0], abs=1e-4)
    assert found.widths == {"foreground": 5.0, "background": 11.0}
    assert found.structure_width == 5.0
    assert found.foreground_median == pytest.approx(20 / 64)  # 4 stripes of 5 px in 64
    assert found.components_per_image == 4 and found.component_median_area == 5 * 64
    assert found.empty_share == 0 and not found.sequence


def test_json_round_trip_keeps_the_planners_timings(tmp_path):
    found = fingerprint(write_set(tmp_path / "set", {"a": disk(), "b": disk(radius=9)}), progress=False)
    found.timings = {"trials": {"cpu|linknet34": {"step_s": 0.5}}, "planning_s": 12.5}
    assert Fingerprint.from_json(found.to_json()) == found
    found.save(tmp_path / "fingerprint.json")
    assert Fingerprint.load(tmp_path / "fingerprint.json") == found


def test_thin_components_are_measured_at_native_resolution_beside_a_thick_one():
    plane = np.zeros((300, 300), np.uint8)
    for column in (10, 30, 50):
        plane[:, column : column + 3] = 1
    cv2.circle(plane, (200, 150), 60, 1, -1)  # 121 px across: skeletonized shrunk
    widths, areas = measure_plane(plane)
    assert sorted(areas.tolist()) == [900, 900, 900, int(plane[:, 100:].sum())]
    assert (widths == 3).sum() >= 3 * 290  # the three stripes, to the image border
    assert np.abs(widths.max() - 121) <= 121 * 0.1


def test_jpeg_masks_are_binary_at_127(tmp_path):
    masks = {str(index): disk(radius=10 + 2 * index) for index in range(4)}
    found = fingerprint(write_set(tmp_path / "jpeg", masks, ".jpg"), progress=False)
    assert (found.mask_mode, found.mask_threshold) == ("binary", 127)
    assert "JPEG-like" in found.mask_kind
    expected = np.mean([(mask > 127).mean() for mask in masks.values()])
    assert found.class_frequencies[0] == pytest.approx(expected, abs=0.01)


def test_zero_one_masks_are_binary_at_0(tmp_path):
    found = fingerprint(write_set(tmp_path / "ones", {"a": disk(value=1), "b": disk(value=1)}), progress=False)
    assert (found.mask_mode, found.mask_threshold) == ("binary", 0)
    assert found.class_frequencies[0] == pytest.approx((disk() > 0).mean(), abs=1e-6)


def class_masks(void: int | None = 255) -> dict[str, np.ndarray]:
    """Class indices 0..3 in horizontal bands, the last rows ``void``."""
    masks = {}
    for stem in ("a", "b"):
        mask = np.repeat(np.arange(4, dtype=np.uint8), 16)[:, None].repeat(32, 1)
        if void is not None:
            mask[-4:] = void
        masks[stem] = mask
    return masks


def test_class_masks_with_a_void_value(tmp_path):
    found = fingerprint(write_set(tmp_path / "classes", class_masks()), ignore_index=255, progress=False)
    assert (found.mask_mode, found.num_classes, found.ignore_index) == ("classes", 4, 255)
    assert found.class_frequencies == pytest.approx([16 / 60, 16 / 60, 16 / 60, 12 / 60], abs=1e-6)
    assert found.ignored_fraction == pytest.approx(4 / 64)
    assert set(found.widths) == {"0", "1", "2", "3"}


def test_small_class_indices_are_classes(tmp_path):
    found = fingerprint(write_set(tmp_path / "classes", class_masks(void=None)), progress=False)
    assert (found.mask_mode, found.num_classes, found.ignore_index) == ("classes", 4, None)


def test_mask_mode_overrides_the_inference(tmp_path):
    data = write_set(tmp_path / "classes", class_masks(void=None))
    binary = fingerprint(data, mask_mode="binary", progress=False)
    assert (binary.mask_mode, binary.mask_threshold) == ("binary", 0)  # small values: any non-zero is foreground
    assert binary.class_frequencies == pytest.approx([0.75])


def test_multilabel_class_folders(tmp_path):
    root = write_set(tmp_path / "folders", {"a": disk(), "b": disk()})
    for name, mask in (("road", stripes(64)), ("car", disk())):
        (root / "masks" / name).mkdir()
        for stem in ("a", "b"):
            cv2.imwrite(str(root / "masks" / name / f"{stem}.png"), mask)
    for path in (root / "masks").glob("*.png"):
        path.unlink()
    found = fingerprint(root, progress=False)
    assert (found.mask_mode, found.num_classes, found.class_names) == ("multilabel", 2, ["car", "road"])
    assert found.class_frequencies == pytest.approx([(disk() > 0).mean(), 20 / 64], abs=1e-6)
    assert found.widths["road"] == 5.0


def test_multichannel_masks_are_multilabel(tmp_path):
    mask = np.stack([stripes(64), disk(), np.zeros((64, 64), np.uint8)], axis=2)  # BGR on disk
    found = fingerprint(write_set(tmp_path / "channels", {"a": mask, "b": mask}), progress=False)
    assert (found.mask_mode, found.num_classes) == ("multilabel", 3)
    assert found.class_frequencies == pytest.approx([0.0, (disk() > 0).mean(), 20 / 64], abs=1e-6)  # RGB order


def test_coco_categories_are_classes(tmp_path):
    path, expected = write_coco(tmp_path / "coco")
    found = fingerprint(tmp_path / "coco", masks=path.name, progress=False)
    assert (found.mask_mode, found.num_classes, found.masks) == ("classes", 3, "annotations.json")
    assert found.class_names == ["background", "car", "road"]
    pixels = np.bincount(np.concatenate([mask.ravel() for mask in expected.values()]), minlength=3)
    assert found.class_frequencies == pytest.approx(pixels / pixels.sum(), abs=1e-6)
    assert "COCO" in found.mask_kind


def test_sixteen_bit_grey_images(tmp_path):
    image = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    data = write_set(tmp_path / "deep", {"a": disk(), "b": disk()}, images={"a": image, "b": image})
    found = fingerprint(data, progress=False)
    assert (found.channels, found.bit_depth) == (1, 16)
    assert found.mean == pytest.approx([0.5], abs=1e-3)
    assert "2 of 2" in found.sample


def plan_error(arguments: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(["plan", *arguments])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_plan_refuses_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = plan_error([str(tmp_path / "empty"), "--out", str(tmp_path / "plan.yaml")], capsys)
    assert "empty" in line and str(tmp_path / "empty") in line


def test_plan_refuses_masks_it_cannot_classify(tmp_path, capsys):
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    data = write_set(tmp_path / "noise", {"a": noise, "b": noise[::-1].copy()})
    line = plan_error([str(data), "--out", str(tmp_path / "plan.yaml")], capsys)
    assert "--mask_mode" in line and "distinct" in line and str(data / "masks") in line


def test_plan_names_the_void_value_to_pass(tmp_path, capsys):
    data = write_set(tmp_path / "voc", class_masks())
    line = plan_error([str(data), "--out", str(tmp_path / "plan.yaml")], capsys)
    assert "--ignore_index" in line and "255" in line


def test_plan_sends_a_classification_set_to_classify(tmp_path, capsys):
    (tmp_path / "labels" / "images").mkdir(parents=True)
    (tmp_path / "labels" / "labels.csv").write_text("Filenames,sea\n1.jpg,1\n")
    line = plan_error([str(tmp_path / "labels"), "--out", str(tmp_path / "plan.yaml")], capsys)
    assert "classification" in line and "ternaus-zoo classify fit" in line


def test_cache_hit_reads_no_file_and_a_changed_file_measures_again(tmp_path, monkeypatch):
    data = write_set(tmp_path / "set", {"a": disk(), "b": disk()})
    first = fingerprint(data, progress=False)

    def unread(*args, **kwargs):
        raise AssertionError("the cached fingerprint read a file")

    with monkeypatch.context() as patch:
        for name in ("SegmentationDataset", "read_class_mask", "read_image", "list_images"):
            patch.setattr(fingerprint_module, name, unread)
        assert fingerprint(data, progress=False) == first
    cv2.imwrite(str(data / "masks" / "b.png"), disk(radius=20))
    changed = fingerprint(data, progress=False)
    assert changed.key != first.key
    assert changed.class_frequencies[0] > first.class_frequencies[0]
    assert fingerprint(data, ignore_index=3, progress=False).key != changed.key  # options are in the key


def test_imagenet_cache_is_looked_at_on_every_call(tmp_path):
    data = write_set(tmp_path / "set", {"a": disk(), "b": disk()})
    assert not any(fingerprint(data, progress=False).imagenet_cached.values())
    cached = torchvision_cache_file(ResNet34_Weights.IMAGENET1K_V1)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    found = fingerprint(data, progress=False)  # from the fingerprint cache
    assert found.imagenet_cached["resnet34"] and not found.imagenet_cached["vgg11"]


@pytest.mark.parametrize(
    ("stems", "sequence"),
    [
        ([f"0016E5_{number:05d}" for number in range(7959, 8159, 2)], True),
        ([f"Seq05VD_f{number:05d}" for number in range(0, 300, 30)], True),
        ([f"frame_{number:04d}" for number in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11)], True),
        (["cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4", "cju0qx73cjw570799j4n5cjze"], False),
        ([str(number) for number in range(30)], False),  # bare numbers count any data set's files
        ([f"img_{number}" for number in (3, 17, 40, 41, 90, 200)], False),  # a prefix, numbers not evenly spaced
    ],
)
def test_sequences(stems, sequence):
    assert looks_like_sequence(stems) is sequence


@pytest.mark.data
def test_shared_data_sets(dataset_dir):
    kvasir = fingerprint(dataset_dir("kvasir-seg"), max_images=40, cache=False, progress=False)
    assert (kvasir.mask_mode, kvasir.mask_threshold, kvasir.n_images) == ("binary", 127, 1000)
    assert "JPEG-like" in kvasir.mask_kind
    assert 0.1 < kvasir.class_frequencies[0] < 0.2  # polyps: about 15 % of the pixels
    assert kvasir.structure_width > 50  # large blobs: the images may shrink
    membrane = fingerprint(dataset_dir("membrane"), cache=False, progress=False)
    assert (membrane.mask_mode, membrane.channels) == ("binary", 1)
    assert membrane.structure_width == membrane.widths["background"] < 8  # the thin membranes
    camvid = fingerprint(dataset_dir("camvid-val"), ignore_index=11, max_images=30, cache=False, progress=False)
    assert (camvid.mask_mode, camvid.num_classes, camvid.ignore_index) == ("classes", 11, 11)
    assert camvid.sequence and len(camvid.class_frequencies) == 11 and camvid.ignored_fraction > 0
    with pytest.raises(BadValueError, match="classify fit"):
        fingerprint(dataset_dir("miml"), cache=False, progress=False)


def test_key_ignores_nothing_the_files_say(tmp_path):
    data = write_set(tmp_path / "set", {"a": disk(), "b": disk()})
    key = fingerprint_module.cache_key(data, "masks", {})
    stat = (data / "images" / "a.png").stat()
    os.utime(data / "images" / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint_module.cache_key(data, "masks", {}) != key

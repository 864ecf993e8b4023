"""Deterministic folds, groups kept whole, the benchmark hold-out rule, CSV round trip."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ternaus_zoo.data import contiguous_groups, holdout_split, load_folds, make_folds, save_folds

STEMS = [f"img{index:03d}" for index in range(53)]


def test_same_seed_same_folds_and_balanced():
    folds = make_folds(STEMS, n_folds=5, seed=3)
    assert folds == make_folds(STEMS, n_folds=5, seed=3)
    assert set(folds) == set(STEMS) and set(folds.values()) == set(range(5))
    sizes = Counter(folds.values()).values()
    assert max(sizes) - min(sizes) <= 1


def test_different_seed_different_folds():
    assert make_folds(STEMS, seed=0) != make_folds(STEMS, seed=1)


def test_independent_of_input_order():
    shuffled = STEMS[:]
    random.Random(7).shuffle(shuffled)
    assert make_folds(shuffled, seed=2) == make_folds(STEMS, seed=2)
    groups = {stem: int(stem[3:]) // 4 for stem in STEMS}
    assert make_folds(shuffled, 4, 2, groups) == make_folds(STEMS, 4, 2, groups)


@pytest.mark.parametrize("seed", range(5))
def test_groups_are_never_split(seed):
    video = {stem: f"video{int(stem[3:]) % 7}" for stem in STEMS}
    folds = make_folds(STEMS, n_folds=3, seed=seed, groups=video)
    for group in set(video.values()):
        assert len({folds[stem] for stem in STEMS if video[stem] == group}) == 1
    callable_folds = make_folds(STEMS, n_folds=3, seed=seed, groups=lambda stem: f"video{int(stem[3:]) % 7}")
    assert callable_folds == folds


def test_group_errors():
    with pytest.raises(KeyError, match="img001"):
        make_folds(STEMS, groups={"img000": 0})
    with pytest.raises(ValueError, match="exceeds the number of groups"):
        make_folds(STEMS, n_folds=5, groups=lambda stem: int(stem[3:]) % 3)
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        make_folds(STEMS, n_folds=1)
    with pytest.raises(ValueError, match="repeated: img000"):
        make_folds([*STEMS, "img000"])


def test_holdout_rule():
    holdout, rest = holdout_split(reversed(STEMS), every=5)
    assert holdout == sorted(STEMS)[::5] and len(holdout) == 11
    assert rest == [stem for stem in sorted(STEMS) if stem not in holdout]
    with pytest.raises(ValueError, match="every"):
        holdout_split(STEMS, every=1)


def test_contiguous_groups_make_contiguous_folds():
    blocks = contiguous_groups(reversed(STEMS), 5)
    assert [blocks[stem] for stem in sorted(STEMS)] == sorted(blocks.values())
    assert set(Counter(blocks.values()).values()) <= {10, 11}
    folds = make_folds(STEMS, n_folds=5, seed=0, groups=blocks)
    for fold in range(5):
        members = [index for index, stem in enumerate(sorted(STEMS)) if folds[stem] == fold]
        assert members == list(range(members[0], members[-1] + 1))
    with pytest.raises(ValueError, match="n_blocks"):
        contiguous_groups(STEMS[:3], 4)


def test_csv_round_trip(tmp_path):
    folds = make_folds(STEMS, seed=4)
    folds["held"] = -1
    path = save_folds(folds, tmp_path / "run" / "folds.csv")
    assert path.read_text().splitlines()[0] == "stem,fold"
    assert load_folds(path) == folds


def test_load_folds_names_bad_lines(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("stem,fold\na,0\nb,x\n")
    with pytest.raises(ValueError, match=r"folds\.csv, line 3"):
        load_folds(path)
    path.write_text("name,split\na,0\n")
    with pytest.raises(ValueError, match="header"):
        load_folds(path)
    path.write_text("stem,fold\na,0\na,1\n")
    with pytest.raises(ValueError, match="appears twice"):
        load_folds(path)

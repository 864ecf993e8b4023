"""The planner's rules on hand-made fingerprints and timings: each rule's answer is worked out in the test."""

from __future__ import annotations

import math

import pytest
import yaml

from ternaus_zoo import UserError
from ternaus_zoo.planning.rules import (
    MIN_PASSES,
    Choice,
    choose_model,
    class_weights,
    parse_budget,
    render,
    split_budget,
)
from ternaus_zoo.planning.timing import Timing


@pytest.mark.parametrize(
    ("text", "seconds"), [("60m", 3600), ("1h30m", 5400), ("90s", 90), ("2h", 7200), ("10", 600), (1.5, 90)]
)
def test_budgets_in_the_forms_users_write(text: str | float, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "-5m", "0"])
def test_a_budget_that_is_no_duration_is_one_line(text: str) -> None:
    with pytest.raises(UserError, match="--budget"):
        parse_budget(text)


TIMINGS = {"albunet34": Timing(step_s=2.0, predict_s=0.1), "linknet34": Timing(step_s=0.5, predict_s=0.05)}


def budgets(total_s: float) -> dict:
    """Each candidate's split of ``total_s`` (or the error of one that does not fit a pass)."""
    found = {}
    for name, timing in TIMINGS.items():
        try:
            found[name] = split_budget(total_s, 0, timing, val_images=4, score_images=4, steps_per_pass=100)
        except UserError as error:
            found[name] = error
    return found


def test_a_much_smaller_budget_changes_the_model() -> None:
    # albunet34 sees the data train_s / (100 steps * 2.0 s) times: MIN_PASSES of them need about 200 * MIN_PASSES s
    roomy, tight = budgets(200 * MIN_PASSES * 1.5), budgets(200 * MIN_PASSES * 0.5)
    assert choose_model(TIMINGS, roomy, 100)[0].model == "albunet34"
    chosen, why = choose_model(TIMINGS, tight, 100)
    assert chosen.model == "linknet34"
    assert "albunet34 2.00 s a step" in why and "linknet34 0.50 s a step" in why


def test_no_candidate_fitting_takes_the_one_with_most_passes() -> None:
    chosen, why = choose_model(TIMINGS, budgets(200), 100)  # albunet34 fits no pass, linknet34 a few
    assert chosen.model == "linknet34" and "no candidate fits" in why and "albunet34 2.00 s a step (not one" in why


def test_no_candidate_fitting_one_pass_names_the_smallest_budget() -> None:
    with pytest.raises(UserError, match="give at least --budget") as error:
        choose_model(TIMINGS, budgets(30), 100)
    assert str(error.value) == str(budgets(30)["linknet34"])


def test_class_weights_only_where_frequencies_span_orders_of_magnitude() -> None:
    assert class_weights([0.5, 0.3, 0.2]) is None
    weights = class_weights([0.9, 0.0999, 0.0001])
    assert weights is not None
    # 1 / sqrt(f), scaled so that the pixel-weighted mean is 1
    raw = [1 / math.sqrt(0.9), 1 / math.sqrt(0.0999), 1 / math.sqrt(0.0001)]
    scale = sum(f * w for f, w in zip([0.9, 0.0999, 0.0001], raw, strict=True))
    assert weights == pytest.approx([value / scale for value in raw], abs=1e-3)


def test_the_budget_is_split_and_a_too_small_one_names_the_minimum() -> None:
    timing = Timing(step_s=1.0, predict_s=0.1)
    budget = split_budget(600, 30, timing, val_images=10, score_images=10, steps_per_pass=50)
    spent = budget.planning_s + budget.train_s + budget.validation_s + budget.predict_s
    assert spent < 600 and budget.train_s > 50
    assert budget.tta == "d4"  # 8 passes of 10 images at 0.2 s: 16 s, under 5 % of 600 s
    with pytest.raises(UserError, match=r"give at least --budget (\d+)m") as error:
        split_budget(120, 30, timing, val_images=10, score_images=10, steps_per_pass=500)
    minimum = int(str(error.value).rsplit("--budget ", 1)[1].rstrip("m"))
    split_budget(minimum * 60, 30, timing, val_images=10, score_images=10, steps_per_pass=500)  # fits


def test_the_plan_is_yaml_with_each_value_under_its_reason() -> None:
    text = render(
        [
            Choice("seed_everything", 0, "the seed"),
            Choice("model.model", "linknet34", "fast"),
            Choice("model.loss", {"bce": 0.5, "jaccard": 0.5}, "binary masks"),
            Choice("data.val_size", None, "native resolution"),
        ],
        ["a header"],
    )
    assert yaml.safe_load(text) == {
        "seed_everything": 0,
        "model": {"model": "linknet34", "loss": {"bce": 0.5, "jaccard": 0.5}},
        "data": {"val_size": None},
    }
    lines = text.splitlines()
    assert lines[0] == "# a header"
    assert lines[lines.index("  model: linknet34") - 1] == "  # fast"


def test_a_bag_shares_the_budget_between_its_models() -> None:
    timing = Timing(step_s=1.0, predict_s=0.1)
    options = {"val_images": 10, "score_images": 10, "steps_per_pass": 20}
    single = split_budget(3600, 30, timing, **options)
    bag = split_budget(3600, 30, timing, models=3, **{**options, "score_images": 30})
    assert bag.train_s < single.train_s / 3 and bag.train_s > 0.9 * single.train_s / 3
    assert bag.validation_s == pytest.approx(3 * single.validation_s)
    # a hold-out is predicted by every model of the bag
    holdout = split_budget(3600, 30, timing, models=3, holdout=True, **options)
    assert holdout.predict_s - 10 == pytest.approx(3 * (single.predict_s - 10))


def test_validations_cost_at_most_a_share_of_the_training_time() -> None:
    """A validation of 34 images at 0.2 s costs 6.8 s: an hour pays for all 8, while the 3 models of 10 minutes
    (camvid's bag, where 8 took 27 % of the budget) get as many as 5 % of each model's training time pays."""
    timing = Timing(step_s=1.0, predict_s=0.1)
    options = {"val_images": 34, "steps_per_pass": 10}
    assert split_budget(3600, 30, timing, score_images=34, **options).validations == 8
    short = split_budget(600, 14, timing, score_images=101, models=3, **options)
    periodic = short.validations * 6.8
    assert 1 <= short.validations < 8
    assert periodic <= 0.05 * (short.train_s + periodic) < periodic + 6.8  # as many as the share pays, no more
    assert short.validation_s == pytest.approx(3 * (10 + (short.validations + 2) * 6.8))

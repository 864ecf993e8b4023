"""The planner's rules: plain functions from a data set's fingerprint and this machine's timings to a recipe.

Each rule returns :class:`Choice` objects, a config key with its value and the one-line reason written above it
in the plan, so a user reads why the recipe is what it is. The same fingerprint and timings give the same plan.
The order of the decisions: the geometry (working scale, patch, batch) comes from the fingerprint alone, the
candidate models are then timed at that geometry (:mod:`ternaus_zoo.planning.timing`), and the model, the
number of steps, the validation spacing and the TTA come from those timings and the budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ternaus_zoo.errors import BadValueError
from ternaus_zoo.losses import frequency_weights
from ternaus_zoo.planning.fingerprint import Fingerprint
from ternaus_zoo.planning.timing import Device, Timing, Trial

# the structure width (px) that must survive the working scale: thinner, and a 3x3 convolution sees no inside
MIN_STRUCTURE_PX = 3.0
# below this longest side the context of the scene is lost, whatever the structures' width
MIN_WORKING_SIDE = 256
# working sides up to this train on the whole (resized) image; larger ones on patches
WHOLE_IMAGE_SIDE = 320
PATCH_SIDE = {"cpu": 256, "cuda": 384}
# pixels an optimiser step sees on a CPU: the one-hour kvasir recipe's 8 images of 256 x 256
PIXELS_PER_STEP = 8 * 256 * 256
# a larger candidate is chosen only where the budget lets it see every training pixel this many times
MIN_PASSES = 24
# validations of a run watch it (the last model is kept): up to this many, while they cost at most VALIDATION_SHARE of
# its training time (camvid's 10 minutes: 8 of them on 480 px frames took 27 % of the budget)
VALIDATIONS = 8
VALIDATION_SHARE = 0.05
# foreground under this median share of an image's pixels: half the patches are centred on it
RARE_FOREGROUND = 0.05
# classes whose pixel frequencies span more than an order of magnitude and a half are weighted and sampled by class
# (camvid-val's pole covers 1/44 of its commonest class: unweighted, such classes went unpredicted)
RARE_CLASS_RATIO = 30.0
# a held-out fold of about this many images watches a run; the rest trains
VALIDATION_IMAGES = 80
# seconds to set up a run (the trainer, the model, the loaders): once to fit, once to predict
START_S = 10.0
# the share of the budget kept unspent, against the spread of step times
SAFETY = 0.03
# the final prediction runs D4 TTA (8 passes an image) where it costs at most this share of the budget
TTA_SHARE = 0.05


@dataclass(frozen=True)
class Candidate:
    """A zoo model the planner may choose (``name``: its key in the timings), larger ``rank`` first; ``encoder``
    names its ImageNet weights in the fingerprint's cache check (``None``: none exist)."""

    name: str
    model: str
    model_kwargs: Mapping[str, Any]
    rank: int
    encoder: str | None
    description: str


# structures thinner than this at the working scale need a decoder with skip connections at full resolution:
# a stride-4 stem (ResNet34's) blurs them (membrane's 5 px boundaries: LinkNet34 predicted all foreground)
THIN_PX = 8.0
THICK_CANDIDATES = (
    Candidate(
        "albunet34", "albunet34", {}, 2, "resnet34", "U-Net decoder on ResNet34: skip connections at every scale"
    ),
    Candidate("linknet34", "linknet34", {}, 1, "resnet34", "LinkNet on ResNet34: the lightest decoder of the zoo"),
)
THIN_CANDIDATES = (
    Candidate("unet", "unet", {"num_filters": 32}, 2, None, "plain U-Net, 32 filters: skips at full resolution"),
    Candidate("unet16", "unet", {"num_filters": 16}, 1, None, "plain U-Net, 16 filters: a quarter of the arithmetic"),
)


def candidates(fingerprint: Fingerprint, shape: Geometry) -> tuple[Candidate, ...]:
    """The models worth timing: U-Nets with full-resolution skips for structures under :data:`THIN_PX` at the working
    scale, the ResNet34 models otherwise."""
    scale = (shape.val_size or max(fingerprint.size_median)) / max(fingerprint.size_median)
    return THIN_CANDIDATES if fingerprint.structure_width * scale < THIN_PX else THICK_CANDIDATES


@dataclass(frozen=True)
class Choice:
    """A config value (``section.key``) and the reason the plan gives for it."""

    key: str
    value: Any
    why: str


@dataclass
class Geometry:
    """What the data fix before any timing: the evaluation side (``None``: native), the training crop and
    batch, the images a validation and the final scoring see, and the training samples of one pass."""

    val_size: int | None
    eval_side: int
    patch_size: int | None
    crop_side: int
    batch_size: int
    passes_samples: int
    choices: list[Choice] = field(default_factory=list)


def parse_budget(text: str | float) -> float:
    """Seconds of ``"60m"``, ``"1h30m"``, ``"90s"``, ``"2h"`` or a bare number of minutes.

    Raises:
        BadValueError: anything else, or a budget that is not positive.
    """
    if isinstance(text, int | float):
        seconds = float(text) * 60
    else:
        value = str(text).strip().lower()
        seconds, number = 0.0, ""
        units = {"h": 3600.0, "m": 60.0, "s": 1.0}
        try:
            for character in value:
                if character in units:
                    seconds += float(number) * units[character]
                    number = ""
                else:
                    number += character
            if number.strip():
                seconds += float(number) * 60
        except ValueError:
            raise BadValueError(
                f"--budget {text!r}: give minutes (60), or a duration such as 60m, 1h30m, 90s"
            ) from None
    if seconds <= 0:
        raise BadValueError(f"--budget {text!r} must be a positive duration")
    return seconds


def _round_to(value: float, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return max(multiple, math.ceil(value / multiple) * multiple)


def geometry(fingerprint: Fingerprint, device: Device, size_multiple: int = 32) -> Geometry:
    """The working scale, the training crops and the batch (:class:`Geometry`), from the fingerprint alone."""
    native = max(fingerprint.size_median)
    width = fingerprint.structure_width
    # halved while the structures stay MIN_STRUCTURE_PX wide: a width of 5 px keeps the native scale
    factor = 1.0
    while width * factor / 2 >= MIN_STRUCTURE_PX and native * factor > MIN_WORKING_SIDE:
        factor /= 2
    smallest = native * factor
    working = min(native, max(MIN_WORKING_SIDE, smallest))
    choices = []
    if working >= 0.9 * native:
        val_size = None
        eval_side = _round_to(native, size_multiple)
        why = (
            f"native resolution: the median structure width {width:.1f} px would fall under {MIN_STRUCTURE_PX:g} px "
            f"if the {native} px images were halved"
            if smallest >= 0.9 * native
            else f"native resolution: the {native} px images are already near the {MIN_WORKING_SIDE} px floor"
        )
    else:
        val_size = _round_to(working, size_multiple)
        eval_side = val_size
        why = (
            f"images shrunk to a longest side of {val_size} px (native median {native} px): the median structure "
            f"width {width:.1f} px stays {width * val_size / native:.1f} px wide (>= {MIN_STRUCTURE_PX:g}), and no "
            f"side goes under the {MIN_WORKING_SIDE} px floor"
        )
    choices.append(Choice("data.val_size", val_size, why))
    scale = (val_size or native) / native
    working_area = math.prod(side * scale for side in fingerprint.size_median)
    if eval_side <= WHOLE_IMAGE_SIDE:
        patch_size, crop_side = None, eval_side
        choices += [
            Choice(
                "data.image_size",
                eval_side,
                f"the whole image ({eval_side} px at the working scale) fits one crop: random resized crops of it",
            ),
            Choice("data.scale", [0.5, 1.0], "crops of 50-100 % of the image's area, resized to the crop side"),
        ]
        samples = fingerprint.n_images
    else:
        patch_size = min(PATCH_SIDE[device.kind], eval_side)
        crop_side = patch_size
        choices.append(
            Choice(
                "data.patch_size",
                patch_size,
                f"random {patch_size} px patches at the working scale ({eval_side} px images are too large for "
                "whole-image batches)",
            )
        )
        samples = fingerprint.n_images * max(1, round(working_area / patch_size**2))
    batch = max(2, min(16, round(PIXELS_PER_STEP / crop_side**2)))
    choices.append(
        Choice("data.batch_size", batch, f"about {PIXELS_PER_STEP // 1000}k pixels a step at {crop_side} px crops")
    )
    return Geometry(val_size, eval_side, patch_size, crop_side, batch, samples, choices)


def cuda_batch(batch: int, timing: Timing, device: Device, share: float = 0.5, largest: int = 64) -> int:
    """The batch that fills ``share`` of a CUDA device's memory, from the peak memory of a trial at ``batch``."""
    if device.kind != "cuda" or timing.peak_memory_gib <= 0:
        return batch
    return int(max(batch, min(largest, batch * share * device.memory_gib / timing.peak_memory_gib)))


def loss_for(fingerprint: Fingerprint) -> tuple[Any, str]:
    """The loss config of the mask kind and why."""
    if fingerprint.mask_mode == "classes":
        loss: dict[str, Any] = {"ce": 0.5, "lovasz_softmax": 0.5}
        why = "class masks: cross-entropy + Lovasz softmax (the mean-IoU surrogate)"
        weights = class_weights(fingerprint.class_frequencies)
        if weights is not None:
            loss["ce"] = {"weight": 0.5, "class_weights": weights}
            why += f"; cross-entropy weighted by 1/sqrt(pixel frequency): frequencies span over {RARE_CLASS_RATIO:g}x"
        return loss, why
    if fingerprint.mask_mode == "multilabel":
        return {"bce": 0.5, "jaccard": 0.5}, "multi-label masks: BCE + Jaccard, each class channel on its own"
    return {"bce": 0.5, "jaccard": 0.5}, "binary masks: BCE + soft Jaccard (TernausNet)"


def class_weights(frequencies: Sequence[float]) -> list[float] | None:
    """:func:`~ternaus_zoo.losses.frequency_weights` (inverse square root) where the present classes' pixel
    frequencies span more than :data:`RARE_CLASS_RATIO`; ``None`` where they do not."""
    present = [value for value in frequencies if value > 0]
    if len(present) < 2 or max(present) / min(present) <= RARE_CLASS_RATIO:
        return None
    return [round(value, 4) for value in frequency_weights(frequencies)]


def foreground_share(fingerprint: Fingerprint) -> tuple[float, str]:
    """The share of training crops centred on foreground (or on a rare class) and why."""
    if fingerprint.mask_mode == "classes":
        if class_weights(fingerprint.class_frequencies) is not None:
            return 0.5, "half the patches centred on a pixel of a class chosen among those present (rare classes)"
        return 0.0, f"class frequencies within {RARE_CLASS_RATIO:g}x of each other: uniform patches"
    fraction = fingerprint.foreground_median
    if fraction < RARE_FOREGROUND:
        return 0.5, f"foreground is rare (median {fraction:.1%} of an image): half the patches centred on it"
    return 0.0, f"foreground is common (median {fraction:.1%} of an image): uniform crops"


@dataclass(frozen=True)
class Budget:
    """How a budget is spent: planning (done), training (``train_s``: each model's), validations (all models'
    starts, validations and out-of-fold predictions) and the final prediction."""

    total_s: float
    planning_s: float
    train_s: float
    validation_s: float
    predict_s: float
    tta: str | None
    validations: int = VALIDATIONS

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_s": round(self.total_s, 1),
            "planning_s": round(self.planning_s, 1),
            "train_s": round(self.train_s, 1),
            "validation_s": round(self.validation_s, 1),
            "validations": self.validations,
            "predict_s": round(self.predict_s, 1),
            "tta": self.tta,
        }


def split_budget(
    total_s: float,
    planning_s: float,
    timing: Timing,
    *,
    val_images: int,
    score_images: int,
    steps_per_pass: float,
    models: int = 1,
    holdout: bool = False,
) -> Budget:
    """Share the budget between ``models`` trainings (a bag's folds, one after the other), their validations and
    the final prediction: of the hold-out by every model, or of each validation fold by its own model.

    Raises:
        BadValueError: the budget holds less than one pass over the training data, naming the minimum.
    """
    # a prediction reads, resizes back and writes: about twice the forward pass
    per_image = 2 * timing.predict_s
    # the hold-out is predicted by every model; without one, each image by the model that did not train on it
    passes = score_images * (models if holdout else 1)
    one_validation = per_image * val_images
    tta = "d4" if 8 * per_image * passes <= TTA_SHARE * total_s else None
    # each model: its start, the best checkpoint's validation and out-of-fold prediction, then its periodic
    # validations: as many as cost at most VALIDATION_SHARE of the training time left (one at least, at most 8)
    left = (total_s * (1 - SAFETY) - planning_s - START_S - models * (START_S + 2 * one_validation)) / models
    left -= per_image * passes * (8 if tta else 1) / models
    validations = min(VALIDATIONS, max(1, math.floor(VALIDATION_SHARE * left / max(one_validation, 1e-9))))
    per_model = START_S + (validations + 2) * one_validation
    fixed = planning_s + models * per_model + START_S

    def training(tta: bool) -> float:
        return (total_s * (1 - SAFETY) - fixed - per_image * passes * (8 if tta else 1)) / models

    one_pass = steps_per_pass * timing.step_s
    if training(tta is not None) < one_pass:
        # with all the validations a larger budget may pay for, so that the minimum named does fit
        most = planning_s + models * (START_S + (VALIDATIONS + 2) * one_validation) + START_S
        needed = (most + models * one_pass + per_image * passes) / (1 - SAFETY)
        if 8 * per_image * passes <= TTA_SHARE * needed:  # that budget would also pay for TTA
            needed = (most + models * one_pass + 8 * per_image * passes) / (1 - SAFETY)
        raise BadValueError(
            f"a budget of {total_s / 60:.1f} min does not hold one pass over the training data on this machine for "
            f"each of {models} model(s) ({one_pass:.0f} s of training each, after planning, validation and "
            f"prediction): give at least --budget {math.ceil(needed / 60)}m"
        )
    predict_s = START_S + per_image * passes * (8 if tta else 1)
    return Budget(total_s, planning_s, training(tta is not None), models * per_model, predict_s, tta, validations)


def choose_model(
    timings: Mapping[str, Timing], budgets: Mapping[str, Budget | BadValueError], steps_per_pass: float
) -> tuple[Candidate, str]:
    """The highest-ranked candidate that sees the training data :data:`MIN_PASSES` times in its share of the
    budget (its own validations and prediction taken out), else the one that sees it most often; and why.

    Raises:
        BadValueError: no candidate fits one pass (the error of the one that needs the smallest budget).
    """
    fitting = {name: budget for name, budget in budgets.items() if isinstance(budget, Budget)}
    if not fitting:
        raise min(budgets.values(), key=lambda error: int(str(error).rsplit("--budget ", 1)[1].rstrip("m")))
    passes = {name: budget.train_s / (steps_per_pass * timings[name].step_s) for name, budget in fitting.items()}
    timed = [candidate for candidate in (*THICK_CANDIDATES, *THIN_CANDIDATES) if candidate.name in fitting]
    measured = ", ".join(
        f"{name} {timing.step_s:.2f} s a step ({passes[name]:.0f} passes)"
        if name in passes
        else f"{name} {timing.step_s:.2f} s a step (not one pass)"
        for name, timing in timings.items()
    )
    for candidate in sorted(timed, key=lambda item: -item.rank):
        if passes[candidate.name] >= MIN_PASSES:
            return candidate, f"{candidate.description}; it fits {MIN_PASSES}+ passes in the budget ({measured})"
    fastest = max(timed, key=lambda item: passes[item.name])
    return fastest, f"{fastest.description}; no candidate fits {MIN_PASSES} passes, this one the most ({measured})"


def validation_folds(n_images: int, requested: int | None) -> tuple[int, str]:
    """Folds of the split (``requested`` for a bag), else folds whose validation fold holds about
    :data:`VALIDATION_IMAGES` images (3 to 10)."""
    if requested is not None:
        return requested, f"--folds {requested}: a bag of {requested} models, each validated on its own fold"
    folds = max(3, min(10, round(n_images / VALIDATION_IMAGES)))
    return folds, f"{n_images} images: fold 0 ({n_images // folds} images) watches the run, the other folds train"


def render(choices: Sequence[Choice], header: Sequence[str] = ()) -> str:
    """The plan as YAML: top-level keys, then one section per prefix, each value under its reason."""
    lines = [f"# {line}" if line else "#" for line in header]
    sections: dict[str, list[Choice]] = {}
    for choice in choices:
        section, _, key = choice.key.rpartition(".")
        sections.setdefault(section, []).append(choice)

    def dump(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()

    for section, members in sections.items():
        indent = ""
        if section:
            lines.append(f"{section}:")
            indent = "  "
        for choice in members:
            key = choice.key.rpartition(".")[2]
            lines.append(f"{indent}# {choice.why}")
            lines.append(f"{indent}{key}: {dump(choice.value)}")
    return "\n".join(lines) + "\n"


@dataclass
class Plan:
    """A recipe: its choices (the YAML config), how the budget is spent, and the timings behind it."""

    choices: list[Choice]
    budget: Budget
    model: str
    steps: int
    tta: str | None
    device: Device
    timings: dict[str, Timing]


def trial_for(candidate: Candidate, fingerprint: Fingerprint, shape: Geometry) -> Trial:
    """What :func:`~ternaus_zoo.planning.timing.time_trial` times for ``candidate`` at the plan's geometry."""
    return Trial(
        model=candidate.model,
        model_kwargs=candidate.model_kwargs,
        num_classes=fingerprint.num_classes,
        in_channels=fingerprint.channels,
        patch_size=shape.crop_side,
        batch_size=shape.batch_size,
        loss=loss_for(fingerprint)[0],
        eval_side=shape.eval_side,
    )


def make_plan(
    fingerprint: Fingerprint,
    device: Device,
    shape: Geometry,
    timings: Mapping[str, Timing],
    *,
    budget_s: float,
    planning_s: float,
    folds: int | None = None,
    holdout_every: int = 0,
    seed: int = 0,
) -> Plan:
    """The whole recipe from the fingerprint, the device, the geometry and the candidates' timings."""
    n_folds, folds_why = validation_folds(fingerprint.n_images, folds)
    scored = fingerprint.n_images // holdout_every if holdout_every > 0 else 0
    trained = fingerprint.n_images - scored
    val_images = max(1, trained // n_folds)
    train_samples = shape.passes_samples * (trained - val_images) / fingerprint.n_images
    steps_per_pass = max(1.0, train_samples / shape.batch_size)
    budgets: dict[str, Budget | BadValueError] = {}
    for name, timing in timings.items():  # each candidate's own split: its validations and predictions differ
        try:
            budgets[name] = split_budget(
                budget_s,
                planning_s,
                timing,
                val_images=val_images,
                score_images=scored or (val_images * (folds or 1)),
                steps_per_pass=steps_per_pass,
                models=folds or 1,
                holdout=scored > 0,
            )
        except BadValueError as error:
            budgets[name] = error
    candidate, model_why = choose_model(timings, budgets, steps_per_pass)
    timing, budget = timings[candidate.name], budgets[candidate.name]
    batch = cuda_batch(shape.batch_size, timing, device)
    steps = int(budget.train_s / timing.step_s * shape.batch_size / batch)
    cached = candidate.encoder is not None and fingerprint.imagenet_cached.get(candidate.encoder, False)
    loss, loss_why = loss_for(fingerprint)
    share, share_why = foreground_share(fingerprint)
    train_minutes = round(budget.train_s / 60, 2)
    choices = [
        Choice("seed_everything", seed, "the seed of the weights, the crops and the batches"),
        Choice("trainer.precision", device.precision, f"the fastest numerics of this {device.kind} ({device.name})"),
        Choice("trainer.max_epochs", -1, "the run ends on the training-time budget (model.train_minutes), not epochs"),
        Choice(
            "trainer.max_time",
            _duration(budget.train_s + budget.validation_s / (folds or 1) + START_S),
            "a guard only: training time plus validations",
        ),
        Choice("model.model", candidate.model, model_why),
        Choice("model.num_classes", fingerprint.num_classes, f"mask kind {fingerprint.mask_mode!r}"),
        Choice("model.in_channels", fingerprint.channels, "the images' channels"),
    ]
    if cached:
        choices.append(Choice("model.weights", "imagenet", f"ImageNet weights of {candidate.encoder} are cached here"))
        if candidate.model_kwargs:
            choices.append(Choice("model.model_kwargs", dict(candidate.model_kwargs), "the candidate's options"))
    else:
        missing = f"no ImageNet weights of {candidate.encoder} cached" if candidate.encoder else "no ImageNet weights"
        choices += [
            Choice("model.weights", None, f"{missing}: trained from scratch"),
            Choice(
                "model.model_kwargs",
                {**candidate.model_kwargs, "mean": list(fingerprint.mean), "std": list(fingerprint.std)},
                "from scratch: inputs normalised with the data set's own mean and std",
            ),
        ]
    if fingerprint.ignore_index is not None:
        choices.append(Choice("model.ignore_index", fingerprint.ignore_index, "the void value of the masks"))
    peak = 1e-3 if cached else 2e-3
    choices += [
        Choice("model.loss", loss, loss_why),
        Choice("model.optimizer", "adamw", "AdamW: decoupled weight decay"),
        Choice("model.lr", peak, "pretrained encoder: a gentler peak" if cached else "from scratch: the hour recipe's"),
        Choice("model.weight_decay", 1e-4, "light regularisation"),
        Choice("model.scheduler", "onecycle", "one cycle over the training time: warm up, peak, anneal to the end"),
        Choice("model.scheduler_kwargs", {"max_lr": peak}, "the peak of the cycle"),
        Choice(
            "model.train_minutes",
            train_minutes,
            f"the budget {budget_s / 60:.0f} min less planning ({planning_s:.0f} s), validations "
            f"({budget.validation_s:.0f} s), prediction ({budget.predict_s:.0f} s) and starts"
            + (f", shared by {folds} folds" if folds else "")
            + f": about {steps} steps at {timing.step_s:.2f} s",
        ),
        Choice(
            "model.val_every_minutes",
            round(train_minutes / budget.validations, 2),
            f"{budget.validations} validation(s) over the run"
            + ("" if budget.validations == VALIDATIONS else f": what {VALIDATION_SHARE:.0%} of its training time pays"),
        ),
        Choice("data.dataset", str(fingerprint.data_dir), "the data set folder"),
        Choice("data.masks", fingerprint.masks, "the masks"),
        Choice("data.mask_mode", fingerprint.mask_mode, "inferred from the mask values (fingerprint.json)"),
    ]
    if fingerprint.mask_mode == "binary":
        choices.append(Choice("data.mask_threshold", fingerprint.mask_threshold, "foreground: mask values above it"))
    if fingerprint.class_names:
        choices.append(Choice("data.class_names", list(fingerprint.class_names), "the classes' names"))
    choices += [
        Choice("data.n_folds", n_folds, folds_why),
        Choice("data.fold", 0, "the validation fold"),
    ]
    if holdout_every > 0:
        choices.append(
            Choice(
                "data.holdout_every", holdout_every, f"sorted(stems)[::{holdout_every}]: a hold-out never trained on"
            )
        )
    if fingerprint.sequence:
        choices.append(
            Choice("data.group_blocks", n_folds, "file names form a sequence: contiguous blocks, no neighbour leaks")
        )
    choices += shape.choices
    if batch != shape.batch_size:
        choices = [choice for choice in choices if choice.key != "data.batch_size"]
        choices.append(Choice("data.batch_size", batch, f"half of the {device.memory_gib:.0f} GiB of {device.name}"))
    if shape.patch_size is not None or share > 0:
        choices.append(Choice("data.foreground_share", share, share_why))
    sequence_why = "street-scene-like sequences: horizontal flips only" if fingerprint.sequence else "D4 flips"
    choices += [
        Choice("data.d4", not fingerprint.sequence, sequence_why),
        Choice("data.color", True, "brightness, contrast, hue and saturation jitter"),
        Choice("data.num_workers", 0 if device.cpu_count <= 2 else min(8, device.cpu_count - 2), "loader processes"),
    ]
    return Plan(choices, budget, candidate.name, steps, budget.tta, device, dict(timings))


def _duration(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS``."""
    seconds = math.ceil(seconds)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

"""What ``fit`` decides from the data once the head has trained on the frozen backbone.

The head phase costs little (it trains on cached features), and how well it does says how far
the data is from ImageNet. Two decisions follow, each recorded in ``config.json`` and
``phases.json`` (``"decisions"``) and printed, so a resumed run reuses them:

* **Transforms the data tolerates** (``augment="auto"``): the trained head classifies the
  validation images mirrored and zoomed by the ``"medium"`` preset's extremes. A transform
  that changes the answer (mirrored digits, text and arrows; zoomed textures whose class is
  a spatial frequency) goes, and fine-tuning uses ``"medium"`` without it.
  Mirroring loses no pixel, so for flips a systematic drop in the head's confidence in the
  true class is the evidence (:func:`loses_confidence`); zoom resamples the image, which
  lowers confidence even where it keeps the class, so for it only answers that change count
  (:func:`changes_answers`). Rotation by the preset's 15 degrees stays on untested: a head
  trained on upright images changes 10-47 % of its answers on rotated images whatever
  their class (letters, digits, arrows, gratings), so the probe dropped it on every far
  benchmark dataset, and training with it gained 3 points on glyphs and 1 on gratings
  (``benchmarks/default_quality.py``, medians of 3 seeds).
* **How much to unfreeze** (``unfreeze_blocks=None``): the head's validation error places the
  data near ImageNet (at most :data:`NEAR_ERROR`) or far from it. Near data fine-tunes the
  whole network briefly (3 epochs at the higher rate): frozen features already separate its
  classes, and adapting every layer a little helps where the test images differ from the
  training ones (photo crops from other regions of the photos: median 91.3 % against 89.0 %
  with the top 2 blocks for 12 epochs, in 0.83x the time). Far data fine-tunes the top 5/8 of the
  blocks for longer (6 epochs, a fresh augmented view every epoch): weak frozen features
  need the deeper blocks to change over more epochs, while the bottom 3/8, which work at the
  highest resolutions where a backward pass costs most, gained nothing measurable on the
  benchmark's far datasets when unfrozen too (``benchmarks/default_quality.py``: glyphs,
  arrows, textures, digits), and near's 3 epochs of the whole network gave 82 % on glyphs
  and 65 % on textures (single runs) against 96.7 % and 84.2 %.

``budget="fast"`` skips the second decision (the top blocks by dataset size, as
:func:`~effnet_tl.train.defaults.default_unfreeze_blocks`).

Example:
    >>> domain_for(0.01), domain_for(0.03), domain_for(0.4)
    ('near', 'far', 'far')
    >>> [unfreeze_for(domain, num_train=1_300, num_blocks=16) for domain in ("far", "near")]
    [10, 16]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf
from scipy.stats import binomtest

from effnet_tl.augment import get_preset
from effnet_tl.augment.fused import warp_affine
from effnet_tl.train.defaults import default_unfreeze_blocks
from effnet_tl.train.feature_cache import inference_function, run_over
from effnet_tl.train.surgery import frozen_bottom, head_model

__all__ = [
    "ANSWER_SIGNIFICANCE",
    "FAR_BLOCK_FRACTION",
    "FAR_FINETUNE_EPOCHS",
    "FINETUNE_LR",
    "MIRROR_MIN_NATS",
    "MIRROR_Z",
    "NEAR_ERROR",
    "NEAR_FINETUNE_EPOCHS",
    "PROBE_IMAGES",
    "changes_answers",
    "decide",
    "describe",
    "domain_for",
    "effective",
    "loses_confidence",
    "needs_decisions",
    "probe_images",
    "probes",
    "schedule_for",
    "tolerated",
    "transform_test",
    "unfreeze_for",
]

#: Head validation error up to which the data counts as near ImageNet. Low, because treating
#: far data as near costs much more than the reverse: near's 3 epochs of the whole network
#: gave 82 % on glyphs and 65 % on textures (single runs) against far's 96.7 % and 84.2 %,
#: while far's schedule on photo crops (head 100 %) gave about what near's does (91.3 %
#: against 92.7 %, medians of 3 seeds) at 1.3x the time.
NEAR_ERROR = 0.01
#: Share of the blocks (from the top) that fine-tuning unfreezes for far data.
FAR_BLOCK_FRACTION = 5 / 8
#: Far data's fine-tuning: a short schedule at a high peak rate (per 32 images of batch).
#: Measured on the benchmark's far datasets (Lite0, 64 px, 720-1,350 images): 6 epochs at
#: 6e-4 matched 12 at 3e-4 in accuracy at 0.6-0.8x the time; 4 at 1e-3 lost 10-15
#: points on textures.
FAR_FINETUNE_EPOCHS = 6
#: Near data's fine-tuning: every block, 3 epochs at the same rate. Measured on photo crops
#: (Lite0, 64 px, 800 images, seeds 0-2, one fit per process; default_quality.py's medians
#: are in the README): 88.2 / 92.7 / 92.8 % test accuracy in 50-56 s,
#: against 89.0 / 85.8 / 89.3 % in 54-57 s for the top 2 blocks over 12 epochs at 1e-4
#: (the previous near schedule), 88.7 / 87.5 / 89.3 % for them at 3e-4, 88.5 / 87.5 / 88.8 %
#: for 6 blocks over 6 epochs at 3e-4, and 88.3 / 90.2 / 87.7 % for 10 blocks over 3.
NEAR_FINETUNE_EPOCHS = 3
FINETUNE_LR = 6e-4
#: Validation images the transform probes classify, at most (3 passes of the frozen backbone).
PROBE_IMAGES = 1000
#: One-sided significance of the sign test that drops zoom.
ANSWER_SIGNIFICANCE = 0.025
#: Flips go when mirroring raises the true class's negative log-likelihood by at least
#: MIRROR_MIN_NATS on average, MIRROR_Z standard errors above zero (one-sided 5 %). The bar is
#: low because the two mistakes cost very differently: flips kept on glyphs left fine-tuning
#: at 72-80 % test accuracy against ~96 % (b/d, p/q taught as each other), while dropping them
#: on photo crops cost nothing measurable (the best grid setting there has none). Measured by
#: ``python -m benchmarks.transform_decisions`` (60 runs, 72-299 validation images): glyphs,
#: arrows and digits 0.06-0.24 nats, t 2.3-6.9; photos and gratings at most 0.06 nats, t up to
#: 1.9 (photos: 0.009 nats, which the floor keeps). Every decision right, where counting
#: changed answers (2 sigma) kept flips in 5 of 12 runs on digits and glyphs with 10 %
#: validation and dropped them in 2 of 6 on gratings.
MIRROR_Z = 1.645
MIRROR_MIN_NATS = 0.03
AUTO_PRESET = "medium"


def domain_for(head_error: float) -> str:
    """``"near"`` or ``"far"`` (from ImageNet) from the head's validation error."""
    return "near" if head_error <= NEAR_ERROR else "far"


def unfreeze_for(domain: str, *, num_train: int, num_blocks: int) -> int:
    """Top blocks to fine-tune for a domain distance: every block near ImageNet, the top 5/8
    far from it (more when the dataset is large enough for more by size)."""
    if domain == "near":
        return num_blocks
    return max(default_unfreeze_blocks(num_train, num_blocks),
               math.ceil(FAR_BLOCK_FRACTION * num_blocks))


def schedule_for(domain: str) -> tuple[int, float]:
    """Fine-tuning epochs and peak rate (per 32 images of batch) for a domain distance.

    Example:
        >>> schedule_for("far"), schedule_for("near")
        ((6, 0.0006), (3, 0.0006))
    """
    return (NEAR_FINETUNE_EPOCHS if domain == "near" else FAR_FINETUNE_EPOCHS), FINETUNE_LR


def _scores(predict, features, labels) -> tuple[np.ndarray, np.ndarray]:
    """Per image: is the head's top class right, and the log-probability of the true class."""
    probabilities = np.concatenate([predict(tf.constant(features[i:i + 1024])).numpy()
                                    for i in range(0, len(features), 1024)])
    true = np.log(np.maximum(np.sum(probabilities * labels, axis=1), 1e-7))
    return probabilities.argmax(axis=1) == labels.argmax(axis=1), true


def changes_answers(plain: np.ndarray, transformed: np.ndarray, *,
                    significance: float = ANSWER_SIGNIFICANCE) -> bool:
    """Whether a transform turns significantly more right answers wrong than wrong ones right.

    A paired comparison on the same images: of the ``lost + gained`` images whose answer the
    transform changes, a transform that does not matter turns each way with probability 1/2,
    so a one-sided sign test (exact binomial) on ``lost`` gives the evidence; the net loss
    must also reach 2 % of the images. One unlucky image of a small validation set is not
    evidence; a mirrored arrow pointing the other way is.

    Example:
        >>> right = np.ones(100, bool)
        >>> changes_answers(right, np.r_[np.zeros(1, bool), np.ones(99, bool)])
        False
        >>> changes_answers(right, np.r_[np.zeros(30, bool), np.ones(70, bool)])
        True
    """
    lost = int(np.sum(plain & ~transformed))
    gained = int(np.sum(~plain & transformed))
    if lost <= gained or lost - gained < 0.02 * len(plain):
        return False
    return bool(binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue
                <= significance)


def loses_confidence(plain: np.ndarray, transformed: np.ndarray) -> dict:
    """Whether a transform systematically lowers the head's confidence in the true class.

    ``plain`` and ``transformed``: per image, the log-probability of its true class. The
    per-image increase in negative log-likelihood, paired on the same images, must average
    at least :data:`MIRROR_MIN_NATS` and :data:`MIRROR_Z` standard errors. A continuous
    score sees what few changed answers hide (a head at 75 % on letters loses confidence in
    a mirrored "b" long before it answers "d").

    Example:
        >>> rng = np.random.default_rng(0)
        >>> plain = np.log(rng.uniform(0.5, 1.0, 80))
        >>> loses_confidence(plain, plain - rng.normal(0.0, 0.3, 80))["dropped"]
        False
        >>> loses_confidence(plain, plain - rng.normal(0.2, 0.3, 80))["dropped"]
        True
    """
    increase = plain - transformed
    mean = float(np.mean(increase))
    error = float(np.std(increase, ddof=1) / math.sqrt(len(increase))) if len(increase) > 1 \
        else math.inf
    t = mean / max(error, 1e-12)  # finite: config.json stays strict JSON
    return {"dropped": bool(mean >= MIRROR_MIN_NATS and t >= MIRROR_Z),
            "nll_increase": round(mean, 4), "nll_increase_t": round(t, 2)}


def _mirror(height: int, width: int) -> list[float]:
    return [-1.0, 0.0, width - 1.0, 0.0, 1.0, 0.0]


def _about_centre(linear, height: int, width: int) -> list[float]:
    """The 2x3 map (output pixel -> source pixel) of ``linear`` about the image centre."""
    (l00, l01), (l10, l11) = linear
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return [l00, l01, cx - l00 * cx - l01 * cy, l10, l11, cy - l10 * cx - l11 * cy]


def _zoom(factor: float):
    def affine(height: int, width: int) -> list[float]:  # > 1 magnifies: a smaller source
        return _about_centre(((1 / factor, 0.0), (0.0, 1 / factor)), height, width)
    return affine


def probes(spec) -> dict[str, list]:
    """The geometric transforms of ``spec`` that can change a label, each at its extremes
    (rotation by 15 degrees is not among them: see the module notes).

    Example:
        >>> sorted(probes(get_preset("medium")))
        ['flips', 'zoom']
    """
    found = {}
    if spec.horizontal_flip:
        found["flips"] = [_mirror]
    if spec.max_zoom_fraction:
        found["zoom"] = [_zoom(1 + spec.max_zoom_fraction), _zoom(1 - spec.max_zoom_fraction)]
    return found


def transform_test(model, val_images, spec) -> dict[str, dict]:
    """Which of ``spec``'s geometric transforms the data tolerates, from the trained head.

    The head (trained on the plain images) classifies the validation images transformed at
    each extreme of each transform (mirrored; zoomed in and out by the max fraction). Flips
    are ``kept`` unless mirroring :func:`loses_confidence`; zoom unless one extreme
    :func:`changes_answers`.
    Mirroring a digit or zooming a texture whose class is its spatial frequency changes the
    answer, so training with it would teach the wrong label.
    """
    features = inference_function(frozen_bottom(model, None))
    predict = inference_function(head_model(model))
    plain_x, labels = run_over(features, val_images)
    plain, plain_log = _scores(predict, plain_x, labels)
    results = {}
    for name, extremes in probes(spec).items():
        outcomes = []
        for make_affine in extremes:
            def warp(x, y, make_affine=make_affine):
                affine = tf.constant(make_affine(x.shape[1], x.shape[2]), tf.float32)
                batch = tf.tile(affine[None], [tf.shape(x)[0], 1])
                return warp_affine(x, batch, interpolation=spec.interpolation,
                                   fill_mode=spec.fill_mode), y
            outcomes.append(_scores(predict, run_over(features, val_images.map(warp))[0],
                                    labels))
        worst = min((right for right, _ in outcomes), key=np.mean)
        results[name] = {
            "val_accuracy": round(float(np.mean(plain)), 4),
            "transformed_val_accuracy": round(float(np.mean(worst)), 4),
            "turned_wrong": int(np.sum(plain & ~worst)),
            "turned_right": int(np.sum(~plain & worst))}
        if name == "flips":  # lossless: the confidence in the true class is the evidence
            confidence = loses_confidence(plain_log, outcomes[0][1])
            results[name].update(kept=not confidence.pop("dropped"), **confidence)
        else:  # resampled: only answers that change count
            results[name]["kept"] = not any(changes_answers(plain, right)
                                            for right, _ in outcomes)
    return results


def probe_images(val_images: tf.data.Dataset, num_val: int) -> tf.data.Dataset:
    """The validation batches, or every k-th image when there are more than
    :data:`PROBE_IMAGES` (each probe is a pass through the frozen backbone)."""
    step = math.ceil(num_val / PROBE_IMAGES)
    if step <= 1:
        return val_images
    return val_images.unbatch().shard(step, 0).batch(128)


def needs_decisions(settings) -> bool:
    """Whether resolved ``settings`` leave anything to decide after the head phase."""
    return settings.data.augment == "auto" or settings.recipe.unfreeze_blocks is None


def decide(settings, model, data, head_rows: list[dict], *, num_blocks: int) -> dict:
    """The decisions for what ``settings`` leaves to the data (empty when nothing is)."""
    decisions: dict = {}
    if settings.data.augment == "auto":
        decisions.update(transform_test(model, probe_images(data.val_images, data.num_val),
                                        get_preset(AUTO_PRESET)))
    if settings.recipe.unfreeze_blocks is None:
        accuracy = max((row["val_accuracy"] for row in head_rows
                        if isinstance(row.get("val_accuracy"), float)
                        and math.isfinite(row["val_accuracy"])), default=None)
        # No evidence: the cheaper mistake (NEAR_ERROR) is to take the data for far.
        domain = "far" if accuracy is None else domain_for(1.0 - accuracy)
        decisions["domain"] = {"name": domain, "head_val_accuracy": accuracy}
        decisions["unfreeze_blocks"] = unfreeze_for(domain, num_train=data.num_train,
                                                    num_blocks=num_blocks)
        far = domain != "near"
        recipe = settings.recipe
        schedule_epochs, rate = schedule_for(domain)
        epochs = recipe.finetune_epochs
        if epochs is None:
            epochs = decisions["finetune_epochs"] = schedule_epochs
        if recipe.finetune_lr is None:
            decisions["finetune_lr"] = rate * settings.data.batch_size / 32
        if recipe.finetune_views is None and far:  # a fresh augmented view every epoch
            decisions["finetune_views"] = epochs
    return decisions


def effective(settings, decisions: dict | None):
    """``settings`` with the data's decisions applied (before them: flips on, as ``medium``).

    What ``fit`` trains with; ``config.json`` keeps the settings as asked, and the
    decisions beside them.
    """
    decisions = decisions or {}
    data, recipe = settings.data, settings.recipe
    if data.augment == "auto":
        data = dataclasses.replace(data, augment=tolerated(get_preset(AUTO_PRESET), decisions))
    if recipe.unfreeze_blocks is None and "unfreeze_blocks" in decisions:
        recipe = dataclasses.replace(
            recipe, unfreeze_blocks=decisions["unfreeze_blocks"],
            finetune_epochs=decisions.get("finetune_epochs", recipe.finetune_epochs),
            finetune_lr=recipe.finetune_lr or decisions["finetune_lr"],
            finetune_views=decisions.get("finetune_views", recipe.finetune_views))
    return dataclasses.replace(settings, data=data, recipe=recipe)


def tolerated(spec, decisions: dict):
    """``spec`` without the transforms the data's decisions turned off.

    Example:
        >>> spec = tolerated(get_preset("medium"), {"zoom": {"kept": False}})
        >>> spec.max_zoom_fraction, spec.max_rotation_degrees, spec.horizontal_flip
        (0.0, 15.0, True)
    """
    off = {name for name in _TRANSFORM_FIELDS if not decisions.get(name, {}).get("kept", True)}
    return dataclasses.replace(spec, **{_TRANSFORM_FIELDS[name]: _OFF[name] for name in off})


# "rotation": decided by runs of earlier versions, which a resumed run reuses.
_TRANSFORM_FIELDS = {"flips": "horizontal_flip", "rotation": "max_rotation_degrees",
                     "zoom": "max_zoom_fraction"}
_OFF = {"flips": False, "rotation": 0.0, "zoom": 0.0}
_WORDING = {"flips": "left-right flips", "rotation": "rotation", "zoom": "zoom"}
_TRANSFORMED = {"flips": "mirrored", "rotation": "rotated", "zoom": "zoomed"}


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def describe(decisions: dict) -> str:
    """One log line's worth of the decisions, in words (the statistics are in config.json).

    Example:
        >>> describe({"flips": {"kept": False, "val_accuracy": 0.948,
        ...                     "transformed_val_accuracy": 0.906, "nll_increase": 0.11,
        ...                     "nll_increase_t": 5.6},
        ...           "zoom": {"kept": True, "val_accuracy": 0.948,
        ...                    "transformed_val_accuracy": 0.94},
        ...           "domain": {"name": "far", "head_val_accuracy": 0.948},
        ...           "unfreeze_blocks": 10,
        ...           "finetune_epochs": 6})  # doctest: +NORMALIZE_WHITESPACE
        'left-right flips OFF (mirrored, the validation images go from 94.8 % to 90.6 %
        right under the head trained on the frozen backbone, and its confidence in the true
        class drops beyond chance); zoom kept (94.8 % -> 94.0 % right); far from ImageNet
        (94.8 % right; near takes 99.0 %) -> fine-tune the top 10 blocks for 6 epochs'
    """
    parts = []
    for name in _TRANSFORM_FIELDS:
        if name in decisions:
            probe = decisions[name]
            before = _percent(probe["val_accuracy"])
            after = _percent(probe["transformed_val_accuracy"])
            change = (f"{before} -> {after} right" if parts else  # the first names the numbers
                      f"{_TRANSFORMED[name]}, the validation images go from {before} to "
                      f"{after} right under the head trained on the frozen backbone")
            if "nll_increase" in probe:  # the test that decided
                change += (", and its confidence in the true class "
                           + ("does not drop" if probe["kept"] else "drops") + " beyond chance")
            parts.append(f"{_WORDING[name]} {'kept' if probe['kept'] else 'OFF'} ({change})")
    if "domain" in decisions:
        domain = decisions["domain"]
        accuracy = domain["head_val_accuracy"]
        right = "n/a" if accuracy is None else _percent(accuracy) + " right"
        if not parts:
            right = f"the head trained on the frozen backbone gets {right} on validation"
        near = domain["name"] == "near"
        where = "near ImageNet" if near else "far from ImageNet"
        blocks = f"{'all' if near else 'the top'} {decisions['unfreeze_blocks']} blocks"
        if "finetune_epochs" in decisions:
            blocks += f" for {decisions['finetune_epochs']} epochs"
        parts.append(f"{where} ({right}; near takes {_percent(1 - NEAR_ERROR)}) -> fine-tune "
                     + blocks)
    return "; ".join(parts)

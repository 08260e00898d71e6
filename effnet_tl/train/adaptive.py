"""What ``fit`` decides from the data once the head has trained on the frozen backbone.

The head phase costs little (it trains on cached features), and how well it does says how far
the data is from ImageNet. Two decisions follow, each recorded in ``config.json`` and
``phases.json`` (``"decisions"``) and printed, so a resumed run reuses them:

* **Flips the data tolerates** (``augment="auto"``): the trained head classifies the
  validation images mirrored left-right. When its accuracy drops by more than the noise of the
  validation set allows, mirroring changes the answer (digits, text, arrows, oriented
  textures) and fine-tuning uses the ``"medium"`` preset without flips.
* **How much to unfreeze** (``unfreeze_blocks=None``): the head's validation error places the
  data near ImageNet (at most :data:`NEAR_ERROR`: the top blocks by dataset size, as
  :func:`~effnet_tl.train.defaults.default_unfreeze_blocks`), far from it (up to
  :data:`FAR_ERROR`: the top 5/8 of the blocks), or very far (every block). Frozen features
  that already serve need little adaptation; weak ones need the deeper blocks to change. Far
  data also gets a higher fine-tuning rate and a fresh augmented view every epoch.

``budget="fast"`` skips the second decision (the by-size default, as near data gets).

Example:
    >>> domain_for(0.01), domain_for(0.08), domain_for(0.4)
    ('near', 'far', 'very far')
    >>> unfreeze_for("far", num_train=1_300, num_blocks=16)
    10
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from effnet_tl.augment import get_preset
from effnet_tl.train.defaults import default_unfreeze_blocks
from effnet_tl.train.feature_cache import inference_function, run_over
from effnet_tl.train.surgery import frozen_bottom, head_model

__all__ = [
    "FAR_ERROR",
    "NEAR_ERROR",
    "decide",
    "describe",
    "domain_for",
    "effective",
    "needs_decisions",
    "unfreeze_for",
]

#: Head validation error up to which the data counts as near ImageNet.
NEAR_ERROR = 0.03
#: Head validation error up to which the data counts as far (beyond: very far).
FAR_ERROR = 0.15
#: Peak fine-tuning rate (per 32 images of batch) when many blocks adapt to far data.
FAR_FINETUNE_LR = 3e-4
NEAR_FINETUNE_LR = 1e-4
AUTO_PRESET = "medium"


def domain_for(head_error: float) -> str:
    """``"near"``, ``"far"`` or ``"very far"`` from the head's validation error."""
    if head_error <= NEAR_ERROR:
        return "near"
    return "far" if head_error <= FAR_ERROR else "very far"


def unfreeze_for(domain: str, *, num_train: int, num_blocks: int) -> int:
    """Top blocks to fine-tune for a domain distance (``num_blocks``: every block)."""
    if domain == "near":
        return default_unfreeze_blocks(num_train, num_blocks)
    if domain == "far":
        return max(default_unfreeze_blocks(num_train, num_blocks), math.ceil(5 * num_blocks / 8))
    return num_blocks


def _accuracy(predict, features, labels) -> float:
    probabilities = np.concatenate([predict(tf.constant(features[i:i + 1024])).numpy()
                                    for i in range(0, len(features), 1024)])
    return float(np.mean(probabilities.argmax(axis=1) == labels.argmax(axis=1)))


def flip_test(model, val_images) -> dict:
    """The kept head's validation accuracy on the images and on their mirror images.

    ``kept`` is False when mirroring costs more than ``tolerance``: two standard errors of
    the accuracy on this many images, at least 2 points.
    """
    features = inference_function(frozen_bottom(model, None))
    plain_x, labels = run_over(features, val_images)
    flipped_x, _ = run_over(features, val_images.map(lambda x, y: (tf.reverse(x, axis=[2]), y)))
    predict = inference_function(head_model(model))
    plain, flipped = _accuracy(predict, plain_x, labels), _accuracy(predict, flipped_x, labels)
    tolerance = max(0.02, 2 * math.sqrt(max(plain * (1 - plain), 1e-4) / max(1, len(labels))))
    return {"kept": flipped >= plain - tolerance, "val_accuracy": round(plain, 4),
            "flipped_val_accuracy": round(flipped, 4), "tolerance": round(tolerance, 4)}


def needs_decisions(settings) -> bool:
    """Whether resolved ``settings`` leave anything to decide after the head phase."""
    return settings.data.augment == "auto" or settings.recipe.unfreeze_blocks is None


def decide(settings, model, data, head_rows: list[dict], *, num_blocks: int) -> dict:
    """The decisions for what ``settings`` leaves to the data (empty when nothing is)."""
    decisions: dict = {}
    if settings.data.augment == "auto":
        decisions["flips"] = flip_test(model, data.val_images)
    if settings.recipe.unfreeze_blocks is None:
        accuracy = max((row["val_accuracy"] for row in head_rows
                        if isinstance(row.get("val_accuracy"), float)), default=None)
        domain = "near" if accuracy is None else domain_for(1.0 - accuracy)
        decisions["domain"] = {"name": domain, "head_val_accuracy": accuracy}
        decisions["unfreeze_blocks"] = unfreeze_for(domain, num_train=data.num_train,
                                                    num_blocks=num_blocks)
        far = domain != "near"
        recipe = settings.recipe
        if recipe.finetune_lr is None:
            rate = FAR_FINETUNE_LR if far else NEAR_FINETUNE_LR
            decisions["finetune_lr"] = rate * settings.data.batch_size / 32
        if recipe.finetune_views is None and far:  # a fresh augmented view every epoch
            decisions["finetune_views"] = recipe.finetune_epochs
    return decisions


def effective(settings, decisions: dict | None):
    """``settings`` with the data's decisions applied (before them: flips on, as ``medium``).

    What ``fit`` trains with; ``config.json`` keeps the settings as asked, and the
    decisions beside them.
    """
    decisions = decisions or {}
    data, recipe = settings.data, settings.recipe
    if data.augment == "auto":
        keep = decisions.get("flips", {}).get("kept", True)
        data = dataclasses.replace(data, augment=dataclasses.replace(
            get_preset(AUTO_PRESET), horizontal_flip=keep and get_preset(AUTO_PRESET).horizontal_flip))
    if recipe.unfreeze_blocks is None and "unfreeze_blocks" in decisions:
        recipe = dataclasses.replace(
            recipe, unfreeze_blocks=decisions["unfreeze_blocks"],
            finetune_lr=recipe.finetune_lr or decisions["finetune_lr"],
            finetune_views=decisions.get("finetune_views", recipe.finetune_views))
    return dataclasses.replace(settings, data=data, recipe=recipe)


def describe(decisions: dict) -> str:
    """One log line's worth of the decisions."""
    parts = []
    if "flips" in decisions:
        flips = decisions["flips"]
        parts.append(f"left-right flips {'kept' if flips['kept'] else 'OFF'} (head accuracy "
                     f"{flips['val_accuracy']:.3f} on validation, {flips['flipped_val_accuracy']:.3f}"
                     f" mirrored)")
    if "domain" in decisions:
        domain = decisions["domain"]
        accuracy = domain["head_val_accuracy"]
        parts.append(f"{domain['name']} domain (frozen-feature head: val accuracy "
                     f"{'n/a' if accuracy is None else f'{accuracy:.3f}'}) -> fine-tune the top "
                     f"{decisions['unfreeze_blocks']} blocks")
    return "; ".join(parts)

"""Class weights for imbalanced data, in the form ``model.fit(class_weight=...)`` takes."""

from __future__ import annotations

import numpy as np


def class_weights(labels, num_classes: int) -> dict[int, float]:
    """The "balanced" heuristic: ``n_samples / (num_classes * count[c])`` for every class.

    Gives the same numbers as ``sklearn.utils.class_weight.compute_class_weight("balanced")``
    when every class occurs. A class with no examples gets weight 1.0 (it never reaches the loss)
    and the classes that do occur share ``num_classes`` = the present count, so the average weight
    per sample stays 1 and the effective learning rate is unchanged. The dict covers every class
    index, as Keras needs.

    Args:
        labels: integer class indices ``(N,)`` or one-hot ``(N, num_classes)``.
        num_classes: the number of classes.

    Example:
        >>> class_weights([0, 0, 0, 1], 2)
        {0: 0.6666666666666666, 1: 2.0}
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    labels = labels.astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}"
        )
    counts = np.bincount(labels, minlength=num_classes)
    present = int((counts > 0).sum())
    return {
        index: float(labels.size / (present * count)) if count else 1.0
        for index, count in enumerate(counts)
    }

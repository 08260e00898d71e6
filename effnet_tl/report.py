"""Evaluation report and plots: metrics dict for report.json, PNG curves, confusion matrix,
and a gallery of the most confidently wrong images.

Plots use standalone ``matplotlib.figure.Figure`` objects (never pyplot's global state or a
global backend switch), so they work headless and do not disturb a notebook's backend.
A PNG is ``size_inches x dpi`` pixels exactly (no tight bounding box).

Example:
    >>> import numpy as np
    >>> from effnet_tl.report import classification_report
    >>> report = classification_report([0, 1, 1], np.array([[.9, .1], [.4, .6], [.7, .3]]),
    ...                                ["cat", "dog"], top_k=())
    >>> round(report["accuracy"], 3), report["per_class"]["dog"]["recall"]
    (0.667, 0.5)
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "classification_report",
    "confident_mistakes",
    "plot_confident_mistakes",
    "plot_confusion_matrix",
    "plot_history",
]


def _labels_and_probs(y_true, y_prob, class_names):
    y_prob = np.asarray(y_prob, dtype="float64")
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be (examples, classes). Received shape {y_prob.shape}")
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:  # one-hot (or soft) targets
        y_true = y_true.argmax(axis=1)
    y_true = y_true.astype("int64")
    num_classes = y_prob.shape[1]
    if len(y_true) != len(y_prob):
        raise ValueError(
            f"y_true has {len(y_true)} examples but y_prob has {len(y_prob)}."
        )
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names ({list(class_names)}) but y_prob has "
            f"{num_classes} columns."
        )
    bad = y_true[(y_true < 0) | (y_true >= num_classes)]
    if bad.size:
        raise ValueError(
            f"y_true holds labels outside 0..{num_classes - 1}: {sorted(set(bad.tolist()))}"
        )
    return y_true, y_prob


def classification_report(
    y_true,
    y_prob,
    class_names: Sequence[str],
    *,
    top_k: Sequence[int] | int = (3, 5),
) -> dict:
    """Metrics for ``report.json``; every value is plain JSON (floats, ints, lists).

    Args:
        y_true: Integer labels ``(n,)`` or one-hot ``(n, classes)``.
        y_prob: Predicted probabilities ``(n, classes)``.
        class_names: One name per column of ``y_prob``.
        top_k: k values for top-k accuracy; values ``>= classes`` are skipped (they would be
            trivially 1.0).

    Returns:
        ``{"num_examples", "accuracy", "top_k_accuracy": {"3": ...}, "per_class": {name:
        {"precision", "recall", "f1", "support"}}, "macro_avg", "weighted_avg",
        "confusion_matrix" (rows = true, columns = predicted), "class_names"}``. Precision of
        a class never predicted is 0 (sklearn's ``zero_division=0``).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true, y_prob = _labels_and_probs(y_true, y_prob, class_names)
    num_classes = y_prob.shape[1]
    top_k = (top_k,) if isinstance(top_k, int) else tuple(top_k)
    if any(not isinstance(k, int) or k < 1 for k in top_k):
        raise ValueError(f"top_k values must be integers >= 1. Received: top_k={top_k!r}")
    y_pred = y_prob.argmax(axis=1)
    labels = np.arange(num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    # Stable sort so ties rank the lower class index first, like argmax.
    ranking = np.argsort(-y_prob, axis=1, kind="stable")
    report = {
        "num_examples": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else math.nan,
        "top_k_accuracy": {
            str(k): float(np.mean((ranking[:, :k] == y_true[:, None]).any(axis=1)))
            for k in top_k
            if k < num_classes
        },
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        report[f"{average}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return report


def _save(figure, path, dpi) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def _read_history(history) -> dict[str, list]:
    if isinstance(history, Mapping):
        return {key: list(values) for key, values in history.items()}
    if hasattr(history, "history") and isinstance(history.history, Mapping):  # keras History
        return _read_history(history.history)
    path = Path(history)
    if not path.exists():
        raise FileNotFoundError(f"No history CSV at {str(path)!r}")
    columns: dict[str, list] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    columns.setdefault(key, []).append(value)
    return columns


def plot_history(
    history,
    path: str | os.PathLike,
    *,
    kept_epoch: int | None = None,
    size_inches: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Training curves: one panel per metric (train and ``val_`` lines), plus the rate.

    Args:
        history: A ``history.csv`` path, a ``{name: [values per epoch]}`` dict, or a Keras
            ``History``. An ``epoch`` column is used as the x axis; phase changes (a
            ``phase`` column) are marked with a dotted line.
        path: PNG to write.
        size_inches: Figure size; default ``(4.5 x panels, 3.5)``.
        dpi: Pixels per inch.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> import tempfile, os
        >>> out = plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]},
        ...                    os.path.join(tempfile.mkdtemp(), "curves.png"))
        >>> out.suffix
        '.png'
    """
    from matplotlib.figure import Figure

    columns = _read_history(history)
    epochs = columns.pop("epoch", None)
    phases = columns.pop("phase", None)
    numeric = {
        key: values for key, values in columns.items()
        if values and all(isinstance(value, (int, float)) for value in values)
    }
    if not numeric:
        raise ValueError(f"No numeric history columns to plot. Received keys: {list(columns)}")
    length = len(next(iter(numeric.values())))
    # Counted from 1, as Keras' progress lines and effnet_tl's log do (the CSV counts from 0).
    epochs = [int(e) + 1 for e in epochs] if epochs is not None else list(range(1, length + 1))
    metrics = [key for key in numeric if not key.startswith("val_") and key != "learning_rate"]
    metrics += [key[4:] for key in numeric if key.startswith("val_") and key[4:] not in numeric]
    panels = metrics + (["learning_rate"] if "learning_rate" in numeric else [])
    figure = Figure(figsize=size_inches or (4.5 * len(panels), 3.5), dpi=dpi)
    axes_list = np.atleast_1d(figure.subplots(1, len(panels)))
    for axes, name in zip(axes_list, panels):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in numeric:
                axes.plot(epochs, numeric[key], marker="o", markersize=3, label=label)
        if kept_epoch is not None and kept_epoch in epochs:
            axes.axvline(kept_epoch, color="tab:green", linestyle="--", linewidth=1,
                         label="kept model" if name != "learning_rate" else None)
            if f"val_{name}" in numeric:
                axes.plot([kept_epoch], [numeric[f"val_{name}"][epochs.index(kept_epoch)]],
                          marker="*", markersize=12, color="tab:green")
        if name == "learning_rate":
            axes.set_yscale("log")
        if phases:
            for index in range(1, len(phases)):
                if phases[index] != phases[index - 1]:
                    axes.axvline(epochs[index] - 0.5, color="0.5", linestyle=":")
        axes.set_title(name)
        axes.set_xlabel("epoch")
        if name != "learning_rate":
            axes.legend()
    figure.tight_layout()
    return _save(figure, path, dpi)


def plot_confusion_matrix(
    cm,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    normalize: bool = True,
    size_inches: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Confusion matrix heat map (rows = true class, columns = predicted class).

    Args:
        cm: Square count matrix, e.g. ``classification_report(...)["confusion_matrix"]``.
        class_names: Row/column names.
        path: PNG to write.
        normalize: Colour by row fraction (recall per class) and print it; counts otherwise.
        size_inches: Default grows with the class count: ``max(4, 0.5 x classes + 2)`` square.
        dpi: Pixels per inch.

    Example:
        >>> import tempfile, os
        >>> plot_confusion_matrix([[3, 1], [0, 4]], ["a", "b"],
        ...                       os.path.join(tempfile.mkdtemp(), "cm.png")).name
        'cm.png'
    """
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype="float64")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(
            f"cm must be square with one row per class ({len(class_names)} names); "
            f"received shape {cm.shape}"
        )
    num_classes = len(class_names)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    side = max(4.0, 0.5 * num_classes + 2)
    figure = Figure(figsize=size_inches or (side, side), dpi=dpi)
    axes = figure.subplots()
    image = axes.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if num_classes <= 30:  # beyond that the numbers are unreadable anyway
        threshold = shown.max() / 2 if shown.size else 0
        for row in range(num_classes):
            for column in range(num_classes):
                value = shown[row, column]
                axes.text(column, row, f"{value:.2f}" if normalize else f"{int(value)}",
                          ha="center", va="center", fontsize=8,
                          color="white" if value > threshold else "black")
    axes.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
    figure.tight_layout()
    return _save(figure, path, dpi)


def confident_mistakes(y_true, y_prob, *, n: int = 16) -> np.ndarray:
    """Indices of wrong predictions, most confident (highest predicted probability) first.

    Example:
        >>> import numpy as np
        >>> confident_mistakes([0, 0, 1], np.array([[.2, .8], [.4, .6], [.1, .9]])).tolist()
        [0, 1]
    """
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        y_true = y_true.argmax(axis=1)
    y_prob = np.asarray(y_prob, dtype="float64")
    y_pred = y_prob.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    confidence = y_prob[wrong, y_pred[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order][:n]


def plot_confident_mistakes(
    images,
    y_true,
    y_prob,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    n: int = 16,
    columns: int = 4,
    tile_inches: float = 2.5,
    dpi: int = 100,
) -> Path:
    """Gallery of the ``n`` most confidently wrong images, titled "true → predicted (p)".

    Args:
        images: ``(examples, height, width, channels)`` float pixels in [0, 255] (the range
            effnet_tl models take); 1-channel images are shown in grey.
        y_true: Integer labels or one-hot.
        y_prob: Predicted probabilities ``(examples, classes)``.
        class_names: One name per class.
        path: PNG to write; size is ``columns x tile_inches`` by ``rows x tile_inches`` inches
            at ``dpi`` (one row when there are no mistakes, with a note).
        n: Most mistakes to show.
        columns: Tiles per row.
        tile_inches: Side of one tile.
        dpi: Pixels per inch.

    Example:
        >>> import numpy as np, tempfile, os
        >>> images = np.full((2, 8, 8, 3), 128.0)
        >>> plot_confident_mistakes(images, [0, 1], np.array([[.1, .9], [.2, .8]]), ["a", "b"],
        ...                         os.path.join(tempfile.mkdtemp(), "wrong.png")).suffix
        '.png'
    """
    from matplotlib.figure import Figure

    images = np.asarray(images)
    y_true_labels, y_prob = _labels_and_probs(y_true, y_prob, class_names)
    if len(images) != len(y_prob):
        raise ValueError(f"images has {len(images)} examples but y_prob has {len(y_prob)}.")
    picked = confident_mistakes(y_true_labels, y_prob, n=n)
    rows = max(1, math.ceil(len(picked) / columns))
    figure = Figure(figsize=(columns * tile_inches, rows * tile_inches), dpi=dpi)
    axes_grid = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for axes in axes_grid:
        axes.axis("off")
    if not len(picked):
        axes_grid[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    predicted = y_prob.argmax(axis=1)
    for axes, index in zip(axes_grid, picked):
        image = np.clip(images[index].astype("float64") / 255.0, 0.0, 1.0)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        axes.set_title(
            f"{class_names[y_true_labels[index]]} → {class_names[predicted[index]]} "
            f"({y_prob[index, predicted[index]]:.2f})",
            fontsize=8,
        )
    figure.tight_layout()
    return _save(figure, path, dpi)

"""The fit report: every validation (and test) image predicted once, then plots.

:func:`evaluate_splits` fills ``report.json``'s ``val``/``test`` sections (accuracy, top-k,
per-class precision/recall/F1, confusion matrix) and keeps the most confident mistakes;
:func:`write_plots` draws the curves (the kept epoch marked), the confusion matrix and those
mistakes into ``plots/``.
"""

from __future__ import annotations

import heapq

import numpy as np

from effnet_tl.report import (
    classification_report,
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_history,
)
from effnet_tl.train.callbacks import read_history
from effnet_tl.train.feature_cache import inference_function

__all__ = ["evaluate_splits", "plot_report", "write_plots"]

MISTAKES_SHOWN = 16


def _predict_split(predict, dataset, class_names, top_k):
    """Predict a split once: the report dict and the most confident mistakes (images kept)."""
    labels, probabilities = [], []
    mistakes: list = []  # min-heap of (confidence, counter, image, true, probs)
    counter = 0
    for images, batch_labels in dataset:
        probs = predict(images).numpy().astype("float64")
        truth = batch_labels.numpy().argmax(axis=1)
        labels.append(truth)
        probabilities.append(probs)
        wrong = np.flatnonzero(probs.argmax(axis=1) != truth)
        host_images = images.numpy() if len(wrong) else None  # one copy, not one op per image
        for index in wrong:
            item = (float(probs[index].max()), counter, host_images[index].copy(),
                    int(truth[index]), probs[index])
            counter += 1
            if len(mistakes) < MISTAKES_SHOWN:
                heapq.heappush(mistakes, item)
            else:
                heapq.heappushpop(mistakes, item)
    y_true = np.concatenate(labels) if labels else np.zeros(0, "int64")
    y_prob = np.concatenate(probabilities) if probabilities else np.zeros((0, len(class_names)))
    return classification_report(y_true, y_prob, class_names, top_k=top_k), \
        sorted(mistakes, reverse=True)


def evaluate_splits(model, splits: dict, class_names, top_k) -> tuple[dict, list]:
    """``{split: report or None}`` for ``splits`` (``{name: dataset or None}``), and the most
    confident mistakes of the last split evaluated (test when there is one)."""
    model.trainable = False  # inference only from here
    predict = inference_function(model)
    reports, mistakes = {}, []
    for name, dataset in splits.items():
        reports[name] = None
        if dataset is not None:
            reports[name], mistakes = _predict_split(predict, dataset, class_names, top_k)
    return reports, mistakes


def write_plots(paths, reports: dict, mistakes, class_names, *, kept_epoch: int | None) -> None:
    """``plots/history.png`` (kept epoch marked), ``confusion_matrix.png`` (test, else val),
    ``confident_mistakes.png``."""
    paths.plots.mkdir(parents=True, exist_ok=True)
    if read_history(paths.history):
        plot_history(paths.history, paths.history_plot, kept_epoch=kept_epoch)
    plot_report(reports.get("test") or reports["val"], mistakes, class_names,
                paths.confusion_plot, paths.mistakes_plot)


def plot_report(report: dict, mistakes, class_names, confusion_path, mistakes_path) -> None:
    """One split's confusion matrix and its most confident mistakes (from
    :func:`evaluate_splits`), as PNG files."""
    plot_confusion_matrix(report["confusion_matrix"], class_names, confusion_path)
    if mistakes:
        images = np.stack([m[2] for m in mistakes])
        y_true = np.array([m[3] for m in mistakes])
        y_prob = np.stack([m[4] for m in mistakes])
    else:
        images, y_true, y_prob = np.zeros((0, 8, 8, 3)), np.zeros(0, "int64"), \
            np.zeros((0, len(class_names)))
    plot_confident_mistakes(images, y_true, y_prob, class_names, mistakes_path)

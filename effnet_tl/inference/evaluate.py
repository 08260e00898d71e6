""":func:`evaluate`: the fit report of a trained run, on new data.

The same numbers as ``report.json``'s ``test`` section (accuracy, top-k, per-class precision,
recall and F1, confusion matrix) from the same code (:func:`effnet_tl.train.evaluation.
evaluate_splits` over :func:`effnet_tl.data.make_dataset`'s evaluation view), and the same
plots, written to ``<run>/evaluations/<data>-<split>/``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["evaluate", "labelled_examples"]

SPLITS = ("auto", "train", "val", "test")


def labelled_examples(data, class_names, *, split: str = "auto", val_fraction: float = 0.0,
                      seed: int = 0):
    """One split of ``data`` labelled in ``class_names``' order, bad files left out.

    Args:
        data: anything :func:`effnet_tl.data.resolve_source` reads (a folder of class folders,
            ``train/ val/ test/`` folders, a CSV, ``"tfds:NAME"``, ``(images, labels)``).
        class_names: the model's classes; every class of ``data`` must be one of them.
        split: ``"auto"`` (test, else val, else everything), ``"train"``, ``"val"``, ``"test"``.
        val_fraction, seed: the split of a source without a validation split (0: none).

    Returns:
        ``(examples, split name, skipped)``; ``skipped`` lists the doctor's ``FileIssue`` of
        every file left out.
    """
    from effnet_tl.data import resolve_source
    from effnet_tl.data.doctor import check_examples
    from effnet_tl.data.examples import ArrayExamples, FileExamples

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    source = resolve_source(data, val_fraction=val_fraction, seed=seed,
                            class_names=tuple(class_names))
    if split == "auto":
        split = next(name for name in ("test", "val", "train")
                     if getattr(source, name) is not None)
    examples = getattr(source, split)
    if examples is None:
        raise ValueError(f"{_shown(data)} has no {split} split (its splits: "
                         f"{', '.join(source.splits())})")
    unknown = [name for name in source.class_names if name not in class_names]
    if unknown:
        raise ValueError(f"{_shown(data)} has classes the model was not trained on: {unknown} "
                         f"(the model's classes: {list(class_names)})")
    skipped = []
    if isinstance(examples, FileExamples):
        examples, skipped = check_examples(examples)
    if tuple(source.class_names) != tuple(class_names):
        if not isinstance(examples, (FileExamples, ArrayExamples)):
            raise ValueError(f"{_shown(data)} lists its classes as {list(source.class_names)}, "
                             f"not in the model's order {list(class_names)}")
        order = np.asarray([list(class_names).index(name) for name in source.class_names])
        examples = dataclasses.replace(examples, labels=order[examples.labels],
                                       class_names=tuple(class_names))
    return examples, split, skipped


def _name(data) -> str:
    return os.fspath(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__


def _shown(data) -> str:
    return repr(_name(data)) if isinstance(data, (str, os.PathLike)) else _name(data)


def evaluate(run, data, *, split: str = "auto", top_k=None, batch_size: int = 64,
             tta: bool = False, output_dir: str | os.PathLike | None = None) -> dict:
    """Evaluate a trained run on new data: the fit report, its plots, written next to the run.

    Args:
        run: a run folder or the :class:`~effnet_tl.train.run.FitResult` of one.
        data: labelled images (see :func:`labelled_examples`); files the doctor rejects are
            left out and listed under ``"skipped"``.
        split: which split of ``data``: ``"auto"`` takes the test split, else the validation
            split, else every image.
        top_k: k values of the top-k accuracy (default: the run's ``top_k``).
        batch_size: images per forward pass.
        tta: average each image with its left-right mirror (see ``FitResult.predict``).
        output_dir: where ``report.json`` and the plots go (default:
            ``<run>/evaluations/<data name>-<split>/``).

    Returns:
        The report ``fit`` writes for its test split (``accuracy``, ``top_k_accuracy``,
        ``per_class``, ``confusion_matrix``, ...) plus ``split``, ``data``, ``skipped``,
        ``tta`` and ``files`` (the report and plots written).

    Example (not run here: it needs a trained run):
        >>> report = effnet_tl.evaluate("runs/flowers-b0", "photos/new")  # doctest: +SKIP
        >>> report["accuracy"], report["files"]["confusion_matrix"]        # doctest: +SKIP
    """
    from effnet_tl.data.pipeline import make_dataset
    from effnet_tl.inference.images import eval_policy
    from effnet_tl.inference.predict import check_tta, flip_averaged
    from effnet_tl.train.evaluation import evaluate_splits, plot_report
    from effnet_tl.train.run import FitResult, default_run_name, load_run, write_json

    result = run if isinstance(run, FitResult) else load_run(run)
    settings = result.config.get("settings", {})
    top_k = tuple(settings.get("run", {}).get("top_k") or (3, 5)) if top_k is None else top_k
    examples, split, skipped = labelled_examples(data, result.class_names, split=split)
    if len(examples) == 0:
        raise ValueError(f"no usable images in the {split} split of {_shown(data)}"
                         + (f" ({len(skipped)} files skipped)" if skipped else ""))
    if tta:
        check_tta(result.config)
    model = flip_averaged(result.model) if tta else result.model
    dataset = make_dataset(examples, image_size=result.image_size, batch_size=batch_size,
                           training=False, cache=None,
                           resize=eval_policy(settings.get("data", {}).get("resize")))
    dataset = _in_pixel_range(dataset, examples)
    reports, mistakes = evaluate_splits(model, {split: dataset}, result.class_names, top_k)
    report = reports[split]

    out = Path(output_dir) if output_dir is not None else \
        result.paths.evaluations / default_run_name(data, split)
    files = {"report": out / "report.json", "confusion_matrix": out / "confusion_matrix.png",
             "confident_mistakes": out / "confident_mistakes.png"}
    out.mkdir(parents=True, exist_ok=True)
    plot_report(report, mistakes, result.class_names, files["confusion_matrix"],
                files["confident_mistakes"])
    report = {**report, "split": split, "data": _name(data), "tta": tta,
              "skipped": [{"path": issue.path, "reason": issue.reason} for issue in skipped],
              "files": {name: str(path) for name, path in files.items()}}
    write_json(files["report"], report)
    return report


def _in_pixel_range(dataset, examples):
    """Arrays in [0, 1] are multiplied by 255 with a warning, as prediction does."""
    from effnet_tl.data.examples import ArrayExamples
    from effnet_tl.train.run import UNIT_RANGE_MESSAGE, looks_unit_range

    if not isinstance(examples, ArrayExamples) or not looks_unit_range(examples.images[:256]):
        return dataset
    warnings.warn(UNIT_RANGE_MESSAGE.format(action="Multiplied them by 255."), stacklevel=3)
    return dataset.map(lambda images, labels: (images * 255.0, labels))

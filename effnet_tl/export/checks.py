"""Every export is checked against the Keras model on real images before it is called done.

The check images are the run's test split (else its validation split, rebuilt with the run's
seed), or a labelled folder the user names; at most :data:`CHECK_IMAGES` of them, a seeded
sample. The Keras model reads their pixels through the evaluation pipeline; the SavedModel reads
the files' bytes; the TFLite and ONNX models read the same pixels as the Keras model. The int8
model is calibrated on :data:`REPRESENTATIVE_IMAGES` training images.

What must hold (:data:`RULES`): float exports give the same probabilities to 1e-4; float16
agrees on the top class for 99 % of the images, int8 for 95 % (its accuracy drop is recorded).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from effnet_tl.export.converters import ExportError

__all__ = ["RULES", "CheckSet", "check_set", "judge", "measure", "representative_pixels"]

CHECK_IMAGES = 200
REPRESENTATIVE_IMAGES = 100
# kind: (measure, bound, "max" (at most) or "min" (at least))
RULES = {
    "savedmodel": ("max_abs_diff", 1e-4, "max"),
    "tflite-float32": ("max_abs_diff", 1e-4, "max"),
    "onnx": ("max_abs_diff", 1e-4, "max"),
    "tflite-float16": ("top1_agreement", 0.99, "min"),
    "tflite-int8": ("top1_agreement", 0.95, "min"),
}


@dataclasses.dataclass
class CheckSet:
    """Labelled images to compare a model and its export on.

    Attributes:
        source: where they came from (``"<dataset> (test split)"``).
        sources: one path (or ``"<array i>"``) per image.
        encoded: each image's file bytes (arrays: encoded as PNG).
        pixels: float32 ``(N, H, W, 3)`` as the Keras model reads them.
        labels: class indices in the model's order.
    """

    source: str
    sources: tuple[str, ...]
    encoded: list[bytes]
    pixels: np.ndarray
    labels: np.ndarray


def _run_data(result, data):
    """``(data, val_fraction, seed)`` of the check images: ``data``, else the run's dataset."""
    if data is not None:
        return data, 0.0, 0
    source = result.config.get("source", {})
    recorded = source.get("dataset")
    settings = result.config.get("settings", {}).get("data", {})
    if source.get("kind") in ("arrays", "dataset", "dataframe") or not recorded:
        raise ExportError(f"the run was trained on {source.get('kind', 'unrecorded')} data, which "
                          "an export cannot reread to check itself; pass labelled images "
                          "(--data DIR, or data=)")
    if not recorded.startswith("tfds:") and not Path(recorded).exists():
        raise ExportError(f"the run's dataset {recorded!r} (config.json) is not found from "
                          f"{os.getcwd()}; pass labelled images to check the export on "
                          "(--data DIR, or data=)")
    return recorded, settings.get("val_fraction", 0.2), settings.get("seed", 0)


def _sample(examples, limit: int, seed: int = 0):
    if limit is None or len(examples) <= limit:
        return examples
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return examples.subset(chosen)


def _materialised(examples, image_size, resize, limit):
    """File and array examples as they are; a tf.data stream's first ``limit`` as arrays."""
    from effnet_tl.data.examples import DatasetExamples
    from effnet_tl.data.pipeline import to_memory

    if not isinstance(examples, DatasetExamples):
        return examples
    head = DatasetExamples(examples.dataset.take(limit), examples.class_names)
    return to_memory(head, image_size=image_size, resize=resize)


def _examples(result, data, split, limit):
    from effnet_tl.inference.evaluate import labelled_examples
    from effnet_tl.inference.images import eval_policy

    data, val_fraction, seed = _run_data(result, data)
    examples, split, _ = labelled_examples(data, result.class_names, split=split,
                                           val_fraction=val_fraction, seed=seed)
    resize = eval_policy(result.config.get("settings", {}).get("data", {}).get("resize"))
    examples = _sample(_materialised(examples, result.image_size, resize, limit), limit)
    if not len(examples):
        raise ExportError(f"no usable images in the {split} split of {data!r} to check on")
    name = data if isinstance(data, (str, os.PathLike)) else type(data).__name__
    return examples, f"{os.fspath(name)} ({split} split)", resize


def check_set(result, data=None, *, limit: int = CHECK_IMAGES) -> CheckSet:
    """The check images of ``result`` (a ``FitResult``): see the module docstring."""
    import tensorflow as tf

    from effnet_tl.data.examples import FileExamples
    from effnet_tl.inference.images import read_pixels
    from effnet_tl.train.run import prepare_images

    examples, source, resize = _examples(result, data, "auto", limit)
    if isinstance(examples, FileExamples):
        encoded = [Path(path).read_bytes() for path in examples.paths]
        pixels = read_pixels(examples.paths, result.image_size, resize=resize)
        sources = examples.paths
    else:  # arrays: what the SavedModel reads is their PNG, so both sides see whole numbers
        images = np.clip(np.rint(np.asarray(examples.images, np.float32)), 0, 255) \
            .astype(np.uint8)
        encoded = [tf.io.encode_png(image).numpy() for image in images]
        pixels = prepare_images(images, result.image_size, resize=resize)
        sources = tuple(f"<array {i}>" for i in range(len(images)))
    return CheckSet(source, tuple(sources), encoded, pixels, examples.labels)


def representative_pixels(result, data=None, *, limit: int = REPRESENTATIVE_IMAGES):
    """Up to ``limit`` training images as the model reads them: int8 calibration data.

    With ``data`` given, its train split, else all of it.
    """
    from effnet_tl.data.examples import FileExamples
    from effnet_tl.inference.images import read_pixels
    from effnet_tl.train.run import prepare_images

    examples, _, resize = _examples(result, data, "train", limit)
    if isinstance(examples, FileExamples):
        return read_pixels(examples.paths, result.image_size, resize=resize)
    return prepare_images(examples.images, result.image_size, resize=resize)


def measure(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict:
    """How far ``candidate`` probabilities are from ``reference`` (the Keras model's).

    Example:
        >>> keras_p = np.array([[0.9, 0.1], [0.4, 0.6]])
        >>> m = measure(keras_p, np.array([[0.8, 0.2], [0.6, 0.4]]), np.array([0, 1]))
        >>> round(m["max_abs_diff"], 3), m["top1_agreement"], m["accuracy_drop"]
        (0.2, 0.5, 0.5)
    """
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ExportError(f"the export returned probabilities of shape {candidate.shape}; the "
                          f"Keras model {reference.shape}")
    keras_top, export_top = reference.argmax(axis=1), candidate.argmax(axis=1)
    keras_accuracy = float(np.mean(keras_top == labels))
    export_accuracy = float(np.mean(export_top == labels))
    return {
        "images": len(reference),
        "max_abs_diff": float(np.abs(candidate - reference).max()),
        "mean_abs_diff": float(np.abs(candidate - reference).mean()),
        "top1_agreement": float(np.mean(keras_top == export_top)),
        "keras_accuracy": keras_accuracy,
        "export_accuracy": export_accuracy,
        "accuracy_drop": keras_accuracy - export_accuracy,
    }


def judge(kind: str, measures: dict) -> dict:
    """``{"rule": "max_abs_diff <= 0.0001", "passed": bool}`` for an export kind.

    Example:
        >>> judge("tflite-int8", {"top1_agreement": 0.97})
        {'rule': 'top1_agreement >= 0.95', 'passed': True}
    """
    name, bound, side = RULES[kind]
    value = measures[name]
    passed = value <= bound if side == "max" else value >= bound
    return {"rule": f"{name} {'<=' if side == 'max' else '>='} {bound:g}", "passed": bool(passed)}

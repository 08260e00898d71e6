"""Sources already in memory or in TensorFlow: ``(images, labels)`` arrays and a
``tf.data.Dataset`` (``"tfds:NAME"`` lives in :mod:`effnet_tl.data.tfds_source`).
"""

from __future__ import annotations

import numpy as np

from effnet_tl.data.classes import sorted_class_names
from effnet_tl.data.examples import (
    ArrayExamples,
    DatasetExamples,
    DatasetSource,
    _split_examples,
)


def _from_arrays(images, labels, class_names, val_fraction, seed) -> DatasetSource:
    labels = np.asarray(labels)
    if labels.ndim == 2:  # one-hot
        if class_names is None:
            class_names = [str(i) for i in range(labels.shape[1])]
        labels = labels.argmax(axis=1)
    if labels.dtype.kind in "iu":
        if class_names is None:
            class_names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
        names = tuple(str(c) for c in class_names)
        indices = labels.astype(np.int64)
    else:
        names = (
            tuple(class_names) if class_names is not None else sorted_class_names(labels.tolist())
        )
        position = {name: i for i, name in enumerate(names)}
        missing = sorted({str(v) for v in labels.tolist()} - set(position))
        if missing:
            raise ValueError(f"labels {missing} are not in class_names {list(names)}")
        indices = np.asarray([position[str(v)] for v in labels.tolist()], np.int64)
    examples = ArrayExamples(np.asarray(images), indices, names)
    train, val = _split_examples(examples, val_fraction, seed)
    notes = [f"val: {val_fraction:.0%} of each class, seeded (seed={seed})"] if val else []
    return DatasetSource("arrays", names, train, val, notes=notes)


def _is_tf_dataset(value) -> bool:
    module = type(value).__module__
    if not module.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(value, tf.data.Dataset)


def _from_tf_dataset(dataset, class_names, val_fraction) -> DatasetSource:
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            f"a tf.data.Dataset source must yield (image, label) pairs; its element_spec is {spec}"
        )
    label_spec = spec[1]
    if class_names is None:
        if label_spec.shape.rank == 1 and label_spec.shape[0] is not None:
            class_names = [str(i) for i in range(label_spec.shape[0])]
        else:
            raise ValueError(
                "a tf.data.Dataset with integer labels needs class_names=[...] "
                "(the class count cannot be read from a stream)"
            )
    names = tuple(str(c) for c in class_names)
    cardinality = int(dataset.cardinality())
    known = cardinality if cardinality >= 0 else None
    if known is None or val_fraction <= 0:
        notes = (
            ["val: none (pass a separate dataset, the stream length is unknown)"]
            if val_fraction > 0
            else []
        )
        return DatasetSource("dataset", names, DatasetExamples(dataset, names, known), notes=notes)
    val_count = int(round(known * val_fraction))
    # A stream cannot be stratified without reading it; the tail is taken, as Keras's
    # validation_split does.
    train = DatasetExamples(dataset.take(known - val_count), names, known - val_count)
    val = DatasetExamples(dataset.skip(known - val_count), names, val_count)
    return DatasetSource(
        "dataset", names, train, val, notes=[f"val: last {val_count} of {known} elements"]
    )

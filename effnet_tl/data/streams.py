"""Sources already in memory or in TensorFlow: ``(images, labels)`` arrays, a ``tf.data.Dataset``
and a prepared TensorFlow Datasets dataset (``"tfds:NAME"``, never downloaded).
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


def _from_tfds(name: str, data_dir, val_fraction: float) -> DatasetSource:
    import tensorflow_datasets as tfds

    data_dir = str(data_dir) if data_dir is not None else None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError subclasses
        raise ValueError(f"unknown TensorFlow Datasets name {name!r}: {error}") from error
    if not builder.is_prepared():
        looked = builder.data_dir
        raise FileNotFoundError(
            f"TensorFlow Datasets dataset {name!r} is not available offline: nothing prepared at "
            f"{looked}. On a machine with internet run "
            f"`tensorflow_datasets.builder({name!r}, data_dir=DIR).download_and_prepare()` "
            f"(or `tfds build {name} --data_dir=DIR`), then pass data_dir=DIR."
        )
    info = builder.info
    label_feature = info.features["label"]
    names = tuple(str(n) for n in label_feature.names)
    available = set(info.splits.keys())

    def load(split: str, count: int) -> DatasetExamples:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
        dataset = dataset.map(lambda item: (item["image"], item["label"]))
        return DatasetExamples(dataset, names, count)

    val_name = next((s for s in ("validation", "valid", "val") if s in available), None)
    if "train" not in available:
        raise ValueError(f"tfds:{name} has no 'train' split (splits: {sorted(available)})")
    n_train = info.splits["train"].num_examples
    notes = [f"tfds:{name} from {builder.data_dir}"]
    if val_name is not None:
        train = load("train", n_train)
        val = load(val_name, info.splits[val_name].num_examples)
    elif val_fraction > 0:
        percent = int(round(100 * (1 - val_fraction)))
        train_split, val_split = f"train[:{percent}%]", f"train[{percent}%:]"
        train = load(train_split, info.splits[train_split].num_examples)
        val = load(val_split, info.splits[val_split].num_examples)
        notes.append(f"val: {val_split} (tfds slicing, not stratified)")
    else:
        train, val = load("train", n_train), None
    test = load("test", info.splits["test"].num_examples) if "test" in available else None
    return DatasetSource("tfds", names, train, val, test, root=builder.data_dir, notes=notes)

"""Class names: stable sorted order, ``labels.json`` for a run, and the num_classes check.

The class index of a folder is its position in the sorted list of folder names, exactly as
``keras.utils.image_dataset_from_directory`` orders them, so a model trained here and a folder
read by Keras agree on what label 3 means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

LABELS_FILENAME = "labels.json"


def sorted_class_names(names: Iterable) -> tuple[str, ...]:
    """Return unique class names in a stable order, as strings.

    Integers sort numerically (so ``10`` follows ``9``); anything else sorts by its string.

    Example:
        >>> sorted_class_names(["dog", "cat", "dog"])
        ('cat', 'dog')
        >>> sorted_class_names([10, 2, 9])
        ('2', '9', '10')
    """
    unique = set(names)
    if unique and all(_is_int(name) for name in unique):
        return tuple(str(name) for name in sorted(int(name) for name in unique))
    return tuple(sorted(str(name) for name in unique))


def _is_int(value) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def validate_num_classes(num_classes) -> int:
    """Return ``num_classes`` as an int, or raise: the one class-count check of the package.

    A classifier needs at least two classes (one class is not a classification problem, and a
    softmax over one output is constant). Python ints and NumPy integers are accepted; bools,
    floats, strings and ``None`` are not.

    Raises:
        ValueError: echoing the value and saying that an integer >= 2 is accepted.

    Example:
        >>> validate_num_classes(5)
        5
        >>> validate_num_classes(1)
        Traceback (most recent call last):
        ...
        ValueError: num_classes=1 is not a class count; accepted: an integer >= 2
    """
    import numbers

    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 2
    ):
        raise ValueError(
            f"num_classes={num_classes!r} is not a class count; accepted: an integer >= 2"
        )
    return int(num_classes)


def check_num_classes(
    class_names: Sequence[str], num_classes: int | None, *, what: str = "dataset_dir"
) -> None:
    """Raise ``ValueError`` when ``num_classes`` disagrees with the classes found.

    Called before any training so that a wrong class count fails in a second, not after an epoch.

    Args:
        class_names: the classes found (folder names for a folder source).
        num_classes: what the user asked for (checked by :func:`validate_num_classes`);
            ``None`` skips the check.
        what: how to name the source in the message.

    Example:
        >>> check_num_classes(["a", "b"], 2)
        >>> check_num_classes(["a", "b"], 3)
        Traceback (most recent call last):
        ...
        ValueError: num_classes=3 but dataset_dir has 2 class folders: ['a', 'b']
    """
    if num_classes is None:
        return
    num_classes = validate_num_classes(num_classes)
    names = list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but {_found(names, what)}")


def _found(names: list, what: str) -> str:
    """"dataset_dir has 3 class folders: [...]" (saying why, when there are too few)."""
    folders = "class folder" if len(names) == 1 else "class folders"
    fewer = "; a classifier needs at least 2 classes, one folder each" if len(names) < 2 else ""
    return f"{what} has {len(names)} {folders}: {names}{fewer}"


def class_count(class_names: Sequence[str], num_classes: int | None, *,
                what: str = "dataset_dir") -> int:
    """The number of classes to train: ``num_classes`` checked against the classes found, or,
    when it is ``None``, the classes found counted (at least 2).

    Example:
        >>> class_count(["cat", "dog", "fox"], None), class_count(["cat", "dog"], 2)
        (3, 2)
        >>> class_count(["cat"], None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: dataset_dir has 1 class folder: ['cat']; a classifier needs at least 2 ...
    """
    if num_classes is not None:
        check_num_classes(class_names, num_classes, what=what)
        return int(num_classes)
    names = list(class_names)
    if len(names) < 2:
        raise ValueError(_found(names, what))
    return len(names)


def write_labels(path: str | Path, class_names: Sequence[str]) -> Path:
    """Write ``labels.json`` (``{"class_names": [...], "num_classes": n}``).

    ``path`` may be a run folder (the file is written inside it as ``labels.json``) or a file path.
    ``gs://`` paths are written through ``tf.io.gfile``.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> p = write_labels(run, ["cat", "dog"])
        >>> read_labels(p)
        ('cat', 'dog')
    """
    target = _labels_path(path)
    payload = {"class_names": [str(name) for name in class_names], "num_classes": len(class_names)}
    text = json.dumps(payload, indent=2) + "\n"
    if str(target).startswith("gs://"):
        import tensorflow as tf

        with tf.io.gfile.GFile(str(target), "w") as handle:
            handle.write(text)
        return target
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read class names written by :func:`write_labels` (a folder or the file itself).

    A bare JSON list of names is accepted too.
    """
    target = _labels_path(path)
    if str(target).startswith("gs://"):
        import tensorflow as tf

        with tf.io.gfile.GFile(str(target), "r") as handle:
            payload = json.loads(handle.read())
    else:
        payload = json.loads(Path(target).read_text(encoding="utf-8"))
    names = payload["class_names"] if isinstance(payload, dict) else payload
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{target}: expected a list of class-name strings, got {names!r}")
    if isinstance(payload, dict) and payload.get("num_classes", len(names)) != len(names):
        raise ValueError(
            f"{target}: num_classes={payload['num_classes']} but {len(names)} class_names"
        )
    return tuple(names)


def _labels_path(path: str | Path):
    text = str(path)
    if text.endswith(".json"):
        return text if text.startswith("gs://") else Path(text)
    if text.startswith("gs://"):
        return text.rstrip("/") + "/" + LABELS_FILENAME
    return Path(text) / LABELS_FILENAME

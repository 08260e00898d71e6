"""Turn whatever the user has into class names and per-split examples.

One function, :func:`resolve_source`, decides the source kind from what it is given:

- a folder of class sub-folders: ``"folder"``, with a seeded, stratified train/val split;
- a folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``), optional ``test/``:
  ``"split_folder"``;
- a ``*.csv`` path or a ``pandas.DataFrame`` of (path, label[, split]) rows: ``"csv"`` /
  ``"dataframe"``;
- ``"tfds:NAME"``: ``"tfds"``, a TensorFlow Datasets dataset, downloaded and prepared on first
  use as ``tfds.load`` does (``download=False`` forbids it);
- ``(images, labels)`` arrays: ``"arrays"``;
- a ``tf.data.Dataset`` of (image, label): ``"dataset"``.

This module owns that dispatch; each kind is listed by its own module (``folders``,
``tables``, ``streams``, ``tfds_source``) into the containers of
:mod:`effnet_tl.data.examples`, whose public names are importable from here too. Nothing is
decoded here; :func:`effnet_tl.data.scan` judges file contents.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from effnet_tl.data.classes import check_num_classes
from effnet_tl.data.examples import (
    SPLIT_ALIASES,
    ArrayExamples,
    DatasetExamples,
    DatasetSource,
    Examples,
    FileExamples,
    stratified_split,
)
from effnet_tl.data.folders import (
    SYSTEM_DIR_NAMES,
    SYSTEM_FILE_NAMES,
    _from_folder,
    is_hidden_or_system,
)
from effnet_tl.data.streams import _from_arrays, _from_tf_dataset, _is_tf_dataset
from effnet_tl.data.tables import LABEL_COLUMNS, PATH_COLUMNS, _from_frame
from effnet_tl.data.tfds_source import from_tfds

__all__ = [
    "ArrayExamples",
    "DatasetExamples",
    "DatasetSource",
    "Examples",
    "FileExamples",
    "LABEL_COLUMNS",
    "PATH_COLUMNS",
    "SPLIT_ALIASES",
    "SYSTEM_DIR_NAMES",
    "SYSTEM_FILE_NAMES",
    "check_path_source",
    "is_hidden_or_system",
    "resolve_source",
    "stratified_split",
]


def resolve_source(
    source,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> DatasetSource:
    """Decide what ``source`` is and list its classes and examples per split.

    Args:
        source: a folder path, a CSV path, a ``pandas.DataFrame``, ``"tfds:NAME"``, an
            ``(images, labels)`` tuple of arrays, or a ``tf.data.Dataset`` of (image, label).
        val_fraction: fraction of each class moved to ``val`` when the source has no
            validation split (seeded and stratified; 0 means no ``val``).
        seed: seed of that split.
        num_classes: when given, checked against the classes found (``ValueError`` if different).
        class_names: names for integer labels of arrays and datasets.
        root: base folder for relative paths in a DataFrame (a CSV's own folder by default).
        data_dir: TensorFlow Datasets data folder for ``"tfds:NAME"`` (``None``: tfds' default,
            ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        download: download and prepare a ``"tfds:NAME"`` dataset missing from ``data_dir``;
            ``False`` fails at once, naming the ``tfds build`` command that prepares it.

    Returns:
        A :class:`DatasetSource`.

    Example:
        >>> import numpy as np
        >>> src = resolve_source((np.zeros((10, 8, 8, 3), np.uint8), [0, 1] * 5), val_fraction=0.2)
        >>> src.kind, src.class_names, len(src.train), len(src.val)
        ('arrays', ('0', '1'), 8, 2)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    resolved = _resolve(source, val_fraction, seed, class_names, root, data_dir, download)
    check_num_classes(resolved.class_names, num_classes, what=resolved.described)
    return resolved


#: Files read as a table of paths and labels.
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def check_path_source(source) -> None:
    """Fail for a path that cannot be a dataset (missing, or a file that is not a table).

    Reads nothing but the file system, so the command line checks it before TensorFlow loads.
    Anything that is not a path (``tfds:NAME``, arrays, a ``tf.data.Dataset``) passes.

    Example:
        >>> check_path_source("tfds:mnist"); check_path_source("/no/such/folder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: dataset source '/no/such/folder' does not exist
    """
    if not isinstance(source, (str, os.PathLike)) or str(source).startswith("tfds:"):
        return
    path = Path(source)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in TABLE_SUFFIXES):
        return
    if not path.exists():
        raise FileNotFoundError(f"dataset source {str(source)!r} does not exist")
    raise ValueError(f"cannot use {str(source)!r} as a dataset: "
                     "expected a folder, a .csv file or 'tfds:NAME'")


def _resolve(source, val_fraction, seed, class_names, root, data_dir, download) -> DatasetSource:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(source, pd.DataFrame):
        base = Path(root) if root is not None else Path.cwd()
        return _from_frame(source, base, "dataframe", None, val_fraction, seed)
    if isinstance(source, str) and source.startswith("tfds:"):
        return from_tfds(source[len("tfds:") :], data_dir=data_dir, download=download,
                         val_fraction=val_fraction, seed=seed)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _from_folder(path, val_fraction, seed)
        if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            import pandas as pd

            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep)
            base = Path(root) if root is not None else path.parent
            return _from_frame(frame, base, "csv", str(path), val_fraction, seed)
        check_path_source(source)
    if _is_tf_dataset(source):
        return _from_tf_dataset(source, class_names, val_fraction)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return _from_arrays(source[0], source[1], class_names, val_fraction, seed)
    raise TypeError(
        f"cannot use a {type(source).__name__} as a dataset source; pass a folder, a CSV path, "
        "a DataFrame, 'tfds:NAME', an (images, labels) tuple or a tf.data.Dataset"
    )

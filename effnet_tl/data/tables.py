"""Table sources: a CSV/TSV file or a ``pandas.DataFrame`` of (path, label[, split]) rows.

The path and label columns are found by name (``PATH_COLUMNS``, ``LABEL_COLUMNS``), else by
position; an optional ``split`` column assigns rows to ``train``/``val``/``test``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from effnet_tl.data.classes import sorted_class_names
from effnet_tl.data.examples import (
    SPLIT_ALIASES,
    DatasetSource,
    FileExamples,
    _split_examples,
)
from effnet_tl.data.folders import is_hidden_or_system

PATH_COLUMNS = ("path", "filepath", "file_path", "filename", "file", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target")


def _pick_column(columns, candidates, fallback_position, what):
    lowered = {str(c).lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if len(columns) >= 2:
        return columns[fallback_position]
    raise ValueError(
        f"cannot find a {what} column among {list(columns)}; expected one of {candidates}"
    )


def _from_frame(frame, base: Path, kind, origin, val_fraction, seed) -> DatasetSource:
    columns = list(frame.columns)
    path_col = _pick_column(columns, PATH_COLUMNS, 0, "path")
    label_col = _pick_column(columns, LABEL_COLUMNS, 1, "label")
    split_col = {str(c).lower(): c for c in columns}.get("split")
    frame = frame.dropna(subset=[path_col, label_col])
    raw_labels = frame[label_col].tolist()
    names = sorted_class_names(raw_labels)
    index = {name: i for i, name in enumerate(names)}
    labels = np.asarray([index[str(v)] for v in raw_labels], np.int64)
    paths = [
        p if os.path.isabs(p) or "://" in p else str(base / p)
        for p in (str(v) for v in frame[path_col].tolist())
    ]
    ignored = [p for p in paths if is_hidden_or_system(os.path.basename(p))]
    keep = np.asarray([not is_hidden_or_system(os.path.basename(p)) for p in paths], bool)
    all_examples = FileExamples(tuple(paths), labels, names).subset(np.flatnonzero(keep))
    root = origin if origin is not None else str(base)
    if split_col is None:
        train, val = _split_examples(all_examples, val_fraction, seed)
        notes = [f"val: {val_fraction:.0%} of each class, seeded (seed={seed})"] if val else []
        return DatasetSource(kind, names, train, val, root=root, ignored_files=ignored, notes=notes)
    split_values = np.asarray([str(v).strip().lower() for v in frame[split_col].tolist()])[keep]
    unknown = sorted(set(split_values) - set(SPLIT_ALIASES))
    if unknown:
        raise ValueError(f"unknown split values {unknown} in column {split_col!r}")
    canonical = np.asarray([SPLIT_ALIASES[v] for v in split_values])
    per_split = {
        split: all_examples.subset(np.flatnonzero(canonical == split))
        for split in ("train", "val", "test")
        if (canonical == split).any()
    }
    if "train" not in per_split:
        raise ValueError(f"column {split_col!r} has no 'train' rows")
    train, val = per_split["train"], per_split.get("val")
    notes = [f"splits from column {split_col!r}"]
    if val is None:
        train, val = _split_examples(train, val_fraction, seed)
    return DatasetSource(
        kind,
        names,
        train,
        val,
        per_split.get("test"),
        root=root,
        ignored_files=ignored,
        notes=notes,
    )

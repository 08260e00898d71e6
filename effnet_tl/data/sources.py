"""Turn whatever the user has into class names and per-split examples.

One function, :func:`resolve_source`, decides the source kind from what it is given:

- a folder of class sub-folders: ``"folder"``, with a seeded, stratified train/val split;
- a folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``), optional ``test/``:
  ``"split_folder"``;
- a ``*.csv`` path or a ``pandas.DataFrame`` of (path, label[, split]) rows: ``"csv"`` /
  ``"dataframe"``;
- ``"tfds:NAME"``: ``"tfds"``, a TensorFlow Datasets dataset already prepared (never downloads);
- ``(images, labels)`` arrays: ``"arrays"``;
- a ``tf.data.Dataset`` of (image, label): ``"dataset"``.

Nothing is decoded here; :func:`effnet_tl.data.scan` judges file contents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from effnet_tl.data.classes import check_num_classes, sorted_class_names

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
# Files and folders that operating systems and tools drop into image folders; never images,
# never classes. ``._*`` (macOS AppleDouble) and ``.DS_Store`` are covered by the leading dot.
SYSTEM_FILE_NAMES = {"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"}
SYSTEM_DIR_NAMES = {"__macosx", "$recycle.bin", "system volume information", "@eadir"}
PATH_COLUMNS = ("path", "filepath", "file_path", "filename", "file", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target")


def is_hidden_or_system(name: str) -> bool:
    """True for ``.DS_Store``, ``._photo.jpg``, ``Thumbs.db``, ``desktop.ini``, ``__MACOSX``...

    Example:
        >>> [is_hidden_or_system(n) for n in ["._a.jpg", "Thumbs.db", "a.jpg"]]
        [True, True, False]
    """
    lowered = name.lower()
    return (
        name.startswith(".")
        or name.startswith("~$")
        or lowered in SYSTEM_FILE_NAMES
        or lowered in SYSTEM_DIR_NAMES
    )


@dataclass(frozen=True, eq=False)
class FileExamples:
    """Image files with integer labels, one split.

    Attributes:
        paths: file paths (strings; local or any ``tf.io.gfile`` scheme).
        labels: int64 class indices into ``class_names``.
        class_names: all classes of the source, in label order.
        decoders: per-file decode route set by the doctor (``"jpeg"``, ``"png"`` for TensorFlow's
            fast decoders, ``"pillow"`` for files that need conversion), or ``None`` when the
            files have not been checked yet.
        sizes: per-file (height, width) as displayed (EXIF orientation applied), set by the
            doctor; lets the pipeline compute centre crops without decoding first.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    decoders: tuple[str, ...] | None = None
    sizes: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        if self.decoders is not None and len(self.decoders) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(self.decoders)} decoders")
        if self.sizes is not None:
            sizes = np.asarray(self.sizes, dtype=np.int64).reshape(-1, 2)
            if len(sizes) != len(self.paths):
                raise ValueError(f"{len(self.paths)} paths but {len(sizes)} sizes")
            object.__setattr__(self, "sizes", sizes)
        _check_label_range(self.labels, self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def checked(self) -> bool:
        return self.decoders is not None

    def subset(self, indices) -> "FileExamples":
        indices = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            paths=tuple(self.paths[i] for i in indices),
            labels=self.labels[indices],
            decoders=None if self.decoders is None else tuple(self.decoders[i] for i in indices),
            sizes=None if self.sizes is None else self.sizes[indices],
        )


@dataclass(frozen=True, eq=False)
class ArrayExamples:
    """In-memory images ``(N, H, W, C)`` (C in 1, 3, 4; uint8 or float in [0, 255]) with labels."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        images = np.asarray(self.images)
        if images.ndim == 3:  # (N, H, W) grayscale
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(f"images must be (N, H, W[, 1|3|4]); got shape {images.shape}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(images) != len(self.labels):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        _check_label_range(self.labels, self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices) -> "ArrayExamples":
        indices = np.asarray(indices, dtype=np.int64)
        return replace(self, images=self.images[indices], labels=self.labels[indices])


@dataclass(frozen=True, eq=False)
class DatasetExamples:
    """A ``tf.data.Dataset`` of ``(image HxWxC, label)``; label an int index or a one-hot vector.

    Attributes:
        dataset: the unbatched dataset.
        class_names: class names in label order.
        num_examples: element count when known, else ``None``.
    """

    dataset: Any
    class_names: tuple[str, ...]
    num_examples: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def __len__(self) -> int:
        if self.num_examples is None:
            raise TypeError("this dataset's length is unknown")
        return self.num_examples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


Examples = FileExamples | ArrayExamples | DatasetExamples


@dataclass(eq=False)
class DatasetSource:
    """A resolved source: class names and examples per split (``train``, ``val``, ``test``).

    Attributes:
        kind: ``"folder"``, ``"split_folder"``, ``"csv"``, ``"dataframe"``, ``"tfds"``,
            ``"arrays"`` or ``"dataset"``.
        class_names: classes in label order.
        train, val, test: examples per split; ``val`` and ``test`` may be ``None``.
        root: the folder (or CSV file) the source came from, if any.
        ignored_files: hidden and system files that were skipped while listing.
        unlabelled_files: files outside any class folder.
        empty_class_folders: per split, class folders holding no files.
        notes: how splits were made, for the report.
    """

    kind: str
    class_names: tuple[str, ...]
    train: Examples
    val: Examples | None = None
    test: Examples | None = None
    root: str | None = None
    ignored_files: list[str] = field(default_factory=list)
    unlabelled_files: list[str] = field(default_factory=list)
    empty_class_folders: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def splits(self) -> dict[str, Examples]:
        """The non-empty splits in order train, val, test."""
        out = {"train": self.train, "val": self.val, "test": self.test}
        return {name: ex for name, ex in out.items() if ex is not None}


def resolve_source(
    source,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
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
        data_dir: TensorFlow Datasets data folder for ``"tfds:NAME"``.

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
    resolved = _resolve(source, val_fraction, seed, class_names, root, data_dir)
    what = "dataset_dir" if resolved.kind in ("folder", "split_folder") else f"the {resolved.kind}"
    check_num_classes(resolved.class_names, num_classes, what=what)
    return resolved


def _resolve(source, val_fraction, seed, class_names, root, data_dir) -> DatasetSource:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(source, pd.DataFrame):
        base = Path(root) if root is not None else Path.cwd()
        return _from_frame(source, base, "dataframe", None, val_fraction, seed)
    if isinstance(source, str) and source.startswith("tfds:"):
        return _from_tfds(source[len("tfds:") :], data_dir, val_fraction)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _from_folder(path, val_fraction, seed)
        if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
            import pandas as pd

            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep)
            base = Path(root) if root is not None else path.parent
            return _from_frame(frame, base, "csv", str(path), val_fraction, seed)
        if not path.exists():
            raise FileNotFoundError(f"dataset source {str(source)!r} does not exist")
        raise ValueError(
            f"cannot use {str(source)!r} as a dataset: "
            "expected a folder, a .csv file or 'tfds:NAME'"
        )
    if _is_tf_dataset(source):
        return _from_tf_dataset(source, class_names, val_fraction)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return _from_arrays(source[0], source[1], class_names, val_fraction, seed)
    raise TypeError(
        f"cannot use a {type(source).__name__} as a dataset source; pass a folder, a CSV path, "
        "a DataFrame, 'tfds:NAME', an (images, labels) tuple or a tf.data.Dataset"
    )


# ----------------------------------------------------------------------------- splitting


def stratified_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split; returns sorted (train_indices, val_indices).

    Each class with at least two examples gives ``n * val_fraction`` (rounded half up) of them
    (at least one, at most ``n - 1``) to validation, so no class vanishes from either side.

    Example:
        >>> train, val = stratified_split([0, 0, 0, 0, 1, 1], 0.25, seed=0)
        >>> len(train), len(val)
        (4, 2)
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if val_fraction <= 0 or len(members) < 2:
            continue
        count = int(np.floor(len(members) * val_fraction + 0.5))  # half up, not to even
        count = min(max(count, 1), len(members) - 1)
        val_parts.append(rng.permutation(members)[:count])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train.astype(np.int64), val.astype(np.int64)


def _split_examples(examples, val_fraction, seed):
    if val_fraction <= 0 or len(examples) == 0:
        return examples, None
    train_idx, val_idx = stratified_split(examples.labels, val_fraction, seed)
    if len(val_idx) == 0:
        return examples, None
    return examples.subset(train_idx), examples.subset(val_idx)


# ----------------------------------------------------------------------------- folders


@dataclass
class _Listing:
    files_by_class: dict[str, list[str]]
    ignored: list[str]
    unlabelled: list[str]


def _list_class_folders(root: Path) -> _Listing:
    """Files under each class folder of ``root`` (recursively), skipping hidden/system entries."""
    files_by_class: dict[str, list[str]] = {}
    ignored: list[str] = []
    unlabelled: list[str] = []
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if is_hidden_or_system(entry.name):
                ignored.extend(_all_files(entry))
            elif entry.is_dir():
                files_by_class[entry.name] = _walk_files(Path(entry.path), ignored)
            else:
                unlabelled.append(entry.path)
    return _Listing(files_by_class, ignored, unlabelled)


def _all_files(entry) -> list[str]:
    if not entry.is_dir():
        return [entry.path]
    found = []
    for dirpath, _, filenames in os.walk(entry.path):
        found.extend(os.path.join(dirpath, name) for name in filenames)
    return sorted(found)


def _walk_files(folder: Path, ignored: list[str]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames):
            if is_hidden_or_system(name):
                dirnames.remove(name)
                for sub, _, names in os.walk(os.path.join(dirpath, name)):
                    ignored.extend(os.path.join(sub, n) for n in names)
        for name in filenames:
            path = os.path.join(dirpath, name)
            (ignored if is_hidden_or_system(name) else found).append(path)
    return sorted(found)


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., "test": ...}`` when ``root`` is laid out by split."""
    subdirs = {
        entry.name: Path(entry.path)
        for entry in os.scandir(root)
        if entry.is_dir() and not is_hidden_or_system(entry.name)
    }
    by_split: dict[str, Path] = {}
    for name, path in sorted(subdirs.items()):
        split = SPLIT_ALIASES.get(name.lower())
        if split is not None:
            if split in by_split:
                raise ValueError(
                    f"{root} has two folders for the {split!r} split: "
                    f"{by_split[split].name!r} and {name!r}"
                )
            by_split[split] = path
    if "train" not in by_split:
        return None
    if len(by_split) == 1 and len(subdirs) > 1:
        return None  # a class that happens to be called "train" among other classes
    return by_split


def _from_folder(root: Path, val_fraction: float, seed: int) -> DatasetSource:
    split_dirs = _split_dirs(root)
    if split_dirs is None:
        listing = _list_class_folders(root)
        if not listing.files_by_class:
            raise ValueError(
                f"{root} has no class sub-folders (found {len(listing.unlabelled)} loose files); "
                "put each class's images in its own folder, e.g. dataset/cat/*.jpg"
            )
        names = tuple(sorted(listing.files_by_class))
        examples = _examples_from_listing(listing, names)
        train, val = _split_examples(examples, val_fraction, seed)
        notes = [f"val: {val_fraction:.0%} of each class, seeded stratified split (seed={seed})"]
        return DatasetSource(
            kind="folder",
            class_names=names,
            train=train,
            val=val,
            root=str(root),
            ignored_files=listing.ignored,
            unlabelled_files=listing.unlabelled,
            empty_class_folders={"train": _empty(listing)},
            notes=notes if val is not None else [],
        )

    listings = {split: _list_class_folders(path) for split, path in split_dirs.items()}
    names = tuple(sorted(set().union(*(listing.files_by_class for listing in listings.values()))))
    if not names:
        raise ValueError(f"{root} has split folders {sorted(split_dirs)} but no class folders")
    ignored = [p for listing in listings.values() for p in listing.ignored]
    ignored += [
        p
        for entry in os.scandir(root)
        if is_hidden_or_system(entry.name)
        for p in _all_files(entry)
    ]
    unlabelled = [p for listing in listings.values() for p in listing.unlabelled]
    per_split = {
        split: _examples_from_listing(listing, names) for split, listing in listings.items()
    }
    notes = [f"{split}: folder {split_dirs[split].name}/" for split in per_split]
    train, val = per_split["train"], per_split.get("val")
    if val is None:
        train, val = _split_examples(train, val_fraction, seed)
        if val is not None:
            notes.append(f"val: {val_fraction:.0%} of each train class, seeded (seed={seed})")
    return DatasetSource(
        kind="split_folder",
        class_names=names,
        train=train,
        val=val,
        test=per_split.get("test"),
        root=str(root),
        ignored_files=sorted(ignored),
        unlabelled_files=unlabelled,
        empty_class_folders={split: _empty(listing) for split, listing in listings.items()},
        notes=notes,
    )


def _empty(listing: _Listing) -> list[str]:
    return [name for name, files in listing.files_by_class.items() if not files]


def _examples_from_listing(listing: _Listing, names: tuple[str, ...]) -> FileExamples:
    index = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for name, files in listing.files_by_class.items():
        paths.extend(files)
        labels.extend([index[name]] * len(files))
    return FileExamples(tuple(paths), np.asarray(labels, np.int64), names)


# ----------------------------------------------------------------------------- tables


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


# ----------------------------------------------------------------------------- arrays, tf.data


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


# ----------------------------------------------------------------------------- tfds


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


def _check_label_range(labels: np.ndarray, class_names: tuple[str, ...]) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [0, {len(class_names)}) for {len(class_names)} classes; "
            f"found {int(labels.min())}..{int(labels.max())}"
        )

"""The containers every source resolves to, and how a split is made of them.

:class:`FileExamples` (image files), :class:`ArrayExamples` (in-memory arrays) and
:class:`DatasetExamples` (a ``tf.data`` stream) hold one split each; :class:`DatasetSource` holds
the class names and the ``train``/``val``/``test`` splits of one resolved source.
:func:`stratified_split` is the seeded, per-class train/val split all sources without a
validation split share; ``SPLIT_ALIASES`` is the vocabulary of split folder and column names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


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
        labels: int64 class index of each element, in the stream's order, when they were read
            ahead (tfds sources): the doctor's per-class counts and class weights use them.
    """

    dataset: Any
    class_names: tuple[str, ...]
    num_examples: int | None = None
    labels: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.labels is not None:
            labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if self.num_examples is not None and len(labels) != self.num_examples:
                raise ValueError(f"{self.num_examples} examples but {len(labels)} labels")
            object.__setattr__(self, "labels", labels)
            object.__setattr__(self, "num_examples", len(labels))
            _check_label_range(labels, self.class_names)

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

    @property
    def described(self) -> str:
        """How messages name it: ``"dataset_dir"`` (a folder, fit's argument), else
        ``"the csv source"``, ``"the tfds source"``, ..."""
        return "dataset_dir" if self.kind in ("folder", "split_folder") else \
            f"the {self.kind} source"

    def splits(self) -> dict[str, Examples]:
        """The non-empty splits in order train, val, test."""
        out = {"train": self.train, "val": self.val, "test": self.test}
        return {name: ex for name, ex in out.items() if ex is not None}


def known_count(examples) -> int:
    """How many examples a split holds when that is known without reading it, else 0
    (a stream of unknown length).

    Example:
        >>> known_count([1, 2, 3]), known_count(iter([1]))
        (3, 0)
    """
    try:
        return len(examples)
    except TypeError:
        return 0


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


def _check_label_range(labels: np.ndarray, class_names: tuple[str, ...]) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [0, {len(class_names)}) for {len(class_names)} classes; "
            f"found {int(labels.min())}..{int(labels.max())}"
        )

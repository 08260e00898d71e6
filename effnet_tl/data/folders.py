"""Folder sources: class sub-folders, optionally under ``train/``, ``val/``, ``test/`` folders.

Lists files without opening them, skipping the hidden and system files that operating systems
and tools leave in image folders (:func:`is_hidden_or_system`), and records what was skipped,
what lies outside any class folder and which class folders are empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effnet_tl.data.examples import (
    SPLIT_ALIASES,
    DatasetSource,
    FileExamples,
    _split_examples,
)

# Files and folders that operating systems and tools drop into image folders; never images,
# never classes. ``._*`` (macOS AppleDouble) and ``.DS_Store`` are covered by the leading dot.
SYSTEM_FILE_NAMES = {"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"}
SYSTEM_DIR_NAMES = {"__macosx", "$recycle.bin", "system volume information", "@eadir"}


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

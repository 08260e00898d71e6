"""The short trials of the compound-scaling search, and the folder that keeps them.

Every trial is one :func:`effnet_tl.fit` call from scratch (``weights=None``: no pretrained
weights fit every candidate's shapes, and starting some from ImageNet and others from random
would rank the starts, not the shapes). fit's recipe is reduced to what a from-scratch trial
needs: no head phase, every block trained (BatchNorm too, see
:func:`effnet_tl.train.surgery.set_finetune_trainable`), no augmentation, no early stop, the same
epochs, rate, seed and images for every candidate.

The data are split three ways once, seeded: the source's own validation split (at most
``subset`` images) is the held-out set that scores the trials and nothing else; ``subset``
training images are split again into the images a trial trains on and the ones fit picks its
kept epoch with.

The search folder::

    search.json        the settings and data that decide trial results, the base's measured
                       cost, every measured candidate, and one record per finished trial
    trials/<name>/     each trial's fit run folder (model.keras, report.json, plots/ ...)
    scale_search.png   held-out accuracy against measured multiply-adds, the chosen point marked

A trial's record is written the moment it finishes; a rerun with the same settings loads
finished trials instead of training them, and an interrupted trial resumes from its run folder
(fit's own resume).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from effnet_tl.data.examples import DatasetExamples, DatasetSource, stratified_split
from effnet_tl.train.run import RunFolderConflict, read_json, write_json

__all__ = [
    "SearchFolder",
    "SearchFolderConflict",
    "describe_data",
    "prepare_data",
    "run_trial",
    "trial_batch_norm_momentum",
]


class SearchFolderConflict(RunFolderConflict):
    """The search folder holds trials of a search with other settings or data."""

    def message(self, flag: str) -> str:
        return (f"{self.root} holds a scale search with other settings (changed: "
                f"{', '.join(self.changed)}); pass {flag} to start afresh, or choose another "
                "search folder")


def _size(examples) -> int:
    try:
        return len(examples)
    except TypeError:
        raise ValueError("the scale search needs splits of known size; this tf.data stream's "
                         "length is unknown (pass a folder, a CSV, arrays, or a dataset with "
                         "a known cardinality)") from None


def _take(examples, count: int | None, seed: int):
    """At most ``count`` examples, stratified by class when the labels are known."""
    size = _size(examples)
    if count is None or size <= count:
        return examples
    if isinstance(examples, DatasetExamples):  # a stream: its first ``count`` elements
        return _stream_part(examples, 0, count)
    _, chosen = stratified_split(examples.labels, count / size, seed)
    return examples.subset(chosen)


def _stream_part(examples: DatasetExamples, start: int, stop: int) -> DatasetExamples:
    """Elements ``start:stop`` of a stream (with their read-ahead labels, when known)."""
    labels = None if examples.labels is None else examples.labels[start:stop]
    return DatasetExamples(examples.dataset.skip(start).take(stop - start),
                           examples.class_names, stop - start, labels=labels)


def _split(examples, fraction: float, seed: int):
    """(trained on, picks the kept epoch): stratified, or the tail of a stream."""
    if isinstance(examples, DatasetExamples):
        keep = len(examples) - max(1, round(len(examples) * fraction))
        return _stream_part(examples, 0, keep), _stream_part(examples, keep, len(examples))
    train, val = stratified_split(examples.labels, fraction, seed)
    return examples.subset(train), examples.subset(val)


def prepare_data(dataset, num_classes: int | None, *, subset: int | None, val_fraction: float,
                 seed: int) -> DatasetSource:
    """The three splits every trial uses: ``train``, ``val`` (kept epoch), ``test`` (score).

    The source is read and checked once (unreadable files skipped, as fit skips them);
    ``num_classes=None`` counts its classes.

    Example:
        >>> images = np.zeros((40, 32, 32, 3), np.uint8)
        >>> source = prepare_data((images, [0, 1] * 20), 2, subset=20, val_fraction=0.25, seed=0)
        >>> len(source.train), len(source.val), len(source.test)
        (14, 6, 10)
    """
    from effnet_tl.data import scan
    from effnet_tl.data.classes import check_num_classes, class_count
    from effnet_tl.data.sources import resolve_source

    if isinstance(dataset, DatasetSource):
        check_num_classes(dataset.class_names, num_classes, what=dataset.described)
        resolved = dataset
    else:
        resolved = resolve_source(dataset, val_fraction=val_fraction, seed=seed,
                                  num_classes=num_classes)
    source = scan(resolved).source
    num_classes = class_count(source.class_names, num_classes, what=source.described)
    if source.val is None:
        raise ValueError("the scale search scores trials on a held-out split: the source has "
                         f"none and val_fraction={val_fraction!r}; pass val_fraction > 0 or "
                         "add a val/ folder")
    train, val = _split(_take(source.train, subset, seed), val_fraction, seed)
    held_out = _take(source.val, subset, seed + 1)
    for name, split in (("train", train), ("val", val), ("held-out", held_out)):
        if len(split) < num_classes:
            raise ValueError(f"the trials' {name} split has {len(split)} images, fewer than the "
                             f"{num_classes} classes; use more data or a larger subset")
    note = (f"scale search: {len(train)} train / {len(val)} val (kept epoch) / "
            f"{len(held_out)} held-out images (score), seed {seed}")
    return DatasetSource(source.kind, source.class_names, train, val, held_out, root=source.root,
                         notes=[note])


def describe_data(source: DatasetSource, dataset) -> dict:
    """What identifies the trials' data in ``search.json``."""
    import os

    def digest(examples):
        labels = getattr(examples, "labels", None)
        return None if labels is None else np.bincount(labels, minlength=source.num_classes) \
            .tolist()

    return {"dataset": str(dataset) if isinstance(dataset, (str, os.PathLike))
            else type(dataset).__name__, "kind": source.kind,
            "class_names": list(source.class_names),
            **{f"{name}_per_class": digest(examples)
               for name, examples in (("train", source.train), ("val", source.val),
                                      ("held_out", source.test))}}


def trial_batch_norm_momentum(num_train: int, batch_size: int) -> float:
    """BatchNorm momentum of a trial: its moving statistics average about half an epoch.

    A network trained from scratch for a few epochs changes fast; with the usual 0.99 the
    statistics it is evaluated with lag its weights by ~100 steps, more than a whole trial (a
    trial whose training accuracy reached 1.0 scored chance on validation that way).

    Example:
        >>> trial_batch_norm_momentum(160, 16), trial_batch_norm_momentum(1000, 32)
        (0.8, 0.9375)
    """
    steps = max(1, math.ceil(num_train / batch_size))
    return round(min(0.99, max(0.5, 1 - 2 / steps)), 4)


def run_trial(candidate, source: DatasetSource, num_classes: int, *, run_dir: Path,
              bn_momentum: float, fit_options: dict) -> dict:
    """Train ``candidate`` once with :func:`effnet_tl.fit`; its record for ``search.json``."""
    from effnet_tl.train import fit

    spec = dataclasses.replace(candidate.spec, bn_momentum=bn_momentum)
    result = fit(source, num_classes, variant=spec, image_size=candidate.resolution,
                 run_dir=run_dir, **fit_options)
    test, val = result.metrics.get("test") or {}, result.metrics.get("val") or {}
    kept = result.metrics.get("kept") or {}
    return {**candidate.to_dict(), "accuracy": test.get("accuracy"),
            "val_accuracy": val.get("accuracy"), "held_out": len(source.test),
            "kept_epoch": kept.get("epoch"), "seconds": result.metrics.get("seconds"),
            "run_dir": str(run_dir), "nonfinite_stop": result.stopped}


@dataclasses.dataclass
class SearchFolder:
    """``search.json`` of one search folder: settings, measured candidates, finished trials."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / "search.json"

    @property
    def plot(self) -> Path:
        return self.root / "scale_search.png"

    def trial_dir(self, name: str) -> Path:
        return self.root / "trials" / name

    def open(self, settings: dict, *, overwrite: bool) -> dict:
        """The stored state when it was made with ``settings``; a fresh one otherwise
        (:class:`SearchFolderConflict` when trials would be lost and not ``overwrite``)."""
        import shutil

        previous = read_json(self.record)
        if previous is not None and previous.get("settings") == settings:
            return previous
        if previous is not None and previous.get("trials") and not overwrite:
            before = previous.get("settings", {})
            raise SearchFolderConflict(self.root, [
                key for key in sorted(set(before) | set(settings))
                if before.get(key) != settings.get(key)])
        if (self.root / "trials").exists():
            shutil.rmtree(self.root / "trials")
        state = {"settings": settings, "measured": {}, "trials": {}}
        self.save(state)
        return state

    def save(self, state: dict) -> None:
        write_json(self.record, state)

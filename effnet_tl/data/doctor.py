"""The dataset doctor: decode every file once, in parallel, and say exactly what is wrong.

``scan(source)`` returns a :class:`ScanReport`: counts by issue kind, every skipped file with its
reason, what was converted, per-class counts per split, classes missing from a split, byte-identical
files shared between splits (leakage), and the class imbalance. Its ``source`` holds only the good
files, each tagged with the decoder the pipeline should use, so training never meets a bad file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from effnet_tl.data.imagefile import CONVERSIONS, PROBLEMS, FileCheck, inspect_file
from effnet_tl.data.sources import (
    ArrayExamples,
    DatasetExamples,
    DatasetSource,
    FileExamples,
    resolve_source,
)

WARNINGS = ("tiny",)
# Tiny images are summarised on one line of ``str(report)``; this many paths are named there
# (every one is in ``report.warnings`` and the JSON report).
TINY_PATHS_SHOWN = 3


@dataclass(frozen=True)
class FileIssue:
    """One file the report mentions: the split, its path, the issue kind, and why."""

    split: str
    path: str
    kind: str
    reason: str


@dataclass
class ScanReport:
    """Everything the doctor found. ``str(report)`` is a readable summary; ``to_json`` a record.

    Attributes:
        source: the resolved source with only good files, tagged for fast decoding.
        counts: ``{kind: number of files}`` for every problem, conversion and warning kind, plus
            ``scanned``, ``good``, ``skipped``, ``ignored``, ``unlabelled``, ``extension_mismatch``,
            ``duplicates`` (extra copies inside one split) and ``leakage_groups``.
        skipped: unusable files with reasons (never silently dropped).
        converted: kept files that are converted on decode, one entry per conversion.
        warnings: kept files worth a look (``tiny``: shorter side below ``min_side`` px).
        min_side: the ``tiny`` threshold the scan used, in pixels.
        ignored_files: hidden and system files (``.DS_Store``, ``._*``, ``Thumbs.db``...).
        unlabelled_files: files outside any class folder.
        empty_class_folders: ``{split: [class, ...]}``.
        class_counts: ``{split: {class: good files}}``.
        missing_classes: ``{split: [classes with no good file]}`` (only splits with a gap).
        leakage: groups of byte-identical files found in more than one split, as ``[split, path]``.
        imbalance_ratio: largest / smallest non-zero train class count.
        imbalanced: whether that ratio exceeds the threshold the scan used.
        pixel_range: for arrays, ``(min, max)`` of the pixel values; a max of 1 or less means the
            images were divided by 255, which EfficientNet (expects [0, 255]) silently mislearns.
        quarantined: ``[(from, to)]`` moves done by :meth:`quarantine`.
    """

    source: DatasetSource
    counts: dict[str, int]
    skipped: list[FileIssue] = field(default_factory=list)
    converted: list[FileIssue] = field(default_factory=list)
    warnings: list[FileIssue] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    unlabelled_files: list[str] = field(default_factory=list)
    empty_class_folders: dict[str, list[str]] = field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    missing_classes: dict[str, list[str]] = field(default_factory=dict)
    leakage: list[list[list[str]]] = field(default_factory=list)
    imbalance_ratio: float | None = None
    imbalanced: bool = False
    imbalance_threshold: float = 3.0
    min_side: int = 32
    pixel_range: tuple[float, float] | None = None
    seconds: float = 0.0
    quarantined: list[tuple[str, str]] = field(default_factory=list)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def files_per_second(self) -> float:
        return self.counts.get("scanned", 0) / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """No skipped file, no leakage, no class missing from a split."""
        return not (self.skipped or self.leakage or self.missing_classes)

    def to_dict(self) -> dict:
        return {
            "kind": self.source.kind,
            "root": self.source.root,
            "class_names": list(self.class_names),
            "counts": dict(self.counts),
            "skipped": [vars(issue) for issue in self.skipped],
            "converted": [vars(issue) for issue in self.converted],
            "warnings": [vars(issue) for issue in self.warnings],
            "min_side": self.min_side,
            "ignored_files": list(self.ignored_files),
            "unlabelled_files": list(self.unlabelled_files),
            "empty_class_folders": self.empty_class_folders,
            "class_counts": self.class_counts,
            "missing_classes": self.missing_classes,
            "leakage": self.leakage,
            "imbalance_ratio": self.imbalance_ratio,
            "imbalanced": self.imbalanced,
            "pixel_range": list(self.pixel_range) if self.pixel_range else None,
            "notes": list(self.source.notes),
            "seconds": round(self.seconds, 4),
            "files_per_second": round(self.files_per_second, 1),
            "quarantined": [list(move) for move in self.quarantined],
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The report as JSON; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text

    def quarantine(self, destination: str | os.PathLike) -> list[tuple[str, str]]:
        """Move (never delete) every skipped file under ``destination``, keeping relative paths.

        An existing file at the target is never overwritten: a numeric suffix is added.
        """
        destination = Path(destination)
        root = Path(self.source.root) if self.source.root else None
        moves = []
        for issue in self.skipped:
            source = Path(issue.path)
            if not source.exists() and not source.is_symlink():
                continue
            try:
                relative = source.relative_to(root) if root and root.is_dir() else Path(source.name)
            except ValueError:
                relative = Path(source.name)
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            stem, counter = target, 1
            while target.exists():
                target = stem.with_name(f"{stem.stem}.{counter}{stem.suffix}")
                counter += 1
            shutil.move(str(source), str(target))
            moves.append((str(source), str(target)))
        self.quarantined.extend(moves)
        return moves

    def __str__(self) -> str:
        return _format_report(self)


def scan(
    source,
    *,
    min_side: int = 32,
    imbalance_threshold: float = 3.0,
    workers: int | None = None,
    quarantine_dir: str | os.PathLike | None = None,
    **resolve_kwargs,
) -> ScanReport:
    """Check every example of ``source``; return a :class:`ScanReport`.

    Args:
        source: anything :func:`effnet_tl.data.resolve_source` accepts, or a resolved
            :class:`DatasetSource`.
        min_side: images whose shorter side is below this many pixels are kept but warned about.
        imbalance_threshold: largest / smallest train class count above which the report flags
            imbalance (use :func:`effnet_tl.data.class_weights`).
        workers: decode threads (Pillow releases the GIL while decoding); default 2 x CPUs.
        quarantine_dir: when given, skipped files are moved there after the scan.
        **resolve_kwargs: ``val_fraction``, ``seed``, ``num_classes``... for ``resolve_source``.

    Example:
        >>> import tempfile, os, numpy as np
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for name in ["cat", "dog"]:
        ...     os.makedirs(os.path.join(root, name))
        ...     black = Image.fromarray(np.zeros((40, 40, 3), np.uint8))
        ...     black.save(os.path.join(root, name, "a.png"))
        >>> open(os.path.join(root, "dog", "notes.jpg"), "w").write("hello")
        5
        >>> report = scan(root, val_fraction=0)
        >>> report.counts["good"], report.counts["not_an_image"], report.skipped[0].kind
        (2, 1, 'not_an_image')
    """
    resolved = (
        source if isinstance(source, DatasetSource) else resolve_source(source, **resolve_kwargs)
    )
    start = time.perf_counter()
    counts: Counter = Counter({kind: 0 for kind in (*PROBLEMS, *CONVERSIONS, *WARNINGS)})
    counts.update(scanned=0, good=0, skipped=0, extension_mismatch=0, duplicates=0)
    report = ScanReport(
        source=resolved,
        counts=counts,
        ignored_files=list(resolved.ignored_files),
        unlabelled_files=list(resolved.unlabelled_files),
        empty_class_folders={k: v for k, v in resolved.empty_class_folders.items() if v},
        imbalance_threshold=imbalance_threshold,
        min_side=min_side,
    )
    splits = resolved.splits()
    file_splits = {name: ex for name, ex in splits.items() if isinstance(ex, FileExamples)}
    checks = _check_files(file_splits, workers)

    clean: dict[str, object] = {}
    digests: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for split, examples in splits.items():
        if isinstance(examples, FileExamples):
            clean[split] = _judge(split, examples, checks, report, counts, digests, min_side)
        else:
            clean[split] = examples
            if isinstance(examples, ArrayExamples):
                _judge_arrays(examples, report, min_side, counts, split)
            elif isinstance(examples, DatasetExamples) and examples.labels is not None:
                _judge_labelled_stream(examples, counts)
    _find_leakage(digests, report, counts)
    for split, examples in clean.items():
        if getattr(examples, "labels", None) is not None:
            per_class = np.bincount(examples.labels, minlength=resolved.num_classes)
            report.class_counts[split] = {
                name: int(n) for name, n in zip(resolved.class_names, per_class)
            }
            missing = [name for name, n in report.class_counts[split].items() if n == 0]
            if missing:
                report.missing_classes[split] = missing
    train_counts = [n for n in report.class_counts.get("train", {}).values() if n > 0]
    if train_counts:
        report.imbalance_ratio = round(max(train_counts) / min(train_counts), 4)
        report.imbalanced = report.imbalance_ratio > imbalance_threshold
    counts["ignored"] = len(report.ignored_files)
    counts["unlabelled"] = len(report.unlabelled_files)
    counts["empty_class_folders"] = sum(len(v) for v in report.empty_class_folders.values())
    report.counts = dict(counts)
    report.source = replace(
        resolved, **{name: clean.get(name) for name in ("train", "val", "test")}
    )
    report.seconds = time.perf_counter() - start
    if quarantine_dir is not None:
        report.quarantine(quarantine_dir)
    return report


def check_examples(
    examples: FileExamples, *, workers: int | None = None
) -> tuple[FileExamples, list[FileIssue]]:
    """Check unchecked files; return (the good ones tagged with decoders, the skipped ones)."""
    report = scan(DatasetSource("files", examples.class_names, examples), workers=workers)
    return report.source.train, report.skipped


def _check_files(file_splits: dict[str, FileExamples], workers) -> dict[str, FileCheck]:
    paths = sorted({p for ex in file_splits.values() for p in ex.paths})
    if not paths:
        return {}
    workers = workers or max(2, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        return dict(zip(paths, pool.map(inspect_file, paths)))


def _judge(split, examples, checks, report, counts, digests, min_side) -> FileExamples:
    keep, decoders, sizes = [], [], []
    for index, path in enumerate(examples.paths):
        check = checks[path]
        counts["scanned"] += 1
        if not check.ok:
            counts[check.problem] += 1
            counts["skipped"] += 1
            report.skipped.append(FileIssue(split, path, check.problem, check.reason))
            continue
        counts["good"] += 1
        keep.append(index)
        decoders.append(check.decoder)
        sizes.append(check.display_size)
        for kind in check.conversions:
            counts[kind] += 1
            report.converted.append(FileIssue(split, path, kind, _conversion_reason(kind, check)))
        if min(check.width, check.height) < min_side:
            counts["tiny"] += 1
            report.warnings.append(
                FileIssue(split, path, "tiny", f"{check.width}x{check.height} px, below {min_side}")
            )
        counts["extension_mismatch"] += check.extension_mismatch
        digests[check.digest].append((split, path))
    good = examples.subset(keep)
    return replace(good, decoders=tuple(decoders), sizes=np.asarray(sizes, np.int64).reshape(-1, 2))


def _conversion_reason(kind: str, check: FileCheck) -> str:
    return {
        "grayscale": "grayscale, repeated to 3 channels",
        "rgba": "alpha channel dropped",
        "palette": "palette expanded to RGB",
        "cmyk": "CMYK converted to RGB",
        "16bit": "16-bit samples scaled to 8 bits",
        "exif_orientation": "EXIF orientation applied",
        "other_format": f"{check.format} decoded with Pillow",
    }[kind] + f" ({check.format} {check.mode} {check.width}x{check.height})"


def _judge_arrays(examples: ArrayExamples, report, min_side, counts, split) -> None:
    images = examples.images
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if report.pixel_range is None:
        report.pixel_range = (low, high)
    else:
        report.pixel_range = (min(low, report.pixel_range[0]), max(high, report.pixel_range[1]))
    counts["scanned"] += len(examples)
    counts["good"] += len(examples)
    if images.shape[-1] == 1:
        counts["grayscale"] += len(examples)
    if images.shape[-1] == 4:
        counts["rgba"] += len(examples)
    if min(images.shape[1:3]) < min_side:
        counts["tiny"] += len(examples)


def _judge_labelled_stream(examples: DatasetExamples, counts) -> None:
    """A stream whose labels were read ahead (tfds): counted by class, and by the channel
    conversion its images get; the images themselves are not decoded here."""
    counts["scanned"] += len(examples)
    counts["good"] += len(examples)
    channels = examples.dataset.element_spec[0].shape[-1]
    if channels == 1:
        counts["grayscale"] += len(examples)
    if channels == 4:
        counts["rgba"] += len(examples)


def _find_leakage(digests, report, counts) -> None:
    for members in digests.values():
        if len(members) < 2:
            continue
        by_split = Counter(split for split, _ in members)
        counts["duplicates"] += sum(n - 1 for n in by_split.values())
        if len(by_split) > 1:
            report.leakage.append(sorted([split, path] for split, path in members))
    report.leakage.sort()
    counts["leakage_groups"] = len(report.leakage)


def _tiny_summary(report: ScanReport, rel) -> str:
    """One line for every tiny image: how many, the threshold, the first few paths."""
    line = (
        f"  tiny images (kept): {report.counts['tiny']} with the shorter side below"
        f" {report.min_side} px"
    )
    paths = [rel(issue.path) for issue in report.warnings if issue.kind == "tiny"]
    if paths:
        line += ", e.g. " + ", ".join(paths[:TINY_PATHS_SHOWN])
        if len(paths) > TINY_PATHS_SHOWN:
            line += f" … and {len(paths) - TINY_PATHS_SHOWN} more (all in to_json())"
    return line


def _format_report(report: ScanReport) -> str:
    source = report.source
    root = source.root or ""

    def rel(path: str) -> str:
        return os.path.relpath(path, root) if root and os.path.isdir(root) else path

    c = report.counts
    lines = [
        f"Dataset doctor: {root or source.kind} ({source.kind}), {len(source.class_names)} classes,"
        f" {c['scanned']} examples checked in {report.seconds:.2f} s"
        f" ({report.files_per_second:,.0f}/s)",
        f"  good {c['good']}, skipped {c['skipped']}, ignored system/hidden files {c['ignored']},"
        f" unlabelled files {c['unlabelled']}",
    ]
    if report.skipped:
        lines.append("  SKIPPED (not used for training):")
        lines += [f"    {i.kind:<13s} {rel(i.path)}: {i.reason}" for i in report.skipped]
    converted = {k: c[k] for k in CONVERSIONS if c.get(k)}
    if converted:
        lines.append("  converted and kept: " + ", ".join(f"{k} {n}" for k, n in converted.items()))
    if c.get("tiny"):
        lines.append(_tiny_summary(report, rel))
    if report.empty_class_folders:
        lines.append(f"  EMPTY class folders: {report.empty_class_folders}")
    # One folder per class and no split read here: fit holds validation images out itself.
    unsplit = report.source.kind == "folder" and report.source.val is None
    for split, counts in report.class_counts.items():
        lines.append(f"  {'images' if unsplit else split} per class: {counts}")
    if unsplit:
        lines.append("  no train/ val/ test/ folders: fit holds out val_fraction of each class "
                     "(20 % by default) for validation")
    if report.missing_classes:
        lines.append(f"  CLASSES MISSING from a split: {report.missing_classes}")
    if report.leakage:
        lines.append(
            f"  LEAKAGE: {len(report.leakage)} groups of byte-identical files across splits"
        )
        for group in report.leakage[:20]:
            lines.append("    " + " == ".join(f"{s}:{rel(p)}" for s, p in group))
    if report.imbalance_ratio is not None:
        flag = " IMBALANCED: consider class_weights()" if report.imbalanced else ""
        lines.append(
            f"  imbalance (largest/smallest {'' if unsplit else 'train '}class): "
            f"{report.imbalance_ratio:.2f}{flag}"
        )
    if report.pixel_range is not None and report.pixel_range[1] <= 1.0:
        lines.append(
            f"  PIXELS in [{report.pixel_range[0]:g}, {report.pixel_range[1]:g}]: "
            "EfficientNet expects"
            " [0, 255]; do not divide by 255"
        )
    lines += [f"  note: {note}" for note in source.notes]
    if report.quarantined:
        lines.append(f"  quarantined {len(report.quarantined)} files")
    return "\n".join(lines)

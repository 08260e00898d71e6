"""The run folder (``runs/<name>/``) and the result object :func:`effnet_tl.fit` returns.

Files in a run folder:

* ``model.keras``: the kept model (the best epoch of all phases by validation accuracy, ties
  broken by validation loss; :mod:`effnet_tl.train.selection`), loadable with
  ``keras.saving.load_model(path, safe_mode=True)`` once ``effnet_tl`` is imported.
* ``labels.json``: class names in label order; ``config.json``: every resolved setting and
  the decisions taken from the data; ``data_report.json``: the dataset doctor's report (every
  skipped file with its reason).
* ``history.csv``: one row per epoch, both phases (a ``phase`` column); its ``epoch`` column
  counts from 0, like Keras' ``CSVLogger``, while the log, ``report.json`` and the plots
  count from 1, like Keras' progress lines.
* ``report.json``: validation (and test) accuracy, top-k, per-class precision/recall/F1.
* ``plots/history.png``, ``plots/confusion_matrix.png``, ``plots/confident_mistakes.png``.
* ``phases.json``: each finished phase (epochs, seconds, why it stopped early) and, once the
  report is written, ``"finished": true``.
* ``backup/<phase>/`` and ``backup/<phase>-best.npz`` (the phase's best trained weights until
  it writes ``model.keras``): resume state, so rerunning the same call after a kill continues
  after the last finished epoch. Removed when the run finishes (``keep_backups=True`` keeps it).
* ``tensorboard/`` when asked for.
* ``export/`` (``effnet-tl export``: SavedModel, TFLite, ONNX and their ``README.md`` card) and
  ``evaluations/<data>/`` (``effnet-tl evaluate``): written after the run; a fresh start of the
  run removes them with the model they were made from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "FitResult",
    "Predictions",
    "RunFolderConflict",
    "RunPaths",
    "finish_run_dir",
    "load_run",
    "prepare_images",
    "prepare_run_dir",
]


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Every path of one run folder."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def phases(self) -> Path:
        return self.root / "phases.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def history_plot(self) -> Path:
        return self.plots / "history.png"

    @property
    def confusion_plot(self) -> Path:
        return self.plots / "confusion_matrix.png"

    @property
    def mistakes_plot(self) -> Path:
        return self.plots / "confident_mistakes.png"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.json"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def evaluations(self) -> Path:
        return self.root / "evaluations"

    def owned(self) -> list[Path]:
        """Everything a run writes into its folder (what starting afresh removes)."""
        return [self.model, self.labels, self.config, self.history, self.report, self.phases,
                self.data_report, self.export, self.evaluations,
                self.plots, self.tensorboard, self.backup,
                self.history.with_name(self.history.name + ".tmp")]

    def as_dict(self) -> dict[str, str]:
        names = ("model", "labels", "config", "history", "report", "history_plot",
                 "confusion_plot", "mistakes_plot")
        return {name: str(getattr(self, name)) for name in names}


def default_run_name(source: Any, variant_name: str) -> str:
    """A stable name for a call, so rerunning it finds (and resumes) the same folder.

    Example:
        >>> default_run_name("/data/flowers/", "b0")
        'flowers-b0'
    """
    if isinstance(source, (str, os.PathLike)) and not str(source).startswith("tfds:"):
        stem = Path(str(source).rstrip("/\\")).name or "dataset"
    elif isinstance(source, str):
        stem = source.split(":", 1)[1]
    else:
        stem = type(source).__name__.lower()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "dataset"
    return f"{stem}-{variant_name}"


def write_json(path: Path, payload: dict) -> None:
    """Atomic JSON write (temporary file + rename): a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


class RunFolderConflict(ValueError):
    """The run folder holds trained epochs of a run with other settings."""

    def __init__(self, root: Path, changed: list[str], *, flag: str = "overwrite=True"):
        self.root, self.changed = root, changed
        super().__init__(self.message(flag))

    def message(self, flag: str) -> str:
        return (f"{self.root} holds a run with other settings (changed: {', '.join(self.changed)});"
                f" pass {flag} to start afresh, or choose another run folder")


def _changed(previous: dict, current: dict) -> list[str]:
    """Names of the settings that differ (``config.json``'s settings are grouped dicts)."""
    names = []
    for group in sorted(set(previous) | set(current)):
        old, new = previous.get(group), current.get(group)
        if isinstance(old, dict) and isinstance(new, dict):
            names += [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        elif old != new:
            names.append(group)
    return names


def prepare_run_dir(paths: RunPaths, config: dict, *, overwrite: bool) -> str:
    """Decide what a call does with its run folder; returns ``"fresh"``, ``"resume"`` or
    ``"finished"``.

    * no folder, or one where no epoch finished (a failed start): train afresh;
    * the same settings with finished epochs: resume after the last one;
    * the same settings, finished: ``"finished"`` (nothing to train) unless ``overwrite``;
    * other settings with finished epochs: :class:`RunFolderConflict` unless ``overwrite``.
    """
    previous = read_json(paths.config)
    phases = read_json(paths.phases) or {}
    trained = bool(phases) or paths.history.exists() or paths.backup.exists()
    same = previous is not None and previous.get("settings") == config["settings"]
    if previous is not None and trained and not same and not overwrite:
        raise RunFolderConflict(paths.root, _changed(previous.get("settings", {}),
                                                     config["settings"]))
    state = "resume" if (same and trained) else "fresh"
    if same and phases.get("finished"):
        state = "fresh" if overwrite else "finished"
    if state == "fresh":
        _clear(paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    if state != "finished":
        write_json(paths.config, config)
    return state


def _clear(paths: RunPaths) -> None:
    """Remove what a run writes, and nothing else: ``run_dir`` may hold the user's own files."""
    for path in paths.owned():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def finish_run_dir(paths: RunPaths, phases: dict, *, keep_backups: bool) -> None:
    """Mark the run finished and drop its resume state (unless ``keep_backups``)."""
    write_json(paths.phases, {**phases, "finished": True})
    if not keep_backups and paths.backup.exists():
        shutil.rmtree(paths.backup)


def looks_unit_range(images: np.ndarray) -> bool:
    """True when float pixels look like [0, 1] (max <= 1) rather than the expected [0, 255]."""
    images = np.asarray(images)
    if images.size == 0 or not np.issubdtype(images.dtype, np.floating):
        return False
    finite = images[np.isfinite(images)]
    return finite.size > 0 and float(finite.max()) <= 1.0 and float(finite.min()) >= 0.0 \
        and float(finite.max()) > 0.0


UNIT_RANGE_MESSAGE = (
    "effnet_tl: the pixels look like they are in [0, 1] (max <= 1.0), but EfficientNet models "
    "take float RGB in [0, 255] and normalise inside the model; [0, 1] inputs train a silently "
    "bad model (every image looks almost black). {action}"
)


def prepare_images(
    images,
    image_size: int | Sequence[int],
    *,
    resize: str = "center_crop",
    fix_unit_range: bool = True,
) -> np.ndarray:
    """Turn paths / arrays / PIL images into a float32 batch ``(N, H, W, 3)`` in [0, 255].

    Exactly the pixels the validation pipeline feeds the model: files are decoded, cropped and
    resized by :func:`effnet_tl.data.read_eval_images` (the pipeline's own file decoder), arrays
    and PIL images by :func:`effnet_tl.data.eval_resize` (its array path).

    Args:
        images: a path, an array ``(H, W[, C])`` or ``(N, H, W[, C])``, a PIL image, or a list
            of any of these.
        image_size: the model's input size, ``224`` or ``(height, width)``.
        resize: the run's resize policy (``config["resize"]``); crops evaluate as the centre
            crop.
        fix_unit_range: multiply pixels that look like [0, 1] by 255 (with a warning).

    Example:
        >>> prepare_images(np.full((10, 20, 3), 7, np.uint8), 4).shape
        (1, 4, 4, 3)
    """
    from effnet_tl.data.pipeline import eval_resize, read_eval_images
    from effnet_tl.sizes import image_size_pair

    image_size = image_size_pair(image_size)
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (
        images.ndim == 2 or images.shape[-1] in (1, 3, 4)
    ):
        images = images[None]
    items = list(images)
    batch: list[np.ndarray | None] = [None] * len(items)
    files = [i for i, item in enumerate(items) if isinstance(item, (str, os.PathLike))]
    if files:
        decoded = read_eval_images([items[i] for i in files], image_size, resize=resize)
        for i, image in zip(files, decoded):
            batch[i] = image
    for i, item in enumerate(items):
        if batch[i] is None:
            batch[i] = eval_resize(_pixels(item), image_size, resize=resize)
    out = np.stack(batch).astype("float32") if batch else np.zeros((0, *image_size, 3), "float32")
    if looks_unit_range(out):
        if fix_unit_range:
            warnings.warn(UNIT_RANGE_MESSAGE.format(action="Multiplied them by 255."), stacklevel=3)
            out = out * 255.0
        else:
            warnings.warn(UNIT_RANGE_MESSAGE.format(action="Multiply them by 255."), stacklevel=3)
    return out


def _pixels(image) -> np.ndarray:
    """An array's pixels, or a PIL image's as RGB by the pipeline's rules (palettes, 16-bit)."""
    if hasattr(image, "getexif") and hasattr(image, "convert"):  # a PIL image
        from effnet_tl.data.imagefile import pil_to_rgb

        return pil_to_rgb(image)
    return np.asarray(image)


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Output of :meth:`FitResult.predict`.

    Attributes:
        labels: Predicted class name per image.
        confidences: Probability of the predicted class per image.
        probabilities: ``(N, num_classes)`` probabilities, columns in ``class_names`` order.
        class_names: The classes, in label order.
        sources: What each row was: its file path, or ``"<array 3>"``/``"<PIL image 3>"``
            (the position among the inputs).
        skipped: ``(file, reason)`` for every input file that could not be read (only with
            ``errors="skip"``; the default raises).
    """

    labels: list[str]
    confidences: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    sources: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    def __iter__(self):
        # ``names, probs = result.predict(images)``
        return iter((self.labels, self.probabilities))

    def top_k(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely ``(class name, probability)`` pairs per image."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [(self.class_names[j], float(row[j])) for j in top]
            for row, top in zip(self.probabilities, order)
        ]


@dataclasses.dataclass
class FitResult:
    """What :func:`effnet_tl.fit` returns.

    Attributes:
        model: The best model (the one saved as ``model.keras``).
        class_names: Classes in label order.
        metrics: ``report.json`` as a dict (``"val"``, ``"test"`` (or ``None``), ...).
        paths: :class:`RunPaths` of the run folder.
        config: The resolved settings (``config.json``).
        history: One dict per epoch (``history.csv``).
        stopped: The NaN/Inf stop record (epoch, batch, loss, message), or ``None``.
    """

    model: Any
    class_names: tuple[str, ...]
    metrics: dict
    paths: RunPaths
    config: dict
    history: list[dict] = dataclasses.field(default_factory=list)
    stopped: dict | None = None

    @property
    def run_dir(self) -> Path:
        return self.paths.root

    @property
    def val_accuracy(self) -> float | None:
        val = self.metrics.get("val")
        return None if not val else val["accuracy"]

    @property
    def test_accuracy(self) -> float | None:
        test = self.metrics.get("test")
        return None if not test else test["accuracy"]

    @property
    def image_size(self) -> tuple[int, int]:
        shape = self.model.input_shape
        return int(shape[1]), int(shape[2])

    def predict(self, images, *, batch_size: int = 64, tta: bool = False,
                errors: str = "raise") -> Predictions:
        """Classify images: file paths, folders (every file in them), arrays ``(N, H, W, C)`` /
        ``(H, W, C)``, PIL images, or a list of any of these.

        Files are decoded, cropped and resized as the evaluation pipeline reads them. Pixels
        must be in [0, 255]; arrays that look like [0, 1] are rescaled with a warning.

        Args:
            images: what to classify.
            batch_size: images per forward pass.
            tta: average the probabilities of each image and its left-right mirror; refused
                (``ValueError``) when the run trained without left-right flips.
            errors: ``"raise"``: a file that is not a usable image raises ``ValueError``
                naming it; ``"skip"``: predict the others and list it in ``skipped``.

        Returns:
            :class:`Predictions` (unpacks as ``labels, probabilities``).
        """
        from effnet_tl.inference.predict import predict_images

        return predict_images(self.model, self.class_names, self.config, images,
                              batch_size=batch_size, tta=tta, errors=errors)


def load_run(run_dir: str | os.PathLike) -> FitResult:
    """Reopen a finished run folder (model loaded with ``safe_mode=True``).

    Example (not run here):
        >>> result = load_run("runs/digits-lite0")            # doctest: +SKIP
        >>> result.predict("some_digit.png").labels           # doctest: +SKIP
    """
    import keras

    import effnet_tl.classifier  # noqa: F401  (registers the custom objects)
    from effnet_tl.data.classes import read_labels
    from effnet_tl.train.callbacks import read_history

    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    missing = [path.name for path in (paths.model, paths.labels) if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"{str(run_dir)!r} is not a finished effnet_tl run folder: no {' or '.join(missing)} "
            "in it (effnet_tl.fit writes both when a run finishes)")
    try:
        model = keras.saving.load_model(paths.model, safe_mode=True)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise ValueError(
            f"{paths.model} was refused by Keras safe mode (keras {keras.__version__}): "
            f"{str(error).split('. ')[0]}. Loading it could run code stored in the file, so "
            "effnet_tl never loads it; rebuild the model without that layer") from error
    return FitResult(
        model=model,
        class_names=read_labels(paths.labels),
        metrics=read_json(paths.report) or {},
        paths=paths,
        config=read_json(paths.config) or {},
        history=read_history(paths.history),
        stopped=(read_json(paths.report) or {}).get("nonfinite_stop"),
    )


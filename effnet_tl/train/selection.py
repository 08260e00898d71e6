"""Which epoch is kept, and when a phase stops: one ranking rule for both.

A validation set of a few dozen images saturates accuracy quickly (1.0 from the first
epoch), and a tie never replaces the first epoch: best-only saving on accuracy alone keeps
an untrained model. :class:`Ranking` orders epochs by the monitored metric and breaks ties
with the other one (``val_accuracy`` then lower ``val_loss``, or the reverse), across every
phase of a run.

* :class:`KeepBest` holds the best epoch's trained weights, writes them to
  ``backup/<phase>-best.npz`` when they improve (cheap: the trainable part only, with the
  moving statistics of BatchNorm layers that train from scratch), and at
  the end of the phase puts the best weights of the whole run back into the classifier
  and writes ``model.keras`` once. The next phase starts from there.
* :class:`StopWhenStalled` is early stopping that never fires during the learning-rate
  warm-up: patience counts epochs after it.
* :class:`StopAtDeadline` ends a phase when the next epoch would end after a time budget.
* :func:`resume_callbacks` assembles both with the resume, NaN and history callbacks of
  :mod:`effnet_tl.train.callbacks`: what every phase of ``fit`` trains with, usable with any
  ``model.fit``.

Example:
    >>> ranking = Ranking("val_accuracy")
    >>> a = ranking.key({"val_accuracy": 1.0, "val_loss": 1.2})
    >>> b = ranking.key({"val_accuracy": 1.0, "val_loss": 0.4})
    >>> ranking.better(b, a), ranking.better(a, b)
    (True, False)
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from effnet_tl.compat import sublayers
from effnet_tl.train.callbacks import HistoryCSV, ResumeFromBackup, StopOnNonFinite, read_history

__all__ = ["KeepBest", "Ranking", "StopAtDeadline", "StopWhenStalled", "resume_callbacks"]

_OTHER = {"val_accuracy": "val_loss", "val_loss": "val_accuracy"}


class Ranking:
    """Orders epochs by ``monitor`` (higher accuracy / lower loss), ties by the other metric."""

    def __init__(self, monitor: str = "val_accuracy"):
        if monitor not in _OTHER:
            raise ValueError(f"monitor must be one of {sorted(_OTHER)}. Received: {monitor!r}")
        self.monitor = monitor
        self.tie_breaker = _OTHER[monitor]

    @staticmethod
    def _signed(name: str, value) -> float | None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(value):
            return None
        return value if "acc" in name else -value

    def key(self, logs: dict | None) -> tuple[float, float] | None:
        """A comparable key (bigger is better), or ``None`` when the monitor is missing/NaN."""
        logs = logs or {}
        first = self._signed(self.monitor, logs.get(self.monitor))
        if first is None:
            return None
        second = self._signed(self.tie_breaker, logs.get(self.tie_breaker))
        return first, -math.inf if second is None else second

    @staticmethod
    def better(key, than) -> bool:
        return key is not None and (than is None or key > than)

    def best_row(self, rows: list[dict]) -> dict | None:
        """The first row with the best key (history order), or ``None``."""
        best = None
        for row in rows:
            if self.better(self.key(row), self.key(best) if best else None):
                best = row
        return best

    def describe(self, row: dict) -> str:
        parts = [f"{name} {row[name]:.4f}" for name in (self.monitor, self.tie_breaker)
                 if isinstance(row.get(name), float)]
        return ", ".join(parts)


def _save_arrays(path: Path, arrays: list[np.ndarray], epoch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, np.asarray(epoch), *arrays)
    os.replace(partial, path)  # a kill never leaves half a file


def _load_arrays(path: Path) -> tuple[int, list[np.ndarray]] | None:
    if not path.exists():
        return None
    with np.load(path) as stored:
        arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    return int(arrays[0]), arrays[1:]


def epoch_state(model: keras.Model) -> list:
    """The variables that make an epoch's model: the trainable weights, and the moving
    statistics of every BatchNormalization that trains (a backbone from scratch); frozen
    BatchNorm statistics never change, and restoring the kept epoch's weights beside the last
    epoch's statistics would evaluate a model that never existed."""
    variables, seen = list(model.trainable_weights), set()
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable \
                and id(layer) not in seen:
            seen.add(id(layer))
            variables += [layer.moving_mean, layer.moving_variance]
    return variables


class KeepBest(keras.callbacks.Callback):
    """Keep the run's best epoch by :class:`Ranking`; write ``model.keras`` when a phase ends.

    The trained model may be the classifier itself or a model over cached features that
    shares the classifier's top layers (:func:`effnet_tl.train.surgery.head_model`); either way
    ``model.keras`` is the whole ``classifier``.

    Args:
        classifier: The whole classifier (what ``model.keras`` holds); ``None``: the model
            being trained.
        ranking: The epoch order.
        model_path: ``runs/<name>/model.keras``.
        best_weights: ``backup/<phase>-best.npz``: this phase's best trainable weights, read
            back when a killed phase resumes.
        history_path: ``history.csv``: epochs of earlier phases (and of the killed run) set
            the bar, so a worse epoch never replaces a better one.

    After training, :attr:`best` is the kept epoch's history row (``None`` if no epoch had a
    finite validation score) and :attr:`improved` says whether this phase produced it.
    """

    def __init__(self, classifier=None, *, ranking: Ranking, model_path, best_weights,
                 history_path):
        super().__init__()
        self.classifier = classifier
        self.ranking = ranking
        self.model_path = Path(model_path)
        self.best_weights_path = Path(best_weights)
        self.history_path = Path(history_path)
        self.best: dict | None = None
        self.improved = False
        self._weights: list[np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        # The bar: every epoch recorded so far (earlier phases, and this one before a kill).
        self.best = self.ranking.best_row(read_history(self.history_path))
        self.improved, self._weights = False, None
        stored = _load_arrays(self.best_weights_path)
        if stored is not None and self.best is not None and stored[0] == self.best["epoch"]:
            shapes = [tuple(w.shape) for w in epoch_state(self.model)]
            if [a.shape for a in stored[1]] == shapes:
                self._weights, self.improved = stored[1], True

    def on_epoch_end(self, epoch, logs=None):
        key = self.ranking.key(logs)
        if not self.ranking.better(key, self.ranking.key(self.best) if self.best else None):
            return
        self.best = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()
                                        if isinstance(v, (int, float, np.floating))}}
        self.improved = True
        self._weights = [w.numpy() for w in epoch_state(self.model)]
        _save_arrays(self.best_weights_path, self._weights, epoch)

    def on_train_end(self, logs=None):
        classifier = self.classifier if self.classifier is not None else self.model
        if self.improved and self._weights is not None:
            for variable, value in zip(epoch_state(self.model), self._weights):
                variable.assign(value)
            classifier.save(self.model_path, overwrite=True)
        elif self.model_path.exists():
            # The best epoch belongs to an earlier phase: start the next one from it.
            classifier.load_weights(self.model_path)
        else:
            # No finite epoch at all (a NaN in the very first one): keep the restored weights.
            classifier.save(self.model_path, overwrite=True)


def _last_epoch(callback, epoch: int) -> bool:
    """Whether ``epoch`` ends the ``fit`` call anyway (then stopping it early says nothing)."""
    return epoch + 1 >= (callback.params or {}).get("epochs", math.inf)


class StopWhenStalled(keras.callbacks.Callback):
    """Stop a phase ``patience`` epochs after its best, never during the warm-up.

    Args:
        ranking: The epoch order (the same one :class:`KeepBest` uses).
        patience: Epochs after the warm-up without a better epoch of this phase.
        first_epoch: The phase's first epoch (epochs continue across phases).
        warmup_epochs: The phase's warm-up epochs; no stop before they are over.
        history_path, phase: Rows of this phase already in ``history.csv`` (a resumed run)
            are replayed, so a resume keeps counting where the killed run was.

    After training, :attr:`stopped_epoch` is the epoch it stopped after (``None``: it did
    not) and :attr:`reason` says why, in words.
    """

    def __init__(self, *, ranking: Ranking, patience: int, first_epoch: int, warmup_epochs: int,
                 history_path, phase: str):
        super().__init__()
        self.ranking = ranking
        self.patience = patience
        self.first_epoch = first_epoch
        self.warmup_epochs = warmup_epochs
        self.history_path = Path(history_path)
        self.phase = phase
        self.stopped_epoch: int | None = None
        self.reason: str | None = None
        self._best = None
        self._best_epoch = None
        self._wait = 0
        self._replayed = False

    def _observe(self, epoch, logs) -> None:
        key = self.ranking.key(logs)
        if self.ranking.better(key, self._best):
            self._best, self._best_epoch, self._wait = key, epoch, 0
        elif epoch - self.first_epoch >= self.warmup_epochs:
            self._wait += 1

    def on_epoch_begin(self, epoch, logs=None):
        if self._replayed:
            return
        self._replayed = True
        for row in read_history(self.history_path):
            if self.first_epoch <= row["epoch"] < epoch and row.get("phase") == self.phase:
                self._observe(row["epoch"], row)

    def on_epoch_end(self, epoch, logs=None):
        self._observe(epoch, logs)
        if self._wait >= self.patience and not _last_epoch(self, epoch):
            self.stopped_epoch = epoch
            self.reason = (f"{self.ranking.monitor} has not improved for {self._wait} epochs "
                           f"after the warm-up (best of this phase: epoch {self._best_epoch + 1})"
                           if self._best_epoch is not None else
                           f"no finite {self.ranking.monitor} for {self._wait} epochs")
            self.model.stop_training = True


class StopAtDeadline(keras.callbacks.Callback):
    """Stop when the next epoch, as long as the slowest so far, would end after ``deadline``.

    Args:
        deadline: A ``time.time()`` value.

    Example:
        >>> import time
        >>> StopAtDeadline(time.time() + 60).stopped_epoch is None
        True
    """

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped_epoch: int | None = None
        self.reason: str | None = None
        self._started = None
        self._longest = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self._longest = max(self._longest, now - self._started)
        if now + self._longest > self.deadline and not _last_epoch(self, epoch):
            self.stopped_epoch = epoch
            self.reason = (f"the time budget ends in {max(0.0, self.deadline - now):.0f} s and "
                           f"an epoch takes {self._longest:.0f} s")
            self.model.stop_training = True


def resume_callbacks(run_dir, *, phase: str = "train", monitor: str = "val_accuracy",
                     patience: int | None = 5, warmup_epochs: int = 0, first_epoch: int = 0,
                     classifier=None, checkpoint_name: str = "model.keras",
                     history_name: str = "history.csv") -> list[keras.callbacks.Callback]:
    """The callbacks of one resumable phase in a run folder, in the order they must run.

    ``ResumeFromBackup`` restores weights and the start epoch before ``StopOnNonFinite``
    takes its first snapshot; the NaN check restores good weights inside the failing epoch,
    so the kept-epoch checkpoint and the backup never see bad ones; ``HistoryCSV`` writes
    last, so a kill between the backup and the CSV write only repeats that epoch.

    Files in ``run_dir``: ``backup/<phase>/`` (weights, optimizer and epoch),
    ``backup/<phase>-best.npz``, ``history.csv`` (all phases) and ``model.keras`` (the kept
    epoch of every phase so far, by :class:`Ranking`).

    Args:
        run_dir: The run folder; created if missing.
        phase: The phase's name (one backup each); a rerun skips a finished phase.
        monitor: ``"val_accuracy"`` or ``"val_loss"`` (ties broken by the other).
        patience: Epochs after the warm-up without improvement before the phase stops;
            ``None`` disables early stopping.
        warmup_epochs: Epochs of learning-rate warm-up at the phase's start (no stop there).
        first_epoch: The phase's first epoch (epochs continue across phases).
        classifier: What ``model.keras`` holds, when the trained model is only part of it.
        checkpoint_name, history_name: File names in ``run_dir``.

    Example:
        >>> import tempfile, os, numpy as np, keras
        >>> run_dir = tempfile.mkdtemp()
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
        >>> model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
        >>> x, y = np.ones((8, 2)), np.eye(2)[[0, 1] * 4]
        >>> callbacks = resume_callbacks(run_dir, phase="head")
        >>> _ = model.fit(x, y, validation_data=(x, y), epochs=2, callbacks=callbacks, verbose=0)
        >>> sorted(os.listdir(run_dir))
        ['backup', 'history.csv', 'model.keras']
    """
    if not phase or not isinstance(phase, str) or os.sep in phase or "/" in phase:
        raise ValueError(f"phase must be a plain non-empty name. Received: phase={phase!r}")
    if not checkpoint_name.endswith(".keras"):
        raise ValueError(f"checkpoint_name must end in '.keras'. Received: "
                         f"checkpoint_name={checkpoint_name!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                 or patience < 0):
        raise ValueError(f"patience must be None or an integer >= 0. Received: {patience!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ranking = Ranking(monitor)
    history = run_dir / history_name
    callbacks: list[keras.callbacks.Callback] = [
        ResumeFromBackup(backup_dir=run_dir / "backup" / phase),
        StopOnNonFinite(),
        KeepBest(classifier, ranking=ranking, model_path=run_dir / checkpoint_name,
                 best_weights=run_dir / "backup" / f"{phase}-best.npz", history_path=history),
    ]
    if patience is not None:
        callbacks.append(StopWhenStalled(ranking=ranking, patience=patience,
                                         first_epoch=first_epoch, warmup_epochs=warmup_epochs,
                                         history_path=history, phase=phase))
    callbacks.append(HistoryCSV(path=history, phase=phase))
    return callbacks

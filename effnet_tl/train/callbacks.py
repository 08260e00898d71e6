"""Callbacks for a run folder that survives kills and bad learning rates.

* :class:`StopOnNonFinite` stops on a NaN/Inf loss, says where and why, and puts back the
  weights of the last finished epoch with a finite loss.
* :class:`ResumeFromBackup` is ``keras.callbacks.BackupAndRestore`` that keeps its state after a
  finished phase (a rerun skips it) and clears the resume epoch it leaves on the model.
* :class:`HistoryCSV` writes ``history.csv`` so that a resumed run lists every epoch exactly
  once, even when a kill landed between the backup and the CSV write.

:func:`effnet_tl.train.selection.resume_callbacks` assembles them with the kept-epoch
checkpoint and early stopping, in the order they must run.

Example:
    >>> import tempfile, os, numpy as np, keras
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    >>> model.compile(optimizer="sgd", loss="categorical_crossentropy")
    >>> x, y = np.ones((8, 2)), np.eye(2)[[0, 1] * 4]
    >>> _ = model.fit(x, y, epochs=2, callbacks=[StopOnNonFinite(), HistoryCSV(path=path)],
    ...               verbose=0)
    >>> [row["epoch"] for row in read_history(path)]
    [0, 1]
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from effnet_tl import compat

__all__ = [
    "HistoryCSV",
    "ResumeFromBackup",
    "StopOnNonFinite",
    "read_history",
    "summarize_stop",
]

def _is_finite(value) -> bool:
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype="float64"))))
    except (TypeError, ValueError):
        return True  # Not a number (e.g. a string log entry): nothing to judge.


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop cleanly on a NaN/Inf loss and restore the last good weights.

    "Last good" is the state (model variables and optimizer variables) at the end of the most
    recent epoch whose loss was finite, or the state at the start of training if no epoch
    finished. The weights are restored inside the failing batch's callback, so callbacks that
    run at the end of that epoch (checkpoint, backup) only ever see good weights.

    After a stop, :attr:`message` holds a human-readable explanation and :attr:`stopped_at`
    ``{"epoch", "batch", "loss"}``; both are ``None`` while training is healthy.

    Args:
        monitor: Log keys to check after every batch; by default the training ``"loss"``.

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
        >>> stopper = StopOnNonFinite()
        >>> _ = model.fit(np.ones((4, 1)) * 1e10, np.zeros((4, 1)), batch_size=2, epochs=3,
        ...               callbacks=[stopper], verbose=0)  # doctest: +ELLIPSIS
        Stopping...
        >>> stopper.stopped_at["epoch"], bool(np.isfinite(model.get_weights()[0]).all())
        (0, True)
    """

    def __init__(self, *, monitor: tuple[str, ...] | str = ("loss",)):
        super().__init__()
        self.monitor = (monitor,) if isinstance(monitor, str) else tuple(monitor)
        self.stopped_at: dict | None = None
        self.message: str | None = None
        self._good_model_state: list[np.ndarray] | None = None
        self._good_optimizer_state: list[np.ndarray] | None = None
        self._good_epoch: int | None = None
        self._current_epoch = 0

    def _optimizer_variables(self):
        optimizer = getattr(self.model, "optimizer", None)
        return list(optimizer.variables) if optimizer is not None and optimizer.built else []

    def _snapshot(self):
        # Host copies: assigning them back later cannot alias the live (possibly NaN) buffers.
        self._good_model_state = [np.array(v.numpy()) for v in self.model.variables]
        self._good_optimizer_state = [np.array(v.numpy()) for v in self._optimizer_variables()]

    def _restore(self):
        for variable, value in zip(self.model.variables, self._good_model_state):
            variable.assign(value)
        optimizer_variables = self._optimizer_variables()
        # The optimizer may have built its slots after the snapshot (first step of training);
        # then its fresh state is the right "good" state only if it is finite, so zero it.
        if len(optimizer_variables) == len(self._good_optimizer_state):
            for variable, value in zip(optimizer_variables, self._good_optimizer_state):
                variable.assign(value)
        else:
            for variable in optimizer_variables:
                if not _is_finite(variable.numpy()):
                    variable.assign(np.zeros(variable.shape, variable.dtype))

    def on_train_begin(self, logs=None):
        # Runs after ResumeFromBackup (order in resume_callbacks), so a resumed state counts.
        self.stopped_at = None
        self.message = None
        self._good_epoch = None
        self._snapshot()

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {key: logs[key] for key in self.monitor if key in logs and not _is_finite(logs[key])}
        if not bad or self.stopped_at is not None:
            return
        key, value = next(iter(bad.items()))
        value = float(np.asarray(value, dtype="float64"))
        self.stopped_at = {"epoch": self._current_epoch, "batch": int(batch), "loss": value}
        restored = (
            f"the weights from the end of epoch {self._good_epoch}"
            if self._good_epoch is not None
            else "the weights from the start of training"
        )
        self.message = (
            f"Stopping: {key} became {value} at epoch {self._current_epoch}, batch {batch}. "
            f"Restored {restored}, so the saved model is the last good one. Likely causes: "
            "a learning rate too high for this model and batch size (try find_lr or a 10x "
            "lower rate / a longer warm-up); bad inputs (NaN/Inf pixels, images already "
            "divided by 255 mixed with raw ones, corrupt files); or float16 overflow under "
            "mixed precision without loss scaling."
        )
        self._restore()
        self.model.stop_training = True
        # print, not logging: with no logging configured (a notebook), logging's last-resort
        # handler would drop nothing but duplicate the line on stderr.
        print(self.message, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        # Only epochs that completed with finite losses become the new "last good" state.
        if self.stopped_at is None and all(
            _is_finite(logs[key]) for key in self.monitor if logs and key in logs
        ):
            self._snapshot()
            self._good_epoch = epoch


class ResumeFromBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` for phased runs that are rerun after a kill.

    Differences from the Keras callback, and why:

    * ``delete_checkpoint`` defaults to ``False``: the backup of a *finished* phase stays, so
      rerunning the whole training call restores that phase's final state and skips its
      epochs instead of training it again.
    * At the end of training it clears the resume epoch Keras' BackupAndRestore leaves on the
      model (:func:`effnet_tl.compat.clear_resume_epoch`); Keras never resets it, so a later
      ``fit`` on the same model (the next phase) would silently start from the stale epoch.

    Weights *and* optimizer state (including ``iterations``, which drives learning-rate
    schedules) are backed up at the end of every epoch (``save_freq="epoch"``); a run killed
    mid-epoch restarts that epoch.

    Args:
        backup_dir: A directory used by this callback only (one per training phase).
        save_freq: ``"epoch"`` or a number of batches, as in Keras.
        double_checkpoint: Keep the previous backup too, in case the latest is corrupt.
        delete_checkpoint: Delete the backup when training finishes.
    """

    def __init__(
        self,
        *,
        backup_dir: str | os.PathLike,
        save_freq: str | int = "epoch",
        double_checkpoint: bool = True,
        delete_checkpoint: bool = False,
    ):
        super().__init__(
            backup_dir=str(backup_dir),
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )

    @property
    def resume_epoch(self) -> int:
        """The epoch a new ``fit`` would start from (0 when there is no backup)."""
        try:
            with open(compat.backup_metadata_path(self)) as handle:
                return int(json.load(handle)["epoch"])
        except (OSError, ValueError, KeyError):
            return 0

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        compat.clear_resume_epoch(self.model)


def read_history(path: str | os.PathLike) -> list[dict]:
    """Rows of a history CSV as dicts (``epoch`` as int, other numbers as float).

    Example:
        >>> read_history("/nonexistent/history.csv")
        []
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            parsed: dict = {}
            for key, value in row.items():
                if key == "epoch":
                    parsed[key] = int(value)
                else:
                    try:
                        parsed[key] = float(value)
                    except (TypeError, ValueError):
                        parsed[key] = value
            rows.append(parsed)
    return rows


class HistoryCSV(keras.callbacks.Callback):
    """Per-epoch history in a CSV that stays correct across resumes and phases.

    When training starts at epoch ``k`` (fresh: 0; resumed or second phase: ``k``), rows with
    ``epoch >= k`` are dropped first, so each epoch appears exactly once however the previous
    run died. The file is rewritten atomically (temporary file + ``os.replace``) after every
    epoch, so a kill never leaves half a line. Columns are the union over all rows (a phase may
    log keys another did not); the learning rate is logged as ``learning_rate``.

    Args:
        path: The CSV file, e.g. ``runs/<name>/history.csv``.
        phase: Written in a ``phase`` column (when given), so plots and resumed early
            stopping can tell the phases apart.

    Example:
        >>> import tempfile, os, numpy as np, keras
        >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> _ = model.fit(np.ones((4, 1)), np.ones((4, 1)), epochs=2,
        ...               callbacks=[HistoryCSV(path=path)], verbose=0)
        >>> [row["epoch"] for row in read_history(path)]
        [0, 1]
    """

    def __init__(self, *, path: str | os.PathLike, phase: str | None = None):
        super().__init__()
        self.path = Path(path)
        self.phase = phase
        self._rows: list[dict] | None = None

    def on_train_begin(self, logs=None):
        self._rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:
            # The first epoch of this fit call tells where the trajectory continues.
            self._rows = [row for row in read_history(self.path) if row["epoch"] < epoch]

    def on_epoch_end(self, epoch, logs=None):
        row: dict = {"epoch": epoch}
        if self.phase is not None:
            row["phase"] = self.phase
        for key, value in (logs or {}).items():
            try:
                row[key] = float(np.asarray(value))
            except (TypeError, ValueError):
                row[key] = value
        optimizer = getattr(self.model, "optimizer", None)
        if "learning_rate" not in row and optimizer is not None:
            try:
                row["learning_rate"] = float(np.asarray(optimizer.learning_rate))
            except (TypeError, ValueError, AttributeError):
                pass
        self._rows.append(row)
        self._write()

    def _write(self):
        columns = ["epoch"]
        for row in self._rows:
            columns.extend(key for key in row if key not in columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(temporary, self.path)


def summarize_stop(callbacks) -> Mapping | None:
    """The NaN/Inf stop record (epoch, batch, loss, message) found in ``callbacks``, or ``None``.

    Example:
        >>> summarize_stop([StopOnNonFinite()]) is None
        True
    """
    for callback in callbacks:
        if isinstance(callback, StopOnNonFinite) and callback.stopped_at is not None:
            return {**callback.stopped_at, "message": callback.message}
    return None

"""The kept epoch and early stopping: one ranking rule, across phases, resumable."""

import keras
import numpy as np
import pytest

from effnet_tl.train.callbacks import HistoryCSV, read_history
from effnet_tl.train.selection import KeepBest, Ranking, StopWhenStalled


class _Scores(keras.callbacks.Callback):
    """Writes fixed val_accuracy/val_loss per epoch into the logs (before the callbacks that
    read them) and records the weights of every epoch."""

    def __init__(self, accuracy, loss):
        super().__init__()
        self.accuracy, self.loss, self.weights = accuracy, loss, {}

    def on_epoch_end(self, epoch, logs=None):
        logs["val_accuracy"], logs["val_loss"] = self.accuracy[epoch], self.loss[epoch]
        self.weights[epoch] = [w.numpy() for w in self.model.weights]


class _Kill(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise RuntimeError("killed")


def _model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    net.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    return net


X = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
Y = np.eye(2, dtype="float32")[np.arange(16) % 2]


def _keep(net, tmp_path, phase="head"):
    return KeepBest(net, ranking=Ranking("val_accuracy"), model_path=tmp_path / "model.keras",
                    best_weights=tmp_path / "backup" / f"{phase}-best.npz",
                    history_path=tmp_path / "history.csv")


def test_ranking_breaks_accuracy_ties_with_loss_and_ignores_nan():
    ranking = Ranking("val_accuracy")
    rows = [{"epoch": 0, "val_accuracy": 1.0, "val_loss": 1.29},
            {"epoch": 1, "val_accuracy": 1.0, "val_loss": 0.41},
            {"epoch": 2, "val_accuracy": float("nan"), "val_loss": 0.1},
            {"epoch": 3, "val_accuracy": 0.9, "val_loss": 0.05}]
    assert ranking.best_row(rows)["epoch"] == 1
    assert Ranking("val_loss").best_row(rows)["epoch"] == 3
    with pytest.raises(ValueError, match="monitor must be one of"):
        Ranking("accuracy")


def test_saturated_accuracy_keeps_the_lowest_loss_epoch_not_the_first(tmp_path):
    net = _model()
    scores = _Scores([1.0, 1.0, 1.0, 1.0], [1.29, 0.80, 0.41, 0.55])
    net.fit(X, Y, epochs=4, verbose=0, callbacks=[scores, _keep(net, tmp_path),
                                                   HistoryCSV(path=tmp_path / "history.csv")])
    written = keras.saving.load_model(tmp_path / "model.keras")
    for got, want in zip(written.get_weights(), scores.weights[2]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(net.get_weights(), scores.weights[2]):  # the next phase starts there
        np.testing.assert_array_equal(got, want)


def test_a_later_phase_that_never_beats_the_first_restores_its_best(tmp_path):
    first = _model()
    scores = _Scores([0.5, 0.9], [1.0, 0.5])
    first.fit(X, Y, epochs=2, verbose=0, callbacks=[scores, _keep(first, tmp_path),
                                                     HistoryCSV(path=tmp_path / "history.csv")])
    second = _Scores({2: 0.6, 3: 0.7}, {2: 0.9, 3: 0.8})
    keep = _keep(first, tmp_path, phase="finetune")
    first.fit(X, Y, initial_epoch=2, epochs=4, verbose=0,
              callbacks=[second, keep, HistoryCSV(path=tmp_path / "history.csv")])
    assert not keep.improved and keep.best["epoch"] == 1
    for got, want in zip(first.get_weights(), scores.weights[1]):
        np.testing.assert_array_equal(got, want)


def test_best_epoch_survives_a_kill_between_it_and_the_end_of_the_phase(tmp_path):
    first = _model()
    scores = _Scores([0.5, 0.9, 0.6, 0.7], [1.0, 0.5, 0.6, 0.6])
    history = HistoryCSV(path=tmp_path / "history.csv")
    with pytest.raises(RuntimeError, match="killed"):  # killed after epoch 2: best was epoch 1
        first.fit(X, Y, epochs=4, verbose=0,
                  callbacks=[scores, _keep(first, tmp_path), history, _Kill(after=2)])
    assert not (tmp_path / "model.keras").exists()  # the kill came before the phase's end

    rerun = _model()  # a fresh process: other weights in memory
    rerun.fit(X, Y, epochs=4, initial_epoch=3, verbose=0,
              callbacks=[_Scores([0.5, 0.9, 0.6, 0.7], [1.0, 0.5, 0.6, 0.6]),
                         _keep(rerun, tmp_path), HistoryCSV(path=tmp_path / "history.csv")])
    written = keras.saving.load_model(tmp_path / "model.keras")
    for got, want in zip(written.get_weights(), scores.weights[1]):
        np.testing.assert_array_equal(got, want)


def _stall(tmp_path, *, patience, warmup, first_epoch=0):
    return StopWhenStalled(ranking=Ranking("val_accuracy"), patience=patience,
                           first_epoch=first_epoch, warmup_epochs=warmup,
                           history_path=tmp_path / "history.csv", phase="head")


def test_early_stopping_waits_for_the_warm_up_then_counts_patience(tmp_path):
    # Never improves after epoch 0: Keras' EarlyStopping(patience=2) would stop after epoch 2.
    flat = _Scores([0.8] * 10, [0.5] * 10)
    stall = _stall(tmp_path, patience=2, warmup=4)
    history = HistoryCSV(path=tmp_path / "history.csv", phase="head")
    net = _model()
    net.fit(X, Y, epochs=10, verbose=0, callbacks=[flat, stall, history])
    assert stall.stopped_epoch == 5  # warm-up epochs 0-3, then epochs 4 and 5 without progress
    assert len(read_history(tmp_path / "history.csv")) == 6
    assert "has not improved for 2 epochs after the warm-up (best of this phase: epoch 1)" \
        in stall.reason


def test_early_stopping_resumes_its_count_from_the_history(tmp_path):
    flat = _Scores([0.8] * 10, [0.5] * 10)
    net = _model()
    with pytest.raises(RuntimeError, match="killed"):
        net.fit(X, Y, epochs=10, verbose=0, callbacks=[
            flat, _stall(tmp_path, patience=3, warmup=1),
            HistoryCSV(path=tmp_path / "history.csv", phase="head"), _Kill(after=2)])
    stall = _stall(tmp_path, patience=3, warmup=1)
    net.fit(X, Y, initial_epoch=3, epochs=10, verbose=0, callbacks=[
        _Scores([0.8] * 10, [0.5] * 10), stall, HistoryCSV(path=tmp_path / "history.csv",
                                                           phase="head")])
    assert stall.stopped_epoch == 3  # epochs 1, 2 (replayed) and 3 without progress

"""effnet_tl.train.callbacks and the resume_callbacks assembly: NaN stop + restore, resume after
a kill, history CSV."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from effnet_tl import compat
from effnet_tl.train.callbacks import HistoryCSV, StopOnNonFinite, read_history, summarize_stop
from effnet_tl.train.selection import KeepBest, StopWhenStalled, resume_callbacks

REPO_ROOT = Path(__file__).resolve().parents[2]


def _model(lr=0.05):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]
    return x, y


class _RecordEpochEnd(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = [w.copy() for w in self.model.get_weights()]


class _BlowUpAt(keras.callbacks.Callback):
    """Makes the learning rate absurd from a given epoch on, to produce a non-finite loss."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer.learning_rate.assign(1e38)


def test_stop_on_non_finite_restores_last_good_epoch(capsys):
    x, y = _data()
    model = _model()
    recorder = _RecordEpochEnd()
    stopper = StopOnNonFinite()
    # Recorder first: it sees epoch ends before the stopper; the blow-up starts at epoch 2.
    history = model.fit(x, y, batch_size=8, epochs=6, shuffle=False, verbose=0,
                        callbacks=[recorder, stopper, _BlowUpAt(2)])
    assert stopper.stopped_at is not None
    assert stopper.stopped_at["epoch"] == 2
    assert not np.isfinite(stopper.stopped_at["loss"])
    assert len(history.history["loss"]) == 3  # epochs 0, 1 and the broken 2, then stop
    for restored, good in zip(model.get_weights(), recorder.weights[1]):
        np.testing.assert_array_equal(restored, good)
    assert all(np.isfinite(v.numpy()).all() for v in model.optimizer.variables
               if v.path != model.optimizer.learning_rate.path)
    printed = capsys.readouterr().out
    assert "epoch 2, batch" in printed and "learning rate" in printed
    assert summarize_stop([stopper])["epoch"] == 2


def test_stop_on_inf_input_in_first_batch_restores_initial_weights():
    x, y = _data()
    x[0, 0] = np.inf
    model = _model()
    initial = [w.copy() for w in model.get_weights()]
    stopper = StopOnNonFinite()
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[stopper])
    assert stopper.stopped_at["epoch"] == 0 and stopper.stopped_at["batch"] == 0
    assert "start of training" in stopper.message
    for restored, start in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(restored, start)


def test_nan_stop_in_full_callback_set_keeps_a_finite_checkpoint(tmp_path):
    x, y = _data()
    model = _model()
    callbacks = resume_callbacks(tmp_path, phase="head", monitor="val_loss", patience=None)
    model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=5, shuffle=False, verbose=0,
              callbacks=callbacks + [_BlowUpAt(2)])
    assert summarize_stop(callbacks)["epoch"] == 2
    saved = keras.saving.load_model(tmp_path / "model.keras")
    assert all(np.isfinite(w).all() for w in saved.get_weights())
    assert [row["epoch"] for row in read_history(tmp_path / "history.csv")] == [0, 1, 2]


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("simulated kill")


def test_resume_in_process_continues_at_epoch_two_with_history_once(tmp_path):
    x, y = _data()
    straight = _model()
    straight.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)

    model = _model()
    with pytest.raises(RuntimeError, match="simulated kill"):
        model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=4, shuffle=False,
                  verbose=0, callbacks=resume_callbacks(tmp_path) + [_Interrupt()])
    fresh = _model()  # a new process would rebuild the model from scratch
    history = fresh.fit(x, y, validation_data=(x, y), batch_size=8, epochs=4, shuffle=False,
                        verbose=0, callbacks=resume_callbacks(tmp_path))
    assert len(history.history["loss"]) == 2  # only epochs 2 and 3 ran
    assert [row["epoch"] for row in read_history(tmp_path / "history.csv")] == [0, 1, 2, 3]
    assert int(fresh.optimizer.iterations.numpy()) == 16  # 4 epochs x 4 batches, Adam state kept
    for resumed, reference in zip(fresh.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(resumed, reference, rtol=1e-5, atol=1e-6)
    assert compat.resume_epoch(fresh) is None  # no stale resume epoch for a next phase


def test_two_phases_rerun_skips_finished_phases(tmp_path):
    x, y = _data()

    def train(model):
        model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=2, shuffle=False,
                  verbose=0, callbacks=resume_callbacks(tmp_path, phase="head"))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                      metrics=["accuracy"])
        return model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=4, initial_epoch=2,
                         shuffle=False, verbose=0,
                         callbacks=resume_callbacks(tmp_path, phase="finetune"))

    first = _model()
    train(first)
    rows = read_history(tmp_path / "history.csv")
    assert [(row["epoch"], row["phase"]) for row in rows] == [
        (0, "head"), (1, "head"), (2, "finetune"), (3, "finetune")]
    assert "learning_rate" in rows[0]
    again = _model()
    history = train(again)
    assert history.history == {}  # both phases restored, nothing re-trained
    assert read_history(tmp_path / "history.csv") == rows
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_bar_and_early_stopping_are_seeded_from_history(tmp_path):
    rows = "epoch,phase,val_loss\n0,ft,1.0\n1,ft,0.9\n2,ft,0.95\n3,ft,0.96\n"
    (tmp_path / "history.csv").write_text(rows)
    callbacks = resume_callbacks(tmp_path, phase="ft", monitor="val_loss", patience=3)
    keep = next(c for c in callbacks if isinstance(c, KeepBest))
    early = next(c for c in callbacks if isinstance(c, StopWhenStalled))
    model = _model()
    for callback in callbacks:
        callback.set_model(model)
    model.stop_training = False
    keep.on_train_begin()
    assert keep.best["epoch"] == 1 and keep.best["val_loss"] == pytest.approx(0.9)
    early.on_epoch_begin(4)  # replays epochs 0-3: best at 1, then two without improvement
    assert model.stop_training is False
    early.on_epoch_end(4, {"val_loss": 0.97})  # third epoch without improvement: stop
    assert model.stop_training is True and early.stopped_epoch == 4


def test_history_csv_drops_rows_from_the_restart_epoch_on(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.8\n2,0.7\n")  # a kill left epoch 2 unbacked-up
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[HistoryCSV(path=path)])
    rows = read_history(path)
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
    assert rows[2]["loss"] != 0.7
    assert not path.with_name("history.csv.tmp").exists()


def test_bad_arguments_echo_values(tmp_path):
    with pytest.raises(ValueError, match="'a/b'"):
        resume_callbacks(tmp_path, phase="a/b")
    with pytest.raises(ValueError, match="best.h5"):
        resume_callbacks(tmp_path, checkpoint_name="best.h5")
    with pytest.raises(ValueError, match="'accuracy'"):
        resume_callbacks(tmp_path, monitor="accuracy")


KILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np, keras
    from effnet_tl.train.selection import resume_callbacks

    run_dir, mode = Path(sys.argv[1]), sys.argv[2]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]

    class Hang(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if mode == "kill" and self.epoch == 2 and batch == 1:
                (run_dir / "hanging").write_text("epoch 2")
                time.sleep(600)  # the parent SIGKILLs us here, mid-epoch 2
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    class Ran(keras.callbacks.Callback):
        epochs = []
        def on_epoch_begin(self, epoch, logs=None):
            Ran.epochs.append(epoch)

    callbacks = [] if mode == "straight" else resume_callbacks(run_dir / "run")
    model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=4, shuffle=False, verbose=0,
              callbacks=callbacks + [Hang(), Ran()])
    print("RESULT" + json.dumps({"epochs": Ran.epochs,
          "iterations": int(model.optimizer.iterations.numpy()),
          "weights": [w.tolist() for w in model.get_weights()]}))
    """
)


def _spawn(tmp_path, mode):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(process, timeout=90):
    out, err = process.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise AssertionError(f"no result (rc={process.returncode}); stderr:\n{err[-3000:]}")


def test_resume_after_real_sigkill_in_a_subprocess(tmp_path):
    straight = _spawn(tmp_path, "straight")  # reference run, concurrently with the victim
    victim = _spawn(tmp_path, "kill")
    deadline = time.monotonic() + 90
    while not (tmp_path / "hanging").exists():
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the training subprocess never reached epoch 2"
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert [row["epoch"] for row in read_history(tmp_path / "run" / "history.csv")] == [0, 1]

    resumed = _result(_spawn(tmp_path, "resume"))
    reference = _result(straight)
    assert resumed["epochs"] == [2, 3]
    assert resumed["iterations"] == reference["iterations"] == 16
    rows = read_history(tmp_path / "run" / "history.csv")
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
    for a, b in zip(resumed["weights"], reference["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

"""Tests for effnet_tl.compat: each private Keras attribute we rely on, against real Keras objects.

A Keras upgrade that renames or changes one of them fails here first, with a precise message,
rather than somewhere inside a training run.
"""

import json
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from packaging.requirements import Requirement

from effnet_tl import compat

REPO_ROOT = Path(__file__).resolve().parents[1]


class _Block(keras.layers.Layer):
    """A custom layer holding sublayers, like MBConv: invisible to ``Model.layers``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Dense(4, name="inner_dense")
        self.inner = keras.Sequential(
            [keras.layers.BatchNormalization(name="inner_bn")], name="inner_seq"
        )

    def call(self, x):
        return self.inner(self.conv(x))


def _nested_model():
    inputs = keras.Input((3,))
    block = _Block(name="block")
    outputs = keras.layers.Dense(2, name="head")(block(inputs))
    return keras.Model(inputs, outputs, name="nested"), block


def _compiled_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _data():
    x = np.arange(16, dtype="float32").reshape(8, 2) / 16
    return x, x.sum(axis=1, keepdims=True)


def test_sublayers_finds_layers_nested_in_custom_layers():
    model, block = _nested_model()
    everything = compat.sublayers(model)
    names = [layer.name for layer in everything]
    # Model.layers stops at the block; sublayers reaches the BatchNormalization inside it.
    assert "inner_bn" not in [layer.name for layer in model.layers]
    assert set(names) >= {"block", "inner_dense", "inner_seq", "inner_bn", "head"}
    assert len(names) == len(set(names))
    batch_norms = [
        layer for layer in everything if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert batch_norms == [block.inner.layers[0]]
    assert model not in everything

    with_self = compat.sublayers(block, include_self=True)
    assert with_self[0] is block
    # The inner Sequential also owns the InputLayer Keras made when it was built.
    inside = {
        layer.name for layer in with_self[1:] if not isinstance(layer, keras.layers.InputLayer)
    }
    assert inside == {"inner_dense", "inner_seq", "inner_bn"}
    direct = compat.sublayers(block, recursive=False)
    assert [layer.name for layer in direct] == ["inner_dense", "inner_seq"]
    assert compat.sublayers(block.conv) == []


def test_resume_epoch_is_set_by_backup_and_cleared(tmp_path):
    x, y = _data()
    backup_dir = str(tmp_path / "backup")
    first = _compiled_model()
    first.fit(x, y, epochs=2, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)
    ])
    assert compat.resume_epoch(first) is None  # Nothing to resume from in a fresh run.

    model = _compiled_model()
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)
    ])
    assert history.epoch == [2]
    # Keras leaves it set after training: a plain fit would start from epoch 3 again.
    assert compat.resume_epoch(model) == 2
    compat.clear_resume_epoch(model)
    assert compat.resume_epoch(model) is None
    assert model.fit(x, y, epochs=2, verbose=0).epoch == [0, 1]


def test_backup_metadata_path_is_the_file_keras_writes(tmp_path):
    x, y = _data()
    backup_dir = tmp_path / "backup"
    callback = keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False)
    path = Path(compat.backup_metadata_path(callback))
    assert path.parent == backup_dir
    assert not path.exists()
    _compiled_model().fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert json.loads(path.read_text())["epoch"] == 2
    with pytest.raises(TypeError, match="BackupAndRestore"):
        compat.backup_metadata_path(keras.callbacks.History())


def test_loss_tracker_is_the_loss_log():
    x, y = _data()
    model = _compiled_model()
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    assert tracker.name == "loss"
    assert tracker in model.metrics
    loss = model.evaluate(x, y, verbose=0)
    assert float(tracker.result()) == pytest.approx(loss, rel=1e-6)
    expected = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
    assert float(tracker.result()) == pytest.approx(expected, rel=1e-5)

    uncompiled = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="raw")
    with pytest.raises(ValueError, match="'raw'.*not compiled"):
        compat.loss_tracker(uncompiled)


class CountingModel(keras.Sequential):
    """Counts how often ``fit`` traces (runs the Python body of) its train step."""

    traces = 0

    def train_step(self, data):
        type(self).traces += 1
        return super().train_step(data)


@pytest.mark.parametrize("prebuilt", [False, True])
def test_build_for_training_makes_fit_trace_its_step_once(prebuilt):
    x, y = _data()
    model = CountingModel([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    CountingModel.traces = 0
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    if prebuilt:
        compat.build_for_training(model, dataset.element_spec)
        assert model.optimizer.built
    model.fit(dataset, epochs=2, verbose=0, shuffle=False)
    # Keras creates optimizer and metric variables inside the first trace, and TensorFlow
    # retraces a tf.function that created variables: two traces unless built beforehand.
    assert CountingModel.traces == (1 if prebuilt else 2)
    assert np.isfinite(model.evaluate(dataset, verbose=0)).all()


def _without(obj, name):
    """``obj`` with the instance attribute ``name`` gone, as if a Keras release dropped it."""
    del vars(obj)[name]
    return obj


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: compat.loss_tracker(_without(_compiled_model(), "_loss_tracker")),
         "_loss_tracker"),
        (lambda: compat.resume_epoch(_without(_compiled_model(), "_initial_epoch")),
         "_initial_epoch"),
        (lambda: compat.clear_resume_epoch(_without(_compiled_model(), "_initial_epoch")),
         "_initial_epoch"),
        (lambda: compat.backup_metadata_path(
            _without(keras.callbacks.BackupAndRestore("/tmp/backup"), "_training_metadata_path")),
         "_training_metadata_path"),
    ],
)
def test_missing_attribute_fails_with_the_keras_version(call, name):
    with pytest.raises(compat.KerasInternalsError, match=rf"'{name}' in Keras {keras.__version__}"):
        call()


def test_missing_method_fails_with_the_keras_version(monkeypatch):
    monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    with pytest.raises(
        compat.KerasInternalsError, match=rf"'_flatten_layers' in Keras {keras.__version__}"
    ):
        compat.sublayers(keras.layers.Dense(1))


def test_missing_symbolic_build_fails_with_the_keras_version(monkeypatch):
    from keras.src.trainers.trainer import Trainer

    monkeypatch.delattr(Trainer, "_symbolic_build")
    with pytest.raises(
        compat.KerasInternalsError, match=rf"'_symbolic_build' in Keras {keras.__version__}"
    ):
        compat.build_for_training(_compiled_model(), ())


def _declared_keras_requirement() -> Requirement:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: fall back to the installed metadata.
        requirements = metadata.requires("effnet_tl") or []
    else:
        with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
            requirements = tomllib.load(handle)["project"]["dependencies"]
    parsed = [Requirement(text) for text in requirements]
    (keras_requirement,) = [r for r in parsed if r.name == "keras" and not r.marker]
    return keras_requirement


def test_installed_keras_is_within_the_declared_range():
    requirement = _declared_keras_requirement()
    assert requirement.specifier, "keras must be pinned to a range in pyproject.toml"
    assert any(spec.operator == "<" for spec in requirement.specifier), (
        f"keras needs an upper bound proved by this test file; pyproject.toml says {requirement}"
    )
    assert requirement.specifier.contains(keras.__version__, prereleases=True), (
        f"Keras {keras.__version__} is installed but pyproject.toml declares {requirement}: "
        "effnet_tl/compat.py was not checked against it."
    )


def test_checked_versions_lie_within_the_declared_range():
    requirement = _declared_keras_requirement()
    for version in compat.CHECKED_KERAS_VERSIONS:
        assert requirement.specifier.contains(version), (version, str(requirement))

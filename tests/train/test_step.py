"""Tests for effnet_tl.train.step: the shared replica step, SharedStepModel, distributed_fit."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from effnet_tl.train.distributed import distributed_evaluate, distributed_fit
from effnet_tl.train.step import SharedStepModel, per_example_loss, replica_train_step

REPO_ROOT = Path(__file__).resolve().parents[2]


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
         keras.layers.Dense(3, activation="softmax")]
    )


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return x, y


def test_per_example_loss_keeps_settings_and_drops_reduction():
    loss = per_example_loss(keras.losses.CategoricalCrossentropy(label_smoothing=0.2))
    y_true = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    y_pred = np.array([[0.9, 0.1], [0.5, 0.5]], "float32")
    smoothed = y_true * 0.8 + 0.1
    expected = -(smoothed * np.log(y_pred)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(loss(y_true, y_pred)), expected, rtol=1e-5)


def test_per_example_loss_rejects_bad_input():
    with pytest.raises(TypeError, match="42"):
        per_example_loss(42)


def test_replica_step_matches_hand_computed_sgd_update():
    # Linear model, MSE: gradient of mean((xw + b - y)^2) is known in closed form.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    w = np.array([[0.5], [-1.0]], "float32")
    b = np.array([0.25], "float32")
    model.set_weights([w, b])
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 1.0]], "float32")
    y = np.array([[1.0], [0.0], [2.0]], "float32")
    loss = replica_train_step(model, (x, y), optimizer=keras.optimizers.SGD(0.1),
                              loss_fn=per_example_loss("mse"))
    residual = x @ w + b - y
    np.testing.assert_allclose(float(loss), np.mean(residual**2), rtol=1e-6)
    grad_w = 2 * x.T @ residual / len(x)
    grad_b = 2 * residual.mean(axis=0)
    new_w, new_b = model.get_weights()
    np.testing.assert_allclose(new_w, w - 0.1 * grad_w, rtol=1e-6)
    np.testing.assert_allclose(new_b, b - 0.1 * grad_b, rtol=1e-6)


def test_shared_step_model_fit_equals_stock_fit():
    x, y = _data()
    results = []
    for wrap in (False, True):
        model = _tiny_model()
        if wrap:
            model = SharedStepModel.wrap(model)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss="categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append((model.get_weights(), history.history))
    for stock, shared in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(shared, stock, atol=1e-6)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(results[1][1][key], results[0][1][key], rtol=1e-5)


def test_distributed_fit_default_strategy_matches_fit_and_evaluate():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    stock = _tiny_model()
    stock.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    stock_history = stock.fit(dataset, epochs=2, shuffle=False, verbose=0)
    custom = _tiny_model()
    custom.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    history = distributed_fit(custom, strategy=tf.distribute.get_strategy(),
                              train_dataset=dataset, epochs=2, metrics=["accuracy"],
                              validation_dataset=dataset, verbose=0)
    for a, b in zip(stock.get_weights(), custom.get_weights()):
        np.testing.assert_allclose(b, a, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], stock_history.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["accuracy"], stock_history.history["accuracy"])
    expected = stock.evaluate(dataset, return_dict=True, verbose=0)
    result = distributed_evaluate(custom, strategy=tf.distribute.get_strategy(), dataset=dataset,
                                  metrics=["accuracy"])
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected["accuracy"])
    assert history.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-5)


def test_distributed_fit_class_weight_matches_keras_fit_class_weight():
    # Keras' fit turns class_weight into per-example weights; the custom loop must do the same
    # arithmetic (classes 0 and 2 weighted, class 1 left out of the dict: weight 1).
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    weights = {0: 3.0, 2: 0.5}
    stock = _tiny_model()
    stock.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    stock_history = stock.fit(dataset, epochs=2, shuffle=False, verbose=0, class_weight=weights)
    custom = _tiny_model()
    custom.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    history = distributed_fit(custom, strategy=tf.distribute.get_strategy(),
                              train_dataset=dataset, epochs=2, class_weight=weights, verbose=0)
    for a, b in zip(stock.get_weights(), custom.get_weights()):
        np.testing.assert_allclose(b, a, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], stock_history.history["loss"], rtol=1e-5)
    unweighted = _tiny_model()
    unweighted.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    distributed_fit(unweighted, strategy=tf.distribute.get_strategy(), train_dataset=dataset,
                    epochs=2, verbose=0)
    assert not np.allclose(unweighted.get_weights()[0], custom.get_weights()[0])


def test_distributed_fit_honours_stop_training_and_rejects_uncompiled():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = _tiny_model()
    with pytest.raises(ValueError, match="not compiled"):
        distributed_fit(model, strategy=tf.distribute.get_strategy(), train_dataset=dataset,
                        epochs=1, verbose=0)

    class StopAfterTwoBatches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    history = distributed_fit(model, strategy=tf.distribute.get_strategy(),
                              train_dataset=dataset, epochs=5,
                              callbacks=[StopAfterTwoBatches()], verbose=0)
    assert len(history.history["loss"]) == 1
    assert int(model.optimizer.iterations.numpy()) == 2


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    # Two logical CPUs must be configured before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from effnet_tl.train.distributed import distributed_fit
    from effnet_tl.train.step import SharedStepModel

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def build(kind):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                      keras.layers.Dense(3, activation="softmax")])
            if kind == "shared":
                model = SharedStepModel.wrap(model)
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                          metrics=["accuracy"] if kind != "custom" else None)
        return model

    out = {"replicas": strategy.num_replicas_in_sync}
    for kind in ("fit", "shared", "custom"):
        model = build(kind)
        if kind == "custom":
            history = distributed_fit(model, strategy=strategy, train_dataset=dataset, epochs=3,
                                      metrics=["accuracy"], verbose=0)
        else:
            history = model.fit(dataset, epochs=3, verbose=0)
        out[kind] = {"weights": [w.tolist() for w in model.get_weights()],
                     "loss": history.history["loss"], "accuracy": history.history["accuracy"],
                     "steps": int(model.optimizer.iterations.numpy())}
    print("RESULT" + json.dumps(out))
    """
)


def _run_python(script, *, env_extra=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO_ROOT)


def _result(completed):
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise AssertionError(f"no result; stderr:\n{completed.stderr[-3000:]}")


def test_mirrored_two_cpus_custom_loop_equals_model_fit():
    out = _result(_run_python(MIRRORED_SCRIPT))
    assert out["replicas"] == 2
    assert out["fit"]["steps"] == out["custom"]["steps"] == out["shared"]["steps"] == 12
    for kind in ("shared", "custom"):
        for expected, actual in zip(out["fit"]["weights"], out[kind]["weights"]):
            np.testing.assert_allclose(actual, expected, atol=1e-5)
        np.testing.assert_allclose(out[kind]["loss"], out["fit"]["loss"], rtol=1e-5)
        np.testing.assert_allclose(out[kind]["accuracy"], out["fit"]["accuracy"], atol=1e-6)
    # Training actually moved the weights (otherwise equality would prove nothing).
    assert out["fit"]["loss"][-1] < out["fit"]["loss"][0]

"""Tests for effnet_tl.train.lr_finder.find_lr."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from effnet_tl.train.lr_finder import find_lr
from effnet_tl.train.schedules import WarmupCosine


def _separable(n=256, features=4):
    x = np.random.default_rng(0).normal(size=(n, features)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)]
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=0).batch(32), x, y


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.BatchNormalization(),  # its moving statistics must be restored too
        keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros"),
    ])


def test_suggestion_is_sane_and_state_is_restored_exactly(tmp_path):
    dataset, x, y = _separable()
    model = _model()
    schedule = WarmupCosine(peak_lr=1e-3, total_steps=100, warmup_steps=5)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # optimizer has real state now
    weights_before = [v.numpy().copy() for v in model.variables]
    optimizer_before = [v.numpy().copy() for v in model.optimizer.variables]

    result = find_lr(model, dataset, plot_path=tmp_path / "plots" / "lr.png")

    assert 1e-4 <= result.suggested_lr <= 1.0
    assert len(result.lrs) == len(result.losses) == 100
    assert result.lrs[0] == pytest.approx(1e-7) and result.lrs[-1] == pytest.approx(1.0)
    # The loss really fell during the sweep, and the suggestion precedes the minimum.
    assert result.losses[-1] < result.losses[0] - 0.05
    assert result.suggested_lr <= result.min_loss_lr
    for before, after in zip(weights_before, model.variables):
        np.testing.assert_array_equal(after.numpy(), before)
    for before, after in zip(optimizer_before, model.optimizer.variables):
        np.testing.assert_array_equal(after.numpy(), before)
    assert isinstance(model.optimizer._learning_rate, WarmupCosine)

    png = result.plot_path
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.size == (600, 400)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 20  # the suggestion marker (C3 red) is on the plot


def test_divergence_stops_the_sweep_early():
    x = np.random.default_rng(1).normal(size=(128, 4)).astype("float32") * 10
    y = x @ np.ones((4, 1), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(), loss="mse")
    result = find_lr(model, dataset, min_lr=1e-5, max_lr=10.0, num_steps=60)
    assert result.diverged
    assert len(result.losses) < 60
    assert result.suggested_lr < result.lrs[-1]
    assert np.isfinite(model.get_weights()[0]).all()


def test_bad_arguments_echo_values():
    dataset, _, _ = _separable()
    model = _model()
    with pytest.raises(ValueError, match="not compiled"):
        find_lr(model, dataset)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="max_lr=1e-08"):
        find_lr(model, dataset, min_lr=1e-7, max_lr=1e-8)
    with pytest.raises(ValueError, match="num_steps=2"):
        find_lr(model, dataset, num_steps=2)
